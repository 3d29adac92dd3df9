//! Durable flow history: one SQLite file (WAL). Raw records as the nodes
//! sent them, kept for the raw retention; whole hours older than that are
//! rolled up (summed per node, reporter, endpoints, port, action and
//! trace) into `flows_hourly`, kept for the roll-up retention.

mod check;
mod rows;

pub use check::{check, Refused};
use rows::{flow_of, row_values, where_clause};

use crate::query::{Filter, Query, Resolution, Sort};
use crate::record::{Flow, TraceEntry};
use rusqlite::types::Value;
use rusqlite::{params_from_iter, Connection, OpenFlags};
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
    #[error("the flow store is closed")]
    Closed,
    #[error("starting the flow store's checkpoint thread")]
    Thread(#[source] std::io::Error),
}

/// The SELECT for a page of `q` and its parameters (one more record than
/// the page holds: whether another follows).
fn page_sql(q: &Query) -> (String, Vec<Value>) {
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
    (
        format!(
            "SELECT {COLUMNS} FROM {} WHERE {clause} ORDER BY {order} LIMIT ?{lim} OFFSET ?{off}",
            table(q.resolution)
        ),
        params,
    )
}

fn sql(what: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError {
    move |cause| StoreError::Sql { what, cause }
}

const COLUMNS: &str = "start_time, end_time, node, reporter, action, proto, \
    source_type, source_namespace, source_name, source_ip, source_labels, \
    dest_type, dest_namespace, dest_name, dest_ip, dest_labels, dest_port, \
    policies, decisions, pending_policies, packets, bytes, num_flows, \
    packets_in, packets_out, bytes_in, bytes_out, num_flows_started, num_flows_completed, num_flows_live, source_port";

/// The key columns a roll-up groups by (everything but times and counts).
const KEY: &str = "node, reporter, action, proto, \
    source_type, source_namespace, source_name, source_ip, source_labels, \
    dest_type, dest_namespace, dest_name, dest_ip, dest_labels, dest_port, \
    policies, decisions, pending_policies, source_port";
/// `KEY` in `COLUMNS` order, with the sums between (the source port,
/// added last to the table, comes after them).
const KEY_SUMS: &str = "node, reporter, action, proto, \
    source_type, source_namespace, source_name, source_ip, source_labels, \
    dest_type, dest_namespace, dest_name, dest_ip, dest_labels, dest_port, \
    policies, decisions, pending_policies, \
    SUM(packets), SUM(bytes), SUM(num_flows), SUM(packets_in), SUM(packets_out), \
    SUM(bytes_in), SUM(bytes_out), SUM(num_flows_started), SUM(num_flows_completed), \
    MAX(num_flows_live), source_port";

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
            num_flows_live INTEGER NOT NULL, source_port INTEGER);
        CREATE INDEX IF NOT EXISTS {table}_end ON {table}(end_time);
        CREATE INDEX IF NOT EXISTS {table}_src_ns ON {table}(source_namespace, end_time);
        CREATE INDEX IF NOT EXISTS {table}_dst_ns ON {table}(dest_namespace, end_time);
        CREATE INDEX IF NOT EXISTS {table}_proto ON {table}(proto, end_time);"
    )
}

/// Brings a file written by an earlier version up to this schema: the
/// columns added since, each NULL in the rows already stored.
fn upgrade(conn: &Connection) -> rusqlite::Result<()> {
    const ADDED: &[(&str, &str)] = &[("source_port", "INTEGER")];
    for table in ["flows", "flows_hourly"] {
        let mut have = Vec::new();
        let mut stmt = conn.prepare(&format!("PRAGMA table_info({table})"))?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            have.push(r.get::<_, String>(1)?);
        }
        for (column, ty) in ADDED {
            if !have.iter().any(|c| c == column) {
                conn.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {ty}"))?;
            }
        }
    }
    Ok(())
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
    /// The writer's checkpointer (None for readers).
    _checkpoints: Option<Checkpointer>,
}

/// How often the WAL is copied into the database file.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(250);
/// A log larger than this is restarted: the writer waits while the last
/// frames are copied, and writes from the log's start again after.
pub const WAL_LIMIT: u64 = 64 << 20;

