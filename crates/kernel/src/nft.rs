//! The `nft` binary: every script is one `nft -f -` transaction, so a
//! packet sees either the old ruleset or the new one.

use std::io::Write;
use std::process::{Command, Stdio};

pub use calico_dataplane::TABLE;

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("cannot run nft: {0}")]
    Spawn(std::io::Error),
    #[error("nft refused the ruleset: {0}")]
    Refused(String),
}

/// How an update reached the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// Nothing differed.
    Unchanged,
    /// Only the differences were sent.
    Delta,
    /// The whole table was replaced.
    Full,
    /// The kernel's table was read back and held exactly what was wanted:
    /// nothing was sent.
    Verified,
    /// The kernel's table was read back and only the difference was sent.
    Reconciled,
}

/// Where nft runs: this process's network namespace, or a named one
/// (`/run/netns/NAME`, as `ip netns` makes them).
#[derive(Debug, Clone, Default)]
pub struct Nft {
    netns: Option<String>,
}

impl Nft {
    pub fn in_netns(name: &str) -> Self {
        Nft {
            netns: Some(name.to_string()),
        }
    }

    fn command(&self) -> Command {
        match &self.netns {
            None => Command::new("nft"),
            Some(ns) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net=/run/netns/{ns}")).arg("nft");
                c
            }
        }
    }

    fn run(&self, script: &str) -> Result<(), ApplyError> {
        let mut child = self
            .command()
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(ApplyError::Spawn)?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(script.as_bytes())
                .map_err(ApplyError::Spawn)?;
        }
        let out = child.wait_with_output().map_err(ApplyError::Spawn)?;
        if out.status.success() {
            Ok(())
        } else {
            Err(ApplyError::Refused(
                String::from_utf8_lossy(&out.stderr).trim().to_string(),
            ))
        }
    }
}

impl crate::Firewall for Nft {
    fn run(&self, script: &str) -> Result<(), ApplyError> {
        Nft::run(self, script)
    }

    fn list(&self) -> Result<Option<String>, ApplyError> {
        let out = self
            .command()
            .args(["-j", "list", "table", "inet", TABLE])
            .output()
            .map_err(ApplyError::Spawn)?;
        if out.status.success() {
            return String::from_utf8(out.stdout)
                .map(Some)
                .map_err(|_| ApplyError::Refused("nft listed non-UTF-8 text".into()));
        }
        let why = String::from_utf8_lossy(&out.stderr).trim().to_string();
        if why.contains("No such file or directory") {
            Ok(None)
        } else {
            Err(ApplyError::Refused(why))
        }
    }
}
