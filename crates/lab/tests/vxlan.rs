//! VXLAN end to end, driving only `calico-lab` and `calicoctl`: three nodes,
//! node-1 and node-2 on 10.250.0.0/24 and node-3 on 10.250.1.0/24 behind
//! the fabric's router (which does not route pod addresses). CrossSubnet
//! and Always both give full pod-to-pod connectivity, and a packet capture
//! on the fabric shows encapsulation exactly where expected; Never takes
//! the overlay down again everywhere.
// A test against real processes: it waits on the clock.
#![allow(clippy::disallowed_methods)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use calico_test_support::{output_text as text, LabCli as Lab};

fn set_mode(lab: &Lab, mode: &str) {
    let patch = format!(r#"{{"spec":{{"vxlanMode":"{mode}"}}}}"#);
    lab.ctl_ok(&["patch", "ippool", "default-ipv4-ippool", "-p", &patch]);
    lab.ok(&["sync", "--timeout", "30"]);
}

fn wait_until(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// tcpdump on every port of the fabric, writing `file`.
struct Capture {
    child: Child,
    file: PathBuf,
}

impl Capture {
    fn start(lab: &Lab, file: &Path, filter: &str) -> Capture {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &lab.netns("fabric")])
            .args([
                "tcpdump",
                "-i",
                "any",
                "-nn",
                "-U",
                "--immediate-mode",
                "-Z",
                "root",
                "-w",
            ])
            .arg(file)
            .arg(filter)
            .stderr(Stdio::piped())
            .spawn()
            .expect("tcpdump");
        // Ready once it says it is listening.
        let mut err = std::io::BufReader::new(child.stderr.take().expect("stderr"));
        let mut line = String::new();
        loop {
            line.clear();
            let n = std::io::BufRead::read_line(&mut err, &mut line).expect("tcpdump stderr");
            assert!(n > 0, "tcpdump ended before listening");
            if line.contains("listening on") {
                break;
            }
        }
        std::thread::spawn(move || std::io::copy(&mut err, &mut std::io::sink()));
        Capture {
            child,
            file: file.to_path_buf(),
        }
    }

    /// Stops the capture and returns it as text, one packet per line
    /// (a VXLAN packet's inner packet on the line after it).
    fn finish(mut self) -> String {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).expect("pid"));
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
        let _ = self.child.wait();
        let out = Command::new("tcpdump")
            .args(["-nn", "-r"])
            .arg(&self.file)
            .output()
            .expect("tcpdump -r");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether a line of the capture carries a packet from `a` to `b`.
fn carries(capture: &str, a: &str, b: &str) -> bool {
    capture
        .lines()
        .any(|l| l.contains(&format!("IP {a}.")) && l.contains(&format!("> {b}.")))
}

/// Probes `pairs` with both captures running; returns (native, encapsulated).
fn captured(lab: &Lab, tag: &str, pairs: &[(&str, &str)]) -> (String, String) {
    let dir = lab.dir.path();
    let native = Capture::start(
        lab,
        &dir.join(format!("{tag}-native.pcap")),
        "ip and not udp port 4789 and src net 10.244.0.0/16 and dst net 10.244.0.0/16",
    );
    let encap = Capture::start(lab, &dir.join(format!("{tag}-vxlan.pcap")), "udp port 4789");
    for (from, to) in pairs {
        let out = lab.ok(&["probe", from, to, "--port", "80"]);
        assert_eq!(out.trim(), "allowed", "{tag}: {from} -> {to}");
    }
    (native.finish(), encap.finish())
}

