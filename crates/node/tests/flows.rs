//! Flow records from real packets: pods wired by the CNI plugin, the agent
//! running with `flowLogsFileEnabled`, connections allowed and denied by a
//! Kubernetes policy; the records name both endpoints, the port, the
//! action and the rule that decided, at each end.
// A test against real processes: it waits on the clock.
#![allow(clippy::disallowed_methods)]

use calico_test_support::{echo_connect as connect, KillOnDrop, Netns};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn bin(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_calico-node")).with_file_name(name)
}

fn apply(db: &str, dir: &Path, yaml: &str) {
    calico_test_support::ctl_apply(&bin("calicoctl"), db, dir, yaml);
}

fn records(file: &Path) -> Vec<Value> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Gives pod `pod`'s WorkloadEndpoint in namespace `ns` the generateName
/// `prefix`, as Calico copies it from a Deployment's pod.
fn generated_from(db: &str, dir: &Path, ns: &str, pod: &str, prefix: &str) {
    let out = calico_test_support::ctl(
        &bin("calicoctl"),
        db,
        &["get", "workloadendpoints", "-n", ns, "-o", "json"],
    );
    let list: Value = serde_json::from_slice(&out).expect("json");
    let mut wep = list["items"]
        .as_array()
        .and_then(|items| items.iter().find(|w| w["spec"]["pod"] == pod))
        .cloned()
        .unwrap_or_else(|| panic!("no endpoint of pod {pod}: {list}"));
    wep["metadata"]["generateName"] = json!(prefix);
    apply(db, dir, &wep.to_string());
}

/// An IP pool of `cidr` and namespace x's profile, which allows all.
fn pool_and_profile(cidr: &str) -> String {
    format!(
        "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {{name: p}}\nspec: {{cidr: '{cidr}'}}\n---\n\
         apiVersion: projectcalico.org/v3\nkind: Profile\nmetadata: {{name: kns.x}}\nspec: {{ingress: [{{action: Allow}}], egress: [{{action: Allow}}]}}\n"
    )
}

/// Pod a takes TCP 80 from pod b, nothing else.
const A_FROM_B: &str = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: a-from-b, namespace: x}\n\
    spec: {podSelector: {matchLabels: {app: a}}, ingress: [{from: [{podSelector: {matchLabels: {app: b}}}], ports: [{port: 80}]}]}\n";

/// The agent on `node` writing flow records every second (and its metrics
/// on 127.0.0.1:9091): the agent, and the file of its records.
fn agent_with_flow_logs(node: &Netns, dir: &Path, db: &str) -> (KillOnDrop, PathBuf) {
    let logs = dir.join("flowlogs");
    let agent = calico_test_support::felix_daemon(
        &bin("calico-node"),
        &node.path(),
        db,
        &[
            ("FELIX_FLOWLOGSFILEENABLED", "true"),
            ("FELIX_FLOWLOGSFILEDIRECTORY", &logs.display().to_string()),
            ("FELIX_FLOWLOGSFLUSHINTERVAL", "1"),
            ("FELIX_PROMETHEUSMETRICSENABLED", "true"),
            ("FELIX_PROMETHEUSMETRICSHOST", "127.0.0.1"),
        ],
    );
    (agent, logs.join("flows.log"))
}

