//! Learned routes into the kernel's main table, marked with the BGP route
//! protocol (186), through calico-routes.

use crate::rib::FibOp;
use crate::speaker::Fib;
use calico_routes::{Kernel, Op, Route, RouteError, Target, PROTO_BGP};
use ipnet::IpNet;
use std::collections::BTreeMap;
use tracing::{info, warn};

/// The kernel as the speaker's FIB. Routes found at start (left by an
/// earlier run, still forwarding during a graceful restart) stay until the
/// speaker has converged, then those not learned again are removed.
pub struct KernelFib {
    kernel: Kernel,
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
        let kernel = Kernel::new(PROTO_BGP)?;
        let inherited = kernel
            .list()?
            .into_iter()
            .map(|r| (r.dst, r.target))
            .collect();
        Ok(KernelFib { kernel, inherited })
    }
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
                    // Any non-blackhole target deletes by destination.
                    Op::Delete(Route {
                        dst: *dst,
                        target: target(dst.addr()),
                    })
                }
            })
            .collect();
        for (op, e) in self.kernel.apply(&ops) {
            warn!("BGP route {op:?}: {e}");
        }
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
        for (op, e) in self.kernel.apply(&ops) {
            warn!("BGP route {op:?}: {e}");
        }
    }
}