/// Copies the write-ahead log into the database file on a thread and a
/// connection of its own, so that the writer never waits for it (SQLite's
/// automatic checkpoint runs inside the commit that crosses 1,000 pages,
/// with an fsync: it cost the writer about a third of its rate). A
/// passive checkpoint never blocks the writer or the readers; the log is
/// reused from its start once it has all been copied, which under a
/// steady stream of writes takes a restarting checkpoint (the writer
/// waits for the last frames to be copied) once the log passes
/// `WAL_LIMIT`.
#[derive(Debug)]
struct Checkpointer {
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// A read-write connection to the store at `path`, waiting up to 5 s on
/// a lock.
fn connect(path: &Path) -> Result<Connection, StoreError> {
    let open = |cause| StoreError::Open {
        path: path.display().to_string(),
        cause,
    };
    let conn = Connection::open(path).map_err(open)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .map_err(open)?;
    Ok(conn)
}

impl Checkpointer {
    fn start(path: &Path, wal_limit: u64) -> Result<Checkpointer, StoreError> {
        let conn = connect(path)?;
        let mut wal = path.as_os_str().to_owned();
        wal.push("-wal");
        let wal = std::path::PathBuf::from(wal);
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("flow-checkpoint".into())
            .spawn(move || {
                let checkpoint = || {
                    let large = std::fs::metadata(&wal).is_ok_and(|m| m.len() > wal_limit);
                    let mode = if large { "RESTART" } else { "PASSIVE" };
                    let sql = format!("PRAGMA wal_checkpoint({mode})");
                    if let Err(e) = conn.query_row(&sql, [], |_| Ok(())) {
                        tracing::warn!("flow store checkpoint: {e}");
                    }
                };
                loop {
                    match stopped.recv_timeout(CHECKPOINT_EVERY) {
                        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => checkpoint(),
                        _ => {
                            checkpoint();
                            return;
                        }
                    }
                }
            })
            .map_err(StoreError::Thread)?;
        Ok(Checkpointer {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn table(r: Resolution) -> &'static str {
    match r {
        Resolution::Raw => "flows",
        Resolution::Hour => "flows_hourly",
    }
}

/// How much of the file SQLite maps into memory for reading, at most.
const MMAP_BYTES: i64 = 1 << 30;

impl Store {
    /// Opens (creating if needed) the store at `path`.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        Self::open_with_wal_limit(path, WAL_LIMIT)
    }

    /// The same, the log restarted once it passes `wal_limit` bytes.
    pub fn open_with_wal_limit(path: &Path, wal_limit: u64) -> Result<Store, StoreError> {
        let open = |cause| StoreError::Open {
            path: path.display().to_string(),
            cause,
        };
        let conn = connect(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(open)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(open)?;
        // The indexes' hot pages stay in memory (64 MiB of cache, pages
        // mapped rather than copied in): inserting at the end of three
        // indexes then costs no reads.
        conn.pragma_update(None, "cache_size", -65_536)
            .map_err(open)?;
        conn.pragma_update(None, "mmap_size", MMAP_BYTES)
            .map_err(open)?;
        // Checkpoints are the checkpointer's (see `Checkpointer`).
        conn.pragma_update(None, "wal_autocheckpoint", 0)
            .map_err(open)?;
        conn.execute_batch(&(schema("flows") + &schema("flows_hourly")))
            .map_err(open)?;
        upgrade(&conn).map_err(open)?;
        let checkpoints = Checkpointer::start(path, wal_limit)?;
        Ok(Store {
            conn,
            _checkpoints: Some(checkpoints),
        })
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
        conn.pragma_update(None, "mmap_size", MMAP_BYTES)
            .map_err(open)?;
        Ok(Store {
            conn,
            _checkpoints: None,
        })
    }

    /// Stores checked records in one transaction.
    pub fn insert(&mut self, flows: &[Flow]) -> Result<(), StoreError> {
        self.insert_groups([flows])
    }

    /// Stores several lists of checked records in one transaction: all or none.
    pub fn insert_groups<'a>(
        &mut self,
        groups: impl IntoIterator<Item = &'a [Flow]>,
    ) -> Result<(), StoreError> {
        let tx = self.conn.transaction().map_err(sql("insert"))?;
        {
            let mut stmt = tx
                .prepare_cached(&format!(
                    "INSERT INTO flows ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26, ?27, ?28, ?29, ?30, ?31)"
                ))
                .map_err(sql("insert"))?;
            for f in groups.into_iter().flatten() {
                stmt.execute(params_from_iter(row_values(f)))
                    .map_err(sql("insert"))?;
            }
        }
        tx.commit().map_err(sql("insert"))
    }

    /// A page of the flows `q` selects.
    pub fn query(&self, q: &Query) -> Result<Page, StoreError> {
        let (text, params) = page_sql(q);
        let limit = i64::from(q.limit.max(1));
        let mut stmt = self.conn.prepare_cached(&text).map_err(sql("query"))?;
        let mut flows = stmt
            .query_map(params_from_iter(params), flow_of)
            .map_err(sql("query"))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(sql("query"))?;
        let more = flows.len() as i64 > limit;
        flows.truncate(limit as usize);
        Ok(Page { flows, more })
    }

    /// How SQLite would answer `q` (its `EXPLAIN QUERY PLAN`, one line per
    /// step): which index a filter uses, or that it reads every record.
    pub fn query_plan(&self, q: &Query) -> Result<Vec<String>, StoreError> {
        let (text, params) = page_sql(q);
        let mut stmt = self
            .conn
            .prepare(&format!("EXPLAIN QUERY PLAN {text}"))
            .map_err(sql("query plan"))?;
        let steps = stmt
            .query_map(params_from_iter(params), |r| r.get::<_, String>(3))
            .map_err(sql("query plan"))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(sql("query plan"));
        steps
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
                     SELECT (end_time / 3600) * 3600, (end_time / 3600) * 3600 + 3599, {KEY_SUMS}
                     FROM flows WHERE end_time < ?1 GROUP BY end_time / 3600, {KEY}"
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
