//! `explain` on states the graph computes: tiers in order, Pass, tier
//! ends, profiles, ports and named ports, selectors, nets. (The lab's
//! end-to-end test checks it against real probes for every pod pair.)

use calico_api::{decode_manifest, Action};
use calico_calc::explain::{evaluate, Decision, Packet, Step};
use calico_calc::{CalcGraph, DesiredState, SetId, Update};
use std::collections::BTreeMap;

const BASE: &str = "
apiVersion: projectcalico.org/v3
kind: Profile
metadata: {name: kns.shop}
spec:
  ingress: [{action: Allow}]
  egress: [{action: Allow}]
  labelsToApply: {projectcalico.org/name: shop}
---
apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata: {name: node--1-k8s-web-eth0, namespace: shop, labels: {app: web, projectcalico.org/namespace: shop}}
spec: {node: node-1, pod: web, endpoint: eth0, orchestrator: k8s, interfaceName: cali0000000web, ipNetworks: [10.0.0.1/32], profiles: [kns.shop]}
---
apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata: {name: node--1-k8s-db-eth0, namespace: shop, labels: {app: db, projectcalico.org/namespace: shop}}
spec:
  node: node-1
  pod: db
  endpoint: eth0
  orchestrator: k8s
  interfaceName: cali00000000db
  ipNetworks: [10.0.0.2/32]
  profiles: [kns.shop]
  ports: [{name: sql, protocol: TCP, port: 5432}]
";

/// The node's state, and the selector behind each set.
fn graph(extra: &str) -> (DesiredState, BTreeMap<SetId, String>) {
    let resources = decode_manifest(&format!("{BASE}---\n{extra}")).expect("manifest");
    let mut g = CalcGraph::new("node-1");
    let mut s = DesiredState::default();
    s.apply(&g.apply_all(resources.into_iter().map(Update::Put)))
        .expect("ordering");
    (s, g.set_selectors())
}

fn state(extra: &str) -> DesiredState {
    graph(extra).0
}

/// Ingress to db from web, TCP to `port`.
fn to_db(s: &DesiredState, port: u16) -> Decision {
    let ep = &s.endpoints["shop/node--1-k8s-db-eth0"];
    let p = Packet {
        src: "10.0.0.1".parse().expect("ip"),
        dst: "10.0.0.2".parse().expect("ip"),
        protocol: 6,
        dst_port: Some(port),
        src_port: None,
        icmp: None,
    };
    evaluate(s, ep, true, &p, &BTreeMap::new())
}

#[test]
fn without_policy_the_profile_decides() {
    let s = state("apiVersion: projectcalico.org/v3\nkind: Tier\nmetadata: {name: unused}\nspec: {order: 10}\n");
    let d = to_db(&s, 5432);
    assert!(d.allowed);
    assert_eq!(
        d.steps,
        vec![Step::ProfileRule {
            profile: "kns.shop".into(),
            index: 0,
            action: Action::Allow
        }]
    );
}

#[test]
fn a_selecting_policy_without_a_matching_rule_ends_in_the_tier_deny() {
    let s = state(
        "apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {name: sql, namespace: shop}\n\
         spec: {selector: app == 'db', ingress: [{action: Allow, protocol: TCP, source: {selector: app == 'web'}, destination: {ports: [sql]}}]}\n",
    );
    let allowed = to_db(&s, 5432);
    assert!(allowed.allowed, "{allowed:?}");
    assert!(matches!(
        allowed.steps[..],
        [Step::Rule {
            index: 0,
            action: Action::Allow,
            ..
        }]
    ));
    let denied = to_db(&s, 80);
    assert!(!denied.allowed);
    assert!(denied.by.contains("end of tier default"), "{}", denied.by);
    assert!(matches!(
        denied.steps[..],
        [Step::NoMatch { .. }, Step::TierEnd { .. }]
    ));
}

