//! The policy agent's VXLAN part: what the overlay is computed from (kept
//! from datastore events), the underlay MTU (detected, and the workloads'
//! written for the CNI plugin), the kernel's tunnel devices, and this
//! node's tunnel addresses in IPAM. The plan itself is
//! `calico_calc::overlay` (pure); this module is the shell around it.

use crate::config::Config;
use crate::status::Metrics;
use calico_api::{Kind, Resource};
use calico_calc::overlay::{self, Family, Hop, OverlayInputs, Tunnel, TunnelSettings};
use calico_client::Client;
use calico_dataplane::VxlanSources;
use calico_kernel::TunnelDevices;
use calico_net::IpNet;
use calico_routes::Target;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use tracing::{info, warn};

/// The overlay's state in the agent.
pub struct OverlayAgent {
    /// What the overlay is computed from.
    pub inputs: OverlayInputs,
    /// This node's labels (pool node selectors).
    pub labels: BTreeMap<String, String>,
    /// The tunnel devices last synced (None: sync them).
    applied: Option<Vec<Tunnel>>,
    /// The underlay's MTU (None: detect it).
    underlay_mtu: Option<u32>,
    /// Problems already logged (each is logged once).
    reported: BTreeSet<String>,
    /// The last plan and the settings it was made with; made again only
    /// when an input or a setting changed.
    last: Option<(TunnelSettings, bool, overlay::Overlay)>,
    /// Shared copies of the workloads' node names.
    strings: calico_selector::Interner,
}

/// How the routes crate writes a hop.
pub fn target(hop: &Hop) -> Target {
    match hop {
        Hop::Encap { vtep, device } => Target::Via {
            gateway: *vtep,
            device: Some(device.clone()),
            onlink: true,
        },
        Hop::Device(d) => Target::Device(d.clone()),
        Hop::Native { gateway } => Target::Via {
            gateway: *gateway,
            device: None,
            onlink: false,
        },
    }
}

/// The hosts VXLAN is accepted from: the other nodes, per family with a
/// tunnel.
pub fn vxlan_sources(plan: &overlay::Overlay, port: u16) -> VxlanSources {
    let mut sources = VxlanSources {
        port,
        ..VxlanSources::default()
    };
    for t in &plan.tunnels {
        let hosts = Some(t.peers.iter().map(|p| p.host).collect());
        match Family::of(t.address) {
            Family::V4 => sources.v4 = hosts,
            Family::V6 => sources.v6 = hosts,
        }
    }
    sources
}

impl OverlayAgent {
    pub fn new() -> Self {
        OverlayAgent {
            inputs: OverlayInputs::default(),
            labels: BTreeMap::new(),
            applied: None,
            underlay_mtu: None,
            reported: BTreeSet::new(),
            last: None,
            strings: calico_selector::Interner::new(),
        }
    }

    /// Keeps a resource event: `r` is the resource now at `key` (of `kind`
    /// and `name`), None when it was deleted. `node` is this node.
    pub fn note(&mut self, node: &str, kind: Kind, name: String, key: &str, r: Option<&Resource>) {
        if matches!(kind, Kind::Node | Kind::IPPool | Kind::WorkloadEndpoint) {
            self.last = None;
        }
        let o = &mut self.inputs;
        match (kind, r) {
            (Kind::Node, Some(Resource::Node(n))) => {
                if name == node {
                    self.labels.clone_from(&n.metadata.labels);
                }
                o.nodes.insert(name, n.spec.clone());
            }
            (Kind::Node, _) => {
                o.nodes.remove(&name);
            }
            (Kind::IPPool, Some(Resource::IPPool(p))) => {
                o.pools.insert(name, p.spec.clone());
            }
            (Kind::IPPool, _) => {
                o.pools.remove(&name);
            }
            (Kind::WorkloadEndpoint, Some(Resource::WorkloadEndpoint(w))) => {
                o.workloads.insert(
                    key.to_string(),
                    (
                        self.strings.intern(&w.spec.node),
                        crate::events::workload_ips(&w.spec).into(),
                    ),
                );
            }
            (Kind::WorkloadEndpoint, _) => {
                o.workloads.remove(key);
                self.strings.sweep();
            }
            _ => {}
        }
    }

    /// Keeps a block affinity event (any node's).
    pub fn affinity(&mut self, owner: String, block: IpNet, confirmed: bool) {
        self.last = None;
        let blocks = &mut self.inputs.blocks;
        if confirmed {
            blocks.insert(block, owner);
        } else if blocks.get(&block) == Some(&owner) {
            blocks.remove(&block);
        }
    }

    /// Forgets the underlay's MTU and the last plan, so the next plan
    /// detects the MTU again (and rewrites the MTU file).
    pub fn redetect_mtu(&mut self) {
        self.underlay_mtu = None;
        self.last = None;
    }

    /// Logs a problem the first time it is seen.
    fn report(&mut self, problem: String) {
        if self.reported.insert(problem.clone()) {
            tracing::error!("{problem}");
        }
    }

