//! Learning a full feed: N prefixes announced by a feeder (our speaker,
//! in a process of its own, sending as fast as it can), received and
//! installed into the kernel by our speaker and, in the same run, by BIRD.
//! Each receiver is a separate process, passive, in a namespace of its
//! own; the time runs from the feeder's start until the receiver's main
//! table holds all N routes. Also reported: the span from the first route
//! installed to the last (without session set-up), and the receiver's RSS.
//! (A BIRD feeder was tried first: it paces its export in batches of 256
//! routes and left the last batch waiting up to 3 s on its event loop,
//! which measured BIRD's sending rather than the receivers.)
//!
//! The receiver's route count is polled every 20 ms from
//! /proc/net/fib_triestat.
//!
//! `cargo bench -p calico-bgp --bench learn` (PREFIXES, default
//! "10000,100000"; RUNS per size, default 3).

#![allow(clippy::print_stdout)]
// A benchmark: it measures time.
#![allow(clippy::disallowed_methods)]

use calico_bgp::{KernelFib, PeerConfig, PeerKind, Speaker, SpeakerConfig};
use calico_test_support::{Fabric, KillOnDrop, Netns};
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn prefix(i: u32) -> ipnet::IpNet {
    ipnet::IpNet::new(Ipv4Addr::from(0x0a80_0000u32 + i * 8).into(), 29).expect("prefix")
}

/// Receives nothing into any kernel: the feeder's FIB.
struct NoFib;
impl calico_bgp::Fib for NoFib {
    fn apply(&mut self, _: &[calico_bgp::FibOp]) {}
}

fn peer(addr: &str, passive: bool) -> PeerConfig {
    PeerConfig {
        passive,
        ..PeerConfig::new(addr.parse().expect("ip"), 64512, PeerKind::Global)
    }
}

