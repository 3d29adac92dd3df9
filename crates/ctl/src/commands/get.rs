//! calicoctl get.

use crate::input::existing_client as client;
use crate::table;
use anyhow::{anyhow, bail, Result};
use calico_api::{Kind, Resource, API_VERSION};
use calico_client::ClientError;
use calico_selector::Selector;
use std::path::Path;
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct GetArgs {
    /// Resource kind (ippool, networkpolicy, gnp, wep, node, ...).
    pub kind: String,
    /// Names to show; all when none are given.
    pub names: Vec<String>,
    /// Output format: table (default), wide, yaml or json.
    #[arg(short = 'o', long, default_value = "table")]
    pub output: String,
    /// Namespace (namespaced kinds; default "default").
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    /// Every namespace.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    /// Only resources whose labels match this Calico selector.
    #[arg(short = 'l', long)]
    pub selector: Option<String>,
}

pub fn parse_kind(text: &str) -> Result<Kind> {
    Kind::from_alias(text).ok_or_else(|| {
        let known: Vec<&str> = Kind::ALL.iter().map(|k| k.plural()).collect();
        anyhow!(
            "unknown resource kind {text:?}; known kinds: {}",
            known.join(", ")
        )
    })
}

pub fn run(config: &Path, args: &GetArgs) -> Result<ExitCode> {
    let kind = parse_kind(&args.kind)?;
    let format = args.output.as_str();
    if !["table", "wide", "yaml", "json", "ps"].contains(&format) {
        bail!("unknown output format {format:?}; use table, wide, yaml or json");
    }
    let selector = match &args.selector {
        Some(text) => Some(Selector::parse(text).map_err(|e| anyhow!("--selector: {e}"))?),
        None => None,
    };
    if args.all_namespaces && !args.names.is_empty() {
        bail!("--all-namespaces cannot be combined with names");
    }
    let ns: Option<String> = if !kind.namespaced() || args.all_namespaces {
        None
    } else {
        Some(args.namespace.clone().unwrap_or_else(|| "default".into()))
    };
    let c = client(config)?;
    let (mut items, revision) = if args.names.is_empty() {
        let list = c.list(kind, ns.as_deref())?;
        (list.items, list.revision)
    } else {
        let mut items = Vec::new();
        for name in &args.names {
            match c.get(kind, ns.as_deref(), name) {
                Ok(r) => items.push(r),
                Err(e @ ClientError::NotFound(_)) => bail!("Failed to get resources: {e}"),
                Err(e) => return Err(e.into()),
            }
        }
        let rev = c
            .store()
            .revision()
            .map_err(|e| anyhow::anyhow!("reading the datastore revision: {e}"))?;
        (items, rev)
    };
    if let Some(sel) = &selector {
        items.retain(|r| sel.matches(&r.meta().labels));
    }
    let single = args.names.len() == 1 && items.len() == 1;
    match format {
        "yaml" | "json" => {
            let value = if single {
                serde_json::to_value(&items[0])?
            } else {
                list_value(kind, &items, revision)
            };
            if format == "yaml" {
                print!("{}", calico_api::to_yaml(&value)?);
            } else {
                println!("{}", serde_json::to_string_pretty(&value)?);
            }
        }
        _ => print!(
            "{}",
            table::render(
                &items,
                kind,
                format == "wide",
                kind.namespaced() && args.all_namespaces
            )
        ),
    }
    Ok(ExitCode::SUCCESS)
}

fn list_value(kind: Kind, items: &[Resource], revision: i64) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": API_VERSION,
        "kind": format!("{}List", kind.name()),
        "items": items,
        "metadata": { "resourceVersion": revision.to_string() },
    })
}
