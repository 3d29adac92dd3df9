//! What to change: pure, so it is tested without a kernel.

use calico_net::IpNet;
use std::collections::BTreeMap;
use std::net::IpAddr;

/// Where traffic for a destination goes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Target {
    /// Straight out of an interface (scope link), like a workload's veth.
    Device(String),
    /// Dropped: the rest of a block this node owns.
    Blackhole,
    /// Through a next hop, optionally on a given interface.
    Via {
        gateway: IpAddr,
        device: Option<String>,
        onlink: bool,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Route {
    pub dst: IpNet,
    pub target: Target,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Add, or replace whatever the kernel has for that destination.
    Replace(Route),
    Delete(Route),
}

/// Whether a route the kernel holds is what was asked for. A next hop
/// asked for without an interface is satisfied on whichever interface the
/// kernel resolved it to.
fn satisfies(current: &Target, desired: &Target) -> bool {
    match (current, desired) {
        (
            Target::Via {
                gateway: g1,
                onlink: o1,
                ..
            },
            Target::Via {
                gateway: g2,
                device: None,
                onlink: o2,
            },
        ) => g1 == g2 && o1 == o2,
        _ => current == desired,
    }
}

/// The changes that turn `current` (the owner's routes the kernel holds)
/// into `desired`. Deletions come first; a destination listed twice in
/// `current` keeps at most the one that is wanted.
pub fn plan(desired: &BTreeMap<IpNet, Target>, current: &[Route]) -> Vec<Op> {
    let mut ops = Vec::new();
    let mut present: BTreeMap<&IpNet, bool> = BTreeMap::new();
    for r in current {
        let wanted = desired.get(&r.dst).is_some_and(|d| satisfies(&r.target, d));
        if wanted && !present.get(&r.dst).copied().unwrap_or(false) {
            present.insert(&r.dst, true);
        } else {
            ops.push(Op::Delete(r.clone()));
        }
    }
    for (dst, target) in desired {
        if !present.get(dst).copied().unwrap_or(false) {
            ops.push(Op::Replace(Route {
                dst: *dst,
                target: target.clone(),
            }));
        }
    }
    ops
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn net(s: &str) -> IpNet {
        s.parse().expect("net")
    }

    #[test]
    fn adds_missing_removes_stale_and_fixes_changed() {
        let desired: BTreeMap<IpNet, Target> = [
            (net("10.0.0.0/26"), Target::Blackhole),
            (net("10.0.0.5/32"), Target::Device("cali1".into())),
        ]
        .into();
        let current = vec![
            Route {
                dst: net("10.0.0.5/32"),
                target: Target::Device("cali0".into()),
            },
            Route {
                dst: net("10.9.0.0/26"),
                target: Target::Blackhole,
            },
        ];
        let ops = plan(&desired, &current);
        assert_eq!(
            ops,
            vec![
                Op::Delete(current[0].clone()),
                Op::Delete(current[1].clone()),
                Op::Replace(Route {
                    dst: net("10.0.0.0/26"),
                    target: Target::Blackhole
                }),
                Op::Replace(Route {
                    dst: net("10.0.0.5/32"),
                    target: Target::Device("cali1".into())
                }),
            ]
        );
        assert!(plan(
            &desired,
            &[
                Route {
                    dst: net("10.0.0.0/26"),
                    target: Target::Blackhole
                },
                Route {
                    dst: net("10.0.0.5/32"),
                    target: Target::Device("cali1".into())
                },
            ]
        )
        .is_empty());
    }

    fn arb_route() -> impl Strategy<Value = Route> {
        (
            0u8..8,
            prop_oneof![
                Just(Target::Blackhole),
                (0u8..3).prop_map(|i| Target::Device(format!("cali{i}")))
            ],
        )
            .prop_map(|(i, target)| Route {
                dst: net(&format!("10.0.{i}.0/26")),
                target,
            })
    }

    proptest! {
        /// Applying the plan to `current` yields exactly `desired`.
        #[test]
        fn plan_converges(desired in proptest::collection::vec(arb_route(), 0..8), current in proptest::collection::vec(arb_route(), 0..8)) {
            let desired: BTreeMap<IpNet, Target> = desired.into_iter().map(|r| (r.dst, r.target)).collect();
            let mut kernel = current.clone();
            for op in plan(&desired, &current) {
                match op {
                    Op::Delete(r) => {
                        let i = kernel.iter().position(|k| *k == r).expect("deletes only what exists");
                        kernel.remove(i);
                    }
                    Op::Replace(r) => {
                        kernel.retain(|k| k.dst != r.dst);
                        kernel.push(r);
                    }
                }
            }
            let after: BTreeMap<IpNet, Target> = kernel.iter().map(|r| (r.dst, r.target.clone())).collect();
            prop_assert_eq!(kernel.len(), after.len());
            prop_assert_eq!(after, desired);
        }
    }
}