#[test]
fn vxlan_always_and_cross_subnet_across_two_subnets() {
    let lab = Lab::new(
        format!("vx{}", std::process::id() % 100_000),
        Path::new(env!("CARGO_BIN_EXE_calico-lab")),
    );
    lab.ok(&[
        "up",
        "--nodes",
        "3",
        "--subnets",
        "2",
        "--encap",
        "vxlan-crosssubnet",
    ]);
    lab.ok(&["ns", "create", "x"]);
    for i in 1..=3 {
        lab.ok(&[
            "pod",
            "create",
            &format!("x/p{i}"),
            "--node",
            &format!("node-{i}"),
            "--port",
            "http:80/TCP",
        ]);
    }
    let state = lab.state();
    let ip = |pod: &str| state["pods"][pod]["ip"].as_str().expect("ip").to_string();
    let (p1, p2, p3) = (ip("x/p1"), ip("x/p2"), ip("x/p3"));
    let pods = ["x/p1", "x/p2", "x/p3"];
    let everyone: BTreeSet<(String, String)> = pods
        .iter()
        .flat_map(|a| pods.iter().map(move |b| (a.to_string(), b.to_string())))
        .filter(|(a, b)| a != b)
        .collect();

    // Each node has its tunnel: Calico's device settings, its VTEP
    // address and MAC recorded on its Node, and workloads get the
    // underlay's MTU less VXLAN's 50 bytes.
    for n in ["node-1", "node-2", "node-3"] {
        let link = text(&lab.in_netns(n, &["ip", "-d", "link", "show", "vxlan.calico"]));
        assert!(
            link.contains("vxlan id 4096") && link.contains("dstport 4789"),
            "{link}"
        );
        assert!(
            link.contains("nolearning") && link.contains("mtu 1450"),
            "{link}"
        );
        let node = lab.ctl_ok(&["get", "node", n, "-o", "yaml"]);
        assert!(
            node.contains("ipv4VXLANTunnelAddr: 10.244.")
                && node.contains("vxlanTunnelMACAddr: 66:"),
            "{node}"
        );
    }
    let show = lab.ok(&["show"]);
    assert!(
        show.contains("vxlanMode CrossSubnet") && show.matches(" vtep 10.244.").count() == 3,
        "{show}"
    );
    let pod_netns = state["pods"]["x/p1"]["netns"].as_str().expect("netns");
    let eth0 = Command::new("ip")
        .args(["-n", pod_netns, "link", "show", "eth0"])
        .output()
        .expect("ip");
    assert!(text(&eth0).contains("mtu 1450"), "{}", text(&eth0));

    // CrossSubnet: everyone reaches everyone; node-1 and node-2 share a
    // subnet and talk natively, node-3's traffic is encapsulated.
    assert_eq!(lab.allowed(), everyone, "CrossSubnet connectivity");
    let (native, encap) = captured(
        &lab,
        "cross",
        &[("x/p1", "x/p2"), ("x/p1", "x/p3"), ("x/p3", "x/p2")],
    );
    assert!(carries(&native, &p1, &p2), "p1->p2 native:\n{native}");
    assert!(carries(&native, &p2, &p1), "p2->p1 native:\n{native}");
    assert!(
        !carries(&encap, &p1, &p2),
        "p1->p2 not encapsulated:\n{encap}"
    );
    for (a, b) in [(&p1, &p3), (&p3, &p1), (&p3, &p2), (&p2, &p3)] {
        assert!(carries(&encap, a, b), "{a}->{b} encapsulated:\n{encap}");
        assert!(!carries(&native, a, b), "{a}->{b} never native:\n{native}");
    }
    assert!(
        encap.contains("VXLAN") && encap.contains("vni 4096"),
        "{encap}"
    );

    // VXLAN from a host that is not a node (the fabric's router, with a
    // tunnel of its own aimed at node-1's VTEP MAC) is dropped by node-1
    // before it is decapsulated, so it cannot inject packets to pods.
    let node1 = lab.ctl_ok(&["get", "node", "node-1", "-o", "yaml"]);
    let mac = node1
        .lines()
        .find_map(|l| l.trim().strip_prefix("vxlanTunnelMACAddr: "))
        .expect("node-1's VTEP MAC")
        .to_string();
    let fabric = lab.netns("fabric");
    let in_fabric = |cmd: &[&str]| {
        Command::new("ip")
            .args(["netns", "exec", &fabric])
            .args(cmd)
            .output()
            .expect("ip netns exec")
    };
    for cmd in [
        vec![
            "ip",
            "link",
            "add",
            "rogue",
            "type",
            "vxlan",
            "id",
            "4096",
            "local",
            "10.250.0.253",
            "remote",
            "10.250.0.1",
            "dstport",
            "4789",
            "nolearning",
        ],
        vec!["ip", "link", "set", "rogue", "up"],
        vec!["ip", "addr", "add", "10.244.200.1/32", "dev", "rogue"],
        vec!["ip", "route", "add", &p1, "dev", "rogue"],
        vec![
            "ip",
            "neigh",
            "replace",
            &p1,
            "lladdr",
            &mac,
            "dev",
            "rogue",
            "nud",
            "permanent",
        ],
    ] {
        let out = in_fabric(&cmd);
        assert!(out.status.success(), "{cmd:?}: {}", text(&out));
    }
    let ping = in_fabric(&["ping", "-c2", "-W1", "-I", "10.244.200.1", &p1]);
    assert!(
        !ping.status.success(),
        "a rogue VXLAN sender reached a pod: {}",
        text(&ping)
    );
    let input = text(&lab.in_netns(
        "node-1",
        &["nft", "list", "chain", "inet", "calico", "input"],
    ));
    let dropped = input
        .lines()
        .find(|l| l.contains("@vxlan-peers-v4"))
        .and_then(|l| l.split("counter packets ").nth(1))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or(0);
    assert!(
        dropped >= 2,
        "the rogue packets were dropped by the peer check:\n{input}"
    );
    let _ = in_fabric(&["ip", "link", "del", "rogue"]);

    // Always: everything between nodes is encapsulated.
    set_mode(&lab, "Always");
    wait_until(
        "node-1 routes node-2's pods through the tunnel",
        Duration::from_secs(30),
        || text(&lab.in_netns("node-1", &["ip", "route", "get", &p2])).contains("dev vxlan.calico"),
    );
    assert_eq!(lab.allowed(), everyone, "Always connectivity");
    let (native, encap) = captured(
        &lab,
        "always",
        &[("x/p1", "x/p2"), ("x/p2", "x/p1"), ("x/p1", "x/p3")],
    );
    for (a, b) in [(&p1, &p2), (&p2, &p1), (&p1, &p3)] {
        assert!(carries(&encap, a, b), "{a}->{b} encapsulated:\n{encap}");
        assert!(!carries(&native, a, b), "{a}->{b} never native:\n{native}");
    }

    // The tunnel addresses are IPAM's own: a check finds no leak.
    let check = lab.calicoctl(&["ipam", "check"], "");
    assert!(
        check.status.success(),
        "ipam check with tunnels: {}",
        text(&check)
    );

    // Never: the overlay is gone everywhere (devices, tunnel addresses
    // released and cleared from the Nodes); node-1 and node-2 route over
    // BGP again, node-3 is out of reach as the underlay does not route pods.
    set_mode(&lab, "Never");
    wait_until("every tunnel is gone", Duration::from_secs(30), || {
        ["node-1", "node-2", "node-3"].iter().all(|n| {
            !lab.in_netns(n, &["ip", "link", "show", "vxlan.calico"])
                .status
                .success()
        })
    });
    for n in ["node-1", "node-2", "node-3"] {
        wait_until("the Node forgets its VTEP", Duration::from_secs(30), || {
            !lab.ctl_ok(&["get", "node", n, "-o", "yaml"])
                .contains("VXLAN")
        });
    }
    let check = lab.calicoctl(&["ipam", "check"], "");
    assert!(check.status.success(), "ipam check: {}", text(&check));
    wait_until(
        "node-1 routes node-2's pods over BGP",
        Duration::from_secs(30),
        || text(&lab.in_netns("node-1", &["ip", "route", "get", &p2])).contains("via 10.250.0.2 "),
    );
    assert_eq!(
        lab.ok(&["probe", "x/p1", "x/p2", "--port", "80"]).trim(),
        "allowed"
    );
    let out = lab.ok(&[
        "probe",
        "x/p1",
        "x/p3",
        "--port",
        "80",
        "--timeout-ms",
        "300",
    ]);
    assert_eq!(out.trim(), "denied");

    // IP-in-IP cannot work on this kernel: refused, with the reason.
    let out = lab.calicoctl(
        &["apply", "-f", "-"],
        "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: tunl}\nspec: {cidr: 10.99.0.0/16, ipipMode: Always}\n",
    );
    assert!(!out.status.success());
    let why = text(&out);
    assert!(
        why.contains("spec.ipipMode") && why.contains("vxlanMode"),
        "{why}"
    );
}
