//! Outgoing NAT on real packets: pods wired by the CNI plugin in a
//! `natOutgoing` pool reach an external host (a namespace beyond the
//! node's second interface) as the node's address; replies come back
//! through conntrack; traffic between pods keeps its addresses; with
//! `natOutgoing: false` the external host sees the pod's own address (it
//! has a route back, so "not translated" is told from "dropped"); with
//! `natOutgoingAddress` it sees that address; IPv6 pods likewise. The
//! external host answers every connection with the source address it saw.
// A test against real processes: it waits on the clock.
#![allow(clippy::disallowed_methods)]

use calico_test_support::{add_pod, KillOnDrop, Netns};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn bin(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_calico-node")).with_file_name(name)
}

fn apply(db: &str, dir: &Path, yaml: &str) {
    calico_test_support::ctl_apply(&bin("calicoctl"), db, dir, yaml);
}

/// Answers every connection on 8080 with the source address it came from.
const ECHO_PEER: &str = "
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('0.0.0.0', 8080)); s.listen(64)
while True:
    c, a = s.accept(); c.sendall(a[0].encode()); c.close()
";

/// The same over IPv6.
const ECHO_PEER6: &str = "
import socket
s = socket.socket(socket.AF_INET6); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('::', 8080)); s.listen(64)
while True:
    c, a = s.accept(); c.sendall(a[0].encode()); c.close()
";

/// The address `ip`:8080 saw this connection come from; None if it was
/// dropped (timed out). A refusal (nothing listening) fails the test.
fn seen_as(from: &Netns, ip: &str) -> Option<String> {
    let code = format!(
        "import socket, sys\ntry:\n    s=socket.create_connection(('{ip}', 8080), timeout=1); print(s.recv(64).decode())\n\
except (ConnectionRefusedError, ConnectionResetError):\n    sys.exit(2)\nexcept OSError:\n    sys.exit(1)"
    );
    let out = from.exec(&["python3", "-c", &code]);
    match out.status.code() {
        Some(0) => Some(String::from_utf8_lossy(&out.stdout).trim().to_string()),
        Some(2) => panic!("{ip}:8080 refused: a server is down"),
        _ => None,
    }
}

