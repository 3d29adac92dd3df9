//! Pod-to-pod TCP throughput and 64-byte UDP packet rate through the
//! enforced dataplane, with no policy and with 1,000 policies and a 10,000
//! member network set, side by side in one run (iperf3, pods on one node).
//!
//! `cargo bench -p calico-node --bench policy_throughput` (SECS per
//! measurement, default 5).

#![allow(clippy::print_stdout)]

use calico_api::decode_manifest;

mod common;
use common::{seeded_datastore, TwoPods};

fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    let secs: u32 = std::env::var("SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if quick { 1 } else { 5 });
    let (_dir, db, client) = seeded_datastore("10.89.0.0/16");
    let pods = TwoPods::new("tput", "10.250.3.1/24", &db);
    let felix = || pods.felix(&db);
    felix();
    let base_tcp = pods.iperf(secs, false);
    let base_udp = pods.iperf(secs, true);

    // 1,000 policies on the server (999 that do not match iperf's traffic,
    // then one that allows it) and a 10,000-member set it is checked against.
    let mut manifest = String::new();
    let nets: Vec<String> = (0..10_000u32)
        .map(|i| format!("172.{}.{}.{}/32", 16 + (i >> 16), (i >> 8) & 0xff, i & 0xff))
        .collect();
    manifest.push_str(&format!("apiVersion: projectcalico.org/v3\nkind: GlobalNetworkSet\nmetadata: {{name: big, labels: {{feed: big}}}}\nspec: {{nets: [{}]}}\n", nets.join(", ")));
    for j in 0..999 {
        manifest.push_str(&format!("---\napiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {{name: p{j:04}}}\nspec: {{order: {j}, selector: app == 'server', ingress: [{{action: Deny, protocol: TCP, source: {{selector: feed == 'big'}}, destination: {{ports: [{}]}}}}]}}\n", 10_000 + j));
    }
    manifest.push_str("---\napiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: p9999}\nspec: {order: 9999, selector: app == 'server', ingress: [{action: Deny, source: {selector: feed == 'big'}}, {action: Allow}]}\n");
    for r in decode_manifest(&manifest).expect("policies") {
        client.create(r).expect("create");
    }
    felix();
    let pol_tcp = pods.iperf(secs, false);
    let pol_udp = pods.iperf(secs, true);
    println!(
        "TCP  no policy {:.2} Gbit/s | 1,000 policies + 10,000-member set {:.2} Gbit/s ({:.0}%)",
        base_tcp / 1e9,
        pol_tcp / 1e9,
        100.0 * pol_tcp / base_tcp
    );
    println!(
        "UDP 64 B  no policy {:.0} kpps | 1,000 policies + 10,000-member set {:.0} kpps ({:.0}%)",
        base_udp / 1e3,
        pol_udp / 1e3,
        100.0 * pol_udp / base_udp
    );
}
