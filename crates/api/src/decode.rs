//! Reading manifests: YAML or JSON, one or many documents, `List` kinds,
//! Kubernetes NetworkPolicies converted on the way in.

use crate::k8s::K8sNetworkPolicy;
use crate::resource::{Kind, PathError, Resource, API_VERSION};
use crate::strict;
use crate::validate::FieldError;
use serde::Deserialize;
use serde_json::Value;
use serde_path_to_error::Segment;
use std::fmt;

/// A problem with one resource of a manifest, and where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// `document 2`, `document 1, item 3`...
    pub location: String,
    /// The resource, when it could be named.
    pub resource: Option<String>,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.resource {
            Some(r) => write!(f, "{} ({r}): {}", self.location, self.message),
            None => write!(f, "{}: {}", self.location, self.message),
        }
    }
}

/// Everything wrong with a manifest. Nothing in it should be written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
pub struct ManifestError {
    pub problems: Vec<Problem>,
}

fn whole(message: String) -> ManifestError {
    ManifestError {
        problems: vec![Problem {
            location: "manifest".into(),
            resource: None,
            message,
        }],
    }
}

/// Splits text into JSON values, one per YAML document (JSON is YAML too),
/// within bounds: at most [`strict::MAX_MANIFEST_BYTES`] in all,
/// [`strict::MAX_DOCUMENT_BYTES`] and [`strict::MAX_FLOW_OPENERS`] per
/// document, checked before parsing; keys are never repeated, an explicit
/// null is an absent field, and nesting is bounded (checked as it parses).
pub fn documents(text: &str) -> Result<Vec<Value>, ManifestError> {
    if text.len() > strict::MAX_MANIFEST_BYTES {
        return Err(whole(format!(
            "the manifest is {} bytes; at most {} are read",
            text.len(),
            strict::MAX_MANIFEST_BYTES
        )));
    }
    let mut problems = Vec::new();
    let mut start = 0;
    for (i, size) in strict::document_sizes(text).enumerate() {
        let doc = &text[start..start + size];
        start += size;
        if size > strict::MAX_DOCUMENT_BYTES {
            problems.push(format!(
                "document {} is {size} bytes; a resource may be at most {} (etcd's request limit)",
                i + 1,
                strict::MAX_DOCUMENT_BYTES
            ));
        } else if strict::flow_openers(doc) > strict::MAX_FLOW_OPENERS {
            problems.push(format!(
                "document {} opens more than {} flow collections ('[' or '{{')",
                i + 1,
                strict::MAX_FLOW_OPENERS
            ));
        }
    }
    if !problems.is_empty() {
        return Err(ManifestError {
            problems: problems
                .into_iter()
                .map(|message| Problem {
                    location: "manifest".into(),
                    resource: None,
                    message,
                })
                .collect(),
        });
    }
    let mut out = Vec::new();
    for (i, doc) in serde_norway::Deserializer::from_str(text).enumerate() {
        match strict::Strict::deserialize(doc) {
            Ok(strict::Strict(Value::Null)) => {}
            Ok(strict::Strict(v)) => out.push(v),
            Err(e) => {
                return Err(ManifestError {
                    problems: vec![Problem {
                        location: format!("document {}", i + 1),
                        resource: None,
                        message: crate::validate::truncated_message(&format!(
                            "not valid YAML/JSON: {e}"
                        )),
                    }],
                })
            }
        }
    }
    Ok(out)
}

fn str_field<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

fn describe(v: &Value) -> Option<String> {
    let kind = str_field(v, "kind");
    let meta = v.get("metadata")?;
    let name = str_field(meta, "name");
    match meta.get("namespace").and_then(Value::as_str) {
        Some(ns) => Some(format!("{kind}({ns}/{name})")),
        None => Some(format!("{kind}({name})")),
    }
}

/// Why a value is not a resource.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("kind is missing")]
    NoKind,
    #[error("apiVersion {api:?} is not supported for kind {kind:?} (use {API_VERSION})")]
    ApiVersion { api: String, kind: String },
    #[error("unknown kind {0:?}")]
    UnknownKind(String),
    /// Every field that does not decode or validate.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Fields(Vec<FieldError>),
}

