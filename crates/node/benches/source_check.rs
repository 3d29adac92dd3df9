//! What the workload source check costs: pod-to-pod TCP throughput and
//! 64-byte UDP packet rate through the agent's table with its prerouting
//! source check, and with that one chain emptied (everything else the
//! same), alternating in one run; medians and their ratio.
//!
//! `cargo bench -p calico-node --bench source_check` (SECS per
//! measurement, default 5; ROUNDS, default 3).

#![allow(clippy::print_stdout)]

mod common;
use common::{seeded_datastore, TwoPods};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    let env = |k: &str, d: u32| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let secs = env("SECS", if quick { 1 } else { 5 });
    let rounds = env("ROUNDS", if quick { 1 } else { 3 });
    let (_dir, db, _) = seeded_datastore("10.91.0.0/16");
    let pods = TwoPods::new("srcchk", "10.250.16.1/24", &db);
    let (mut with, mut without) = ((Vec::new(), Vec::new()), (Vec::new(), Vec::new()));
    for _ in 0..rounds {
        pods.felix(&db);
        with.0.push(pods.iperf(secs, false));
        with.1.push(pods.iperf(secs, true));
        pods.node
            .ok(&["nft", "flush", "chain", "inet", "calico", "prerouting"]);
        without.0.push(pods.iperf(secs, false));
        without.1.push(pods.iperf(secs, true));
        // The agent's next full load puts the chain back.
        pods.node.ok(&["nft", "delete", "table", "inet", "calico"]);
    }
    let (tw, uw, to, uo) = (
        median(with.0),
        median(with.1),
        median(without.0),
        median(without.1),
    );
    println!(
        "TCP        without source check {:.2} Gbit/s | with {:.2} Gbit/s | ratio {:.2}",
        to / 1e9,
        tw / 1e9,
        tw / to
    );
    println!(
        "UDP 64 B   without source check {:.0} kpps | with {:.0} kpps | ratio {:.2}",
        uo / 1e3,
        uw / 1e3,
        uw / uo
    );
}
