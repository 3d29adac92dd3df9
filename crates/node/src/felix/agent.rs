//! The agent's core: what the datastore says (the calculation graph and
//! the overlay's inputs), what the kernel was last given, and how one
//! sync brings the kernel from one to the other, through calico-kernel's
//! traits. The loop that feeds it lives in the parent module; tests drive
//! it against in-memory fakes.

use crate::config::Config;
use crate::config::Overrides;
use crate::events::{block_affinity, decode};
use crate::overlay::OverlayAgent;
use crate::status::{Metrics, Status};
use anyhow::{Context, Result};
use calico_api::{FelixConfigurationSpec, Resource};
use calico_calc::overlay::Hop;
use calico_calc::{CalcGraph, DesiredState, Update};
use calico_client::keys::{parse_resource_key, RESOURCE_PREFIX};
use calico_dataplane::Table;
use calico_datastore::Event;
use calico_kernel::{
    Applied, Firewall, NetlinkRoutes, ProcSysctl, RouteError, RouteTable, Sysctl, TunnelDevices,
    Tunnels,
};
use calico_net::IpNet;
use calico_routes::{Target, PROTO_AGENT};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tracing::{debug, info, warn};

/// The kernel as the agent uses it.
pub(super) struct KernelAccess {
    pub firewall: Box<dyn Firewall>,
    /// Routes and tunnel devices: None when route sync is off.
    pub routes: Option<Box<dyn RouteTable>>,
    pub tunnels: Option<Box<dyn TunnelDevices>>,
    pub sysctl: Box<dyn Sysctl>,
}

impl KernelAccess {
    /// The real kernel of this network namespace.
    pub(super) fn real(route_sync: bool) -> Result<Self> {
        let mut kernel = KernelAccess {
            firewall: Box::new(calico_kernel::Nft::default()),
            routes: None,
            tunnels: None,
            sysctl: Box::new(ProcSysctl),
        };
        if route_sync {
            kernel.routes = Some(Box::new(
                NetlinkRoutes::new(PROTO_AGENT).context("opening netlink for routes")?,
            ));
            kernel.tunnels = Some(Box::new(
                Tunnels::new().context("opening netlink for tunnel devices")?,
            ));
        }
        Ok(kernel)
    }
}

