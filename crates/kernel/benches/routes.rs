//! Installing and removing N routes through `NetlinkRoutes::apply`, inside a
//! namespace of its own; baseline in the same run: the same routes loaded
//! by `ip -batch` (iproute2, one netlink request after another).
//!
//! `cargo bench -p calico-routes --bench install` (ROUTES, default 100000).

#![allow(clippy::print_stdout)]
// A benchmark: it measures time.
#![allow(clippy::disallowed_methods)]

use calico_kernel::NetlinkRoutes;
use calico_net::IpNet;
use calico_routes::{Op, Route, Target};
use calico_test_support::Netns;
use std::fs::File;
use std::net::Ipv4Addr;
use std::time::Instant;

fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    let n: u32 = std::env::var("ROUTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if quick { 1000 } else { 100_000 });
    let ns = Netns::new("bench-routes");
    ns.ok(&[
        "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth1",
    ]);
    ns.ok(&["ip", "addr", "add", "10.250.0.1/24", "dev", "eth0"]);
    ns.ok(&["ip", "link", "set", "eth0", "up"]);
    ns.ok(&["ip", "link", "set", "eth1", "up"]);
    let nets: Vec<IpNet> = (0..n)
        .map(|i| IpNet::new(Ipv4Addr::from(0x0a80_0000u32 + i * 8).into(), 29).expect("net"))
        .collect();

    // Baseline: iproute2 batch.
    let batch: String = nets
        .iter()
        .map(|p| format!("route add {p} via 10.250.0.2 proto 99\n"))
        .collect();
    let file =
        std::env::temp_dir().join(format!("{}.batch", calico_test_support::unique("routes")));
    std::fs::write(&file, batch).expect("write");
    let t = Instant::now();
    ns.ok(&["ip", "-batch", file.to_str().expect("path")]);
    let base = t.elapsed();
    let _ = std::fs::remove_file(&file);
    ns.ok(&["ip", "route", "flush", "proto", "99"]);

    let f = File::open(ns.path()).expect("netns");
    let (add, del) = std::thread::spawn(move || {
        nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        let k = NetlinkRoutes::new(186).expect("netlink");
        let target = Target::Via {
            gateway: "10.250.0.2".parse().expect("ip"),
            device: None,
            onlink: false,
        };
        let adds: Vec<Op> = nets
            .iter()
            .map(|p| {
                Op::Replace(Route {
                    dst: *p,
                    target: target.clone(),
                })
            })
            .collect();
        let t = Instant::now();
        let failed = k.apply(&adds);
        let add = t.elapsed();
        assert!(
            failed.is_empty(),
            "{} failed: {:?}",
            failed.len(),
            failed.first()
        );
        assert_eq!(k.list().expect("list").len(), nets.len());
        let dels: Vec<Op> = nets
            .iter()
            .map(|p| {
                Op::Delete(Route {
                    dst: *p,
                    target: target.clone(),
                })
            })
            .collect();
        let t = Instant::now();
        let failed = k.apply(&dels);
        assert!(failed.is_empty(), "{} failed", failed.len());
        (add, t.elapsed())
    })
    .join()
    .expect("thread");
    println!(
        "{n} routes: ip -batch {base:.2?}; NetlinkRoutes::apply add {add:.2?} ({:.2}x), delete {del:.2?}",
        add.as_secs_f64() / base.as_secs_f64()
    );
}
