//! Three nodes on one fabric, each running `calico-node bgp` and
//! `calico-node felix` against one embedded datastore, pods wired by the
//! CNI plugin on every node. Pods reach pods on the other nodes only
//! through the routes BGP learned (nothing else routes the pod network),
//! `calicoctl node status` shows the mesh, and a node that goes away takes
//! its routes with it.

use calico_test_support::{add_pod, Fabric, KillOnDrop, Netns};
use serde_json::json;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

fn bin(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_calico-node")).with_file_name(name)
}

/// Waits for `ok`; on timeout fails with the agents' logs from `dir`.
fn wait(dir: &std::path::Path, what: &str, secs: u64, ok: impl FnMut() -> bool) {
    calico_test_support::wait_logged(dir, what, Duration::from_secs(secs), ok);
}

struct Node {
    ns: Netns,
    name: String,
    addr: String,
    agents: Vec<KillOnDrop>,
}

fn calicoctl(db: &str, args: &[&str], stdin: &str) -> std::process::Output {
    calico_test_support::calicoctl(&bin("calicoctl"), std::path::Path::new(db), args, stdin)
}

fn agent(node: &Node, db: &str, dir: &std::path::Path, args: &[&str]) -> KillOnDrop {
    let log =
        std::fs::File::create(dir.join(format!("{}-{}.log", node.name, args[0]))).expect("log");
    KillOnDrop(
        Command::new("nsenter")
            .arg(format!("--net={}", node.ns.path()))
            .arg(bin("calico-node"))
            .args(args)
            .args(["--node", &node.name])
            .env("CALICO_DATASTORE_PATH", db)
            .env_remove("DATASTORE_TYPE")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("calico-node"),
    )
}

