//! A refresh must not disturb traffic. With 86,000 elements in a set that
//! every new connection is matched against, the agent refreshes its table
//! every second (it reads the kernel's copy back and sends only the
//! difference) while a pod opens connections one after another through
//! it: none may take longer than half a second (a lost SYN costs the
//! one-second retransmit) or fail. For comparison the same loop runs while
//! the table is reloaded whole by hand (what the refresh used to do); its
//! count is printed, not asserted (it depends on the kernel's timing).
// A test against real processes: it waits on the clock.
#![allow(clippy::disallowed_methods)]
#![allow(clippy::print_stdout)]

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

const SERVER: &str = "
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('0.0.0.0', 80)); s.listen(512)
while True:
    c, _ = s.accept(); c.sendall(b'ok'); c.close()
";

/// Connections one after another (at most 500 a second, which the server
/// keeps up with) for `secs`: how many, how many took over half a second,
/// how many failed, the slowest (seconds).
fn connection_loop(from: &Netns, ip: &str, secs: u32) -> (u64, u64, u64, f64) {
    let code = format!(
        "import socket, time\n\
end = time.time() + {secs}; n = slow = failed = 0; worst = 0.0\n\
while time.time() < end:\n    t = time.time()\n    try:\n        s = socket.create_connection(('{ip}', 80), timeout=3); s.recv(2); s.close()\n    except OSError:\n        failed += 1\n    d = time.time() - t; worst = max(worst, d); n += 1\n    if d > 0.5: slow += 1\n    time.sleep(0.002)\n\
print(n, slow, failed, worst)"
    );
    let out = from.ok(&["python3", "-c", &code]);
    let v: Vec<&str> = out.split_whitespace().collect();
    let n = |i: usize| v.get(i).and_then(|x| x.parse().ok()).unwrap_or(0);
    (
        n(0),
        n(1),
        n(2),
        v.get(3).and_then(|x| x.parse().ok()).unwrap_or(0.0),
    )
}

