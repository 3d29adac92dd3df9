//! Host endpoints on real packets. A node (a namespace running the agent)
//! has a pod and a second interface, `ext0`, to an external host; the
//! node, the pod and the external host each serve TCP. Every probe tells
//! an allowed connection from a refused one (a server down fails the
//! test) and from a dropped one (a timeout), so nothing passes by accident.
//!
//! Walked through in order: no host endpoint (nothing policed); a named
//! host endpoint with no policy (default deny both ways, failsafe ports
//! still open, forwarded traffic untouched); an ingress policy; a deny-all
//! policy (failsafe still open, then `failsafeInboundHostPorts: []`
//! closes it); applyOnForward; preDNAT (matching the port before DNAT,
//! skipping normal policy); doNotTrack (both directions must be allowed;
//! no conntrack entry); the `*` endpoint (every interface but `lo` and the
//! workloads'); workload-to-host traffic under defaultEndpointToHostAction;
//! an endpoint known by its expectedIPs alone.
// A test against real processes: it waits on the clock.
#![allow(clippy::disallowed_methods)]

use calico_test_support::{add_pod, KillOnDrop, Netns};
use serde_json::json;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn bin(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_calico-node")).with_file_name(name)
}

/// Answers every connection with the source address it came from.
const ECHO: &str = "
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('0.0.0.0', int(sys.argv[1]))); s.listen(64)
while True:
    c, a = s.accept(); c.sendall(a[0].encode()); c.close()
";

