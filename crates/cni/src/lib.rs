//! The `calico` and `calico-ipam` CNI plugins (CNI spec 1.1.0, results in
//! 1.1.0, 1.0.0, 0.4.0 and 0.3.x).
//!
//! Synchronous and short-lived: read the environment and stdin, do the
//! work, print one JSON document. See docs/design/cni.md for the contract.

pub mod conf;
pub mod env;
pub mod error;
mod ipam_plugin;
pub mod names;
mod plugin;
pub mod result;

pub use error::CniError;
pub use plugin::OpenKernel;

use serde_json::{json, Value};
use std::io::{Read, Write};

pub const LATEST: &str = "1.1.0";
pub const SUPPORTED: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// Which plugin this binary is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plugin {
    Calico,
    CalicoIpam,
}

/// Runs one CNI invocation on this host's kernel; returns the JSON to
/// print on success.
pub fn run(
    plugin: Plugin,
    get: &dyn Fn(&str) -> Option<String>,
    stdin: &[u8],
) -> Result<Option<Value>, CniError> {
    let real = || {
        calico_kernel::workload::Wiring::new()
            .map(|w| Box::new(w) as Box<dyn calico_kernel::Workloads>)
    };
    run_with(plugin, get, stdin, &real)
}

/// [`run`], with the kernel's workload side opened by `kernel` (a fake in
/// the orchestration tests).
pub fn run_with(
    plugin: Plugin,
    get: &dyn Fn(&str) -> Option<String>,
    stdin: &[u8],
    kernel: &plugin::OpenKernel<'_>,
) -> Result<Option<Value>, CniError> {
    let env = env::Env::read(get)?;
    if env.command == env::Command::Version {
        let asked = serde_json::from_slice::<Value>(stdin)
            .ok()
            .and_then(|v| v.get("cniVersion")?.as_str().map(String::from));
        return Ok(Some(
            json!({ "cniVersion": asked.unwrap_or_else(|| LATEST.into()), "supportedVersions": SUPPORTED }),
        ));
    }
    let conf = conf::NetConf::parse(stdin)?;
    if !SUPPORTED.contains(&conf.cni_version.as_str()) {
        return Err(CniError::new(
            error::code::INCOMPATIBLE_VERSION,
            format!("cniVersion {:?} is not supported", conf.cni_version),
            format!("supported: {}", SUPPORTED.join(", ")),
        ));
    }
    let version = conf.cni_version.clone();
    let out = match plugin {
        Plugin::Calico => plugin::run(&env, &conf, get, kernel),
        Plugin::CalicoIpam => ipam_plugin::run(&env, &conf, get),
    };
    out.map_err(|e| e.with_version(&version))
}

/// The whole process: environment and stdin in, JSON out, exit code.
pub fn main(plugin: Plugin) -> std::process::ExitCode {
    let mut stdin = Vec::new();
    let outcome = match std::io::stdin().read_to_end(&mut stdin) {
        Ok(_) => run(plugin, &|k| std::env::var(k).ok(), &stdin),
        Err(e) => Err(CniError::new(
            error::code::IO_FAILURE,
            "cannot read stdin",
            e.to_string(),
        )),
    };
    let mut out = std::io::stdout().lock();
    match outcome {
        Ok(Some(v)) => {
            let _ = writeln!(out, "{v}");
            std::process::ExitCode::SUCCESS
        }
        Ok(None) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // A CNI error is a code and two strings: it always serializes.
            let text = serde_json::to_string(&e).expect("a CNI error always serializes");
            let _ = writeln!(out, "{text}");
            std::process::ExitCode::FAILURE
        }
    }
}
