//! Our speaker against the real implementations, each in a namespace of
//! its own on one fabric: sessions establish, prefixes flow both ways and
//! reach the kernel, withdrawals propagate, a killed peer's routes leave
//! the kernel, and our speaker reflects routes between two BIRD clients.
// A test against real processes: it waits on the clock.
#![allow(clippy::disallowed_methods)]

use calico_bgp::{KernelFib, PeerConfig, PeerKind, PeerState, Speaker, SpeakerConfig};
use calico_test_support::{Fabric, KillOnDrop, Netns};
use std::collections::BTreeSet;
use std::fs::File;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Starts a speaker whose sockets and netlink live in `ns`.
fn speaker_in(ns: &Netns, cfg: SpeakerConfig) -> Speaker {
    let file = File::open(ns.path()).expect("netns");
    std::thread::spawn(move || {
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        let fib = KernelFib::new().expect("netlink");
        Speaker::start(cfg, Box::new(fib)).expect("speaker")
    })
    .join()
    .expect("thread")
}

fn peer(addr: &str, asn: u32) -> PeerConfig {
    PeerConfig {
        addr: addr.parse().expect("ip"),
        asn,
        kind: PeerKind::Global,
        rr_client: false,
        passive: false,
        local_addr: None,
        port: 179,
        hold_time: None,
        restart_time: None,
        password: None,
        max_prefixes: None,
    }
}

fn config(router_id: [u8; 4], asn: u32) -> SpeakerConfig {
    let mut c = SpeakerConfig::new(Ipv4Addr::from(router_id), asn);
    c.hold_time = 9;
    c.connect_retry = Duration::from_secs(1);
    c
}

