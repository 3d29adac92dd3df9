//! The flow service's ingest rate and query latency.
//!
//! - Ingest: records per second stored, on one core: the store alone
//!   (checked records, one writer), in transactions of one node's batch
//!   (`export::BATCH`, 500: a lone node's stream) and of the service writer's group
//!   (`GROUP`, 5,000: the batches waiting when nodes send faster than it
//!   stores, which is when the rate matters); and end to end
//!   (a node's exporter streaming over gRPC on loopback into a service
//!   whose runtime has one worker thread). Goal: at least 100,000/s.
//! - Query: with 1,000,000 records stored (an hour of a 2,000-pod
//!   cluster), the latency of the API's queries (a mix of filters, first
//!   pages and later ones), p50 and p99. Goal: p99 under 200 ms.
//!
//! `cargo bench -p calico-flows --bench flow_service` (RECORDS to change
//! the stored count; a tenth of everything when run as a test).

#![allow(clippy::print_stdout)]
#![allow(clippy::disallowed_methods)] // a benchmark owns the clock

use calico_flows::export::{ExportConfig, Exporter, BATCH};
use calico_flows::query::Query;
use calico_flows::server::{Config, Running, GROUP};
use calico_flows::store::{check, Store};
use calico_flows::Flow;
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Record `i` of a synthetic cluster: 100 namespaces of 20 pods, 5 ports,
/// a tenth denied, over the hour before `now`.
fn record(i: u64, now: u64, total: u64) -> Flow {
    let ns = |n: u64| format!("ns-{:03}", n % 100);
    let pod = |n: u64| format!("pod-{:02}", n % 20);
    let (src, dst) = (
        i.wrapping_mul(2_654_435_761) % 2000,
        i.wrapping_mul(40_503) % 2000,
    );
    let deny = i.is_multiple_of(10);
    let t = now - 3600 + i * 3600 / total.max(1);
    Flow {
        start_time: t,
        end_time: t + 15,
        node: format!("node-{}", src % 50),
        reporter: if i.is_multiple_of(2) { "src" } else { "dst" }.into(),
        action: if deny { "deny" } else { "allow" }.into(),
        proto: "TCP".into(),
        source_namespace: ns(src / 20),
        source_name: pod(src),
        source_type: "wep".into(),
        source_labels: BTreeMap::from([("app".to_string(), format!("app-{}", src % 40))]),
        dest_namespace: ns(dst / 20),
        dest_name: pod(dst),
        dest_type: "wep".into(),
        dest_labels: BTreeMap::from([("app".to_string(), format!("app-{}", dst % 40))]),
        dest_port: Some([80, 443, 5432, 6379, 8080][(i % 5) as usize]),
        policies: vec![if deny {
            format!("0|default|{}.end-of-tier|deny|-1", "default")
        } else {
            format!("0|default|{}/allow-{}|allow|0", ns(dst / 20), i % 7)
        }],
        packets: 1 + i % 50,
        bytes: 60 * (1 + i % 50),
        num_flows: 1 + i % 3,
        ..Flow::default()
    }
}

fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    let total: u64 = std::env::var("RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if quick { 100_000 } else { 1_000_000 });
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let dir = tempfile::tempdir().expect("dir");
    let db = dir.path().join("flows.db");
    let flows: Vec<Flow> = (0..total).map(|i| record(i, now, total)).collect();

    // The store alone, one thread checking and inserting: in transactions
    // of one node's batch (what a lone node's stream gives the writer;
    // a store of its own, removed after), then of the writer's group
    // (what it makes of the batches waiting when nodes send faster than
    // it stores). The second store is the one queried below.
    let lone = tempfile::tempdir().expect("dir");
    let (lone_rate, lone_per_cpu) = store_alone(&flows, BATCH, &lone.path().join("flows.db"));
    drop(lone);
    let (store_rate, store_per_cpu) = store_alone(&flows, GROUP, &db);

    // End to end over gRPC into a service with one worker thread (a
    // second store, so the query measurements see exactly `total`).
    let e2e_total = total / 5;
    let svc = Running::start_with_workers(
        Config {
            grpc: "127.0.0.1:0".parse().expect("addr"),
            http: "127.0.0.1:0".parse().expect("addr"),
            db: dir.path().join("ingest.db"),
            raw_retention: Duration::from_secs(7200),
            hourly_retention: Duration::from_secs(86_400),
            tls: None,
        },
        1,
    )
    .expect("service");
    let x = Exporter::start(ExportConfig {
        server: svc.bound.grpc.to_string(),
        node: "node-1".into(),
        capacity: usize::try_from(e2e_total).expect("fits"),
        tls: None,
    })
    .expect("exporter");
    let start = Instant::now();
    let cpu_before = cpu_seconds();
    x.offer(flows[..e2e_total as usize].iter().cloned());
    while x.stats().sent.load(Ordering::Relaxed) < e2e_total {
        assert!(start.elapsed() < Duration::from_secs(600), "ingest stalled");
        std::thread::sleep(Duration::from_millis(5));
    }
    let e2e_rate = e2e_total as f64 / start.elapsed().as_secs_f64();
    // Every thread of this process (the exporter's encoding included).
    let e2e_per_cpu = e2e_total as f64 / (cpu_seconds() - cpu_before);
    drop(x);
    drop(svc);

    // Queries over the HTTP API of a service holding `total` records.
    let svc = Running::start(Config {
        grpc: "127.0.0.1:0".parse().expect("addr"),
        http: "127.0.0.1:0".parse().expect("addr"),
        db: db.clone(),
        raw_retention: Duration::from_secs(7200),
        hourly_retention: Duration::from_secs(86_400),
        tls: None,
    })
    .expect("service");
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into();
    let queries = [
        "",
        "action=deny",
        "namespace=ns-042",
        "namespace=ns-042&action=deny",
        "dest_namespace=ns-007&port=5432",
        "name=pod-13&reporter=dst",
        "policy=ns-003%2Fallow-2",
        "tier=default&action=allow&page=3",
        "label=app%3Dapp-17",
        "node=node-7&sort=packets",
        "sort=oldest&limit=500",
        "from=NOW_MINUS_300",
        "namespace=ns-099&policy=ns-099%2Fallow-6&port=8080",
        "proto=UDP",
    ];
    let rounds = if quick { 3 } else { 15 };
    let mut times = Vec::new();
    let mut slowest: BTreeMap<&str, Duration> = BTreeMap::new();
    for _ in 0..rounds {
        for q in queries {
            let q = q.replace("NOW_MINUS_300", &(now - 300).to_string());
            Query::parse(&q).expect("a valid query");
            let url = format!("http://{}/api/v1/flows?{q}", svc.bound.http);
            let t = Instant::now();
            let mut r = agent.get(&url).call().expect("query");
            let body = r.body_mut().read_to_string().expect("body");
            times.push(t.elapsed());
            let worst = slowest.entry(q_name(&q)).or_default();
            *worst = (*worst).max(t.elapsed());
            assert!(body.starts_with("{\"flows\":"), "{body}");
        }
    }
    times.sort();
    let mut by: Vec<_> = slowest.into_iter().collect();
    by.sort_by_key(|(_, d)| std::cmp::Reverse(*d));
    let p = |q: f64| times[((times.len() - 1) as f64 * q) as usize];
    println!("flow_service ({total} records stored)");
    for (per_tx, rate, per_cpu) in [
        (BATCH, lone_rate, lone_per_cpu),
        (GROUP, store_rate, store_per_cpu),
    ] {
        let what = format!("{per_tx} per transaction");
        println!("  ingest, store alone, {what:<22} {rate:>8.0} records/s   ratio to goal {:.2} (goal >= 100,000/s)", rate / 100_000.0);
        println!(
            "    per CPU-second                              {per_cpu:>8.0} records     ratio to goal {:.2}",
            per_cpu / 100_000.0
        );
    }
    println!(
        "  ingest, gRPC end to end (1 worker) {e2e_rate:>8.0} records/s   ratio to goal {:.2}",
        e2e_rate / 100_000.0
    );
    println!(
        "    per CPU-second (client and service, all threads) {e2e_per_cpu:>8.0} records   ratio to goal {:.2}",
        e2e_per_cpu / 100_000.0
    );
    println!(
        "  query over HTTP ({} queries)     p50 {:>7.1} ms   p99 {:>7.1} ms   ratio to goal {:.2} (goal p99 < 200 ms)",
        times.len(),
        p(0.5).as_secs_f64() * 1e3,
        p(0.99).as_secs_f64() * 1e3,
        p(0.99).as_secs_f64() * 1e3 / 200.0
    );
    let worst: Vec<String> = by
        .iter()
        .take(3)
        .map(|(q, d)| format!("{q:?} {:.0} ms", d.as_secs_f64() * 1e3))
        .collect();
    println!("  slowest queries: {}", worst.join(", "));
}

/// Checks and stores `flows` into a new store at `path`, `per_tx` records
/// to a transaction: records per second, and per CPU-second of the
/// process (the writer and the store's checkpointer, nothing else runs).
fn store_alone(flows: &[Flow], per_tx: usize, path: &std::path::Path) -> (f64, f64) {
    let mut store = Store::open(path).expect("store");
    let start = Instant::now();
    let cpu_before = cpu_seconds();
    for batch in flows.chunks(per_tx) {
        for f in batch {
            check(f).expect("a good record");
        }
        store.insert(batch).expect("insert");
    }
    let n = flows.len() as f64;
    let rate = n / start.elapsed().as_secs_f64();
    let per_cpu = n / (cpu_seconds() - cpu_before);
    drop(store);
    (rate, per_cpu)
}

/// CPU time this process has used, user and system, in seconds.
fn cpu_seconds() -> f64 {
    let u = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF)
        .expect("getrusage");
    let t = |v: nix::sys::time::TimeVal| v.tv_sec() as f64 + v.tv_usec() as f64 / 1e6;
    t(u.user_time()) + t(u.system_time())
}

/// A query's name for the report (its parameters' names).
fn q_name(q: &str) -> &'static str {
    Box::leak(
        q.split('&')
            .map(|p| p.split('=').next().unwrap_or(""))
            .collect::<Vec<_>>()
            .join("&")
            .into_boxed_str(),
    )
}