pub(super) struct Agent {
    pub(super) node: String,
    pub(super) graph: CalcGraph,
    pub(super) state: DesiredState,
    /// The table the kernel holds (None: unknown, load it whole).
    pub(super) applied: Option<Table>,
    pub(super) last_full: Instant,
    /// This node's confirmed block affinities: blackhole routes.
    pub(super) blocks: BTreeSet<IpNet>,
    /// The routes last synced (None: sync them).
    pub(super) routes: Option<BTreeMap<IpNet, Target>>,
    pub(super) last_route_sync: Instant,
    pub(super) felix_configs: BTreeMap<String, FelixConfigurationSpec>,
    /// The VXLAN overlay: its inputs, devices and MTU.
    pub(super) overlay: OverlayAgent,
    /// The newest datastore revision fed to the graph.
    pub(super) revision: i64,
    /// Whether the syncer last said it is in sync (the node reports
    /// ready only then).
    pub(super) datastore_in_sync: bool,
    /// Resource keys skipped (a value that does not decode) or not enforced
    /// (this node's host endpoints), with the reason.
    pub(super) skipped: BTreeMap<String, String>,
    /// The rejected endpoints last reported.
    pub(super) reported: BTreeMap<calico_calc::EndpointId, String>,
    /// The rejected host endpoints last reported.
    pub(super) reported_hosts: BTreeMap<String, String>,
    /// rp_filter last written per workload interface.
    pub(super) rp_filter: BTreeMap<String, String>,
    /// The kernel, through its traits.
    pub(super) kernel: KernelAccess,
    /// What the flow collector needs to name chains and addresses (when
    /// flow logs are on), refreshed at every sync.
    pub(super) flow_names: Option<Arc<Mutex<crate::flows::Names>>>,
    /// Every workload's addresses and identity (namespace, pod, labels),
    /// to name flow records by; by resource key.
    pub(super) workload_ids: BTreeMap<String, (Box<[IpNet]>, Arc<crate::flows::Workload>)>,
    /// Shared copies of the strings those names repeat (namespaces,
    /// label keys and values).
    pub(super) strings: calico_selector::Interner,
    /// The same by address, kept as changes come (one map shared with the
    /// flow collector, changed in place; never rebuilt at a sync).
    pub(super) workload_names: crate::flows::SharedWorkloads,
    /// Every HostEndpoint's expected addresses with its name, by resource key.
    pub(super) hep_names:
        BTreeMap<String, (Vec<std::net::IpAddr>, Arc<crate::flows::HostEndpointName>)>,
    /// Every NetworkSet's and GlobalNetworkSet's nets, by resource key.
    pub(super) netset_names: BTreeMap<String, Vec<crate::flows::NetworkSetNet>>,
    /// The pending (staged) model, fed every resource read while policies
    /// are staged and flow logs are on; and whether it changed since the
    /// collector got it.
    pub(super) pending_model: Option<crate::pending::Model>,
    pub(super) resources_changed: bool,
    /// Whether flow records carry pending traces at all
    /// (`flowLogsPolicyEvaluationMode` not `None`).
    pub(super) pending_traces: bool,
    /// The keys of staged policies. Resources are kept only while there
    /// are any (the pending model needs them all; at 50,000 endpoints
    /// keeping them always was most of the agent's memory).
    pub(super) staged: BTreeSet<String>,
    /// Set when resources must be delivered again (the first staged
    /// policy came): the loop asks the syncer, then clears it.
    pub(super) want_resend: bool,
    pub(super) status: Arc<Mutex<Status>>,
    pub(super) metrics: Arc<Metrics>,
}

impl Agent {
    pub(super) fn new(
        node: &str,
        kernel: KernelAccess,
        status: Arc<Mutex<Status>>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Agent {
            node: node.to_string(),
            graph: CalcGraph::new(node),
            state: DesiredState::default(),
            applied: None,
            last_full: Instant::now(),
            blocks: BTreeSet::new(),
            routes: None,
            last_route_sync: Instant::now(),
            felix_configs: BTreeMap::new(),
            overlay: OverlayAgent::new(),
            revision: 0,
            datastore_in_sync: false,
            skipped: BTreeMap::new(),
            reported: BTreeMap::new(),
            reported_hosts: BTreeMap::new(),
            rp_filter: BTreeMap::new(),
            kernel,
            flow_names: None,
            workload_ids: BTreeMap::new(),
            strings: calico_selector::Interner::new(),
            workload_names: crate::flows::SharedWorkloads::default(),
            netset_names: BTreeMap::new(),
            hep_names: BTreeMap::new(),
            pending_model: None,
            pending_traces: true,
            resources_changed: false,
            staged: BTreeSet::new(),
            want_resend: false,
            status,
            metrics,
        }
    }

    /// Forgets everything read from the datastore (before listing it all
    /// again), and what it believes of the kernel except the nft table
    /// (still there, and the base of the next delta): routes, tunnels and
    /// sysctls are all checked again at the next sync.
    #[cfg(test)]
    pub(super) fn reset(&mut self) {
        self.graph = CalcGraph::new(&self.node);
        self.state = DesiredState::default();
        self.blocks.clear();
        self.routes = None;
        self.felix_configs.clear();
        self.overlay = OverlayAgent::new();
        self.revision = 0;
        self.skipped.clear();
        self.reported.clear();
        self.rp_filter.clear();
        self.workload_ids.clear();
        self.workload_names.update(BTreeMap::clear);
        self.netset_names.clear();
        self.hep_names.clear();
        self.pending_model = None;
        self.resources_changed = true;
        self.staged.clear();
    }