/// The child processes: `LEARN_ROLE=feeder` announces PREFIXES prefixes
/// to 10.250.40.2; `LEARN_ROLE=receiver` takes them into the kernel.
/// Both run until killed.
fn child(role: &str) -> ! {
    let n: u32 = std::env::var("PREFIXES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let (id, fib, p): (Ipv4Addr, Box<dyn calico_bgp::Fib>, PeerConfig) = if role == "feeder" {
        (
            Ipv4Addr::new(10, 250, 40, 1),
            Box::new(NoFib),
            peer("10.250.40.2", false),
        )
    } else {
        (
            Ipv4Addr::new(10, 250, 40, 2),
            Box::new(KernelFib::new().expect("netlink")),
            peer("10.250.40.1", true),
        )
    };
    let mut cfg = SpeakerConfig::new(id, 64512);
    cfg.hold_time = 240;
    let sp = Speaker::start(cfg, fib).expect("speaker");
    if role == "feeder" {
        sp.set_local((0..n).map(prefix).collect());
    }
    sp.set_peers(vec![p]);
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

fn spawn_child(ns: &Netns, role: &str, n: u32) -> KillOnDrop {
    KillOnDrop(
        Command::new("ip")
            .args(["netns", "exec", &ns.name])
            .arg(std::env::current_exe().expect("exe"))
            .env("LEARN_ROLE", role)
            .env("PREFIXES", n.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("child"),
    )
}

const RECEIVER_CONF: &str = "router id 10.250.40.2;\nprotocol device { scan time 10; }\n\
protocol kernel { ipv4 { import none; export all; }; }\n\
protocol bgp upstream { local 10.250.40.2 as 64512; neighbor 10.250.40.1 as 64512; direct; passive on;\n  \
ipv4 { import all; export none; gateway direct; }; }\n";

fn bird(ns: &Netns, conf: &str) -> (KillOnDrop, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bird.conf");
    std::fs::write(&path, conf).expect("write");
    let check = Command::new("bird")
        .arg("-p")
        .arg("-c")
        .arg(&path)
        .output()
        .expect("bird");
    assert!(
        check.status.success(),
        "bird config: {}",
        String::from_utf8_lossy(&check.stderr)
    );
    let proc = Command::new("ip")
        .args(["netns", "exec", &ns.name, "bird", "-f", "-c"])
        .arg(&path)
        .arg("-s")
        .arg(dir.path().join("ctl"))
        .arg("-P")
        .arg(dir.path().join("pid"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("bird (make test installs bird2)");
    (KillOnDrop(proc), dir)
}

/// IPv4 prefixes in the namespace's main table, from the kernel's trie
/// statistics (far cheaper than listing 100,000 routes on every poll).
fn route_count(ns: &Netns) -> usize {
    let out = ns.exec(&["cat", "/proc/net/fib_triestat"]);
    let text = String::from_utf8_lossy(&out.stdout);
    let main = text.split("Local:").next().unwrap_or("");
    main.lines()
        .find_map(|l| l.trim().strip_prefix("Prefixes:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

struct Run {
    total: Duration,
    spread: Duration,
}

/// Waits for `want` routes; returns (from start, first route to last).
fn watch(ns: &Netns, base: usize, want: usize, start: Instant) -> Run {
    let mut first = None;
    loop {
        let n = route_count(ns).saturating_sub(base);
        if n > 0 && first.is_none() {
            first = Some(start.elapsed());
        }
        if n >= want {
            let total = start.elapsed();
            return Run {
                total,
                spread: total - first.unwrap_or(total),
            };
        }
        assert!(
            start.elapsed() < Duration::from_secs(600),
            "only {n} of {want} routes arrived"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One run: the receiver up and passive, then the feeder started; the
/// receiver's memory once everything is installed.
fn run(feeder: &Netns, rx: &Netns, n: u32, ours: bool) -> (Run, u64) {
    let base = route_count(rx);
    let (receiver, _dir) = if ours {
        (spawn_child(rx, "receiver", 0), None)
    } else {
        let (p, d) = bird(rx, RECEIVER_CONF);
        (p, Some(d))
    };
    std::thread::sleep(Duration::from_millis(300));
    let start = Instant::now();
    let f = spawn_child(feeder, "feeder", n);
    let r = watch(rx, base, n as usize, start);
    let mem = calico_test_support::rss_kib(receiver.0.id());
    drop(f);
    drop(receiver);
    // Killed receivers leave their routes: flush them for the next run.
    rx.ok(&["ip", "route", "flush", "proto", "bird"]);
    rx.ok(&["ip", "route", "flush", "proto", "bgp"]);
    (r, mem)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    if let Ok(role) = std::env::var("LEARN_ROLE") {
        child(&role);
    }
    let quick = !std::env::args().any(|a| a == "--bench");
    let sizes: Vec<u32> = std::env::var("PREFIXES")
        .ok()
        .map(|s| s.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_else(|| {
            if quick {
                vec![1000]
            } else {
                vec![10_000, 100_000]
            }
        });
    let runs: usize = std::env::var("RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if quick { 1 } else { 3 });
    let fabric = Fabric::new("learn-fab");
    let (feeder, rx) = (Netns::new("learn-feed"), Netns::new("learn-rx"));
    fabric.attach(&feeder, "10.250.40.1/24");
    fabric.attach(&rx, "10.250.40.2/24");
    println!("| prefixes | receiver | feed start -> all installed (median) | first -> last route | receiver RSS (largest) |");
    println!("| --- | --- | --- | --- | --- |");
    for n in sizes {
        let (mut o_t, mut o_s, mut b_t, mut b_s) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let (mut o_mem, mut b_mem) = (0, 0);
        for _ in 0..runs {
            let (r, m) = run(&feeder, &rx, n, true);
            o_t.push(r.total);
            o_s.push(r.spread);
            o_mem = o_mem.max(m);
            let (r, m) = run(&feeder, &rx, n, false);
            b_t.push(r.total);
            b_s.push(r.spread);
            b_mem = b_mem.max(m);
        }
        let (ot, bt) = (median(o_t), median(b_t));
        let (os, bs) = (median(o_s), median(b_s));
        let mib = |kib: u64| kib as f64 / 1024.0;
        println!(
            "| {n} | calico-rs | {ot:.2?} | {os:.2?} | {:.1} MiB |",
            mib(o_mem)
        );
        println!(
            "| {n} | BIRD 2 | {bt:.2?} | {bs:.2?} | {:.1} MiB |",
            mib(b_mem)
        );
        println!(
            "| {n} | ratio (ours / BIRD) | {:.2} | {:.2} | {:.2} |",
            ot.as_secs_f64() / bt.as_secs_f64(),
            os.as_secs_f64() / bs.as_secs_f64().max(1e-3),
            mib(o_mem) / mib(b_mem).max(1e-3)
        );
    }
}
