//! From `calicoctl apply` of a policy to enforcement on every node, for a
//! 3-node and a 10-node lab: (a) until `calico-lab sync` reports every
//! node's dataplane at the write's revision (a deny on a target pod),
//! (b) until probes from a pod on every node get through (its removal;
//! probes with a 50 ms timeout, retried).
//! The baseline in the same run is one probe's round trip.
//!
//! `cargo bench -p calico-lab --bench enforce` (NODES, default "3,10";
//! RUNS per size, default 10).

#![allow(clippy::print_stdout)]

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn bin(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_calico-lab")).with_file_name(name)
}

struct Lab {
    name: String,
    dir: tempfile::TempDir,
}

impl Lab {
    fn ok(&self, args: &[&str]) -> String {
        let out = Command::new(bin("calico-lab"))
            .args(args)
            .env("CALICO_LAB_NAME", &self.name)
            .env("CALICO_LAB_STATE", self.dir.path())
            .output()
            .expect("calico-lab");
        assert!(
            out.status.success(),
            "calico-lab {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn apply(&self, yaml: &str) {
        let mut child = Command::new(bin("calicoctl"))
            .args(["--config", "/nonexistent", "apply", "-f", "-"])
            .env("CALICO_DATASTORE_PATH", self.dir.path().join("calico.db"))
            .env_remove("DATASTORE_TYPE")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("calicoctl");
        std::io::Write::write_all(&mut child.stdin.take().expect("stdin"), yaml.as_bytes())
            .expect("write");
        assert!(child.wait().expect("calicoctl").success());
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = Command::new(bin("calico-lab"))
            .arg("down")
            .env("CALICO_LAB_NAME", &self.name)
            .env("CALICO_LAB_STATE", self.dir.path())
            .output();
    }
}

fn policy(action: &str) -> String {
    format!("apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {{name: bench}}\nspec: {{order: 1, selector: app == 'target', ingress: [{{action: {action}}}]}}\n")
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    let sizes: Vec<usize> = std::env::var("NODES")
        .ok()
        .map(|s| s.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_else(|| if quick { vec![2] } else { vec![3, 10] });
    let runs: usize = std::env::var("RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if quick { 2 } else { 10 });
    println!("| nodes | apply -> sync reports all nodes (median) | apply -> every node's probe sees it (median) | one probe (baseline) |");
    println!("| --- | --- | --- | --- |");
    for n in sizes {
        let lab = Lab {
            name: format!("bench{}-{n}", std::process::id()),
            dir: tempfile::tempdir().expect("tempdir"),
        };
        lab.ok(&["up", "--nodes", &n.to_string()]);
        lab.ok(&["ns", "create", "b"]);
        lab.ok(&[
            "pod",
            "create",
            "b/target",
            "--node",
            "node-1",
            "--labels",
            "app=target",
        ]);
        let sources: Vec<String> = (1..=n).map(|i| format!("b/src-{i}")).collect();
        for (i, s) in sources.iter().enumerate() {
            lab.ok(&[
                "pod",
                "create",
                s,
                "--node",
                &format!("node-{}", i + 1),
                "--labels",
                "app=src",
            ]);
        }
        let labr = &lab;
        let probe_all = |want: &str| {
            std::thread::scope(|sc| {
                let hs: Vec<_> = sources
                    .iter()
                    .map(|s| {
                        sc.spawn(move || {
                            labr.ok(&["probe", s, "b/target", "--port", "80", "--timeout-ms", "50"])
                                .trim()
                                == want
                        })
                    })
                    .collect();
                hs.into_iter().all(|h| h.join().unwrap_or(false))
            })
        };
        let t = Instant::now();
        for _ in 0..5 {
            lab.ok(&["probe", &sources[0], "b/target", "--port", "80"]);
        }
        let probe = t.elapsed() / 5;
        let (mut to_sync, mut to_probe) = (Vec::new(), Vec::new());
        // Each run: a deny, timed to `sync`; then an allow, timed until the
        // probes from every node get through (probes answer at once when
        // allowed; a denied one waits out its 50 ms timeout and is retried).
        for _ in 0..runs {
            let t = Instant::now();
            lab.apply(&policy("Deny"));
            lab.ok(&["sync", "--timeout", "30"]);
            to_sync.push(t.elapsed());
            let t = Instant::now();
            lab.apply(&policy("Allow"));
            while !probe_all("allowed") {
                assert!(t.elapsed() < Duration::from_secs(30), "never enforced");
            }
            to_probe.push(t.elapsed());
        }
        println!(
            "| {n} | {:.0?} | {:.0?} | {probe:.0?} |",
            median(to_sync),
            median(to_probe)
        );
    }
}
