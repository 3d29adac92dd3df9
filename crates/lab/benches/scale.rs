//! The scale test (issue 17): a real etcd and a fan-out (`calico-lab up
//! --datastore etcd --typha`, 3 real nodes enforcing on real pods), a
//! simulated cluster of SIM_NODES Node resources and WORKLOADS workloads
//! created through the real IPAM and WorkloadEndpoint writes (first paced
//! at 20/s, the seed's rate, then as fast as the machine goes), POLICIES
//! policies over their labels, and CLIENTS light clients of the fan-out
//! receiving the same stream. Prints one table.
//!
//! Then the same datastore without the fan-out: DIRECT clients that list
//! and watch etcd themselves, as every agent would, and etcd's load with
//! and without them (watchers, events sent per write, CPU for the lists).
//!
//! `cargo bench -p calico-lab --bench scale` (full size: 50,000
//! workloads, 1,000 simulated nodes, 1,000 policies, 500 clients, 50
//! direct clients; set WORKLOADS, SIM_NODES, POLICIES, CLIENTS, DIRECT,
//! SAMPLES to change). Without `--bench` (as `cargo test --benches` runs
//! it): a small run.

#![allow(clippy::print_stdout)]
// A benchmark: it measures time.
#![allow(clippy::disallowed_methods)]

use calico_api::decode_manifest;
use calico_client::{Client, SystemClock};
use calico_datastore::Store;
use calico_ipam::{AutoAssign, Ipam};
use calico_syncer::typha::proto::{typha_client::TyphaClient, Hello, Status as WireStatus};
use calico_test_support::{output_text, rss_kib, LabCli as Lab};
use std::collections::BTreeMap;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn knob(name: &str, full: usize, quick: usize, is_quick: bool) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if is_quick { quick } else { full })
}

fn percentile(v: &mut [Duration], p: f64) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    v.sort();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i.min(v.len() - 1)]
}

/// Seconds since boot.
fn uptime() -> f64 {
    std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|u| u.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

/// When a process started, in seconds since boot (10 ms resolution).
fn started_at(pid: u32) -> f64 {
    // starttime is field 22 (19 after the name), in clock ticks.
    calico_test_support::stat_fields(pid)
        .get(19)
        .and_then(|f| f.parse::<f64>().ok())
        .unwrap_or(0.0)
        / 100.0
}

/// A node's felix status (`/status` on its health port).
fn felix_status(netns: &str) -> serde_json::Value {
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            netns,
            "curl",
            "-s",
            "-m",
            "2",
            "http://127.0.0.1:9099/status",
        ])
        .output()
        .expect("curl");
    serde_json::from_slice(&out.stdout).unwrap_or_default()
}

fn applied(netns: &str) -> i64 {
    let v = felix_status(netns);
    if v["in_sync"] == true {
        v["applied_revision"].as_i64().unwrap_or(0)
    } else {
        0
    }
}