#[test]
fn pass_leaves_the_tier_and_the_next_one_decides() {
    let s = state(
        "apiVersion: projectcalico.org/v3\nkind: Tier\nmetadata: {name: security}\nspec: {order: 100}\n---\n\
         apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: security.pass-shop}\n\
         spec: {tier: security, selector: all(), ingress: [{action: Pass, source: {nets: [10.0.0.0/24]}}, {action: Deny}]}\n---\n\
         apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {name: deny-80, namespace: shop}\n\
         spec: {selector: app == 'db', ingress: [{action: Deny, protocol: TCP, destination: {ports: [80]}}, {action: Allow}]}\n",
    );
    let d = to_db(&s, 80);
    assert!(!d.allowed);
    assert!(
        d.by.contains("NetworkPolicy shop/deny-80 rule 0"),
        "{}",
        d.by
    );
    assert!(matches!(
        &d.steps[0],
        Step::Rule { tier, action: Action::Pass, .. } if tier == "security"
    ));
    let d = to_db(&s, 443);
    assert!(d.allowed, "{d:?}");
}

#[test]
fn not_nets_and_not_selectors_exclude() {
    let s = state(
        "apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {name: not-web, namespace: shop}\n\
         spec: {selector: app == 'db', ingress: [{action: Allow, source: {notSelector: app == 'web'}}, {action: Allow, source: {notNets: [10.0.0.1/32]}}]}\n",
    );
    assert!(!to_db(&s, 5432).allowed);
}

#[test]
fn a_source_port_rule_makes_the_answer_depend_on_it() {
    let s = state(
        "apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {name: sport, namespace: shop}\n\
         spec: {selector: app == 'db', ingress: [{action: Allow, protocol: TCP, source: {ports: [1024]}}]}\n",
    );
    let d = to_db(&s, 5432);
    assert!(!d.allowed && d.depends_on_source_port, "{d:?}");
}

#[test]
fn staged_policies_are_never_enforced() {
    let plain = state(
        "apiVersion: projectcalico.org/v3\nkind: Tier\nmetadata: {name: t}\nspec: {order: 1}\n",
    );
    let staged = state(
        "apiVersion: projectcalico.org/v3\nkind: Tier\nmetadata: {name: t}\nspec: {order: 1}\n---\n\
         apiVersion: projectcalico.org/v3\nkind: StagedGlobalNetworkPolicy\nmetadata: {name: deny-all}\n\
         spec: {selector: all(), types: [Ingress, Egress], ingress: [{action: Deny}], egress: [{action: Deny}]}\n---\n\
         apiVersion: projectcalico.org/v3\nkind: StagedNetworkPolicy\nmetadata: {name: deny, namespace: shop}\n\
         spec: {selector: all(), ingress: [{action: Deny}]}\n",
    );
    assert_eq!(plain, staged, "the dataplane's state is untouched");
}

#[test]
fn a_rule_that_does_not_match_says_why() {
    let (s, selectors) = graph(
        "apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {name: p, namespace: shop}\n\
         spec: {selector: app == 'db', ingress: [{action: Allow, protocol: UDP}, {action: Allow, protocol: TCP, destination: {ports: [5432, 6000:6010]}}, {action: Allow, source: {selector: app == 'admin'}}]}\n",
    );
    let ep = &s.endpoints["shop/node--1-k8s-db-eth0"];
    let p = Packet {
        src: "10.0.0.1".parse().expect("ip"),
        dst: "10.0.0.2".parse().expect("ip"),
        protocol: 6,
        dst_port: Some(80),
        src_port: None,
        icmp: None,
    };
    let d = evaluate(&s, ep, true, &p, &selectors);
    let Step::NoMatch { why, .. } = &d.steps[0] else {
        panic!("{:?}", d.steps)
    };
    assert_eq!(why[0], "rule 0: protocol UDP, not TCP");
    assert_eq!(
        why[1],
        "rule 1: destination port 80 is not 5432 or 6000:6010"
    );
    assert!(
        why[2].starts_with("rule 2: source 10.0.0.1 is not selected by selector")
            && why[2].contains("app == \"admin\""),
        "{}",
        why[2]
    );
}
