//! What a record must be to be stored: everything the store and the
//! query API read back must be what it says.

use crate::record::{Flow, TraceEntry};

/// Why a record was not stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("{0} is empty or over 253 characters, or holds control characters")]
    Text(&'static str),
    #[error("trace entry {0:?} is not <index>|<tier>|<policy>|<action>|<rule>")]
    Trace(String),
    #[error("label {0:?} is not a label")]
    Label(String),
    #[error("{0} is not one of the known values")]
    Word(&'static str),
    #[error("the interval ends before it starts")]
    Interval,
    #[error("trace of {0} entries is too long")]
    TraceLength(usize),
}

fn fine(s: &str, empty_ok: bool) -> bool {
    (empty_ok || !s.is_empty())
        && s.len() <= 253
        && !s
            .chars()
            .any(|c| c.is_control() || matches!(c, '|' | '"' | '\\'))
}

/// Checks a record from a node before it is stored: everything the store
/// and the query API read back must be what it says.
pub fn check(f: &Flow) -> Result<(), Refused> {
    for (what, v, empty_ok) in [
        ("node", &f.node, false),
        ("proto", &f.proto, false),
        ("source_namespace", &f.source_namespace, false),
        ("source_name", &f.source_name, false),
        ("dest_namespace", &f.dest_namespace, false),
        ("dest_name", &f.dest_name, false),
    ] {
        if !fine(v, empty_ok) {
            return Err(Refused::Text(what));
        }
    }
    if !matches!(f.reporter.as_str(), "src" | "dst") {
        return Err(Refused::Word("reporter"));
    }
    if !matches!(f.action.as_str(), "allow" | "deny" | "pass") {
        return Err(Refused::Word("action"));
    }
    for t in [&f.source_type, &f.dest_type] {
        if !matches!(t.as_str(), "wep" | "hep" | "ns" | "net") {
            return Err(Refused::Word("endpoint type"));
        }
    }
    if f.end_time < f.start_time {
        return Err(Refused::Interval);
    }
    for trace in [&f.policies, &f.pending_policies] {
        if trace.len() > 64 {
            return Err(Refused::TraceLength(trace.len()));
        }
        for e in trace {
            match TraceEntry::parse(e) {
                Some(t)
                    if fine(&t.tier, false) && fine(&t.policy, false) && fine(&t.action, false) => {
                }
                _ => return Err(Refused::Trace(e.clone())),
            }
        }
    }
    for labels in [&f.source_labels, &f.dest_labels] {
        if labels.len() > 64 {
            return Err(Refused::Label(format!("{} labels", labels.len())));
        }
        for (k, v) in labels {
            if !fine(k, false) || !fine(v, true) {
                return Err(Refused::Label(format!("{k}={v}")));
            }
        }
    }
    Ok(())
}
