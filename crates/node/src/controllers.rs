//! `calico-node controllers`: the cluster-wide controllers Calico runs in
//! calico-kube-controllers. One is here: the node controller's automatic
//! host endpoints. With KubeControllersConfiguration `default` saying
//! `controllers.node.hostEndpoint.autoCreate: Enabled`, every Node has a
//! host endpoint `<node>-auto-hep` for all its interfaces (`*`), with the
//! Node's labels and addresses and the allow-all profile, kept in step
//! with the Node (labels, addresses) and removed with it, or when the
//! setting is turned off. Run it once per cluster.
//!
//! ```text
//! datastore ──list (Nodes, HostEndpoints, the configuration)──► plan ──► create / update / delete
//!     └──syncer: any change to those kinds, or the reconciler period──┘
//! ```

use anyhow::{Context, Result};
use calico_api::{HostEndpointSpec, Kind, NodeSpec, Object, ObjectMeta, Resource};
use calico_client::Client;
use calico_syncer::{RecvError, SyncEvent, SyncStatus, SyncerType};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// The label Calico puts on the host endpoints its controllers own.
pub const CREATED_BY: &str = "projectcalico.org/created-by";
pub const CREATED_BY_VALUE: &str = "calico-kube-controllers";

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Reconcile once and exit (for tests and scripts).
    #[arg(long)]
    pub once: bool,
}

/// The automatic host endpoint's name for a node.
pub fn auto_name(node: &str) -> String {
    format!("{node}-auto-hep")
}

/// A node's addresses, as its automatic host endpoint expects them: the
/// BGP addresses, the tunnel addresses and `spec.addresses`, each once.
fn node_ips(spec: &NodeSpec) -> Vec<IpAddr> {
    let mut ips: Vec<IpAddr> = Vec::new();
    if let Some(bgp) = &spec.bgp {
        ips.extend(bgp.ipv4_address.map(|a| a.addr()));
        ips.extend(bgp.ipv6_address.map(|a| a.addr()));
        ips.extend(bgp.ipv4_ipip_tunnel_addr.map(IpAddr::V4));
    }
    ips.extend(spec.ipv4_vxlan_tunnel_addr.map(IpAddr::V4));
    ips.extend(spec.ipv6_vxlan_tunnel_addr.map(IpAddr::V6));
    ips.extend(spec.addresses.iter().map(|a| a.address.addr()));
    ips.sort();
    ips.dedup();
    ips
}

/// The automatic host endpoint a node should have.
pub fn auto_endpoint(node: &Object<NodeSpec>) -> Object<HostEndpointSpec> {
    let mut labels = node.metadata.labels.clone();
    labels.insert(CREATED_BY.into(), CREATED_BY_VALUE.into());
    let mut metadata = ObjectMeta::named(auto_name(&node.metadata.name));
    metadata.labels = labels;
    Object::new(
        metadata,
        HostEndpointSpec {
            node: node.metadata.name.clone(),
            interface_name: calico_calc::ALL_INTERFACES.into(),
            expected_ips: node_ips(&node.spec),
            profiles: vec![calico_api::DEFAULT_ALLOW_PROFILE.into()],
            ports: Vec::new(),
        },
    )
}

/// One change to the datastore's host endpoints.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    Create(Object<HostEndpointSpec>),
    /// The new content, with the stored version it replaces.
    Update(Object<HostEndpointSpec>),
    Delete {
        name: String,
        version: Option<String>,
    },
}

/// Whether a stored host endpoint is one this controller owns: its name
/// and label say so (a user's `x-auto-hep` without the label is left alone).
fn ours(h: &Object<HostEndpointSpec>) -> bool {
    h.metadata.name.ends_with("-auto-hep")
        && h.metadata.labels.get(CREATED_BY).map(String::as_str) == Some(CREATED_BY_VALUE)
}

