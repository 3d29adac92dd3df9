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
use calico_syncer::{RecvError, SyncEvent, SyncStatus, Syncer, SyncerType};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tracing::{info, warn};

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
    #[command(flatten)]
    pub typha: crate::sync::TyphaArgs,
}

/// Feeds one batch of changes to the agent.
fn take_all(agent: &mut Agent, events: &[calico_datastore::Event]) -> Vec<Update> {
    events
        .iter()
        .filter_map(|ev| {
            agent.revision = agent.revision.max(ev.revision());
            agent.take(ev)
        })
        .collect()
}

/// Takes what the syncer delivers until it is in sync. `once`: a
/// datastore that cannot be read is an error, not a retry.
fn until_in_sync(syncer: &Syncer, agent: &mut Agent, once: bool, logging: bool) -> Result<()> {
    loop {
        match syncer.recv_timeout(Duration::from_secs(1)) {
            Ok(SyncEvent::Updates(evs)) => {
                let updates = take_all(agent, &evs);
                agent.feed(updates)?;
            }
            Ok(SyncEvent::Status(SyncStatus::InSync)) if agent.want_resend => {
                // Staged policies came with flow logs on: everything
                // again, kept this time.
                agent.want_resend = false;
                syncer.resend();
            }
            Ok(SyncEvent::Status(SyncStatus::InSync)) => {
                agent.datastore_in_sync = true;
                return Ok(());
            }
            Ok(SyncEvent::Status(_)) | Err(RecvError::Timeout) => {}
            Ok(SyncEvent::Error(e)) if once => anyhow::bail!("{e}"),
            Ok(SyncEvent::Error(e)) if logging => warn!("{e}"),
            Ok(SyncEvent::Error(e)) => eprintln!("calico-node: {e}"),
            Err(RecvError::Closed) => anyhow::bail!("the syncer stopped"),
        }
    }
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
    let syncer = crate::sync::source(&args.node, SyncerType::Felix, &store, &args.typha)?;
    let route_sync_env = args.overrides.route_sync_disabled != Some(true);
    let mut agent = Agent::new(
        &args.node,
        KernelAccess::real(route_sync_env)?,
        Arc::clone(&status),
        Arc::clone(&metrics),
    );
    // Flow logs turned on by the environment are known before anything is
    // read, so staged policies in the first delivery are noticed as it
    // comes (resources are kept, and delivered again, only if there are
    // any: at 50,000 endpoints that is most of a start).
    if let (Some(f), false) = (
        Config::resolve(&args.overrides, None, None).0.flow_logs,
        args.once,
    ) {
        agent.flow_names = Some(Arc::new(Mutex::new(crate::flows::Names::default())));
        agent.pending_traces = f.pending_traces;
    }
    until_in_sync(&syncer, &mut agent, args.once, false)?;
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
        let kept = agent.flow_names.is_some();
        let names = agent
            .flow_names
            .get_or_insert_with(|| Arc::new(Mutex::new(crate::flows::Names::default())))
            .clone();
        crate::flows::start(args.node.clone(), f, names, Arc::clone(&metrics))
            .context("starting flow logs")?;
        if !f.pending_traces {
            agent.no_pending_traces();
        }
        if !kept && !agent.staged.is_empty() && f.pending_traces {
            // Turned on by a FelixConfiguration while policies are staged:
            // every resource again, kept for the pending model.
            agent.keep_resources();
            syncer.resend();
            until_in_sync(&syncer, &mut agent, args.once, true)
                .context("reading the datastore again")?;
        }
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
    let mut backoff = Duration::from_millis(200);
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
    // Follow the datastore. A break in the syncer's watches (compaction,
    // the datastore or the fan-out restarting, a lost connection) is its
    // business: it lists again and delivers only the differences, while
    // the dataplane keeps what it has.
    follow(&syncer, &mut agent, &mut addrs, args, &cfg)
}

/// Applies what the syncer delivers, and syncs the kernel periodically;
/// returns only when the syncer stops.
fn follow(
    syncer: &Syncer,
    agent: &mut Agent,
    addrs: &mut TunnelAddrs,
    args: &Args,
    cfg: &Config,
) -> Result<()> {
    let tick = cfg
        .nftables_refresh
        .min(cfg.route_refresh)
        .min(Duration::from_secs(10));
    let mut resending = false;
    loop {
        let first = match syncer.recv_timeout(tick) {
            Ok(ev) => ev,
            Err(RecvError::Timeout) => {
                addrs.check(&agent.node, &agent.overlay);
                if let Err(e) = agent.sync(cfg, &args.mtu_file) {
                    warn!("{e:#}; will retry");
                }
                continue;
            }
            Err(RecvError::Closed) => anyhow::bail!("the syncer stopped"),
        };
        // Take whatever else already arrived too, then compute and apply once.
        let mut updates = Vec::new();
        let mut next = Some(first);
        while let Some(ev) = next {
            match ev {
                SyncEvent::Updates(evs) => updates.extend(take_all(agent, &evs)),
                SyncEvent::Status(SyncStatus::InSync) => {
                    if !agent.datastore_in_sync && !resending {
                        info!("datastore in sync again");
                    }
                    agent.datastore_in_sync = true;
                    resending = false;
                }
                SyncEvent::Status(s) => {
                    if agent.datastore_in_sync && !resending {
                        warn!("datastore: {s:?}; enforcing what is known meanwhile");
                        agent.metrics.resyncs.inc();
                    }
                    agent.datastore_in_sync = false;
                    agent.report(false);
                }
                SyncEvent::Error(e) => warn!("{e}"),
            }
            next = syncer.try_recv();
        }
        agent.feed(updates)?;
        if agent.want_resend {
            // The first staged policy (flow logs on): every resource
            // again, to be kept for the pending model.
            info!("staged policies: reading every resource again for pending traces");
            agent.want_resend = false;
            resending = true;
            syncer.resend();
        }
        addrs.check(&agent.node, &agent.overlay);
        if agent.config(&args.overrides).0 != *cfg {
            restart();
        }
        if let Err(e) = agent.sync(cfg, &args.mtu_file) {
            warn!("{e:#}; will retry");
        }
    }
}