fn serve(ns: &Netns, port: u16) -> KillOnDrop {
    let server = Command::new("ip")
        .args(["netns", "exec", &ns.name, "python3", "-c", ECHO])
        .arg(port.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("server");
    calico_test_support::wait_listening(&ns.name, "tcp", port);
    KillOnDrop(server)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Probe {
    Allowed,
    Denied,
}

/// Connects from `from` to `ip`:`port`: allowed (answered), denied
/// (timed out); a refusal means a server is down and fails the test.
fn probe(from: &Netns, ip: &str, port: u16) -> Probe {
    let code = format!(
        "import socket, sys\ntry:\n    s=socket.create_connection(('{ip}', {port}), timeout=1); s.recv(64)\n\
except (ConnectionRefusedError, ConnectionResetError):\n    sys.exit(2)\nexcept OSError:\n    sys.exit(1)"
    );
    match from.exec(&["python3", "-c", &code]).status.code() {
        Some(0) => Probe::Allowed,
        Some(2) => panic!("{ip}:{port} refused from {}: a server is down", from.name),
        _ => Probe::Denied,
    }
}

/// Waits until the probe gives `want` (the agent applies changes within
/// moments; 30 s is a failure).
fn until(from: &Netns, ip: &str, port: u16, want: Probe, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if probe(from, ip, port) == want {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("{what}: {} -> {ip}:{port} never {want:?}", from.name);
}

fn expect(from: &Netns, ip: &str, port: u16, want: Probe, what: &str) {
    assert_eq!(
        probe(from, ip, port),
        want,
        "{what}: {} -> {ip}:{port}",
        from.name
    );
}

struct Lab {
    db: String,
    dir: tempfile::TempDir,
}

impl Lab {
    fn apply(&self, yaml: &str) {
        calico_test_support::ctl_apply(&bin("calicoctl"), &self.db, self.dir.path(), yaml);
    }
    /// calicoctl with `args`; its stdout, or None when it failed.
    fn ctl(&self, args: &[&str]) -> Option<String> {
        let out = Command::new(bin("calicoctl"))
            .args(["--config", "/nonexistent"])
            .args(args)
            .env("CALICO_DATASTORE_PATH", &self.db)
            .env_remove("DATASTORE_TYPE")
            .current_dir(self.dir.path())
            .output()
            .expect("calicoctl");
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }
    fn delete(&self, kind: &str, name: &str) {
        let out = Command::new(bin("calicoctl"))
            .args(["--config", "/nonexistent", "delete", kind, name])
            .env("CALICO_DATASTORE_PATH", &self.db)
            .env_remove("DATASTORE_TYPE")
            .current_dir(self.dir.path())
            .output()
            .expect("calicoctl");
        assert!(
            out.status.success(),
            "delete {kind} {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

fn gnp(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {{name: {name}}}\nspec: {spec}\n"
    )
}

const NODE_IP: &str = "203.0.113.1";
const EXT_IP: &str = "203.0.113.2";

/// A node (`<tag>-node`, its uplink at `uplink`) and an external host
/// (`<tag>-ext`, EXT_IP) on the node's second interface `ext0` (NODE_IP).
fn node_and_external(tag: &str, uplink: &str) -> (Netns, Netns) {
    let node = Netns::new(&format!("{tag}-node"));
    node.make_node(uplink);
    let ext = Netns::new(&format!("{tag}-ext"));
    node.ok(&[
        "ip", "link", "add", "ext0", "type", "veth", "peer", "name", "ext1",
    ]);
    node.ok(&["ip", "link", "set", "ext1", "netns", &ext.name]);
    node.ok(&["ip", "addr", "add", &format!("{NODE_IP}/24"), "dev", "ext0"]);
    node.ok(&["ip", "link", "set", "ext0", "up"]);
    node.ok(&["ip", "link", "set", "lo", "up"]);
    ext.ok(&["ip", "addr", "add", &format!("{EXT_IP}/24"), "dev", "ext1"]);
    ext.ok(&["ip", "link", "set", "ext1", "up"]);
    ext.ok(&["ip", "link", "set", "lo", "up"]);
    (node, ext)
}

#[test]
fn host_endpoint_policy_on_real_packets() {
    let (node, ext) = node_and_external("hep", "10.250.11.1/24");
    ext.ok(&["ip", "route", "add", "10.91.0.0/16", "via", NODE_IP]);

    let dir = tempfile::tempdir().expect("tempdir");
    let lab = Lab {
        db: dir.path().join("calico.db").display().to_string(),
        dir,
    };
    lab.apply(
        "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: p}\nspec: {cidr: 10.91.0.0/16, natOutgoing: false}\n\
---\napiVersion: projectcalico.org/v3\nkind: Profile\nmetadata: {name: kns.x}\nspec: {ingress: [{action: Allow}], egress: [{action: Allow}]}\n",
    );
    let pod = Netns::new("hep-pod");
    let conf = json!({"cniVersion": "1.0.0", "name": "k8s-pod-network", "type": "calico", "nodename": "node-1",
        "datastore_path": lab.db, "ipam": {"type": "calico-ipam"}});
    let pod_ip = add_pod(
        &bin("calico"),
        &node.name,
        &pod,
        &conf.to_string(),
        "x",
        "web",
    );
    let _servers = [
        serve(&node, 8080),
        serve(&node, 22),
        serve(&ext, 8080),
        serve(&pod, 8080),
    ];
    let _agent = calico_test_support::felix_daemon(
        &bin("calico-node"),
        &node.path(),
        &lab.db,
        &[("FELIX_DEFAULTENDPOINTTOHOSTACTION", "Drop")],
    );

    // No host endpoint: the host's own traffic is not policed.
    until(&pod, EXT_IP, 8080, Probe::Allowed, "agent up, pod out");
    expect(&ext, NODE_IP, 8080, Probe::Allowed, "no host endpoint");
    expect(&node, EXT_IP, 8080, Probe::Allowed, "no host endpoint, out");

    // A host endpoint without policy: default deny both ways, but the
    // failsafe ports; forwarded traffic is not its business.
    lab.apply("apiVersion: projectcalico.org/v3\nkind: HostEndpoint\nmetadata: {name: node-1-ext0, labels: {role: edge}}\nspec: {node: node-1, interfaceName: ext0, expectedIPs: [203.0.113.1]}\n");
    until(
        &ext,
        NODE_IP,
        8080,
        Probe::Denied,
        "host endpoint, no policy",
    );
    expect(
        &node,
        EXT_IP,
        8080,
        Probe::Denied,
        "host endpoint, no policy, out",
    );
    expect(&ext, NODE_IP, 22, Probe::Allowed, "failsafe SSH");
    expect(&ext, &pod_ip, 8080, Probe::Allowed, "forwarded to the pod");
    expect(&pod, EXT_IP, 8080, Probe::Allowed, "forwarded from the pod");
    // The node's other interface is not the endpoint's.
    expect(&node, "10.250.11.1", 8080, Probe::Allowed, "to itself (lo)");

    // Ingress allowed from the external host only.
    lab.apply(&gnp(
        "edge-in",
        "{selector: role == 'edge', order: 100, ingress: [{action: Allow, protocol: TCP, source: {nets: [203.0.113.2/32]}, destination: {ports: [8080]}}]}",
    ));
    until(&ext, NODE_IP, 8080, Probe::Allowed, "ingress policy");
    expect(
        &node,
        EXT_IP,
        8080,
        Probe::Denied,
        "egress still default deny",
    );

    // Deny everything, before it: failsafe still open, until it is closed.
    lab.apply(&gnp(
        "edge-deny",
        "{selector: role == 'edge', order: 1, types: [Ingress, Egress], ingress: [{action: Deny}], egress: [{action: Deny}]}",
    ));
    until(&ext, NODE_IP, 8080, Probe::Denied, "deny all");
    expect(&ext, NODE_IP, 22, Probe::Allowed, "failsafe under deny all");
    expect(
        &ext,
        &pod_ip,
        8080,
        Probe::Allowed,
        "deny all is not applyOnForward",
    );
    lab.apply("apiVersion: projectcalico.org/v3\nkind: FelixConfiguration\nmetadata: {name: default}\nspec: {failsafeInboundHostPorts: []}\n");
    until(&ext, NODE_IP, 22, Probe::Denied, "failsafe ports off");
    lab.delete("felixconfiguration", "default");
    until(&ext, NODE_IP, 22, Probe::Allowed, "failsafe ports back");

    // applyOnForward: the policy now also polices traffic to the pod.
    lab.apply(&gnp(
        "edge-fwd",
        "{selector: role == 'edge', order: 50, applyOnForward: true, ingress: [{action: Deny, protocol: TCP, destination: {ports: [8080]}}]}",
    ));
    until(&ext, &pod_ip, 8080, Probe::Denied, "applyOnForward ingress");
    expect(
        &pod,
        EXT_IP,
        8080,
        Probe::Allowed,
        "no applyOnForward egress policy",
    );
    lab.delete("globalnetworkpolicy", "edge-fwd");
    until(&ext, &pod_ip, 8080, Probe::Allowed, "applyOnForward gone");

    // preDNAT: matches the port before DNAT (9090 -> 8080 here), and its
    // allow skips normal policy (deny all is still in place).
    node.ok(&["nft", "add", "table", "ip", "dnat-test"]);
    node.ok(&[
        "nft",
        "add chain ip dnat-test pre { type nat hook prerouting priority dstnat; }",
    ]);
    node.ok(&[
        "nft",
        "add rule ip dnat-test pre tcp dport 9090 dnat to 203.0.113.1:8080",
    ]);
    expect(&ext, NODE_IP, 9090, Probe::Denied, "DNAT, normal deny all");
    lab.apply(&gnp(
        "edge-prednat",
        "{selector: role == 'edge', preDNAT: true, applyOnForward: true, ingress: [{action: Allow, protocol: TCP, destination: {ports: [9090]}}]}",
    ));
    until(
        &ext,
        NODE_IP,
        9090,
        Probe::Allowed,
        "preDNAT allow, pre-DNAT port",
    );
    expect(
        &ext,
        NODE_IP,
        8080,
        Probe::Denied,
        "preDNAT: 8080 itself not allowed",
    );
    lab.delete("globalnetworkpolicy", "edge-prednat");
    until(&ext, NODE_IP, 9090, Probe::Denied, "preDNAT gone");

    // doNotTrack: inbound alone is not enough (the reply has no
    // connection to ride on and normal egress denies it) ...
    lab.apply(&gnp(
        "edge-untracked",
        "{selector: role == 'edge', doNotTrack: true, applyOnForward: true, ingress: [{action: Allow, protocol: TCP, destination: {ports: [8080]}}]}",
    ));
    std::thread::sleep(Duration::from_secs(2));
    expect(
        &ext,
        NODE_IP,
        8080,
        Probe::Denied,
        "doNotTrack, one direction",
    );
    // ... both directions are.
    lab.apply(&gnp(
        "edge-untracked",
        "{selector: role == 'edge', doNotTrack: true, applyOnForward: true, types: [Ingress, Egress], ingress: [{action: Allow, protocol: TCP, destination: {ports: [8080]}}], egress: [{action: Allow, protocol: TCP, source: {ports: [8080]}}]}",
    ));
    until(
        &ext,
        NODE_IP,
        8080,
        Probe::Allowed,
        "doNotTrack, both directions",
    );
    // Earlier (tracked) connections out of the way, one more untracked one.
    node.ok(&["conntrack", "-F"]);
    expect(&ext, NODE_IP, 8080, Probe::Allowed, "doNotTrack again");
    let tracked = node.ok(&["conntrack", "-L", "-p", "tcp", "--dport", "8080"]);
    assert!(
        !tracked.contains(&format!("src={EXT_IP} dst={NODE_IP}")),
        "untracked, yet in conntrack: {tracked}"
    );
    lab.delete("globalnetworkpolicy", "edge-untracked");
    until(&ext, NODE_IP, 8080, Probe::Denied, "doNotTrack gone");

    // The all-interfaces endpoint: the same policy on every interface but
    // lo and the workloads'.
    lab.delete("hostendpoint", "node-1-ext0");
    until(&ext, NODE_IP, 8080, Probe::Allowed, "named endpoint gone");
    lab.apply("apiVersion: projectcalico.org/v3\nkind: HostEndpoint\nmetadata: {name: node-1-all, labels: {role: edge}}\nspec: {node: node-1, interfaceName: '*'}\n");
    until(&ext, NODE_IP, 8080, Probe::Denied, "* endpoint, deny all");
    expect(&ext, NODE_IP, 22, Probe::Allowed, "* endpoint, failsafe");
    expect(
        &node,
        "127.0.0.1",
        8080,
        Probe::Allowed,
        "* endpoint leaves lo alone",
    );
    expect(
        &node,
        &pod_ip,
        8080,
        Probe::Allowed,
        "host to its workloads",
    );
    // Workload to host: defaultEndpointToHostAction, not host endpoint policy.
    expect(&pod, NODE_IP, 8080, Probe::Denied, "endpoint-to-host Drop");
    lab.apply("apiVersion: projectcalico.org/v3\nkind: FelixConfiguration\nmetadata: {name: default}\nspec: {defaultEndpointToHostAction: Accept}\n");
    // (The agent's environment says Drop and wins over the resource.)
    std::thread::sleep(Duration::from_secs(1));
    expect(&pod, NODE_IP, 8080, Probe::Denied, "FELIX_ env wins");

    let table = node.ok(&["nft", "list", "table", "inet", "calico"]);
    assert!(table.contains("chain hi_all"), "{table}");

    // Known by its address alone: bound to the interface holding it.
    lab.delete("hostendpoint", "node-1-all");
    until(&ext, NODE_IP, 8080, Probe::Allowed, "* endpoint gone");
    lab.apply("apiVersion: projectcalico.org/v3\nkind: HostEndpoint\nmetadata: {name: node-1-by-ip, labels: {role: edge}}\nspec: {node: node-1, expectedIPs: [203.0.113.1]}\n");
    until(
        &ext,
        NODE_IP,
        8080,
        Probe::Denied,
        "expectedIPs endpoint, deny all",
    );
    expect(
        &ext,
        NODE_IP,
        22,
        Probe::Allowed,
        "expectedIPs endpoint, failsafe",
    );
    let table = node.ok(&["nft", "list", "table", "inet", "calico"]);
    assert!(table.contains("chain hi-ext0"), "{table}");
}

/// Waits until `f` holds (30 s is a failure).
fn until_true(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("{what}: never");
}

/// Automatic host endpoints (`calico-node controllers` with
/// KubeControllersConfiguration autoCreate): one `*` endpoint per Node,
/// with the Node's labels and addresses and the allow-all profile; a
/// policy selecting a Node label starts and stops applying to the node's
/// own traffic as the label comes and goes; turning the setting off
/// removes the endpoint.
#[test]
fn automatic_host_endpoints_follow_node_labels() {
    const NODE: &str = "198.18.0.1";
    const EXT: &str = "198.18.0.2";
    let node = Netns::new("ahep-node");
    node.make_node("10.250.13.1/24");
    let ext = Netns::new("ahep-ext");
    node.ok(&[
        "ip", "link", "add", "ext0", "type", "veth", "peer", "name", "ext1",
    ]);
    node.ok(&["ip", "link", "set", "ext1", "netns", &ext.name]);
    node.ok(&["ip", "addr", "add", &format!("{NODE}/24"), "dev", "ext0"]);
    node.ok(&["ip", "link", "set", "ext0", "up"]);
    node.ok(&["ip", "link", "set", "lo", "up"]);
    ext.ok(&["ip", "addr", "add", &format!("{EXT}/24"), "dev", "ext1"]);
    ext.ok(&["ip", "link", "set", "ext1", "up"]);
    ext.ok(&["ip", "link", "set", "lo", "up"]);
    let dir = tempfile::tempdir().expect("tempdir");
    let lab = Lab {
        db: dir.path().join("calico.db").display().to_string(),
        dir,
    };
    lab.apply(&format!(
        "apiVersion: projectcalico.org/v3\nkind: Node\nmetadata: {{name: node-1}}\nspec: {{bgp: {{ipv4Address: {NODE}/24}}}}\n---\n\
apiVersion: projectcalico.org/v3\nkind: KubeControllersConfiguration\nmetadata: {{name: default}}\nspec: {{controllers: {{node: {{hostEndpoint: {{autoCreate: Enabled}}}}}}}}\n---\n{}",
        gnp(
            "edge-nodes",
            "{selector: role == 'edge', ingress: [{action: Deny, protocol: TCP, destination: {ports: [8080]}}, {action: Allow}]}",
        )
    ));
    let _server = serve(&node, 8080);
    let _agent = calico_test_support::felix_daemon(&bin("calico-node"), &node.path(), &lab.db, &[]);
    let _controllers = KillOnDrop(
        Command::new(bin("calico-node"))
            .arg("controllers")
            .env("CALICO_DATASTORE_PATH", &lab.db)
            .env_remove("DATASTORE_TYPE")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("calico-node controllers"),
    );
    let hep = || lab.ctl(&["get", "hostendpoint", "node-1-auto-hep", "-o", "yaml"]);
    until_true("node-1-auto-hep created", || {
        hep().is_some_and(|h| h.contains(NODE))
    });
    let h = hep().expect("auto hep");
    assert!(
        h.contains("projectcalico-default-allow") && h.contains("calico-kube-controllers"),
        "{h}"
    );
    // Allow-all profile, no policy selects it yet: the node's traffic flows.
    until(
        &ext,
        NODE,
        8080,
        Probe::Allowed,
        "auto endpoint, default allow",
    );
    assert!(node
        .ok(&["nft", "list", "table", "inet", "calico"])
        .contains("chain hi_all"));

    lab.ctl(&["label", "nodes", "node-1", "role=edge"])
        .expect("label");
    until(
        &ext,
        NODE,
        8080,
        Probe::Denied,
        "Node labelled: the policy applies",
    );
    assert!(hep().expect("auto hep").contains("role: edge"));
    lab.ctl(&["label", "nodes", "node-1", "role", "--remove"])
        .expect("unlabel");
    until(&ext, NODE, 8080, Probe::Allowed, "label removed");

    lab.apply("apiVersion: projectcalico.org/v3\nkind: KubeControllersConfiguration\nmetadata: {name: default}\nspec: {controllers: {node: {hostEndpoint: {autoCreate: Disabled}}}}\n");
    until_true("node-1-auto-hep removed", || hep().is_none());
    until_true("the table without host endpoints", || {
        !node
            .ok(&["nft", "list", "table", "inet", "calico"])
            .contains("hi_all")
    });
}

/// With flow logs on, a host endpoint's verdicts are flow records: a
/// connection from outside the node allowed by its policy and one its
/// tier's end denied, reported at the host endpoint (`dst`, type `hep`)
/// with the rule that decided.
#[test]
fn host_endpoint_verdicts_become_flow_records() {
    let (node, ext) = node_and_external("hepfl", "10.250.12.1/24");
    let dir = tempfile::tempdir().expect("tempdir");
    let logs = dir.path().join("flowlogs");
    let lab = Lab {
        db: dir.path().join("calico.db").display().to_string(),
        dir,
    };
    lab.apply("apiVersion: projectcalico.org/v3\nkind: HostEndpoint\nmetadata: {name: node-1-ext0, labels: {role: edge}}\nspec: {node: node-1, interfaceName: ext0, expectedIPs: [203.0.113.1]}\n");
    lab.apply(&gnp(
        "edge-in",
        "{selector: role == 'edge', order: 100, types: [Ingress], ingress: [{action: Allow, protocol: TCP, source: {nets: [203.0.113.2/32]}, destination: {ports: [8080]}}]}",
    ));
    // The host's own connections out: the Allow leaves its identity in the
    // mark and the output chain logs it after the walk (`E|`).
    lab.apply(&gnp(
        "edge-out",
        "{selector: role == 'edge', order: 200, types: [Egress], egress: [{action: Allow, protocol: TCP, destination: {ports: [7070]}}]}",
    ));
    // Allowed flows keep the addresses here (level 1; Calico's default,
    // 2, drops them): the external host is told by its address.
    lab.apply("apiVersion: projectcalico.org/v3\nkind: FelixConfiguration\nmetadata: {name: default}\nspec: {flowLogsFileAggregationKindForAllowed: 1}\n");
    let _servers = [serve(&node, 8080), serve(&node, 9090), serve(&ext, 7070)];
    let _agent = calico_test_support::felix_daemon(
        &bin("calico-node"),
        &node.path(),
        &lab.db,
        &[
            ("FELIX_FLOWLOGSFILEENABLED", "true"),
            ("FELIX_FLOWLOGSFILEDIRECTORY", &logs.display().to_string()),
            ("FELIX_FLOWLOGSFLUSHINTERVAL", "1"),
        ],
    );
    until(&ext, NODE_IP, 8080, Probe::Allowed, "the policy applied");
    expect(&ext, NODE_IP, 9090, Probe::Denied, "no rule for 9090");
    until(
        &node,
        EXT_IP,
        7070,
        Probe::Allowed,
        "the egress policy applied",
    );

    let file = logs.join("flows.log");
    let record = |rs: &[serde_json::Value], port: u64, action: &str| {
        rs.iter()
            .find(|r| {
                r["reporter"] == "dst"
                    && r["dest_port"] == port
                    && r["action"] == action
                    && r["dest_type"] == "hep"
                    && r["dest_name"] == "node-1-ext0"
                    && r["source_ip"] == EXT_IP
            })
            .cloned()
    };
    let out = |rs: &[serde_json::Value]| {
        rs.iter()
            .find(|r| {
                r["reporter"] == "src"
                    && r["dest_port"] == 7070
                    && r["source_type"] == "hep"
                    && r["dest_ip"] == EXT_IP
            })
            .cloned()
    };
    let mut all = Vec::new();
    until_true("flow records of the three connections", || {
        all = std::fs::read_to_string(&file)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        record(&all, 8080, "allow").is_some()
            && record(&all, 9090, "deny").is_some()
            && out(&all).is_some()
    });
    let out = out(&all).expect("out");
    assert_eq!(out["action"], "allow", "{all:?}");
    assert_eq!(out["source_name"], "node-1-ext0", "{all:?}");
    assert_eq!(
        out["policies"],
        json!(["0|default|edge-out|allow|0"]),
        "{all:?}"
    );
    assert!(
        out["num_flows_started"].as_u64().unwrap_or(0) >= 1,
        "{all:?}"
    );
    let allowed = record(&all, 8080, "allow").expect("allowed");
    assert_eq!(
        allowed["policies"],
        json!(["0|default|edge-in|allow|0"]),
        "{all:?}"
    );
    assert_eq!(allowed["dest_labels"]["role"], "edge");
    assert!(allowed["num_flows_started"].as_u64().unwrap_or(0) >= 1);
    let denied = record(&all, 9090, "deny").expect("denied");
    assert_eq!(
        denied["policies"],
        json!(["0|default|default.end-of-tier|deny|-1"]),
        "{all:?}"
    );
}
