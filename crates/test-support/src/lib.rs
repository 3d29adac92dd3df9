//! Helpers shared by tests: a real etcd on a free loopback port, unique
//! names for keys and namespaces, namespaces and fabrics, the CNI caller,
//! a driver for calico-lab, and in-memory fakes of the kernel's traits.
// Test helpers wait on real processes: they read the clock.
#![allow(clippy::disallowed_methods)]

mod browser;
mod cni;
mod etcd;
mod fake_kernel;
mod lab;
mod netns;
mod temp_store;

pub use browser::Browser;
pub use cni::{
    add_pod, cni_add, echo_connect, echo_pod, labelled_pod, run_cni, CniCall, ECHO_SERVER,
};
pub use etcd::{EtcdServer, EtcdTls};
pub use fake_kernel::{
    FakeFirewall, FakeLink, FakeRoutes, FakeSysctl, FakeTunnels, FakeWorkloads, Journal,
};
pub use lab::{calicoctl, iperf3, output_text, LabCli};
pub use netns::{Fabric, Netns};
pub use temp_store::TempStore;

use std::sync::atomic::{AtomicU64, Ordering};

/// A name unique to this process and call: `<tag>-<pid>-<n>`.
pub fn unique(tag: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A free TCP port on 127.0.0.1 (free when asked; bind soon after).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free loopback port")
}

/// A child process killed (and reaped) when this is dropped, even when the
/// test panics.
#[derive(Debug)]
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits until `ok` holds; on timeout panics saying `what`, with every
/// `*.log` file in `logs` (the agents' output) attached.
pub fn wait_logged(
    logs: &std::path::Path,
    what: &str,
    timeout: std::time::Duration,
    mut ok: impl FnMut() -> bool,
) {
    let deadline = std::time::Instant::now() + timeout;
    while !ok() {
        if std::time::Instant::now() > deadline {
            let mut text = String::new();
            for e in std::fs::read_dir(logs).into_iter().flatten().flatten() {
                if e.path().extension().is_some_and(|x| x == "log") {
                    let body = std::fs::read_to_string(e.path()).unwrap_or_default();
                    text.push_str(&format!("--- {}\n{body}", e.path().display()));
                }
            }
            panic!("timed out waiting for {what}\n{text}");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Waits (up to 10 s) until something in network namespace `netns` (a
/// name) listens on `port` over `proto` (`tcp` or `udp`): readiness of a
/// server started in the background, instead of a guessed sleep.
pub fn wait_listening(netns: &str, proto: &str, port: u16) {
    let flag = if proto == "udp" { "-Hlnu" } else { "-Hlnt" };
    let filter = format!("sport = :{port}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let out = std::process::Command::new("ip")
            .args(["netns", "exec", netns, "ss", flag, &filter])
            .output()
            .expect("ss");
        if !String::from_utf8_lossy(&out.stdout).trim().is_empty() {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "nothing listens on {proto}/{port} in {netns}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Runs `f` on a thread that entered the network namespace at `path` (a
/// netlink socket opened there belongs to it).
pub fn inside_netns<T: Send + 'static>(path: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let file = std::fs::File::open(path).expect("open netns");
    std::thread::spawn(move || {
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        f()
    })
    .join()
    .expect("thread")
}

/// Runs `calico-node felix --once --node <node>` inside the namespace at
/// `netns` (a path) against the embedded datastore at `db`, and panics with
/// its stderr if it fails. `program` is the calico-node binary.
pub fn felix_once(program: &std::path::Path, netns: &str, node: &str, db: &str) {
    let out = std::process::Command::new("nsenter")
        .arg(format!("--net={netns}"))
        .arg(program)
        .args(["felix", "--once", "--node", node])
        .env("CALICO_DATASTORE_PATH", db)
        .env_remove("DATASTORE_TYPE")
        .output()
        .expect("run calico-node");
    assert!(
        out.status.success(),
        "calico-node felix --once: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `calicoctl <args>` against the embedded datastore at `db` and
/// returns what it printed; panics with its stderr if it fails.
/// `calicoctl` is the binary.
pub fn ctl(calicoctl: &std::path::Path, db: &str, args: &[&str]) -> Vec<u8> {
    let out = std::process::Command::new(calicoctl)
        .args(["--config", "/nonexistent"])
        .args(args)
        .env("CALICO_DATASTORE_PATH", db)
        .env_remove("DATASTORE_TYPE")
        .output()
        .expect("run calicoctl");
    assert!(
        out.status.success(),
        "calicoctl {}: {}",
        args.first().copied().unwrap_or_default(),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// `calicoctl apply -f` of `yaml` (written to a file in `dir`) against the
/// embedded datastore at `db`; panics with calicoctl's stderr if refused.
/// `calicoctl` is the binary.
pub fn ctl_apply(calicoctl: &std::path::Path, db: &str, dir: &std::path::Path, yaml: &str) {
    let file = dir.join(format!("{}.yaml", unique("m")));
    std::fs::write(&file, yaml).expect("write the manifest");
    ctl(
        calicoctl,
        db,
        &["apply", "-f", file.to_str().expect("a UTF-8 path")],
    );
}

/// `calicoctl delete <kind> <name> -n <namespace>` against the embedded
/// datastore at `db`; panics with calicoctl's stderr if refused.
pub fn ctl_delete(calicoctl: &std::path::Path, db: &str, kind: &str, namespace: &str, name: &str) {
    ctl(calicoctl, db, &["delete", kind, name, "-n", namespace]);
}

/// `calico-node felix --node node-1` following the embedded datastore at
/// `db`, inside the namespace at `netns` (a path), with `env` on top
/// (health off unless `env` says otherwise); killed when dropped.
/// `program` is the calico-node binary.
/// A node: namespace `<tag>-node` with an uplink at `uplink`
/// ([`Netns::make_node`]), and an embedded datastore holding `yaml`
/// (applied with `calicoctl`). Returns the node, the directory holding
/// the datastore (removed when dropped) and the datastore's path.
pub fn node_with_datastore(
    calicoctl: &std::path::Path,
    tag: &str,
    uplink: &str,
    yaml: &str,
) -> (Netns, tempfile::TempDir, String) {
    let node = Netns::new(&format!("{tag}-node"));
    node.make_node(uplink);
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("calico.db").display().to_string();
    ctl_apply(calicoctl, &db, dir.path(), yaml);
    (node, dir, db)
}

pub fn felix_daemon(
    program: &std::path::Path,
    netns: &str,
    db: &str,
    env: &[(&str, &str)],
) -> KillOnDrop {
    let mut cmd = std::process::Command::new("nsenter");
    cmd.arg(format!("--net={netns}"))
        .arg(program)
        .args(["felix", "--node", "node-1"])
        .env("CALICO_DATASTORE_PATH", db)
        .env_remove("DATASTORE_TYPE")
        .env("FELIX_HEALTHENABLED", "false")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    KillOnDrop(cmd.spawn().expect("run calico-node felix"))
}

/// The fields of `/proc/<pid>/stat` after the command name.
pub fn stat_fields(pid: u32) -> Vec<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

/// CPU seconds (user + system) a process has used (10 ms resolution).
pub fn cpu_secs(pid: u32) -> f64 {
    let fields = stat_fields(pid);
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 (11 and 12 after the name).
    (ticks(11) + ticks(12)) / 100.0
}

/// A process's resident memory (VmRSS) in KiB; 0 when it cannot be read.
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}