    /// The overlay `node` needs now, with the underlay's MTU detected (on
    /// `devices`) when unknown; the workloads' MTU is written to `mtu_file`
    /// when the agent owns the kernel side (`devices` given).
    pub fn plan(
        &mut self,
        node: &str,
        cfg: &Config,
        mtu_file: &Path,
        devices: Option<&dyn TunnelDevices>,
    ) -> overlay::Overlay {
        if self.underlay_mtu.is_none() {
            self.underlay_mtu = Some(self.detect_mtu(cfg, devices));
        }
        let underlay = self.underlay_mtu.unwrap_or(crate::mtu::FALLBACK_MTU);
        let settings = TunnelSettings {
            vni: cfg.vxlan_vni,
            port: cfg.vxlan_port,
            mtu_v4: crate::mtu::tunnel_mtu(cfg.vxlan_mtu, underlay, Family::V4.overhead()),
            mtu_v6: crate::mtu::tunnel_mtu(cfg.vxlan_mtu_v6, underlay, Family::V6.overhead()),
        };
        if let Some((s, enabled, plan)) = &self.last {
            if *s == settings && *enabled == cfg.vxlan_enabled {
                return plan.clone();
            }
        }
        let mut plan = if cfg.vxlan_enabled {
            overlay::plan(&self.inputs, node, &settings)
        } else {
            overlay::Overlay::default()
        };
        for (name, p) in &self.inputs.pools {
            if p.ipip_mode.is_some_and(|m| !m.is_never()) {
                plan.problems.push(format!(
                    "IPPool {name}: ipipMode {:?} is refused: {}; traffic of this pool is not \
                     encapsulated. Use vxlanMode instead",
                    p.ipip_mode.unwrap_or_default(),
                    calico_client::ipip_unavailable()
                ));
            }
        }
        for p in std::mem::take(&mut plan.problems) {
            self.report(p);
        }
        // Workloads get the smallest MTU of the encapsulations the pools
        // ask for (known before this node's tunnel exists).
        let families: BTreeSet<Family> = if cfg.vxlan_enabled {
            overlay::vxlan_pool_nets(&self.inputs.pools)
                .iter()
                .map(|n| Family::of(n.addr()))
                .collect()
        } else {
            BTreeSet::new()
        };
        let pod = crate::mtu::pod_mtu(underlay, families.iter().map(|f| settings.mtu(*f)));
        if devices.is_some() {
            match crate::mtu::write_file(mtu_file, pod) {
                Ok(true) => info!("workload MTU {pod} written to {}", mtu_file.display()),
                Ok(false) => {}
                Err(e) => warn!("writing the workload MTU to {}: {e}", mtu_file.display()),
            }
        }
        self.last = Some((settings, cfg.vxlan_enabled, plan.clone()));
        plan
    }

    fn detect_mtu(&mut self, cfg: &Config, devices: Option<&dyn TunnelDevices>) -> u32 {
        let links = match devices {
            Some(t) => t.links(),
            None => return crate::mtu::FALLBACK_MTU,
        };
        let pattern = match regex::Regex::new(&cfg.mtu_iface_pattern) {
            Ok(p) => p,
            Err(e) => {
                self.report(format!(
                    "mtuIfacePattern {:?} is not a regular expression ({e}); using Calico's default",
                    cfg.mtu_iface_pattern
                ));
                #[allow(clippy::unwrap_used)] // a constant that compiles
                regex::Regex::new(crate::config::DEFAULT_MTU_IFACE_PATTERN).unwrap()
            }
        };
        match links {
            Ok(links) => crate::mtu::underlay_mtu(&links, &pattern).unwrap_or_else(|| {
                self.report(format!(
                    "no interface matches mtuIfacePattern {:?}; assuming MTU {}",
                    cfg.mtu_iface_pattern,
                    crate::mtu::FALLBACK_MTU
                ));
                crate::mtu::FALLBACK_MTU
            }),
            Err(e) => {
                let e = calico_datastore::Chain(&e);
                warn!("listing interfaces for the MTU: {e}");
                crate::mtu::FALLBACK_MTU
            }
        }
    }

    /// Brings the kernel's tunnel devices to `want` (when they changed, or
    /// `due`); failures are logged, counted and retried on the next call.
    pub fn sync_tunnels(
        &mut self,
        devices: Option<&dyn TunnelDevices>,
        want: &[Tunnel],
        due: bool,
        metrics: &Metrics,
    ) {
        let Some(t) = devices else { return };
        if !due && self.applied.as_deref() == Some(want) {
            return;
        }
        let errors = t.sync(want);
        if errors.is_empty() {
            self.applied = Some(want.to_vec());
        } else {
            for e in errors {
                metrics.apply_errors.inc();
                warn!("tunnel device: {}", calico_datastore::Chain(&e));
            }
            self.applied = None;
        }
    }
}

/// What the node's tunnel addresses were last reconciled against.
type TunnelInputs = (
    BTreeMap<String, calico_api::IpPoolSpec>,
    Option<calico_api::NodeSpec>,
    BTreeMap<String, String>,
);

/// Keeps this node's tunnel addresses (IPAM, recorded on the Node) in line
/// with the pools, whenever the pools or the Node change.
pub struct TunnelAddrs {
    pub ipam: calico_ipam::Ipam,
    pub client: Client,
    last: Option<TunnelInputs>,
}

impl TunnelAddrs {
    pub fn new(ipam: calico_ipam::Ipam, client: Client) -> Self {
        TunnelAddrs {
            ipam,
            client,
            last: None,
        }
    }

    /// Reconciles `node`'s tunnel addresses if what they depend on changed
    /// since the last success.
    pub fn check(&mut self, node: &str, overlay: &OverlayAgent) {
        let inputs = (
            overlay.inputs.pools.clone(),
            overlay.inputs.nodes.get(node).cloned(),
            overlay.labels.clone(),
        );
        if self.last.as_ref() == Some(&inputs) {
            return;
        }
        match crate::tunnel_addr::reconcile(&self.ipam, &self.client, node) {
            // A change to the Node comes back as an event and is checked
            // again (and then kept).
            Ok(_) => self.last = Some(inputs),
            Err(e) => warn!("tunnel addresses: {e:#}; will retry"),
        }
    }
}
