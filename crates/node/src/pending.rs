//! Pending traces: what the policy would do to a flow if the staged
//! policies (StagedNetworkPolicy, StagedGlobalNetworkPolicy,
//! StagedKubernetesNetworkPolicy) were enforced. The agent builds a model
//! of this node's policy with the staged set applied (`calico_api::pending`,
//! compiled by the same calculation graph it enforces from) whenever the
//! datastore changes and staged policies exist; the flow collector
//! evaluates each record's connection against it (`calico_calc::explain`,
//! the walk the dataplane makes) and writes the result as the record's
//! `pending_policies`, in Calico's trace form. A staged policy's entries
//! are named `staged:<name>`, as Calico names them.

use calico_api::kinds::staged::{enforced, StagedAction};
use calico_api::{Action, Kind, Resource};
use calico_calc::explain::{evaluate, Packet, Step};
use calico_calc::{CalcGraph, DesiredState, SetId, TierEnd, Update};
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

#[derive(Debug)]
pub struct Pending {
    state: DesiredState,
    selectors: BTreeMap<SetId, String>,
    /// This node's endpoints by address.
    by_ip: BTreeMap<IpAddr, String>,
    /// (namespace, name) of every staged policy.
    staged: BTreeSet<(Option<String>, String)>,
}

/// The pending model the collector uses, compared by identity.
#[derive(Debug, Clone)]
pub struct PendingRef(pub Arc<Pending>);

impl PartialEq for PendingRef {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for PendingRef {}

fn word(a: Action) -> &'static str {
    match a {
        Action::Allow => "allow",
        Action::Deny => "deny",
        Action::Pass => "pass",
        Action::Log => "log",
    }
}

impl Pending {
    /// The model for `node` from every resource the agent holds; None
    /// when nothing is staged.
    #[cfg(test)]
    pub fn build(node: &str, resources: &[Resource]) -> Option<Pending> {
        let mut m = Model::new(node);
        for (i, r) in resources.iter().enumerate() {
            m.put(&i.to_string(), r);
        }
        m.snapshot()
    }

    /// The pending trace of a connection as the reporter sees it: ingress
    /// at the destination (`dst`) or egress at the source (`src`); empty
    /// when that endpoint is not on this node.
    pub fn trace(
        &self,
        ingress: bool,
        src: IpAddr,
        dst: IpAddr,
        proto: u8,
        dport: Option<u16>,
    ) -> Vec<String> {
        let at = if ingress { dst } else { src };
        let Some(ep) = self
            .by_ip
            .get(&at)
            .and_then(|k| self.state.endpoints.get(k))
        else {
            return Vec::new();
        };
        let packet = Packet {
            src,
            dst,
            protocol: proto,
            dst_port: dport,
            src_port: None,
            icmp: None,
        };
        let d = evaluate(&self.state, ep, ingress, &packet, &self.selectors);
        let mut out = Vec::new();
        for step in d.steps {
            let i = out.len();
            match step {
                Step::Rule {
                    tier,
                    policy,
                    index,
                    action,
                } if action != Action::Log => {
                    let staged = self
                        .staged
                        .contains(&(policy.namespace.clone(), policy.name.clone()));
                    let name = if staged {
                        format!("staged:{}", policy.name)
                    } else {
                        policy.name.clone()
                    };
                    let name = match &policy.namespace {
                        Some(ns) => format!("{ns}/{name}"),
                        None => name,
                    };
                    out.push(format!("{i}|{tier}|{name}|{}|{index}", word(action)));
                }
                Step::TierEnd { tier, end } => {
                    let w = if end == TierEnd::Pass { "pass" } else { "deny" };
                    out.push(format!("{i}|{tier}|{tier}.end-of-tier|{w}|-1"));
                }
                Step::ProfileRule {
                    profile,
                    index,
                    action,
                } if action != Action::Log => {
                    out.push(format!(
                        "{i}|__PROFILE__|__PROFILE__.{profile}|{}|{index}",
                        word(action)
                    ));
                }
                Step::NoProfileAllowed => out.push(format!("{i}|__PROFILE__|__NO_MATCH__|deny|-1")),
                _ => {}
            }
        }
        out
    }
}

/// A resource's place in the pending view: kind, namespace and name; a
/// staged policy's place is its enforced namesake's.
type Place = (Kind, Option<String>, String);

fn place(r: &Resource) -> Place {
    (r.kind(), r.meta().namespace.clone(), r.meta().name.clone())
}