fn wait(what: &str, secs: u64, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn routes(ns: &Netns) -> String {
    ns.ok(&["ip", "-4", "route", "show", "table", "main"])
}

fn nets(list: &[&str]) -> BTreeSet<ipnet::IpNet> {
    list.iter().map(|s| s.parse().expect("net")).collect()
}

struct Bird {
    _proc: KillOnDrop,
    ctl: PathBuf,
    _dir: tempfile::TempDir,
}

impl Bird {
    fn start(ns: &Netns, conf: &str) -> Bird {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = dir.path().join("bird.conf");
        std::fs::write(&cfg, conf).expect("write");
        let ctl = dir.path().join("bird.ctl");
        let check = Command::new("bird")
            .arg("-p")
            .arg("-c")
            .arg(&cfg)
            .output()
            .expect("bird");
        assert!(
            check.status.success(),
            "bird config: {}",
            String::from_utf8_lossy(&check.stderr)
        );
        let proc = Command::new("ip")
            .args(["netns", "exec", &ns.name, "bird", "-f", "-c"])
            .arg(&cfg)
            .arg("-s")
            .arg(&ctl)
            .arg("-P")
            .arg(dir.path().join("bird.pid"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("bird (run make test, which installs bird2)");
        let bird = Bird {
            _proc: KillOnDrop(proc),
            ctl,
            _dir: dir,
        };
        wait("bird's control socket", 10, || bird.ctl.exists());
        bird
    }

    fn cmd(&self, args: &[&str]) -> String {
        let out = Command::new("birdc")
            .arg("-s")
            .arg(&self.ctl)
            .args(args)
            .output()
            .expect("birdc");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn kill(self) {}
}

fn bird_conf(id: &str, statics: &[&str], neighbors: &[&str], gr: bool) -> String {
    bird_conf_with(
        id,
        statics,
        neighbors,
        if gr { "" } else { "graceful restart off;" },
    )
}

fn bird_conf_with(id: &str, statics: &[&str], neighbors: &[&str], extra: &str) -> String {
    let statics: String = statics
        .iter()
        .map(|s| format!("route {s} blackhole; "))
        .collect();
    let mut c = format!(
        "router id {id};\nprotocol device {{ scan time 10; }}\nprotocol direct {{ ipv4; interface \"eth0\"; }}\n\
         protocol static blocks {{ ipv4; {statics}}}\n\
         protocol kernel {{ ipv4 {{ import none; export where source = RTS_BGP; }}; }}\n"
    );
    for (i, n) in neighbors.iter().enumerate() {
        c.push_str(&format!(
            "protocol bgp peer{i} {{ local {id} as 64512; neighbor {n} as 64512; direct; hold time 9; connect retry time 1; {extra}\n  ipv4 {{ import all; export where source = RTS_STATIC; next hop self; gateway direct; }}; }}\n"
        ));
    }
    c
}

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

/// Graceful restart, helper side: a BIRD that dies keeps its routes in our
/// kernel (forwarding goes on) for its restart time; if it comes back in
/// time they never leave; if not they go when the time runs out.
#[test]
fn a_restarting_bird_keeps_forwarding() {
    let fabric = Fabric::new("gr-fab");
    let (ours, theirs) = (Netns::new("gr-us"), Netns::new("gr-bird"));
    fabric.attach(&ours, "10.250.5.1/24");
    fabric.attach(&theirs, "10.250.5.2/24");
    let conf = bird_conf_with(
        "10.250.5.2",
        &["10.244.2.0/26"],
        &["10.250.5.1"],
        "graceful restart on; graceful restart time 4;",
    );
    let bird = Bird::start(&theirs, &conf);
    let sp = speaker_in(&ours, config([10, 250, 5, 1], 64512));
    sp.set_peers(vec![peer("10.250.5.2", 64512)]);
    let learned = || routes(&ours).contains("10.244.2.0/26 via 10.250.5.2");
    wait("bird's route", 20, learned);

    bird.kill();
    wait("the session to drop", 10, || {
        sp.status().peers[0].state == PeerState::Stale
    });
    let bird = Bird::start(&theirs, &conf);
    let back = Instant::now();
    while sp.status().peers[0].state != PeerState::Established
        || back.elapsed() < Duration::from_secs(5)
    {
        assert!(learned(), "the route left the kernel during the restart");
        assert!(
            back.elapsed() < Duration::from_secs(20),
            "bird never came back"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(learned());

    // Not back within its restart time: the stale route goes.
    bird.kill();
    let gone = Instant::now();
    std::thread::sleep(Duration::from_secs(1));
    assert!(learned(), "kept while the restart time runs");
    wait("the stale route to go", 15, || !learned());
    assert!(
        gone.elapsed() >= Duration::from_secs(3),
        "went after {:?}",
        gone.elapsed()
    );
}

/// Graceful restart, restarting side: our speaker stops for a restart
/// (no NOTIFICATION); BIRD keeps forwarding to our block until the next
/// run sends it again, and our kernel keeps the routes we had learned.
#[test]
fn our_restart_keeps_bird_forwarding() {
    let fabric = Fabric::new("grs-fab");
    let (ours, theirs) = (Netns::new("grs-us"), Netns::new("grs-bird"));
    fabric.attach(&ours, "10.250.4.1/24");
    fabric.attach(&theirs, "10.250.4.2/24");
    let _bird = Bird::start(
        &theirs,
        &bird_conf("10.250.4.2", &["10.244.2.0/26"], &["10.250.4.1"], true),
    );
    let start = || {
        let sp = speaker_in(&ours, config([10, 250, 4, 1], 64512));
        sp.set_local(nets(&["10.244.1.0/26"]));
        sp.set_peers(vec![peer("10.250.4.2", 64512)]);
        sp
    };
    let sp = start();
    let at_bird = || routes(&theirs).contains("10.244.1.0/26 via 10.250.4.1");
    let at_us = || routes(&ours).contains("10.244.2.0/26 via 10.250.4.2 dev eth0 proto bgp");
    wait("both routes", 20, || at_bird() && at_us());
    sp.stop_for_restart();
    std::thread::sleep(Duration::from_secs(1));
    assert!(at_bird(), "bird dropped our route during the restart");
    assert!(
        at_us(),
        "our kernel lost its learned route during the restart"
    );
    let sp = start();
    wait("the new session", 20, || {
        sp.status()
            .peers
            .first()
            .is_some_and(|p| p.state == PeerState::Established)
    });
    std::thread::sleep(Duration::from_millis(500));
    assert!(at_bird() && at_us());
    // Stopping for good takes our learned routes out of the kernel.
    sp.stop();
    assert!(!routes(&ours).contains("proto bgp"), "{}", routes(&ours));
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

/// BGPPeer passwords are TCP MD5 (RFC 2385), as BIRD speaks them: the
/// same key establishes; no key or another key never does (the kernel
/// drops the unsigned or wrongly signed segments).
#[test]
fn md5_password_against_bird() {
    let fabric = Fabric::new("bgp-md5");
    let (ours, theirs) = (Netns::new("bgp-md5-us"), Netns::new("bgp-md5-bird"));
    fabric.attach(&ours, "10.250.13.1/24");
    fabric.attach(&theirs, "10.250.13.2/24");
    let _bird = Bird::start(
        &theirs,
        &bird_conf_with(
            "10.250.13.2",
            &["10.244.13.0/26"],
            &["10.250.13.1"],
            "graceful restart off; password \"s3cret-key\";",
        ),
    );
    let mut cfg = config([10, 250, 13, 1], 64512);
    cfg.listen = Some("0.0.0.0:179".parse().expect("addr"));
    let sp = speaker_in(&ours, cfg);
    let state = |sp: &Speaker| sp.status().peers.first().map(|p| p.state);
    // Without the password: never established.
    sp.set_peers(vec![peer("10.250.13.2", 64512)]);
    std::thread::sleep(Duration::from_secs(4));
    assert_ne!(
        state(&sp),
        Some(PeerState::Established),
        "a session without the password"
    );
    // With another password: neither.
    sp.set_peers(vec![PeerConfig {
        password: Some("wrong".into()),
        ..peer("10.250.13.2", 64512)
    }]);
    std::thread::sleep(Duration::from_secs(4));
    assert_ne!(
        state(&sp),
        Some(PeerState::Established),
        "a session with the wrong password"
    );
    // With BIRD's: established, routes flow.
    sp.set_peers(vec![PeerConfig {
        password: Some("s3cret-key".into()),
        ..peer("10.250.13.2", 64512)
    }]);
    wait("the signed session", 20, || {
        state(&sp) == Some(PeerState::Established)
    });
    wait("bird's route", 10, || {
        routes(&ours).contains("10.244.13.0/26 via 10.250.13.2")
    });
    // The segments on the wire carry the MD5 option (kind 19).
    let dump = ours.exec(&[
        "timeout",
        "10",
        "tcpdump",
        "-c",
        "2",
        "-nvi",
        "eth0",
        "tcp port 179",
    ]);
    let text =
        String::from_utf8_lossy(&dump.stdout).to_string() + &String::from_utf8_lossy(&dump.stderr);
    assert!(text.contains("md5"), "no MD5 option seen: {text}");
}

/// A peer that sends more prefixes than allowed is cut off (Cease,
/// maximum number of prefixes reached) and its routes leave the kernel.
#[test]
fn max_prefix_limit_ends_the_session() {
    let fabric = Fabric::new("bgp-max");
    let (ours, theirs) = (Netns::new("bgp-max-us"), Netns::new("bgp-max-bird"));
    fabric.attach(&ours, "10.250.14.1/24");
    fabric.attach(&theirs, "10.250.14.2/24");
    let statics: Vec<String> = (0..50).map(|i| format!("10.245.{i}.0/24")).collect();
    let statics: Vec<&str> = statics.iter().map(String::as_str).collect();
    let bird = Bird::start(
        &theirs,
        &bird_conf("10.250.14.2", &statics, &["10.250.14.1"], false),
    );
    let sp = speaker_in(&ours, config([10, 250, 14, 1], 64512));
    sp.set_peers(vec![PeerConfig {
        max_prefixes: Some(20),
        ..peer("10.250.14.2", 64512)
    }]);
    wait("bird to see our Cease", 20, || {
        bird.cmd(&["show", "protocols", "all", "peer0"])
            .contains("Maximum number of prefixes reached")
    });
    wait("the routes to leave", 10, || {
        !routes(&ours).contains("proto bgp")
    });
    assert_ne!(sp.status().peers[0].state, PeerState::Established);
}

/// A peer that stops reading (its socket full, its hold timer kept alive
/// by its own keepalives) does not wedge the speaker: the session ends at
/// the write deadline and the other peers go on.
#[test]
fn a_peer_that_stops_reading_is_dropped() {
    let fabric = Fabric::new("bgp-slow");
    let (ours, slow, good) = (
        Netns::new("bgp-slow-us"),
        Netns::new("bgp-slow-peer"),
        Netns::new("bgp-slow-good"),
    );
    fabric.attach(&ours, "10.250.15.1/24");
    fabric.attach(&slow, "10.250.15.2/24");
    fabric.attach(&good, "10.250.15.3/24");
    let _bird = Bird::start(
        &good,
        // A long hold time: the session must stay up while our speaker
        // works through the burst, however slow the machine is.
        &bird_conf_with(
            "10.250.15.3",
            &["10.244.15.0/26"],
            &["10.250.15.1"],
            "graceful restart off; hold time 240;",
        ),
    );
    // The stalled peer: a raw BGP speaker in Python that opens, keeps
    // sending KEEPALIVEs, and never reads again.
    let stall = "
import socket, struct, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('10.250.15.2', 179)); s.listen(1)
c, _ = s.accept()
def msg(t, body=b''): return b'\\xff' * 16 + struct.pack('!HB', 19 + len(body), t) + body
c.sendall(msg(1, struct.pack('!BHHIB', 4, 64512, 9, 0x0afa0f02, 0)))
time.sleep(1)
c.sendall(msg(4))
while True:
    time.sleep(2)
    c.sendall(msg(4))
";
    let _stalled = KillOnDrop(
        Command::new("ip")
            .args(["netns", "exec", &slow.name, "python3", "-c", stall])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python"),
    );
    calico_test_support::wait_listening(&slow.name, "tcp", 179);
    let mut cfg = config([10, 250, 15, 1], 64512);
    cfg.hold_time = 240;
    let sp = speaker_in(&ours, cfg);
    // The stalled peer offers 9 s, so its session's write deadline is 9 s.
    sp.set_peers(vec![peer("10.250.15.2", 64512), peer("10.250.15.3", 64512)]);
    let state = |sp: &Speaker, addr: &str| {
        sp.status()
            .peers
            .iter()
            .find(|p| p.address.to_string() == addr)
            .map(|p| (p.state, p.info.clone()))
    };
    wait("both sessions", 20, || {
        state(&sp, "10.250.15.2").is_some_and(|s| s.0 == PeerState::Established)
            && state(&sp, "10.250.15.3").is_some_and(|s| s.0 == PeerState::Established)
    });
    // Many changes: far more than the stalled socket can hold.
    for round in 0..300u32 {
        let set: BTreeSet<ipnet::IpNet> = (0..1000u32)
            .map(|i| {
                format!("10.{}.{}.{}/32", 100 + (round % 2), i / 250, i % 250)
                    .parse()
                    .expect("net")
            })
            .collect();
        sp.set_local(set);
    }
    wait(
        "the stalled session to end at the write deadline",
        30,
        || state(&sp, "10.250.15.2").is_some_and(|s| s.0 != PeerState::Established),
    );
    assert_eq!(
        state(&sp, "10.250.15.3").map(|s| s.0),
        Some(PeerState::Established)
    );
    // The good peer still gets our updates.
    sp.set_local(nets(&["10.244.99.0/26"]));
    wait("bird to get the new prefix", 10, || {
        routes(&good).contains("10.244.99.0/26 via 10.250.15.1")
    });
}

/// A configured peer that opens connection after connection (and never
/// sends an OPEN) holds at most three; the rest are closed at once.
#[test]
fn a_peer_cannot_pile_up_connections() {
    let fabric = Fabric::new("bgp-pile");
    let (ours, theirs) = (Netns::new("bgp-pile-us"), Netns::new("bgp-pile-peer"));
    fabric.attach(&ours, "10.250.17.1/24");
    fabric.attach(&theirs, "10.250.17.2/24");
    let mut cfg = config([10, 250, 17, 1], 64512);
    cfg.listen = Some("0.0.0.0:179".parse().expect("addr"));
    let sp = speaker_in(&ours, cfg);
    sp.set_peers(vec![PeerConfig {
        passive: true,
        ..peer("10.250.17.2", 64512)
    }]);
    let pile = "
import socket, time
held = []
for _ in range(50):
    s = socket.create_connection(('10.250.17.1', 179), timeout=2); held.append(s)
time.sleep(1.5)
open_ = 0
for s in held:
    s.setblocking(False)
    try:
        open_ += s.recv(1) != b''
    except BlockingIOError:
        open_ += 1
    except OSError:
        pass
print(open_)
";
    let out = theirs.ok(&["python3", "-c", pile]);
    let open: usize = out.trim().parse().expect("count");
    assert!(open <= 3, "{open} of 50 connections stayed open");
    assert!(open >= 1, "the peer's first connection is served");
}