/// Decodes one resource value (not a list). Defaults are applied and the
/// result is validated; every problem found is reported, not just the first.
pub fn decode_resource(v: Value) -> Result<Resource, DecodeError> {
    let api = str_field(&v, "apiVersion").to_string();
    let kind = str_field(&v, "kind").to_string();
    if kind.is_empty() {
        return Err(DecodeError::NoKind);
    }
    if api == crate::k8s::API_VERSION && kind == "NetworkPolicy" {
        let (knp, mut problems) =
            decode_all::<K8sNetworkPolicy>(v, serde_path_to_error::deserialize)?;
        if let Err(e) = knp.validate() {
            problems.keep_checks(e.errors);
        }
        problems.into_result()?;
        let mut res = knp.to_calico().map_err(|e| DecodeError::Fields(e.errors))?;
        res.apply_defaults();
        return Ok(res);
    }
    if api != API_VERSION {
        return Err(DecodeError::ApiVersion { api, kind });
    }
    let Some(k) = Kind::ALL.iter().copied().find(|k| k.name() == kind) else {
        return Err(DecodeError::UnknownKind(kind));
    };
    let (mut res, mut problems) = decode_all(v, |v| Resource::from_parts(k, v))?;
    res.apply_defaults();
    if let Err(e) = res.validate() {
        problems.keep_checks(e.errors);
    }
    problems.into_result()?;
    Ok(res)
}

/// Values tried, in order, in place of a string that did not decode, so
/// that decoding can go on to find the resource's other problems: one of
/// them fits each of the types in [`crate::types`].
const STAND_INS: &[&str] = &["", "0.0.0.0", "0.0.0.0/0", "00:00:00:00:00:00"];

/// At most this many field problems are reported for one resource.
const MAX_FIELD_PROBLEMS: usize = 32;

/// The problems found decoding one resource. Fields that failed were
/// replaced by stand-ins; checks on those paths say nothing more.
#[derive(Default)]
struct Problems {
    decode: Vec<FieldError>,
    checks: Vec<FieldError>,
}

impl Problems {
    fn keep_checks(&mut self, errors: Vec<FieldError>) {
        let replaced = |p: &str| self.decode.iter().any(|d| d.path == p);
        let kept: Vec<FieldError> = errors.into_iter().filter(|e| !replaced(&e.path)).collect();
        self.checks.extend(kept);
    }

    fn into_result(self) -> Result<(), DecodeError> {
        if self.decode.is_empty() && self.checks.is_empty() {
            return Ok(());
        }
        let mut all = self.decode;
        all.extend(self.checks);
        Err(DecodeError::Fields(all))
    }
}

/// Decodes with `decode`; when a field fails, notes it, puts the first
/// stand-in that decodes in its place (a neutral string, or no value at
/// all) and goes on. The value returned holds stand-ins whenever the
/// problems are not empty: it is only for finding the remaining problems,
/// never to be stored.
fn decode_all<T>(
    mut v: Value,
    decode: impl Fn(Value) -> Result<T, PathError>,
) -> Result<(T, Problems), DecodeError> {
    let mut problems = Problems::default();
    loop {
        let err = match decode(v.clone()) {
            Ok(t) => return Ok((t, problems)),
            Err(err) => err,
        };
        let here = FieldError {
            path: err.path().to_string(),
            reason: err.inner().to_string(),
        };
        // A stand-in fits when decoding gets past this field (and does not
        // fail on the object holding it instead).
        let fits = |candidate: Option<&str>| {
            let mut trial = v.clone();
            if !put(&mut trial, err.path(), candidate) {
                return None;
            }
            match decode(trial.clone()) {
                Ok(_) => Some(trial),
                Err(next) => {
                    let next = next.path().to_string();
                    (!here.path.starts_with(&next)).then_some(trial)
                }
            }
        };
        let replaced = if problems.decode.len() < MAX_FIELD_PROBLEMS {
            STAND_INS
                .iter()
                .map(|c| Some(*c))
                .chain([None])
                .find_map(fits)
        } else {
            None
        };
        problems.decode.push(here);
        match replaced {
            Some(next) => v = next,
            None => return Err(DecodeError::Fields(problems.decode)),
        }
    }
}