/// What to change so that the stored host endpoints are the wanted ones:
/// with `enabled`, one per node; without, none of ours. Pure.
pub fn plan(
    enabled: bool,
    nodes: &[Object<NodeSpec>],
    stored: &[Object<HostEndpointSpec>],
) -> (Vec<Change>, Vec<String>) {
    let mut problems = Vec::new();
    let stored: BTreeMap<&str, &Object<HostEndpointSpec>> = stored
        .iter()
        .map(|h| (h.metadata.name.as_str(), h))
        .collect();
    let want: BTreeMap<String, Object<HostEndpointSpec>> = if enabled {
        nodes
            .iter()
            .map(|n| (auto_name(&n.metadata.name), auto_endpoint(n)))
            .collect()
    } else {
        BTreeMap::new()
    };
    let mut changes = Vec::new();
    for (name, w) in &want {
        match stored.get(name.as_str()) {
            None => changes.push(Change::Create(w.clone())),
            Some(s) if !ours(s) => problems.push(format!(
                "host endpoint {name} exists and is not the controller's ({CREATED_BY} is not {CREATED_BY_VALUE}); left alone"
            )),
            Some(s) if s.spec != w.spec || s.metadata.labels != w.metadata.labels => {
                let mut u = w.clone();
                u.metadata.resource_version = s.metadata.resource_version.clone();
                changes.push(Change::Update(u));
            }
            Some(_) => {}
        }
    }
    for (name, s) in &stored {
        if ours(s) && !want.contains_key(*name) {
            changes.push(Change::Delete {
                name: (*name).to_string(),
                version: s.metadata.resource_version.clone(),
            });
        }
    }
    (changes, problems)
}

/// Lists what the plan needs and makes its changes; a change that loses a
/// race is left to the next pass. Returns the reconciler period the
/// configuration asks for.
fn reconcile(client: &Client) -> Result<Duration> {
    let config = match client.get(Kind::KubeControllersConfiguration, None, "default") {
        Ok(Resource::KubeControllersConfiguration(c)) => Some(c.spec),
        _ => None,
    };
    let period = config
        .as_ref()
        .map_or(Duration::from_secs(300), |c| c.node_reconciler_period());
    let enabled = config.as_ref().is_some_and(|c| c.auto_host_endpoints());
    let nodes: Vec<Object<NodeSpec>> = client
        .list(Kind::Node, None)
        .context("listing nodes")?
        .items
        .into_iter()
        .filter_map(|r| match r {
            Resource::Node(n) => Some(n),
            _ => None,
        })
        .collect();
    let heps: Vec<Object<HostEndpointSpec>> = client
        .list(Kind::HostEndpoint, None)
        .context("listing host endpoints")?
        .items
        .into_iter()
        .filter_map(|r| match r {
            Resource::HostEndpoint(h) => Some(h),
            _ => None,
        })
        .collect();
    let (changes, problems) = plan(enabled, &nodes, &heps);
    for p in problems {
        warn!("{p}");
    }
    for c in changes {
        let done = match &c {
            Change::Create(h) => client
                .create(Resource::HostEndpoint(h.clone()))
                .map(|_| info!("created host endpoint {}", h.metadata.name)),
            Change::Update(h) => client
                .replace(Resource::HostEndpoint(h.clone()))
                .map(|_| info!("updated host endpoint {}", h.metadata.name)),
            Change::Delete { name, version } => client
                .delete(Kind::HostEndpoint, None, name, version.as_deref())
                .map(|_| info!("deleted host endpoint {name}")),
        };
        if let Err(e) = done {
            warn!(
                "{c:?}: {}; retried on the next pass",
                calico_datastore::Chain(&e)
            );
        }
    }
    Ok(period)
}

