//! calico-lab: a calico-rs cluster on one machine.
//!
//! A fabric namespace holds a bridge; each node is a namespace attached to
//! it, running the real `calico-node felix` and `calico-node bgp`. Pods are
//! namespaces wired by the real CNI plugin, exactly as a container runtime
//! calls it, each running an echo server on its ports. Everything the lab
//! makes is named `cl-<lab>-…` and recorded in its state directory, so
//! `down` removes it all, even after a crash. Traffic only ever flows
//! inside those namespaces.

#![allow(clippy::print_stdout)]
// A binary: it owns the clock.
#![allow(clippy::disallowed_methods)]

mod cli;
mod cluster;
mod echo;
mod etcd;
mod flowsvc;
mod pods;
mod probe;
mod process;
mod state;

use cli::*;
use cluster::*;
use etcd::*;
use flowsvc::*;
use pods::*;
use probe::*;
use process::*;

use anyhow::{anyhow, bail, Context, Result};
use calico_api::{Kind, Resource};
use calico_backend::{open_store, DatastoreConfig};
use calico_client::{Client, SystemClock};
use clap::{Parser, Subcommand};
use serde_json::json;
use state::{Lab, Node, Pod, Port};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let dir = cli
        .state
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("/run/calico-lab/{}", cli.lab_name)));
    let ctx = Ctx {
        name: cli.lab_name.clone(),
        dir,
    };
    let outcome: Result<ExitCode> = (|| match &cli.command {
        Cmd::Up {
            nodes,
            datastore,
            encap,
            subnets,
            flow_flush,
            ip_family,
            typha,
        } => up(
            &ctx,
            cluster::Shape {
                nodes: *nodes,
                datastore,
                encap,
                subnets: *subnets,
                flow_flush: *flow_flush,
                dual: ip_family == "dual",
                typha: *typha,
            },
        )
        .map(|()| ExitCode::SUCCESS),
        Cmd::Flows { url, args } => flows(&ctx, *url, args),
        Cmd::FlowService(c) => flow_service_cmd(&ctx, c).map(|()| ExitCode::SUCCESS),
        Cmd::Down => down(&ctx).map(|()| ExitCode::SUCCESS),
        Cmd::Ns(c) => ns_cmd(&ctx, c).map(|()| ExitCode::SUCCESS),
        Cmd::Pod(c) => pod_cmd(&ctx, c).map(|()| ExitCode::SUCCESS),
        Cmd::Node(c) => node_cmd(&ctx, c).map(|()| ExitCode::SUCCESS),
        Cmd::Datastore(DatastoreCmd::Restart) => {
            restart_datastore(&ctx).map(|()| ExitCode::SUCCESS)
        }
        Cmd::Proxy { netns, to, listen } => proxy(netns, to, listen).map(|()| ExitCode::SUCCESS),
        Cmd::Probe {
            from,
            to,
            port,
            protocol,
            timeout_ms,
            ipv6,
        } => {
            let lab = Lab::load(&ctx.dir)?;
            let (outcome, seen) = probe(
                &lab.endpoint_in(from, *ipv6)?,
                &lab.endpoint_in(to, *ipv6)?,
                *port,
                protocol,
                *timeout_ms,
            )?;
            match seen {
                Some(seen) => println!("{} (seen as {seen})", outcome.word()),
                None => println!("{}", outcome.word()),
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Matrix {
            port,
            protocol,
            json,
            ipv6,
        } => {
            let lab = Lab::load(&ctx.dir)?;
            matrix(&lab, *port, protocol, *json, *ipv6).map(|()| ExitCode::SUCCESS)
        }
        Cmd::Sync { timeout } => {
            let lab = Lab::load(&ctx.dir)?;
            sync(&ctx, &lab, Duration::from_secs(*timeout)).map(|()| ExitCode::SUCCESS)
        }
        Cmd::Exec { pod, cmd } => {
            let lab = Lab::load(&ctx.dir)?;
            let netns = if pod.contains('/') {
                lab.pod(pod)?.netns.clone()
            } else {
                lab.node(pod)?.netns.clone()
            };
            let status = Command::new("ip")
                .args(["netns", "exec", &netns])
                .args(cmd)
                .status()
                .with_context(|| format!("running {cmd:?}"))?;
            Ok(ExitCode::from(
                u8::try_from(status.code().unwrap_or(1)).unwrap_or(1),
            ))
        }
        Cmd::Env { node } => {
            let lab = Lab::load(&ctx.dir)?;
            if !lab.datastore_env.contains_key("DATASTORE_TYPE") {
                println!("unset DATASTORE_TYPE ETCD_ENDPOINTS");
            }
            for (k, v) in &lab.datastore_env {
                println!("export {k}={v}");
            }
            let n = match node {
                Some(n) => lab.node(n)?.name.clone(),
                None => lab
                    .nodes
                    .first()
                    .map(|n| n.name.clone())
                    .unwrap_or_default(),
            };
            println!(
                "export CALICO_BGP_STATUS_SOCKET={}",
                ctx.dir.join(format!("{n}-bgp.sock")).display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Show { json } => {
            let lab = Lab::load(&ctx.dir)?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&lab)?);
            } else {
                // What the datastore says now (the pool's mode may have
                // been changed since `up`).
                let client = ctx.client(&lab)?;
                for r in client.list(calico_api::Kind::IPPool, None)?.items {
                    if let Resource::IPPool(p) = r {
                        let mode = p.spec.vxlan_mode.unwrap_or_default();
                        println!(
                            "pool {} {} vxlanMode {mode:?} natOutgoing {}",
                            p.metadata.name, p.spec.cidr, p.spec.nat_outgoing
                        );
                    }
                }
                let mut vteps = BTreeMap::new();
                for r in client.list(calico_api::Kind::Node, None)?.items {
                    if let Resource::Node(n) = r {
                        if let Some(vtep) = n.spec.ipv4_vxlan_tunnel_addr {
                            vteps.insert(n.metadata.name, vtep);
                        }
                    }
                }
                for n in &lab.nodes {
                    match vteps.get(&n.name) {
                        Some(v) => println!("node {} {} vtep {v}", n.name, n.addr),
                        None => println!("node {} {}", n.name, n.addr),
                    }
                }
                if let Some(e) = &lab.external {
                    println!("external {} (probe ... external: TCP and UDP 80)", e.addr);
                }
                for (k, p) in &lab.pods {
                    println!("pod {k} on {} at {}", p.node, p.ip);
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Serve {
            tcp,
            udp,
            tell_peer,
        } => echo::serve(tcp, udp, *tell_peer).map(|()| ExitCode::SUCCESS),
        Cmd::Connect {
            addr,
            protocol,
            timeout_ms,
        } => {
            let a = addr
                .parse()
                .map_err(|_| anyhow!("address {addr:?}: expected IP:PORT"))?;
            let (outcome, seen) = echo::connect(a, protocol, Duration::from_millis(*timeout_ms))?;
            if let Some(seen) = seen {
                println!("{seen}");
            }
            Ok(ExitCode::from(outcome.code()))
        }
    })();
    match outcome {
        Ok(code) => code,
        Err(e) => {
            eprintln!("calico-lab: {e:#}");
            ExitCode::from(2)
        }
    }
}
