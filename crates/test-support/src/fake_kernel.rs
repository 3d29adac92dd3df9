//! In-memory stand-ins for calico-kernel's traits, so an agent's
//! orchestration (what it asks of the kernel, in what order, how it
//! retries and when it gives up) is tested without root or namespaces.
//! Clones share one state: a test keeps a clone to look and to inject
//! failures while the agent owns the other.

use calico_calc::overlay::Tunnel;
use calico_kernel::{
    ApplyError, Firewall, RouteError, RouteTable, Sysctl, SysctlError, TunnelDevices, TunnelError,
};
use calico_net::IpNet;
use calico_routes::{Op, Route, Target};
use calico_tunnel::Observed;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// What happened, in order, across every fake sharing one [`Journal`].
#[derive(Debug, Clone, Default)]
pub struct Journal(Arc<Mutex<Vec<String>>>);

impl Journal {
    fn note(&self, entry: String) {
        lock(&self.0).push(entry);
    }

    /// Every entry so far.
    pub fn entries(&self) -> Vec<String> {
        lock(&self.0).clone()
    }

    pub fn clear(&self) {
        lock(&self.0).clear();
    }
}

#[derive(Debug, Default)]
struct FirewallState {
    scripts: Vec<String>,
    /// The next this many scripts are refused.
    refuse: usize,
}

/// nftables: records every script; refuses the next N when told to.
#[derive(Debug, Clone, Default)]
pub struct FakeFirewall {
    state: Arc<Mutex<FirewallState>>,
    journal: Journal,
}

impl FakeFirewall {
    pub fn new(journal: &Journal) -> Self {
        FakeFirewall {
            state: Arc::default(),
            journal: journal.clone(),
        }
    }

    /// Every script run (refused ones included).
    pub fn scripts(&self) -> Vec<String> {
        lock(&self.state).scripts.clone()
    }

    /// The next `n` scripts are refused, as nft refuses a bad ruleset.
    pub fn refuse_next(&self, n: usize) {
        lock(&self.state).refuse = n;
    }
}

impl Firewall for FakeFirewall {
    fn run(&self, script: &str) -> Result<(), ApplyError> {
        let mut s = lock(&self.state);
        s.scripts.push(script.to_string());
        let full = script.starts_with("add table inet calico\ndelete table inet calico");
        if s.refuse > 0 {
            s.refuse -= 1;
            self.journal.note(format!(
                "nft {} refused",
                if full { "full" } else { "delta" }
            ));
            return Err(ApplyError::Refused("refused by the test".into()));
        }
        self.journal
            .note(format!("nft {}", if full { "full" } else { "delta" }));
        Ok(())
    }
}

#[derive(Debug, Default)]
struct RouteState {
    routes: BTreeMap<IpNet, Target>,
    /// Interfaces that exist; a route through any other fails (NoLink).
    links: BTreeSet<String>,
    /// The next list() fails.
    fail_list: bool,
}

/// One owner's routes in the main table.
#[derive(Debug, Clone, Default)]
pub struct FakeRoutes {
    state: Arc<Mutex<RouteState>>,
    journal: Journal,
}

impl FakeRoutes {
    pub fn new(journal: &Journal) -> Self {
        FakeRoutes {
            state: Arc::default(),
            journal: journal.clone(),
        }
    }

    pub fn routes(&self) -> BTreeMap<IpNet, Target> {
        lock(&self.state).routes.clone()
    }

    /// Interface `name` now exists (routes through it succeed).
    pub fn add_link(&self, name: &str) {
        lock(&self.state).links.insert(name.to_string());
    }

    /// Someone else removes a route of ours (drift).
    pub fn remove(&self, dst: &IpNet) {
        lock(&self.state).routes.remove(dst);
    }

    pub fn fail_next_list(&self) {
        lock(&self.state).fail_list = true;
    }
}

fn device(t: &Target) -> Option<&str> {
    match t {
        Target::Device(d) => Some(d),
        Target::Via {
            device: Some(d), ..
        } => Some(d),
        _ => None,
    }
}

impl RouteTable for FakeRoutes {
    fn list(&self) -> Result<Vec<Route>, RouteError> {
        let mut s = lock(&self.state);
        if std::mem::take(&mut s.fail_list) {
            return Err(RouteError::Netlink {
                what: "list routes".into(),
                cause: Arc::new(std::io::Error::other("failed by the test")),
            });
        }
        Ok(s.routes
            .iter()
            .map(|(dst, target)| Route {
                dst: *dst,
                target: target.clone(),
            })
            .collect())
    }

    fn apply(&self, ops: &[Op]) -> Vec<(Op, RouteError)> {
        let mut s = lock(&self.state);
        let mut failed = Vec::new();
        for op in ops {
            match op {
                Op::Replace(r) => {
                    if let Some(d) = device(&r.target).filter(|d| !s.links.contains(*d)) {
                        failed.push((op.clone(), RouteError::NoLink(d.to_string())));
                        continue;
                    }
                    self.journal
                        .note(format!("route {} -> {:?}", r.dst, r.target));
                    s.routes.insert(r.dst, r.target.clone());
                }
                Op::Delete(r) => {
                    self.journal.note(format!("route {} removed", r.dst));
                    s.routes.remove(&r.dst);
                }
            }
        }
        failed
    }
}

/// The VXLAN devices: records what was synced.
#[derive(Debug, Clone, Default)]
pub struct FakeTunnels {
    synced: Arc<Mutex<Vec<Vec<Tunnel>>>>,
    links: Arc<Mutex<Vec<(String, u32, bool)>>>,
    /// Interface addresses (set with `set_addresses`).
    addresses: Arc<Mutex<Vec<(String, std::net::IpAddr)>>>,
    journal: Journal,
}

