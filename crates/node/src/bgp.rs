//! `calico-node bgp`: registers the node's address (Calico's `IP`, `AS`),
//! then follows the datastore and keeps the speaker's peers and announced
//! prefixes as [`crate::bgp_plan`] says. Learned routes go to the kernel
//! (`proto bgp`); the speaker's state is served as JSON on a Unix socket
//! for `calicoctl node status`.

use crate::bgp_plan::{plan_with, secret_refs, Extras, Inputs, Plan};
use crate::events::{decode, own_block};
use anyhow::{Context, Result};
use calico_api::{Kind, Resource};
use calico_bgp::{KernelFib, Speaker, SpeakerConfig, Status};
use calico_client::keys::{parse_resource_key, RESOURCE_PREFIX};
use calico_datastore::Event;
use calico_net::IpNet;
use calico_syncer::{RecvError, SyncEvent, SyncStatus, SyncerType};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tracing::{info, warn};

pub const DEFAULT_STATUS_SOCKET: &str = "/var/run/calico/bgp.sock";

#[derive(clap::Args, Debug)]
pub struct Args {
    /// This node's name (Calico's NODENAME).
    #[arg(long, env = "NODENAME")]
    pub node: String,
    /// The node's IPv4 address with prefix length (`10.0.0.5/24`), or
    /// `autodetect` (first address on an interface that is not Calico's,
    /// loopback or a container bridge). Written to the Node resource.
    /// Without it the Node resource must already carry an address.
    #[arg(long, env = "IP")]
    pub ip: Option<String>,
    /// The node's IPv6 address with prefix length (`fd00::5/64`), for IPv6
    /// BGP sessions and routes (Calico's `IP6`). Written to the Node resource.
    #[arg(long, env = "IP6")]
    pub ip6: Option<String>,
    /// The node's AS number, written to the Node resource.
    #[arg(long = "as", env = "AS")]
    pub asn: Option<u32>,
    /// Where `calicoctl node status` finds the speaker.
    #[arg(long, env = "CALICO_BGP_STATUS_SOCKET", default_value = DEFAULT_STATUS_SOCKET)]
    pub status_socket: String,
    /// Seconds peers keep our routes while this node restarts.
    #[arg(long, env = "CALICO_BGP_RESTART_TIME", default_value_t = 120)]
    pub restart_time: u16,
    /// Hold time offered to peers (keepalives every third of it).
    #[arg(long, env = "CALICO_BGP_HOLD_TIME", default_value_t = 90)]
    pub hold_time: u16,
    /// Seconds between connection attempts to a peer that is down.
    #[arg(long, env = "CALICO_BGP_CONNECT_RETRY", default_value_t = 5)]
    pub connect_retry: u64,
    /// Where BGP passwords' secrets are, as Kubernetes mounts a Secret:
    /// `<dir>/<secret name>/<key>` holds the value.
    #[arg(
        long,
        env = "CALICO_SECRETS_DIR",
        default_value = "/etc/calico/secrets"
    )]
    pub secrets_dir: std::path::PathBuf,
    /// Prefixes accepted from one peer at most (0: no limit); past it the
    /// session ends with Cease "maximum number of prefixes reached".
    #[arg(long, env = "CALICO_BGP_MAX_PREFIXES", default_value_t = 1_000_000)]
    pub max_prefixes: usize,
    #[command(flatten)]
    pub typha: crate::sync::TyphaArgs,
}

/// The secrets the passwords name, read from `dir`. A name or key that is
/// not a Kubernetes one is never looked up (no path outside `dir`).
fn read_secrets(
    dir: &std::path::Path,
    refs: BTreeSet<(String, String)>,
) -> BTreeMap<(String, String), String> {
    let key_ok = |k: &str| {
        !k.is_empty()
            && k.len() <= 253
            && k != "."
            && k != ".."
            && k.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    };
    refs.into_iter()
        .filter(|(name, key)| calico_api::dns_subdomain(name).is_ok() && key_ok(key))
        .filter_map(|(name, key)| {
            let value = std::fs::read_to_string(dir.join(&name).join(&key)).ok()?;
            Some(((name, key), value))
        })
        .collect()
}

/// The datastore as BGP sees it, kept up to date from events.
#[derive(Default)]
struct Tracker {
    node: String,
    inputs: Inputs,
    /// Workload endpoint key → its addresses (this node's only).
    workloads: BTreeMap<(Option<String>, String), Vec<IpNet>>,
}

