//! A hostile pod and a careless operator against one node's firewall, on
//! real packets: spoofed sources (a secondary address, a raw socket),
//! tunnels sent by a workload, traffic to the host, a second endpoint
//! claiming a pod's interface, and records whose interface names would
//! break or widen the ruleset. Every "dropped" is told from "nothing was
//! listening" by a control packet that must arrive at the same receiver.

use calico_datastore::Store;
use calico_test_support::{add_pod, calicoctl, felix_once, KillOnDrop, Netns};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

fn bin(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_calico-node")).with_file_name(name)
}

/// A UDP receiver: every datagram's source address and destination port
/// is appended to the log file, one `addr port` a line (IPv6 with V6=1).
const RECEIVER: &str = "
import os, socket, sys, threading
log = open(sys.argv[1], 'a', buffering=1)
v6 = os.environ.get('V6') == '1'
def serve(port):
    s = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_DGRAM); s.bind(('::' if v6 else '0.0.0.0', port))
    while True:
        data, peer = s.recvfrom(2048); log.write('%s %d %s\\n' % (peer[0], port, data.decode(errors='replace')))
for p in sys.argv[2:]:
    t = threading.Thread(target=serve, args=(int(p),)); t.daemon = True; t.start()
threading.Event().wait()
";

/// Sends one UDP datagram `tag` to ip:port, from `src` when given (bound).
fn send_udp(from: &Netns, src: Option<&str>, ip: &str, port: u16, tag: &str) {
    let bind = src.map_or(String::new(), |s| format!("s.bind(('{s}', 0))\n"));
    let family = if ip.contains(':') {
        "AF_INET6"
    } else {
        "AF_INET"
    };
    let code = format!(
        "import socket\ns=socket.socket(socket.{family}, socket.SOCK_DGRAM)\n{bind}s.sendto(b'{tag}', ('{ip}', {port}))"
    );
    from.ok(&["python3", "-c", &code]);
}

/// Sends one UDP datagram `tag` to ip:port with a forged IPv4 header
/// (source `src`) through a raw socket, as a pod with CAP_NET_RAW can.
fn send_raw(from: &Netns, src: &str, ip: &str, port: u16, tag: &str) {
    let code = format!(
        "import socket, struct
src, dst = socket.inet_aton('{src}'), socket.inet_aton('{ip}')
payload = b'{tag}'
udp = struct.pack('!HHHH', 40000, {port}, 8 + len(payload), 0) + payload
hdr = struct.pack('!BBHHHBBH4s4s', 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0, src, dst)
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
s.sendto(hdr + udp, ('{ip}', 0))"
    );
    from.ok(&["python3", "-c", &code]);
}

/// The tags that reached a receiver, with the source each came from.
fn received(log: &Path) -> Vec<(String, String)> {
    std::thread::sleep(Duration::from_millis(300));
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut parts = l.split(' ');
            let src = parts.next()?.to_string();
            let _port = parts.next()?;
            Some((parts.next()?.to_string(), src))
        })
        .collect()
}

fn got(log: &Path, tag: &str) -> Option<String> {
    received(log)
        .into_iter()
        .find(|(t, _)| t == tag)
        .map(|(_, src)| src)
}

struct Node {
    ns: Netns,
    dir: tempfile::TempDir,
    procs: Vec<KillOnDrop>,
}

impl Node {
    fn new(tag: &str, addr: &str) -> Node {
        let ns = Netns::new(tag);
        ns.make_node(addr);
        Node {
            ns,
            dir: tempfile::tempdir().expect("tempdir"),
            procs: Vec::new(),
        }
    }

    fn db(&self) -> PathBuf {
        self.dir.path().join("calico.db")
    }

    fn ctl(&self, args: &[&str], stdin: &str) -> std::process::Output {
        calicoctl(&bin("calicoctl"), &self.db(), args, stdin)
    }

