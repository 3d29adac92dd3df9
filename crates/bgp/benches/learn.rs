//! Learning a full feed: N prefixes announced by a BIRD feeder, received
//! and installed into the kernel by our speaker and, in the same run, by a
//! BIRD receiving the same feed. Each receiver sits passive in a namespace
//! of its own; the time runs from the feeder's start until the receiver's
//! main table holds all N routes. Also reported: the span from the first
//! route installed to the last (without session set-up), and memory.
//!
//! The receiver's route count is polled every 20 ms from
//! /proc/net/fib_triestat.
//!
//! `cargo bench -p calico-bgp --bench learn` (PREFIXES, default
//! "10000,100000"; RUNS per size, default 3).

#![allow(clippy::print_stdout)]

use calico_bgp::{KernelFib, PeerConfig, PeerKind, Speaker, SpeakerConfig};
use calico_test_support::{Fabric, KillOnDrop, Netns};
use std::fmt::Write;
use std::fs::File;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn prefix(i: u32) -> String {
    let a = 0x0a80_0000u32 + i * 8;
    format!("{}/29", Ipv4Addr::from(a))
}

fn feeder_conf(n: u32) -> String {
    let mut c = String::from(
        "router id 10.250.40.1;\nprotocol device { scan time 10; }\nprotocol static feed { ipv4;\n",
    );
    for i in 0..n {
        let _ = writeln!(c, "  route {} blackhole;", prefix(i));
    }
    c.push_str(
        "}\nprotocol bgp downstream { local 10.250.40.1 as 64512; neighbor 10.250.40.2 as 64512; direct;\n  \
         connect delay time 1; connect retry time 1; hold time 240;\n  \
         ipv4 { import none; export all; next hop self; }; }\n",
    );
    c
}

const RECEIVER_CONF: &str = "router id 10.250.40.2;\nprotocol device { scan time 10; }\n\
protocol kernel { ipv4 { import none; export all; }; }\n\
protocol bgp upstream { local 10.250.40.2 as 64512; neighbor 10.250.40.1 as 64512; direct; passive on;\n  \
ipv4 { import all; export none; gateway direct; }; }\n";

struct Bird {
    proc: KillOnDrop,
    _dir: tempfile::TempDir,
}

fn bird(ns: &Netns, conf: &str) -> Bird {
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
    Bird {
        proc: KillOnDrop(proc),
        _dir: dir,
    }
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

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
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

fn ours(feeder: &Netns, rx: &Netns, n: u32) -> (Run, u64) {
    let base = route_count(rx);
    let file = File::open(rx.path()).expect("netns");
    let before = rss_kib(std::process::id());
    let speaker = std::thread::spawn(move || {
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        let mut cfg = SpeakerConfig::new(Ipv4Addr::new(10, 250, 40, 2), 64512);
        cfg.hold_time = 240;
        let sp =
            Speaker::start(cfg, Box::new(KernelFib::new().expect("netlink"))).expect("speaker");
        sp.set_peers(vec![PeerConfig {
            addr: "10.250.40.1".parse().expect("ip"),
            asn: 64512,
            kind: PeerKind::Global,
            rr_client: false,
            passive: true,
            local_addr: None,
            port: 179,
        }]);
        sp
    })
    .join()
    .expect("thread");
    let start = Instant::now();
    let f = bird(feeder, &feeder_conf(n));
    let run = watch(rx, base, n as usize, start);
    let mem = rss_kib(std::process::id()).saturating_sub(before);
    drop(f);
    speaker.stop();
    // Wait for the routes to leave (stop removes them).
    while route_count(rx) > base {
        std::thread::sleep(Duration::from_millis(50));
    }
    (run, mem)
}

fn birds(feeder: &Netns, rx: &Netns, n: u32) -> (Run, u64) {
    let base = route_count(rx);
    let r = bird(rx, RECEIVER_CONF);
    std::thread::sleep(Duration::from_millis(300));
    let start = Instant::now();
    let f = bird(feeder, &feeder_conf(n));
    let run = watch(rx, base, n as usize, start);
    let mem = rss_kib(r.proc.0.id());
    drop(f);
    drop(r);
    // BIRD leaves its routes on a kill; flush them for the next run.
    rx.ok(&["ip", "route", "flush", "proto", "bird"]);
    (run, mem)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
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
    println!("| prefixes | receiver | feed start -> all installed (median) | first -> last route | memory |");
    println!("| --- | --- | --- | --- | --- |");
    for n in sizes {
        let (mut o_t, mut o_s, mut b_t, mut b_s) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let (mut o_mem, mut b_mem) = (0, 0);
        for _ in 0..runs {
            let (r, m) = ours(&feeder, &rx, n);
            o_t.push(r.total);
            o_s.push(r.spread);
            o_mem = o_mem.max(m);
            let (r, m) = birds(&feeder, &rx, n);
            b_t.push(r.total);
            b_s.push(r.spread);
            b_mem = b_mem.max(m);
        }
        let (ot, bt) = (median(o_t), median(b_t));
        let (os, bs) = (median(o_s), median(b_s));
        println!(
            "| {n} | calico-rs | {ot:.2?} | {os:.2?} | +{} MiB RSS |",
            o_mem / 1024
        );
        println!(
            "| {n} | BIRD 2 | {bt:.2?} | {bs:.2?} | {} MiB RSS |",
            b_mem / 1024
        );
        println!(
            "| {n} | ratio (ours / BIRD) | {:.2} | {:.2} | |",
            ot.as_secs_f64() / bt.as_secs_f64(),
            os.as_secs_f64() / bs.as_secs_f64().max(1e-3)
        );
    }
}