pub fn run(args: &Args) -> Result<()> {
    crate::stderr_logging();
    let (store, client) = crate::datastore()?;
    if args.once {
        return reconcile(&client).map(|_| ());
    }
    // The syncer delivers changes to the kinds the plan reads (Nodes,
    // HostEndpoints, the configuration); any of them means a pass.
    let syncer = calico_syncer::direct::start(store, SyncerType::Controllers);
    let mut in_sync = false;
    let mut period = Duration::from_secs(300);
    let mut next = Instant::now() + period;
    let mut backoff = Duration::from_millis(200);
    loop {
        let mut dirty = false;
        match syncer.recv_timeout(Duration::from_millis(500)) {
            Ok(ev) => {
                let mut ev = Some(ev);
                while let Some(e) = ev {
                    match e {
                        SyncEvent::Updates(_) => dirty = true,
                        SyncEvent::Status(SyncStatus::InSync) => {
                            dirty |= !in_sync;
                            in_sync = true;
                        }
                        SyncEvent::Status(_) => {}
                        SyncEvent::Error(e) => warn!("{e}"),
                    }
                    ev = syncer.try_recv();
                }
            }
            Err(RecvError::Timeout) => {}
            Err(RecvError::Closed) => anyhow::bail!("the syncer stopped"),
        }
        // The reconciler period repairs what a lost race or an outside
        // edit left behind.
        if in_sync && (dirty || Instant::now() >= next) {
            match reconcile(&client) {
                Ok(p) => {
                    period = p;
                    backoff = Duration::from_millis(200);
                    next = Instant::now() + period;
                }
                Err(e) => {
                    warn!("{e:#}; retrying in {backoff:?}");
                    next = Instant::now() + backoff;
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, labels: &[(&str, &str)], ip: &str) -> Object<NodeSpec> {
        let r = calico_api::decode_manifest(&format!(
            "apiVersion: projectcalico.org/v3\nkind: Node\nmetadata: {{name: {name}}}\nspec: {{bgp: {{ipv4Address: {ip}/24}}, ipv4VXLANTunnelAddr: 10.9.0.1}}\n"
        ))
        .expect("node")
        .remove(0);
        let Resource::Node(mut n) = r else { panic!() };
        n.metadata.labels = labels
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect();
        n
    }

    #[test]
    fn one_star_endpoint_per_node_with_its_labels_and_addresses() {
        let nodes = [
            node("n1", &[("zone", "a")], "10.0.0.1"),
            node("n2", &[], "10.0.0.2"),
        ];
        let (changes, problems) = plan(true, &nodes, &[]);
        assert!(problems.is_empty());
        let Change::Create(h) = &changes[0] else {
            panic!("{changes:?}")
        };
        assert_eq!(h.metadata.name, "n1-auto-hep");
        assert_eq!(h.metadata.labels["zone"], "a");
        assert_eq!(h.metadata.labels[CREATED_BY], CREATED_BY_VALUE);
        assert_eq!(h.spec.interface_name, "*");
        assert_eq!(
            h.spec.expected_ips,
            [
                "10.0.0.1".parse::<IpAddr>().expect("ip"),
                "10.9.0.1".parse().expect("ip")
            ]
        );
        assert_eq!(h.spec.profiles, ["projectcalico-default-allow"]);
        assert_eq!(changes.len(), 2);
    }

    #[test]
    fn follows_labels_and_nodes_and_leaves_other_endpoints_alone() {
        let before = [node("n1", &[("zone", "a")], "10.0.0.1")];
        let mut stored: Vec<Object<HostEndpointSpec>> = before.iter().map(auto_endpoint).collect();
        stored[0].metadata.resource_version = Some("7".into());
        // Someone else's endpoint that happens to end in -auto-hep.
        let mut theirs = auto_endpoint(&node("n9", &[], "10.0.0.9"));
        theirs.metadata.labels.remove(CREATED_BY);
        stored.push(theirs);
        assert_eq!(plan(true, &before, &stored).0, []);
        // A label changes: updated, at the version it replaces.
        let relabelled = [node("n1", &[("zone", "b")], "10.0.0.1")];
        let (changes, _) = plan(true, &relabelled, &stored);
        let [Change::Update(h)] = changes.as_slice() else {
            panic!("{changes:?}")
        };
        assert_eq!(h.metadata.labels["zone"], "b");
        assert_eq!(h.metadata.resource_version.as_deref(), Some("7"));
        // The node goes, or the setting is turned off: ours go, theirs stay.
        for (enabled, nodes) in [(true, &[][..]), (false, &before[..])] {
            let (changes, _) = plan(enabled, nodes, &stored);
            assert_eq!(
                changes,
                [Change::Delete {
                    name: "n1-auto-hep".into(),
                    version: Some("7".into())
                }]
            );
        }
        // A user's endpoint holding a node's name is reported, not taken.
        let (changes, problems) = plan(true, &[node("n9", &[], "10.0.0.9")], &stored[1..]);
        assert!(
            changes.is_empty() && problems.len() == 1,
            "{changes:?} {problems:?}"
        );
    }
}
