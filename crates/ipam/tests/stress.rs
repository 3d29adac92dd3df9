//! Many allocator processes on several nodes at once, against a real etcd
//! and against one embedded datastore file: no address is ever handed out
//! twice, and every address is accounted for.
// A test against real processes: it waits on the clock.
#![allow(clippy::disallowed_methods)]

use calico_api::decode_manifest;
use calico_client::{Client, Clock};
use calico_datastore::Store;
use calico_ipam::Ipam;
use calico_test_support::EtcdServer;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

const PROCESSES: usize = 8;
const NODES: usize = 4;
const PER_PROCESS: usize = 300;

struct FixedClock;
impl Clock for FixedClock {
    fn now_rfc3339(&self) -> String {
        "2026-11-22T00:00:00Z".into()
    }
}

fn seed(store: Arc<dyn Store>) -> Ipam {
    let client = Client::new(store.clone(), Arc::new(FixedClock));
    let pool = "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: stress}\nspec: {cidr: 10.128.0.0/18, blockSize: 26}\n";
    for r in decode_manifest(pool).expect("pool") {
        client.create(r).expect("create pool");
    }
    Ipam::new(store, Arc::new(FixedClock))
}

/// Runs the allocators; returns every output line.
fn run(env: &[(&str, String)], release_every: usize) -> Vec<String> {
    let children: Vec<_> = (0..PROCESSES)
        .map(|p| {
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_calico-ipam-stress"));
            cmd.args([
                "--node",
                &format!("node-{}", p % NODES),
                "--count",
                &PER_PROCESS.to_string(),
            ])
            .args([
                "--release-every",
                &release_every.to_string(),
                "--prefix",
                &format!("p{p}.r{release_every}"),
            ])
            .env_remove("DATASTORE_TYPE")
            .env_remove("ETCD_ENDPOINTS")
            .env_remove("CALICO_DATASTORE_PATH");
            for (k, v) in env {
                cmd.env(k, v);
            }
            cmd.stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("spawn allocator")
        })
        .collect();
    let mut lines = Vec::new();
    for child in children {
        let out = child.wait_with_output().expect("allocator");
        assert!(
            out.status.success(),
            "allocator failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        lines.extend(
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(String::from),
        );
    }
    lines
}

fn verify(ipam: &Ipam, lines: &[String], release_every: usize) {
    let mut allocated: Vec<(IpAddr, String)> = Vec::new();
    let mut released: BTreeSet<String> = BTreeSet::new();
    for l in lines {
        let parts: Vec<&str> = l.split(' ').collect();
        match parts.as_slice() {
            ["A", ip, h] => allocated.push((ip.parse().expect("ip"), (*h).to_string())),
            ["R", h] => {
                released.insert((*h).to_string());
            }
            _ => panic!("unexpected line {l}"),
        }
    }
    assert_eq!(allocated.len(), PROCESSES * PER_PROCESS);
    if release_every == 0 {
        let unique: BTreeSet<IpAddr> = allocated.iter().map(|(ip, _)| *ip).collect();
        assert_eq!(
            unique.len(),
            allocated.len(),
            "an address was handed out twice"
        );
    }
    // What should still be held: every allocation whose handle was not released.
    let mut expected: BTreeMap<IpAddr, String> = BTreeMap::new();
    for (ip, h) in &allocated {
        if !released.contains(h) {
            if let Some(other) = expected.insert(*ip, h.clone()) {
                panic!("{ip} is held by both {other} and {h}");
            }
        }
    }
    let mut held: BTreeMap<IpAddr, String> = BTreeMap::new();
    let mut free_plus_used = 0;
    let mut sizes = 0;
    for (b, _) in ipam.blocks(4).expect("blocks") {
        b.check().expect("block consistent");
        free_plus_used += b.in_use() + b.unallocated.len();
        sizes += b.size();
        for (ip, attr) in b.allocated() {
            held.insert(ip, attr.handle.clone().unwrap_or_default());
        }
    }
    assert_eq!(free_plus_used, sizes);
    let held_here: BTreeMap<IpAddr, String> = held
        .into_iter()
        .filter(|(_, h)| {
            h.ends_with(&format!(
                "r{release_every}.{}",
                h.rsplit('.').next().unwrap_or("")
            ))
        })
        .collect();
    assert_eq!(
        held_here, expected,
        "the blocks hold exactly the unreleased allocations"
    );
    let report = ipam
        .check(SystemTime::now(), Duration::from_secs(3600))
        .expect("check");
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    for n in 0..NODES {
        assert!(!ipam
            .node_blocks(&format!("node-{n}"), 4)
            .expect("affinities")
            .is_empty());
    }
}

#[test]
fn concurrent_allocators_on_etcd() {
    let etcd = EtcdServer::start();
    let store = calico_datastore_etcd::EtcdStore::connect(std::slice::from_ref(&etcd.endpoint))
        .expect("etcd");
    let ipam = seed(Arc::new(store));
    let env = [
        ("DATASTORE_TYPE", "etcdv3".to_string()),
        ("ETCD_ENDPOINTS", etcd.endpoint.clone()),
    ];
    let lines = run(&env, 0);
    verify(&ipam, &lines, 0);
    let lines = run(&env, 3);
    verify(&ipam, &lines, 3);
}

#[test]
fn concurrent_allocators_on_the_embedded_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("calico.db");
    let store = calico_datastore_sqlite::SqliteStore::open(&path).expect("sqlite");
    let ipam = seed(Arc::new(store));
    let env = [("CALICO_DATASTORE_PATH", path.display().to_string())];
    let lines = run(&env, 0);
    verify(&ipam, &lines, 0);
    let lines = run(&env, 3);
    verify(&ipam, &lines, 3);
}
