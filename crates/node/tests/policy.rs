//! Real packets through real nftables: pods wired by the calico CNI plugin
//! in a node namespace, policy applied by `calico-node felix`, probed with
//! ping and TCP. Everything runs in namespaces this test creates.
// A test against real processes: it waits on the clock.
#![allow(clippy::disallowed_methods)]

use calico_test_support::{add_pod, KillOnDrop, Netns};
use serde_json::json;
use std::path::PathBuf;
use std::process::{Command, Stdio};

fn bin(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_calico-node")).with_file_name(name)
}

struct Node {
    ns: Netns,
    dir: tempfile::TempDir,
    /// Pod servers, stopped when the node goes.
    servers: Vec<KillOnDrop>,
}

impl Node {
    fn db(&self) -> String {
        self.dir.path().join("calico.db").display().to_string()
    }

    fn ctl_apply(&self, yaml: &str) {
        calico_test_support::ctl_apply(&bin("calicoctl"), &self.db(), self.dir.path(), yaml);
    }

    fn ctl_delete(&self, kind: &str, name: &str, ns: &str) {
        calico_test_support::ctl_delete(&bin("calicoctl"), &self.db(), kind, ns, name);
    }

    /// Runs the agent once inside the node namespace.
    fn felix(&self) {
        calico_test_support::felix_once(&bin("calico-node"), &self.ns.path(), "node-1", &self.db());
    }

    /// Creates a pod through the CNI plugin; returns its namespace and IP.
    fn pod(&mut self, ns: &str, name: &str, labels: &[(&str, &str)]) -> (Netns, String) {
        let pod = Netns::new(&format!("pol-{name}"));
        let labels: Vec<_> = labels
            .iter()
            .map(|(k, v)| json!({"key": k, "value": v}))
            .collect();
        // Named ports, as the CNI conventions' args carry them.
        let ports = json!([{"name": "serve-80-tcp", "protocol": "TCP", "port": 80}, {"name": "serve-81-tcp", "protocol": "TCP", "port": 81}, {"name": "serve-80-udp", "protocol": "UDP", "port": 80}]);
        let conf = json!({"cniVersion": "1.0.0", "name": "k8s-pod-network", "type": "calico", "nodename": "node-1",
            "datastore_path": self.db(), "ipam": {"type": "calico-ipam"}, "args": {"cni": {"labels": labels, "ports": ports}}});
        let ip = add_pod(
            &bin("calico"),
            &self.ns.name,
            &pod,
            &conf.to_string(),
            ns,
            name,
        );
        // Servers in the pod: TCP 80 and 81, UDP 80 (each answers "ok").
        let server = Command::new("ip")
            .args(["netns", "exec", &pod.name, "python3", "-c", SERVER])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("server");
        self.servers.push(KillOnDrop(server));
        for (proto, port) in [("tcp", 80), ("tcp", 81), ("udp", 80)] {
            calico_test_support::wait_listening(&pod.name, proto, port);
        }
        (pod, ip)
    }
}

const SERVER: &str = "
import socket, threading
def tcp(port):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(('0.0.0.0', port)); s.listen(64)
    while True:
        c, _ = s.accept(); c.sendall(b'ok'); c.close()
