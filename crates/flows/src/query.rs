//! Which flows a reader wants: filters, order, page. Read from URL query
//! pairs (the HTTP API, the live stream, `calicoctl flows`) and written
//! back to them; checked against a flow in memory (the live stream) and
//! turned into SQL (the store) with the same meaning — a property test
//! holds the two together.

use crate::record::{Flow, TraceEntry};
use std::fmt;

/// At most this many flows per page.
pub const MAX_LIMIT: u32 = 1000;
pub const DEFAULT_LIMIT: u32 = 100;
/// Longest accepted filter value.
const MAX_VALUE: usize = 253;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Flows whose interval ends at or after `from` and starts at or before `to` (Unix seconds).
    pub from: Option<u64>,
    pub to: Option<u64>,
    /// Either end's namespace / name.
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub source_namespace: Option<String>,
    pub source_name: Option<String>,
    pub dest_namespace: Option<String>,
    pub dest_name: Option<String>,
    pub action: Option<String>,
    pub reporter: Option<String>,
    /// A trace entry names this policy (`namespace/name`, or the name of a
    /// global one, or `__PROFILE__.<profile>`) and/or this tier.
    pub policy: Option<String>,
    pub tier: Option<String>,
    pub port: Option<u16>,
    pub proto: Option<String>,
    pub node: Option<String>,
    /// `key=value`: a label of either end; all of them must hold.
    pub labels: Vec<(String, String)>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Sort {
    /// Latest end first (the default).
    #[default]
    Newest,
    Oldest,
    /// Most packets first.
    Packets,
}

impl Sort {
    fn word(self) -> &'static str {
        match self {
            Sort::Newest => "newest",
            Sort::Oldest => "oldest",
            Sort::Packets => "packets",
        }
    }
}

/// Stored resolution to read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Resolution {
    /// The records as the nodes sent them (kept for the raw retention).
    #[default]
    Raw,
    /// Hourly roll-ups (kept for the roll-up retention).
    Hour,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    pub filter: Filter,
    pub sort: Sort,
    pub resolution: Resolution,
    /// 0-based page of `limit` flows.
    pub page: u32,
    pub limit: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    #[error("unknown query parameter {0:?}")]
    Unknown(String),
    #[error("{param}: {why}")]
    Value { param: String, why: String },
}

fn bad(param: &str, why: impl fmt::Display) -> QueryError {
    QueryError::Value {
        param: param.to_string(),
        why: why.to_string(),
    }
}

/// A filter value: bounded, and free of the separators the store uses.
fn text(param: &str, v: &str) -> Result<String, QueryError> {
    if v.is_empty() || v.len() > MAX_VALUE {
        return Err(bad(param, format!("must be 1 to {MAX_VALUE} characters")));
    }
    if v.chars()
        .any(|c| c.is_control() || matches!(c, '|' | '"' | '\\'))
    {
        return Err(bad(
            param,
            "must not hold control characters, '|', '\"' or '\\'",
        ));
    }
    Ok(v.to_string())
}

fn number<T: std::str::FromStr>(param: &str, v: &str) -> Result<T, QueryError> {
    v.parse()
        .map_err(|_| bad(param, format!("{v:?} is not a number in range")))
}

fn one_of(param: &str, v: &str, allowed: &[&str]) -> Result<String, QueryError> {
    let v = v.to_ascii_lowercase();
    if allowed.contains(&v.as_str()) {
        Ok(v)
    } else {
        Err(bad(param, format!("must be one of {}", allowed.join(", "))))
    }
}