/// The pending model kept up to date change by change: the resources as
/// they would be with the staged policies enforced (a staged Set takes its
/// namesake's place, a staged Delete empties it), fed to a calculation
/// graph of its own, so a change costs what it changes, not a rebuild.
#[derive(Debug)]
pub struct Model {
    graph: CalcGraph,
    state: DesiredState,
    /// Each datastore key's place, and whether it is a staged policy.
    keys: BTreeMap<String, (Place, bool)>,
    /// Enforced resources by place.
    enforced: BTreeMap<Place, Resource>,
    /// Staged policies by the place they stage: the resource a Set puts
    /// there, None for a Delete.
    staged: BTreeMap<Place, Option<Resource>>,
    /// Places changed since the graph last saw them.
    dirty: BTreeSet<Place>,
}

impl Model {
    pub fn new(node: &str) -> Self {
        Model {
            graph: CalcGraph::new(node),
            state: DesiredState::default(),
            keys: BTreeMap::new(),
            enforced: BTreeMap::new(),
            staged: BTreeMap::new(),
            dirty: BTreeSet::new(),
        }
    }

    /// The resource at datastore key `key` is now `r`.
    pub fn put(&mut self, key: &str, r: &Resource) {
        let (at, staged) = match enforced(r) {
            Some((action, e)) => (
                place(&e),
                Some(match action {
                    StagedAction::Set => Some(e),
                    StagedAction::Delete => None,
                }),
            ),
            None => (place(r), None),
        };
        self.remove(key);
        self.keys
            .insert(key.to_string(), (at.clone(), staged.is_some()));
        match staged {
            Some(s) => {
                self.staged.insert(at.clone(), s);
            }
            None => {
                self.enforced.insert(at.clone(), r.clone());
            }
        }
        self.dirty.insert(at);
    }

    /// The resource at datastore key `key` is gone.
    pub fn remove(&mut self, key: &str) {
        if let Some((at, staged)) = self.keys.remove(key) {
            if staged {
                self.staged.remove(&at);
            } else {
                self.enforced.remove(&at);
            }
            self.dirty.insert(at);
        }
    }

    /// What the pending view holds at `at`.
    fn view(&self, at: &Place) -> Option<&Resource> {
        match self.staged.get(at) {
            Some(staged) => staged.as_ref(),
            None => self.enforced.get(at),
        }
    }

