//! From `calicoctl apply` of a policy to enforcement on every node, for a
//! 3-node and a 10-node lab: (a) until `calico-lab sync` reports every
//! node's dataplane at the write's revision (a deny on a target pod),
//! (b) until probes from a pod on every node get through (its removal;
//! probes with a 50 ms timeout, retried).
//! The baseline in the same run is one probe's round trip.
//!
//! `cargo bench -p calico-lab --bench enforce` (NODES, default "3,10";
//! RUNS per size, default 10).

#![allow(clippy::print_stdout)]
// A benchmark: it measures time.
#![allow(clippy::disallowed_methods)]

use std::time::{Duration, Instant};

use calico_test_support::{output_text, LabCli as Lab};

/// `calicoctl apply` alone (the benchmark times what follows).
fn apply(lab: &Lab, yaml: &str) {
    let out = lab.calicoctl(&["apply", "-f", "-"], yaml);
    assert!(out.status.success(), "{}", output_text(&out));
}

fn policy(action: &str) -> String {
    format!("apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {{name: bench}}\nspec: {{order: 1, selector: app == 'target', ingress: [{{action: {action}}}]}}\n")
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    let sizes: Vec<usize> = std::env::var("NODES")
        .ok()
        .map(|s| s.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_else(|| if quick { vec![2] } else { vec![3, 10] });
    let runs: usize = std::env::var("RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if quick { 2 } else { 10 });
    println!("| nodes | apply -> sync reports all nodes (median) | apply -> every node's probe sees it (median) | one probe (baseline) |");
    println!("| --- | --- | --- | --- |");
    for n in sizes {
        let lab = Lab::new(
            format!("bench{}-{n}", std::process::id()),
            std::path::Path::new(env!("CARGO_BIN_EXE_calico-lab")),
        );
        lab.ok(&["up", "--nodes", &n.to_string()]);
        lab.ok(&["ns", "create", "b"]);
        lab.ok(&[
            "pod",
            "create",
            "b/target",
            "--node",
            "node-1",
            "--labels",
            "app=target",
        ]);
        let sources: Vec<String> = (1..=n).map(|i| format!("b/src-{i}")).collect();
        for (i, s) in sources.iter().enumerate() {
            lab.ok(&[
                "pod",
                "create",
                s,
                "--node",
                &format!("node-{}", i + 1),
                "--labels",
                "app=src",
            ]);
        }
        let labr = &lab;
        let probe_all = |want: &str| {
            std::thread::scope(|sc| {
                let hs: Vec<_> = sources
                    .iter()
                    .map(|s| {
                        sc.spawn(move || {
                            labr.ok(&["probe", s, "b/target", "--port", "80", "--timeout-ms", "50"])
                                .trim()
                                == want
                        })
                    })
                    .collect();
                hs.into_iter().all(|h| h.join().unwrap_or(false))
            })
        };
        let t = Instant::now();
        for _ in 0..5 {
            lab.ok(&["probe", &sources[0], "b/target", "--port", "80"]);
        }
        let probe = t.elapsed() / 5;
        let (mut to_sync, mut to_probe) = (Vec::new(), Vec::new());
        // Each run: a deny, timed to `sync`; then an allow, timed until the
        // probes from every node get through (probes answer at once when
        // allowed; a denied one waits out its 50 ms timeout and is retried).
        for _ in 0..runs {
            let t = Instant::now();
            apply(&lab, &policy("Deny"));
            lab.ok(&["sync", "--timeout", "30"]);
            to_sync.push(t.elapsed());
            let t = Instant::now();
            apply(&lab, &policy("Allow"));
            while !probe_all("allowed") {
                assert!(t.elapsed() < Duration::from_secs(30), "never enforced");
            }
            to_probe.push(t.elapsed());
        }
        println!(
            "| {n} | {:.0?} | {:.0?} | {probe:.0?} |",
            median(to_sync),
            median(to_probe)
        );
    }
}
