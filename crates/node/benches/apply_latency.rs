//! Apply latency: from a policy written to the datastore to its rule in the
//! kernel, with `calico-node felix` following the datastore inside a node
//! namespace. Baseline in the same run: one `nft list table` round trip
//! (the probe's own cost).
//!
//! `cargo bench -p calico-node --bench apply_latency` (RUNS, default 30).

#![allow(clippy::print_stdout)]
// A benchmark: it measures time.
#![allow(clippy::disallowed_methods)]

use calico_api::decode_manifest;
use calico_client::{Client, Clock};
use calico_datastore_sqlite::SqliteStore;
use calico_test_support::{KillOnDrop, Netns};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

struct FixedClock;
impl Clock for FixedClock {
    fn now_rfc3339(&self) -> String {
        "2026-11-22T00:00:00Z".into()
    }
}

fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    let runs: usize = std::env::var("RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if quick { 2 } else { 30 });
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("calico.db");
    let client = Client::new(
        Arc::new(SqliteStore::open(&db).expect("db")),
        Arc::new(FixedClock),
    );
    let seed = "apiVersion: projectcalico.org/v3\nkind: WorkloadEndpoint\nmetadata: {name: ep, namespace: default, labels: {app: web}}\nspec: {node: node-1, interfaceName: cali0000bench, ipNetworks: [10.88.0.1/32]}\n";
    client
        .create(decode_manifest(seed).expect("seed").remove(0))
        .expect("seed");

    let node = Netns::new("bench-felix");
    let felix = Command::new("nsenter")
        .arg(format!("--net={}", node.path()))
        .arg(std::path::PathBuf::from(env!("CARGO_BIN_EXE_calico-node")))
        .args(["felix", "--node", "node-1"])
        .env("CALICO_DATASTORE_PATH", &db)
        .env_remove("DATASTORE_TYPE")
        .stdout(Stdio::null())
        .spawn()
        .expect("felix");
    let felix = KillOnDrop(felix);
    let listed = |needle: &str| {
        String::from_utf8_lossy(
            &node
                .exec(&["nft", "list", "table", "inet", "calico"])
                .stdout,
        )
        .contains(needle)
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !listed("cali0000bench") {
        assert!(
            Instant::now() < deadline,
            "felix never programmed the table"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let probe_start = Instant::now();
    for _ in 0..10 {
        listed("x");
    }
    let probe = probe_start.elapsed() / 10;

    let mut samples = Vec::new();
    for i in 0..runs {
        let port = 20_000 + i;
        let gnp = format!("apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {{name: bench-{i}}}\nspec: {{selector: app == 'web', ingress: [{{action: Allow, protocol: TCP, destination: {{ports: [{port}]}}}}]}}\n");
        let start = Instant::now();
        client
            .create(decode_manifest(&gnp).expect("gnp").remove(0))
            .expect("create");
        // nft prints a one-element port set as a plain value (`tcp dport 20000`).
        while !listed(&format!("dport {port}")) {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "policy {i} never reached the kernel"
            );
        }
        samples.push(start.elapsed());
    }
    drop(felix);
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "datastore write -> rule in kernel: median {:.1} ms, p90 {:.1} ms, max {:.1} ms over {runs} policies (probe round trip {:.1} ms, included)",
        ms(samples[samples.len() / 2]),
        ms(samples[samples.len() * 9 / 10]),
        ms(samples[samples.len() - 1]),
        ms(probe)
    );
}
