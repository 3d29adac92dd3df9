//! calicoctl patch and calicoctl label: read, change, write back with
//! compare-and-swap, retrying if someone else wrote in between.

use crate::commands::get::parse_kind;
use crate::input::existing_client as client;
use anyhow::{anyhow, bail, Context, Result};
use calico_api::{decode_resource, Kind, Resource};
use calico_client::{Client, ClientError};
use serde_json::Value;
use std::path::Path;
use std::process::ExitCode;

const ATTEMPTS: usize = 5;

#[derive(clap::Args, Debug)]
pub struct PatchArgs {
    pub kind: String,
    pub name: String,
    /// JSON merge patch (RFC 7386), e.g. '{"spec":{"natOutgoing":true}}'.
    #[arg(short = 'p', long)]
    pub patch: String,
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
}

#[derive(clap::Args, Debug)]
pub struct LabelArgs {
    pub kind: String,
    pub name: String,
    /// `key=value` to set, or `key` with --remove.
    pub label: String,
    /// Change the value of a label that is already set.
    #[arg(long)]
    pub overwrite: bool,
    /// Remove the label.
    #[arg(long)]
    pub remove: bool,
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
}

/// RFC 7386: objects merge recursively, `null` deletes, anything else replaces.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

/// Reads, changes and replaces a resource, retrying on concurrent writes.
fn modify(
    c: &Client,
    kind: Kind,
    ns: Option<&str>,
    name: &str,
    change: impl Fn(&Resource) -> Result<Resource>,
) -> Result<Resource> {
    for _ in 0..ATTEMPTS {
        let current = c.get(kind, ns, name)?;
        let updated = change(&current)?;
        match c.replace(updated) {
            Err(ClientError::Conflict { .. }) => continue,
            other => return Ok(other?),
        }
    }
    bail!("{kind}({name}) kept changing underneath; gave up after {ATTEMPTS} attempts")
}

fn namespace(kind: Kind, given: Option<&String>) -> Option<String> {
    kind.namespaced()
        .then(|| given.cloned().unwrap_or_else(|| "default".into()))
}

pub fn patch(config: &Path, args: &PatchArgs) -> Result<ExitCode> {
    let kind = parse_kind(&args.kind)?;
    let patch: Value = serde_json::from_str(&args.patch).context("--patch is not valid JSON")?;
    if !patch.is_object() {
        bail!("--patch must be a JSON object");
    }
    let ns = namespace(kind, args.namespace.as_ref());
    let c = client(config)?;
    let patched = modify(&c, kind, ns.as_deref(), &args.name, |current| {
        let mut v = serde_json::to_value(current)?;
        merge_patch(&mut v, &patch);
        let r = decode_resource(v)
            .map_err(|e| anyhow!("the patched {} is invalid: {e}", current.display_name()))?;
        if r.meta().name != current.meta().name || r.meta().namespace != current.meta().namespace {
            bail!("a patch cannot change metadata.name or metadata.namespace");
        }
        Ok(r)
    })?;
    println!("Successfully patched {}", patched.display_name());
    Ok(ExitCode::SUCCESS)
}

pub fn label(config: &Path, args: &LabelArgs) -> Result<ExitCode> {
    let kind = parse_kind(&args.kind)?;
    let (key, value) = match (args.label.split_once('='), args.remove) {
        (Some(_), true) => bail!("--remove takes a label key, not key=value"),
        (None, false) => bail!("give the label as key=value (or a key with --remove)"),
        (Some((k, v)), false) => (k.to_string(), Some(v.to_string())),
        (None, true) => (args.label.clone(), None),
    };
    calico_api::label_key(&key).map_err(|e| anyhow!("invalid label key {key:?}: {e}"))?;
    if let Some(v) = &value {
        calico_api::label_value(v).map_err(|e| anyhow!("invalid label value {v:?}: {e}"))?;
    }
    let ns = namespace(kind, args.namespace.as_ref());
    let c = client(config)?;
    let updated = modify(&c, kind, ns.as_deref(), &args.name, |current| {
        let mut r = current.clone();
        let labels = &mut r.meta_mut().labels;
        match &value {
            Some(v) => {
                if labels.get(&key).is_some_and(|old| old != v) && !args.overwrite {
                    bail!(
                        "label {key} is already set on {}; use --overwrite to change it",
                        current.display_name()
                    );
                }
                labels.insert(key.clone(), v.clone());
            }
            None => {
                if labels.remove(&key).is_none() {
                    bail!("label {key} is not set on {}", current.display_name());
                }
            }
        }
        Ok(r)
    })?;
    match value {
        Some(_) => println!("Successfully set label {key} on {}", updated.display_name()),
        None => println!(
            "Successfully removed label {key} from {}",
            updated.display_name()
        ),
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::merge_patch;
    use serde_json::json;

    #[test]
    fn rfc7386() {
        let mut v = json!({"a": "b", "c": {"d": "e", "f": "g"}});
        merge_patch(&mut v, &json!({"a": "z", "c": {"f": null}, "n": [1]}));
        assert_eq!(v, json!({"a": "z", "c": {"d": "e"}, "n": [1]}));
    }
}