    pub(super) fn report(&self, in_sync: bool) {
        let mut s = self
            .status
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let in_sync = in_sync && self.datastore_in_sync;
        s.in_sync = in_sync;
        if in_sync {
            s.applied_revision = self.revision;
        }
    }

    pub(super) fn feed(&mut self, updates: Vec<Update>) -> Result<()> {
        if updates.is_empty() {
            return Ok(());
        }
        let intents = self.graph.apply_all(updates);
        self.state
            .apply(&intents)
            .context("the calculation graph broke its ordering contract")?;
        self.report_rejected();
        Ok(())
    }

    /// Logs each endpoint newly left out of the dataplane (and each one
    /// taken back), and publishes every bad record in metrics and status.
    fn report_rejected(&mut self) {
        let now = self.graph.rejected();
        for (id, why) in now {
            if self.reported.get(id) != Some(why) {
                warn!(
                    "endpoint {}/{} not programmed: {why}",
                    id.namespace, id.name
                );
            }
        }
        for id in self.reported.keys().filter(|id| !now.contains_key(*id)) {
            info!("endpoint {}/{} programmed again", id.namespace, id.name);
        }
        self.reported = now.clone();
        let hosts = self.graph.rejected_hosts();
        for (name, why) in hosts {
            if self.reported_hosts.get(name) != Some(why) {
                warn!("host endpoint {name} not programmed: {why}");
            }
        }
        self.reported_hosts = hosts.clone();
        let rejected: BTreeMap<String, String> = self
            .reported
            .iter()
            .map(|(id, why)| (format!("{}/{}", id.namespace, id.name), why.clone()))
            .chain(
                self.reported_hosts
                    .iter()
                    .map(|(name, why)| (format!("hostendpoint/{name}"), why.clone())),
            )
            .chain(self.skipped.iter().map(|(k, why)| (k.clone(), why.clone())))
            .collect();
        self.metrics
            .bad_records
            .set(i64::try_from(rejected.len()).unwrap_or(i64::MAX));
        self.status
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .rejected = rejected;
    }

    /// Takes one datastore event: resources become an update for the
    /// calculation graph (FelixConfiguration also goes to the settings;
    /// nodes, pools and workloads to the overlay), block affinities go to
    /// the blackhole routes (this node's) and the overlay (every node's),
    /// everything else is ignored.
    pub(super) fn take(&mut self, ev: &Event) -> Option<Update> {
        let key = ev.key();
        if key.starts_with(RESOURCE_PREFIX) {
            let update = match ev {
                Event::Put(kv) => match decode(&kv.value) {
                    Ok(r) => {
                        self.skipped.remove(key);
                        self.note(key, Some(&r));
                        self.note_staged(key, calico_api::kinds::staged::enforced(&r).is_some());
                        if let Some(m) = &mut self.pending_model {
                            m.put(key, &r);
                            self.resources_changed = true;
                        }
                        Update::Put(r)
                    }
                    // A bad record affects only itself. An endpoint that
                    // no longer reads is dropped, not kept at its last good
                    // value (its interface then sends nothing); any other
                    // kind keeps its last good value, so that a policy
                    // made unreadable never loosens what it enforced.
                    Err(e) => {
                        let e = calico_api::truncated(&calico_datastore::Chain(&e).to_string());
                        warn!("skipping unreadable {key}: {e}");
                        self.skipped.insert(key.to_string(), e);
                        let (kind, namespace, name) = parse_resource_key(key)?;
                        if kind != calico_api::Kind::WorkloadEndpoint {
                            return None;
                        }
                        self.note(key, None);
                        if let Some(m) = &mut self.pending_model {
                            m.remove(key);
                            self.resources_changed = true;
                        }
                        Update::Delete {
                            kind,
                            namespace,
                            name,
                        }
                    }
                },
                Event::Delete { key, .. } => {
                    self.skipped.remove(key.as_str());
                    self.note(key, None);
                    self.note_staged(key, false);
                    if let Some(m) = &mut self.pending_model {
                        m.remove(key);
                        self.resources_changed = true;
                    }
                    let (kind, namespace, name) = parse_resource_key(key)?;
                    Update::Delete {
                        kind,
                        namespace,
                        name,
                    }
                }
            };
            return Some(update);
        }
        if let Some((owner, block, confirmed)) = block_affinity(ev) {
            let mine = owner == self.node;
            self.overlay.affinity(owner, block, confirmed);
            if mine {
                if confirmed {
                    self.blocks.insert(block);
                } else {
                    self.blocks.remove(&block);
                }
            }
        }
        None
    }

