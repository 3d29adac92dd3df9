//! The policy agent loop: list, compute, apply; then watch and apply changes.

use crate::status::{self, Metrics, Status};
use anyhow::{anyhow, Context, Result};
use calico_calc::{CalcGraph, DesiredState, Update};
use calico_client::keys::{parse_resource_key, RESOURCE_PREFIX};
use calico_client::{open_store, DatastoreConfig};
use calico_datastore::{Event, Store, StoreError, WatchError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// This node's name (Calico's NODENAME).
    #[arg(long, env = "NODENAME")]
    pub node: String,
    /// Apply the current state once and exit.
    #[arg(long)]
    pub once: bool,
    /// Address for /liveness, /readiness and /status (Calico's FELIX_HEALTHHOST).
    #[arg(long, env = "FELIX_HEALTHHOST", default_value = "127.0.0.1")]
    pub health_host: String,
    #[arg(long, env = "FELIX_HEALTHPORT", default_value_t = 9099)]
    pub health_port: u16,
    /// Port for /metrics (Calico's FELIX_PROMETHEUSMETRICSPORT).
    #[arg(long, env = "FELIX_PROMETHEUSMETRICSPORT", default_value_t = 9091)]
    pub metrics_port: u16,
}

fn decode(kv_value: &[u8]) -> Result<calico_api::Resource, String> {
    let v: serde_json::Value = serde_json::from_slice(kv_value).map_err(|e| e.to_string())?;
    calico_api::decode_resource(v)
}

fn to_update(ev: &Event) -> Option<Update> {
    match ev {
        Event::Put(kv) => match decode(&kv.value) {
            Ok(r) => Some(Update::Put(r)),
            Err(e) => {
                eprintln!("calico-node: ignoring unreadable {}: {e}", kv.key);
                None
            }
        },
        Event::Delete { key, .. } => {
            parse_resource_key(key).map(|(kind, namespace, name)| Update::Delete {
                kind,
                namespace,
                name,
            })
        }
    }
}

struct Agent {
    graph: CalcGraph,
    state: DesiredState,
    applied: Option<String>,
    /// The newest datastore revision fed to the graph.
    revision: i64,
    status: Arc<Mutex<Status>>,
    metrics: Arc<Metrics>,
}

impl Agent {
    fn new(node: &str, status: Arc<Mutex<Status>>, metrics: Arc<Metrics>) -> Self {
        Agent {
            graph: CalcGraph::new(node),
            state: DesiredState::default(),
            applied: None,
            revision: 0,
            status,
            metrics,
        }
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

    fn feed(&mut self, update: Update) -> Result<()> {
        let intents = self.graph.apply(update);
        self.state
            .apply(&intents)
            .map_err(|e| anyhow!("calculation graph broke its ordering contract: {e}"))
    }

    /// Renders and, when it changed, applies the table. A refused ruleset
    /// leaves the previous one in place (the transaction is atomic).
    fn sync(&mut self) -> Result<()> {
        let text = calico_dataplane::render(&self.state);
        if self.applied.as_deref() != Some(text.as_str()) {
            let start = Instant::now();
            if let Err(e) = calico_dataplane::apply(&text) {
                self.metrics.apply_errors.inc();
                self.report(false);
                return Err(e).context("applying the nftables ruleset");
            }
            self.metrics
                .apply_seconds
                .observe(start.elapsed().as_secs_f64());
            self.applied = Some(text);
        }
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
}

/// Lists everything and builds a fresh agent; returns it and the revision read.
fn resync(
    store: &dyn Store,
    node: &str,
    status: &Arc<Mutex<Status>>,
    metrics: &Arc<Metrics>,
) -> Result<(Agent, i64)> {
    metrics.resyncs.inc();
    let listing = store
        .list(RESOURCE_PREFIX)
        .context("listing the datastore")?;
    let mut agent = Agent::new(node, Arc::clone(status), Arc::clone(metrics));
    agent.revision = listing.revision;
    for kv in &listing.items {
        if let Some(u) = to_update(&Event::Put(kv.clone())) {
            agent.feed(u)?;
        }
    }
    agent.sync()?;
    Ok((agent, listing.revision))
}

pub fn run(args: &Args) -> Result<()> {
    let cfg = DatastoreConfig::from_env()?;
    let store = open_store(&cfg).with_context(|| format!("opening the {}", cfg.describe()))?;
    let status = Arc::new(Mutex::new(Status {
        node: args.node.clone(),
        ..Default::default()
    }));
    let metrics = Arc::new(Metrics::new());
    if !args.once {
        let health = format!("{}:{}", args.health_host, args.health_port);
        status::serve(&health, Arc::clone(&status), Arc::clone(&metrics))
            .with_context(|| format!("serving health on {health}"))?;
        let prom = format!("{}:{}", args.health_host, args.metrics_port);
        status::serve(&prom, Arc::clone(&status), Arc::clone(&metrics))
            .with_context(|| format!("serving metrics on {prom}"))?;
    }
    let (mut agent, mut revision) = resync(store.as_ref(), &args.node, &status, &metrics)?;
    if args.once {
        return Ok(());
    }
    loop {
        let watch = match store.watch(RESOURCE_PREFIX, revision + 1) {
            Ok(w) => w,
            Err(StoreError::Compacted { .. }) => {
                (agent, revision) = resync(store.as_ref(), &args.node, &status, &metrics)?;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        loop {
            match watch.recv_timeout(Duration::from_secs(30)) {
                Ok(ev) => {
                    agent.revision = ev.revision();
                    if let Some(u) = to_update(&ev) {
                        agent.feed(u)?;
                    }
                    // Take whatever else already arrived, then apply once.
                    while let Some(Ok(ev)) = watch.try_recv() {
                        agent.revision = ev.revision();
                        if let Some(u) = to_update(&ev) {
                            agent.feed(u)?;
                        }
                    }
                    if let Err(e) = agent.sync() {
                        eprintln!("calico-node: {e:#}; will retry");
                        agent.applied = None;
                    }
                }
                Err(WatchError::Timeout) => {
                    if agent.applied.is_none() {
                        agent.sync()?;
                    }
                }
                Err(WatchError::Store(StoreError::Compacted { .. })) => {
                    (agent, revision) = resync(store.as_ref(), &args.node, &status, &metrics)?;
                    break;
                }
                Err(e) => return Err(anyhow!("watching the datastore: {e}")),
            }
        }
    }
}
