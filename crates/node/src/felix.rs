//! The policy and route agent: list, compute, apply; then watch and apply
//! changes, with a periodic full rewrite that repairs any drift.

use crate::config::{Config, Overrides};
use crate::events::{block_affinity, decode};
use crate::overlay::{OverlayAgent, TunnelAddrs};
use crate::status::{self, Metrics, Status};
use anyhow::{Context, Result};
use calico_api::{FelixConfigurationSpec, Resource};
use calico_backend::{open_store, DatastoreConfig};
use calico_calc::overlay::Hop;
use calico_calc::{CalcGraph, DesiredState, Update};
use calico_client::keys::{parse_resource_key, RESOURCE_PREFIX};
use calico_client::{Client, SystemClock};
use calico_dataplane::{Applied, Nft, Table};
use calico_datastore::{Event, Store, WatchError};
use calico_net::IpNet;
use calico_routes::{Kernel, RouteError, Target, PROTO_AGENT};
use calico_tunnel::Tunnels;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};

/// Everything the agent reads lives under this prefix: resources and the
/// node's IPAM block affinities.
const WATCH_PREFIX: &str = "/calico/";

#[derive(clap::Args, Debug)]
pub struct Args {
    /// This node's name (Calico's NODENAME).
    #[arg(long, env = "NODENAME")]
    pub node: String,
    /// Apply the current state once and exit.
    #[arg(long)]
    pub once: bool,
    /// This node's address (`addr/len` or `autodetect`), written to its
    /// Node resource at start, for the overlay (as Calico's `IP`; the BGP
    /// agent does the same). Without it the Node must carry one already.
    #[arg(long, env = "IP")]
    pub ip: Option<String>,
    /// Where the MTU workloads should use is written for the CNI plugin.
    #[arg(long, env = "CALICO_MTU_FILE", default_value = "/var/lib/calico/mtu")]
    pub mtu_file: std::path::PathBuf,
    #[command(flatten)]
    pub overrides: Overrides,
}

struct Agent {
    node: String,
    graph: CalcGraph,
    state: DesiredState,
    /// The table the kernel holds (None: unknown, load it whole).
    applied: Option<Table>,
    last_full: Instant,
    /// This node's confirmed block affinities: blackhole routes.
    blocks: BTreeSet<IpNet>,
    /// The routes last synced (None: sync them).
    routes: Option<BTreeMap<IpNet, Target>>,
    last_route_sync: Instant,
    felix_configs: BTreeMap<String, FelixConfigurationSpec>,
    /// The VXLAN overlay: its inputs, devices and MTU.
    overlay: OverlayAgent,
    /// The newest datastore revision fed to the graph.
    revision: i64,
    /// Resource keys skipped (a value that does not decode) or not enforced
    /// (this node's host endpoints), with the reason.
    skipped: BTreeMap<String, String>,
    /// The rejected endpoints last reported.
    reported: BTreeMap<calico_calc::EndpointId, String>,
    /// rp_filter last written per workload interface.
    rp_filter: BTreeMap<String, String>,
    nft: Nft,
    kernel: Option<Kernel>,
    status: Arc<Mutex<Status>>,
    metrics: Arc<Metrics>,
}

impl Agent {
    fn new(
        node: &str,
        route_sync: bool,
        status: Arc<Mutex<Status>>,
        metrics: Arc<Metrics>,
    ) -> Result<Self> {
        let (kernel, tunnels) = if route_sync {
            (
                Some(Kernel::new(PROTO_AGENT).context("opening netlink for routes")?),
                Some(Tunnels::new().context("opening netlink for tunnel devices")?),
            )
        } else {
            (None, None)
        };
        Ok(Agent {
            node: node.to_string(),
            graph: CalcGraph::new(node),
            state: DesiredState::default(),
            applied: None,
            last_full: Instant::now(),
            blocks: BTreeSet::new(),
            routes: None,
            last_route_sync: Instant::now(),
            felix_configs: BTreeMap::new(),
            overlay: OverlayAgent::new(tunnels),
            revision: 0,
            skipped: BTreeMap::new(),
            reported: BTreeMap::new(),
            rp_filter: BTreeMap::new(),
            nft: Nft::default(),
            kernel,
            status,
            metrics,
        })
    }

