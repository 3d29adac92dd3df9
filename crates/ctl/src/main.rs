//! calicoctl: create, read, update and delete Calico resources, and check selectors.
//!
//! Exit codes: 0 success, 1 failure, 2 bad usage or an invalid selector.

#![allow(clippy::print_stdout)]
// A binary: it owns the clock.
#![allow(clippy::disallowed_methods)]

mod commands;
mod input;
mod table;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(
    name = "calicoctl",
    version,
    about = "Manage Calico resources",
    disable_help_subcommand = true
)]
struct Cli {
    /// CalicoAPIConfig file; DATASTORE_TYPE, ETCD_ENDPOINTS and CALICO_DATASTORE_PATH override it.
    #[arg(
        short = 'c',
        long,
        global = true,
        default_value = "/etc/calico/calicoctl.cfg"
    )]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create or update resources from files.
    Apply(commands::manifest::FileArgs),
    /// Create resources from files; they must not exist.
    Create(commands::manifest::CreateArgs),
    /// Replace existing resources from files.
    Replace(commands::manifest::FileArgs),
    /// Delete resources by file or by kind and name.
    Delete(commands::manifest::DeleteArgs),
    /// Show resources.
    Get(commands::get::GetArgs),
    /// Change a resource with a JSON merge patch.
    Patch(commands::edit::PatchArgs),
    /// Add, change or remove a label on a resource.
    Label(commands::edit::LabelArgs),
    /// Show client and cluster versions.
    Version,
    /// IP address management: usage, leaks, release, settings.
    #[command(subcommand)]
    Ipam(commands::ipam::IpamCommand),
    /// This node's calico-node: BGP session status.
    #[command(subcommand)]
    Node(commands::node::NodeCommand),
    /// Check, canonicalise and evaluate selectors.
    #[command(subcommand)]
    Selector(commands::selector::SelectorCommand),
    /// What policy does to a connection.
    #[command(subcommand)]
    Policy(commands::policy::PolicyCommand),
    /// Flow records from the flow service (calico-flows): who talked to
    /// whom, and which policy allowed or denied it.
    Flows(Box<commands::flows::FlowsArgs>),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Selector(cmd) => return commands::selector::run(&cmd),
        Command::Version => commands::version::run(&cli.config),
        Command::Apply(a) => {
            commands::manifest::apply(&cli.config, &a, commands::manifest::Mode::Apply)
        }
        Command::Replace(a) => {
            commands::manifest::apply(&cli.config, &a, commands::manifest::Mode::Replace)
        }
        Command::Create(a) => commands::manifest::create(&cli.config, &a),
        Command::Delete(a) => commands::manifest::delete(&cli.config, &a),
        Command::Get(a) => commands::get::run(&cli.config, &a),
        Command::Patch(a) => commands::edit::patch(&cli.config, &a),
        Command::Label(a) => commands::edit::label(&cli.config, &a),
        Command::Ipam(cmd) => commands::ipam::run(&cli.config, &cmd),
        Command::Node(cmd) => commands::node::run(&cmd),
        Command::Policy(cmd) => commands::policy::run(&cli.config, &cmd),
        Command::Flows(a) => commands::flows::run(&a),
    };
    match outcome {
        Ok(code) => code,
        Err(e) => {
            eprintln!("{e:#}");
            ExitCode::FAILURE
        }
    }
}