/// Puts a string (or, for `None`, nothing: the key is removed) where a
/// decoding error points; false when the path does not lead to a string.
fn put(v: &mut Value, path: &serde_path_to_error::Path, with: Option<&str>) -> bool {
    let segs: Vec<&Segment> = path.iter().collect();
    let Some((last, parents)) = segs.split_last() else {
        return false;
    };
    let mut here = v;
    for seg in parents {
        let next = match seg {
            Segment::Seq { index } => here.get_mut(*index),
            Segment::Map { key } => here.get_mut(key.as_str()),
            Segment::Enum { .. } | Segment::Unknown => None,
        };
        let Some(next) = next else {
            return false;
        };
        here = next;
    }
    match (last, with) {
        (Segment::Map { key }, None) => here
            .as_object_mut()
            .is_some_and(|m| m.remove(key.as_str()).is_some()),
        (Segment::Map { key }, Some(s)) => match here.get_mut(key.as_str()) {
            Some(slot) if slot.is_string() => {
                *slot = Value::String(s.into());
                true
            }
            _ => false,
        },
        (Segment::Seq { index }, Some(s)) => match here.get_mut(*index) {
            Some(slot) if slot.is_string() => {
                *slot = Value::String(s.into());
                true
            }
            _ => false,
        },
        _ => false,
    }
}

/// Decodes a whole manifest. Any problem anywhere fails the whole manifest,
/// listing every problem found.
pub fn decode_manifest(text: &str) -> Result<Vec<Resource>, ManifestError> {
    let docs = documents(text)?;
    let mut out = Vec::new();
    let mut problems = Vec::new();
    let push =
        |location: String, v: Value, out: &mut Vec<Resource>, problems: &mut Vec<Problem>| {
            let resource = describe(&v);
            match decode_resource(v) {
                Ok(r) => out.push(r),
                Err(message) => problems.push(Problem {
                    location,
                    resource: resource.map(|r| crate::validate::truncated_message(&r)),
                    message: crate::validate::truncated_message(&message.to_string()),
                }),
            }
        };
    for (i, doc) in docs.into_iter().enumerate() {
        let kind = str_field(&doc, "kind");
        if kind == "List" || kind.ends_with("List") {
            let items = match doc.get("items") {
                Some(Value::Array(items)) => items.clone(),
                Some(Value::Null) | None => Vec::new(),
                Some(_) => {
                    problems.push(Problem {
                        location: format!("document {}", i + 1),
                        resource: None,
                        message: "items must be a list".into(),
                    });
                    continue;
                }
            };
            let item_kind = kind.strip_suffix("List").unwrap_or("");
            for (j, mut item) in items.into_iter().enumerate() {
                if let Value::Object(map) = &mut item {
                    if !item_kind.is_empty() {
                        map.entry("kind")
                            .or_insert_with(|| Value::String(item_kind.into()));
                    }
                    if let Some(api) = doc.get("apiVersion") {
                        map.entry("apiVersion").or_insert_with(|| api.clone());
                    }
                }
                push(
                    format!("document {}, item {}", i + 1, j + 1),
                    item,
                    &mut out,
                    &mut problems,
                );
            }
        } else {
            push(format!("document {}", i + 1), doc, &mut out, &mut problems);
        }
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(ManifestError { problems })
    }
}

/// YAML as calicoctl prints it: keys in alphabetical order.
pub fn to_yaml<T: serde::Serialize>(value: &T) -> Result<String, serde_norway::Error> {
    let v =
        serde_json::to_value(value).map_err(<serde_norway::Error as serde::ser::Error>::custom)?;
    serde_norway::to_string(&v)
}