    /// Keeps the settings and the overlay's inputs: `r` is the resource
    /// now at `key` (None: deleted).
    fn note(&mut self, key: &str, r: Option<&Resource>) {
        let Some((kind, _, name)) = parse_resource_key(key) else {
            return;
        };
        match (kind, r) {
            (calico_api::Kind::FelixConfiguration, Some(Resource::FelixConfiguration(fc))) => {
                self.felix_configs.insert(name, fc.spec.clone());
            }
            (calico_api::Kind::FelixConfiguration, _) => {
                self.felix_configs.remove(&name);
            }
            (kind, r) => {
                if kind == calico_api::Kind::WorkloadEndpoint {
                    match r {
                        Some(Resource::WorkloadEndpoint(w)) => {
                            let strings = &mut self.strings;
                            let id = crate::flows::Workload {
                                namespace: strings
                                    .intern(w.metadata.namespace.as_deref().unwrap_or_default()),
                                name: if w.spec.pod.is_empty() {
                                    name.as_str().into()
                                } else {
                                    w.spec.pod.as_str().into()
                                },
                                generate_name: w
                                    .metadata
                                    .generate_name
                                    .as_deref()
                                    .filter(|g| !g.is_empty())
                                    .map(|g| strings.intern(g)),
                                labels: w
                                    .metadata
                                    .labels
                                    .iter()
                                    .map(|(k, v)| (strings.intern(k), strings.intern(v)))
                                    .collect(),
                            };
                            let ips = crate::events::workload_ips(&w.spec);
                            self.name_workload(key, Some((ips.into(), Arc::new(id))));
                        }
                        _ => self.name_workload(key, None),
                    }
                }
                if kind == calico_api::Kind::HostEndpoint {
                    match r {
                        Some(Resource::HostEndpoint(h)) if !h.spec.expected_ips.is_empty() => {
                            let id = crate::flows::HostEndpointName {
                                name: h.metadata.name.clone(),
                                labels: h.metadata.labels.clone(),
                            };
                            self.hep_names.insert(
                                key.to_string(),
                                (h.spec.expected_ips.clone(), Arc::new(id)),
                            );
                        }
                        _ => {
                            self.hep_names.remove(key);
                        }
                    }
                }
                if matches!(
                    kind,
                    calico_api::Kind::NetworkSet | calico_api::Kind::GlobalNetworkSet
                ) {
                    match r {
                        Some(Resource::NetworkSet(set) | Resource::GlobalNetworkSet(set)) => {
                            let nets = set
                                .spec
                                .nets
                                .iter()
                                .map(|net| crate::flows::NetworkSetNet {
                                    net: net.net(),
                                    namespace: set
                                        .metadata
                                        .namespace
                                        .clone()
                                        .unwrap_or_else(|| "-".into()),
                                    name: set.metadata.name.clone(),
                                    labels: set.metadata.labels.clone(),
                                })
                                .collect();
                            self.netset_names.insert(key.to_string(), nets);
                        }
                        _ => {
                            self.netset_names.remove(key);
                        }
                    }
                }
                self.overlay.note(&self.node, kind, name, key, r);
            }
        }
    }

    /// Keeps track of staged policies; with flow logs on, the first one
    /// asks for every resource again (kept from then on), and the last
    /// one gone lets them go.
    fn note_staged(&mut self, key: &str, staged: bool) {
        if staged {
            self.staged.insert(key.to_string());
        } else {
            self.staged.remove(key);
        }
        if self.flow_names.is_none() || !self.pending_traces {
            return;
        }
        if !self.staged.is_empty() && self.pending_model.is_none() {
            self.keep_resources();
            self.want_resend = true;
        } else if self.staged.is_empty() && self.pending_model.is_some() {
            self.pending_model = None;
            self.resources_changed = true;
        }
    }