/// Connections the server's listen queue had no room for (the server's
/// fault, not the dataplane's).
fn listen_overflows(server: &Netns) -> u64 {
    let out = server.ok(&["nstat", "-az", "TcpExtListenOverflows"]);
    out.lines()
        .find_map(|l| {
            l.strip_prefix("TcpExtListenOverflows")?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

fn metric(node: &Netns, name: &str) -> f64 {
    let out = node.exec(&[
        "curl",
        "-s",
        "--max-time",
        "2",
        "http://127.0.0.1:9091/metrics",
    ]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or(0.0)
}

#[test]
fn refreshes_of_a_large_table_lose_no_connection() {
    const SETS: u32 = 86;
    const PER_SET: u32 = 1000;
    let node = Netns::new("refresh-node");
    node.make_node("10.250.8.1/24");
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("calico.db").display().to_string();
    apply(
        &db,
        dir.path(),
        "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: p}\nspec: {cidr: 10.86.0.0/16}\n---\n\
         apiVersion: projectcalico.org/v3\nkind: Profile\nmetadata: {name: kns.x}\nspec: {egress: [{action: Allow}]}\n",
    );
    // 86,000 addresses in network sets labelled feed=big (every other
    // address of 100.64.0.0/14, so no two are adjacent).
    let mut sets = String::new();
    for s in 0..SETS {
        let nets: Vec<String> = (0..PER_SET)
            .map(|i| {
                let a = 0x6440_0000u32 + 2 * (s * PER_SET + i);
                format!("{}/32", std::net::Ipv4Addr::from(a))
            })
            .collect();
        sets.push_str(&format!(
            "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkSet\nmetadata: {{name: big-{s}, labels: {{feed: big}}}}\nspec: {{nets: [{}]}}\n---\n",
            nets.join(", ")
        ));
    }
    apply(&db, dir.path(), &sets);
    let mut servers = Vec::new();
    let pod = |name: &str| {
        let ns = Netns::new(&format!("refresh-{name}"));
        let conf = json!({"cniVersion": "1.0.0", "name": "k8s-pod-network", "type": "calico", "nodename": "node-1",
            "datastore_path": db, "ipam": {"type": "calico-ipam"},
            "args": {"cni": {"labels": [{"key": "app", "value": name}]}}});
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
    servers.push(KillOnDrop(
        Command::new("ip")
            .args(["netns", "exec", &a.name, "python3", "-c", SERVER])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("server"),
    ));
    calico_test_support::wait_listening(&a.name, "tcp", 80);
    // b is one of the 86,001: a's only way in.
    apply(
        &db,
        dir.path(),
        &format!(
            "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkSet\nmetadata: {{name: big-b, labels: {{feed: big}}}}\nspec: {{nets: [{ip_b}/32]}}\n---\n\
             apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {{name: a-from-big}}\n\
             spec: {{selector: app == 'a', types: [Ingress], ingress: [{{action: Allow, protocol: TCP, source: {{selector: feed == 'big'}}, destination: {{ports: [80]}}}}]}}\n"
        ),
    );
    let _agent = calico_test_support::felix_daemon(
        &bin("calico-node"),
        &node.path(),
        &db,
        &[
            ("FELIX_NFTABLESREFRESHINTERVAL", "1"),
            ("FELIX_PROMETHEUSMETRICSENABLED", "true"),
            ("FELIX_PROMETHEUSMETRICSHOST", "127.0.0.1"),
        ],
    );
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let (n, slow, failed, _) = connection_loop(&b, &ip_a, 1);
        if n > 0 && slow == 0 && failed == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the agent never let b reach a");
    }
    // The whole set is in the kernel (read until a listing shows it: a
    // dump that crosses the agent's own read-back can come out short).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let elements = node
            .ok(&["nft", "list", "table", "inet", "calico"])
            .matches("100.6")
            .count();
        if elements >= 86_000 {
            break;
        }
        assert!(Instant::now() < deadline, "only {elements} elements listed");
        std::thread::sleep(Duration::from_millis(500));
    }

    // The agent's refreshes (one a second) during the loop.
    let applies = "felix_dataplane_apply_seconds_count";
    let spent = "felix_dataplane_apply_seconds_sum";
    let (before, spent_before) = (metric(&node, applies), metric(&node, spent));
    let secs = 12;
    let overflows = listen_overflows(&a);
    let (n, slow, failed, worst) = connection_loop(&b, &ip_a, secs);
    assert_eq!(
        listen_overflows(&a),
        overflows,
        "the server fell behind: this run cannot tell"
    );
    let refreshes = metric(&node, applies) - before;
    let each = (metric(&node, spent) - spent_before) / refreshes.max(1.0);
    println!(
        "agent refreshing (read back, difference): {n} connections, {slow} over 0.5 s, {failed} failed, slowest {worst:.3} s, {refreshes} refreshes of {each:.3} s each"
    );
    assert!(
        refreshes >= f64::from(secs) / 4.0,
        "only {refreshes} refreshes happened in {secs} s"
    );
    assert!(n > 100, "only {n} connections");
    assert_eq!(
        (slow, failed),
        (0, 0),
        "connections disturbed by refreshes (slowest {worst:.3} s)"
    );

    // The same while the table is reloaded whole, as refreshes used to.
    let listed = node.ok(&["nft", "list", "table", "inet", "calico"]);
    let file = dir.path().join("whole.nft");
    std::fs::write(
        &file,
        format!("add table inet calico\ndelete table inet calico\n{listed}"),
    )
    .expect("write");
    let reloads = {
        let node = node.name.clone();
        let file = file.clone();
        std::thread::spawn(move || {
            let end = Instant::now() + Duration::from_secs(secs.into());
            let mut n = 0;
            while Instant::now() < end {
                let ok = Command::new("ip")
                    .args(["netns", "exec", &node, "nft", "-f"])
                    .arg(&file)
                    .status()
                    .is_ok_and(|s| s.success());
                n += u32::from(ok);
                std::thread::sleep(Duration::from_millis(500));
            }
            n
        })
    };
    let (n, slow, failed, worst) = connection_loop(&b, &ip_a, secs);
    let reloads = reloads.join().expect("reloads");
    println!(
        "whole reloads by hand: {n} connections, {slow} over 0.5 s, {failed} failed, slowest {worst:.3} s, {reloads} reloads"
    );
}
