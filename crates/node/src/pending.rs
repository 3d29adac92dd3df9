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

use calico_api::{Action, Resource};
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
    pub fn build(node: &str, resources: &[Resource]) -> Option<Pending> {
        let staged: BTreeSet<(Option<String>, String)> = resources
            .iter()
            .filter_map(calico_api::kinds::staged::enforced)
            .map(|(_, e)| (e.meta().namespace.clone(), e.meta().name.clone()))
            .collect();
        if staged.is_empty() {
            return None;
        }
        let mut graph = CalcGraph::new(node);
        let intents = graph.apply_all(calico_api::pending(resources).into_iter().map(Update::Put));
        let mut state = DesiredState::default();
        // The graph's own output: its ordering contract holds.
        let _ = state.apply(&intents);
        let by_ip = state
            .endpoints
            .iter()
            .flat_map(|(key, ep)| ep.ips.iter().map(move |n| (n.addr(), key.clone())))
            .collect();
        Some(Pending {
            selectors: graph.set_selectors(),
            state,
            by_ip,
            staged,
        })
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
}