impl Tracker {
    fn take(&mut self, ev: &Event) {
        let key = ev.key();
        if let Some((block, confirmed)) = own_block(&self.node, ev) {
            if confirmed {
                self.inputs.blocks.insert(block);
            } else {
                self.inputs.blocks.remove(&block);
            }
            return;
        }
        if !key.starts_with(RESOURCE_PREFIX) {
            return;
        }
        let Some((kind, namespace, name)) = parse_resource_key(key) else {
            return;
        };
        let resource = match ev {
            Event::Put(kv) => match decode(&kv.value) {
                Ok(r) => Some(r),
                Err(e) => {
                    warn!("ignoring unreadable {key}: {e}");
                    return;
                }
            },
            Event::Delete { .. } => None,
        };
        let i = &mut self.inputs;
        match (kind, resource) {
            (Kind::Node, Some(Resource::Node(n))) => {
                i.nodes.insert(name, (n.metadata.labels, n.spec));
            }
            (Kind::Node, _) => {
                i.nodes.remove(&name);
            }
            (Kind::BGPConfiguration, r) if name == "default" => {
                i.config = match r {
                    Some(Resource::BGPConfiguration(c)) => Some(c.spec),
                    _ => None,
                };
            }
            (Kind::BGPPeer, Some(Resource::BGPPeer(p))) => {
                i.peers.insert(name, p.spec);
            }
            (Kind::BGPPeer, _) => {
                i.peers.remove(&name);
            }
            (Kind::IPPool, Some(Resource::IPPool(p))) => {
                i.pools.insert(name, p.spec);
            }
            (Kind::IPPool, _) => {
                i.pools.remove(&name);
            }
            (Kind::WorkloadEndpoint, r) => {
                let k = (namespace, name);
                match r {
                    Some(Resource::WorkloadEndpoint(w)) if w.spec.node == self.node => {
                        self.workloads
                            .insert(k, crate::events::workload_ips(&w.spec));
                    }
                    _ => {
                        self.workloads.remove(&k);
                    }
                }
                i.workload_ips = self.workloads.values().flatten().copied().collect();
            }
            _ => {}
        }
    }
}

/// The running speaker and what it was started with.
struct Running {
    speaker: Speaker,
    identity: crate::bgp_plan::Identity,
}

fn start(args: &Args, p: &Plan, shown: &Arc<Mutex<Option<Arc<Mutex<Status>>>>>) -> Result<Running> {
    let id = &p.identity;
    let mut cfg = SpeakerConfig::new(id.router_id, id.asn);
    cfg.cluster_id = id.cluster_id;
    // Dual-stack: IPv4 peers arrive as v4-mapped addresses.
    cfg.listen = Some(SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, id.port)));
    cfg.hold_time = args.hold_time;
    cfg.restart_time = args.restart_time;
    cfg.connect_retry = Duration::from_secs(args.connect_retry.max(1));
    let fib = KernelFib::new().context("opening netlink for BGP routes")?;
    let speaker = Speaker::start(cfg, Box::new(fib))
        .with_context(|| format!("starting the BGP speaker on port {}", id.port))?;
    *shown
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(speaker.status_source());
    info!(
        "BGP speaker up: router id {}, AS {}{}",
        id.router_id,
        id.asn,
        id.cluster_id
            .map(|c| format!(", route reflector for cluster {c}"))
            .unwrap_or_default()
    );
    Ok(Running {
        speaker,
        identity: id.clone(),
    })
}

/// Serves the speaker's status as one JSON document per connection.
fn serve_status(
    path: &str,
    node: String,
    shown: Arc<Mutex<Option<Arc<Mutex<Status>>>>>,
) -> Result<()> {
    if let Some(dir) = std::path::Path::new(path).parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let _ = std::fs::remove_file(path);
    let listener = std::os::unix::net::UnixListener::bind(path)
        .with_context(|| format!("listening on {path}"))?;
    std::thread::Builder::new()
        .name("bgp-status".into())
        .spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                // A reader that never reads holds this thread for a second at most.
                let _ = conn.set_write_timeout(Some(std::time::Duration::from_secs(1)));
                let status = shown
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .as_ref()
                    .map(|s| s.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone());
                let body = serde_json::json!({"node": node, "running": status.is_some(), "status": status});
                let _ = conn.write_all(body.to_string().as_bytes());
            }
        })?;
    Ok(())
}

