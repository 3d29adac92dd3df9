//! Allocator behaviour on the reference store.

use calico_api::decode_manifest;
use calico_client::{Client, Clock};
use calico_datastore::{MemoryStore, Store};
use calico_ipam::{AutoAssign, Ipam, IpamError};
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

struct FixedClock;
impl Clock for FixedClock {
    fn now_rfc3339(&self) -> String {
        "2026-11-22T00:00:00Z".into()
    }
}

fn setup(manifest: &str) -> Ipam {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let client = Client::new(store.clone(), Arc::new(FixedClock));
    for r in decode_manifest(manifest).expect("manifest") {
        client.create(r).expect("create");
    }
    Ipam::new(store, Arc::new(FixedClock))
}

fn pool(name: &str, cidr: &str, extra: &str) -> String {
    format!("---\napiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {{name: {name}}}\nspec: {{cidr: {cidr}{extra}}}\n")
}

fn req(node: &str, handle: &str, v4: usize) -> AutoAssign {
    AutoAssign {
        handle: handle.into(),
        node: node.into(),
        num_v4: v4,
        attrs: BTreeMap::from([
            ("node".into(), node.into()),
            ("timestamp".into(), "2026-11-22T00:00:00Z".into()),
        ]),
        ..Default::default()
    }
}

fn ips(a: &calico_ipam::Assigned) -> Vec<IpAddr> {
    a.v4.iter().chain(&a.v6).map(|n| n.addr()).collect()
}

#[test]
fn a_node_fills_its_own_block_before_claiming_another() {
    let ipam = setup(&pool("p", "10.0.0.0/24", ", blockSize: 28"));
    let mut blocks = BTreeSet::new();
    for i in 0..16 {
        let got = ipam
            .auto_assign(&req("n1", &format!("h{i}"), 1))
            .expect("assign");
        assert_eq!(got.v4[0].prefix_len(), 32);
        blocks.insert(calico_ipam::pools::block_containing(
            &"10.0.0.0/24".parse().unwrap(),
            28,
            got.v4[0].addr(),
        ));
    }
    assert_eq!(blocks.len(), 1, "16 addresses fit one /28");
    assert_eq!(ipam.node_blocks("n1", 4).unwrap().len(), 1);
    ipam.auto_assign(&req("n1", "h16", 1)).expect("assign");
    assert_eq!(
        ipam.node_blocks("n1", 4).unwrap().len(),
        2,
        "a full block makes the node claim another"
    );
    let other = ipam.auto_assign(&req("n2", "x", 1)).expect("assign");
    let b = calico_ipam::pools::block_containing(
        &"10.0.0.0/24".parse().unwrap(),
        28,
        other.v4[0].addr(),
    );
    assert!(
        !ipam.node_blocks("n1", 4).unwrap().contains(&b),
        "another node gets a block of its own"
    );
}

#[test]
fn borrowing_and_strict_affinity() {
    let ipam = setup(&pool("p", "10.0.0.0/27", ", blockSize: 28"));
    ipam.auto_assign(&req("n1", "a", 16))
        .expect("n1 fills one block");
    ipam.auto_assign(&req("n2", "b", 10))
        .expect("n2 claims the other");
    // No unclaimed block left: n1 borrows from n2's block.
    let borrowed = ipam.auto_assign(&req("n1", "c", 2)).expect("borrow");
    assert_eq!(borrowed.v4.len(), 2);
    ipam.release_handle("c").unwrap();
    ipam.set_config(|c| c.strict_affinity = true).unwrap();
    let err = ipam
        .auto_assign(&req("n1", "d", 1))
        .expect_err("strict affinity forbids borrowing");
    assert!(matches!(err, IpamError::StrictAffinity { .. }), "{err}");
    assert!(err.to_string().contains("strict affinity"), "{err}");
    // Exhaustion is all-or-nothing.
    ipam.set_config(|c| c.strict_affinity = false).unwrap();
    let err = ipam
        .auto_assign(&req("n3", "e", 7))
        .expect_err("only 6 left");
    assert!(matches!(err, IpamError::Exhausted { .. }), "{err}");
    assert!(
        ipam.ips_by_handle("e").unwrap().is_empty(),
        "a failed request leaves nothing allocated"
    );
    assert_eq!(
        ipam.auto_assign(&req("n3", "f", 6))
            .expect("exactly what is left")
            .v4
            .len(),
        6
    );
}

