//! The kernel's copy of the table, read back (`nft -j list table inet
//! calico`) into the same value the renderer builds, so that a refresh (or
//! the first apply of a restarted agent) sends only the difference instead
//! of replacing the whole table (which, with large sets, drops packets).
//!
//! nft prints what it was given in its own words (`10.0.0.1` for
//! `10.0.0.1/32`, `tcp` for protocol 6, priorities as numbers), so:
//! - rules are recognised by the tag every rule carries (`comment
//!   "cali:<hash of the rule's text>"`, as Calico's iptables rules do), not
//!   by their text; a rule without a known tag is foreign;
//! - elements and base-chain hooks are compared in a canonical form; the
//!   kernel's element that matches a desired one takes its exact text;
//! - anything this does not understand (an element with a timeout, a set
//!   flag or attribute it never writes) reads as different, so the delta
//!   replaces it or, failing that, the whole table is loaded.

use crate::table::{rule_tag, Chain, Collection, Table};
use crate::TABLE;
use serde_json::Value;
use std::collections::BTreeMap;

#[derive(Debug, thiserror::Error)]
pub enum ReadBackError {
    #[error("nft's JSON listing does not parse")]
    Json(#[source] serde_json::Error),
    #[error("nft's JSON listing has no `nftables` array")]
    Shape,
}

/// Set and map attributes this crate writes (or nft always prints);
/// any other makes a collection read as different.
const KNOWN: [&str; 8] = [
    "family", "name", "table", "type", "handle", "flags", "elem", "map",
];

/// The kernel's table as `desired`'s value: every object of `inet calico`
/// in `json` (the whole output of `nft -j list table inet calico`).
pub fn from_kernel(json: &str, desired: &Table) -> Result<Table, ReadBackError> {
    let v: Value = serde_json::from_str(json).map_err(ReadBackError::Json)?;
    let objects = v
        .get("nftables")
        .and_then(Value::as_array)
        .ok_or(ReadBackError::Shape)?;
    let want_cols: BTreeMap<&str, &Collection> = desired
        .collections
        .iter()
        .map(|c| (c.name.as_str(), c))
        .collect();
    let want_chains: BTreeMap<&str, &Chain> = desired
        .chains
        .iter()
        .map(|c| (c.name.as_str(), c))
        .collect();
    // Each desired rule by its chain and tag, hashed once (not once per
    // rule the kernel lists).
    let tagged: BTreeMap<(&str, String), &String> = desired
        .chains
        .iter()
        .flat_map(|c| {
            c.rules
                .iter()
                .map(move |r| ((c.name.as_str(), rule_tag(r)), r))
        })
        .collect();
    let ours = |o: &Value| {
        o.get("family").and_then(Value::as_str) == Some("inet")
            && o.get("table").and_then(Value::as_str) == Some(TABLE)
    };
    let mut t = Table::default();
    let mut chain_at: BTreeMap<String, usize> = BTreeMap::new();
    for o in objects {
        if let Some(s) = o.get("set").filter(|s| ours(s)) {
            t.collections.push(collection("set", s, &want_cols));
        } else if let Some(m) = o.get("map").filter(|m| ours(m)) {
            t.collections.push(collection("map", m, &want_cols));
        } else if let Some(c) = o.get("chain").filter(|c| ours(c)) {
            let name = text(c, "name");
            let hook = c.get("hook").map(|_| {
                let kernel = format!(
                    "type {} hook {} priority {}; policy {};",
                    text(c, "type"),
                    text(c, "hook"),
                    c.get("prio").map_or_else(String::new, ToString::to_string),
                    text(c, "policy"),
                );
                // The desired hook's own words when it means the same.
                match want_chains.get(name.as_str()).and_then(|w| w.hook.as_ref()) {
                    Some(h) if canonical_hook(h) == kernel => h.clone(),
                    _ => kernel,
                }
            });
            chain_at.insert(name.clone(), t.chains.len());
            t.chains.push(Chain {
                name,
                hook,
                rules: Vec::new(),
            });
        } else if let Some(r) = o.get("rule").filter(|r| ours(r)) {
            let chain = text(r, "chain");
            let Some(&at) = chain_at.get(&chain) else {
                continue;
            };
            let tag = r.get("comment").and_then(Value::as_str);
            let known = tag.and_then(|tag| tagged.get(&(chain.as_str(), tag.to_string())));
            t.chains[at].rules.push(match known {
                Some(rule) => (*rule).clone(),
                // Never equal to a rule of ours: the chain is rewritten.
                None => format!(
                    "# foreign rule, handle {}",
                    r.get("handle").unwrap_or(&Value::Null)
                ),
            });
        }
    }
    Ok(t)
}

fn text(o: &Value, key: &str) -> String {
    o.get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

/// A set or map as the kernel holds it, in the desired one's words where
/// they mean the same.
fn collection(kind: &'static str, o: &Value, want: &BTreeMap<&str, &Collection>) -> Collection {
    let name = text(o, "name");
    let ty = match o.get("type") {
        Some(Value::Array(parts)) => parts
            .iter()
            .map(|p| p.as_str().unwrap_or("?"))
            .collect::<Vec<_>>()
            .join(" . "),
        Some(Value::String(s)) => s.clone(),
        _ => "?".into(),
    };
    let mut decl = match o.get("map").and_then(Value::as_str) {
        Some(to) => format!("type {ty} : {to}; "),
        None => format!("type {ty}; "),
    };
    if let Some(flags) = o.get("flags").and_then(Value::as_array) {
        let flags: Vec<&str> = flags.iter().map(|f| f.as_str().unwrap_or("?")).collect();
        decl.push_str(&format!("flags {}; ", flags.join(", ")));
    }
    if let Some(obj) = o.as_object() {
        for key in obj.keys().filter(|k| !KNOWN.contains(&k.as_str())) {
            decl.push_str(&format!("{key} ?; "));
        }
    }
    let by_canonical: BTreeMap<String, &str> = want
        .get(name.as_str())
        .map(|c| {
            c.elements
                .iter()
                .map(|e| (canonical_element(e), e.as_str()))
                .collect()
        })
        .unwrap_or_default();
    let elements = o
        .get("elem")
        .and_then(Value::as_array)
        .map(|es| {
            es.iter()
                .map(|e| {
                    let c = kernel_element(e);
                    by_canonical.get(&c).map_or(c, |w| (*w).to_string())
                })
                .collect()
        })
        .unwrap_or_default();
    Collection {
        kind,
        name,
        decl,
        elements,
    }
}

/// A protocol as a number (nft prints the well-known ones by name).
fn protocol_number(p: &str) -> Option<u8> {
    match p {
        "icmp" => Some(1),
        "tcp" => Some(6),
        "udp" => Some(17),
        "ipv6-icmp" | "icmpv6" => Some(58),
        "sctp" => Some(132),
        "udplite" => Some(136),
        _ => p.parse().ok(),
    }
}

/// One part of an element in canonical words: an address or prefix with
/// its length (`/32` or `/128` for a host), a protocol by number, the rest
/// as written.
fn canonical_part(p: &str, in_concat: bool) -> String {
    let p = p.trim();
    if let Ok(a) = p.parse::<std::net::IpAddr>() {
        return if in_concat {
            a.to_string()
        } else {
            format!("{a}/{}", if a.is_ipv4() { 32 } else { 128 })
        };
    }
    if let Some((a, len)) = p.split_once('/') {
        if let (Ok(a), Ok(len)) = (a.parse::<std::net::IpAddr>(), len.parse::<u8>()) {
            return format!("{a}/{len}");
        }
    }
    if in_concat {
        if let Some(n) = protocol_number(p) {
            return n.to_string();
        }
    }
    p.to_string()
}

/// An element as this crate writes it, in canonical words.
fn canonical_element(e: &str) -> String {
    if let Some((key, verdict)) = e.split_once(" : ") {
        return format!("{} : {}", key.trim(), verdict.trim());
    }
    if e.contains(" . ") {
        return e
            .split(" . ")
            .map(|p| canonical_part(p, true))
            .collect::<Vec<_>>()
            .join(" . ");
    }
    canonical_part(e, false)
}

/// An element as nft's JSON has it, in canonical words (and valid nft
/// syntax, so that a stray one can be deleted by it).
fn kernel_element(e: &Value) -> String {
    match e {
        Value::String(s) => canonical_part(s, false),
        Value::Number(n) => n.to_string(),
        Value::Object(o) => {
            if let Some(p) = o.get("prefix") {
                format!(
                    "{}/{}",
                    text(p, "addr"),
                    p.get("len").unwrap_or(&Value::Null)
                )
            } else if let Some(Value::Array(r)) = o.get("range") {
                let end = |i: usize| r.get(i).map_or_else(String::new, scalar);
                format!("{}-{}", end(0), end(1))
            } else if let Some(Value::Array(parts)) = o.get("concat") {
                parts
                    .iter()
                    .map(|p| canonical_part(&scalar(p), true))
                    .collect::<Vec<_>>()
                    .join(" . ")
            } else {
                // An element with attributes (timeout, comment, counter):
                // never one of ours.
                format!("? {e}")
            }
        }
        // A map element: [key, verdict].
        Value::Array(kv) if kv.len() == 2 => {
            let key = format!("\"{}\"", scalar(&kv[0]));
            let verdict = match &kv[1] {
                Value::Object(v) => match v.iter().next() {
                    Some((how, Value::Object(t))) => {
                        format!("{how} {}", text(&Value::Object(t.clone()), "target"))
                    }
                    Some((how, _)) => how.clone(),
                    None => "?".into(),
                },
                other => scalar(other),
            };
            format!("{key} : {verdict}")
        }
        other => format!("? {other}"),
    }
}

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A base chain's hook with its priority as a number, as nft lists it.
fn canonical_hook(h: &str) -> String {
    let named = [
        ("raw", -300),
        ("mangle", -150),
        ("dstnat", -100),
        ("filter", 0),
        ("security", 50),
        ("srcnat", 100),
    ];
    let mut out = String::new();
    let mut words = h.split_whitespace().peekable();
    while let Some(w) = words.next() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(w);
        if w == "priority" {
            if let Some(p) = words.next() {
                let (name, semi) = p.strip_suffix(';').map_or((p, ""), |n| (n, ";"));
                let n = named
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map_or_else(|| name.to_string(), |(_, v)| v.to_string());
                out.push(' ');
                out.push_str(&n);
                out.push_str(semi);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elements_compare_in_canonical_words() {
        assert_eq!(
            canonical_element("10.65.0.2/32"),
            kernel_element(&"10.65.0.2".into())
        );
        assert_eq!(
            canonical_element("10.65.0.1 . 6 . 8080"),
            kernel_element(&serde_json::json!({"concat": ["10.65.0.1", "tcp", 8080]}))
        );
        assert_eq!(
            canonical_element("fd00::/64"),
            kernel_element(&serde_json::json!({"prefix": {"addr": "fd00::", "len": 64}}))
        );
        assert_eq!(
            canonical_element("\"cali1\" : jump tw-cali1"),
            kernel_element(&serde_json::json!(["cali1", {"jump": {"target": "tw-cali1"}}]))
        );
        assert_eq!(
            kernel_element(&serde_json::json!({"range": ["10.0.0.1", "10.0.0.9"]})),
            "10.0.0.1-10.0.0.9"
        );
        assert!(
            kernel_element(&serde_json::json!({"elem": {"val": "10.0.0.1", "timeout": 5}}))
                .starts_with('?')
        );
    }

    #[test]
    fn hooks_compare_with_priorities_as_numbers() {
        assert_eq!(
            canonical_hook("type filter hook prerouting priority raw; policy accept;"),
            "type filter hook prerouting priority -300; policy accept;"
        );
        assert_eq!(
            canonical_hook("type filter hook forward priority filter; policy accept;"),
            "type filter hook forward priority 0; policy accept;"
        );
    }
}
