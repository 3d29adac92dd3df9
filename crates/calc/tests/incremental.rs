//! Incremental results equal a fresh computation: after any sequence of
//! puts and deletes, the dataplane state the intents built equals the state
//! a new graph computes from the surviving resources alone.

use calico_api::{decode_manifest, Resource};
use calico_calc::{CalcGraph, DesiredState, Update};
use proptest::prelude::*;
use std::collections::BTreeMap;

/// A small universe of resource versions; operations pick among them.
fn universe() -> Vec<Resource> {
    let text = r#"
apiVersion: projectcalico.org/v3
kind: Profile
metadata: {name: kns.a}
spec: {labelsToApply: {pcns.team: x}, ingress: [{action: Allow}], egress: [{action: Allow}]}
---
apiVersion: projectcalico.org/v3
kind: Profile
metadata: {name: kns.a}
spec: {labelsToApply: {pcns.team: y}}
---
apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata: {name: e1, namespace: a, labels: {app: web}}
spec: {node: node-1, interfaceName: cali1, ipNetworks: [10.0.0.1/32], profiles: [kns.a], ports: [{name: http, protocol: TCP, port: 80}]}
---
apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata: {name: e1, namespace: a, labels: {app: db}}
spec: {node: node-1, interfaceName: cali1, ipNetworks: [10.0.0.7/32], profiles: [kns.a]}
---
apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata: {name: e1, namespace: a, labels: {app: web}}
spec: {node: node-2, interfaceName: cali1, ipNetworks: [10.0.0.1/32], profiles: [kns.a]}
---
apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata: {name: e2, namespace: a, labels: {app: db}}
spec: {node: node-2, interfaceName: cali2, ipNetworks: [10.0.1.2/32], profiles: [kns.a], ports: [{name: http, protocol: TCP, port: 81}]}
---
apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata: {name: e3, namespace: b, labels: {app: web}}
spec: {node: node-1, interfaceName: cali3, ipNetworks: [10.0.0.3/32], profiles: [kns.b]}
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: p1, namespace: a}
spec: {selector: app == 'web', ingress: [{action: Allow, protocol: TCP, source: {selector: app == 'db'}, destination: {ports: [http]}}]}
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: p1, namespace: a}
spec: {selector: all(), order: 5, egress: [{action: Deny, destination: {selector: has(app), namespaceSelector: team == 'x'}}]}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: g1}
spec: {selector: has(app), order: 1, ingress: [{action: Pass}], egress: [{action: Allow, destination: {selector: feed == 'bad'}}]}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: g1}
spec: {tier: t1, selector: app == 'web', ingress: [{action: Pass}]}
---
apiVersion: projectcalico.org/v3
kind: Tier
metadata: {name: t1}
spec: {order: 1}
---
apiVersion: projectcalico.org/v3
kind: Tier
metadata: {name: t1}
spec: {order: 2000000, defaultAction: Pass}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkSet
metadata: {name: bad, labels: {feed: bad}}
spec: {nets: [192.0.2.0/24]}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkSet
metadata: {name: bad, labels: {feed: bad}}
spec: {nets: [198.51.100.0/24]}
---
apiVersion: projectcalico.org/v3
kind: HostEndpoint
metadata: {name: h1, labels: {app: web}}
spec: {node: node-1, interfaceName: eth0, expectedIPs: [10.0.9.1], profiles: [kns.a]}
---
apiVersion: projectcalico.org/v3
kind: HostEndpoint
metadata: {name: h1, labels: {app: web}}
spec: {node: node-2, interfaceName: eth0, expectedIPs: [10.0.9.2]}
---
apiVersion: projectcalico.org/v3
kind: HostEndpoint
metadata: {name: h2, labels: {role: gw, projectcalico.org/namespace: a}}
spec: {node: node-1, interfaceName: eth0, expectedIPs: [10.0.9.3]}
---
apiVersion: projectcalico.org/v3
kind: HostEndpoint
metadata: {name: h2, labels: {app: db}}
spec: {node: node-1, interfaceName: "*"}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: g2}
spec: {selector: has(app), applyOnForward: true, preDNAT: true, ingress: [{action: Deny, source: {selector: has(role)}}]}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: g2}
spec: {selector: all(), applyOnForward: true, doNotTrack: true, types: [Ingress, Egress], ingress: [{action: Allow}], egress: [{action: Allow}]}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: g3}
spec: {selector: all(), applyOnForward: true, ingress: [{action: Allow, source: {selector: app == 'web'}}]}
"#;
    decode_manifest(text).expect("universe")
}

fn key(r: &Resource) -> (String, Option<String>, String) {
    (
        r.kind().to_string(),
        r.meta().namespace.clone(),
        r.meta().name.clone(),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn incremental_equals_fresh(ops in prop::collection::vec((any::<bool>(), 0usize..22), 1..40)) {
        let all = universe();
        let mut g = CalcGraph::new("node-1");
        let mut state = DesiredState::default();
        let mut live: BTreeMap<(String, Option<String>, String), Resource> = BTreeMap::new();
        for (put, i) in ops {
            let r = &all[i % all.len()];
            let intents = if put {
                live.insert(key(r), r.clone());
                g.apply(Update::Put(r.clone()))
            } else {
                live.remove(&key(r));
                let m = r.meta();
                g.apply(Update::Delete { kind: r.kind(), namespace: m.namespace.clone(), name: m.name.clone() })
            };
            state.apply(&intents).map_err(|e| TestCaseError::fail(e.to_string()))?;
        }
        let mut fresh = CalcGraph::new("node-1");
        let mut expected = DesiredState::default();
        for r in live.values() {
            expected.apply(&fresh.apply(Update::Put(r.clone()))).map_err(|e| TestCaseError::fail(e.to_string()))?;
        }
        prop_assert_eq!(g.rejected_hosts(), fresh.rejected_hosts());
        prop_assert_eq!(state, expected);
    }

    /// The same operations fed in batches (`apply_all`, cut at random
    /// points) end in the same state as fed one by one, and each batch's
    /// intents keep the ordering contract.
    #[test]
    fn batches_equal_single_updates(
        ops in prop::collection::vec((any::<bool>(), 0usize..22, any::<bool>()), 1..40),
    ) {
        let all = universe();
        let (mut one, mut batched) = (CalcGraph::new("node-1"), CalcGraph::new("node-1"));
        let (mut s1, mut s2) = (DesiredState::default(), DesiredState::default());
        let mut pending = Vec::new();
        for (put, i, cut) in ops {
            let r = &all[i % all.len()];
            let u = if put {
                Update::Put(r.clone())
            } else {
                let m = r.meta();
                Update::Delete { kind: r.kind(), namespace: m.namespace.clone(), name: m.name.clone() }
            };
            s1.apply(&one.apply(u.clone())).map_err(|e| TestCaseError::fail(e.to_string()))?;
            pending.push(u);
            if cut {
                s2.apply(&batched.apply_all(pending.drain(..))).map_err(|e| TestCaseError::fail(e.to_string()))?;
            }
        }
        s2.apply(&batched.apply_all(pending)).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(s1, s2);
    }
}
