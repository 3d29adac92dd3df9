//! What flow logs cost the dataplane: the rate of new TCP connections and
//! of 64-byte UDP packets between two pods with flow logs off and on (the
//! agent running, its collector reading every logged verdict), side by
//! side in one run, and the agent's memory in each case. The goal is at
//! least 95 % of the rate with them off.
//!
//! `cargo bench -p calico-node --bench flow_logs` (SECS per measurement,
//! default 5; 1 when run as a test).

#![allow(clippy::print_stdout)]
#![allow(clippy::disallowed_methods)] // a benchmark owns the clock

mod common;
use calico_test_support::{cpu_secs, KillOnDrop};
use common::{bin, connection_rate, knob, listener, seeded_datastore, TwoPods};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const PORT: u16 = 7070;
/// Seconds between flushes with flow logs on (Calico's default is 15).
const FLUSH: u32 = 5;

/// The agent as a daemon in the node, until dropped; waits until it is ready.
fn felix(pods: &TwoPods, db: &str, flow_dir: Option<&std::path::Path>) -> KillOnDrop {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &pods.node.name])
        .arg(bin("calico-node"))
        .args(["felix", "--node", "node-1"])
        .env("CALICO_DATASTORE_PATH", db)
        .env("FELIX_HEALTHENABLED", "true")
        .env("FELIX_PROMETHEUSMETRICSENABLED", "true")
        .env_remove("DATASTORE_TYPE")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(dir) = flow_dir {
        cmd.env("FELIX_FLOWLOGSFILEENABLED", "true")
            .env("FELIX_FLOWLOGSFILEDIRECTORY", dir)
            .env("FELIX_FLOWLOGSFLUSHINTERVAL", FLUSH.to_string());
    }
    let child = KillOnDrop(cmd.spawn().expect("calico-node felix"));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ready = get(pods, "http://127.0.0.1:9099/readiness", 1).is_some();
        if ready {
            return child;
        }
        assert!(Instant::now() < deadline, "felix did not become ready");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `url` fetched inside the node (within `secs` seconds); None when that failed.
fn get(pods: &TwoPods, url: &str, secs: u32) -> Option<String> {
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &pods.node.name,
            "curl",
            "-sf",
            "--max-time",
        ])
        .arg(secs.to_string())
        .arg(url)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The agent's counter `name` (summed over the series whose labels
/// contain `with`).
fn metric(pods: &TwoPods, name: &str, with: &str) -> u64 {
    get(pods, "http://127.0.0.1:9091/metrics", 5)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with(name) && l.contains(with))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(f64::total_cmp);
    v
}

fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    let secs = knob("SECS", 1, 5);
    let (dir, db, _client) = seeded_datastore("10.91.0.0/16");
    let pods = TwoPods::new("flbench", "10.250.5.1/24", &db);
    let l = listener(pods.server.path(), PORT);
    let _server = std::thread::spawn(move || {
        for c in l.incoming() {
            drop(c);
        }
    });
    std::thread::sleep(Duration::from_millis(200));

    // Off and on alternate (on first in every other round), ROUNDS times;
    // medians, so a busy moment of this machine counts once at most.
    let rounds: usize = std::env::var("ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if quick { 1 } else { 5 });
    let mut runs: [Vec<(f64, f64, u64)>; 2] = [Vec::new(), Vec::new()];
    for round in 0..rounds {
        let order = if round % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        for on in order {
            let flow_dir = dir.path().join("flows");
            let agent = felix(&pods, &db, on.then_some(flow_dir.as_path()));
            let cpu0 = cpu_secs(agent.0.id());
            let conns = connection_rate(&pods.client, &format!("{}:{PORT}", pods.server_ip), secs);
            let cpu = (cpu_secs(agent.0.id()) - cpu0) * 1000.0;
            println!(
                "  {} agent CPU while connecting: {cpu:.0} ms",
                if on { "on " } else { "off" }
            );
            let pps = pods.iperf(secs, true);
            let rss = calico_test_support::rss_kib(agent.0.id());
            if on {
                // Every connection made was recorded at both ends (the
                // client's egress, carried in the mark to the server's
                // ingress log), or the agent says it lost some: flow logs
                // must not look cheap by dropping what they cost.
                std::thread::sleep(Duration::from_millis(600));
                let made = (conns * f64::from(secs)).round() as u64;
                let logged = metric(
                    &pods,
                    "felix_policy_rule_connections_total",
                    "action=\"allow\"",
                );
                let overruns = metric(&pods, "felix_flow_log_overruns_total", "");
                println!(
                    "  round {round}: {made} connections made, {logged} allowed verdicts recorded (2 per connection, plus iperf's), {overruns} overruns"
                );
                assert!(
                    overruns > 0 || logged >= 2 * made,
                    "logged packets were lost without an overrun being counted"
                );
            }
            drop(agent);
            runs[usize::from(on)].push((conns, pps, rss));
            if runs[0].len() == runs[1].len() {
                let (off, on) = (runs[0][round], runs[1][round]);
                println!(
                    "  round {round}: connections/s off {:.0} on {:.0} ({:.3}), packets/s off {:.0} on {:.0} ({:.3})",
                    off.0,
                    on.0,
                    on.0 / off.0,
                    off.1,
                    on.1,
                    on.1 / off.1
                );
            }
            if on && secs * 2 > FLUSH {
                let logged =
                    std::fs::read_to_string(flow_dir.join("flows.log")).unwrap_or_default();
                assert!(!logged.is_empty(), "flow logs on, but nothing was recorded");
            }
        }
    }
    let median = |v: &[(f64, f64, u64)], f: fn(&(f64, f64, u64)) -> f64| {
        sorted(v.iter().map(f).collect())[v.len() / 2]
    };
    let row = |v: &[(f64, f64, u64)]| {
        (
            0,
            median(v, |r| r.0),
            median(v, |r| r.1),
            median(v, |r| r.2 as f64) as u64,
        )
    };
    let rows = [row(&runs[0]), row(&runs[1])];
    let (off, on) = (rows[0], rows[1]);
    // Each round's on/off ratio (the two ran minutes apart at most): their
    // median and spread, beside the ratio of the medians.
    let paired = |f: fn(&(f64, f64, u64)) -> f64| {
        let r = sorted(
            runs[0]
                .iter()
                .zip(&runs[1])
                .map(|(a, b)| f(b) / f(a))
                .collect(),
        );
        (r[r.len() / 2], r[0], r[r.len() - 1])
    };
    let (c, p) = (paired(|r| r.0), paired(|r| r.1));
    println!("flow_logs (SECS={secs}, ROUNDS={rounds}, medians; two pods on one node, the agent running)");
    println!(
        "  per-round ratios: connections median {:.3} (lowest {:.3}, highest {:.3}); packets median {:.3} ({:.3}-{:.3})",
        c.0, c.1, c.2, p.0, p.1, p.2
    );
    println!(
        "  new TCP connections/s   off {:>10.0}   on {:>10.0}   ratio {:.3} (goal >= 0.95)",
        off.1,
        on.1,
        on.1 / off.1
    );
    println!(
        "  64-byte UDP packets/s   off {:>10.0}   on {:>10.0}   ratio {:.3} (goal >= 0.95)",
        off.2,
        on.2,
        on.2 / off.2
    );
    println!(
        "  agent RSS (KiB)         off {:>10}   on {:>10}",
        off.3, on.3
    );
}
