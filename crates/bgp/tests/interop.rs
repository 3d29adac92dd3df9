//! Our speaker against the real implementations, each in a namespace of
//! its own on one fabric: sessions establish, prefixes flow both ways and
//! reach the kernel, withdrawals propagate, a killed peer's routes leave
//! the kernel, and our speaker reflects routes between two BIRD clients.
// A test against real processes: it waits on the clock.
#![allow(clippy::disallowed_methods)]

use calico_bgp::{PeerConfig, PeerState};
use calico_test_support::{Fabric, KillOnDrop, Netns};
use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

mod common;

use common::*;

#[test]
fn bird_sessions_routes_withdrawals_and_a_killed_peer() {
    let fabric = Fabric::new("bgp-fab");
    let (ours, theirs) = (Netns::new("bgp-us"), Netns::new("bgp-bird"));
    fabric.attach(&ours, "10.250.9.1/24");
    fabric.attach(&theirs, "10.250.9.2/24");
    let bird = Bird::start(
        &theirs,
        &bird_conf(
            "10.250.9.2",
            &["10.244.2.0/26", "10.244.3.0/26"],
            &["10.250.9.1"],
            false,
        ),
    );
    let sp = speaker_in(&ours, config([10, 250, 9, 1], 64512));
    sp.set_local(nets(&["10.244.1.0/26"]));
    sp.set_peers(vec![peer("10.250.9.2", 64512)]);

    wait("the session", 20, || {
        sp.status()
            .peers
            .first()
            .is_some_and(|p| p.state == PeerState::Established)
    });
    wait("bird's routes in our kernel", 10, || {
        let r = routes(&ours);
        r.contains("10.244.2.0/26 via 10.250.9.2 dev eth0 proto bgp")
            && r.contains("10.244.3.0/26 via 10.250.9.2")
    });
    wait("our route in bird's kernel", 10, || {
        routes(&theirs).contains("10.244.1.0/26 via 10.250.9.1 dev eth0 proto bird")
    });
    let st = sp.status();
    assert_eq!(
        (st.peers[0].received, st.peers[0].advertised, st.installed),
        (2, 1, 2),
        "{st:?}"
    );

    // Withdrawal both ways.
    bird.cmd(&["disable", "blocks"]);
    wait("bird's withdrawal", 10, || {
        !routes(&ours).contains("10.244.2.0/26")
    });
    sp.set_local(nets(&["10.244.1.64/26"]));
    wait("our withdrawal and new prefix", 10, || {
        let r = routes(&theirs);
        !r.contains("10.244.1.0/26") && r.contains("10.244.1.64/26 via 10.250.9.1")
    });
    bird.cmd(&["enable", "blocks"]);
    wait("bird's routes again", 10, || {
        routes(&ours).contains("10.244.2.0/26 via 10.250.9.2")
    });

    // Killed: without graceful restart its routes leave at once.
    bird.kill();
    wait("the killed peer's routes to leave", 15, || {
        !routes(&ours).contains("proto bgp")
    });
    assert_ne!(sp.status().peers[0].state, PeerState::Established);
}

#[test]
fn our_speaker_reflects_between_two_bird_clients() {
    let fabric = Fabric::new("rr-fab");
    let rr = Netns::new("rr-us");
    let (c1, c2) = (Netns::new("rr-c1"), Netns::new("rr-c2"));
    fabric.attach(&rr, "10.250.8.1/24");
    fabric.attach(&c1, "10.250.8.2/24");
    fabric.attach(&c2, "10.250.8.3/24");
    let _b1 = Bird::start(
        &c1,
        &bird_conf("10.250.8.2", &["10.244.2.0/26"], &["10.250.8.1"], false),
    );
    let _b2 = Bird::start(
        &c2,
        &bird_conf("10.250.8.3", &["10.244.3.0/26"], &["10.250.8.1"], false),
    );
    let mut cfg = config([10, 250, 8, 1], 64512);
    cfg.cluster_id = Some(Ipv4Addr::new(244, 0, 0, 1));
    let sp = speaker_in(&rr, cfg);
    let client = |a: &str| PeerConfig {
        rr_client: true,
        ..peer(a, 64512)
    };
    sp.set_peers(vec![client("10.250.8.2"), client("10.250.8.3")]);
    // Each client learns the other's block, with the client as next hop.
    wait("reflection to c1", 20, || {
        routes(&c1).contains("10.244.3.0/26 via 10.250.8.3 dev eth0 proto bird")
    });
    wait("reflection to c2", 20, || {
        routes(&c2).contains("10.244.2.0/26 via 10.250.8.2 dev eth0 proto bird")
    });
    let detail = _b1.cmd(&["show", "route", "all", "10.244.3.0/26"]);
    assert!(detail.contains("BGP.originator_id: 10.250.8.3"), "{detail}");
    assert!(detail.contains("BGP.cluster_list: 244.0.0.1"), "{detail}");
}

/// gobgpd in the peer namespace, driven through its gRPC API (on that
/// namespace's loopback) with the `gobgp` CLI.
struct GoBgp {
    _proc: KillOnDrop,
    ns: String,
    _dir: tempfile::TempDir,
}

