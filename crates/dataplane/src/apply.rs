//! Loading the table: one `nft -f -` transaction.

use std::io::Write;
use std::process::{Command, Stdio};

pub const TABLE: &str = "calico";

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("cannot run nft: {0}")]
    Spawn(std::io::Error),
    #[error("nft refused the ruleset: {0}")]
    Refused(String),
}

/// Replaces table `inet calico` with `ruleset` atomically (create-if-absent,
/// delete and re-add in one transaction). Nothing changes if nft refuses it.
pub fn apply(ruleset: &str) -> Result<(), ApplyError> {
    let script = format!("add table inet {TABLE}\ndelete table inet {TABLE}\n{ruleset}");
    let mut child = Command::new("nft")
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