#[test]
fn block_limit_per_host() {
    let ipam = setup(&pool("p", "10.0.0.0/24", ", blockSize: 30"));
    ipam.set_config(|c| {
        c.max_blocks_per_host = 2;
        c.strict_affinity = true;
    })
    .unwrap();
    ipam.auto_assign(&req("n1", "a", 8))
        .expect("two blocks of four");
    let err = ipam.auto_assign(&req("n1", "b", 1)).expect_err("limit");
    assert!(matches!(err, IpamError::BlockLimit { max: 2, .. }), "{err}");
}

#[test]
fn reservations_are_never_handed_out() {
    let manifest = pool("p", "10.0.0.0/28", ", blockSize: 28")
        + "---\napiVersion: projectcalico.org/v3\nkind: IPReservation\nmetadata: {name: r}\nspec: {reservedCIDRs: [10.0.0.0/30, 10.0.0.9]}\n";
    let ipam = setup(&manifest);
    let got = ipam
        .auto_assign(&req("n1", "a", 11))
        .expect("11 unreserved addresses");
    let reserved: BTreeSet<IpAddr> = ["10.0.0.0", "10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.9"]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
    assert!(ips(&got).iter().all(|ip| !reserved.contains(ip)));
    assert!(matches!(
        ipam.auto_assign(&req("n1", "b", 1)),
        Err(IpamError::Exhausted { .. })
    ));
    let err = ipam
        .assign_ip("10.0.0.9".parse().unwrap(), "c", BTreeMap::new(), "n1")
        .expect_err("reserved");
    assert_eq!(err.to_string(), "10.0.0.9 is reserved by IPReservation r");
}

#[test]
fn specific_addresses() {
    let ipam = setup(&pool("p", "10.1.0.0/16", ""));
    let ip: IpAddr = "10.1.7.9".parse().unwrap();
    ipam.assign_ip(ip, "w1", BTreeMap::new(), "n1")
        .expect("free address");
    assert_eq!(
        ipam.node_blocks("n1", 4).unwrap(),
        vec!["10.1.7.0/26".parse().unwrap()],
        "its block is claimed for the node"
    );
    let err = ipam
        .assign_ip(ip, "w2", BTreeMap::new(), "n2")
        .expect_err("in use");
    assert_eq!(err.to_string(), "10.1.7.9 is already in use by handle w1");
    let err = ipam
        .assign_ip("10.2.0.1".parse().unwrap(), "w3", BTreeMap::new(), "n1")
        .expect_err("outside pools");
    assert_eq!(err.to_string(), "10.2.0.1 is not in any enabled IP pool");
    assert_eq!(
        ipam.holder(ip).unwrap().unwrap().1.handle.as_deref(),
        Some("w1")
    );
}

#[test]
fn release_by_handle_frees_everything_and_twice_is_harmless() {
    let ipam = setup(
        &(pool("v4", "10.0.0.0/24", ", blockSize: 29")
            + &pool("v6", "fd00::/120", ", blockSize: 124")),
    );
    let mut r = req("n1", "k8s-pod-network.c1", 10);
    r.num_v6 = 3;
    let got = ipam.auto_assign(&r).expect("assign");
    assert_eq!((got.v4.len(), got.v6.len()), (10, 3));
    assert_eq!(got.v6[0].prefix_len(), 128);
    let released = ipam.release_handle("k8s-pod-network.c1").expect("release");
    assert_eq!(released.len(), 13);
    assert!(ipam.handle("k8s-pod-network.c1").unwrap().is_none());
    assert!(ipam
        .release_handle("k8s-pod-network.c1")
        .expect("again")
        .is_empty());
    let usage = ipam.usage().unwrap();
    assert!(usage.pools.iter().all(|p| p.in_use == 0));
}

#[test]
fn no_pool_for_the_node() {
    let ipam = setup(&pool("p", "10.0.0.0/24", ", nodeSelector: \"rack == 'a'\""));
    let err = ipam
        .auto_assign(&req("n1", "h", 1))
        .expect_err("selector excludes the node");
    assert!(matches!(err, IpamError::NoPool { family: 4, .. }), "{err}");
    let disabled = setup(&pool("p", "10.0.0.0/24", ", disabled: true"));
    assert!(matches!(
        disabled.auto_assign(&req("n1", "h", 1)),
        Err(IpamError::NoPool { .. })
    ));
}