    /// Turns pending traces off (`flowLogsPolicyEvaluationMode: None`): the
    /// pending model, if the first sync started one, is let go.
    pub(super) fn no_pending_traces(&mut self) {
        self.pending_traces = false;
        if self.pending_model.take().is_some() {
            self.resources_changed = true;
        }
    }

    /// Starts the pending model: every resource read from now on is fed
    /// to it (the caller has them delivered again).
    pub(super) fn keep_resources(&mut self) {
        self.pending_model = Some(crate::pending::Model::new(&self.node));
        self.resources_changed = true;
    }

    /// Keeps a workload's name by its addresses (None: it is gone).
    fn name_workload(
        &mut self,
        key: &str,
        now: Option<(Box<[IpNet]>, Arc<crate::flows::Workload>)>,
    ) {
        let old = self.workload_ids.remove(key);
        if old.as_ref() == now.as_ref() {
            if let Some(o) = old {
                self.workload_ids.insert(key.to_string(), o);
            }
            return;
        }
        self.workload_names.update(|names| {
            if let Some((ips, id)) = &old {
                for ip in ips {
                    if names.get(&ip.addr()) == Some(id) {
                        names.remove(&ip.addr());
                    }
                }
            }
            if let Some((ips, id)) = &now {
                for ip in ips {
                    names.insert(ip.addr(), Arc::clone(id));
                }
            }
        });
        if let Some(n) = now {
            self.workload_ids.insert(key.to_string(), n);
        }
        self.strings.sweep();
    }

    /// The settings the FelixConfiguration resources give, under `o`.
    pub(super) fn config(&self, o: &Overrides) -> (Config, Vec<String>) {
        Config::resolve(
            o,
            self.felix_configs.get(&format!("node.{}", self.node)),
            self.felix_configs.get("default"),
        )
    }

    /// Local workloads, blackholes for this node's blocks, and the
    /// overlay's routes (which never replace a local one).
    fn desired_routes(&self, overlay: &BTreeMap<IpNet, Hop>) -> BTreeMap<IpNet, Target> {
        let mut want: BTreeMap<IpNet, Target> = self
            .blocks
            .iter()
            .map(|b| (*b, Target::Blackhole))
            .collect();
        for ep in self.state.endpoints.values() {
            for ip in &ep.ips {
                want.insert(*ip, Target::Device(ep.interface.clone()));
            }
        }
        for (dst, hop) in overlay {
            let target = crate::overlay::target(hop);
            want.entry(*dst).or_insert(target);
        }
        want
    }

