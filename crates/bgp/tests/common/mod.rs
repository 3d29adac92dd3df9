//! Helpers shared by the BGP tests against real peers: our speaker in a
//! namespace, BIRD, waits.
#![allow(dead_code)]
// each test binary uses some of them
// Helpers for tests against real processes: they wait on the clock.
#![allow(clippy::disallowed_methods)]

use calico_bgp::{Fib, KernelFib, PeerConfig, PeerKind, Speaker, SpeakerConfig};
use calico_test_support::{KillOnDrop, Netns};
use std::collections::BTreeSet;
use std::fs::File;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Starts a speaker whose sockets and netlink live in `ns`.
pub fn speaker_in(ns: &Netns, cfg: SpeakerConfig) -> Speaker {
    speaker_with(ns, cfg, || Box::new(KernelFib::new().expect("netlink")))
}

/// The same with another FIB (made inside `ns`).
pub fn speaker_with(
    ns: &Netns,
    cfg: SpeakerConfig,
    fib: impl FnOnce() -> Box<dyn Fib> + Send + 'static,
) -> Speaker {
    let file = File::open(ns.path()).expect("netns");
    std::thread::spawn(move || {
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        Speaker::start(cfg, fib()).expect("speaker")
    })
    .join()
    .expect("thread")
}

pub fn peer(addr: &str, asn: u32) -> PeerConfig {
    PeerConfig::new(addr.parse().expect("ip"), asn, PeerKind::Global)
}

pub fn config(router_id: [u8; 4], asn: u32) -> SpeakerConfig {
    let mut c = SpeakerConfig::new(Ipv4Addr::from(router_id), asn);
    c.hold_time = 9;
    c.connect_retry = Duration::from_secs(1);
    c
}

pub fn wait(what: &str, secs: u64, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub fn routes(ns: &Netns) -> String {
    ns.ok(&["ip", "-4", "route", "show", "table", "main"])
}

pub fn nets(list: &[&str]) -> BTreeSet<ipnet::IpNet> {
    list.iter().map(|s| s.parse().expect("net")).collect()
}

pub struct Bird {
    _proc: KillOnDrop,
    ctl: PathBuf,
    _dir: tempfile::TempDir,
}

impl Bird {
    pub fn start(ns: &Netns, conf: &str) -> Bird {
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

    pub fn cmd(&self, args: &[&str]) -> String {
        let out = Command::new("birdc")
            .arg("-s")
            .arg(&self.ctl)
            .args(args)
            .output()
            .expect("birdc");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn kill(self) {}
}

pub fn bird_conf(id: &str, statics: &[&str], neighbors: &[&str], gr: bool) -> String {
    bird_conf_with(
        id,
        statics,
        neighbors,
        if gr { "" } else { "graceful restart off;" },
    )
}

pub fn bird_conf_with(id: &str, statics: &[&str], neighbors: &[&str], extra: &str) -> String {
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