def udp(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(('0.0.0.0', port))
    while True:
        _, peer = s.recvfrom(64); s.sendto(b'ok', peer)
for t in [threading.Thread(target=tcp, args=(80,)), threading.Thread(target=tcp, args=(81,)), threading.Thread(target=udp, args=(80,))]:
    t.daemon = True; t.start()
threading.Event().wait()
";

/// Whether `from` reaches `ip`:`port` over `proto` (0.5 s timeout, tried
/// twice): true when the server answers, false when nothing comes back
/// (dropped). A refusal (reset, port unreachable: the packet got through
/// but nothing listens) fails the test, so that a server that is down can
/// never pass for a denied packet.
fn probe(from: &Netns, ip: &str, port: u16, proto: &str) -> bool {
    let code = if proto == "udp" {
        format!("import socket, sys\ns=socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\ns.settimeout(0.5)\ns.connect(('{ip}', {port}))\n\
try:\n    s.send(b'x'); sys.exit(0 if s.recv(2) == b'ok' else 1)\nexcept ConnectionRefusedError:\n    sys.exit(2)\nexcept OSError:\n    sys.exit(1)")
    } else {
        format!("import socket, sys\n\
try:\n    s=socket.create_connection(('{ip}', {port}), timeout=0.5); sys.exit(0 if s.recv(2) == b'ok' else 1)\nexcept (ConnectionRefusedError, ConnectionResetError):\n    sys.exit(2)\nexcept OSError:\n    sys.exit(1)")
    };
    for _ in 0..2 {
        match from.exec(&["python3", "-c", &code]).status.code() {
            Some(0) => return true,
            Some(2) => {
                panic!("{ip}:{port}/{proto} refused: nothing listens there (a server is down)")
            }
            _ => {}
        }
    }
    false
}

fn tcp(from: &Netns, ip: &str) -> bool {
    probe(from, ip, 80, "tcp")
}

fn ping(from: &Netns, ip: &str) -> bool {
    from.exec(&["ping", "-c1", "-W1", ip]).status.success()
}

#[test]
fn kubernetes_policies_enforced_on_real_packets() {
    let ns = Netns::new("pol-node");
    ns.make_node("10.250.5.1/24");
    // Other tables are never touched.
    ns.ok(&["nft", "add", "table", "inet", "someone-else"]);
    let mut node = Node {
        ns,
        dir: tempfile::tempdir().expect("tempdir"),
        servers: Vec::new(),
    };
    node.ctl_apply(
        "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: p}\nspec: {cidr: 10.86.0.0/16}\n---\n\
         apiVersion: projectcalico.org/v3\nkind: Profile\nmetadata: {name: kns.x}\nspec: {ingress: [{action: Allow}], egress: [{action: Allow}], labelsToApply: {pcns.kubernetes.io/metadata.name: x}}\n",
    );
    let (a, ip_a) = node.pod("x", "a", &[("app", "a")]);
    let (b, ip_b) = node.pod("x", "b", &[("app", "b")]);
    let (c, ip_c) = node.pod("x", "c", &[("app", "c")]);
    node.felix();
    assert!(
        tcp(&b, &ip_a) && ping(&b, &ip_a),
        "no policy: the namespace profile allows"
    );
    // The agent owns a /32 per workload and a blackhole for the node's block.
    let routes = node.ns.ok(&["ip", "-4", "route", "show", "proto", "80"]);
    for ip in [&ip_a, &ip_b, &ip_c] {
        assert!(routes.contains(&format!("{ip} dev cali")), "{routes}");
    }
    assert!(routes.contains("blackhole 10.86."), "{routes}");

    node.ctl_apply("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: deny, namespace: x}\nspec: {podSelector: {}, policyTypes: [Ingress]}\n");
    node.felix();
    assert!(!tcp(&b, &ip_a), "default deny blocks b -> a");
    assert!(!ping(&c, &ip_b), "default deny blocks c -> b");

    node.ctl_apply(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: a-from-b, namespace: x}\n\
         spec: {podSelector: {matchLabels: {app: a}}, ingress: [{from: [{podSelector: {matchLabels: {app: b}}}], ports: [{port: 80}]}]}\n",
    );
    node.felix();
    assert!(tcp(&b, &ip_a), "b may reach a on 80");
    assert!(!tcp(&c, &ip_a), "c may not");
    assert!(!ping(&b, &ip_a), "only TCP 80 is allowed");
    assert!(!tcp(&a, &ip_b), "a -> b is still denied");

    node.ctl_delete("networkpolicy", "knp.default.deny", "x");
    node.ctl_delete("networkpolicy", "knp.default.a-from-b", "x");
    node.felix();
    assert!(
        tcp(&c, &ip_a) && tcp(&a, &ip_b) && ping(&a, &ip_c),
        "all allowed again"
    );

    // Rules alike but for action and port become one verdict map; a rule
    // of another protocol stays a rule of its own.
    let gnp = |rules: &str| {
        format!("apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {{name: ports}}\n\
                 spec: {{selector: app == 'a', types: [Ingress], ingress: [{rules}]}}\n")
    };
    node.ctl_apply(&gnp(
        "{action: Deny, protocol: TCP, destination: {ports: [81]}}, \
         {action: Allow, protocol: TCP, destination: {ports: [80, 81]}}, \
         {action: Deny, protocol: TCP, destination: {ports: [79]}}, \
         {action: Allow, protocol: UDP, destination: {ports: [80]}}",
    ));
    node.felix();
    let listed = node.ns.ok(&["nft", "list", "table", "inet", "calico"]);
    assert!(
        listed.contains("vmap") && listed.contains("verdict-allow"),
        "{listed}"
    );
    assert!(tcp(&b, &ip_a), "TCP 80: allowed by the second rule");
    assert!(
        !probe(&b, &ip_a, 81, "tcp"),
        "TCP 81: the first rule denies it"
    );
    assert!(
        probe(&b, &ip_a, 80, "udp"),
        "UDP 80: its own rule allows it"
    );
    // Rules that decide alike and differ only in ports are one rule.
    node.ctl_apply(&gnp(
        "{action: Allow, protocol: TCP, destination: {ports: [80]}}, \
         {action: Allow, protocol: TCP, destination: {ports: [81]}}",
    ));
    node.felix();
    let listed = node.ns.ok(&["nft", "list", "table", "inet", "calico"]);
    assert!(listed.contains("dport { 80, 81 }"), "{listed}");
    assert!(
        !listed.contains("verdict-allow"),
        "no map, no verdict chains: {listed}"
    );
    assert!(
        tcp(&b, &ip_a) && probe(&b, &ip_a, 81, "tcp"),
        "both ports allowed"
    );
    assert!(
        !probe(&b, &ip_a, 80, "udp"),
        "UDP 80: no rule allows it now"
    );
    node.ctl_delete("globalnetworkpolicy", "ports", "");
    node.felix();
    assert!(
        node.ns
            .ok(&["nft", "list", "tables"])
            .contains("someone-else"),
        "other tables untouched"
    );
}