    /// Brings the kernel to the desired state: the nft delta (or the whole
    /// table when a refresh is due or the kernel drifted), then routes.
    /// A refused ruleset leaves the previous one in place (atomic).
    pub(super) fn sync(&mut self, cfg: &Config, mtu_file: &std::path::Path) -> Result<()> {
        let due = self.last_route_sync.elapsed() >= cfg.route_refresh;
        if due {
            self.overlay.redetect_mtu();
        }
        let overlay = self
            .overlay
            .plan(&self.node, cfg, mtu_file, self.kernel.tunnels.as_deref());
        let sources = crate::overlay::vxlan_sources(&overlay, cfg.vxlan_port);
        let (masquerade, pools) = calico_calc::overlay::nat_outgoing(&self.overlay.inputs.pools);
        let nat = calico_dataplane::NatOutgoing {
            masquerade,
            pools,
            to: None,
            ports: None,
        };
        let mut rules = cfg.node_rules(sources, nat);
        if self
            .state
            .host_endpoints
            .values()
            .any(|h| h.interface.is_empty())
        {
            // Host endpoints known by their addresses alone: bound to the
            // interfaces holding them now (looked at again every sync).
            match self.kernel.tunnels.as_deref().map(|t| t.addresses()) {
                Some(Ok(a)) => rules.interface_addresses = a,
                Some(Err(e)) => warn!("listing interface addresses: {e}"),
                None => {}
            }
        }
        let table = calico_dataplane::build_with(&self.state, &rules);
        // A refresh: the kernel's table is read back and compared (see
        // `Firewall::update`). Nothing changed on our side since the last
        // apply: any difference found is drift.
        let unchanged_refresh = self.last_full.elapsed() >= cfg.nftables_refresh
            && self.applied.as_ref() == Some(&table);
        if self.last_full.elapsed() >= cfg.nftables_refresh {
            self.applied = None;
        }
        let start = Instant::now();
        match self.kernel.firewall.update(self.applied.as_ref(), &table) {
            Ok(Applied::Unchanged) => {}
            Ok(how) => {
                // The kernel's whole table was checked (read back) or loaded.
                if matches!(how, Applied::Full | Applied::Verified | Applied::Reconciled) {
                    self.last_full = Instant::now();
                }
                if unchanged_refresh && how == Applied::Reconciled {
                    warn!("nftables: table inet calico was changed behind this agent's back; repaired by the difference");
                    self.metrics.nft_repairs.inc();
                }
                debug!("nftables: {how:?} update in {:?}", start.elapsed());
                self.metrics
                    .apply_seconds
                    .observe(start.elapsed().as_secs_f64());
                self.applied = Some(table);
            }
            Err(e) => {
                self.metrics.apply_errors.inc();
                self.applied = None;
                self.report(false);
                return Err(e).context("applying the nftables ruleset");
            }
        }
        if let Some(names) = &self.flow_names {
            let mut fresh = self.flow_names_now(&rules);
            let mut held = names
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let staged = || !self.staged.is_empty();
            fresh.pending = if !self.resources_changed {
                held.pending.clone()
            } else if staged() {
                // Brought up to date by what changed (a cost only while
                // policies are staged).
                self.pending_model
                    .as_mut()
                    .and_then(crate::pending::Model::snapshot)
                    .map(|p| crate::pending::PendingRef(Arc::new(p)))
            } else {
                None
            };
            self.resources_changed = false;
            fresh.generation = held.generation;
            if *held != fresh {
                fresh.generation += 1;
                *held = fresh;
            }
        }
        self.overlay.sync_tunnels(
            self.kernel.tunnels.as_deref(),
            &overlay.tunnels,
            due,
            &self.metrics,
        );
        self.sync_routes(due, &overlay.routes);
        self.sync_rp_filter(cfg.source_spoofing, due);
        let m = &self.metrics;
        m.endpoints
            .set(i64::try_from(self.state.endpoints.len()).unwrap_or(i64::MAX));
        m.policies
            .set(i64::try_from(self.state.policies.len()).unwrap_or(i64::MAX));
        let members: usize = self
            .state
            .sets
            .values()
            .map(|s| match s {
                calico_calc::SetMembers::Nets(n) => n.len(),
                calico_calc::SetMembers::NamedPorts(p) => p.len(),
            })
            .sum();
        m.set_members
            .set(i64::try_from(members).unwrap_or(i64::MAX));
        self.report(true);
        Ok(())
    }

