//! Durable flow history: one SQLite file (WAL). Raw records as the nodes
//! sent them, kept for the raw retention; whole hours older than that are
//! rolled up (summed per node, reporter, endpoints, port, action and
//! trace) into `flows_hourly`, kept for the roll-up retention.

use crate::query::{Filter, Query, Resolution, Sort};
use crate::record::{Flow, TraceEntry};
use rusqlite::types::Value;
use rusqlite::{params_from_iter, Connection, OpenFlags, Row};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("opening the flow store {path}")]
    Open {
        path: String,
        #[source]
        cause: rusqlite::Error,
    },
    #[error("flow store {what}")]
    Sql {
        what: &'static str,
        #[source]
        cause: rusqlite::Error,
    },
}

fn sql(what: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError {
    move |cause| StoreError::Sql { what, cause }
}

const COLUMNS: &str = "start_time, end_time, node, reporter, action, proto, \
    source_type, source_namespace, source_name, source_ip, source_labels, \
    dest_type, dest_namespace, dest_name, dest_ip, dest_labels, dest_port, \
    policies, decisions, pending_policies, packets, bytes, num_flows, \
    packets_in, packets_out, bytes_in, bytes_out, num_flows_started, num_flows_completed, num_flows_live";

/// The key columns a roll-up groups by (everything but times and counts).
const KEY: &str = "node, reporter, action, proto, \
    source_type, source_namespace, source_name, source_ip, source_labels, \
    dest_type, dest_namespace, dest_name, dest_ip, dest_labels, dest_port, \
    policies, decisions, pending_policies";

fn schema(table: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {table} (
            id INTEGER PRIMARY KEY,
            start_time INTEGER NOT NULL, end_time INTEGER NOT NULL,
            node TEXT NOT NULL, reporter TEXT NOT NULL, action TEXT NOT NULL, proto TEXT NOT NULL,
            source_type TEXT NOT NULL, source_namespace TEXT NOT NULL, source_name TEXT NOT NULL,
            source_ip TEXT, source_labels TEXT NOT NULL,
            dest_type TEXT NOT NULL, dest_namespace TEXT NOT NULL, dest_name TEXT NOT NULL,
            dest_ip TEXT, dest_labels TEXT NOT NULL, dest_port INTEGER,
            policies TEXT NOT NULL, decisions TEXT NOT NULL, pending_policies TEXT NOT NULL,
            packets INTEGER NOT NULL, bytes INTEGER NOT NULL, num_flows INTEGER NOT NULL,
            packets_in INTEGER NOT NULL, packets_out INTEGER NOT NULL,
            bytes_in INTEGER NOT NULL, bytes_out INTEGER NOT NULL,
            num_flows_started INTEGER NOT NULL, num_flows_completed INTEGER NOT NULL,
            num_flows_live INTEGER NOT NULL);
        CREATE INDEX IF NOT EXISTS {table}_end ON {table}(end_time);
        CREATE INDEX IF NOT EXISTS {table}_src_ns ON {table}(source_namespace, end_time);
        CREATE INDEX IF NOT EXISTS {table}_dst_ns ON {table}(dest_namespace, end_time);"
    )
}

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

fn row_values(f: &Flow) -> [Value; 30] {
    let ip =
        |ip: Option<std::net::IpAddr>| ip.map_or(Value::Null, |ip| Value::Text(ip.to_string()));
    let int = |v: u64| Value::Integer(i64::try_from(v).unwrap_or(i64::MAX));
    [
        int(f.start_time),
        int(f.end_time),
        Value::Text(f.node.clone()),
        Value::Text(f.reporter.clone()),
        Value::Text(f.action.clone()),
        Value::Text(f.proto.clone()),
        Value::Text(f.source_type.clone()),
        Value::Text(f.source_namespace.clone()),
        Value::Text(f.source_name.clone()),
        ip(f.source_ip),
        Value::Text(labels_text(&f.source_labels)),
        Value::Text(f.dest_type.clone()),
        Value::Text(f.dest_namespace.clone()),
        Value::Text(f.dest_name.clone()),
        ip(f.dest_ip),
        Value::Text(labels_text(&f.dest_labels)),
        f.dest_port
            .map_or(Value::Null, |p| Value::Integer(p.into())),
        Value::Text(f.policies.join("\n")),
        Value::Text(decisions(&f.policies)),
        Value::Text(f.pending_policies.join("\n")),
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
    ]
}