impl FakeTunnels {
    /// The host's interface addresses from now on.
    pub fn set_addresses(&self, addresses: &[(&str, &str)]) {
        *lock(&self.addresses) = addresses
            .iter()
            .map(|(n, a)| (n.to_string(), a.parse().expect("address")))
            .collect();
    }

    /// With the host's links (name, MTU, up) for MTU detection.
    pub fn new(journal: &Journal, links: &[(&str, u32)]) -> Self {
        FakeTunnels {
            synced: Arc::default(),
            addresses: Arc::default(),
            links: Arc::new(Mutex::new(
                links
                    .iter()
                    .map(|(n, m)| (n.to_string(), *m, true))
                    .collect(),
            )),
            journal: journal.clone(),
        }
    }

    /// Every sync, in order.
    pub fn synced(&self) -> Vec<Vec<Tunnel>> {
        lock(&self.synced).clone()
    }
}

impl TunnelDevices for FakeTunnels {
    fn sync(&self, want: &[Tunnel]) -> Vec<TunnelError> {
        self.journal.note(format!("tunnels {}", want.len()));
        lock(&self.synced).push(want.to_vec());
        Vec::new()
    }

    fn links(&self) -> Result<Vec<(String, u32, bool)>, TunnelError> {
        Ok(lock(&self.links).clone())
    }

    fn addresses(&self) -> Result<Vec<(String, std::net::IpAddr)>, TunnelError> {
        Ok(lock(&self.addresses).clone())
    }

    fn observe(&self, name: &str) -> Result<Option<Observed>, TunnelError> {
        let _ = name;
        Ok(None)
    }
}

/// Sysctls: a map, with keys whose interface is missing failing.
#[derive(Debug, Clone, Default)]
pub struct FakeSysctl {
    values: Arc<Mutex<BTreeMap<String, String>>>,
    journal: Journal,
}

impl FakeSysctl {
    pub fn new(journal: &Journal) -> Self {
        FakeSysctl {
            values: Arc::default(),
            journal: journal.clone(),
        }
    }

    pub fn values(&self) -> BTreeMap<String, String> {
        lock(&self.values).clone()
    }
}

impl Sysctl for FakeSysctl {
    fn write(&self, key: &str, value: &str) -> Result<(), SysctlError> {
        self.journal.note(format!("sysctl {key}={value}"));
        lock(&self.values).insert(key.to_string(), value.to_string());
        Ok(())
    }
}

/// A wired workload as [`FakeWorkloads`] holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeLink {
    pub netns: std::path::PathBuf,
    pub container_if: String,
    pub ips: Vec<IpNet>,
}

#[derive(Debug, Default)]
struct WorkloadState {
    links: BTreeMap<String, FakeLink>,
    /// The next wire() fails.
    fail_wire: bool,
}

/// Workload interfaces: veth pairs as a map from host interface.
#[derive(Debug, Clone, Default)]
pub struct FakeWorkloads {
    state: Arc<Mutex<WorkloadState>>,
    journal: Journal,
}

const FAKE_HOST_MAC: &str = "ee:ee:ee:ee:ee:ee";
const FAKE_CONTAINER_MAC: &str = "02:00:00:00:00:01";

impl FakeWorkloads {
    pub fn new(journal: &Journal) -> Self {
        FakeWorkloads {
            state: Arc::default(),
            journal: journal.clone(),
        }
    }

    pub fn links(&self) -> BTreeMap<String, FakeLink> {
        lock(&self.state).links.clone()
    }

    pub fn fail_next_wire(&self) {
        lock(&self.state).fail_wire = true;
    }
}

impl calico_kernel::Workloads for FakeWorkloads {
    fn host_link(
        &self,
        name: &str,
    ) -> Result<Option<String>, calico_kernel::workload::WiringError> {
        Ok(lock(&self.state)
            .links
            .contains_key(name)
            .then(|| FAKE_HOST_MAC.to_string()))
    }

    fn wire(
        &self,
        netns: &std::path::Path,
        host_if: &str,
        container_if: &str,
        _mtu: u32,
        ips: &[IpNet],
    ) -> Result<calico_kernel::workload::WorkloadLink, calico_kernel::workload::WiringError> {
        let mut s = lock(&self.state);
        if std::mem::take(&mut s.fail_wire) {
            self.journal.note(format!("wire {host_if} failed"));
            return Err(calico_kernel::workload::WiringError::NoLink(
                container_if.to_string(),
            ));
        }
        self.journal.note(format!("wire {host_if}"));
        s.links.insert(
            host_if.to_string(),
            FakeLink {
                netns: netns.to_path_buf(),
                container_if: container_if.to_string(),
                ips: ips.to_vec(),
            },
        );
        Ok(calico_kernel::workload::WorkloadLink {
            host_mac: FAKE_HOST_MAC.into(),
            container_mac: FAKE_CONTAINER_MAC.into(),
        })
    }

    fn unwire(&self, host_if: &str) -> Result<bool, calico_kernel::workload::WiringError> {
        let gone = lock(&self.state).links.remove(host_if).is_some();
        if gone {
            self.journal.note(format!("unwire {host_if}"));
        }
        Ok(gone)
    }

    fn container_link(
        &self,
        netns: &std::path::Path,
        container_if: &str,
    ) -> Result<Option<(String, Vec<std::net::IpAddr>)>, calico_kernel::workload::WiringError> {
        Ok(lock(&self.state)
            .links
            .values()
            .find(|l| l.netns == netns && l.container_if == container_if)
            .map(|l| {
                (
                    FAKE_CONTAINER_MAC.to_string(),
                    l.ips.iter().map(IpNet::addr).collect(),
                )
            }))
    }
}
