//! The policy and route agent: list, compute, apply; then watch and apply
//! changes, with a periodic refresh (the kernel's table read back, the
//! difference sent; routes resynced) that repairs any drift.

mod agent;
#[cfg(test)]
mod tests;

use crate::config::{Config, Overrides};
use crate::overlay::TunnelAddrs;
use crate::status::{self, Metrics, Status};
use agent::{Agent, KernelAccess};
use anyhow::{Context, Result};
use calico_backend::{open_store, DatastoreConfig};
use calico_calc::Update;
use calico_client::{Client, SystemClock};
use calico_datastore::{Event, Store, WatchError};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tracing::{info, warn};

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

/// Lists everything and rebuilds the agent's view of the datastore from
/// it; the kernel side stays (and the table it holds is the base of the
/// next delta). When listing fails the agent is left as it was.
fn resync(store: &dyn Store, agent: &mut Agent, metrics: &Metrics) -> Result<()> {
    metrics.resyncs.inc();
    let listing = store.list(WATCH_PREFIX).context("listing the datastore")?;
    agent.reset();
    agent.revision = listing.revision;
    let updates: Vec<Update> = listing
        .items
        .into_iter()
        .filter_map(|kv| agent.take(&Event::Put(kv)))
        .collect();
    agent.feed(updates)
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
    let mut agent = Agent::new(
        &args.node,
        KernelAccess::real(route_sync_env)?,
        Arc::clone(&status),
        Arc::clone(&metrics),
    );
    loop {
        match resync(store.as_ref(), &mut agent, &metrics) {
            Ok(()) => break,
            Err(e) if !args.once => {
                eprintln!("calico-node: {e:#}; retrying in {backoff:?}");
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
            Err(e) => return Err(e),
        }
    }
    let (cfg, ignored) = agent.config(&args.overrides);
    init_logging(cfg.level());
    if !ignored.is_empty() {
        warn!(
            "FelixConfiguration fields not implemented by calico-rs, ignored: {}",
            ignored.join(", ")
        );
    }
    if cfg.route_sync_disabled {
        agent.kernel.routes = None;
        agent.kernel.tunnels = None;
    }
    if let (Some(f), false) = (&cfg.flow_logs, args.once) {
        let names = Arc::new(Mutex::new(crate::flows::Names::default()));
        crate::flows::start(
            args.node.clone(),
            f,
            Arc::clone(&names),
            Arc::clone(&metrics),
        )
        .context("starting flow logs")?;
        agent.flow_names = Some(names);
        // Listed again now that the resources are kept (the pending,
        // staged model is built from them).
        resync(store.as_ref(), &mut agent, &metrics).context("listing the datastore again")?;
        info!(
            "flow logs every {:?}: file {}, flow service {}",
            f.flush,
            f.directory
                .as_ref()
                .map_or("off".into(), |d| d.join("flows.log").display().to_string()),
            f.server.as_deref().unwrap_or("off")
        );
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
            while let Err(e) = resync(store.as_ref(), &mut agent, &metrics) {
                warn!("{e:#}; retrying in {backoff:?}");
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
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
