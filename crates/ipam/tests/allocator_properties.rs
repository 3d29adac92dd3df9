//! Allocator invariants under random operation sequences, on the reference store:
//! no address is ever held twice, blocks stay consistent (free + allocated =
//! size), handles agree with blocks, and releasing is idempotent.

use calico_api::decode_manifest;
use calico_client::{Client, Clock};
use calico_datastore::{MemoryStore, Store};
use calico_ipam::{AutoAssign, Ipam, IpamError};
use proptest::prelude::*;
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

#[derive(Debug, Clone)]
enum Op {
    Assign {
        node: u8,
        handle: u8,
        v4: usize,
        v6: usize,
    },
    ReleaseHandle {
        handle: u8,
    },
    ReleaseIp {
        pick: usize,
    },
    /// Delete the IPv4 pool (forced: even while in use).
    DeletePool {
        force: bool,
    },
    /// (Re-)create the IPv4 pool over the same CIDR with this block size.
    CreatePool {
        block: u8,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..3, 0u8..12, 0usize..6, 0usize..3).prop_map(|(node, handle, v4, v6)| Op::Assign { node, handle, v4, v6 }),
        2 => (0u8..12).prop_map(|handle| Op::ReleaseHandle { handle }),
        1 => any::<usize>().prop_map(|pick| Op::ReleaseIp { pick }),
        1 => any::<bool>().prop_map(|force| Op::DeletePool { force }),
        1 => (27u8..31).prop_map(|block| Op::CreatePool { block }),
    ]
}

fn ipam() -> Ipam {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let client = Client::new(store.clone(), Arc::new(FixedClock));
    let manifest = "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: v4}\nspec: {cidr: 10.0.0.0/26, blockSize: 29}\n---\n\
                    apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: v6}\nspec: {cidr: 'fd00::/122', blockSize: 125}\n---\n\
                    apiVersion: projectcalico.org/v3\nkind: IPReservation\nmetadata: {name: r}\nspec: {reservedCIDRs: [10.0.0.5]}\n";
    for r in decode_manifest(manifest).expect("manifest") {
        client.create(r).expect("create");
    }
    Ipam::new(store, Arc::new(FixedClock))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(150))]

    #[test]
    fn allocator_invariants(ops in prop::collection::vec(op(), 1..40)) {
        let ipam = ipam();
        let mut model: BTreeMap<IpAddr, u8> = BTreeMap::new();
        for op in ops {
            match op {
                Op::Assign { node, handle, v4, v6 } => {
                    let req = AutoAssign { handle: format!("h{handle}"), node: format!("n{node}"), num_v4: v4, num_v6: v6, ..Default::default() };
                    match ipam.auto_assign(&req) {
                        Ok(got) => {
                            for net in got.v4.iter().chain(&got.v6) {
                                prop_assert!(model.insert(net.addr(), handle).is_none(), "{} handed out twice", net);
                                prop_assert_ne!(net.addr().to_string(), "10.0.0.5", "reserved address handed out");
                            }
                        }
                        Err(IpamError::Exhausted { .. } | IpamError::NoPool { .. }) => {}
                        Err(e) => prop_assert!(false, "unexpected error {}", e),
                    }
                }
                Op::ReleaseHandle { handle } => {
                    let released = ipam.release_handle(&format!("h{handle}")).unwrap();
                    let expected: BTreeSet<IpAddr> = model.iter().filter(|(_, h)| **h == handle).map(|(ip, _)| *ip).collect();
                    prop_assert_eq!(released.into_iter().collect::<BTreeSet<_>>(), expected);
                    model.retain(|_, h| *h != handle);
                    let again = ipam.release_handle(&format!("h{handle}")).unwrap();
                    prop_assert!(again.is_empty());
                }
                Op::ReleaseIp { pick } => {
                    if model.is_empty() { continue; }
                    let ip = *model.keys().nth(pick % model.len()).unwrap();
                    prop_assert_eq!(ipam.release_ips(&[ip]).unwrap(), vec![ip]);
                    model.remove(&ip);
                    prop_assert!(ipam.release_ips(&[ip]).unwrap().is_empty());
                }
                Op::DeletePool { force } => {
                    let v4_in_use = model.keys().any(IpAddr::is_ipv4);
                    match ipam.delete_pool("v4", force) {
                        Ok(_) => prop_assert!(force || !v4_in_use, "deleted while in use"),
                        Err(IpamError::PoolInUse { .. }) => prop_assert!(!force && v4_in_use),
                        Err(IpamError::Client(calico_client::ClientError::NotFound(_))) => {}
                        Err(e) => prop_assert!(false, "unexpected error {}", e),
                    }
                }
                Op::CreatePool { block } => {
                    let manifest = format!("apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {{name: v4}}\nspec: {{cidr: 10.0.0.0/26, blockSize: {block}}}\n");
                    let r = decode_manifest(&manifest).expect("manifest").remove(0);
                    match ipam.client().create(r) {
                        Ok(_)
                        | Err(calico_client::ClientError::AlreadyExists(_) | calico_client::ClientError::Rejected { .. }) => {}
                        Err(e) => prop_assert!(false, "unexpected error {}", e),
                    }
                }
            }
            // Every block is consistent and together they hold exactly the model.
            let mut held: BTreeMap<IpAddr, String> = BTreeMap::new();
            for family in [4u8, 6] {
                for (b, _) in ipam.blocks(family).unwrap() {
                    prop_assert!(b.check().is_ok());
                    prop_assert_eq!(b.in_use() + b.unallocated.len(), b.size());
                    for (ip, attr) in b.allocated() {
                        prop_assert!(held.insert(ip, attr.handle.clone().unwrap_or_default()).is_none());
                    }
                }
            }
            let want: BTreeMap<IpAddr, String> = model.iter().map(|(ip, h)| (*ip, format!("h{h}"))).collect();
            prop_assert_eq!(held, want);
            // A pool deleted by force leaves its in-use blocks outside any
            // pool (reported as such); nothing else may be wrong.
            let report = ipam.check(SystemTime::UNIX_EPOCH, Duration::ZERO).unwrap();
            let bad: Vec<&String> = report.problems.iter().filter(|p| !p.ends_with("is in no IP pool")).collect();
            prop_assert!(bad.is_empty(), "{:?}", bad);
        }
    }
}