    fn report(&self, in_sync: bool) {
        let mut s = self
            .status
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        s.in_sync = in_sync;
        if in_sync {
            s.applied_revision = self.revision;
        }
    }

    fn feed(&mut self, updates: Vec<Update>) -> Result<()> {
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
        let rejected: BTreeMap<String, String> = self
            .reported
            .iter()
            .map(|(id, why)| (format!("{}/{}", id.namespace, id.name), why.clone()))
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
    fn take(&mut self, ev: &Event) -> Option<Update> {
        let key = ev.key();
        if key.starts_with(RESOURCE_PREFIX) {
            let update = match ev {
                Event::Put(kv) => match decode(&kv.value) {
                    Ok(r) => {
                        self.skipped.remove(key);
                        self.note(key, Some(&r));
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
            // Host endpoints have no dataplane yet: one for this node is
            // reported (never silently taken as protecting the host).
            (calico_api::Kind::HostEndpoint, r) => match r {
                Some(Resource::HostEndpoint(h)) if h.spec.node == self.node => {
                    warn!("{key}: host endpoints are not enforced yet");
                    self.skipped.insert(
                            key.to_string(),
                            "host endpoints are not enforced yet: this host's own traffic is not policed".into(),
                        );
                }
                _ => {
                    self.skipped.remove(key);
                }
            },
            (kind, r) => self.overlay.note(&self.node, kind, name, key, r),
        }
    }

    /// The settings the FelixConfiguration resources give, under `o`.
    fn config(&self, o: &Overrides) -> (Config, Vec<String>) {
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
    fn sync(&mut self, cfg: &Config, mtu_file: &std::path::Path) -> Result<()> {
        let due = self.last_route_sync.elapsed() >= cfg.route_refresh;
        if due {
            self.overlay.redetect_mtu();
        }
        let overlay = self.overlay.plan(&self.node, cfg, mtu_file);
        let sources = crate::overlay::vxlan_sources(&overlay, cfg.vxlan_port);
        let table = calico_dataplane::build_with(&self.state, &cfg.node_rules(sources));
        if self.last_full.elapsed() >= cfg.nftables_refresh {
            self.applied = None;
        }
        let start = Instant::now();
        match self.nft.update(self.applied.as_ref(), &table) {
            Ok(Applied::Unchanged) => {}
            Ok(how) => {
                if how == Applied::Full {
                    self.last_full = Instant::now();
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
        self.overlay
            .sync_tunnels(&overlay.tunnels, due, &self.metrics);
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

    /// Strict reverse-path filtering on each workload interface, as Felix
    /// sets it (loose, 0, only where the workload may send from other
    /// prefixes; the nft source check is exact either way). An interface
    /// not there yet is tried again at the next refresh.
    fn sync_rp_filter(&mut self, spoofing: bool, due: bool) {
        if self.kernel.is_none() {
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
            let path = format!("/proc/sys/net/ipv4/conf/{iface}/rp_filter");
            match std::fs::write(&path, value) {
                Ok(()) => {
                    self.rp_filter.insert(iface, value.to_string());
                }
                Err(e) => debug!("{path}: {e} (retried at the next refresh)"),
            }
        }
    }

    /// `due`: the periodic full route resync is due.
    fn sync_routes(&mut self, due: bool, overlay: &BTreeMap<IpNet, Hop>) {
        let Some(kernel) = &self.kernel else { return };
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
                            warn!("route {op:?} failed: {e}");
                        }
                    }
                }
                self.routes = Some(want);
            }
            Err(e) => {
                self.metrics.apply_errors.inc();
                warn!("syncing routes: {e}");
                self.routes = None;
            }
        }
        self.last_route_sync = Instant::now();
    }
}

/// Lists everything and builds a fresh agent from it.
fn resync(
    store: &dyn Store,
    args: &Args,
    route_sync: bool,
    status: &Arc<Mutex<Status>>,
    metrics: &Arc<Metrics>,
) -> Result<Agent> {
    metrics.resyncs.inc();
    let listing = store.list(WATCH_PREFIX).context("listing the datastore")?;
    let mut agent = Agent::new(
        &args.node,
        route_sync,
        Arc::clone(status),
        Arc::clone(metrics),
    )?;
    agent.revision = listing.revision;
    let updates: Vec<Update> = listing
        .items
        .into_iter()
        .filter_map(|kv| agent.take(&Event::Put(kv)))
        .collect();
    agent.feed(updates)?;
    Ok(agent)
}

/// Starts over in a fresh process image with the same arguments, as Felix
/// restarts when its configuration changes. If that fails the process
/// exits, for its supervisor to start it again.
fn restart() -> ! {
    use std::os::unix::process::CommandExt;
    info!("FelixConfiguration changed; restarting");
    let mut argv = std::env::args_os();
    let _ = argv.next();
    let err = std::process::Command::new("/proc/self/exe")
        .args(argv)
        .exec();
    eprintln!("calico-node: cannot restart after a configuration change: {err}");
    std::process::exit(1)
}

fn init_logging(level: tracing::Level) {
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(level)
        .with_target(false)
        .try_init();
}

pub fn run(args: &Args) -> Result<()> {
    let ds = DatastoreConfig::from_env()?;
    let store = open_store(&ds).with_context(|| format!("opening the {}", ds.describe()))?;
    let status = Arc::new(Mutex::new(Status {
        node: args.node.clone(),
        ..Default::default()
    }));
    let metrics = Arc::new(Metrics::new());
    let mut addrs = TunnelAddrs::new(
        calico_ipam::Ipam::new(Arc::clone(&store), Arc::new(SystemClock)),
        Client::new(Arc::clone(&store), Arc::new(SystemClock)),
    );
    if let Some(ip) = &args.ip {
        let address = crate::register::address(ip)?;
        if let Err(e) = crate::register::register(&addrs.client, &args.node, address, None) {
            eprintln!("calico-node: {e:#}; the BGP agent or a restart will register the node");
        }
    }
    // Tunnel addresses first, so the listing below already shows them.
    if let Err(e) = crate::tunnel_addr::reconcile(&addrs.ipam, &addrs.client, &args.node) {
        eprintln!("calico-node: tunnel addresses: {e:#}; will retry");
    }

    // The settings come partly from the datastore, so read it first; a
    // datastore that cannot be read yet is retried, not fatal.
    let mut backoff = Duration::from_millis(200);
    let route_sync_env = args.overrides.route_sync_disabled != Some(true);
    let mut agent = loop {
        match resync(store.as_ref(), args, route_sync_env, &status, &metrics) {
            Ok(a) => break a,
            Err(e) if !args.once => {
                eprintln!("calico-node: {e:#}; retrying in {backoff:?}");
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
            Err(e) => return Err(e),
        }
    };
    let (cfg, ignored) = agent.config(&args.overrides);
    init_logging(cfg.level());
    if !ignored.is_empty() {
        warn!(
            "FelixConfiguration fields not implemented by calico-rs, ignored: {}",
            ignored.join(", ")
        );
    }
    if cfg.route_sync_disabled {
        agent.kernel = None;
        agent.overlay.tunnels = None;
    }
    if !args.once {
        if cfg.health_enabled {
            let addr = cfg.health_addr();
            status::serve(&addr, Arc::clone(&status), Arc::clone(&metrics))
                .with_context(|| format!("serving health on {addr}"))?;
        }
        if cfg.metrics_enabled {
            let addr = cfg.metrics_addr();
            status::serve(&addr, Arc::clone(&status), Arc::clone(&metrics))
                .with_context(|| format!("serving metrics on {addr}"))?;
        }
    }
    // The first apply: retried with back-off while the node stays unready.
    backoff = Duration::from_millis(200);
    while let Err(e) = agent.sync(&cfg, &args.mtu_file) {
        if args.once {
            return Err(e);
        }
        warn!("{e:#}; retrying in {backoff:?}");
        std::thread::sleep(backoff);
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }
    info!(
        "in sync at revision {}: {} endpoints, {} policies",
        agent.revision,
        agent.state.endpoints.len(),
        agent.state.policies.len()
    );
    if args.once {
        return Ok(());
    }
    // Follow the datastore. Any break in the watch (compaction, the
    // datastore restarting, a lost connection) means listing again and
    // rebuilding from scratch, retried with back-off; the dataplane keeps
    // what it has meanwhile.
    loop {
        if let Err(e) = follow(store.as_ref(), &mut agent, &mut addrs, args, &cfg) {
            warn!("{e:#}; resyncing");
            agent.report(false);
            let mut backoff = Duration::from_millis(200);
            agent = loop {
                match resync(
                    store.as_ref(),
                    args,
                    !cfg.route_sync_disabled,
                    &status,
                    &metrics,
                ) {
                    Ok(mut fresh) => {
                        // The kernel still holds what the old agent applied.
                        fresh.applied = agent.applied.take();
                        break fresh;
                    }
                    Err(e) => {
                        warn!("{e:#}; retrying in {backoff:?}");
                        std::thread::sleep(backoff);
                        backoff = (backoff * 2).min(Duration::from_secs(10));
                    }
                }
            };
            if agent.config(&args.overrides).0 != cfg {
                restart();
            }
            if let Err(e) = agent.sync(&cfg, &args.mtu_file) {
                warn!("{e:#}; will retry");
            }
        }
    }
}

/// Watches from the agent's revision and applies what arrives, until the
/// watch breaks (the error says why). Returns only with an error.
fn follow(
    store: &dyn Store,
    agent: &mut Agent,
    addrs: &mut TunnelAddrs,
    args: &Args,
    cfg: &Config,
) -> Result<()> {
    let watch = store
        .watch(WATCH_PREFIX, agent.revision + 1)
        .context("watching the datastore")?;
    let tick = cfg
        .nftables_refresh
        .min(cfg.route_refresh)
        .min(Duration::from_secs(10));
    loop {
        let first = match watch.recv_timeout(tick) {
            Ok(ev) => ev,
            Err(WatchError::Timeout) => {
                addrs.check(&agent.node, &agent.overlay);
                if let Err(e) = agent.sync(cfg, &args.mtu_file) {
                    warn!("{e:#}; will retry");
                }
                continue;
            }
            Err(e) => return Err(anyhow::Error::new(e).context("watching the datastore")),
        };
        // Take whatever else already arrived too, then compute and apply once.
        let mut updates = Vec::new();
        let mut broken = None;
        let mut next = Some(first);
        while let Some(ev) = next {
            agent.revision = ev.revision();
            updates.extend(agent.take(&ev));
            next = match watch.try_recv() {
                Some(Ok(ev)) => Some(ev),
                Some(Err(e)) => {
                    broken = Some(e);
                    None
                }
                None => None,
            };
        }
        agent.feed(updates)?;
        addrs.check(&agent.node, &agent.overlay);
        if agent.config(&args.overrides).0 != *cfg {
            restart();
        }
        if let Err(e) = agent.sync(cfg, &args.mtu_file) {
            warn!("{e:#}; will retry");
        }
        if let Some(e) = broken {
            return Err(anyhow::Error::new(e).context("watching the datastore"));
        }
    }
}
