//! calico-node: the agent every node runs.
//!
//! `felix`: policy and routes.
//!
//! ```text
//! datastore ──list, then watch──► decode ──Update──► CalcGraph ──Intent──►
//!   DesiredState ──build──► nft table ──delta (one transaction)──► kernel
//!                    └──► workload /32s, blackholes for affine blocks (proto 80)
//! ```
//!
//! `controllers`: cluster-wide controllers (automatic host endpoints).
//!
//! `typha`: the fan-out between the datastore and many agents (calico-syncer).
//!
//! `bgp`: the node's BGP speaker (mesh, BGPPeers, route reflection), with
//! the plan it follows computed from the datastore in `bgp_plan`.

#![allow(clippy::print_stdout)]
// A binary: it owns the clock.
#![allow(clippy::disallowed_methods)]

mod bgp;
mod bgp_plan;
mod config;
mod controllers;
mod events;
mod felix;
mod flows;
mod mtu;
mod overlay;
mod pending;
mod register;
mod status;
mod sync;
mod tunnel_addr;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(name = "calico-node", version, about = "The calico-rs node agent")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Program network policy for this node's workloads into nftables, following the datastore.
    Felix(Box<felix::Args>),
    /// Distribute routes with BGP: register this node's address, peer as the datastore says, announce its blocks and install what peers announce.
    Bgp(bgp::Args),
    /// Cluster-wide controllers (run one per cluster): automatic host endpoints for every Node, as KubeControllersConfiguration says.
    Controllers(controllers::Args),
    /// The fan-out (Calico's Typha): one connection to the datastore, served to many node agents.
    Typha(sync::Args),
}

/// Logs to stderr (the agents' and controllers' one sink).
pub(crate) fn stderr_logging() {
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}

/// The datastore the environment names, and a client over it.
pub(crate) fn datastore() -> anyhow::Result<(
    std::sync::Arc<dyn calico_datastore::Store>,
    calico_client::Client,
)> {
    use anyhow::Context;
    let ds = calico_backend::DatastoreConfig::from_env()?;
    let store = calico_backend::open_store(&ds)
        .with_context(|| format!("opening the {}", ds.describe()))?;
    let client = calico_client::Client::new(
        std::sync::Arc::clone(&store),
        std::sync::Arc::new(calico_client::SystemClock),
    );
    Ok((store, client))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Felix(a) => felix::run(&a),
        Command::Bgp(a) => bgp::run(&a),
        Command::Controllers(a) => controllers::run(&a),
        Command::Typha(a) => sync::run_typha(&a),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("calico-node: {e:#}");
            ExitCode::FAILURE
        }
    }
}