impl Query {
    /// From `name=value` pairs (a URL's query). Unknown names and bad
    /// values are refused, never ignored.
    pub fn from_pairs<'a>(
        pairs: impl IntoIterator<Item = (impl AsRef<str> + 'a, impl AsRef<str> + 'a)>,
    ) -> Result<Query, QueryError> {
        let mut q = Query {
            limit: DEFAULT_LIMIT,
            ..Query::default()
        };
        for (k, v) in pairs {
            let (k, v) = (k.as_ref(), v.as_ref());
            let f = &mut q.filter;
            match k {
                "from" => f.from = Some(number(k, v)?),
                "to" => f.to = Some(number(k, v)?),
                "namespace" => f.namespace = Some(text(k, v)?),
                "name" => f.name = Some(text(k, v)?),
                "source_namespace" => f.source_namespace = Some(text(k, v)?),
                "source_name" => f.source_name = Some(text(k, v)?),
                "dest_namespace" => f.dest_namespace = Some(text(k, v)?),
                "dest_name" => f.dest_name = Some(text(k, v)?),
                "action" => f.action = Some(one_of(k, v, &["allow", "deny", "pass"])?),
                "reporter" => f.reporter = Some(one_of(k, v, &["src", "dst"])?),
                "policy" => f.policy = Some(text(k, v)?),
                "tier" => f.tier = Some(text(k, v)?),
                "port" => f.port = Some(number(k, v)?),
                "proto" | "protocol" => f.proto = Some(text(k, v)?.to_ascii_uppercase()),
                "node" => f.node = Some(text(k, v)?),
                "label" => {
                    let (key, value) = v
                        .split_once('=')
                        .ok_or_else(|| bad(k, "must be key=value"))?;
                    f.labels.push((text(k, key)?, text(k, value)?));
                }
                "sort" => {
                    q.sort = match v {
                        "newest" => Sort::Newest,
                        "oldest" => Sort::Oldest,
                        "packets" => Sort::Packets,
                        _ => return Err(bad(k, "must be newest, oldest or packets")),
                    }
                }
                "resolution" => {
                    q.resolution = match v {
                        "raw" => Resolution::Raw,
                        "hour" => Resolution::Hour,
                        _ => return Err(bad(k, "must be raw or hour")),
                    }
                }
                "page" => q.page = number(k, v)?,
                "limit" => {
                    q.limit = number(k, v)?;
                    if q.limit == 0 || q.limit > MAX_LIMIT {
                        return Err(bad(k, format!("must be 1 to {MAX_LIMIT}")));
                    }
                }
                other => return Err(QueryError::Unknown(other.to_string())),
            }
        }
        if let (Some(from), Some(to)) = (q.filter.from, q.filter.to) {
            if from > to {
                return Err(bad("from", "is after to"));
            }
        }
        Ok(q)
    }

    /// From a URL query string (`a=b&c=d`, percent-encoded).
    pub fn parse(query: &str) -> Result<Query, QueryError> {
        Query::from_pairs(form_urlencoded::parse(query.as_bytes()))
    }

    /// Back to name=value pairs (defaults left out).
    pub fn to_pairs(&self) -> Vec<(&'static str, String)> {
        let f = &self.filter;
        let mut out = Vec::new();
        let mut put = |k: &'static str, v: Option<String>| {
            if let Some(v) = v {
                out.push((k, v));
            }
        };
        put("from", f.from.map(|v| v.to_string()));
        put("to", f.to.map(|v| v.to_string()));
        put("namespace", f.namespace.clone());
        put("name", f.name.clone());
        put("source_namespace", f.source_namespace.clone());
        put("source_name", f.source_name.clone());
        put("dest_namespace", f.dest_namespace.clone());
        put("dest_name", f.dest_name.clone());
        put("action", f.action.clone());
        put("reporter", f.reporter.clone());
        put("policy", f.policy.clone());
        put("tier", f.tier.clone());
        put("port", f.port.map(|v| v.to_string()));
        put("proto", f.proto.clone());
        put("node", f.node.clone());
        for (k, v) in &f.labels {
            put("label", Some(format!("{k}={v}")));
        }
        put(
            "sort",
            (self.sort != Sort::Newest).then(|| self.sort.word().to_string()),
        );
        put(
            "resolution",
            (self.resolution == Resolution::Hour).then(|| "hour".to_string()),
        );
        put("page", (self.page != 0).then(|| self.page.to_string()));
        put(
            "limit",
            (self.limit != DEFAULT_LIMIT).then(|| self.limit.to_string()),
        );
        out
    }

    /// As a URL query string.
    pub fn to_query_string(&self) -> String {
        form_urlencoded::Serializer::new(String::new())
            .extend_pairs(self.to_pairs())
            .finish()
    }
}

impl Filter {
    /// Whether `flow` passes, with the meaning [`crate::store`] gives the
    /// same filter in SQL.
    pub fn matches(&self, flow: &Flow) -> bool {
        let eq = |want: &Option<String>, have: &str| want.as_deref().is_none_or(|w| w == have);
        let either = |want: &Option<String>, a: &str, b: &str| {
            want.as_deref().is_none_or(|w| w == a || w == b)
        };
        self.from.is_none_or(|from| flow.end_time >= from)
            && self.to.is_none_or(|to| flow.start_time <= to)
            && either(
                &self.namespace,
                &flow.source_namespace,
                &flow.dest_namespace,
            )
            && either(&self.name, &flow.source_name, &flow.dest_name)
            && eq(&self.source_namespace, &flow.source_namespace)
            && eq(&self.source_name, &flow.source_name)
            && eq(&self.dest_namespace, &flow.dest_namespace)
            && eq(&self.dest_name, &flow.dest_name)
            && eq(&self.action, &flow.action)
            && eq(&self.reporter, &flow.reporter)
            && eq(&self.proto, &flow.proto)
            && eq(&self.node, &flow.node)
            && self.port.is_none_or(|p| flow.dest_port == Some(p))
            && (self.policy.is_none() && self.tier.is_none()
                || flow
                    .policies
                    .iter()
                    .filter_map(|e| TraceEntry::parse(e))
                    .any(|e| eq(&self.tier, &e.tier) && eq(&self.policy, &e.policy)))
            && self.labels.iter().all(|(k, v)| {
                flow.source_labels.get(k) == Some(v) || flow.dest_labels.get(k) == Some(v)
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_round_trip_and_bad_ones_are_refused() {
        let q = Query::parse(
            "namespace=shop&action=DENY&port=80&label=app%3Dweb&policy=shop%2Fdb&sort=packets&limit=5&page=2",
        )
        .expect("parse");
        assert_eq!(q.filter.action.as_deref(), Some("deny"));
        assert_eq!(q.filter.labels, vec![("app".into(), "web".into())]);
        assert_eq!(q.filter.policy.as_deref(), Some("shop/db"));
        assert_eq!(Query::parse(&q.to_query_string()), Ok(q));
        for bad in [
            "colour=red",
            "port=70000",
            "action=maybe",
            "limit=0",
            "limit=100000",
            "label=novalue",
            "policy=a%7Cb",
            "name=a%0Ab",
            "from=10&to=5",
            "sort=random",
        ] {
            assert!(Query::parse(bad).is_err(), "{bad} accepted");
        }
    }
}
