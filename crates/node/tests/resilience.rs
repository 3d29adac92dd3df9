//! The agent keeps working when its datastore goes away and comes back:
//! a real etcd inside the node's namespace is restarted under a running
//! `calico-node felix`, and a policy written afterwards still reaches the
//! kernel without the agent being restarted.
// A test against real processes: it waits on the clock.
#![allow(clippy::disallowed_methods)]

use calico_test_support::{EtcdServer, KillOnDrop, Netns};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn bin(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_calico-node")).with_file_name(name)
}

/// `calicoctl apply` from inside the node namespace; false if it failed.
fn apply(ns: &Netns, etcd: &str, yaml: &str) -> bool {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("m.yaml");
    std::fs::write(&file, yaml).expect("write");
    Command::new("nsenter")
        .arg(format!("--net={}", ns.path()))
        .arg(bin("calicoctl"))
        .args(["--config", "/nonexistent", "apply", "-f"])
        .arg(&file)
        .env("DATASTORE_TYPE", "etcdv3")
        .env("ETCD_ENDPOINTS", etcd)
        .output()
        .expect("calicoctl (build the workspace)")
        .status
        .success()
}

fn gnp(name: &str, port: u16) -> String {
    format!("apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {{name: {name}}}\nspec: {{selector: app == 'web', ingress: [{{action: Allow, protocol: TCP, destination: {{ports: [{port}]}}}}]}}\n")
}

fn wait_for_rule(ns: &Netns, agent: &mut KillOnDrop, port: u16) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let table = ns.exec(&["nft", "list", "table", "inet", "calico"]);
        if String::from_utf8_lossy(&table.stdout).contains(&format!("dport {port}")) {
            return;
        }
        assert!(
            agent.0.try_wait().expect("agent status").is_none(),
            "the agent exited"
        );
        assert!(
            Instant::now() < deadline,
            "port {port} never reached the kernel"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn agent_rides_out_a_datastore_restart() {
    let ns = Netns::new("resil-node");
    let mut etcd = EtcdServer::start_in_netns(&ns.path());
    let endpoint = etcd.endpoint.clone();
    assert!(apply(
        &ns,
        &endpoint,
        "apiVersion: projectcalico.org/v3\nkind: WorkloadEndpoint\nmetadata: {name: ep, namespace: default, labels: {app: web}}\nspec: {node: node-1, interfaceName: cali0000resil, ipNetworks: [10.91.0.1/32]}\n"
    ));
    assert!(apply(&ns, &endpoint, &gnp("before", 7001)));
    let mut agent = KillOnDrop(
        Command::new("nsenter")
            .arg(format!("--net={}", ns.path()))
            .arg(bin("calico-node"))
            .args(["felix", "--node", "node-1"])
            .env("DATASTORE_TYPE", "etcdv3")
            .env("ETCD_ENDPOINTS", &endpoint)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("calico-node"),
    );
    wait_for_rule(&ns, &mut agent, 7001);

    etcd.restart();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !apply(&ns, &endpoint, &gnp("after", 7002)) {
        assert!(Instant::now() < deadline, "etcd did not come back");
        std::thread::sleep(Duration::from_millis(100));
    }
    wait_for_rule(&ns, &mut agent, 7002);
    // What was there before the restart is still there.
    wait_for_rule(&ns, &mut agent, 7001);
}
