//! Drives `calico-lab` and `calicoctl` as a user does, for the end-to-end
//! tests and benchmarks: one lab per value, taken down when it is dropped
//! (even when the test panics).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// A lab named `name` with its state in a temporary directory.
#[derive(Debug)]
pub struct LabCli {
    pub name: String,
    pub dir: tempfile::TempDir,
    /// Where `calico-lab`, `calicoctl` and the other binaries are.
    bins: PathBuf,
}

/// stdout and stderr together, for messages.
pub fn output_text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

impl LabCli {
    /// `calico_lab` is the binary (`env!("CARGO_BIN_EXE_calico-lab")`);
    /// calicoctl is taken from the same directory.
    pub fn new(name: impl Into<String>, calico_lab: &Path) -> LabCli {
        LabCli {
            name: name.into(),
            dir: tempfile::tempdir().expect("tempdir"),
            bins: calico_lab.parent().expect("bin dir").to_path_buf(),
        }
    }

    pub fn cmd(&self, args: &[&str]) -> Output {
        Command::new(self.bins.join("calico-lab"))
            .args(args)
            .env("CALICO_LAB_NAME", &self.name)
            .env("CALICO_LAB_STATE", self.dir.path())
            .output()
            .expect("calico-lab")
    }

    /// Runs calico-lab and insists it succeeds; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.cmd(args);
        assert!(
            out.status.success(),
            "calico-lab {args:?}: {}",
            output_text(&out)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// calicoctl against the lab's embedded datastore, `stdin` fed in.
    pub fn calicoctl(&self, args: &[&str], stdin: &str) -> Output {
        calicoctl(
            &self.bins.join("calicoctl"),
            &self.dir.path().join("calico.db"),
            args,
            stdin,
        )
    }

    /// calicoctl that must succeed; returns stdout.
    pub fn ctl_ok(&self, args: &[&str]) -> String {
        let out = self.calicoctl(args, "");
        assert!(
            out.status.success(),
            "calicoctl {args:?}: {}",
            output_text(&out)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `calicoctl apply` of `yaml`, then waits until every node applied it.
    pub fn apply(&self, yaml: &str) {
        let out = self.calicoctl(&["apply", "-f", "-"], yaml);
        assert!(out.status.success(), "{}", output_text(&out));
        self.ok(&["sync", "--timeout", "30"]);
    }

    /// The lab's state file.
    pub fn state(&self) -> serde_json::Value {
        let text = std::fs::read_to_string(self.dir.path().join("lab.json")).expect("state");
        serde_json::from_str(&text).expect("state json")
    }

    /// The namespace of one of the lab's parts (`fabric`, `node-1`).
    pub fn netns(&self, what: &str) -> String {
        format!("cl-{}-{what}", self.name)
    }

    /// A command run inside one of the lab's namespaces.
    pub fn in_netns(&self, what: &str, cmd: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.netns(what)])
            .args(cmd)
            .output()
            .expect("ip netns exec")
    }

    /// The (from, to) pod pairs the connectivity matrix allows on TCP/80.
    pub fn allowed(&self) -> BTreeSet<(String, String)> {
        self.allowed_over(false)
    }

    /// The same, over IPv6 with `v6` (a dual-stack lab).
    pub fn allowed_over(&self, v6: bool) -> BTreeSet<(String, String)> {
        let mut args = vec!["matrix", "--port", "80", "--protocol", "TCP", "--json"];
        if v6 {
            args.push("--ipv6");
        }
        let text = self.ok(&args);
        let v: serde_json::Value = serde_json::from_str(&text).expect("json");
        v.as_array()
            .expect("array")
            .iter()
            .filter(|e| e["result"] == "allowed")
            .map(|e| {
                (
                    e["from"].as_str().unwrap_or("").to_string(),
                    e["to"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect()
    }
}

impl Drop for LabCli {
    fn drop(&mut self) {
        let _ = self.cmd(&["down"]);
    }
}

/// Runs calicoctl (`program`) against the embedded datastore file `db`
/// (no config file, whatever the environment says), `stdin` fed in.
pub fn calicoctl(program: &Path, db: &Path, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(program)
        .args(["--config", "/nonexistent"])
        .args(args)
        .env("CALICO_DATASTORE_PATH", db)
        .env_remove("DATASTORE_TYPE")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("calicoctl (build the workspace)");
    std::io::Write::write_all(&mut child.stdin.take().expect("stdin"), stdin.as_bytes())
        .expect("write");
    child.wait_with_output().expect("calicoctl")
}

/// iperf3 from inside `netns` to `server`: TCP bits/s, or (`udp`) 64-byte
/// UDP packets/s received.
pub fn iperf3(netns: &str, server: &str, secs: u32, udp: bool) -> f64 {
    let secs = secs.to_string();
    let mut args = vec![
        "netns", "exec", netns, "iperf3", "-c", server, "-t", &secs, "-J",
    ];
    if udp {
        args.extend(["-u", "-b", "0", "-l", "64"]);
    }
    let out = Command::new("ip").args(&args).output().expect("iperf3");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    if udp {
        let s = &v["end"]["sum"];
        let packets =
            s["packets"].as_f64().unwrap_or(0.0) - s["lost_packets"].as_f64().unwrap_or(0.0);
        packets / s["seconds"].as_f64().unwrap_or(1.0)
    } else {
        v["end"]["sum_received"]["bits_per_second"]
            .as_f64()
            .unwrap_or(0.0)
    }
}