    /// The chains and addresses flow records are named by: every local
    /// endpoint's tiers, policy and profile chains, and every workload's
    /// addresses.
    pub(super) fn flow_names_now(
        &self,
        rules: &calico_dataplane::NodeRules,
    ) -> crate::flows::Names {
        let mut n = crate::flows::Names::default();
        // The walks the dataplane logs from, named as it names them.
        for ep in self.state.endpoints.values() {
            for (chain, ingress, tiers) in calico_dataplane::endpoint_walks(ep) {
                name_walk(&mut n, chain, ingress, tiers, &ep.profiles);
            }
        }
        for (chain, ingress, tiers, profiles) in
            calico_dataplane::host_endpoint_walks(&self.state, rules)
        {
            name_walk(&mut n, chain, ingress, tiers, profiles);
        }
        n.deferred = calico_dataplane::deferred_allows(&self.state);
        n.workloads = self.workload_names.clone();
        for (ips, id) in self.hep_names.values() {
            for ip in ips {
                // Two endpoints expecting one address: the first by key names it.
                n.host_endpoints
                    .entry(*ip)
                    .or_insert_with(|| Arc::clone(id));
            }
        }
        n.network_sets = self.netset_names.values().flatten().cloned().collect();
        n.network_sets
            .sort_by_key(|s| std::cmp::Reverse(s.net.prefix_len()));
        n
    }

    /// Strict reverse-path filtering on each workload interface, as Felix
    /// sets it (loose, 0, only where the workload may send from other
    /// prefixes; the nft source check is exact either way). An interface
    /// not there yet is tried again at the next refresh.
    fn sync_rp_filter(&mut self, spoofing: bool, due: bool) {
        if self.kernel.routes.is_none() {
            return;
        }
        if due {
            self.rp_filter.clear();
        }
        let want: BTreeMap<String, &str> = self
            .state
            .endpoints
            .values()
            .filter(|e| calico_api::interface_name(&e.interface).is_ok())
            .map(|e| {
                let strict = !spoofing || e.spoof.is_empty();
                (e.interface.clone(), if strict { "1" } else { "0" })
            })
            .collect();
        self.rp_filter.retain(|k, _| want.contains_key(k));
        for (iface, value) in want {
            if self.rp_filter.get(&iface).map(String::as_str) == Some(value) {
                continue;
            }
            let key = format!("net/ipv4/conf/{iface}/rp_filter");
            match self.kernel.sysctl.write(&key, value) {
                Ok(()) => {
                    self.rp_filter.insert(iface, value.to_string());
                }
                Err(e) => debug!("{e} (retried at the next refresh)"),
            }
        }
    }

    /// `due`: the periodic full route resync is due.
    fn sync_routes(&mut self, due: bool, overlay: &BTreeMap<IpNet, Hop>) {
        let Some(kernel) = &self.kernel.routes else {
            return;
        };
        let want = self.desired_routes(overlay);
        if !due && self.routes.as_ref() == Some(&want) {
            return;
        }
        match kernel.sync(&want) {
            Ok(failed) => {
                for (op, e) in failed {
                    match e {
                        // A workload whose interface is not there (yet): the
                        // next refresh retries.
                        RouteError::NoLink(_) => debug!("route {op:?} skipped: {e}"),
                        e => {
                            self.metrics.apply_errors.inc();
                            warn!("route {op:?} failed: {}", calico_datastore::Chain(&e));
                        }
                    }
                }
                self.routes = Some(want);
            }
            Err(e) => {
                self.metrics.apply_errors.inc();
                warn!("syncing routes: {}", calico_datastore::Chain(&e));
                self.routes = None;
            }
        }
        self.last_route_sync = Instant::now();
    }
}

/// Names an endpoint's walk for the flow collector: its tiers (for the
/// tier-end prefixes of `chain`), its policies' and profiles' chains.
fn name_walk(
    n: &mut crate::flows::Names,
    chain: String,
    ingress: bool,
    tiers: &[calico_calc::TierPolicies],
    profiles: &[String],
) {
    use calico_dataplane::{policy_chain, profile_chain};
    n.tiers
        .insert(chain, tiers.iter().map(|t| t.tier.clone()).collect());
    for t in tiers {
        for p in &t.policies {
            let name = match &p.namespace {
                Some(ns) => format!("{ns}/{}", p.name),
                None => p.name.clone(),
            };
            let chain = policy_chain(&calico_calc::policy_key(p), ingress);
            n.policies.insert(chain, (t.tier.clone(), name));
        }
    }
    for prof in profiles {
        n.profiles
            .insert(profile_chain(prof, ingress), prof.clone());
    }
}
