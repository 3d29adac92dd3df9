//! Calculation graph update cost at cluster scale: 100,000 endpoints
//! (1,000 on this node) in 100 namespaces, 10,000 policies with rule
//! selectors. Measures one policy change and one local endpoint add (each
//! undone in the same iteration, so the state stays the same); the
//! baseline in the same run is one selector evaluation against one label set.
// A benchmark: it measures time.
#![allow(clippy::disallowed_methods)]

use calico_api::{
    Action, EntityRule, NetworkPolicySpec, Object, ObjectMeta, PolicyType, Resource, Rule,
    WorkloadEndpointSpec,
};
use calico_calc::{CalcGraph, Update};
use calico_selector::Selector;
use criterion::{criterion_group, criterion_main, Criterion};
use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::Instant;

const ENDPOINTS: usize = 100_000;
const LOCAL: usize = 1_000;
const POLICIES: usize = 10_000;
const NAMESPACES: usize = 100;
const APPS: usize = 1_000;

fn endpoint(i: usize, node: &str) -> Resource {
    let ns = format!("ns{}", i % NAMESPACES);
    let labels = BTreeMap::from([
        ("app".to_string(), format!("app{}", i % APPS)),
        ("role".to_string(), format!("r{}", i % 50)),
        ("projectcalico.org/namespace".to_string(), ns.clone()),
        (
            "projectcalico.org/orchestrator".to_string(),
            "k8s".to_string(),
        ),
    ]);
    let octets = [10, (i >> 16) as u8, (i >> 8) as u8, i as u8];
    Resource::WorkloadEndpoint(Object::new(
        ObjectMeta {
            name: format!("ep{i}"),
            namespace: Some(ns.clone()),
            labels,
            ..Default::default()
        },
        WorkloadEndpointSpec {
            node: node.into(),
            interface_name: format!("cali{i:011}"),
            ip_networks: vec![format!(
                "{}.{}.{}.{}/32",
                octets[0], octets[1], octets[2], octets[3]
            )
            .parse()
            .expect("cidr")],
            profiles: vec![format!("kns.{ns}")],
            ..Default::default()
        },
    ))
}

fn policy(j: usize, port: u16) -> Resource {
    let mut rule = Rule::allow();
    rule.protocol = Some(calico_net::Protocol::tcp());
    rule.source = EntityRule {
        selector: format!("role == 'r{}'", j % 50).parse().expect("selector"),
        ..Default::default()
    };
    rule.destination = EntityRule {
        ports: vec![calico_net::Port::single(port)],
        ..Default::default()
    };
    rule.action = Action::Allow;
    Resource::NetworkPolicy(Object::new(
        ObjectMeta {
            name: format!("p{j}"),
            namespace: Some(format!("ns{}", j % NAMESPACES)),
            ..Default::default()
        },
        NetworkPolicySpec {
            tier: "default".into(),
            order: Some((j % 100) as f64),
            selector: format!("app == 'app{}'", j % APPS)
                .parse()
                .expect("selector"),
            ingress: vec![rule],
            types: vec![PolicyType::Ingress],
            ..Default::default()
        },
    ))
}

fn build() -> CalcGraph {
    let start = Instant::now();
    let mut g = CalcGraph::new("node-1");
    // As the agent loads a listing: one batch.
    let policies = (0..POLICIES).map(|j| Update::Put(policy(j, 80)));
    let endpoints = (0..ENDPOINTS).map(|i| {
        // Every 100th endpoint is on this node.
        let node = if i % (ENDPOINTS / LOCAL) == 0 {
            "node-1".to_string()
        } else {
            format!("node-{}", 2 + i % 999)
        };
        Update::Put(endpoint(i, &node))
    });
    let intents = g.apply_all(policies.chain(endpoints));
    black_box(intents);
    eprintln!(
        "built the graph ({POLICIES} policies, {ENDPOINTS} endpoints, {LOCAL} local) in {:.1?}",
        start.elapsed()
    );
    g
}

fn bench(c: &mut Criterion) {
    let sel = Selector::parse("app == 'app7'").expect("selector");
    let labels: BTreeMap<String, String> =
        BTreeMap::from([("app".into(), "app7".into()), ("role".into(), "r1".into())]);
    c.bench_function("baseline/one_selector_evaluation", |b| {
        b.iter(|| black_box(&sel).matches(black_box(&labels)))
    });

    let mut g = build();
    let mut g2 = c.benchmark_group("calc");
    g2.sample_size(20);
    let mut port = 81;
    g2.bench_function("policy_change", |b| {
        b.iter(|| {
            port = if port == 81 { 82 } else { 81 };
            black_box(g.apply(Update::Put(policy(0, port))))
        })
    });
    g2.bench_function("local_endpoint_add_then_delete", |b| {
        b.iter(|| {
            let added = g.apply(Update::Put(endpoint(ENDPOINTS, "node-1")));
            let removed = g.apply(Update::Delete {
                kind: calico_api::Kind::WorkloadEndpoint,
                namespace: Some(format!("ns{}", ENDPOINTS % NAMESPACES)),
                name: format!("ep{ENDPOINTS}"),
            });
            black_box((added, removed))
        })
    });
    g2.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