/// Waits until `from` reaches `ip` and is seen as `want`.
fn until_seen_as(from: &Netns, ip: &str, want: &str, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = None;
    while Instant::now() < deadline {
        last = seen_as(from, ip);
        if last.as_deref() == Some(want) {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("{what}: {ip} saw {last:?}, not {want}");
}

fn echo(ns: &Netns) -> KillOnDrop {
    serve(ns, ECHO_PEER)
}

fn serve(ns: &Netns, script: &str) -> KillOnDrop {
    let server = Command::new("ip")
        .args(["netns", "exec", &ns.name, "python3", "-c", script])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("server");
    calico_test_support::wait_listening(&ns.name, "tcp", 8080);
    KillOnDrop(server)
}

const POOL: &str = "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: p}\nspec: {cidr: 10.89.0.0/16, natOutgoing: NAT}\n";

#[test]
fn pods_reach_the_outside_as_the_node_and_each_other_as_themselves() {
    let node = Netns::new("nat-node");
    node.make_node("10.250.9.1/24");
    // The external host, beyond the node's second interface.
    let ext = Netns::new("nat-ext");
    node.ok(&[
        "ip", "link", "add", "ext0", "type", "veth", "peer", "name", "ext1",
    ]);
    node.ok(&["ip", "link", "set", "ext1", "netns", &ext.name]);
    node.ok(&["ip", "addr", "add", "203.0.113.1/24", "dev", "ext0"]);
    node.ok(&["ip", "addr", "add", "203.0.113.10/24", "dev", "ext0"]);
    node.ok(&["ip", "link", "set", "ext0", "up"]);
    ext.ok(&["ip", "addr", "add", "203.0.113.2/24", "dev", "ext1"]);
    ext.ok(&["ip", "link", "set", "ext1", "up"]);
    ext.ok(&["ip", "link", "set", "lo", "up"]);
    let _ext_server = echo(&ext);

    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("calico.db").display().to_string();
    apply(
        &db,
        dir.path(),
        &(POOL.replace("NAT", "true")
            + "---\napiVersion: projectcalico.org/v3\nkind: Profile\nmetadata: {name: kns.x}\nspec: {ingress: [{action: Allow}], egress: [{action: Allow}]}\n"),
    );
    let pod = |name: &str| {
        let ns = Netns::new(&format!("nat-{name}"));
        let conf = json!({"cniVersion": "1.0.0", "name": "k8s-pod-network", "type": "calico", "nodename": "node-1",
            "datastore_path": db, "ipam": {"type": "calico-ipam"}});
        let ip = add_pod(
            &bin("calico"),
            &node.name,
            &ns,
            &conf.to_string(),
            "x",
            name,
        );
        (ns, ip)
    };
    let (a, ip_a) = pod("a");
    let (b, ip_b) = pod("b");
    let _b_server = echo(&b);
    let _agent = calico_test_support::felix_daemon(&bin("calico-node"), &node.path(), &db, &[]);

    // Out of the pools: as the node's address on the way out.
    until_seen_as(&a, "203.0.113.2", "203.0.113.1", "natOutgoing");
    // Between pods: untouched.
    until_seen_as(&a, &ip_b, &ip_a, "pod to pod");
    assert_eq!(seen_as(&b, "203.0.113.2").as_deref(), Some("203.0.113.1"));

    // natOutgoing off: the pod's own address (the external host routes
    // the pool back through the node, so it can answer).
    ext.ok(&["ip", "route", "add", "10.89.0.0/16", "via", "203.0.113.1"]);
    apply(&db, dir.path(), &POOL.replace("NAT", "false"));
    until_seen_as(&a, "203.0.113.2", &ip_a, "natOutgoing false");
    let listed = node.ok(&["nft", "list", "table", "inet", "calico"]);
    assert!(!listed.contains("nat-postrouting"), "{listed}");

    // natOutgoingAddress: that address instead of the interface's.
    apply(&db, dir.path(), &POOL.replace("NAT", "true"));
    until_seen_as(&a, "203.0.113.2", "203.0.113.1", "natOutgoing back on");
    apply(
        &db,
        dir.path(),
        "apiVersion: projectcalico.org/v3\nkind: FelixConfiguration\nmetadata: {name: default}\nspec: {natOutgoingAddress: 203.0.113.10}\n",
    );
    until_seen_as(&a, "203.0.113.2", "203.0.113.10", "natOutgoingAddress");
    until_seen_as(&a, &ip_b, &ip_a, "pod to pod with natOutgoingAddress");

    // natPortRange: translated connections leave from those ports only.
    apply(
        &db,
        dir.path(),
        "apiVersion: projectcalico.org/v3\nkind: FelixConfiguration\nmetadata: {name: default}\nspec: {natOutgoingAddress: 203.0.113.10, natPortRange: '40000:40009'}\n",
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while !node
        .ok(&["nft", "list", "table", "inet", "calico"])
        .contains("40000-40009")
    {
        assert!(Instant::now() < deadline, "natPortRange never applied");
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = node.exec(&["conntrack", "-F"]);
    for _ in 0..5 {
        assert_eq!(seen_as(&a, "203.0.113.2").as_deref(), Some("203.0.113.10"));
    }
    let tracked = node.ok(&[
        "conntrack",
        "-L",
        "-p",
        "tcp",
        "--dport",
        "8080",
        "-d",
        "203.0.113.2",
    ]);
    let ports: Vec<u16> = tracked
        .lines()
        .filter_map(|l| l.rsplit("dport=").next())
        .filter_map(|p| p.split_whitespace().next()?.parse().ok())
        .collect();
    assert!(!ports.is_empty(), "{tracked}");
    assert!(
        ports.iter().all(|p| (40000..=40009).contains(p)),
        "reply ports outside natPortRange: {ports:?}\n{tracked}"
    );
}

#[test]
fn ipv6_pods_reach_the_outside_as_the_node() {
    let node = Netns::new("nat6-node");
    node.make_node("10.250.10.1/24");
    node.ok(&["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"]);
    let ext = Netns::new("nat6-ext");
    node.ok(&[
        "ip", "link", "add", "ext0", "type", "veth", "peer", "name", "ext1",
    ]);
    node.ok(&["ip", "link", "set", "ext1", "netns", &ext.name]);
    node.ok(&[
        "ip",
        "-6",
        "addr",
        "add",
        "2001:db8:e::1/64",
        "dev",
        "ext0",
        "nodad",
    ]);
    node.ok(&["ip", "link", "set", "ext0", "up"]);
    ext.ok(&[
        "ip",
        "-6",
        "addr",
        "add",
        "2001:db8:e::2/64",
        "dev",
        "ext1",
        "nodad",
    ]);
    ext.ok(&["ip", "link", "set", "ext1", "up"]);
    ext.ok(&["ip", "link", "set", "lo", "up"]);
    let _ext_server = serve(&ext, ECHO_PEER6);

    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("calico.db").display().to_string();
    let pool = |nat: bool| {
        format!("apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {{name: v6}}\nspec: {{cidr: 'fd00:89::/48', natOutgoing: {nat}}}\n")
    };
    apply(
        &db,
        dir.path(),
        &(pool(true)
            + "---\napiVersion: projectcalico.org/v3\nkind: Profile\nmetadata: {name: kns.x}\nspec: {ingress: [{action: Allow}], egress: [{action: Allow}]}\n"),
    );
    let a = Netns::new("nat6-a");
    let conf = json!({"cniVersion": "1.0.0", "name": "k8s-pod-network", "type": "calico", "nodename": "node-1",
        "datastore_path": db, "ipam": {"type": "calico-ipam", "assign_ipv4": "false", "assign_ipv6": "true"}});
    let ip_a = add_pod(&bin("calico"), &node.name, &a, &conf.to_string(), "x", "a");
    assert!(ip_a.starts_with("fd00:89:"), "{ip_a}");
    let _agent = calico_test_support::felix_daemon(&bin("calico-node"), &node.path(), &db, &[]);

    until_seen_as(&a, "2001:db8:e::2", "2001:db8:e::1", "IPv6 natOutgoing");
    // Off: the pod's own address (the external host routes the pool back).
    ext.ok(&[
        "ip",
        "-6",
        "route",
        "add",
        "fd00:89::/48",
        "via",
        "2001:db8:e::1",
    ]);
    apply(&db, dir.path(), &pool(false));
    until_seen_as(&a, "2001:db8:e::2", &ip_a, "IPv6 natOutgoing false");
}

#[test]
fn a_nat_outgoing_address_that_is_not_one_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("fc.yaml");
    std::fs::write(
        &file,
        "apiVersion: projectcalico.org/v3\nkind: FelixConfiguration\nmetadata: {name: default}\nspec: {natOutgoingAddress: 'eth0; drop'}\n",
    )
    .expect("write");
    let out = Command::new(bin("calicoctl"))
        .args(["--config", "/nonexistent", "apply", "-f"])
        .arg(&file)
        .env("CALICO_DATASTORE_PATH", dir.path().join("c.db"))
        .env_remove("DATASTORE_TYPE")
        .output()
        .expect("calicoctl");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("natOutgoingAddress"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