/// Blocks SIGTERM and SIGINT in every thread started from here on, and
/// returns a flag a waiting thread raises when one arrives.
fn stop_signal() -> Result<Arc<std::sync::atomic::AtomicBool>> {
    use nix::sys::signal::{SigSet, Signal};
    let mut set = SigSet::empty();
    set.add(Signal::SIGTERM);
    set.add(Signal::SIGINT);
    set.thread_block().context("blocking SIGTERM")?;
    let flag = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let raised = Arc::clone(&flag);
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if set.wait().is_ok() {
                raised.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        })?;
    Ok(flag)
}

pub fn run(args: &Args) -> Result<()> {
    let stopping = stop_signal()?;
    crate::stderr_logging();
    let (store, client) = crate::datastore()?;
    if let Some(ip) = &args.ip {
        let address = crate::register::address(ip)?;
        crate::register::register(&client, &args.node, address, args.asn)?;
    }
    if let Some(ip) = args.ip6.as_deref().filter(|i| *i != "none") {
        let address = crate::register::address6(ip)?;
        crate::register::register(&client, &args.node, address, args.asn)?;
    }
    let shown: Arc<Mutex<Option<Arc<Mutex<Status>>>>> = Arc::new(Mutex::new(None));
    serve_status(&args.status_socket, args.node.clone(), Arc::clone(&shown))?;

    let syncer = crate::sync::source(&args.node, SyncerType::Bgp, &store, &args.typha)?;
    let mut tracker = Tracker {
        node: args.node.clone(),
        ..Tracker::default()
    };
    // The speaker starts once the syncer is first in sync, and follows
    // every change after (a break in the syncer's watches only delays
    // changes: it delivers the differences when it is back).
    let mut in_sync = false;
    let mut running: Option<Running> = None;
    loop {
        if stopping.load(std::sync::atomic::Ordering::SeqCst) {
            // Stopping for good: peers are told (Cease) and drop our
            // routes; the routes we learned leave the kernel.
            info!("stopping: closing BGP sessions");
            if let Some(r) = running.take() {
                r.speaker.stop();
            }
            let _ = std::fs::remove_file(&args.status_socket);
            return Ok(());
        }
        let first = match syncer.recv_timeout(Duration::from_millis(500)) {
            Ok(ev) => ev,
            Err(RecvError::Timeout) => continue,
            Err(RecvError::Closed) => anyhow::bail!("the syncer stopped"),
        };
        let mut changed = false;
        let mut next = Some(first);
        while let Some(ev) = next {
            match ev {
                SyncEvent::Updates(evs) => {
                    changed = true;
                    for ev in &evs {
                        tracker.take(ev);
                    }
                }
                SyncEvent::Status(SyncStatus::InSync) => {
                    changed |= !in_sync;
                    in_sync = true;
                }
                SyncEvent::Status(_) => {}
                SyncEvent::Error(e) => warn!("{e}"),
            }
            next = syncer.try_recv();
        }
        if in_sync && changed {
            running = reconcile(args, &tracker, running, &shown)?;
        }
    }
}

/// Brings the speaker in line with the plan: started, restarted when its
/// identity changed (gracefully: peers keep our routes meanwhile), or
/// given the new peers and prefixes.
fn reconcile(
    args: &Args,
    t: &Tracker,
    running: Option<Running>,
    shown: &Arc<Mutex<Option<Arc<Mutex<Status>>>>>,
) -> Result<Option<Running>> {
    let extras = Extras {
        secrets: read_secrets(&args.secrets_dir, secret_refs(&t.inputs)),
        max_prefixes: (args.max_prefixes > 0).then_some(args.max_prefixes),
    };
    let p = match plan_with(&t.inputs, &args.node, &extras) {
        Ok(p) => p,
        Err(why) => {
            if let Some(r) = running {
                warn!("BGP stopped: {why}");
                r.speaker.stop();
                *shown
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
            } else {
                warn!("BGP not started: {why}");
            }
            return Ok(None);
        }
    };
    for why in &p.problems {
        warn!("BGP: {why}");
    }
    let r = match running {
        Some(r) if r.identity == p.identity => r,
        Some(r) => {
            info!("BGP identity changed; restarting the speaker");
            r.speaker.stop_for_restart();
            start(args, &p, shown)?
        }
        None => start(args, &p, shown)?,
    };
    // Blocks of VXLAN pools are routed by the node agent (through the
    // tunnel, or natively for CrossSubnet neighbours): still announced,
    // never installed from BGP, as Calico's BIRD filters them.
    r.speaker
        .set_kernel_exclusions(calico_calc::overlay::vxlan_pool_nets(&t.inputs.pools));
    r.speaker.set_peers(p.peers.clone());
    let local: BTreeSet<IpNet> = p.local.clone();
    r.speaker.set_local(local);
    Ok(Some(r))
}
