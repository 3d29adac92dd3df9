//! The policy agent loop: list, compute, apply; then watch and apply changes.

use anyhow::{anyhow, Context, Result};
use calico_calc::{CalcGraph, DesiredState, Update};
use calico_client::keys::{parse_resource_key, RESOURCE_PREFIX};
use calico_client::{open_store, DatastoreConfig};
use calico_datastore::{Event, Store, StoreError, WatchError};
use std::time::Duration;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// This node's name (Calico's NODENAME).
    #[arg(long, env = "NODENAME")]
    pub node: String,
    /// Apply the current state once and exit.
    #[arg(long)]
    pub once: bool,
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
}

impl Agent {
    fn new(node: &str) -> Self {
        Agent {
            graph: CalcGraph::new(node),
            state: DesiredState::default(),
            applied: None,
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
            calico_dataplane::apply(&text).context("applying the nftables ruleset")?;
            self.applied = Some(text);
        }
        Ok(())
    }
}

/// Lists everything and builds a fresh agent; returns it and the revision read.
fn resync(store: &dyn Store, node: &str) -> Result<(Agent, i64)> {
    let listing = store
        .list(RESOURCE_PREFIX)
        .context("listing the datastore")?;
    let mut agent = Agent::new(node);
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
    let (mut agent, mut revision) = resync(store.as_ref(), &args.node)?;
    if args.once {
        return Ok(());
    }
    loop {
        let watch = match store.watch(RESOURCE_PREFIX, revision + 1) {
            Ok(w) => w,
            Err(StoreError::Compacted { .. }) => {
                (agent, revision) = resync(store.as_ref(), &args.node)?;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        loop {
            match watch.recv_timeout(Duration::from_secs(30)) {
                Ok(ev) => {
                    if let Some(u) = to_update(&ev) {
                        agent.feed(u)?;
                    }
                    // Take whatever else already arrived, then apply once.
                    while let Some(Ok(ev)) = watch.try_recv() {
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
                    (agent, revision) = resync(store.as_ref(), &args.node)?;
                    break;
                }
                Err(e) => return Err(anyhow!("watching the datastore: {e}")),
            }
        }
    }
}
