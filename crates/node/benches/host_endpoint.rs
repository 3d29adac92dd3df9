//! What a host endpoint costs the node's own traffic: new TCP connections
//! per second and TCP throughput from an external host (a namespace
//! beyond the node's `ext0`) to servers in the node's own namespace, with
//! no host endpoint, with one on `ext0` under a normal policy allowing the
//! ports (after 50 rules that do not match: failsafe chain, tiers,
//! profiles, conntrack), and with the same allow as doNotTrack policy
//! (untracked: no conntrack entry at all), side by side in one run,
//! alternating.
//!
//! `cargo bench -p calico-node --bench host_endpoint` (SECS per
//! measurement, default 5; ROUNDS, default 3; 1 and 1 when run as a test).

#![allow(clippy::print_stdout)]
#![allow(clippy::disallowed_methods)] // a benchmark owns the clock

mod common;
use calico_api::decode_manifest;
use calico_test_support::{KillOnDrop, Netns};
use common::{bin, connection_rate, external_host, knob, listener, seeded_datastore};
use std::process::{Command, Stdio};

const NODE: &str = "203.0.113.1";
const EXTERNAL: &str = "203.0.113.2";
const PORT: u16 = 7070;
const IPERF: u16 = 5201;

/// 50 rules that match nothing the benchmark sends, then the allow.
fn rules(egress_too: bool) -> String {
    let misses: Vec<String> = (0..50)
        .map(|i| {
            format!(
                "{{action: Deny, protocol: TCP, source: {{nets: [198.51.{}.{}/32]}}}}",
                i / 250,
                i % 250 + 1
            )
        })
        .collect();
    let allow =
        format!("{{action: Allow, protocol: TCP, destination: {{ports: [{PORT}, {IPERF}]}}}}");
    let egress = if egress_too {
        format!(
            ", egress: [{{action: Allow, protocol: TCP, source: {{ports: [{PORT}, {IPERF}]}}}}]"
        )
    } else {
        String::new()
    };
    format!("ingress: [{}, {allow}]{egress}", misses.join(", "))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Setup {
    None,
    Normal,
    Untracked,
}

fn main() {
    let (secs, rounds) = (knob("SECS", 1, 5), knob("ROUNDS", 1, 3));
    let (_dir, db, client) = seeded_datastore("10.93.0.0/16");
    let node = Netns::new("hepbench-node");
    node.make_node("10.250.12.1/24");
    node.ok(&["ip", "link", "set", "lo", "up"]);
    let ext = external_host(&node, "hepbench", NODE, EXTERNAL);
    let _iperf = KillOnDrop(
        Command::new("ip")
            .args(["netns", "exec", &node.name, "iperf3", "-s"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("iperf3 server"),
    );
    let l = listener(node.path(), PORT);
    let _server = std::thread::spawn(move || for _ in l.incoming() {});
    calico_test_support::wait_listening(&node.name, "tcp", IPERF);

    let apply = |yaml: &str| {
        for r in decode_manifest(yaml).expect("manifest") {
            client.apply(r).expect("apply");
        }
    };
    let hep = "apiVersion: projectcalico.org/v3\nkind: HostEndpoint\nmetadata: {name: node-1-ext0, labels: {edge: 'true'}}\nspec: {node: node-1, interfaceName: ext0}\n";
    let set = |setup: Setup| {
        for (kind, name) in [
            (calico_api::Kind::HostEndpoint, "node-1-ext0"),
            (calico_api::Kind::GlobalNetworkPolicy, "bench"),
        ] {
            let _ = client.delete(kind, None, name, None);
        }
        match setup {
            Setup::None => {}
            Setup::Normal => apply(&format!(
                "{hep}---\napiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {{name: bench}}\nspec: {{selector: has(edge), types: [Ingress, Egress], {}, egress: [{{action: Allow}}]}}\n",
                rules(false)
            )),
            Setup::Untracked => apply(&format!(
                "{hep}---\napiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {{name: bench}}\nspec: {{selector: has(edge), doNotTrack: true, applyOnForward: true, types: [Ingress, Egress], {}}}\n",
                rules(true)
            )),
        }
        calico_test_support::felix_once(&bin("calico-node"), &node.path(), "node-1", &db);
        let listed = node.ok(&["nft", "list", "table", "inet", "calico"]);
        assert_eq!(
            listed.contains("hep-in"),
            setup != Setup::None,
            "{setup:?}: {listed}"
        );
    };

    let setups = [Setup::None, Setup::Normal, Setup::Untracked];
    let mut runs: Vec<Vec<(f64, f64)>> = vec![Vec::new(); setups.len()];
    for round in 0..rounds {
        let mut order: Vec<usize> = (0..setups.len()).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        for i in order {
            set(setups[i]);
            let conns = connection_rate(&ext, &format!("{NODE}:{PORT}"), secs);
            assert!(conns > 0.0, "{:?}: no connection got through", setups[i]);
            let bits = calico_test_support::iperf3(&ext.name, NODE, secs, false);
            runs[i].push((conns, bits));
        }
    }
    let median = |v: &[(f64, f64)], f: fn(&(f64, f64)) -> f64| {
        let mut x: Vec<f64> = v.iter().map(f).collect();
        x.sort_by(f64::total_cmp);
        x[x.len() / 2]
    };
    println!(
        "host endpoint (SECS={secs}, ROUNDS={rounds}, medians; an external host to the node's own servers)"
    );
    let (c0, b0) = (median(&runs[0], |r| r.0), median(&runs[0], |r| r.1));
    println!(
        "  {:<34} {:>10.0} conn/s  {:>7.2} Gbit/s",
        "no host endpoint",
        c0,
        b0 / 1e9
    );
    for (i, what) in [
        (1, "host endpoint, normal policy"),
        (2, "host endpoint, doNotTrack policy"),
    ] {
        let (c, b) = (median(&runs[i], |r| r.0), median(&runs[i], |r| r.1));
        println!(
            "  {what:<34} {c:>10.0} conn/s  {:>7.2} Gbit/s   ratios {:.3} / {:.3}",
            b / 1e9,
            c / c0,
            b / b0
        );
    }
}
