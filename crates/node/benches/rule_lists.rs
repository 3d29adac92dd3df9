//! Rule lists that cost O(1): the rate of new TCP connections to a pod
//! whose policy allows it only at its 1,000th rule, against the same pod
//! with no policy (its profile allows everything), in one run. The 999
//! rules before it allow other ports: joined into one set lookup (the
//! dataplane joins runs of rules that decide alike). Then the same with
//! the actions alternating (Allow, Deny, ...): one verdict-map lookup.
//! For comparison, rules that also differ in their source, which neither
//! can express: the kernel walks 1,000 rules. Also the time to apply each
//! policy (the agent run once). Each is checked for real: a port the
//! policy does not list, and one a Deny rule lists, are dropped (their
//! servers listen, so a drop is told from a refusal); ports Allow rules
//! list are answered.
//!
//! `cargo bench -p calico-node --bench rule_lists` (SECS, default 5;
//! ROUNDS, default 3; 1 and 1 when run as a test).

#![allow(clippy::print_stdout)]
#![allow(clippy::disallowed_methods)] // a benchmark owns the clock

mod common;
use calico_api::decode_manifest;
use common::{connection_rate, in_netns, knob, listener, seeded_datastore, TwoPods};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const PORT: u16 = 7070;
const UNLISTED: u16 = 7071;
/// Listed by the first rule (Allow) and the second (Deny when alternating).
const FIRST: u16 = 10_000;
const SECOND: u16 = 10_001;
const RULES: u16 = 1000;

/// A policy on the server pod: RULES ingress rules, the last allowing PORT
/// from anywhere; the others allow (or, `alternate`, alternately deny)
/// 10000 + i, each (`sources`) only from a net of its own and `client`.
fn policy(alternate: bool, sources: bool, client: &str) -> String {
    let mut rules = Vec::new();
    for i in 0..RULES - 1 {
        let action = if alternate && i % 2 == 1 {
            "Deny"
        } else {
            "Allow"
        };
        let source = if sources {
            format!(
                "source: {{nets: [10.{}.{}.0/24, {client}/32]}}, ",
                100 + i / 256,
                i % 256
            )
        } else {
            String::new()
        };
        rules.push(format!(
            "{{action: {action}, protocol: TCP, {source}destination: {{ports: [{}]}}}}",
            10_000 + i
        ));
    }
    rules.push(format!(
        "{{action: Allow, protocol: TCP, destination: {{ports: [{PORT}]}}}}"
    ));
    format!(
        "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {{name: long}}\n\
         spec: {{selector: app == 'server', types: [Ingress], ingress: [{}]}}\n",
        rules.join(", ")
    )
}

fn serve(pods: &TwoPods, port: u16) {
    let l = listener(pods.server.path(), port);
    std::thread::spawn(move || {
        for c in l.incoming() {
            drop(c);
        }
    });
}

/// Whether a connection to `port` is answered (accepted) within 0.5 s.
fn answered(pods: &TwoPods, port: u16) -> bool {
    let to: SocketAddr = format!("{}:{port}", pods.server_ip).parse().expect("addr");
    in_netns(pods.client.path(), move || {
        std::net::TcpStream::connect_timeout(&to, Duration::from_millis(500)).is_ok()
    })
    .join()
    .expect("probe")
}

fn main() {
    let (secs, rounds) = (knob("SECS", 1, 5), knob("ROUNDS", 1, 3));
    let (_dir, db, client) = seeded_datastore("10.93.0.0/16");
    let pods = TwoPods::new("rlbench", "10.250.11.1/24", &db);
    for port in [PORT, UNLISTED, FIRST, SECOND] {
        serve(&pods, port);
    }
    std::thread::sleep(Duration::from_millis(200));
    let client_ip = pods
        .client
        .ok(&["ip", "-4", "-o", "addr", "show", "dev", "eth0"])
        .split_whitespace()
        .nth(3)
        .and_then(|a| a.split('/').next())
        .expect("the client's address")
        .to_string();
    let to = format!("{}:{PORT}", pods.server_ip);
    let rules_in_kernel = || {
        pods.node
            .ok(&["nft", "list", "table", "inet", "calico"])
            .matches("dport")
            .count()
    };
    // None, joined, a verdict map, walked.
    let set = |which: usize| -> Duration {
        if which == 0 {
            let _ = client.delete(calico_api::Kind::GlobalNetworkPolicy, None, "long", None);
        } else {
            let text = policy(which >= 2, which == 3, &client_ip);
            let r = decode_manifest(&text).expect("policy").remove(0);
            client.apply(r).expect("policy");
        }
        let start = Instant::now();
        pods.felix(&db);
        start.elapsed()
    };
    let mut rates: [Vec<f64>; 4] = Default::default();
    let mut apply = [Duration::ZERO; 4];
    for round in 0..rounds {
        let order: [usize; 4] = if round % 2 == 0 {
            [0, 1, 2, 3]
        } else {
            [3, 2, 1, 0]
        };
        for which in order {
            apply[which] = set(which);
            if which == 0 {
                assert!(answered(&pods, UNLISTED), "no policy: everything answers");
            } else {
                let listed = rules_in_kernel();
                if which == 3 {
                    assert!(listed >= usize::from(RULES), "{listed} rules");
                } else {
                    assert!(listed < 5, "{listed} rules: not joined or mapped");
                }
                assert!(answered(&pods, PORT), "the last rule's port is allowed");
                assert!(answered(&pods, FIRST), "the first rule's port is allowed");
                assert!(!answered(&pods, UNLISTED), "an unlisted port is dropped");
                if which >= 2 {
                    assert!(!answered(&pods, SECOND), "a Deny rule's port is dropped");
                }
            }
            rates[which].push(connection_rate(&pods.client, &to, secs));
        }
    }
    let median = |v: &[f64]| {
        let mut x = v.to_vec();
        x.sort_by(f64::total_cmp);
        x[x.len() / 2]
    };
    let [none, joined, mapped, walked] = [0, 1, 2, 3].map(|i| median(&rates[i]));
    println!(
        "rule_lists (SECS={secs}, ROUNDS={rounds}, medians; the allowing rule is the 1,000th)"
    );
    println!("  new TCP connections/s, no policy                 {none:>10.0}");
    println!(
        "  1,000 rules joined (one set lookup)              {joined:>10.0}   ratio {:.3} (goal >= 0.9)",
        joined / none
    );
    println!(
        "  1,000 rules alternating Allow/Deny (verdict map) {mapped:>10.0}   ratio {:.3} (goal >= 0.9)",
        mapped / none
    );
    println!(
        "  1,000 rules, each its own source too (walked)    {walked:>10.0}   ratio {:.3}",
        walked / none
    );
    println!(
        "  applying each policy (the agent run once): joined {:.0} ms, map {:.0} ms, walked {:.0} ms",
        apply[1].as_secs_f64() * 1e3,
        apply[2].as_secs_f64() * 1e3,
        apply[3].as_secs_f64() * 1e3
    );
}