    fn apply(&self, yaml: &str) {
        let out = self.ctl(&["apply", "-f", "-"], yaml);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn felix(&self) {
        felix_once(
            &bin("calico-node"),
            &self.ns.path(),
            "node-1",
            &self.db().display().to_string(),
        );
    }

    fn pod(&self, name: &str, labels: &[(&str, &str)]) -> (Netns, String) {
        self.pod_with(name, labels, json!({"type": "calico-ipam"}))
    }

    /// An IPv6-only pod.
    fn pod6(&self, name: &str, labels: &[(&str, &str)]) -> (Netns, String) {
        self.pod_with(
            name,
            labels,
            json!({"type": "calico-ipam", "assign_ipv4": "false", "assign_ipv6": "true"}),
        )
    }

    fn pod_with(
        &self,
        name: &str,
        labels: &[(&str, &str)],
        ipam: serde_json::Value,
    ) -> (Netns, String) {
        let pod = Netns::new(&format!("adv-{name}"));
        let labels: Vec<_> = labels
            .iter()
            .map(|(k, v)| json!({"key": k, "value": v}))
            .collect();
        let conf = json!({"cniVersion": "1.0.0", "name": "k8s-pod-network", "type": "calico", "nodename": "node-1",
            "datastore_path": self.db(), "ipam": ipam, "args": {"cni": {"labels": labels}}});
        let ip = add_pod(
            &bin("calico"),
            &self.ns.name,
            &pod,
            &conf.to_string(),
            "x",
            name,
        );
        (pod, ip)
    }

    /// Starts a receiver in `netns` on `ports`; returns its log file.
    fn receiver(&mut self, netns: &str, name: &str, ports: &[u16]) -> PathBuf {
        self.receiver_in(netns, name, ports, false)
    }

    fn receiver_in(&mut self, netns: &str, name: &str, ports: &[u16], v6: bool) -> PathBuf {
        let log = self.dir.path().join(format!("{name}.log"));
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", netns, "python3", "-c", RECEIVER])
            .env("V6", if v6 { "1" } else { "0" })
            .arg(&log)
            .args(ports.iter().map(ToString::to_string))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        self.procs.push(KillOnDrop(cmd.spawn().expect("receiver")));
        for port in ports {
            calico_test_support::wait_listening(netns, "udp", *port);
        }
        log
    }

    /// The agent running in the node (health server on `port`) until the
    /// guard drops.
    fn agent(&self, port: u16) -> KillOnDrop {
        KillOnDrop(
            Command::new("nsenter")
                .arg(format!("--net={}", self.ns.path()))
                .arg(bin("calico-node"))
                .args([
                    "felix",
                    "--node",
                    "node-1",
                    "--health-port",
                    &port.to_string(),
                ])
                .env("CALICO_DATASTORE_PATH", self.db())
                .env_remove("DATASTORE_TYPE")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("agent"),
        )
    }

    /// The packet counter of a chain's rule that starts with `needle`.
    fn counter(&self, chain: &str, needle: &str) -> u64 {
        let text = self
            .ns
            .ok(&["nft", "list", "chain", "inet", "calico", chain]);
        text.lines()
            .find(|l| l.trim_start().starts_with(needle) && l.contains("counter"))
            .and_then(|l| l.split("packets ").nth(1))
            .and_then(|r| r.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no counter for {needle:?} in {text}"))
    }

    /// Writes a resource straight into the datastore, as a buggy or
    /// hostile writer that skips calicoctl's validation would.
    fn put_raw(&self, key: &str, value: &serde_json::Value) {
        let store = calico_datastore_sqlite::SqliteStore::open(self.db()).expect("open db");
        let bytes = serde_json::to_vec(value).expect("json");
        match store.get(key).expect("get") {
            Some(kv) => {
                store.update(key, &bytes, kv.mod_revision).expect("update");
            }
            None => {
                store.create(key, &bytes).expect("create");
            }
        }
    }
}

const SETUP: &str = "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: p}\nspec: {cidr: 10.87.0.0/16}\n---\n\
apiVersion: projectcalico.org/v3\nkind: Profile\nmetadata: {name: kns.x}\nspec: {ingress: [{action: Allow}], egress: [{action: Allow}], labelsToApply: {pcns.kubernetes.io/metadata.name: x}}\n---\n\
apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {name: db-from-trusted, namespace: x}\n\
spec: {selector: app == 'db', types: [Ingress], ingress: [{action: Allow, source: {selector: role == 'trusted'}}]}\n";

/// A node with SETUP and its three pods: db (which only `role ==
/// 'trusted'` may reach), trusted and attacker, each with its address.
fn cast(tag: &str, addr: &str) -> (Node, [(Netns, String); 3]) {
    let node = Node::new(tag, addr);
    node.apply(SETUP);
    let pods = [
        node.pod("db", &[("app", "db")]),
        node.pod("trusted", &[("role", "trusted")]),
        node.pod("attacker", &[("role", "attacker")]),
    ];
    (node, pods)
}

#[test]
fn spoofed_sources_and_workload_tunnels_are_dropped() {
    let (mut node, [(db, ip_db), (trusted, ip_trusted), (attacker, ip_attacker)]) =
        cast("adv-spoof", "10.250.7.1/24");
    // Felix's default for workload-to-host traffic is Drop; this node lets
    // it through so that the tunnel check is seen on its own.
    node.apply("apiVersion: projectcalico.org/v3\nkind: FelixConfiguration\nmetadata: {name: default}\nspec: {defaultEndpointToHostAction: Accept}\n");
    node.felix();
    let log = node.receiver(&db.name, "db", &[9999]);

    send_udp(&trusted, None, &ip_db, 9999, "control");
    assert_eq!(
        got(&log, "control").as_deref(),
        Some(ip_trusted.as_str()),
        "the trusted pod reaches the receiver (it is up and the policy allows)"
    );
    send_udp(&attacker, None, &ip_db, 9999, "plain");
    assert_eq!(
        got(&log, "plain"),
        None,
        "the attacker's own address is denied"
    );

    // A secondary address: the trusted pod's, on the attacker's eth0.
    attacker.ok(&[
        "ip",
        "addr",
        "add",
        &format!("{ip_trusted}/32"),
        "dev",
        "eth0",
    ]);
    send_udp(&attacker, Some(&ip_trusted), &ip_db, 9999, "secondary");
    // A raw socket with a forged header.
    send_raw(&attacker, &ip_trusted, &ip_db, 9999, "raw");
    // An address of no workload at all (inside the pool, and outside).
    send_raw(&attacker, "10.87.200.1", &ip_db, 9999, "unowned");
    send_raw(&attacker, "8.8.8.8", &ip_db, 9999, "outside");
    send_udp(&trusted, None, &ip_db, 9999, "control-2");
    let seen = received(&log);
    assert!(
        seen.iter().any(|(t, _)| t == "control-2"),
        "receiver still up: {seen:?}"
    );
    for tag in ["secondary", "raw", "unowned", "outside"] {
        assert!(
            !seen.iter().any(|(t, _)| t == tag),
            "a spoofed packet ({tag}) got through: {seen:?}"
        );
    }
    let spoof_drops = node.counter(&format!("sp-{}", cali_of(&node, &ip_attacker)), "counter");
    assert!(spoof_drops >= 4, "the source check counted {spoof_drops}");

    // allowSpoofedSourcePrefixes counts only where the node allows it.
    let wep = wep_of(&node, &ip_attacker);
    let mut spoofing = wep.clone();
    spoofing["spec"]["allowSpoofedSourcePrefixes"] = json!(["10.99.0.0/24"]);
    node.apply(&spoofing.to_string());
    node.felix();
    send_raw(&attacker, "10.99.0.5", &ip_db, 9999, "prefix-off");
    node.apply("apiVersion: projectcalico.org/v3\nkind: FelixConfiguration\nmetadata: {name: default}\nspec: {defaultEndpointToHostAction: Accept, workloadSourceSpoofing: Any}\n");
    // The policy would deny the attacker's prefix anyway: allow it, so
    // that only the source check decides.
    node.apply("apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {name: db-from-prefix, namespace: x}\n\
        spec: {selector: app == 'db', types: [Ingress], ingress: [{action: Allow, source: {nets: [10.99.0.0/24]}}]}\n");
    node.felix();
    send_raw(&attacker, "10.99.0.5", &ip_db, 9999, "prefix-on");
    send_raw(&attacker, "10.99.1.5", &ip_db, 9999, "prefix-outside");
    assert_eq!(got(&log, "prefix-off"), None, "spoofing is off by default");
    assert_eq!(got(&log, "prefix-on").as_deref(), Some("10.99.0.5"));
    assert_eq!(got(&log, "prefix-outside"), None);

    // VXLAN (and IPIP) from a workload never reach the host's decapsulation.
    let node_ns = node.ns.name.clone();
    let host = node.receiver(&node_ns, "host", &[4789, 4790]);
    send_udp(&attacker, None, "10.250.7.1", 4790, "to-host");
    send_udp(&attacker, None, "10.250.7.1", 4789, "vxlan");
    assert_eq!(
        got(&host, "to-host").as_deref(),
        Some(ip_attacker.as_str()),
        "workload to host is accepted here"
    );
    assert_eq!(
        got(&host, "vxlan"),
        None,
        "VXLAN from a workload is dropped"
    );
    assert!(
        node.counter(
            &format!("sp-{}", cali_of(&node, &ip_attacker)),
            "udp dport 4789"
        ) >= 1
    );

    // Felix's default: nothing from a workload to its host.
    node.apply("apiVersion: projectcalico.org/v3\nkind: FelixConfiguration\nmetadata: {name: default}\nspec: {}\n");
    node.felix();
    send_udp(&attacker, None, "10.250.7.1", 4790, "to-host-default");
    send_udp(&trusted, None, &ip_db, 9999, "control-3");
    assert!(got(&log, "control-3").is_some());
    assert_eq!(
        got(&host, "to-host-default"),
        None,
        "defaultEndpointToHostAction Drop"
    );
}

/// The host-side interface of the pod with `ip`.
fn cali_of(node: &Node, ip: &str) -> String {
    wep_of(node, ip)["spec"]["interfaceName"]
        .as_str()
        .expect("interfaceName")
        .to_string()
}

/// The WorkloadEndpoint holding `ip`, as calicoctl shows it.
fn wep_of(node: &Node, ip: &str) -> serde_json::Value {
    let out = node.ctl(&["get", "workloadendpoints", "-A", "-o", "json"], "");
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    list["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|w| {
            w["spec"]["ipNetworks"].as_array().is_some_and(|n| {
                n.iter()
                    .any(|n| n.as_str().is_some_and(|n| n.starts_with(&format!("{ip}/"))))
            })
        })
        .cloned()
        .unwrap_or_else(|| panic!("no endpoint with {ip}"))
}

#[test]
fn bad_and_conflicting_endpoints_affect_only_themselves() {
    let (mut node, [(db, ip_db), (trusted, _), (attacker, _)]) = cast("adv-bad", "10.250.8.1/24");
    node.felix();
    let log = node.receiver(&db.name, "db", &[9999]);
    send_udp(&trusted, None, &ip_db, 9999, "control");
    send_udp(&attacker, None, &ip_db, 9999, "denied");
    assert!(got(&log, "control").is_some());
    assert_eq!(got(&log, "denied"), None);

    // A second endpoint naming the db pod's interface, with no policy of
    // its own (the namespace profile allows everything).
    let iface = cali_of(&node, &ip_db);
    node.apply(&format!(
        "apiVersion: projectcalico.org/v3\nkind: WorkloadEndpoint\nmetadata: {{name: node--1-k8s-a-eth0, namespace: x, labels: {{app: rogue}}}}\n\
         spec: {{node: node-1, orchestrator: k8s, pod: rogue, endpoint: eth0, interfaceName: {iface}, ipNetworks: [10.87.250.1/32], profiles: [kns.x]}}\n"
    ));
    node.felix();
    send_udp(&attacker, None, &ip_db, 9999, "rogue-open");
    send_udp(&trusted, None, &ip_db, 9999, "after-conflict");
    assert_eq!(
        got(&log, "rogue-open"),
        None,
        "the second endpoint must not loosen the db pod's policy"
    );
    assert_eq!(
        got(&log, "after-conflict"),
        None,
        "a conflicted interface is closed (neither endpoint is programmed)"
    );
    let status = felix_status(&node);
    assert!(status.contains("also named by"), "{status}");
    let del = node.ctl(
        &[
            "delete",
            "workloadendpoint",
            "node--1-k8s-a-eth0",
            "-n",
            "x",
        ],
        "",
    );
    assert!(
        del.status.success(),
        "{}",
        String::from_utf8_lossy(&del.stderr)
    );
    node.felix();
    send_udp(&trusted, None, &ip_db, 9999, "resolved");
    assert!(got(&log, "resolved").is_some(), "the db pod is back");

    // Interface names that would break the nft script, or point workload
    // policy at the node's uplink, written past calicoctl's validation.
    for (name, iface) in [
        ("inject", "x\"; flush ruleset; \""),
        ("braces", "c{a}"),
        ("spaces", "cali a b"),
        ("uplink", "uplink0"),
        ("long", "caliaaaaaaaaaaaaaaaaaaaaaa"),
    ] {
        node.put_raw(
            &format!("/calico/resources/v3/projectcalico.org/workloadendpoints/x/node--1-k8s-{name}-eth0"),
            &json!({"apiVersion": "projectcalico.org/v3", "kind": "WorkloadEndpoint",
                "metadata": {"name": format!("node--1-k8s-{name}-eth0"), "namespace": "x", "labels": {"app": "db"}},
                "spec": {"node": "node-1", "orchestrator": "k8s", "pod": name, "endpoint": "eth0",
                         "interfaceName": iface, "ipNetworks": ["10.87.251.1/32"], "profiles": ["kns.x"]}}),
        );
    }
    // Calicoctl itself refuses them.
    let out = node.ctl(&["apply", "-f", "-"], "apiVersion: projectcalico.org/v3\nkind: WorkloadEndpoint\nmetadata: {name: node--1-k8s-q-eth0, namespace: x}\nspec: {node: node-1, interfaceName: 'a\"b'}\n");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not an interface name"));

    // The node keeps applying policy: a new pod is wired and its policy
    // enforced, and the uplink carries no workload chain.
    let (late, ip_late) = node.pod("late", &[("app", "db")]);
    node.felix();
    let late_log = node.receiver(&late.name, "late", &[9999]);
    send_udp(&trusted, None, &ip_late, 9999, "late-ok");
    send_udp(&attacker, None, &ip_late, 9999, "late-denied");
    assert!(
        got(&late_log, "late-ok").is_some(),
        "policy keeps being applied"
    );
    assert_eq!(got(&late_log, "late-denied"), None);
    let table = node.ns.ok(&["nft", "list", "table", "inet", "calico"]);
    assert!(!table.contains("uplink0"), "{table}");
    assert!(!table.contains("flush"), "{table}");
    assert!(node
        .ns
        .ok(&["ip", "link", "show", "uplink0"])
        .contains("UP"));
    // A host endpoint the node cannot program (a workload's interface) is
    // reported, and changes nothing else.
    node.apply("apiVersion: projectcalico.org/v3\nkind: HostEndpoint\nmetadata: {name: node-1-cali}\nspec: {node: node-1, interfaceName: cali12345678901}\n");
    let status = felix_status(&node);
    assert!(
        status.contains("hostendpoint/node-1-cali") && status.contains("is a workload interface"),
        "{status}"
    );
    for name in ["inject", "braces", "spaces", "uplink", "long"] {
        assert!(
            status.contains(&format!("node--1-k8s-{name}-eth0")),
            "{name}: {status}"
        );
    }
}

/// The agent's `/status` JSON after one run (it serves while it runs).
fn felix_status(node: &Node) -> String {
    let port = calico_test_support::free_port();
    let mut agent = node.agent(port);
    let mut last = String::new();
    for _ in 0..100 {
        let out = node.ns.exec(&[
            "python3",
            "-c",
            &format!("import urllib.request;print(urllib.request.urlopen('http://127.0.0.1:{port}/status', timeout=1).read().decode())"),
        ]);
        last = String::from_utf8_lossy(&out.stdout).to_string();
        if last.contains("\"in_sync\":true") {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = agent.0.kill();
    last
}

const SLOW_CLIENTS: &str = "
import json, socket, sys, time, urllib.request
port = int(sys.argv[1])
def live():
    t = time.time()
    try:
        ok = urllib.request.urlopen('http://127.0.0.1:%d/liveness' % port, timeout=3).status == 200
    except Exception:
        ok = False
    return ok, time.time() - t
idle = [socket.create_connection(('127.0.0.1', port)) for _ in range(20)]
half = socket.create_connection(('127.0.0.1', port)); half.sendall(b'GET /liveness HTTP/1.1\\r\\nHost: x\\r\\n')
ok_idle, t_idle = live()
huge = socket.create_connection(('127.0.0.1', port)); huge.settimeout(5); sent = 0; cut = False
try:
    chunk = b'G' * 65536
    for _ in range(320):
        huge.sendall(chunk); sent += len(chunk)
except socket.timeout:
    pass  # stalled: nobody reads, and nobody closed it either
except OSError:
    cut = True
ok_after, _ = live()
time.sleep(6)
# The idle ones were closed by the server's header deadline.
closed = 0
for s in idle:
    s.settimeout(1)
    try:
        closed += s.recv(1) == b''
    except OSError:
        closed += 1
print(json.dumps({'ok_idle': ok_idle, 't_idle': t_idle, 'cut': cut, 'sent': sent, 'ok_after': ok_after, 'closed': closed}))
";

/// The health server: idle and half-sent requests delay nobody, a request
/// line without end is cut off (memory stays flat), idle clients are
/// closed by the deadline.
#[test]
fn health_server_survives_idle_slow_and_huge_clients() {
    let node = Node::new("adv-http", "10.250.10.1/24");
    node.apply(SETUP);
    let port = calico_test_support::free_port();
    let agent = node.agent(port);
    let port = port.to_string();
    let pid = agent.0.id();
    calico_test_support::wait_logged(
        node.dir.path(),
        "health server",
        Duration::from_secs(10),
        || {
            node.ns
                .exec(&["curl", "-sf", &format!("http://127.0.0.1:{port}/liveness")])
                .status
                .success()
        },
    );
    let before = calico_test_support::rss_kib(pid);
    let out = node.ns.ok(&["python3", "-c", SLOW_CLIENTS, &port]);
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("json");
    let after = calico_test_support::rss_kib(pid);
    assert_eq!(v["ok_idle"], true, "liveness behind idle clients: {v}");
    assert_eq!(
        v["cut"], true,
        "20 MB without a newline was read whole: {v}"
    );
    assert!(v["sent"].as_u64().expect("sent") < 4 << 20, "{v}");
    assert_eq!(v["ok_after"], true, "{v}");
    assert_eq!(v["closed"], 20, "idle clients closed by the deadline: {v}");
    assert!(
        after < before + 8 * 1024,
        "the agent grew from {before} KiB to {after} KiB"
    );
}

/// The same over IPv6: a secondary address and a raw socket with another
/// pod's source never pass the node; the trusted pod's packets do.
#[test]
fn ipv6_spoofed_sources_are_dropped() {
    let mut node = Node::new("adv-spoof6", "10.250.11.1/24");
    node.ns
        .ok(&["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"]);
    node.apply("apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: p6}\nspec: {cidr: 'fd00:87::/112'}\n---\n\
apiVersion: projectcalico.org/v3\nkind: Profile\nmetadata: {name: kns.x}\nspec: {ingress: [{action: Allow}], egress: [{action: Allow}], labelsToApply: {pcns.kubernetes.io/metadata.name: x}}\n---\n\
apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {name: db-from-trusted, namespace: x}\n\
spec: {selector: app == 'db', types: [Ingress], ingress: [{action: Allow, source: {selector: role == 'trusted'}}]}\n");
    let (db, ip_db) = node.pod6("db", &[("app", "db")]);
    let (trusted, ip_trusted) = node.pod6("trusted", &[("role", "trusted")]);
    let (attacker, _) = node.pod6("attacker", &[("role", "attacker")]);
    node.felix();
    let log = node.receiver_in(&db.name.clone(), "db6", &[9999], true);
    // Neighbour discovery settles (the first packets may wait on it).
    let _ = trusted.exec(&["ping", "-6", "-c1", "-W2", &ip_db]);
    send_udp(&trusted, None, &ip_db, 9999, "control");
    assert_eq!(got(&log, "control").as_deref(), Some(ip_trusted.as_str()));
    attacker.ok(&[
        "ip",
        "-6",
        "addr",
        "add",
        &format!("{ip_trusted}/128"),
        "dev",
        "eth0",
        "nodad",
    ]);
    send_udp(&attacker, Some(&ip_trusted), &ip_db, 9999, "secondary");
    let raw = format!(
        "import socket\ns=socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_UDP)\n\
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_CHECKSUM, 6)\n\
s.bind(('{ip_trusted}', 0))\ns.sendto(b'\\x9c\\x40\\x27\\x0f\\x00\\x0b\\x00\\x00raw', ('{ip_db}', 0))"
    );
    let _ = attacker.exec(&["python3", "-c", &raw]);
    send_udp(&trusted, None, &ip_db, 9999, "control-2");
    let seen = received(&log);
    assert!(seen.iter().any(|(t, _)| t == "control-2"), "{seen:?}");
    for tag in ["secondary", "raw"] {
        assert!(
            !seen.iter().any(|(t, _)| t == tag),
            "{tag} got through: {seen:?}"
        );
    }
}