fn lines(s: String) -> Vec<String> {
    if s.is_empty() {
        Vec::new()
    } else {
        s.split('\n').map(str::to_string).collect()
    }
}

fn flow_of(r: &Row<'_>) -> rusqlite::Result<Flow> {
    let ip = |i: usize| -> rusqlite::Result<Option<std::net::IpAddr>> {
        Ok(r.get::<_, Option<String>>(i)?.and_then(|s| s.parse().ok()))
    };
    let labels = |i: usize| -> rusqlite::Result<BTreeMap<String, String>> {
        Ok(serde_json::from_str(&r.get::<_, String>(i)?).unwrap_or_default())
    };
    let u =
        |i: usize| -> rusqlite::Result<u64> { Ok(u64::try_from(r.get::<_, i64>(i)?).unwrap_or(0)) };
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
        dest_port: r
            .get::<_, Option<i64>>(16)?
            .and_then(|p| u16::try_from(p).ok()),
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
    })
}

/// A WHERE clause and its parameters for a filter.
fn where_clause(f: &Filter) -> (String, Vec<Value>) {
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

/// A page of flows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Page {
    pub flows: Vec<Flow>,
    /// Whether another page follows.
    pub more: bool,
}

/// What the policy statistics report, per trace entry (tier, policy,
/// rule, action) and reporter.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RuleStats {
    pub tier: String,
    pub policy: String,
    pub rule: i64,
    pub action: String,
    pub reporter: String,
    /// Flow records whose trace holds the entry.
    pub flows: u64,
    /// Of those, what the flows' final verdicts let through or stopped.
    pub allowed_packets: u64,
    pub denied_packets: u64,
    pub allowed_bytes: u64,
    pub denied_bytes: u64,
}

/// `namespace/name` of a workload, or the name alone (`pub`, `pvt`, a
/// global NetworkSet) when there is no namespace.
fn endpoint_id(namespace: &str, name: &str) -> String {
    if namespace == "-" || namespace.is_empty() {
        name.to_string()
    } else {
        format!("{namespace}/{name}")
    }
}

/// Traffic from one endpoint to another.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Edge {
    pub source: String,
    pub dest: String,
    pub allowed_packets: u64,
    pub denied_packets: u64,
    pub allowed_flows: u64,
    pub denied_flows: u64,
}

/// What an expiry pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Expired {
    pub rolled_up: u64,
    pub raw_deleted: u64,
    pub hourly_deleted: u64,
}

#[derive(Debug)]
pub struct Store {
    conn: Connection,
}

fn table(r: Resolution) -> &'static str {
    match r {
        Resolution::Raw => "flows",
        Resolution::Hour => "flows_hourly",
    }
}

