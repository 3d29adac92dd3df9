//! CNI latency and churn, calico side by side with the reference `bridge`
//! + `host-local` plugins, in one run, in namespaces made here.
//!
//! `cargo bench -p calico-cni --bench cni` (RUNS, default 200; CYCLES, default 1000;
//! WORKERS, pods churned at once, default 8).
//! Prints median and p99 ADD/DEL latency per plugin, the ratio of the
//! medians, the churn rate (ADD+DEL pairs/s) and what leaked.

#![allow(clippy::print_stdout)]
// A benchmark: it measures time.
#![allow(clippy::disallowed_methods)]

use calico_api::decode_manifest;
use calico_client::{Client, Clock};
use calico_datastore::Store;
use calico_datastore_sqlite::SqliteStore;
use calico_test_support::{run_cni, CniCall, Netns};
use serde_json::{json, Value};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

struct FixedClock;
impl Clock for FixedClock {
    fn now_rfc3339(&self) -> String {
        "2026-11-22T00:00:00Z".into()
    }
}

/// Runs a plugin (already inside the node namespace); returns how long it took.
fn invoke(bin: &str, command: &str, pod: &Netns, container: &str, conf: &Value) -> Duration {
    let start = Instant::now();
    let args = format!("IgnoreUnknown=1;K8S_POD_NAMESPACE=bench;K8S_POD_NAME={container}");
    let call = CniCall {
        command,
        container,
        netns: &pod.path(),
        ifname: "eth0",
        args: &args,
    };
    let out = run_cni(Command::new(bin), &call, &conf.to_string());
    let took = start.elapsed();
    assert!(
        out.status.success(),
        "{bin} {command}: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    took
}

fn stats(mut d: Vec<Duration>) -> (Duration, Duration) {
    d.sort();
    let p = |q: f64| d[((d.len() as f64 - 1.0) * q).round() as usize];
    (p(0.5), p(0.99))
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    let env_n = |k: &str, full: usize, q: usize| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(if quick { q } else { full })
    };
    let runs = env_n("RUNS", 200, 5);
    let cycles = env_n("CYCLES", 1000, 5);

    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("calico.db");
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&db).expect("datastore"));
    let client = Client::new(store.clone(), Arc::new(FixedClock));
    let pool = "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: bench}\nspec: {cidr: 10.94.0.0/16}\n";
    client
        .create(decode_manifest(pool).expect("pool").remove(0))
        .expect("pool");

    let node = Netns::new("cni-bench-node");
    node.make_node("10.250.6.1/24");
    let ns = std::fs::File::open(node.path()).expect("node netns");
    nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).expect("enter the node namespace");

    let calico = env!("CARGO_BIN_EXE_calico");
    let calico_conf = json!({"cniVersion": "1.0.0", "name": "k8s-pod-network", "type": "calico", "nodename": "bench-node",
        "datastore_path": db, "mtu": 1450, "ipam": {"type": "calico-ipam"}});
    let reference_conf = json!({"cniVersion": "1.0.0", "name": "reference", "type": "bridge", "bridge": "cni-ref0", "isGateway": true, "ipMasq": false,
        "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.95.0.0/16"}]], "dataDir": dir.path().join("host-local")}});

    let pods: Vec<Netns> = (0..runs).map(|_| Netns::new("cni-bench-pod")).collect();
    let mut report = Vec::new();
    for (name, bin, conf) in [
        ("bridge+host-local", "/usr/lib/cni/bridge", &reference_conf),
        ("calico", calico, &calico_conf),
    ] {
        let add: Vec<Duration> = pods
            .iter()
            .enumerate()
            .map(|(i, p)| invoke(bin, "ADD", p, &format!("c{i}"), conf))
            .collect();
        let del: Vec<Duration> = pods
            .iter()
            .enumerate()
            .map(|(i, p)| invoke(bin, "DEL", p, &format!("c{i}"), conf))
            .collect();
        let (add_med, add_p99) = stats(add);
        let (del_med, del_p99) = stats(del);
        println!(
            "{name:<18} ADD median {} p99 {} | DEL median {} p99 {} ({runs} runs)",
            ms(add_med),
            ms(add_p99),
            ms(del_med),
            ms(del_p99)
        );
        report.push((add_med, del_med));
    }
    println!(
        "calico / reference: ADD median {:.2}x, DEL median {:.2}x",
        report[1].0.as_secs_f64() / report[0].0.as_secs_f64(),
        report[1].1.as_secs_f64() / report[0].1.as_secs_f64()
    );

    // Churn as a kubelet drives it: several pods set up and torn down at once.
    let workers = env_n("WORKERS", 8, 2).min(pods.len());
    let start = Instant::now();
    std::thread::scope(|s| {
        for (w, pod) in pods.iter().take(workers).enumerate() {
            let conf = &calico_conf;
            s.spawn(move || {
                for i in (w..cycles).step_by(workers) {
                    let id = format!("churn{i}");
                    invoke(calico, "ADD", pod, &id, conf);
                    invoke(calico, "DEL", pod, &id, conf);
                }
            });
        }
    });
    let rate = cycles as f64 / start.elapsed().as_secs_f64();
    let handles = store
        .list(calico_ipam::model::HANDLE_PREFIX)
        .expect("handles")
        .items
        .len();
    let weps = client
        .list(calico_api::Kind::WorkloadEndpoint, None)
        .expect("weps")
        .items
        .len();
    let allocated: usize = store
        .list(&calico_ipam::model::blocks_prefix(4))
        .expect("blocks")
        .items
        .iter()
        .map(|kv| {
            serde_json::from_slice::<calico_ipam::Block>(&kv.value)
                .expect("block")
                .in_use()
        })
        .sum();
    let links = Command::new("ip")
        .args(["-o", "link"])
        .output()
        .expect("ip link");
    let veths = String::from_utf8_lossy(&links.stdout)
        .matches(": cali")
        .count();
    println!("calico churn: {rate:.0} ADD+DEL pairs/s over {cycles} cycles ({workers} pods at a time); leaked: {allocated} addresses, {handles} handles, {weps} endpoints, {veths} veths");
}