/// Waits until the node's agent has applied revision `rev`; the time it took.
fn until_applied(netns: &str, rev: i64, since: Instant) -> Duration {
    let deadline = Instant::now() + Duration::from_secs(120);
    while applied(netns) < rev {
        assert!(
            Instant::now() < deadline,
            "{netns} never applied revision {rev}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    since.elapsed()
}

struct Sim {
    client: Client,
    ipam: Ipam,
    nodes: usize,
    namespaces: usize,
}

impl Sim {
    /// One workload as the CNI plugin makes it: an address from the real
    /// IPAM (for its simulated node), then its WorkloadEndpoint. Returns
    /// the endpoint's revision.
    fn workload(&self, i: usize, extra: &str) -> i64 {
        let node = format!("sim-{}", i % self.nodes);
        let ns = format!("sim{}", i % self.namespaces);
        let name = format!("{node}-k8s-w{i}-eth0");
        let got = self
            .ipam
            .auto_assign(&AutoAssign {
                handle: format!("k8s-pod-network.w{i}"),
                node: node.clone(),
                num_v4: 1,
                pools_v4: vec!["sim".into()],
                ..Default::default()
            })
            .expect("assign");
        let ip = got.v4[0];
        let yaml = format!(
            "apiVersion: projectcalico.org/v3\nkind: WorkloadEndpoint\nmetadata: {{name: {name}, namespace: {ns}, labels: {{app: app{}, role: r{}, projectcalico.org/namespace: {ns}, projectcalico.org/orchestrator: k8s{extra}}}}}\n\
             spec: {{node: {node}, orchestrator: k8s, endpoint: eth0, pod: w{i}, interfaceName: cali{i:011}, ipNetworks: ['{ip}'], profiles: [kns.{ns}]}}\n",
            i % 1000,
            i % 50
        );
        let r = decode_manifest(&yaml).expect("wep").remove(0);
        let created = self.client.create(r).expect("create wep");
        revision_of(&created)
    }
}

fn revision_of(r: &calico_api::Resource) -> i64 {
    r.meta()
        .resource_version
        .as_deref()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn apply(client: &Client, yaml: &str) -> i64 {
    let mut rev = 0;
    for r in decode_manifest(yaml).expect("manifest") {
        let (done, _) = client.apply(r).expect("apply");
        rev = revision_of(&done);
    }
    rev
}

/// A light client of the fan-out: counts what it receives; records when
/// each marker key (`scale-mark-N`) arrives.
struct Light {
    keys: AtomicUsize,
    in_sync: AtomicUsize,
    marks: Mutex<BTreeMap<String, Vec<Instant>>>,
}

fn light_clients(netns_path: String, addr: String, n: usize, light: Arc<Light>) {
    calico_test_support::inside_netns(&netns_path, move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let mut tasks = Vec::new();
            for i in 0..n {
                let light = Arc::clone(&light);
                let addr = addr.clone();
                tasks.push(tokio::spawn(async move {
                    let mut c = loop {
                        match TyphaClient::connect(format!("http://{addr}")).await {
                            Ok(c) => break c.max_decoding_message_size(64 << 20),
                            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                        }
                    };
                    let mut s = c
                        .sync(Hello {
                            node: format!("light-{i}"),
                            syncer: "felix".into(),
                            client_version: String::new(),
                        })
                        .await
                        .expect("sync")
                        .into_inner();
                    let mut counted = false;
                    while let Ok(Some(m)) = s.message().await {
                        light.keys.fetch_add(m.updates.len(), Ordering::Relaxed);
                        for kv in &m.updates {
                            if let Some(mark) = kv
                                .key
                                .rsplit('/')
                                .next()
                                .filter(|k| k.starts_with("scale-mark-"))
                            {
                                let mut marks = light.marks.lock().expect("marks");
                                marks
                                    .entry(mark.to_string())
                                    .or_default()
                                    .push(Instant::now());
                            }
                        }
                        if !counted && m.status == WireStatus::InSync as i32 {
                            counted = true;
                            light.in_sync.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }));
            }
            for t in tasks {
                let _ = t.await;
            }
        });
    });
}

/// One of etcd's Prometheus metrics (0 when missing).
fn etcd_metric(lab: &Lab, name: &str) -> f64 {
    let st = lab.state();
    let url = st["datastore_env"]["ETCD_ENDPOINTS"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let out = Command::new("curl")
        .args(["-s", "-m", "2", &format!("{url}/metrics")])
        .output()
        .expect("curl");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0.0)
}

/// etcd's process (the lab's is the only one).
fn etcd_pid() -> Option<u32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
        (comm.trim() == "etcd").then_some(pid)
    })
}

/// Events etcd sends to watchers per write, over `writes` writes of a
/// GlobalNetworkSet.
fn events_per_write(lab: &Lab, client: &Client, writes: usize, tag: &str) -> f64 {
    let before = etcd_metric(lab, "etcd_debugging_mvcc_events_total");
    for k in 0..writes {
        apply(client, &format!("apiVersion: projectcalico.org/v3\nkind: GlobalNetworkSet\nmetadata: {{name: scale-load-{tag}-{k}}}\nspec: {{nets: [198.51.100.{k}/32]}}\n"));
    }
    // Let the watchers take them.
    std::thread::sleep(Duration::from_secs(2));
    (etcd_metric(lab, "etcd_debugging_mvcc_events_total") - before) / writes.max(1) as f64
}