    /// Brings the graph up to date with the changes; the model for the
    /// collector when anything is staged.
    pub fn snapshot(&mut self) -> Option<Pending> {
        let updates: Vec<Update> = std::mem::take(&mut self.dirty)
            .into_iter()
            .map(|at| match self.view(&at) {
                Some(r) => Update::Put(r.clone()),
                None => Update::Delete {
                    kind: at.0,
                    namespace: at.1,
                    name: at.2,
                },
            })
            .collect();
        if !updates.is_empty() {
            let intents = self.graph.apply_all(updates);
            // The graph's own output: its ordering contract holds.
            let _ = self.state.apply(&intents);
        }
        if self.staged.is_empty() {
            return None;
        }
        let by_ip = self
            .state
            .endpoints
            .iter()
            .flat_map(|(key, ep)| ep.ips.iter().map(move |n| (n.addr(), key.clone())))
            .collect();
        Some(Pending {
            selectors: self.graph.set_selectors(),
            state: self.state.clone(),
            by_ip,
            staged: self
                .staged
                .keys()
                .map(|(_, ns, name)| (ns.clone(), name.clone()))
                .collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLUSTER: &str = "
apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata: {name: node--2-k8s-db-eth0, namespace: shop, labels: {app: db, projectcalico.org/namespace: shop, projectcalico.org/orchestrator: k8s}}
spec: {orchestrator: k8s, workload: '', node: node-2, pod: db, endpoint: eth0, interfaceName: cali1234567890a, ipNetworks: [10.244.1.1/32], profiles: [kns.shop]}
---
apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata: {name: node--1-k8s-web-eth0, namespace: shop, labels: {app: web, projectcalico.org/namespace: shop, projectcalico.org/orchestrator: k8s}}
spec: {orchestrator: k8s, workload: '', node: node-1, pod: web, endpoint: eth0, interfaceName: cali0987654321b, ipNetworks: [10.244.0.1/32], profiles: [kns.shop]}
---
apiVersion: projectcalico.org/v3
kind: Profile
metadata: {name: kns.shop}
spec: {ingress: [{action: Allow}], egress: [{action: Allow}]}
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: db, namespace: shop}
spec:
  selector: app == 'db'
  types: [Ingress]
  ingress:
  - action: Allow
    protocol: TCP
    source: {selector: app == 'web'}
    destination: {ports: [80]}
";

    const STAGED: &str = "
---
apiVersion: projectcalico.org/v3
kind: StagedNetworkPolicy
metadata: {name: lockdown, namespace: shop}
spec:
  stagedAction: Set
  order: 10
  selector: app == 'db'
  types: [Ingress]
  ingress:
  - action: Deny
    protocol: TCP
    source: {selector: app == 'web'}
    destination: {ports: [80]}
";

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn staged_policies_give_the_pending_trace_and_nothing_else_does() {
        let plain = calico_api::decode_manifest(CLUSTER).expect("manifest");
        assert!(Pending::build("node-2", &plain).is_none(), "nothing staged");
        let all = calico_api::decode_manifest(&format!("{CLUSTER}{STAGED}")).expect("manifest");
        let p = Pending::build("node-2", &all).expect("staged");
        let (web, db) = (ip("10.244.0.1"), ip("10.244.1.1"));
        assert_eq!(
            p.trace(true, web, db, 6, Some(80)),
            vec!["0|default|shop/staged:lockdown|deny|0"]
        );
        assert_eq!(
            p.trace(true, web, db, 6, Some(81)),
            vec!["0|default|default.end-of-tier|deny|-1"]
        );
        // web is not on node-2: no trace at its side here.
        assert!(p.trace(false, web, db, 6, Some(80)).is_empty());
        let p1 = Pending::build("node-1", &all).expect("staged");
        assert_eq!(
            p1.trace(false, web, db, 6, Some(80)),
            vec!["0|__PROFILE__|__PROFILE__.kns.shop|allow|0"]
        );
    }

    /// What the model is checked against: the pending view built from
    /// scratch (`calico_api::pending`) and compiled by a fresh graph.
    fn from_scratch(node: &str, resources: &[Resource]) -> (DesiredState, BTreeMap<SetId, String>) {
        let mut graph = CalcGraph::new(node);
        let intents = graph.apply_all(calico_api::pending(resources).into_iter().map(Update::Put));
        let mut state = DesiredState::default();
        let _ = state.apply(&intents);
        (state, graph.set_selectors())
    }

    /// The resources the property draws from: two workloads, their
    /// profile, an enforced policy, and staged policies that set it
    /// otherwise, delete it, or add one of their own.
    fn pool() -> Vec<Resource> {
        let extra = "
---
apiVersion: projectcalico.org/v3
kind: StagedNetworkPolicy
metadata: {name: db, namespace: shop}
spec:
  stagedAction: Delete
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: audit}
spec:
  selector: all()
  order: 5
  types: [Ingress]
  ingress: [{action: Pass}]
---
apiVersion: projectcalico.org/v3
kind: StagedGlobalNetworkPolicy
metadata: {name: audit}
spec:
  stagedAction: Set
  selector: app == 'db'
  order: 5
  types: [Ingress]
  ingress: [{action: Deny, protocol: UDP}]
---
apiVersion: projectcalico.org/v3
kind: StagedNetworkPolicy
metadata: {name: db2, namespace: shop}
spec:
  stagedAction: Set
  selector: app == 'db'
  types: [Ingress]
  ingress: [{action: Allow, source: {selector: app == 'web'}}]
";
        let mut all =
            calico_api::decode_manifest(&format!("{CLUSTER}{STAGED}{extra}")).expect("manifest");
        // The staged Set of `db` itself, beside the Delete of it above.
        let set_db = STAGED.replace("name: lockdown", "name: db");
        all.extend(calico_api::decode_manifest(&set_db).expect("manifest"));
        all
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]
        /// After every change (a resource put, put again or removed, by
        /// its datastore key), the model kept up to date equals the one
        /// built from scratch from the resources held.
        #[test]
        fn the_model_kept_up_to_date_equals_the_one_built_from_scratch(
            steps in proptest::collection::vec((0usize..10, proptest::bool::ANY), 1..24)
        ) {
            let pool = pool();
            let key = |i: usize| format!("k{i}");
            let mut held: BTreeMap<String, Resource> = BTreeMap::new();
            let mut m = Model::new("node-2");
            for (i, put) in steps {
                let i = i % pool.len();
                // Two staged policies of one place (a Set and a Delete of
                // `db`) cannot both exist in a datastore (same kind and
                // name); the pool keeps them apart by never holding both.
                let clash = |a: usize| matches!(a, 5 | 9);
                if put && clash(i) && held.keys().any(|k| k != &key(i) && clash(k[1..].parse().unwrap_or(99))) {
                    continue;
                }
                if put {
                    held.insert(key(i), pool[i].clone());
                    m.put(&key(i), &pool[i]);
                } else {
                    held.remove(&key(i));
                    m.remove(&key(i));
                }
                let resources: Vec<Resource> = held.values().cloned().collect();
                let (state, selectors) = from_scratch("node-2", &resources);
                match m.snapshot() {
                    Some(p) => {
                        proptest::prop_assert_eq!(&p.state, &state);
                        proptest::prop_assert_eq!(&p.selectors, &selectors);
                    }
                    None => proptest::prop_assert!(
                        resources.iter().all(|r| enforced(r).is_none()),
                        "nothing staged"
                    ),
                }
            }
        }
    }
}
