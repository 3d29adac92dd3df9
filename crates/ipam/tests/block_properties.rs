//! Properties of one block under any sequence of operations.

use calico_ipam::{Attribute, Block};
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::net::IpAddr;

#[derive(Debug, Clone)]
enum Op {
    Allocate { n: usize, handle: u8 },
    AllocateIp { ordinal: u8, handle: u8 },
    Release { ordinal: u8 },
    ReleaseHandle { handle: u8 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (1usize..10, 0u8..5).prop_map(|(n, handle)| Op::Allocate { n, handle }),
        (0u8..70, 0u8..5).prop_map(|(ordinal, handle)| Op::AllocateIp { ordinal, handle }),
        (0u8..64).prop_map(|ordinal| Op::Release { ordinal }),
        (0u8..5).prop_map(|handle| Op::ReleaseHandle { handle }),
    ]
}

fn attr(h: u8) -> Attribute {
    Attribute {
        handle: Some(format!("h{h}")),
        secondary: Some(BTreeMap::from([("pod".into(), format!("p{h}"))])),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    #[test]
    fn block_invariants(ops in prop::collection::vec(op(), 1..60)) {
        let mut block = Block::new("10.0.0.0/26".parse().unwrap(), Some("host:n1".into()));
        // The model: which handle holds each address.
        let mut model: BTreeMap<IpAddr, u8> = BTreeMap::new();
        for op in ops {
            match op {
                Op::Allocate { n, handle } => {
                    let got = block.allocate(n, &attr(handle), &|_| true);
                    prop_assert_eq!(got.len(), n.min(64 - model.len()));
                    for ip in got {
                        prop_assert!(model.insert(ip, handle).is_none(), "{} handed out twice", ip);
                    }
                }
                Op::AllocateIp { ordinal, handle } => {
                    let ip: IpAddr = format!("10.0.0.{ordinal}").parse().unwrap();
                    match block.allocate_ip(ip, &attr(handle)) {
                        Ok(()) => prop_assert!(model.insert(ip, handle).is_none()),
                        Err(Some(holder)) => prop_assert_eq!(holder.handle, Some(format!("h{}", model[&ip]))),
                        Err(None) => prop_assert!(ordinal >= 64),
                    }
                }
                Op::Release { ordinal } => {
                    let ip: IpAddr = format!("10.0.0.{ordinal}").parse().unwrap();
                    let freed = block.release(&[ip]);
                    prop_assert_eq!(freed.len(), usize::from(model.remove(&ip).is_some()));
                    prop_assert!(block.release(&[ip]).is_empty(), "releasing twice frees nothing");
                }
                Op::ReleaseHandle { handle } => {
                    let held = model.values().filter(|h| **h == handle).count();
                    prop_assert_eq!(block.release_handle(&format!("h{handle}")), held);
                    model.retain(|_, h| *h != handle);
                    prop_assert_eq!(block.release_handle(&format!("h{handle}")), 0);
                }
            }
            prop_assert!(block.check().is_ok(), "{:?}", block.check());
            prop_assert_eq!(block.in_use() + block.unallocated.len(), block.size());
            prop_assert_eq!(block.in_use(), model.len());
            for (ip, h) in &model {
                prop_assert_eq!(block.holder(*ip).and_then(|a| a.handle.clone()), Some(format!("h{h}")));
            }
        }
        let json = serde_json::to_string(&block).unwrap();
        let back: Block = serde_json::from_str(&json).unwrap();
        prop_assert_eq!(back, block);
    }
}

#[test]
fn json_shape_is_calicos() {
    let mut b = Block::new(
        "192.168.0.0/30".parse().unwrap(),
        Some("host:node-1".into()),
    );
    b.allocate(1, &attr(1), &|_| true);
    let v: serde_json::Value = serde_json::to_value(&b).unwrap();
    assert_eq!(v["cidr"], "192.168.0.0/30");
    assert_eq!(v["affinity"], "host:node-1");
    assert_eq!(v["allocations"], serde_json::json!([0, null, null, null]));
    assert_eq!(v["unallocated"], serde_json::json!([1, 2, 3]));
    assert_eq!(v["attributes"][0]["handle_id"], "h1");
    assert_eq!(v["attributes"][0]["secondary"]["pod"], "p1");
    assert_eq!(v["sequenceNumber"], 1);
    assert_eq!(v["deleted"], false);
}
