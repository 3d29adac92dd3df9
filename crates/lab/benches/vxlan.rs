//! Cross-node pod-to-pod throughput through the VXLAN overlay against
//! native routing (BGP), in the same run, on the same pods: a two-node lab
//! whose pool is switched between vxlanMode Always and Never, alternately,
//! with iperf3 between a pod on node-1 and one on node-2. The pods keep
//! the MTU they were created with (1450, the overlay's), so the difference
//! is the encapsulation alone. TCP (bits/s) and 64-byte UDP (packets/s).
//!
//! `cargo bench -p calico-lab --bench vxlan` (SECS per measurement,
//! default 5; ROUNDS of each mode, default 3).

#![allow(clippy::print_stdout)]
// A benchmark: it measures time.
#![allow(clippy::disallowed_methods)]

use std::process::Command;
use std::time::{Duration, Instant};

use calico_test_support::{iperf3 as iperf, LabCli as Lab};

/// Switches the pool's mode and waits until node-1 routes `pod_ip` as the
/// mode says.
fn set_mode(lab: &Lab, mode: &str, pod_ip: &str) {
    let patch = format!(r#"{{"spec":{{"vxlanMode":"{mode}"}}}}"#);
    lab.ctl_ok(&["patch", "ippool", "default-ipv4-ippool", "-p", &patch]);
    lab.ok(&["sync", "--timeout", "30"]);
    let want = if mode == "Always" {
        "dev vxlan.calico"
    } else {
        "via 10.250.0.2 "
    };
    let t = Instant::now();
    loop {
        let out = lab.in_netns("node-1", &["ip", "route", "get", pod_ip]);
        if String::from_utf8_lossy(&out.stdout).contains(want) {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(30), "{mode}: no route");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    let env = |k: &str, quick_v: u32, v: u32| {
        std::env::var(k)
            .ok()
            .and_then(|x| x.parse().ok())
            .unwrap_or(if quick { quick_v } else { v })
    };
    let secs = env("SECS", 1, 5);
    let rounds = env("ROUNDS", 1, 3);
    let lab = Lab::new(
        format!("vxb{}", std::process::id() % 100_000),
        std::path::Path::new(env!("CARGO_BIN_EXE_calico-lab")),
    );
    lab.ok(&["up", "--nodes", "2", "--encap", "vxlan"]);
    lab.ok(&["ns", "create", "b"]);
    lab.ok(&["pod", "create", "b/client", "--node", "node-1"]);
    lab.ok(&["pod", "create", "b/server", "--node", "node-2"]);
    let state = lab.state();
    let netns = |p: &str| {
        state["pods"][p]["netns"]
            .as_str()
            .expect("netns")
            .to_string()
    };
    let server_ip = state["pods"]["b/server"]["ip"]
        .as_str()
        .expect("ip")
        .to_string();
    let (client, server) = (netns("b/client"), netns("b/server"));
    let pidfile = lab.dir.path().join("iperf3.pid");
    let started = Command::new("ip")
        .args(["netns", "exec", &server, "iperf3", "-s", "-D", "--pidfile"])
        .arg(&pidfile)
        .status()
        .expect("iperf3 -s");
    assert!(started.success());
    std::thread::sleep(Duration::from_millis(300));

    let mut results: Vec<(&str, Vec<f64>, Vec<f64>)> =
        vec![("Always", vec![], vec![]), ("Never", vec![], vec![])];
    // Alternating rounds, so drift on the machine hits both alike.
    for _ in 0..rounds {
        for (mode, tcp, udp) in &mut results {
            set_mode(&lab, mode, &server_ip);
            tcp.push(iperf(&client, &server_ip, secs, false));
            udp.push(iperf(&client, &server_ip, secs, true));
        }
    }
    if let Ok(pid) = std::fs::read_to_string(&pidfile) {
        let _ = Command::new("kill").arg(pid.trim()).status();
    }
    let [(_, vt, vu), (_, nt, nu)] = [results[0].clone(), results[1].clone()];
    let (vt, vu, nt, nu) = (median(vt), median(vu), median(nt), median(nu));
    println!("cross-node pod to pod, pods at MTU 1450, median of {rounds} x {secs} s");
    println!("| measurement | native (BGP) | VXLAN | VXLAN / native |");
    println!("| --- | --- | --- | --- |");
    println!(
        "| TCP | {:.2} Gbit/s | {:.2} Gbit/s | {:.2} |",
        nt / 1e9,
        vt / 1e9,
        vt / nt
    );
    println!(
        "| UDP 64 B | {:.0} kpps | {:.0} kpps | {:.2} |",
        nu / 1e3,
        vu / 1e3,
        vu / nu
    );
}
