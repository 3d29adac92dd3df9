//! Full replace vs delta for one small change to a large table, in the same
//! run, inside a namespace of its own: 1,000 local endpoints, 1,000
//! policies, a 10,000-member set. The changes are one policy's port (one
//! chain rewritten) and one endpoint added or removed.
//!
//! `cargo bench -p calico-dataplane --bench apply` (RUNS, default 20).

#![allow(clippy::print_stdout)]
// A benchmark: it measures time.
#![allow(clippy::disallowed_methods)]

use calico_api::decode_manifest;
use calico_calc::{CalcGraph, DesiredState, Update};
use calico_dataplane::{build, Table};
use calico_kernel::{Applied, Firewall, Nft};
use calico_test_support::Netns;
use std::fmt::Write;
use std::time::{Duration, Instant};

fn manifest(port: u16, extra_endpoint: bool) -> String {
    let mut m = String::new();
    let _ = writeln!(m, "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkSet\nmetadata: {{name: big, labels: {{feed: big}}}}\nspec:\n  nets:");
    for i in 0..10_000u32 {
        let _ = writeln!(m, "  - 172.{}.{}.0/24", 16 + i / 256 % 16, i % 256);
    }
    for i in 0..1_000u32 {
        let _ = writeln!(m, "---\napiVersion: projectcalico.org/v3\nkind: WorkloadEndpoint\nmetadata: {{name: ep{i}, namespace: default, labels: {{app: a{}}}}}\nspec: {{node: node-1, interfaceName: cali{i:011}, ipNetworks: [10.70.{}.{}/32]}}", i % 100, i / 256, i % 256);
        let p = if i == 0 { port } else { 80 };
        let _ = writeln!(m, "---\napiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {{name: p{i}}}\nspec: {{selector: app == 'a{}', ingress: [{{action: Allow, protocol: TCP, source: {{selector: app == 'a{}'}}, destination: {{ports: [{p}]}}}}, {{action: Deny, source: {{selector: feed == 'big'}}}}]}}", i % 100, (i + 1) % 100);
    }
    if extra_endpoint {
        let _ = writeln!(m, "---\napiVersion: projectcalico.org/v3\nkind: WorkloadEndpoint\nmetadata: {{name: extra, namespace: default, labels: {{app: a1}}}}\nspec: {{node: node-1, interfaceName: cali0000extra, ipNetworks: [10.71.0.1/32]}}");
    }
    m
}

fn table(port: u16, extra: bool) -> Table {
    let mut g = CalcGraph::new("node-1");
    let mut state = DesiredState::default();
    for r in decode_manifest(&manifest(port, extra)).expect("valid") {
        state.apply(&g.apply(Update::Put(r))).expect("ordering");
    }
    build(&state)
}

fn median(mut v: Vec<Duration>) -> f64 {
    v.sort();
    v[v.len() / 2].as_secs_f64() * 1e3
}

fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    let runs: usize = std::env::var("RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if quick { 1 } else { 20 });
    let ns = Netns::new("bench-nft");
    let nft = Nft::in_netns(&ns.name);
    let base = table(80, false);
    let changed = table(81, false);
    let grown = table(80, true);
    println!(
        "table: {} chains, {} sets and maps, {} lines",
        base.chains.len(),
        base.collections.len(),
        base.to_text().lines().count()
    );
    nft.apply(&base.to_text()).expect("load");
    let (mut full, mut delta, mut ep_delta) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs {
        for (from, to) in [(&base, &changed), (&changed, &base)] {
            let t = Instant::now();
            nft.apply(&to.to_text()).expect("full");
            full.push(t.elapsed());
            nft.apply(&from.to_text()).expect("back");
            let t = Instant::now();
            assert_eq!(nft.update(Some(from), to).expect("delta"), Applied::Delta);
            delta.push(t.elapsed());
        }
        for (from, to) in [(&base, &grown), (&grown, &base)] {
            let t = Instant::now();
            assert_eq!(nft.update(Some(from), to).expect("delta"), Applied::Delta);
            ep_delta.push(t.elapsed());
        }
    }
    let (f, d, e) = (median(full), median(delta), median(ep_delta));
    println!(
        "one policy change: full replace median {f:.1} ms, delta {d:.1} ms ({:.3}x)",
        d / f
    );
    println!(
        "one endpoint added or removed: delta {e:.1} ms ({:.3}x of a full replace)",
        e / f
    );
}
