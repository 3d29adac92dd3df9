//! Drives one allocator against the configured datastore, for the
//! multi-process stress test and the allocation benchmark.
//!
//! `calico-ipam-stress --node N --count C [--release-every K] [--prefix P]`
//! prints `A <ip> <handle>` per allocation and `R <handle>` per release;
//! on stderr, the allocation rate.

#![allow(clippy::print_stdout)]
// A binary: it owns the clock.
#![allow(clippy::disallowed_methods)]

use anyhow::{bail, Context, Result};
use calico_backend::{open_store, DatastoreConfig};
use calico_client::SystemClock;
use calico_ipam::{AutoAssign, Ipam};
use std::io::Write;
use std::sync::Arc;
use std::time::Instant;

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let node = arg(&args, "--node").context("--node is required")?;
    let count: usize = arg(&args, "--count")
        .context("--count is required")?
        .parse()?;
    let release_every: usize = arg(&args, "--release-every").map_or(Ok(0), |v| v.parse())?;
    let prefix =
        arg(&args, "--prefix").unwrap_or_else(|| format!("stress.{node}.{}", std::process::id()));
    let cfg = DatastoreConfig::from_env()?;
    let store = open_store(&cfg)?;
    let ipam = Ipam::new(store, Arc::new(SystemClock));
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let start = Instant::now();
    for i in 0..count {
        let handle = format!("{prefix}.{i}");
        let req = AutoAssign {
            handle: handle.clone(),
            node: node.clone(),
            num_v4: 1,
            ..Default::default()
        };
        let got = match ipam.auto_assign(&req) {
            Ok(got) => got,
            Err(e) => bail!("allocation {i} for {node} failed: {e}"),
        };
        writeln!(out, "A {} {handle}", got.v4[0].addr())?;
        if release_every > 0 && i % release_every == 0 {
            ipam.release_handle(&handle)?;
            writeln!(out, "R {handle}")?;
        }
    }
    out.flush()?;
    let secs = start.elapsed().as_secs_f64();
    eprintln!(
        "{count} allocations in {secs:.3}s: {:.0}/s",
        count as f64 / secs
    );
    Ok(())
}
