//! Allocation throughput: one allocator, and eight allocator processes on
//! four nodes at once, per backend, in one run. The in-process reference
//! store is the baseline for one allocator.
//!
//! Run: `cargo bench -p calico-ipam --bench allocation` (COUNT per process,
//! default 500).

#![allow(clippy::print_stdout)]
// A benchmark: it measures time.
#![allow(clippy::disallowed_methods)]

use calico_api::decode_manifest;
use calico_client::{Client, Clock};
use calico_datastore::{MemoryStore, Store};
use calico_ipam::{AutoAssign, Ipam};
use calico_test_support::EtcdServer;
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

struct FixedClock;
impl Clock for FixedClock {
    fn now_rfc3339(&self) -> String {
        "2026-11-22T00:00:00Z".into()
    }
}

fn seed(store: Arc<dyn Store>) {
    let client = Client::new(store, Arc::new(FixedClock));
    let pool = "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: bench}\nspec: {cidr: 10.64.0.0/14, blockSize: 26}\n";
    for r in decode_manifest(pool).expect("pool") {
        client.create(r).expect("create pool");
    }
}

/// Allocations per second with `procs` allocator processes.
fn processes(env: &[(&str, String)], procs: usize, count: usize, tag: &str) -> f64 {
    let start = Instant::now();
    let children: Vec<_> = (0..procs)
        .map(|p| {
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_calico-ipam-stress"));
            cmd.args([
                "--node",
                &format!("node-{}", p % 4),
                "--count",
                &count.to_string(),
                "--prefix",
                &format!("{tag}.{p}"),
            ])
            .env_remove("DATASTORE_TYPE")
            .env_remove("ETCD_ENDPOINTS")
            .env_remove("CALICO_DATASTORE_PATH")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
            for (k, v) in env {
                cmd.env(k, v);
            }
            cmd.spawn().expect("spawn allocator")
        })
        .collect();
    for c in children {
        let out = c.wait_with_output().expect("allocator");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    (procs * count) as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` passes nothing and must stay quick.
    let quick = !std::env::args().any(|a| a == "--bench");
    let count: usize = std::env::var("COUNT")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(if quick { 20 } else { 500 });

    let mem: Arc<dyn Store> = Arc::new(MemoryStore::new());
    seed(mem.clone());
    let ipam = Ipam::new(mem, Arc::new(FixedClock));
    let start = Instant::now();
    for i in 0..count {
        ipam.auto_assign(&AutoAssign {
            handle: format!("m.{i}"),
            node: "node-0".into(),
            num_v4: 1,
            ..Default::default()
        })
        .expect("assign");
    }
    let baseline = count as f64 / start.elapsed().as_secs_f64();
    println!(
        "{:<28} {:>10.0} allocations/s (baseline)",
        "memory, 1 allocator", baseline
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bench.db");
    seed(Arc::new(
        calico_datastore_sqlite::SqliteStore::open(&path).expect("sqlite"),
    ));
    let env = [("CALICO_DATASTORE_PATH", path.display().to_string())];
    report("embedded", &env, count, baseline);

    let etcd = EtcdServer::start();
    seed(Arc::new(
        calico_datastore_etcd::EtcdStore::connect(std::slice::from_ref(&etcd.endpoint))
            .expect("etcd"),
    ));
    let env = [
        ("DATASTORE_TYPE", "etcdv3".to_string()),
        ("ETCD_ENDPOINTS", etcd.endpoint.clone()),
    ];
    report("etcd", &env, count, baseline);
}

fn report(name: &str, env: &[(&str, String)], count: usize, baseline: f64) {
    let one = processes(env, 1, count, &format!("{name}1"));
    let eight = processes(env, 8, count, &format!("{name}8"));
    println!(
        "{:<28} {:>10.0} allocations/s ({:.4} x baseline)",
        format!("{name}, 1 allocator"),
        one,
        one / baseline
    );
    println!(
        "{:<28} {:>10.0} allocations/s ({:.2} x one allocator)",
        format!("{name}, 8 allocators"),
        eight,
        eight / one
    );
}