/// `n` clients that read the datastore directly, as agents do without a
/// fan-out (each its own connection, list and watches); returns them
/// (they stop when dropped) once all are in sync, with the time it took.
fn direct_clients(
    ds: &calico_backend::DatastoreConfig,
    n: usize,
) -> (Vec<calico_syncer::Syncer>, Duration) {
    let t = Instant::now();
    let syncers: Vec<calico_syncer::Syncer> = (0..n)
        .map(|_| {
            let store = calico_backend::open_store(ds).expect("open etcd");
            calico_syncer::direct::start(store, calico_syncer::SyncerType::Felix)
        })
        .collect();
    for s in &syncers {
        loop {
            match s.recv_timeout(Duration::from_secs(600)) {
                Ok(calico_syncer::SyncEvent::Status(calico_syncer::SyncStatus::InSync)) => break,
                Ok(_) => {}
                Err(e) => panic!("a direct client: {e}"),
            }
        }
    }
    (syncers, t.elapsed())
}

fn etcd_watchers(lab: &Lab) -> String {
    format!(
        "{} watch streams, {} watchers",
        etcd_metric(lab, "etcd_debugging_mvcc_watch_stream_total"),
        etcd_metric(lab, "etcd_debugging_mvcc_watcher_total")
    )
}

fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    let workloads = knob("WORKLOADS", 50_000, 600, quick);
    let sim_nodes = knob("SIM_NODES", 1_000, 20, quick);
    let policies = knob("POLICIES", 1_000, 20, quick);
    let clients = knob("CLIENTS", 500, 10, quick);
    let direct = knob("DIRECT", 50, 3, quick);
    let samples = knob("SAMPLES", 20, 3, quick);
    let paced = knob("PACED", 200, 40, quick).min(workloads);
    let threads = knob("THREADS", 8, 4, quick);
    let started = Instant::now();

    let lab = Lab::new(
        format!("scale{}", std::process::id()),
        std::path::Path::new(env!("CARGO_BIN_EXE_calico-lab")),
    );
    lab.ok(&["up", "--nodes", "3", "--datastore", "etcd", "--typha"]);
    lab.ok(&["ns", "create", "x"]);
    lab.ok(&[
        "pod", "create", "x/a", "--node", "node-1", "--labels", "app=a",
    ]);
    lab.ok(&[
        "pod", "create", "x/b", "--node", "node-2", "--labels", "app=b",
    ]);
    let st = lab.state();
    let felix: Vec<(String, u32)> = st["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .map(|n| {
            (
                n["netns"].as_str().unwrap_or_default().to_string(),
                n["pids"][0].as_u64().unwrap_or(0) as u32,
            )
        })
        .collect();
    let typha_pid = st["extra_pids"]
        .as_array()
        .expect("pids")
        .iter()
        .filter_map(|p| p.as_u64())
        .map(|p| p as u32)
        .find(|p| {
            std::fs::read_to_string(format!("/proc/{p}/cmdline")).is_ok_and(|c| c.contains("typha"))
        })
        .expect("the fan-out's pid");

    // The datastore, as the lab's tools reach it.
    for (k, v) in st["datastore_env"].as_object().expect("env") {
        // Set while this benchmark has no other thread.
        std::env::set_var(k, v.as_str().unwrap_or_default());
    }
    let ds = calico_backend::DatastoreConfig::from_env().expect("datastore config");
    let store: Arc<dyn Store> = calico_backend::open_store(&ds).expect("open etcd");
    let client = Client::new(Arc::clone(&store), Arc::new(SystemClock));
    let sim = Arc::new(Sim {
        ipam: Ipam::new(Arc::clone(&store), Arc::new(SystemClock)),
        client: Client::new(Arc::clone(&store), Arc::new(SystemClock)),
        nodes: sim_nodes,
        namespaces: 100,
    });
    let watchers_before = etcd_watchers(&lab);

    // The simulated cluster: nodes, namespaces (profiles), a pool.
    apply(&client, "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: sim}\nspec: {cidr: 10.96.0.0/12, blockSize: 26, nodeSelector: sim == 'true'}\n");
    for n in 0..sim_nodes {
        apply(&client, &format!("apiVersion: projectcalico.org/v3\nkind: Node\nmetadata: {{name: sim-{n}, labels: {{sim: 'true'}}}}\nspec: {{}}\n"));
    }
    for ns in 0..100 {
        apply(&client, &format!("apiVersion: projectcalico.org/v3\nkind: Profile\nmetadata: {{name: kns.sim{ns}}}\nspec: {{labelsToApply: {{projectcalico.org/namespace: sim{ns}}}, ingress: [{{action: Allow}}], egress: [{{action: Allow}}]}}\n"));
    }
    let rss0: Vec<u64> = felix.iter().map(|(_, p)| rss_kib(*p)).collect();
    let cpu0: Vec<f64> = felix
        .iter()
        .map(|(_, p)| calico_test_support::cpu_secs(*p))
        .collect();

    eprintln!("scale: {workloads} workloads on {sim_nodes} simulated nodes…");
    // Paced at the seed's rate: a setup starts every 50 ms, on a pool of
    // writers (as kubelets on many nodes set pods up at once), so the
    // rate is not bounded by one setup's latency.
    let t = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let mut latencies: Vec<Duration> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                let sim = Arc::clone(&sim);
                let next = Arc::clone(&next);
                s.spawn(move || {
                    let mut took = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= paced {
                            return took;
                        }
                        let due = t + Duration::from_millis(50 * i as u64);
                        if let Some(wait) = due.checked_duration_since(Instant::now()) {
                            std::thread::sleep(wait);
                        }
                        let one = Instant::now();
                        sim.workload(i, "");
                        took.push(one.elapsed());
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("writer"))
            .collect()
    });
    let paced_rate = paced as f64 / t.elapsed().as_secs_f64();
    let setup_p50 = percentile(&mut latencies, 0.5);
    // Then as fast as it goes.
    let t = Instant::now();
    next.store(paced, Ordering::Relaxed);
    std::thread::scope(|s| {
        for _ in 0..threads {
            let sim = Arc::clone(&sim);
            let next = Arc::clone(&next);
            s.spawn(move || loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= workloads {
                    return;
                }
                sim.workload(i, "");
            });
        }
    });
    let bulk_rate = (workloads - paced) as f64 / t.elapsed().as_secs_f64().max(1e-9);

    eprintln!("scale: {policies} policies…");
    // Policies over those labels.
    let t = Instant::now();
    let mut rev = 0;
    for p in 0..policies {
        rev = apply(&client, &format!(
            "apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {{name: p{p}, namespace: sim{}}}\n\
             spec: {{selector: app == 'app{}', ingress: [{{action: Allow, protocol: TCP, source: {{selector: role == 'r{}'}}, destination: {{ports: [80]}}}}]}}\n",
            p % 100,
            p % 1000,
            p % 50
        ));
    }
    let policy_rate = policies as f64 / t.elapsed().as_secs_f64();
    // Every real node in sync with all of it.
    let t = Instant::now();
    for (ns, _) in &felix {
        until_applied(ns, rev, t);
    }
    let converge = t.elapsed();
    let rss: Vec<u64> = felix.iter().map(|(_, p)| rss_kib(*p)).collect();
    let cpu: Vec<f64> = felix
        .iter()
        .zip(&cpu0)
        .map(|((_, p), c0)| calico_test_support::cpu_secs(*p) - c0)
        .collect();
    let typha_rss_before_clients = rss_kib(typha_pid);

    eprintln!("scale: latency samples…");
    // Creation of a workload → policy on a remote real node referencing it.
    let mut create_to_remote = Vec::new();
    for k in 0..samples {
        let r = apply(&client, &format!(
            "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {{name: scale-ref}}\n\
             spec: {{order: 10, selector: app == 'a', ingress: [{{action: Allow, source: {{selector: ref == 's{k}'}}}}, {{action: Allow}}]}}\n"
        ));
        until_applied(&felix[0].0, r, Instant::now());
        let t = Instant::now();
        let r = sim.workload(workloads + k, &format!(", ref: s{k}"));
        create_to_remote.push(until_applied(&felix[0].0, r, t));
    }
    // apply → enforced on the pod's node.
    let mut apply_to_enforced = Vec::new();
    for k in 0..samples {
        let action = if k % 2 == 0 { "Deny" } else { "Allow" };
        let t = Instant::now();
        let r = apply(&client, &format!(
            "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {{name: scale-enforce}}\n\
             spec: {{order: 1, selector: app == 'a', ingress: [{{action: {action}, source: {{selector: app == 'b'}}}}]}}\n"
        ));
        apply_to_enforced.push(until_applied(&felix[0].0, r, t));
    }
    // The last sample is in force on real packets.
    let verdict = lab.ok(&["probe", "x/b", "x/a", "--port", "80"]);
    let want = if (samples - 1).is_multiple_of(2) {
        "denied"
    } else {
        "allowed"
    };
    assert_eq!(verdict.trim(), want, "after the last sample");

    eprintln!("scale: {clients} fan-out clients…");
    // The fan-out's light clients.
    let light = Arc::new(Light {
        keys: AtomicUsize::new(0),
        in_sync: AtomicUsize::new(0),
        marks: Mutex::new(BTreeMap::new()),
    });
    let typha_ns = format!("/run/netns/{}", lab.netns("typha"));
    {
        let light = Arc::clone(&light);
        std::thread::spawn(move || {
            light_clients(typha_ns, "10.250.0.251:5473".into(), clients, light)
        });
    }
    let t = Instant::now();
    while light.in_sync.load(Ordering::Relaxed) < clients {
        assert!(
            t.elapsed() < Duration::from_secs(600),
            "light clients never all in sync"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let all_clients_synced = t.elapsed();
    let typha_rss = rss_kib(typha_pid);
    let mut fan_out = Vec::new();
    for k in 0..samples {
        let name = format!("scale-mark-{k}");
        let t = Instant::now();
        apply(&client, &format!("apiVersion: projectcalico.org/v3\nkind: GlobalNetworkSet\nmetadata: {{name: {name}}}\nspec: {{nets: [192.0.2.{k}/32]}}\n"));
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let got = light
                .marks
                .lock()
                .expect("marks")
                .get(&name)
                .map_or(0, Vec::len);
            if got >= clients {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{name} reached {got} of {clients} clients"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        let marks = light.marks.lock().expect("marks");
        fan_out.extend(marks[&name].iter().map(|at| at.duration_since(t)));
    }
    let watchers_after = etcd_watchers(&lab);
    let events_fan_out = events_per_write(&lab, &client, samples, "fan-out");

    // A restarted agent: from its process's start until it has applied
    // everything again (the restart command also waits for BGP).
    let target = store.revision().expect("revision");
    let out = lab.cmd(&["node", "restart", "node-3"]);
    assert!(out.status.success(), "{}", output_text(&out));
    let new_pid = lab.state()["nodes"][2]["pids"][0].as_u64().unwrap_or(0) as u32;
    until_applied(&felix[2].0, target, Instant::now());
    let restart = Duration::from_secs_f64((uptime() - started_at(new_pid)).max(0.0));

    // The same datastore without the fan-out: clients that list and watch
    // etcd themselves, as every agent would.
    eprintln!("scale: {direct} direct datastore clients…");
    let etcd = etcd_pid().expect("etcd's pid");
    let etcd_cpu0 = calico_test_support::cpu_secs(etcd);
    let (direct_syncers, direct_synced) = direct_clients(&ds, direct);
    let etcd_cpu_lists = calico_test_support::cpu_secs(etcd) - etcd_cpu0;
    let watchers_direct = etcd_watchers(&lab);
    let events_direct = events_per_write(&lab, &client, samples, "direct");
    drop(direct_syncers);
    let per_direct = (events_direct - events_fan_out) / direct.max(1) as f64;

    let ms = |d: Duration| format!("{:.0} ms", d.as_secs_f64() * 1000.0);
    println!("\n| measure | value |");
    println!("| --- | --- |");
    println!("| simulated cluster | {sim_nodes} nodes, {workloads} workloads, {policies} policies, 100 namespaces |");
    println!(
        "| setups/s paced at the seed's 20/s ({paced}; one setup p50 {}) | {paced_rate:.1} |",
        ms(setup_p50)
    );
    println!(
        "| setups/s at full speed ({threads} writers, IPAM + endpoint on etcd) | {bulk_rate:.0} |"
    );
    println!("| policies/s written | {policy_rate:.0} |");
    println!(
        "| last policy written → all 3 agents applied it | {} |",
        ms(converge)
    );
    for (i, ((r0, r), c)) in rss0.iter().zip(&rss).zip(&cpu).enumerate() {
        println!(
            "| node-{} agent RSS before → at {workloads} workloads; CPU over the load | {} MiB → {} MiB; {c:.1} s |",
            i + 1,
            r0 / 1024,
            r / 1024
        );
    }
    let (p50, p99) = (
        percentile(&mut create_to_remote.clone(), 0.5),
        percentile(&mut create_to_remote, 0.99),
    );
    println!("| workload created → a remote node's policy references it (p50 / p99, {samples}) | {} / {} |", ms(p50), ms(p99));
    let (p50, p99) = (
        percentile(&mut apply_to_enforced.clone(), 0.5),
        percentile(&mut apply_to_enforced, 0.99),
    );
    println!(
        "| policy applied → enforced on the pod's node (p50 / p99, {samples}) | {} / {} |",
        ms(p50),
        ms(p99)
    );
    println!(
        "| {clients} fan-out clients: all have the snapshot ({} keys each) | {} |",
        light.keys.load(Ordering::Relaxed) / clients.max(1),
        ms(all_clients_synced)
    );
    let (p50, p99) = (
        percentile(&mut fan_out.clone(), 0.5),
        percentile(&mut fan_out, 0.99),
    );
    println!(
        "| a change → every fan-out client has it (p50 / p99 over {} deliveries) | {} / {} |",
        samples * clients,
        ms(p50),
        ms(p99)
    );
    println!(
        "| fan-out RSS: holding the state; with {clients} clients (per client) | {} MiB; {} MiB ({:.0} KiB) |",
        typha_rss_before_clients / 1024,
        typha_rss / 1024,
        typha_rss.saturating_sub(typha_rss_before_clients) as f64 / clients.max(1) as f64
    );
    println!("| etcd watches: 3 nodes' agents + controllers via the fan-out; with {clients} clients more | {watchers_before}; {watchers_after} |");
    println!(
        "| etcd events sent per write: via the fan-out ({clients} clients); with {direct} direct clients more | {events_fan_out:.1}; {events_direct:.1} ({per_direct:.1} per direct client: {:.0} for {clients} direct clients) |",
        events_fan_out + per_direct * clients as f64
    );
    println!(
        "| {direct} direct clients: watches; all listed and in sync; etcd CPU for their lists | {watchers_direct}; {}; {etcd_cpu_lists:.1} s (the fan-out's {clients} clients: 0 s of etcd) |",
        ms(direct_synced)
    );
    println!(
        "| restarted agent (node-3): process start → everything applied again | {} |",
        ms(restart)
    );
    println!("| whole run | {:.0} s |", started.elapsed().as_secs_f64());
    lab.ok(&["down"]);
}
