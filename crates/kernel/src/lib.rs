//! The node's kernel access, behind a few small traits.
//!
//! Everything calico-rs changes in the kernel goes through this crate:
//! the routes an owner installs ([`RouteTable`]), the VXLAN devices with
//! their neighbour and forwarding entries ([`TunnelDevices`]), nftables
//! transactions ([`Firewall`]) and sysctls ([`Sysctl`]), plus a workload's
//! wiring for the CNI plugin ([`workload`]). Each trait has one real
//! implementation here (rtnetlink, the `nft` binary, `/proc/sys`) and an
//! in-memory fake in `calico-test-support`, so the agents' orchestration
//! (ordering, retries, resync, failing closed) is tested without root, and
//! the netns tests here test the real ones. rtnetlink is async: each real
//! implementation drives it on a private current-thread runtime, and no
//! async type appears in this crate's public signatures.

pub mod conntrack;
mod nflog;
mod nft;
mod nla;
mod routes;
mod sysctl;
mod tunnels;
pub mod workload;

pub use nflog::{Logged, LoggedRef, Nflog, NflogError};
pub use nft::{Applied, ApplyError, Nft, TABLE};

/// The error underneath a kernel error (rtnetlink's, or the errno a
/// netlink acknowledgement carried), kept as its source; shared, so one
/// failure can stand for every operation it stopped.
pub type Cause = std::sync::Arc<dyn std::error::Error + Send + Sync + 'static>;
pub use routes::{NetlinkRoutes, RouteError};
pub use sysctl::{ProcSysctl, SysctlError};
pub use tunnels::{TunnelError, Tunnels};

use calico_calc::overlay::Tunnel;
use calico_dataplane::Table;
use calico_net::IpNet;
use calico_routes::{Op, Route, Target};
use calico_tunnel::Observed;
use std::collections::BTreeMap;

/// The main routing table as one owner (a route protocol number) sees it.
pub trait RouteTable: Send {
    /// This owner's routes.
    fn list(&self) -> Result<Vec<Route>, RouteError>;

    /// Carries out `ops`; those that failed come back with why.
    fn apply(&self, ops: &[Op]) -> Vec<(Op, RouteError)>;

    /// Brings this owner's routes to `desired` (only the difference is
    /// sent); the operations that failed come back.
    fn sync(&self, desired: &BTreeMap<IpNet, Target>) -> Result<Vec<(Op, RouteError)>, RouteError> {
        let current = self.list()?;
        Ok(self.apply(&calico_routes::plan(desired, &current)))
    }
}

/// The VXLAN tunnel devices, owned by name.
pub trait TunnelDevices: Send {
    /// Brings the devices (and their addresses, neighbour and forwarding
    /// entries) to `want`; a device not wanted is removed.
    fn sync(&self, want: &[Tunnel]) -> Vec<TunnelError>;

    /// Every link: name, MTU, and whether it is up.
    fn links(&self) -> Result<Vec<(String, u32, bool)>, TunnelError>;

    /// Every address on every interface, with the interface's name (for
    /// finding the interface a host endpoint's expectedIPs stand for).
    fn addresses(&self) -> Result<Vec<(String, std::net::IpAddr)>, TunnelError>;

    /// What the kernel holds for device `name`, if it exists.
    fn observe(&self, name: &str) -> Result<Option<Observed>, TunnelError>;
}

/// nftables: one script, one transaction (all of it or none).
pub trait Firewall: Send {
    fn run(&self, script: &str) -> Result<(), ApplyError>;

    /// Replaces table `inet calico` with `ruleset` atomically (created if
    /// absent). Nothing changes if it is refused; no other table is touched.
    fn apply(&self, ruleset: &str) -> Result<(), ApplyError> {
        self.run(&format!(
            "add table inet {TABLE}\ndelete table inet {TABLE}\n{ruleset}"
        ))
    }

    /// The kernel's copy of table `inet calico`, as `nft -j list table`
    /// prints it; None when there is none (or this firewall cannot say).
    fn list(&self) -> Result<Option<String>, ApplyError> {
        Ok(None)
    }

    /// Brings the kernel from `old` (what was last applied) to `new`: the
    /// delta when there is one, in one transaction. If the kernel no
    /// longer holds `old` (someone changed or deleted our table) the delta
    /// is refused and the whole table is replaced instead, which repairs it.
    ///
    /// Without `old` (a refresh, or this process's first apply) the
    /// kernel's table is read back and only the difference is sent
    /// (`Verified` when there is none): replacing a table with large sets
    /// drops packets while it happens. The whole table is loaded only when
    /// there is none, it does not read back, or the difference cannot be
    /// expressed or is refused.
    fn update(&self, old: Option<&Table>, new: &Table) -> Result<Applied, ApplyError> {
        match old {
            Some(o) => {
                if let Some(script) = new.delta(o) {
                    if script.is_empty() {
                        return Ok(Applied::Unchanged);
                    }
                    if self.run(&script).is_ok() {
                        return Ok(Applied::Delta);
                    }
                }
            }
            None => {
                let kernel = self
                    .list()
                    .ok()
                    .flatten()
                    .and_then(|json| Table::from_kernel(&json, new).ok());
                if let Some(script) = kernel.and_then(|k| new.delta(&k)) {
                    if script.is_empty() {
                        return Ok(Applied::Verified);
                    }
                    if self.run(&script).is_ok() {
                        return Ok(Applied::Reconciled);
                    }
                }
            }
        }
        self.apply(&new.to_text()).map(|()| Applied::Full)
    }
}

/// Kernel parameters under `/proc/sys`, named by path (`net/ipv4/conf/cali1/rp_filter`).
pub trait Sysctl: Send {
    fn write(&self, key: &str, value: &str) -> Result<(), SysctlError>;
}

/// A node's workload interfaces, as the CNI plugin wires them.
pub trait Workloads {
    /// Whether host interface `name` exists; its MAC if so.
    fn host_link(&self, name: &str) -> Result<Option<String>, workload::WiringError>;

    /// The veth pair (`host_if` here, `container_if` in `netns`), its
    /// addresses and routes on both sides, proxy ARP on the host.
    fn wire(
        &self,
        netns: &std::path::Path,
        host_if: &str,
        container_if: &str,
        mtu: u32,
        ips: &[IpNet],
    ) -> Result<workload::WorkloadLink, workload::WiringError>;

    /// Deletes the host side (its peer goes with it); whether it was there.
    fn unwire(&self, host_if: &str) -> Result<bool, workload::WiringError>;

    /// The container interface's MAC and addresses, if it exists.
    fn container_link(
        &self,
        netns: &std::path::Path,
        container_if: &str,
    ) -> Result<Option<(String, Vec<std::net::IpAddr>)>, workload::WiringError>;
}

/// [`Firewall::apply`] in this network namespace.
pub fn apply(ruleset: &str) -> Result<(), ApplyError> {
    Nft::default().apply(ruleset)
}
