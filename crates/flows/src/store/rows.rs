//! Records to and from table rows, and filters to SQL.

use crate::query::Filter;
use crate::record::{Flow, TraceEntry};
use rusqlite::types::{ToSqlOutput, Value, ValueRef};
use rusqlite::Row;
use std::collections::BTreeMap;

fn labels_text(l: &BTreeMap<String, String>) -> String {
    serde_json::to_string(l).expect("a map of strings serializes")
}

/// `\n<tier>|<policy>\n...`: what the policy and tier filters search.
fn decisions(trace: &[String]) -> String {
    let mut s = String::from("\n");
    for e in trace.iter().filter_map(|e| TraceEntry::parse(e)) {
        s.push_str(&e.tier);
        s.push('|');
        s.push_str(&e.policy);
        s.push('\n');
    }
    s
}

/// A record's column values for an INSERT, in `COLUMNS` order: its own
/// strings borrowed (bound without a copy), only computed ones owned.
pub(super) fn row_values(f: &Flow) -> [ToSqlOutput<'_>; 31] {
    fn text(s: &str) -> ToSqlOutput<'_> {
        ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes()))
    }
    let owned = |s: String| ToSqlOutput::Owned(Value::Text(s));
    let ip = |ip: Option<std::net::IpAddr>| {
        ToSqlOutput::Owned(ip.map_or(Value::Null, |ip| Value::Text(ip.to_string())))
    };
    let int = |v: u64| ToSqlOutput::Owned(Value::Integer(i64::try_from(v).unwrap_or(i64::MAX)));
    [
        int(f.start_time),
        int(f.end_time),
        text(&f.node),
        text(&f.reporter),
        text(&f.action),
        text(&f.proto),
        text(&f.source_type),
        text(&f.source_namespace),
        text(&f.source_name),
        ip(f.source_ip),
        owned(labels_text(&f.source_labels)),
        text(&f.dest_type),
        text(&f.dest_namespace),
        text(&f.dest_name),
        ip(f.dest_ip),
        owned(labels_text(&f.dest_labels)),
        ToSqlOutput::Owned(
            f.dest_port
                .map_or(Value::Null, |p| Value::Integer(p.into())),
        ),
        owned(f.policies.join("\n")),
        owned(decisions(&f.policies)),
        owned(f.pending_policies.join("\n")),
        int(f.packets),
        int(f.bytes),
        int(f.num_flows),
        int(f.packets_in),
        int(f.packets_out),
        int(f.bytes_in),
        int(f.bytes_out),
        int(f.num_flows_started),
        int(f.num_flows_completed),
        int(f.num_flows_live),
        ToSqlOutput::Owned(
            f.source_port
                .map_or(Value::Null, |p| Value::Integer(p.into())),
        ),
    ]
}

fn lines(s: String) -> Vec<String> {
    if s.is_empty() {
        Vec::new()
    } else {
        s.split('\n').map(str::to_string).collect()
    }
}

pub(super) fn flow_of(r: &Row<'_>) -> rusqlite::Result<Flow> {
    let ip = |i: usize| -> rusqlite::Result<Option<std::net::IpAddr>> {
        Ok(r.get::<_, Option<String>>(i)?.and_then(|s| s.parse().ok()))
    };
    let labels = |i: usize| -> rusqlite::Result<BTreeMap<String, String>> {
        Ok(serde_json::from_str(&r.get::<_, String>(i)?).unwrap_or_default())
    };
    let u =
        |i: usize| -> rusqlite::Result<u64> { Ok(u64::try_from(r.get::<_, i64>(i)?).unwrap_or(0)) };
    let port = |i: usize| -> rusqlite::Result<Option<u16>> {
        Ok(r.get::<_, Option<i64>>(i)?
            .and_then(|p| u16::try_from(p).ok()))
    };
    Ok(Flow {
        start_time: u(0)?,
        end_time: u(1)?,
        node: r.get(2)?,
        reporter: r.get(3)?,
        action: r.get(4)?,
        proto: r.get(5)?,
        source_type: r.get(6)?,
        source_namespace: r.get(7)?,
        source_name: r.get(8)?,
        source_ip: ip(9)?,
        source_labels: labels(10)?,
        dest_type: r.get(11)?,
        dest_namespace: r.get(12)?,
        dest_name: r.get(13)?,
        dest_ip: ip(14)?,
        dest_labels: labels(15)?,
        dest_port: port(16)?,
        policies: lines(r.get(17)?),
        pending_policies: lines(r.get(19)?),
        packets: u(20)?,
        bytes: u(21)?,
        num_flows: u(22)?,
        packets_in: u(23)?,
        packets_out: u(24)?,
        bytes_in: u(25)?,
        bytes_out: u(26)?,
        num_flows_started: u(27)?,
        num_flows_completed: u(28)?,
        num_flows_live: u(29)?,
        source_port: port(30)?,
    })
}

/// A WHERE clause and its parameters for a filter.
pub(super) fn where_clause(f: &Filter) -> (String, Vec<Value>) {
    let mut terms: Vec<String> = vec!["1".into()];
    let mut params: Vec<Value> = Vec::new();
    let mut p = |v: Value| {
        params.push(v);
        format!("?{}", params.len())
    };
    let t = |s: &String| Value::Text(s.clone());
    if let Some(from) = f.from {
        terms.push(format!("end_time >= {}", p(Value::Integer(from as i64))));
    }
    if let Some(to) = f.to {
        terms.push(format!("start_time <= {}", p(Value::Integer(to as i64))));
    }
    if let Some(ns) = &f.namespace {
        let a = p(t(ns));
        terms.push(format!("(source_namespace = {a} OR dest_namespace = {a})"));
    }
    if let Some(n) = &f.name {
        let a = p(t(n));
        terms.push(format!("(source_name = {a} OR dest_name = {a})"));
    }
    for (col, v) in [
        ("source_namespace", &f.source_namespace),
        ("source_name", &f.source_name),
        ("dest_namespace", &f.dest_namespace),
        ("dest_name", &f.dest_name),
        ("action", &f.action),
        ("reporter", &f.reporter),
        ("proto", &f.proto),
        ("node", &f.node),
    ] {
        if let Some(v) = v {
            terms.push(format!("{col} = {}", p(t(v))));
        }
    }
    if let Some(port) = f.port {
        terms.push(format!("dest_port = {}", p(Value::Integer(port.into()))));
    }
    let needle = match (&f.tier, &f.policy) {
        (Some(tier), Some(pol)) => Some(format!("\n{tier}|{pol}\n")),
        (Some(tier), None) => Some(format!("\n{tier}|")),
        (None, Some(pol)) => Some(format!("|{pol}\n")),
        (None, None) => None,
    };
    if let Some(n) = needle {
        terms.push(format!("instr(decisions, {}) > 0", p(Value::Text(n))));
    }
    for (k, v) in &f.labels {
        let frag = format!(
            "{}:{}",
            serde_json::to_string(k).expect("string"),
            serde_json::to_string(v).expect("string")
        );
        let a = p(Value::Text(frag));
        terms.push(format!(
            "(instr(source_labels, {a}) > 0 OR instr(dest_labels, {a}) > 0)"
        ));
    }
    (terms.join(" AND "), params)
}