impl GoBgp {
    fn start(ns: &Netns, router_id: &str, neighbor: &str) -> GoBgp {
        let dir = tempfile::tempdir().expect("tempdir");
        let conf = dir.path().join("gobgpd.toml");
        std::fs::write(
            &conf,
            format!(
                "[global.config]\n  as = 64512\n  router-id = \"{router_id}\"\n\
                 [global.apply-policy.config]\n  default-import-policy = \"accept-route\"\n  default-export-policy = \"accept-route\"\n\
                 [[neighbors]]\n  [neighbors.config]\n    neighbor-address = \"{neighbor}\"\n    peer-as = 64512\n\
                 [neighbors.timers.config]\n    hold-time = 9\n    keepalive-interval = 3\n    connect-retry = 1\n\
                 [[neighbors.afi-safis]]\n  [neighbors.afi-safis.config]\n    afi-safi-name = \"ipv4-unicast\"\n\
                 [[neighbors.afi-safis]]\n  [neighbors.afi-safis.config]\n    afi-safi-name = \"ipv6-unicast\"\n"
            ),
        )
        .expect("write");
        let proc = Command::new("ip")
            .args(["netns", "exec", &ns.name, "gobgpd", "-f"])
            .arg(&conf)
            .args(["-t", "toml", "--api-hosts", "127.0.0.1:50051"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("gobgpd (run make test, which installs it)");
        let g = GoBgp {
            _proc: KillOnDrop(proc),
            ns: ns.name.clone(),
            _dir: dir,
        };
        wait("gobgpd's API", 10, || g.cli(&["global"]).contains("64512"));
        g
    }

    fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.ns,
                "gobgp",
                "-u",
                "127.0.0.1",
                "-p",
                "50051",
            ])
            .args(args)
            .output()
            .expect("gobgp");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

#[test]
fn gobgp_both_families_and_withdrawal() {
    let fabric = Fabric::new("gobgp-fab");
    let (ours, theirs) = (Netns::new("gobgp-us"), Netns::new("gobgp-them"));
    fabric.attach(&ours, "10.250.7.1/24");
    fabric.attach(&theirs, "10.250.7.2/24");
    ours.ok(&[
        "ip",
        "-6",
        "addr",
        "add",
        "fd00:250:7::1/64",
        "dev",
        "eth0",
        "nodad",
    ]);
    theirs.ok(&[
        "ip",
        "-6",
        "addr",
        "add",
        "fd00:250:7::2/64",
        "dev",
        "eth0",
        "nodad",
    ]);
    let g = GoBgp::start(&theirs, "10.250.7.2", "10.250.7.1");
    g.cli(&[
        "global",
        "rib",
        "add",
        "-a",
        "ipv4",
        "10.244.5.0/26",
        "nexthop",
        "10.250.7.2",
    ]);
    g.cli(&[
        "global",
        "rib",
        "add",
        "-a",
        "ipv6",
        "fd00:244:5::/122",
        "nexthop",
        "fd00:250:7::2",
    ]);
    let sp = speaker_in(&ours, config([10, 250, 7, 1], 64512));
    sp.set_local(nets(&["10.244.1.0/26"]));
    sp.set_peers(vec![peer("10.250.7.2", 64512)]);
    wait("gobgp's IPv4 route in our kernel", 20, || {
        routes(&ours).contains("10.244.5.0/26 via 10.250.7.2 dev eth0 proto bgp")
    });
    wait("gobgp's IPv6 route (MP-BGP) in our kernel", 10, || {
        ours.ok(&["ip", "-6", "route", "show"])
            .contains("fd00:244:5::/122 via fd00:250:7::2 dev eth0 proto bgp")
    });
    wait("our route in gobgp's RIB", 10, || {
        g.cli(&["global", "rib", "-a", "ipv4"])
            .contains("10.244.1.0/26")
    });
    assert!(g.cli(&["neighbor"]).contains("Establ"));
    g.cli(&["global", "rib", "del", "-a", "ipv4", "10.244.5.0/26"]);
    wait("gobgp's withdrawal", 10, || {
        !routes(&ours).contains("10.244.5.0/26")
    });
    sp.set_local(BTreeSet::new());
    wait("our withdrawal", 10, || {
        !g.cli(&["global", "rib", "-a", "ipv4"])
            .contains("10.244.1.0/26")
    });
}

/// FRR's bgpd (without zebra) in the peer namespace; vtysh on its own
/// socket directory.
struct Frr {
    dir: tempfile::TempDir,
}

impl Frr {
    fn start(ns: &Netns, router_id: &str, neighbor: &str, network: &str) -> Frr {
        let dir = tempfile::tempdir().expect("tempdir");
        let conf = dir.path().join("bgpd.conf");
        std::fs::write(
            &conf,
            format!(
                "frr defaults traditional\nhostname calico-test\nrouter bgp 64512\n bgp router-id {router_id}\n\
                 no bgp ebgp-requires-policy\n neighbor {neighbor} remote-as 64512\n neighbor {neighbor} timers 3 9\n\
                 neighbor {neighbor} timers connect 1\n address-family ipv4 unicast\n  network {network}\n exit-address-family\n"
            ),
        )
        .expect("write");
        let d = dir.path().to_str().expect("path").to_string();
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &ns.name,
                "/usr/lib/frr/bgpd",
                "-d",
                "-S",
                "-Z",
                "-u",
                "root",
                "-g",
                "root",
            ])
            .arg("-f")
            .arg(&conf)
            .args([
                "-i",
                &format!("{d}/bgpd.pid"),
                "-z",
                &format!("{d}/zserv.api"),
                "--vty_socket",
                &d,
            ])
            .output()
            .expect("bgpd (run make test, which installs frr)");
        assert!(
            out.status.success(),
            "bgpd: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let f = Frr { dir };
        wait("bgpd's vty", 10, || f.dir.path().join("bgpd.vty").exists());
        f
    }

