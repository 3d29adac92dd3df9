//! Learned routes into the kernel's main table, marked with the BGP route
//! protocol (186), through calico-kernel's `RouteTable`.

use crate::rib::FibOp;
use crate::speaker::Fib;
use calico_kernel::{NetlinkRoutes, RouteError, RouteTable};
use calico_routes::{Op, Route, Target, PROTO_BGP};
use ipnet::IpNet;
use std::collections::BTreeMap;
use tracing::{info, warn};

/// The kernel as the speaker's FIB. Routes found at start (left by an
/// earlier run, still forwarding during a graceful restart) stay until the
/// speaker has converged, then those not learned again are removed.
pub struct KernelFib {
    kernel: Box<dyn RouteTable>,
    /// Routes from before this run not confirmed yet.
    inherited: BTreeMap<IpNet, Target>,
}

impl std::fmt::Debug for KernelFib {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KernelFib({} inherited)", self.inherited.len())
    }
}

impl KernelFib {
    /// Opens netlink in the calling thread's network namespace.
    pub fn new() -> Result<Self, RouteError> {
        Self::with(Box::new(NetlinkRoutes::new(PROTO_BGP)?))
    }

    /// Over any route table (the BGP protocol's routes in it).
    pub fn with(kernel: Box<dyn RouteTable>) -> Result<Self, RouteError> {
        let inherited = kernel
            .list()?
            .into_iter()
            .map(|r| (r.dst, r.target))
            .collect();
        Ok(KernelFib { kernel, inherited })
    }

    fn run(&self, ops: &[Op]) {
        for (op, e) in self.kernel.apply(ops) {
            // The error with its causes, on one line.
            let why: Vec<String> =
                std::iter::successors(Some(&e as &dyn std::error::Error), |e| e.source())
                    .map(ToString::to_string)
                    .collect();
            warn!("BGP route {op:?}: {}", why.join(": "));
        }
    }
}

/// Deleting our route to `dst` (any next hop; our protocol only, so a
/// route someone else installed for the same prefix stays).
fn delete(dst: IpNet) -> Op {
    Op::Delete(Route {
        dst,
        target: target(dst.addr()),
    })
}

fn target(nh: std::net::IpAddr) -> Target {
    Target::Via {
        gateway: nh,
        device: None,
        onlink: false,
    }
}

impl Fib for KernelFib {
    fn apply(&mut self, ops: &[FibOp]) {
        let ops: Vec<Op> = ops
            .iter()
            .map(|op| match op {
                FibOp::Set(dst, nh) => {
                    self.inherited.remove(dst);
                    Op::Replace(Route {
                        dst: *dst,
                        target: target(*nh),
                    })
                }
                FibOp::Remove(dst) => {
                    self.inherited.remove(dst);
                    delete(*dst)
                }
            })
            .collect();
        self.run(&ops);
    }

    fn converged(&mut self) {
        if self.inherited.is_empty() {
            return;
        }
        info!(
            "BGP converged: removing {} routes from before the restart",
            self.inherited.len()
        );
        let ops: Vec<Op> = std::mem::take(&mut self.inherited)
            .into_iter()
            .map(|(dst, target)| Op::Delete(Route { dst, target }))
            .collect();
        self.run(&ops);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use calico_test_support::{FakeRoutes, Journal};

    fn net(s: &str) -> IpNet {
        s.parse().expect("net")
    }

    #[test]
    fn routes_from_before_a_restart_stay_until_convergence() {
        let journal = Journal::default();
        let kernel = FakeRoutes::new(&journal);
        let gw: std::net::IpAddr = "10.0.0.2".parse().expect("ip");
        // Left by the previous run: one relearned, one not.
        kernel.apply(&[
            Op::Replace(Route {
                dst: net("10.244.2.0/26"),
                target: target(gw),
            }),
            Op::Replace(Route {
                dst: net("10.244.9.0/26"),
                target: target(gw),
            }),
        ]);
        let mut fib = KernelFib::with(Box::new(kernel.clone())).expect("fib");
        fib.apply(&[
            FibOp::Set(net("10.244.2.0/26"), gw),
            FibOp::Set(net("10.244.3.0/26"), gw),
        ]);
        assert_eq!(kernel.routes().len(), 3, "still forwarding the old route");
        fib.converged();
        let have: Vec<IpNet> = kernel.routes().into_keys().collect();
        assert_eq!(have, vec![net("10.244.2.0/26"), net("10.244.3.0/26")]);
        fib.apply(&[FibOp::Remove(net("10.244.2.0/26"))]);
        assert_eq!(kernel.routes().len(), 1);
    }
}
