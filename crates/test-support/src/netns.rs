//! Throwaway network namespaces for tests, removed when dropped (even when
//! the test panics).

use std::process::{Command, Output};

/// A network namespace `name`, deleted on drop.
#[derive(Debug)]
pub struct Netns {
    pub name: String,
}

fn ip(args: &[&str]) -> Output {
    Command::new("ip").args(args).output().expect("run ip")
}

impl Netns {
    /// Creates the namespace with `lo` up. The name gets the process id
    /// and a counter appended so parallel tests never collide.
    pub fn new(tag: &str) -> Netns {
        let name = crate::unique(tag);
        let out = ip(&["netns", "add", &name]);
        assert!(
            out.status.success(),
            "ip netns add {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let ns = Netns { name };
        ns.ok(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    pub fn path(&self) -> String {
        format!("/run/netns/{}", self.name)
    }

    /// Runs a command inside the namespace.
    pub fn exec(&self, cmd: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(cmd)
            .output()
            .expect("ip netns exec")
    }

    /// Runs a command inside the namespace and insists it succeeds; returns stdout.
    pub fn ok(&self, cmd: &[&str]) -> String {
        let out = self.exec(cmd);
        assert!(
            out.status.success(),
            "{cmd:?} in {}: {}{}",
            self.name,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Gives the namespace an address on an uplink (one end of a veth pair
    /// whose other end stays in the namespace), a default route through it
    /// and IP forwarding, as a node has.
    pub fn make_node(&self, addr_cidr: &str) {
        self.ok(&[
            "ip", "link", "add", "uplink0", "type", "veth", "peer", "name", "uplink1",
        ]);
        self.ok(&["ip", "addr", "add", addr_cidr, "dev", "uplink0"]);
        self.ok(&["ip", "link", "set", "uplink1", "up"]);
        self.ok(&["ip", "link", "set", "uplink0", "up"]);
        self.ok(&["ip", "route", "add", "default", "dev", "uplink0"]);
        self.ok(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.name]);
    }
}

/// A layer-2 fabric: a namespace holding bridge `br0` that nodes attach to
/// with a veth (`eth0` on the node side), as hosts on one switch.
#[derive(Debug)]
pub struct Fabric {
    pub ns: Netns,
    ports: std::sync::atomic::AtomicU32,
}

impl Fabric {
    pub fn new(tag: &str) -> Fabric {
        let ns = Netns::new(tag);
        ns.ok(&["ip", "link", "add", "br0", "type", "bridge"]);
        ns.ok(&["ip", "link", "set", "br0", "up"]);
        Fabric {
            ns,
            ports: std::sync::atomic::AtomicU32::new(0),
        }
    }

    /// Connects `node` to the fabric: its `eth0` gets `addr_cidr` and the
    /// default route, and comes up with IP forwarding on, as a node's uplink.
    pub fn attach(&self, node: &Netns, addr_cidr: &str) {
        let n = self
            .ports
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let port = format!("p{n}");
        self.ns.ok(&[
            "ip", "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &node.name,
        ]);
        self.ns
            .ok(&["ip", "link", "set", &port, "master", "br0", "up"]);
        node.ok(&["ip", "addr", "add", addr_cidr, "dev", "eth0"]);
        node.ok(&["ip", "link", "set", "eth0", "up"]);
        // A node has a default route (proxy ARP for the workloads' gateway
        // 169.254.1.1 answers only when the host has a route to it).
        node.ok(&["ip", "route", "add", "default", "dev", "eth0"]);
        node.ok(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    }
}