impl Store {
    /// Opens (creating if needed) the store at `path`.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let open = |cause| StoreError::Open {
            path: path.display().to_string(),
            cause,
        };
        let conn = Connection::open(path).map_err(open)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(open)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(open)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(open)?;
        conn.execute_batch(&(schema("flows") + &schema("flows_hourly")))
            .map_err(open)?;
        Ok(Store { conn })
    }

    /// A second connection to the same file, for reading while this one writes.
    pub fn reader(path: &Path) -> Result<Store, StoreError> {
        let open = |cause| StoreError::Open {
            path: path.display().to_string(),
            cause,
        };
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(open)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(open)?;
        Ok(Store { conn })
    }

    /// Stores checked records in one transaction.
    pub fn insert(&mut self, flows: &[Flow]) -> Result<(), StoreError> {
        let tx = self.conn.transaction().map_err(sql("insert"))?;
        {
            let mut stmt = tx
                .prepare_cached(&format!(
                    "INSERT INTO flows ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26, ?27, ?28, ?29, ?30)"
                ))
                .map_err(sql("insert"))?;
            for f in flows {
                stmt.execute(params_from_iter(row_values(f)))
                    .map_err(sql("insert"))?;
            }
        }
        tx.commit().map_err(sql("insert"))
    }

    pub fn query(&self, q: &Query) -> Result<Page, StoreError> {
        let (clause, mut params) = where_clause(&q.filter);
        let order = match q.sort {
            Sort::Newest => "end_time DESC, id DESC",
            Sort::Oldest => "end_time ASC, id ASC",
            Sort::Packets => "packets DESC, id DESC",
        };
        let limit = i64::from(q.limit.max(1));
        params.push(Value::Integer(limit + 1));
        let lim = params.len();
        params.push(Value::Integer(i64::from(q.page) * limit));
        let off = params.len();
        let mut stmt = self
            .conn
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM {} WHERE {clause} ORDER BY {order} LIMIT ?{lim} OFFSET ?{off}",
                table(q.resolution)
            ))
            .map_err(sql("query"))?;
        let mut flows = stmt
            .query_map(params_from_iter(params), flow_of)
            .map_err(sql("query"))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(sql("query"))?;
        let more = flows.len() as i64 > limit;
        flows.truncate(limit as usize);
        Ok(Page { flows, more })
    }

    /// Distinct values of a field among the flows a filter selects (at
    /// most `max`): what the UI offers as filter hints.
    pub fn hints(&self, field: Hint, f: &Filter, max: u32) -> Result<Vec<String>, StoreError> {
        let (clause, mut params) = where_clause(f);
        params.push(Value::Integer(max.into()));
        let n = params.len();
        let pick = |col: &str| format!("SELECT DISTINCT {col} AS v FROM flows WHERE {clause}");
        let text = match field {
            Hint::Namespace => format!(
                "{} UNION {}",
                pick("source_namespace"),
                pick("dest_namespace")
            ),
            Hint::Name => format!("{} UNION {}", pick("source_name"), pick("dest_name")),
            Hint::Node => pick("node"),
            Hint::Policy | Hint::Tier => pick("decisions"),
        };
        let mut stmt = self
            .conn
            .prepare(&format!("SELECT v FROM ({text}) ORDER BY v LIMIT ?{n}"))
            .map_err(sql("hints"))?;
        let values: Vec<String> = stmt
            .query_map(params_from_iter(params), |r| r.get(0))
            .map_err(sql("hints"))?
            .collect::<Result<_, _>>()
            .map_err(sql("hints"))?;
        if !matches!(field, Hint::Policy | Hint::Tier) {
            return Ok(values);
        }
        let mut out = std::collections::BTreeSet::new();
        for d in &values {
            for line in d.split('\n').filter(|l| !l.is_empty()) {
                if let Some((tier, policy)) = line.split_once('|') {
                    out.insert(if field == Hint::Tier { tier } else { policy }.to_string());
                }
            }
        }
        Ok(out.into_iter().take(max as usize).collect())
    }

    /// Per trace entry: flows, and packets and bytes by final verdict.
    pub fn policy_stats(&self, f: &Filter) -> Result<Vec<RuleStats>, StoreError> {
        let (clause, params) = where_clause(f);
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT policies, reporter, action, COUNT(*), SUM(packets), SUM(bytes)
                 FROM flows WHERE {clause} GROUP BY policies, reporter, action"
            ))
            .map_err(sql("statistics"))?;
        let rows = stmt
            .query_map(params_from_iter(params), |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, i64>(4)?,
                    r.get::<_, i64>(5)?,
                ))
            })
            .map_err(sql("statistics"))?;
        let mut by: BTreeMap<(String, String, i64, String, String), RuleStats> = BTreeMap::new();
        for row in rows {
            let (trace, reporter, action, n, packets, bytes) = row.map_err(sql("statistics"))?;
            let (n, packets, bytes) = (n as u64, packets as u64, bytes as u64);
            for e in trace.split('\n').filter_map(TraceEntry::parse) {
                let s = by
                    .entry((
                        e.tier.clone(),
                        e.policy.clone(),
                        e.rule,
                        e.action.clone(),
                        reporter.clone(),
                    ))
                    .or_insert_with(|| RuleStats {
                        tier: e.tier,
                        policy: e.policy,
                        rule: e.rule,
                        action: e.action,
                        reporter: reporter.clone(),
                        ..RuleStats::default()
                    });
                s.flows += n;
                if action == "allow" {
                    s.allowed_packets += packets;
                    s.allowed_bytes += bytes;
                } else {
                    s.denied_packets += packets;
                    s.denied_bytes += bytes;
                }
            }
        }
        Ok(by.into_values().collect())
    }

    /// Rolls whole hours of raw records that ended before `now - raw_keep`
    /// into hourly sums, deletes them, and deletes hourly sums older than
    /// `now - hourly_keep`.
    pub fn expire(
        &mut self,
        now: u64,
        raw_keep: u64,
        hourly_keep: u64,
    ) -> Result<Expired, StoreError> {
        let cutoff = (now.saturating_sub(raw_keep) / 3600 * 3600) as i64;
        let hourly_cutoff = now.saturating_sub(hourly_keep) as i64;
        let tx = self.conn.transaction().map_err(sql("expiry"))?;
        let rolled_up = tx
            .execute(
                &format!(
                    "INSERT INTO flows_hourly ({COLUMNS})
                     SELECT (end_time / 3600) * 3600, (end_time / 3600) * 3600 + 3599, {KEY_SELECT}
                     FROM flows WHERE end_time < ?1 GROUP BY end_time / 3600, {KEY}",
                    KEY_SELECT = KEY.to_string()
                        + ", SUM(packets), SUM(bytes), SUM(num_flows), SUM(packets_in), SUM(packets_out), \
                           SUM(bytes_in), SUM(bytes_out), SUM(num_flows_started), SUM(num_flows_completed), \
                           MAX(num_flows_live)"
                ),
                [cutoff],
            )
            .map_err(sql("expiry"))?;
        let raw_deleted = tx
            .execute("DELETE FROM flows WHERE end_time < ?1", [cutoff])
            .map_err(sql("expiry"))?;
        let hourly_deleted = tx
            .execute(
                "DELETE FROM flows_hourly WHERE end_time < ?1",
                [hourly_cutoff],
            )
            .map_err(sql("expiry"))?;
        tx.commit().map_err(sql("expiry"))?;
        Ok(Expired {
            rolled_up: rolled_up as u64,
            raw_deleted: raw_deleted as u64,
            hourly_deleted: hourly_deleted as u64,
        })
    }

    /// Endpoint-to-endpoint edges with what was allowed and denied.
    pub fn graph(&self, f: &Filter) -> Result<Vec<Edge>, StoreError> {
        let (clause, params) = where_clause(f);
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT source_namespace, source_name, dest_namespace, dest_name, action,
                        SUM(packets), COUNT(*)
                 FROM flows WHERE {clause}
                 GROUP BY source_namespace, source_name, dest_namespace, dest_name, action
                 LIMIT 5000"
            ))
            .map_err(sql("graph"))?;
        let rows = stmt
            .query_map(params_from_iter(params), |r| {
                Ok((
                    endpoint_id(&r.get::<_, String>(0)?, &r.get::<_, String>(1)?),
                    endpoint_id(&r.get::<_, String>(2)?, &r.get::<_, String>(3)?),
                    r.get::<_, String>(4)?,
                    r.get::<_, i64>(5)? as u64,
                    r.get::<_, i64>(6)? as u64,
                ))
            })
            .map_err(sql("graph"))?;
        let mut edges: BTreeMap<(String, String), Edge> = BTreeMap::new();
        for row in rows {
            let (source, dest, action, packets, flows) = row.map_err(sql("graph"))?;
            let e = edges
                .entry((source.clone(), dest.clone()))
                .or_insert_with(|| Edge {
                    source,
                    dest,
                    ..Edge::default()
                });
            if action == "allow" {
                e.allowed_packets += packets;
                e.allowed_flows += flows;
            } else {
                e.denied_packets += packets;
                e.denied_flows += flows;
            }
        }
        Ok(edges.into_values().collect())
    }

    /// Raw records stored.
    pub fn count(&self) -> Result<u64, StoreError> {
        self.conn
            .query_row("SELECT COUNT(*) FROM flows", [], |r| r.get::<_, i64>(0))
            .map(|n| n as u64)
            .map_err(sql("count"))
    }
}

/// A field the UI asks hints for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hint {
    Namespace,
    Name,
    Node,
    Policy,
    Tier,
}

impl std::str::FromStr for Hint {
    type Err = String;
    fn from_str(s: &str) -> Result<Hint, String> {
        Ok(match s {
            "namespace" => Hint::Namespace,
            "name" => Hint::Name,
            "node" => Hint::Node,
            "policy" => Hint::Policy,
            "tier" => Hint::Tier,
            _ => {
                return Err(format!(
                    "no hints for {s:?}: namespace, name, node, policy or tier"
                ))
            }
        })
    }
}
