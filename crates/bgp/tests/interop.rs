//! Our speaker against the real implementations, each in a namespace of
//! its own on one fabric: sessions establish, prefixes flow both ways and
//! reach the kernel, withdrawals propagate, a killed peer's routes leave
//! the kernel, and our speaker reflects routes between two BIRD clients.

use calico_bgp::{KernelFib, PeerConfig, PeerKind, Speaker, SpeakerConfig};
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
            "protocol bgp peer{i} {{ local {id} as 64512; neighbor {n} as 64512; direct; hold time 9; connect retry time 1; {}\n  ipv4 {{ import all; export where source = RTS_STATIC; next hop self; gateway direct; }}; }}\n",
            if gr { "" } else { "graceful restart off;" }
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
            .is_some_and(|p| p.state == "Established")
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
    assert_ne!(sp.status().peers[0].state, "Established");
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