/// A Kubernetes NetworkPolicy conformance suite over namespaces x, y, z
/// with pods a, b, c each, TCP 80/81 and UDP 80.
#[test]
fn kubernetes_network_policy_conformance() {
    let ns = Netns::new("conf-node");
    ns.make_node("10.250.4.1/24");
    let mut node = Node {
        ns,
        dir: tempfile::tempdir().expect("tempdir"),
        servers: Vec::new(),
    };
    let mut setup = String::from("apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: p}\nspec: {cidr: 10.87.0.0/16}\n");
    for n in ["x", "y", "z"] {
        setup.push_str(&format!("---\napiVersion: projectcalico.org/v3\nkind: Profile\nmetadata: {{name: kns.{n}}}\nspec: {{ingress: [{{action: Allow}}], egress: [{{action: Allow}}], labelsToApply: {{pcns.kubernetes.io/metadata.name: {n}, pcns.ns: {n}}}}}\n"));
    }
    node.ctl_apply(&setup);
    let mut pods = std::collections::BTreeMap::new();
    for n in ["x", "y", "z"] {
        for p in ["a", "b", "c"] {
            let (netns, ip) = node.pod(n, &format!("{n}{p}"), &[("pod", p)]);
            pods.insert(format!("{n}/{p}"), (netns, ip));
        }
    }
    node.felix();
    let reach = |from: &str, to: &str, port: u16, proto: &str| {
        probe(&pods[from].0, &pods[to].1, port, proto)
    };
    let policy = |yaml: &str| {
        node.ctl_apply(yaml);
        node.felix();
    };
    let knp = |name: &str, ns: &str, spec: &str| {
        format!("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: {name}, namespace: {ns}}}\nspec: {spec}\n")
    };

    assert!(
        reach("y/a", "x/a", 80, "tcp") && reach("x/b", "x/a", 80, "udp"),
        "open before any policy"
    );

    // Default deny ingress in x.
    policy(&knp(
        "deny",
        "x",
        "{podSelector: {}, policyTypes: [Ingress]}",
    ));
    assert!(
        !reach("y/a", "x/a", 80, "tcp")
            && !reach("x/b", "x/c", 81, "tcp")
            && !reach("z/c", "x/b", 80, "udp")
    );
    assert!(
        reach("x/a", "y/b", 80, "tcp"),
        "egress from x is not affected"
    );

    // Namespace selector: from namespace y into x/a.
    policy(&knp("from-y", "x", "{podSelector: {matchLabels: {pod: a}}, ingress: [{from: [{namespaceSelector: {matchLabels: {ns: y}}}]}]}"));
    assert!(
        reach("y/a", "x/a", 80, "tcp")
            && reach("y/c", "x/a", 81, "tcp")
            && reach("y/b", "x/a", 80, "udp")
    );
    assert!(
        !reach("z/a", "x/a", 80, "tcp") && !reach("x/b", "x/a", 80, "tcp"),
        "not z, not x itself"
    );
    assert!(!reach("y/a", "x/b", 80, "tcp"), "only x/a is opened");

    // Pod selector across all namespaces: pods labelled b may reach x/c on TCP 81 only.
    policy(&knp("b-to-c", "x", "{podSelector: {matchLabels: {pod: c}}, ingress: [{from: [{namespaceSelector: {}, podSelector: {matchLabels: {pod: b}}}], ports: [{port: 81}]}]}"));
    assert!(reach("z/b", "x/c", 81, "tcp") && reach("x/b", "x/c", 81, "tcp"));
    assert!(!reach("z/b", "x/c", 80, "tcp") && !reach("z/a", "x/c", 81, "tcp"));

    // ipBlock with except: the whole pool except y/c into x/b, UDP only.
    let except = format!("{}/32", pods["y/c"].1);
    policy(&knp("ipblock", "x", &format!("{{podSelector: {{matchLabels: {{pod: b}}}}, ingress: [{{from: [{{ipBlock: {{cidr: 10.87.0.0/16, except: ['{except}']}}}}], ports: [{{protocol: UDP, port: 80}}]}}]}}")));
    assert!(reach("y/a", "x/b", 80, "udp") && reach("z/c", "x/b", 80, "udp"));
    assert!(!reach("y/c", "x/b", 80, "udp"), "the excepted address");
    assert!(!reach("y/a", "x/b", 80, "tcp"), "UDP only");

    // Named port and endPort, in namespace y (default deny there first).
    policy(&knp(
        "deny",
        "y",
        "{podSelector: {}, policyTypes: [Ingress]}",
    ));
    policy(&knp(
        "named",
        "y",
        "{podSelector: {matchLabels: {pod: a}}, ingress: [{ports: [{port: serve-81-tcp}]}]}",
    ));
    let (r81, r80) = (
        reach("z/a", "y/a", 81, "tcp"),
        reach("z/a", "y/a", 80, "tcp"),
    );
    if !r81 || r80 {
        let wep = Command::new(bin("calicoctl"))
            .args([
                "--config",
                "/nonexistent",
                "get",
                "wep",
                "-n",
                "y",
                "-o",
                "yaml",
            ])
            .env("CALICO_DATASTORE_PATH", node.db())
            .output()
            .expect("get");
        panic!(
            "the named port resolves to 81 (81: {r81}, 80: {r80}):\n{}",
            String::from_utf8_lossy(&wep.stdout)
        );
    }
    policy(&knp(
        "range",
        "y",
        "{podSelector: {matchLabels: {pod: b}}, ingress: [{ports: [{port: 80, endPort: 81}]}]}",
    ));
    assert!(
        reach("z/a", "y/b", 80, "tcp")
            && reach("z/a", "y/b", 81, "tcp")
            && !reach("z/a", "y/b", 80, "udp")
    );

    // Egress: z/a may only talk to namespace y.
    policy(&knp("egress", "z", "{podSelector: {matchLabels: {pod: a}}, policyTypes: [Egress], egress: [{to: [{namespaceSelector: {matchLabels: {ns: y}}}]}]}"));
    assert!(
        reach("z/a", "y/b", 80, "tcp"),
        "to y is allowed (and y/b admits 80)"
    );
    assert!(
        !reach("z/a", "z/b", 80, "tcp") && !reach("z/a", "x/b", 80, "udp"),
        "elsewhere is not"
    );
    assert!(
        reach("z/b", "z/c", 80, "tcp"),
        "other pods in z are unaffected"
    );

    // Policy update: x/a now admits namespace z instead of y.
    policy(&knp("from-y", "x", "{podSelector: {matchLabels: {pod: a}}, ingress: [{from: [{namespaceSelector: {matchLabels: {ns: z}}}]}]}"));
    assert!(reach("z/b", "x/a", 80, "tcp") && !reach("y/a", "x/a", 80, "tcp"));

    // Label change: relabel z/c as a "b" pod; the b-to-c rule now admits it.
    assert!(!reach("z/c", "x/c", 81, "tcp"));
    let out = Command::new(bin("calicoctl"))
        .args([
            "--config",
            "/nonexistent",
            "label",
            "workloadendpoint",
            "node--1-k8s-zc-eth0",
            "pod=b",
            "--overwrite",
            "-n",
            "z",
        ])
        .env("CALICO_DATASTORE_PATH", node.db())
        .env_remove("DATASTORE_TYPE")
        .output()
        .expect("calicoctl label");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    node.felix();
    assert!(reach("z/c", "x/c", 81, "tcp"), "the new label is honoured");
}

