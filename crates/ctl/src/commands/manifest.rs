//! apply / create / replace / delete from manifest files.
//!
//! A manifest is decoded and validated whole before anything is written:
//! one invalid resource means nothing is written. Writes then go one by
//! one; each reports its own success or failure.

use crate::input::{client, existing_client, read_manifest};
use anyhow::{bail, Result};
use calico_api::{decode_manifest, Kind, Resource};
use calico_client::{Applied, Client, ClientError};
use std::path::Path;
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct FileArgs {
    /// Manifest file (YAML or JSON, one or more documents); `-` reads standard input.
    #[arg(short = 'f', long = "filename", required = true)]
    pub files: Vec<String>,
}

#[derive(clap::Args, Debug)]
pub struct CreateArgs {
    #[command(flatten)]
    pub files: FileArgs,
    /// Leave resources that already exist alone instead of failing.
    #[arg(long)]
    pub skip_exists: bool,
}

#[derive(clap::Args, Debug)]
pub struct DeleteArgs {
    /// Manifest file naming the resources to delete.
    #[arg(short = 'f', long = "filename", conflicts_with_all = ["kind", "names"])]
    pub files: Vec<String>,
    /// Resource kind (ippool, networkpolicy, gnp, ...).
    pub kind: Option<String>,
    /// Names of the resources.
    pub names: Vec<String>,
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    /// Succeed for resources that do not exist.
    #[arg(long)]
    pub skip_not_exists: bool,
    /// Delete IP pools even while addresses in them are in use (their
    /// blocks stay, outside any pool).
    #[arg(long)]
    pub force: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Apply,
    Replace,
}

/// Tiers go first so the policies in them can be written; delete goes in reverse.
fn rank(kind: Kind) -> u8 {
    match kind {
        Kind::Tier => 0,
        Kind::ClusterInformation
        | Kind::FelixConfiguration
        | Kind::BGPConfiguration
        | Kind::KubeControllersConfiguration => 1,
        _ => 2,
    }
}

fn load(files: &[String]) -> Result<Vec<Resource>> {
    let mut all = Vec::new();
    let mut problems = Vec::new();
    for f in files {
        match decode_manifest(&read_manifest(f)?) {
            Ok(rs) => all.extend(rs),
            Err(e) => problems.extend(e.problems.iter().map(|p| format!("{f}: {p}"))),
        }
    }
    if !problems.is_empty() {
        bail!(
            "nothing was written; the manifest has {} problem(s):\n{}",
            problems.len(),
            problems.join("\n")
        );
    }
    if all.is_empty() {
        bail!("no resources found in {}", files.join(", "));
    }
    all.sort_by_key(|r| rank(r.kind()));
    Ok(all)
}

/// A verb as the summary needs it: ("apply", "applied").
type Verb = (&'static str, &'static str);

/// Prints the summary and picks the exit code.
/// `what` is "resource(s)", or "'IPPool' resource(s)" when all share a kind, as calicoctl says.
fn summary((base, verb): Verb, what: &str, ok: usize, failed: usize) -> ExitCode {
    let total = ok + failed;
    if failed == 0 {
        println!("Successfully {verb} {ok} {what}");
        ExitCode::SUCCESS
    } else if ok == 0 {
        eprintln!("Failed to {base} any of {total} {what}");
        ExitCode::FAILURE
    } else {
        eprintln!("Partial success: {verb} {ok} out of {total} {what}");
        ExitCode::FAILURE
    }
}

fn what(kinds: impl IntoIterator<Item = Kind>) -> String {
    let mut kinds = kinds.into_iter();
    match kinds.next() {
        Some(first) if kinds.all(|k| k == first) => format!("'{first}' resource(s)"),
        _ => "resource(s)".into(),
    }
}

fn each(
    resources: Vec<Resource>,
    verb: Verb,
    mut op: impl FnMut(Resource) -> Result<Option<String>, ClientError>,
) -> ExitCode {
    let what = what(resources.iter().map(Resource::kind));
    let (mut ok, mut failed) = (0, 0);
    for r in resources {
        let name = r.display_name();
        match op(r) {
            Ok(Some(what)) => {
                ok += 1;
                println!("{what} {name}");
            }
            Ok(None) => ok += 1,
            Err(e) => {
                failed += 1;
                eprintln!("Failed: {name}: {e}");
            }
        }
    }
    summary(verb, &what, ok, failed)
}

