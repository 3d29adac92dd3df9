//! What outgoing NAT costs: TCP throughput and the rate of new TCP
//! connections from a pod to an external host (a namespace beyond the
//! node's second interface), with the pool's `natOutgoing` off (plain
//! routing: the external host routes the pool back) and on (masquerade
//! to the node's address), side by side in one run, alternating.
//!
//! `cargo bench -p calico-node --bench nat` (SECS per measurement,
//! default 5; ROUNDS, default 3; 1 and 1 when run as a test).

#![allow(clippy::print_stdout)]
#![allow(clippy::disallowed_methods)] // a benchmark owns the clock

mod common;
use calico_api::decode_manifest;
use calico_test_support::KillOnDrop;
use common::{connection_rate, external_host, knob, listener, seeded_datastore, TwoPods};
use std::net::IpAddr;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

const POOL: &str = "10.92.0.0/16";
const EXTERNAL: &str = "203.0.113.2";
const PORT: u16 = 7070;

fn main() {
    let (secs, rounds) = (knob("SECS", 1, 5), knob("ROUNDS", 1, 3));
    let (_dir, db, client) = seeded_datastore(POOL);
    let pods = TwoPods::new("natbench", "10.250.6.1/24", &db);
    // The external host, with a route back to the pool (for the runs
    // without NAT).
    let node = &pods.node;
    let ext = external_host(node, "natbench", "203.0.113.1", EXTERNAL);
    ext.ok(&["ip", "route", "add", POOL, "via", "203.0.113.1"]);
    let _iperf = KillOnDrop(
        Command::new("ip")
            .args(["netns", "exec", &ext.name, "iperf3", "-s"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("iperf3 server"),
    );
    // Accepts and closes; remembers who the last connection came from.
    let peer: Arc<Mutex<Option<IpAddr>>> = Arc::default();
    let seen = peer.clone();
    let l = listener(ext.path(), PORT);
    let _server = std::thread::spawn(move || {
        for c in l.incoming().flatten() {
            if let Ok(from) = c.peer_addr() {
                *seen
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(from.ip());
            }
        }
    });
    std::thread::sleep(std::time::Duration::from_millis(300));
    let set_nat = |on: bool| {
        let pool = format!(
            "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {{name: p}}\nspec: {{cidr: {POOL}, natOutgoing: {on}}}\n"
        );
        client
            .apply(decode_manifest(&pool).expect("pool").remove(0))
            .expect("pool");
        pods.felix(&db);
    };

    let mut runs: [Vec<(f64, f64)>; 2] = [Vec::new(), Vec::new()];
    for round in 0..rounds {
        let order = if round % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        for on in order {
            set_nat(on);
            let conns = connection_rate(&pods.client, &format!("{EXTERNAL}:{PORT}"), secs);
            let who = peer
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take();
            let node_addr: IpAddr = "203.0.113.1".parse().expect("ip");
            assert_eq!(
                who == Some(node_addr),
                on,
                "natOutgoing {on}: the external host saw {who:?}"
            );
            let bits = calico_test_support::iperf3(&pods.client.name, EXTERNAL, secs, false);
            runs[usize::from(on)].push((conns, bits));
        }
    }
    let median = |v: &[(f64, f64)], f: fn(&(f64, f64)) -> f64| {
        let mut x: Vec<f64> = v.iter().map(f).collect();
        x.sort_by(f64::total_cmp);
        x[x.len() / 2]
    };
    let (off, on) = (&runs[0], &runs[1]);
    println!("nat (SECS={secs}, ROUNDS={rounds}, medians; a pod to a host beyond the node)");
    let (c0, c1) = (median(off, |r| r.0), median(on, |r| r.0));
    println!(
        "  new TCP connections/s   routed {c0:>10.0}   natOutgoing {c1:>10.0}   ratio {:.3}",
        c1 / c0
    );
    let (b0, b1) = (median(off, |r| r.1), median(on, |r| r.1));
    println!(
        "  TCP throughput (Gbit/s) routed {:>10.2}   natOutgoing {:>10.2}   ratio {:.3}",
        b0 / 1e9,
        b1 / 1e9,
        b1 / b0
    );
}