/// The running agent: health, the in-sync report tools wait on, and metrics.
#[test]
fn health_status_and_metrics() {
    let ns = Netns::new("status-node");
    ns.make_node("10.250.2.1/24");
    let node = Node {
        ns,
        dir: tempfile::tempdir().expect("tempdir"),
        servers: Vec::new(),
    };
    node.ctl_apply("apiVersion: projectcalico.org/v3\nkind: WorkloadEndpoint\nmetadata: {name: ep, namespace: default, labels: {app: web}}\nspec: {node: node-1, interfaceName: cali0000stat1, ipNetworks: [10.90.0.1/32]}\n");
    let agent = Command::new("nsenter")
        .arg(format!("--net={}", node.ns.path()))
        .arg(bin("calico-node"))
        .args(["felix", "--node", "node-1"])
        .env("CALICO_DATASTORE_PATH", node.db())
        .env("FELIX_PROMETHEUSMETRICSENABLED", "true")
        .env_remove("DATASTORE_TYPE")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("felix");
    let _agent = KillOnDrop(agent);
    let get = |path: &str| {
        node.ns.exec(&[
            "curl",
            "-s",
            "-o",
            "-",
            "-w",
            "\n%{http_code}",
            &format!("http://127.0.0.1:{path}"),
        ])
    };
    let body = |path: &str| String::from_utf8_lossy(&get(path).stdout).into_owned();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !body("9099/readiness").ends_with("200") {
        assert!(std::time::Instant::now() < deadline, "never became ready");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(body("9099/liveness").ends_with("200"));
    // Write a policy; the in-sync report reaches the revision of that write.
    node.ctl_apply("apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: web}\nspec: {selector: app == 'web', ingress: [{action: Allow, protocol: TCP, destination: {ports: [8443]}}]}\n");
    let out = Command::new(bin("calicoctl"))
        .args([
            "--config",
            "/nonexistent",
            "get",
            "gnp",
            "web",
            "-o",
            "json",
        ])
        .env("CALICO_DATASTORE_PATH", node.db())
        .output()
        .expect("get");
    let written: i64 = serde_json::from_slice::<serde_json::Value>(&out.stdout).expect("json")
        ["metadata"]["resourceVersion"]
        .as_str()
        .expect("rv")
        .parse()
        .expect("number");
    loop {
        let text = body("9099/status");
        let json = text.rsplit_once('\n').map_or("", |(j, _)| j);
        let v: serde_json::Value = serde_json::from_str(json).unwrap_or_default();
        if v["in_sync"] == true && v["applied_revision"].as_i64().unwrap_or(0) >= written {
            assert_eq!(v["node"], "node-1");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never reported revision {written}: {text}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(
        node.ns
            .ok(&["nft", "list", "table", "inet", "calico"])
            .contains("dport 8443"),
        "in sync means the rule is in the kernel"
    );
    let metrics = body("9091/metrics");
    assert!(
        metrics.contains("felix_active_local_endpoints 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("felix_active_local_policies 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("felix_dataplane_apply_seconds_count"),
        "{metrics}"
    );

    // FelixConfiguration is read from the datastore: moving the health
    // port makes the agent restart itself and serve on the new one.
    node.ctl_apply("apiVersion: projectcalico.org/v3\nkind: FelixConfiguration\nmetadata: {name: default}\nspec: {healthPort: 9199}\n");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !body("9199/readiness").ends_with("200") {
        assert!(
            std::time::Instant::now() < deadline,
            "never served health on the configured port"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(
        !body("9099/liveness").ends_with("200"),
        "the old port is closed"
    );
}
