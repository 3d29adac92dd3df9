//! Selector parse and evaluation cost. The baseline in the same run is a
//! plain `BTreeMap` lookup of one label, so results read as a ratio.

use calico_selector::Selector;
use criterion::{criterion_group, criterion_main, Criterion};
use std::collections::BTreeMap;
use std::hint::black_box;

const SELECTORS: &[(&str, &str)] = &[
    ("eq", "app == 'web'"),
    ("has_and_in", "has(tier) && env in {'prod', 'staging', 'dev'}"),
    (
        "complex",
        "(app == 'web' || app starts with 'api-') && env not in {'test'} && !has(quarantine) && projectcalico.org/namespace == 'shop'",
    ),
];

fn labels() -> BTreeMap<String, String> {
    [
        ("app", "api-gateway"),
        ("env", "prod"),
        ("tier", "frontend"),
        ("version", "v2"),
        ("team", "payments"),
        ("projectcalico.org/namespace", "shop"),
        ("projectcalico.org/orchestrator", "k8s"),
        ("pod-template-hash", "7d9c8b"),
        ("zone", "a"),
        ("region", "eu-west"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

fn bench(c: &mut Criterion) {
    let labels = labels();
    c.bench_function("baseline/one_label_lookup", |b| {
        b.iter(|| black_box(&labels).get(black_box("app")).map(|v| v == "web"))
    });
    for (name, text) in SELECTORS {
        let sel = Selector::parse(text).expect("benchmark selector parses");
        c.bench_function(&format!("evaluate/{name}"), |b| {
            b.iter(|| black_box(&sel).matches(black_box(&labels)))
        });
        c.bench_function(&format!("parse/{name}"), |b| {
            b.iter(|| Selector::parse(black_box(text)))
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