#[test]
fn pods_on_three_nodes_reach_each_other_through_bgp() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("calico.db").display().to_string();
    let out = calicoctl(
        &db,
        &["apply", "-f", "-"],
        "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: pods}\nspec: {cidr: 10.88.0.0/16}\n---\n\
         apiVersion: projectcalico.org/v3\nkind: Profile\nmetadata: {name: kns.default}\nspec: {ingress: [{action: Allow}], egress: [{action: Allow}]}\n",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let fabric = Fabric::new("mn-fab");
    let mut nodes: Vec<Node> = (1..=3)
        .map(|i| {
            let ns = Netns::new(&format!("mn-n{i}"));
            let addr = format!("10.250.30.{i}");
            fabric.attach(&ns, &format!("{addr}/24"));
            Node {
                ns,
                name: format!("n{i}"),
                addr,
                agents: Vec::new(),
            }
        })
        .collect();
    for n in &mut nodes {
        let sock = dir
            .path()
            .join(format!("{}.sock", n.name))
            .display()
            .to_string();
        let ip = format!("{}/24", n.addr);
        let bgp = agent(
            n,
            &db,
            dir.path(),
            &[
                "bgp",
                "--ip",
                &ip,
                "--status-socket",
                &sock,
                "--connect-retry",
                "1",
                "--hold-time",
                "9",
            ],
        );
        let felix = agent(n, &db, dir.path(), &["felix"]);
        n.agents.push(bgp);
        n.agents.push(felix);
    }

    // Two pods per node, wired by the CNI plugin as a runtime would.
    let mut pods: Vec<(Netns, String, usize)> = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        for p in 0..2 {
            let pod = Netns::new(&format!("mn-pod{i}{p}"));
            let conf = json!({"cniVersion": "1.0.0", "name": "k8s-pod-network", "type": "calico",
                "nodename": n.name, "datastore_path": db, "ipam": {"type": "calico-ipam"}});
            let name = format!("pod-{i}-{p}");
            let ip = add_pod(
                &bin("calico"),
                &n.ns.name,
                &pod,
                &conf.to_string(),
                "default",
                &name,
            );
            pods.push((pod, ip, i));
        }
    }

    // Every node learns the other two nodes' blocks over BGP.
    for (i, n) in nodes.iter().enumerate() {
        wait(dir.path(), &format!("{}'s BGP routes", n.name), 60, || {
            let r = n.ns.ok(&["ip", "-4", "route", "show", "proto", "bgp"]);
            nodes
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .all(|(_, other)| r.contains(&format!("via {} dev eth0", other.addr)))
        });
    }
    // Every pod reaches every pod on the other nodes.
    for (from, _, fi) in &pods {
        for (_, ip, ti) in &pods {
            if fi == ti {
                continue;
            }
            let ok = (0..20).any(|_| from.exec(&["ping", "-c1", "-W1", ip]).status.success());
            if !ok {
                let mut dump = String::new();
                for n in &nodes {
                    dump += &format!(
                        "--- {}\n{}\n{}\n",
                        n.name,
                        n.ns.ok(&["ip", "route"]),
                        n.ns.ok(&["ip", "-s", "link"])
                    );
                }
                dump += &from.ok(&["ip", "route"]);
                dump += &from.ok(&["ip", "addr"]);
                panic!("pod on node {fi} cannot reach {ip} on node {ti}\n{dump}");
            }
        }
    }

    // calicoctl node status on n1: two mesh peers, up.
    let status = Command::new(bin("calicoctl"))
        .args(["node", "status"])
        .env("CALICO_BGP_STATUS_SOCKET", dir.path().join("n1.sock"))
        .output()
        .expect("calicoctl");
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(status.status.success(), "{text}");
    assert!(text.contains("Calico process is running."), "{text}");
    for other in ["10.250.30.2", "10.250.30.3"] {
        let line = text.lines().find(|l| l.contains(other)).unwrap_or_default();
        assert!(
            line.contains("node-to-node mesh") && line.contains("| up "),
            "{text}"
        );
    }

    // n2's speaker dies (SIGKILL): graceful restart keeps its routes, so
    // n1 keeps forwarding to n2's pods; a new run takes over.
    let n2_pod = pods
        .iter()
        .find(|p| p.2 == 1)
        .map(|p| p.1.clone())
        .expect("pod on n2");
    let n1_pod = &pods[0].0;
    nodes[1].agents.remove(0);
    std::thread::sleep(Duration::from_secs(2));
    assert!(nodes[0]
        .ns
        .ok(&["ip", "-4", "route", "show", "proto", "bgp"])
        .contains("via 10.250.30.2"));
    assert!(
        n1_pod
            .exec(&["ping", "-c1", "-W1", &n2_pod])
            .status
            .success(),
        "forwarding stopped while n2 restarts"
    );
    let sock2 = dir.path().join("n2.sock").display().to_string();
    let again = agent(
        &nodes[1],
        &db,
        dir.path(),
        &[
            "bgp",
            "--status-socket",
            &sock2,
            "--connect-retry",
            "1",
            "--hold-time",
            "9",
        ],
    );
    nodes[1].agents.insert(0, again);
    wait(dir.path(), "n2's sessions again", 30, || {
        let out = Command::new(bin("calicoctl"))
            .args(["node", "status", "-o", "json"])
            .env("CALICO_BGP_STATUS_SOCKET", &sock2)
            .output()
            .expect("calicoctl");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        v["status"]["peers"]
            .as_array()
            .is_some_and(|p| p.len() == 2 && p.iter().all(|p| p["state"] == "Established"))
    });
    assert!(n1_pod
        .exec(&["ping", "-c1", "-W1", &n2_pod])
        .status
        .success());

    // n3 stops for good (SIGTERM): it says so, and the others drop its routes.
    let pid = nodes[2].agents[0].0.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill")
        .success());
    let exited = nodes[2].agents[0].0.wait().expect("wait");
    assert!(
        exited.success(),
        "calico-node bgp exits cleanly on SIGTERM: {exited}"
    );
    for n in &nodes[..2] {
        wait(dir.path(), "n3's routes to go", 30, || {
            !n.ns
                .ok(&["ip", "-4", "route", "show", "proto", "bgp"])
                .contains("via 10.250.30.3")
        });
    }
}