    fn vtysh(&self, cmd: &str) -> String {
        let out = Command::new("vtysh")
            .arg("--vty_socket")
            .arg(self.dir.path())
            .args(["-c", cmd])
            .output()
            .expect("vtysh");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Frr {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(self.dir.path().join("bgpd.pid")) {
            let _ = Command::new("kill").arg(pid.trim()).status();
        }
    }
}

#[test]
fn frr_session_and_routes_both_ways() {
    let fabric = Fabric::new("frr-fab");
    let (ours, theirs) = (Netns::new("frr-us"), Netns::new("frr-them"));
    fabric.attach(&ours, "10.250.6.1/24");
    fabric.attach(&theirs, "10.250.6.2/24");
    let frr = Frr::start(&theirs, "10.250.6.2", "10.250.6.1", "10.244.6.0/26");
    let sp = speaker_in(&ours, config([10, 250, 6, 1], 64512));
    sp.set_local(nets(&["10.244.1.0/26"]));
    sp.set_peers(vec![peer("10.250.6.2", 64512)]);
    wait("FRR's route in our kernel", 20, || {
        routes(&ours).contains("10.244.6.0/26 via 10.250.6.2 dev eth0 proto bgp")
    });
    wait("our route in FRR's table", 10, || {
        frr.vtysh("show bgp ipv4 unicast").contains("10.244.1.0/26")
    });
    assert!(frr.vtysh("show bgp summary").contains("10.250.6.1"));
    sp.set_local(BTreeSet::new());
    wait("our withdrawal at FRR", 10, || {
        !frr.vtysh("show bgp ipv4 unicast").contains("10.244.1.0/26")
    });
}

/// Two of our speakers over an IPv6 session: IPv6 prefixes with IPv6 next
/// hops, both ways, into the kernel; the dual-stack listener also takes the
/// IPv4 session.
#[test]
fn ipv6_sessions_between_our_speakers() {
    let fabric = Fabric::new("v6-fab");
    let (a, b) = (Netns::new("v6-a"), Netns::new("v6-b"));
    fabric.attach(&a, "10.250.3.1/24");
    fabric.attach(&b, "10.250.3.2/24");
    a.ok(&[
        "ip",
        "-6",
        "addr",
        "add",
        "fd00:250:3::1/64",
        "dev",
        "eth0",
        "nodad",
    ]);
    b.ok(&[
        "ip",
        "-6",
        "addr",
        "add",
        "fd00:250:3::2/64",
        "dev",
        "eth0",
        "nodad",
    ]);
    let dual = |id: [u8; 4]| {
        let mut c = config(id, 64512);
        c.listen = Some(std::net::SocketAddr::from((
            std::net::Ipv6Addr::UNSPECIFIED,
            179,
        )));
        c
    };
    let sa = speaker_in(&a, dual([10, 250, 3, 1]));
    let sb = speaker_in(&b, dual([10, 250, 3, 2]));
    sa.set_local(nets(&["fd00:244:1::/122", "10.244.1.0/26"]));
    sb.set_local(nets(&["fd00:244:2::/122", "10.244.2.0/26"]));
    sa.set_peers(vec![
        peer("fd00:250:3::2", 64512),
        peer("10.250.3.2", 64512),
    ]);
    sb.set_peers(vec![
        peer("fd00:250:3::1", 64512),
        peer("10.250.3.1", 64512),
    ]);
    let v6 = |ns: &Netns| ns.ok(&["ip", "-6", "route", "show", "proto", "bgp"]);
    wait("IPv6 routes at a", 20, || {
        v6(&a).contains("fd00:244:2::/122 via fd00:250:3::2 dev eth0")
    });
    wait("IPv6 routes at b", 20, || {
        v6(&b).contains("fd00:244:1::/122 via fd00:250:3::1 dev eth0")
    });
    wait("IPv4 routes at a", 20, || {
        routes(&a).contains("10.244.2.0/26 via 10.250.3.2 dev eth0 proto bgp")
    });
    let st = sa.status();
    assert!(
        st.peers.iter().all(|p| p.state == PeerState::Established),
        "{st:?}"
    );
}
