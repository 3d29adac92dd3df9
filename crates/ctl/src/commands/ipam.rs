//! calicoctl ipam: show, check, release, configure, gc.

use crate::input::existing_client as client;
use anyhow::{anyhow, bail, Result};
use calico_ipam::Ipam;
use std::net::IpAddr;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

#[derive(clap::Subcommand, Debug)]
pub enum IpamCommand {
    /// Address usage per pool (and per block with --show-blocks), or one address.
    Show {
        #[arg(long)]
        show_blocks: bool,
        /// Show who holds this address.
        #[arg(long)]
        ip: Option<IpAddr>,
    },
    /// Look for leaked addresses and inconsistent records; exits 1 when any are found.
    Check {
        /// Allocations younger than this are not counted as leaks yet.
        #[arg(long, default_value = "15m", value_parser = humantime::parse_duration)]
        grace: Duration,
    },
    /// Release addresses.
    Release {
        #[arg(long, required = true)]
        ip: Vec<IpAddr>,
    },
    /// Change cluster-wide IPAM settings.
    Configure {
        /// Never borrow addresses from other nodes' blocks.
        #[arg(long, value_name = "true|false")]
        strictaffinity: Option<bool>,
        /// Blocks one node may hold (0: no limit).
        #[arg(long)]
        max_blocks_per_host: Option<usize>,
    },
    /// Release leaked addresses (older than --grace) and empty blocks of deleted nodes.
    Gc {
        #[arg(long, default_value = "15m", value_parser = humantime::parse_duration)]
        grace: Duration,
    },
}

fn ipam(config: &Path) -> Result<Ipam> {
    let c = client(config)?;
    Ok(Ipam::new(
        Arc::clone(c.store()),
        Arc::new(calico_client::SystemClock),
    ))
}

fn percent(part: u128, whole: u128) -> String {
    if whole == 0 {
        return "0%".into();
    }
    format!("{}%", part * 100 / whole)
}

/// A table with `+---+` borders, as calicoctl ipam prints.
fn boxed(header: &[&str], rows: &[Vec<String>]) -> String {
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            rows.iter()
                .map(|r| r[i].len())
                .chain([header[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let rule = format!(
        "+{}+\n",
        widths
            .iter()
            .map(|w| "-".repeat(w + 2))
            .collect::<Vec<_>>()
            .join("+")
    );
    let line = |cells: Vec<String>| {
        format!(
            "| {} |\n",
            cells
                .iter()
                .zip(&widths)
                .map(|(c, w)| format!("{c:<w$}"))
                .collect::<Vec<_>>()
                .join(" | ")
        )
    };
    let mut out = rule.clone();
    out.push_str(&line(header.iter().map(|h| (*h).to_string()).collect()));
    out.push_str(&rule);
    for r in rows {
        out.push_str(&line(r.clone()));
    }
    out.push_str(&rule);
    out
}

pub fn run(config: &Path, cmd: &IpamCommand) -> Result<ExitCode> {
    let ipam = ipam(config)?;
    match cmd {
        IpamCommand::Show { ip: Some(ip), .. } => match ipam.holder(*ip)? {
            Some((block, attr)) => {
                println!("IP {ip} is in use (block {block})");
                if let Some(h) = &attr.handle {
                    println!("Handle: {h}");
                }
                let attrs = attr.secondary.unwrap_or_default();
                if !attrs.is_empty() {
                    println!("Attributes:");
                    for (k, v) in attrs {
                        println!("  {k}: {v}");
                    }
                }
            }
            None => println!("IP {ip} is not assigned"),
        },
        IpamCommand::Show {
            show_blocks,
            ip: None,
        } => {
            let usage = ipam.usage()?;
            let mut rows = Vec::new();
            for p in &usage.pools {
                let free = p.size - p.in_use;
                rows.push(vec![
                    "IP Pool".into(),
                    p.cidr.to_string(),
                    p.size.to_string(),
                    format!("{} ({})", p.in_use, percent(p.in_use, p.size)),
                    format!("{free} ({})", percent(free, p.size)),
                ]);
                if *show_blocks {
                    for b in &p.blocks {
                        let free = b.size - b.in_use;
                        rows.push(vec![
                            "Block".into(),
                            format!(
                                "{}{}",
                                b.cidr,
                                b.node
                                    .as_deref()
                                    .map(|n| format!(" ({n})"))
                                    .unwrap_or_default()
                            ),
                            b.size.to_string(),
                            format!("{} ({})", b.in_use, percent(b.in_use, b.size)),
                            format!("{free} ({})", percent(free, b.size)),
                        ]);
                    }
                }
            }
            print!(
                "{}",
                boxed(
                    &["GROUPING", "CIDR", "IPS TOTAL", "IPS IN USE", "IPS FREE"],
                    &rows
                )
            );
        }
        IpamCommand::Check { grace } => {
            println!("Checking IPAM for inconsistencies...");
            let report = ipam.check(SystemTime::now(), *grace)?;
            println!("Found {} IPs in use.", report.in_use);
            println!(
                "Found {} allocations younger than the grace period ({}) with no workload yet.",
                report.pending,
                humantime::format_duration(*grace)
            );
            println!("Found {} leaked IPs:", report.leaks.len());
            for l in &report.leaks {
                let attrs: Vec<String> = l.attrs.iter().map(|(k, v)| format!("{k}={v}")).collect();
                println!(
                    "  {} handle={} {}",
                    l.ip,
                    l.handle.as_deref().unwrap_or("-"),
                    attrs.join(" ")
                );
            }
            println!("Found {} inconsistencies:", report.problems.len());
            for p in &report.problems {
                println!("  {p}");
            }
            if !report.is_clean() {
                println!("Check complete: problems found.");
                return Ok(ExitCode::FAILURE);
            }
            println!("Check complete: no problems found.");
        }
        IpamCommand::Release { ip } => {
            let released = ipam.release_ips(ip)?;
            for a in ip {
                if released.contains(a) {
                    println!("Successfully released IP address {a}");
                } else {
                    eprintln!("IP address {a} is not assigned");
                }
            }
            if released.len() != ip.len() {
                return Ok(ExitCode::FAILURE);
            }
        }
        IpamCommand::Configure {
            strictaffinity,
            max_blocks_per_host,
        } => {
            if strictaffinity.is_none() && max_blocks_per_host.is_none() {
                bail!("nothing to configure: give --strictaffinity=true|false and/or --max-blocks-per-host=N");
            }
            let cfg = ipam
                .set_config(|c| {
                    if let Some(s) = strictaffinity {
                        c.strict_affinity = *s;
                    }
                    if let Some(m) = max_blocks_per_host {
                        c.max_blocks_per_host = *m;
                    }
                })
                .map_err(|e| anyhow!("{e}"))?;
            println!(
                "Successfully set StrictAffinity to: {}",
                cfg.strict_affinity
            );
            println!(
                "MaxBlocksPerHost: {}",
                if cfg.max_blocks_per_host == 0 {
                    "unlimited".to_string()
                } else {
                    cfg.max_blocks_per_host.to_string()
                }
            );
        }
        IpamCommand::Gc { grace } => {
            let out = ipam.gc(SystemTime::now(), *grace)?;
            println!(
                "Released {} leaked IPs, {} empty blocks, {} empty handles",
                out.released.len(),
                out.blocks_removed.len(),
                out.handles_removed.len()
            );
            for ip in &out.released {
                println!("  released {ip}");
            }
            for b in &out.blocks_removed {
                println!("  removed block {b}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