#[test]
fn allowed_and_denied_connections_become_flow_records() {
    let (node, dir, db) = calico_test_support::node_with_datastore(
        &bin("calicoctl"),
        "flow",
        "10.250.7.1/24",
        &pool_and_profile("10.87.0.0/16"),
    );
    let pod = |name: &str| {
        calico_test_support::echo_pod(&bin("calico"), &node.name, &db, "flow", "x", name)
    };
    let (_a, ip_a, _sa) = pod("a");
    let (b, ip_b, _sb) = pod("b");
    // b is one of a Deployment's pods: allowed flows name it by the prefix
    // (Calico's default level 2), denied ones by its name (level 1).
    generated_from(&db, dir.path(), "x", "b", "b-");
    apply(&db, dir.path(), A_FROM_B);
    let (_agent, file) = agent_with_flow_logs(&node, dir.path(), &db);
    // In force once b reaches a on 80.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !connect(&b, &ip_a, 80) {
        assert!(
            Instant::now() < deadline,
            "the agent never applied the policy"
        );
    }
    for _ in 0..3 {
        assert!(connect(&b, &ip_a, 80));
    }
    assert!(!connect(&b, &ip_a, 81), "81 is not allowed");
    // To the node itself: its egress allows it, the endpoint-to-host
    // default drops it; the egress verdict is logged after the walk (no
    // workload's ingress walk carries it).
    assert!(!connect(&b, "10.250.7.1", 7), "workload to host is dropped");

    let wanted = |r: &Value, reporter: &str, port: u64, action: &str| {
        r["reporter"] == reporter
            && r["dest_port"] == port
            && r["action"] == action
            && r["source_namespace"] == "x"
            && r["source_name"] == if action == "deny" { "b" } else { "b-*" }
            && r["dest_name"] == "a"
            && r["source_labels"]["app"] == "b"
            && r["dest_labels"]["app"] == "a"
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    let found = loop {
        let rs = records(&file);
        let allow_in = rs.iter().find(|r| wanted(r, "dst", 80, "allow")).cloned();
        let deny_in = rs.iter().find(|r| wanted(r, "dst", 81, "deny")).cloned();
        let allow_out = rs.iter().find(|r| wanted(r, "src", 81, "allow")).cloned();
        let to_host = rs
            .iter()
            .find(|r| {
                r["reporter"] == "src"
                    && r["dest_port"] == 7
                    && r["source_name"] == "b-*"
                    && r["dest_name"] == "pvt"
            })
            .cloned();
        if let (Some(a), Some(d), Some(o), Some(h)) = (allow_in, deny_in, allow_out, to_host) {
            assert_eq!(h["action"], "allow", "{h}");
            assert_eq!(
                h["policies"],
                json!(["0|__PROFILE__|__PROFILE__.kns.x|allow|0"]),
                "{h}"
            );
            break (a, d, o, rs);
        }
        assert!(
            Instant::now() < deadline,
            "no complete set of flow records in {}: {rs:?}",
            file.display()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let (allow_in, deny_in, allow_out, all) = found;
    assert_eq!(allow_in["proto"], "TCP");
    // Addresses: dropped from allowed flows, kept in denied ones; source
    // ports dropped from both.
    let ips = |r: &Value| (r["source_ip"].clone(), r["dest_ip"].clone());
    assert_eq!(ips(&allow_in), (Value::Null, Value::Null), "{allow_in}");
    assert_eq!(ips(&deny_in), (json!(ip_b), json!(ip_a)), "{deny_in}");
    assert!(deny_in.get("source_port").is_none(), "{deny_in}");
    assert_eq!(
        allow_in["policies"],
        json!(["0|default|x/knp.default.a-from-b|allow|0"]),
        "{all:?}"
    );
    // Nothing staged: what would happen is what did.
    assert_eq!(
        allow_in["pending_policies"], allow_in["policies"],
        "{allow_in}"
    );
    assert_eq!(
        deny_in["pending_policies"], deny_in["policies"],
        "{deny_in}"
    );
    // One record per endpoint pair, port and trace: the first connection
    // (while the agent came up) and the three after it, source ports dropped.
    let conns: u64 = all
        .iter()
        .filter(|r| wanted(r, "dst", 80, "allow"))
        .map(|r| r["num_flows"].as_u64().unwrap_or(0))
        .sum();
    assert!(conns >= 4, "{all:?}");
    assert_eq!(
        deny_in["policies"],
        json!(["0|default|default.end-of-tier|deny|-1"]),
        "denied at the end of tier default: {all:?}"
    );
    assert!(deny_in["packets"].as_u64().unwrap_or(0) >= 1);
    // The source's own egress allowed it (its namespace profile).
    assert_eq!(
        allow_out["policies"],
        json!(["0|__PROFILE__|__PROFILE__.kns.x|allow|0"]),
        "{all:?}"
    );
    // Per-rule packet counters on the node's metrics.
    let metrics = node.ok(&[
        "python3",
        "-c",
        "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:9091/metrics').read().decode())",
    ]);
    let count = |metric: &str, needle: &str| -> u64 {
        metrics
            .lines()
            .filter(|l| l.starts_with(metric) && l.contains(needle))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    };
    let (allowed, denied) = (
        "policy=\"x/knp.default.a-from-b\"",
        "policy=\"default.end-of-tier\"",
    );
    // Four connections or more, each a handshake, a reply and a close
    // both ways as the tracker counts them.
    let conns = count("felix_policy_rule_connections_total", allowed);
    assert!(conns >= 4, "{metrics}");
    assert!(
        count("felix_policy_rule_packets_total", allowed) >= 5 * conns,
        "{metrics}"
    );
    assert!(
        count("felix_policy_rule_bytes_total", allowed) >= 5 * 52 * conns,
        "{metrics}"
    );
    assert!(
        count("felix_policy_rule_packets_total", denied) >= 1,
        "{metrics}"
    );
    assert!(
        count("felix_policy_rule_bytes_total", denied) >= 60,
        "{metrics}"
    );
}

/// A pod floods denied packets while the agent is stopped (a collector that
/// has fallen behind): the node keeps enforcing without it, the kernel
/// drops the logs the agent's socket cannot hold, and the agent, once
/// running again, counts the overrun and goes on recording.
#[test]
fn a_collector_that_falls_behind_counts_what_it_lost_and_recovers() {
    let (node, dir, db) = calico_test_support::node_with_datastore(
        &bin("calicoctl"),
        "stall",
        "10.250.8.1/24",
        &format!("{}---\n{A_FROM_B}", pool_and_profile("10.88.0.0/16")),
    );
    let pod = |name: &str| {
        calico_test_support::echo_pod(&bin("calico"), &node.name, &db, "stall", "x", name)
    };
    let (_a, ip_a, _sa) = pod("a");
    let (b, _ip_b, _sb) = pod("b");
    let (agent, file) = agent_with_flow_logs(&node, dir.path(), &db);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !connect(&b, &ip_a, 80) {
        assert!(
            Instant::now() < deadline,
            "the agent never applied the policy"
        );
    }
    let metric = |name: &str| -> Option<u64> {
        let out = node.exec(&[
            "python3",
            "-c",
            "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:9091/metrics', timeout=2).read().decode())",
        ]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
    };
    let allowed = || -> u64 {
        records(&file)
            .iter()
            .filter(|r| r["reporter"] == "dst" && r["dest_port"] == 80 && r["action"] == "allow")
            .map(|r| r["num_flows"].as_u64().unwrap_or(0))
            .sum()
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    while metric("felix_flow_log_overruns_total") != Some(0) || allowed() == 0 {
        assert!(
            Instant::now() < deadline,
            "no records or no overrun counter"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    let pid = nix::unistd::Pid::from_raw(i32::try_from(agent.0.id()).expect("pid"));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).expect("stop the agent");
    // Far more denied packets than the agent's socket holds (4 MiB, a few
    // tens of thousands of logs), each logged: the kernel must drop some.
    let sent = b.ok(&[
        "python3",
        "-c",
        &format!(
            "import socket\ns=socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
             for i in range(300000): s.sendto(b'x', ('{ip_a}', 81))\nprint('sent')"
        ),
    ]);
    assert!(sent.contains("sent"), "{sent}");
    // Enforced meanwhile, by the kernel alone: allowed gets through,
    // denied does not.
    assert!(
        connect(&b, &ip_a, 80),
        "80 allowed while the agent is stopped"
    );
    assert!(
        !connect(&b, &ip_a, 81),
        "81 denied while the agent is stopped"
    );
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).expect("resume the agent");

    let deadline = Instant::now() + Duration::from_secs(20);
    while metric("felix_flow_log_overruns_total").unwrap_or(0) == 0 {
        assert!(Instant::now() < deadline, "the overrun was not counted");
        std::thread::sleep(Duration::from_millis(200));
    }
    // And it records again.
    let before = allowed();
    assert!(connect(&b, &ip_a, 80));
    let deadline = Instant::now() + Duration::from_secs(15);
    while allowed() <= before {
        assert!(
            Instant::now() < deadline,
            "nothing recorded after the overrun: {:?}",
            records(&file)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// IPv6: a connection between two IPv6 pods is a flow record at both ends
/// (the source's egress verdict carried to the destination's log in the
/// mark), with the connection tracker's packets and bytes both ways.
#[test]
fn ipv6_connections_are_recorded_with_their_counters() {
    let (node, dir, db) = calico_test_support::node_with_datastore(
        &bin("calicoctl"),
        "flow6",
        "10.250.9.1/24",
        &pool_and_profile("fd00:8a::/48"),
    );
    // A host routing IPv6 (as the lab's nodes are).
    node.ok(&["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"]);
    let ipam = json!({"type": "calico-ipam", "assign_ipv4": "false", "assign_ipv6": "true"});
    let pod = |name: &str| {
        let ns = Netns::new(&format!("flow6-{name}"));
        let ip = calico_test_support::labelled_pod(
            &bin("calico"),
            &node.name,
            &db,
            &ns,
            ("x", name),
            ipam.clone(),
        );
        (ns, ip)
    };
    let (a, ip_a) = pod("a");
    let (b, _ip_b) = pod("b");
    assert!(ip_a.starts_with("fd00:8a:"), "{ip_a}");
    // 3,000 bytes back on each connection.
    let _server = KillOnDrop(
        std::process::Command::new("ip")
            .args(["netns", "exec", &a.name, "python3", "-c"])
            .arg(
                "import socket\ns=socket.socket(socket.AF_INET6)\n\
                 s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\ns.bind(('::', 80)); s.listen(16)\n\
                 while True:\n    c, _ = s.accept(); c.sendall(b'x' * 3000); c.close()",
            )
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("server"),
    );
    calico_test_support::wait_listening(&a.name, "tcp", 80);
    let (_agent, file) = agent_with_flow_logs(&node, dir.path(), &db);
    let fetch = || {
        b.exec(&[
            "python3",
            "-c",
            &format!(
                "import socket, sys\ns=socket.create_connection(('{ip_a}', 80), timeout=1)\n\
                 n=0\nwhile True:\n    d=s.recv(4096)\n    if not d: break\n    n+=len(d)\nsys.exit(0 if n == 3000 else 1)"
            ),
        ])
        .status
        .success()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while !fetch() {
        assert!(Instant::now() < deadline, "the pods never talked");
        std::thread::sleep(Duration::from_millis(200));
    }
    for _ in 0..3 {
        assert!(fetch());
    }
    let sum = |rs: &[Value], reporter: &str, field: &str| -> u64 {
        rs.iter()
            .filter(|r| {
                r["reporter"] == reporter
                    && r["dest_port"] == 80
                    && r["action"] == "allow"
                    && r["source_name"] == "b"
                    && r["dest_name"] == "a"
                    && r["proto"] == "TCP"
            })
            .map(|r| r[field].as_u64().unwrap_or(0))
            .sum()
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let rs = records(&file);
        // At the destination, out is towards the source: the 3,000 bytes
        // of each connection (and their headers); at the source, in.
        let (dst_out, src_in) = (sum(&rs, "dst", "bytes_out"), sum(&rs, "src", "bytes_in"));
        let done = sum(&rs, "dst", "num_flows_completed") >= 4
            && sum(&rs, "src", "num_flows_completed") >= 4;
        if done && dst_out >= 4 * 3000 && src_in >= 4 * 3000 {
            assert!(sum(&rs, "dst", "packets_in") >= 4 * 3, "{rs:?}");
            // Within a tolerance of what was sent: headers, not more data.
            assert!(dst_out < 4 * 3000 * 2, "{rs:?}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no complete IPv6 records: {rs:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