#[test]
fn gc_releases_old_leaks_and_orphan_blocks_only() {
    let manifest = pool("p", "10.0.0.0/24", ", blockSize: 29")
        + "---\napiVersion: projectcalico.org/v3\nkind: Node\nmetadata: {name: n1}\n";
    let ipam = setup(&manifest);
    // One live allocation (its endpoint exists), a leak, and a fresh allocation within the grace period.
    let live = ipam.auto_assign(&req("n1", "live", 1)).unwrap();
    let wep = format!(
        "apiVersion: projectcalico.org/v3\nkind: WorkloadEndpoint\nmetadata: {{name: n1-k8s-live-eth0, namespace: default}}\nspec: {{node: n1, interfaceName: cali0, pod: live, ipNetworks: [{}]}}\n",
        live.v4[0]
    );
    ipam.client()
        .create(decode_manifest(&wep).unwrap().remove(0))
        .unwrap();
    ipam.auto_assign(&req("n1", "leaked", 1)).unwrap();
    let mut fresh = req("n1", "fresh", 1);
    fresh
        .attrs
        .insert("timestamp".into(), "2026-11-22T00:09:00Z".into());
    ipam.auto_assign(&fresh).unwrap();
    // A node that no longer exists leaves an empty block behind.
    ipam.auto_assign(&req("gone", "tmp", 1)).unwrap();
    ipam.release_handle("tmp").unwrap();

    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_305_600 + 600); // 2026-11-22T00:10:00Z
    let grace = Duration::from_secs(300);
    let report = ipam.check(now, grace).unwrap();
    assert_eq!(report.in_use, 3);
    assert_eq!(report.pending, 1);
    assert_eq!(report.leaks.len(), 1);
    assert_eq!(report.leaks[0].handle.as_deref(), Some("leaked"));
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    let outcome = ipam.gc(now, grace).unwrap();
    assert_eq!(outcome.released.len(), 1);
    assert_eq!(outcome.blocks_removed.len(), 1, "{outcome:?}");
    assert!(ipam.node_blocks("gone", 4).unwrap().is_empty());
    let after = ipam.check(now, grace).unwrap();
    assert!(after.is_clean(), "{after:?}");
    assert_eq!(after.in_use, 2);
}

/// GC running while allocators work never frees a live (young) allocation,
/// even when addresses it saw as leaks are reused in between.
#[test]
fn gc_races_with_allocation_safely() {
    let ipam = Arc::new(setup(&pool("p", "10.0.0.0/26", ", blockSize: 28")));
    // 30 old allocations with no workload: leaks.
    let mut old = req("n1", "old", 1);
    old.attrs
        .insert("timestamp".into(), "2020-01-01T00:00:00Z".into());
    for i in 0..30 {
        old.handle = format!("old{i}");
        ipam.auto_assign(&old).unwrap();
    }
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_305_600); // 2026-11-22T00:00:00Z
    let young_handles: Vec<String> = std::thread::scope(|s| {
        let gc = s.spawn(|| {
            for _ in 0..20 {
                ipam.gc(now, Duration::from_secs(60)).unwrap();
            }
        });
        let workers: Vec<_> = (0..3)
            .map(|w| {
                let ipam = &ipam;
                s.spawn(move || {
                    let mut mine = Vec::new();
                    for i in 0..10 {
                        let h = format!("young{w}.{i}");
                        match ipam.auto_assign(&req(&format!("n{w}"), &h, 1)) {
                            Ok(_) => mine.push(h),
                            Err(IpamError::Exhausted { .. }) => {}
                            Err(e) => panic!("{e}"),
                        }
                    }
                    mine
                })
            })
            .collect();
        gc.join().unwrap();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    });
    ipam.gc(now, Duration::from_secs(60)).unwrap();
    for h in &young_handles {
        assert_eq!(
            ipam.ips_by_handle(h).unwrap().len(),
            1,
            "GC freed live allocation {h}"
        );
    }
    let report = ipam.check(now, Duration::from_secs(60)).unwrap();
    assert!(
        report.leaks.is_empty() && report.problems.is_empty(),
        "{report:?}"
    );
    assert_eq!(report.in_use, young_handles.len());
}