pub fn apply(config: &Path, args: &FileArgs, mode: Mode) -> Result<ExitCode> {
    let resources = load(&args.files)?;
    let c = client(config)?;
    Ok(match mode {
        Mode::Apply => each(resources, ("apply", "applied"), |r| {
            c.apply(r).map(|(_, how)| {
                Some(
                    if how == Applied::Created {
                        "Created"
                    } else {
                        "Updated"
                    }
                    .to_string(),
                )
            })
        }),
        Mode::Replace => each(resources, ("replace", "replaced"), |r| {
            c.replace(r).map(|_| Some("Replaced".into()))
        }),
    })
}

pub fn create(config: &Path, args: &CreateArgs) -> Result<ExitCode> {
    let resources = load(&args.files.files)?;
    let c = client(config)?;
    Ok(each(resources, ("create", "created"), |r| {
        match c.create(r) {
            Ok(_) => Ok(Some("Created".into())),
            Err(ClientError::AlreadyExists(_)) if args.skip_exists => {
                Ok(Some("Skipped (exists)".into()))
            }
            Err(e) => Err(e),
        }
    }))
}

/// Deletes one resource; an IP pool as Calico deletes one (disabled, its
/// empty blocks and affinities released, refused while in use unless forced).
fn delete_one(
    c: &Client,
    kind: Kind,
    ns: Option<&str>,
    name: &str,
    args: &DeleteArgs,
) -> Result<Option<String>, ClientError> {
    let outcome = if kind == Kind::IPPool {
        let ipam = calico_ipam::Ipam::new(
            std::sync::Arc::clone(c.store()),
            std::sync::Arc::new(calico_client::SystemClock),
        );
        ipam.delete_pool(name, args.force).map_err(|e| match e {
            calico_ipam::IpamError::Client(e) => e,
            e => ClientError::Rejected {
                resource: format!("IPPool({name})"),
                reason: e.to_string(),
            },
        })
    } else {
        c.delete(kind, ns, name, None)
            .map(|_| calico_ipam::PoolDeleted::default())
    };
    let skip_missing = args.skip_not_exists;
    match outcome {
        Ok(_) => Ok(Some("Deleted".into())),
        Err(ClientError::NotFound(_)) if skip_missing => Ok(Some("Skipped (not found)".into())),
        Err(e) => Err(e),
    }
}

pub fn delete(config: &Path, args: &DeleteArgs) -> Result<ExitCode> {
    if !args.files.is_empty() {
        let mut resources = load(&args.files)?;
        resources.reverse();
        resources.sort_by_key(|r| std::cmp::Reverse(rank(r.kind())));
        let c = existing_client(config)?;
        return Ok(each(resources, ("delete", "deleted"), |r| {
            let m = r.meta();
            delete_one(&c, r.kind(), m.namespace.as_deref(), &m.name, args)
        }));
    }
    let Some(kind_text) = &args.kind else {
        bail!("name the resources to delete: calicoctl delete -f FILE, or calicoctl delete KIND NAME...");
    };
    let kind = crate::commands::get::parse_kind(kind_text)?;
    if args.names.is_empty() {
        bail!("name at least one {kind} to delete");
    }
    let ns = kind
        .namespaced()
        .then(|| args.namespace.as_deref().unwrap_or("default"));
    let c = existing_client(config)?;
    let (mut ok, mut failed) = (0, 0);
    for name in &args.names {
        match delete_one(&c, kind, ns, name, args) {
            Ok(what) => {
                ok += 1;
                let shown = match ns {
                    Some(ns) => format!("{kind}({ns}/{name})"),
                    None => format!("{kind}({name})"),
                };
                println!("{} {shown}", what.unwrap_or_default());
            }
            Err(e) => {
                failed += 1;
                eprintln!("Failed: {e}");
            }
        }
    }
    Ok(summary(("delete", "deleted"), &what([kind]), ok, failed))
}
