//! Flow records: what the dataplane logs to NFLOG when flow logs are on
//! (`flowLogsFileEnabled`): every deciding verdict of a new connection
//! (groups 1, into workloads, and 2, out of them), every denied packet.
//! Aggregated per flush interval by reporter, endpoints, protocol,
//! destination port, action and trace (source ports dropped, as Calico
//! does), and appended to `flows.log` as JSON lines.
//!
//! The trace is what the dataplane logged for the packet: the Pass
//! verdicts it went through and the rule (or tier end, or missing profile)
//! that decided, in Calico's `<index>|<tier>|<namespace>/<name>|<action>|<rule>`
//! form. Counts are of logged packets: the first packet of each allowed
//! connection and every denied packet (no byte or conntrack counters yet).

use calico_kernel::{Logged, Nflog};
use std::collections::BTreeMap;
use std::io::Write;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tracing::warn;

/// What a chain of the table stands for, to turn a log prefix back into
/// a trace entry. The agent rebuilds it at every sync.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Names {
    /// `p-<hash>-in|out` → (tier, "namespace/name" or "name").
    pub policies: BTreeMap<String, (String, String)>,
    /// `r-<hash>-in|out` → profile name.
    pub profiles: BTreeMap<String, String>,
    /// `tw-<iface>` / `fw-<iface>` → the endpoint's tiers in that direction.
    pub tiers: BTreeMap<String, Vec<String>>,
    /// Every workload's address → who it is.
    pub workloads: BTreeMap<IpAddr, Workload>,
    /// The policy with the staged policies applied, when there are any.
    pub pending: Option<crate::pending::PendingRef>,
    /// Changes whenever the rest does (the collector's caches follow it).
    pub generation: u64,
}

/// A workload as flow records name it: its namespace, pod and labels.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Workload {
    pub namespace: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
}

pub use calico_flows::Flow as FlowRecord;

/// A packet's addresses and ports, read from its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Tuple {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub proto: u8,
    pub sport: Option<u16>,
    pub dport: Option<u16>,
}

/// The IP and transport headers of a logged packet (IPv4, or IPv6 without
/// extension headers); None if it is neither.
pub fn tuple(payload: &[u8]) -> Option<Tuple> {
    let version = payload.first()? >> 4;
    let (src, dst, proto, l4): (IpAddr, IpAddr, u8, &[u8]) = match version {
        4 => {
            let ihl = usize::from(payload[0] & 0x0f) * 4;
            let src: [u8; 4] = payload.get(12..16)?.try_into().ok()?;
            let dst: [u8; 4] = payload.get(16..20)?.try_into().ok()?;
            (
                src.into(),
                dst.into(),
                *payload.get(9)?,
                payload.get(ihl..)?,
            )
        }
        6 => {
            let src: [u8; 16] = payload.get(8..24)?.try_into().ok()?;
            let dst: [u8; 16] = payload.get(24..40)?.try_into().ok()?;
            (src.into(), dst.into(), *payload.get(6)?, payload.get(40..)?)
        }
        _ => return None,
    };
    let ports = matches!(proto, 6 | 17 | 132 | 136) && l4.len() >= 4;
    let port = |at: usize| ports.then(|| u16::from_be_bytes([l4[at], l4[at + 1]]));
    Some(Tuple {
        src,
        dst,
        proto,
        sport: port(0),
        dport: port(2),
    })
}

/// What a log prefix says: the verdict and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// `<A|D|P><index>|<policy or profile chain>`.
    Rule {
        action: char,
        index: usize,
        chain: String,
    },
    /// `DT<n>|<endpoint chain>`: the end of the endpoint's n-th tier.
    TierEnd { tier: usize, chain: String },
    /// `DN|<endpoint chain>`: no profile allowed it.
    NoProfile { chain: String },
}

pub fn verdict(prefix: &str) -> Option<Verdict> {
    let (head, chain) = prefix.split_once('|')?;
    let chain = chain.to_string();
    if let Some(n) = head.strip_prefix("DT") {
        return Some(Verdict::TierEnd {
            tier: n.parse().ok()?,
            chain,
        });
    }
    if head == "DN" {
        return Some(Verdict::NoProfile { chain });
    }
    let mut chars = head.chars();
    let action = chars.next().filter(|c| matches!(c, 'A' | 'D' | 'P'))?;
    Some(Verdict::Rule {
        action,
        index: chars.as_str().parse().ok()?,
        chain,
    })
}

fn action_word(c: char) -> &'static str {
    match c {
        'A' => "allow",
        'P' => "pass",
        _ => "deny",
    }
}

/// A trace entry, `<position>|<tier>|<policy>|<action>|<rule>` as Calico
/// writes them, with the action; None for a chain this agent did not
/// program.
fn entry(names: &Names, v: &Verdict, position: usize) -> Option<(String, &'static str)> {
    Some(match v {
        Verdict::Rule {
            action,
            index,
            chain,
        } => {
            let word = action_word(*action);
            if let Some((tier, name)) = names.policies.get(chain) {
                (format!("{position}|{tier}|{name}|{word}|{index}"), word)
            } else {
                let profile = names.profiles.get(chain)?;
                (
                    format!("{position}|__PROFILE__|__PROFILE__.{profile}|{word}|{index}"),
                    word,
                )
            }
        }
        Verdict::TierEnd { tier, chain } => {
            let name = names.tiers.get(chain)?.get(*tier)?;
            (
                format!("{position}|{name}|{name}.end-of-tier|deny|-1"),
                "deny",
            )
        }
        Verdict::NoProfile { .. } => (
            format!("{position}|__PROFILE__|__NO_MATCH__|deny|-1"),
            "deny",
        ),
    })
}

/// One end of a flow: namespace, name, the address (for non-workloads)
/// and labels (for workloads).
type End = (String, String, Option<IpAddr>, BTreeMap<String, String>);

/// A record's key once named: reporter, action, protocol, both ends,
/// destination port and trace.
type Named = (
    &'static str,
    &'static str,
    u8,
    End,
    End,
    Option<u16>,
    Vec<String>,
    Vec<String>,
);

/// What a packet is counted under, cheap to hash: addresses, not names
/// (named once per interval), and the trace as interned entries.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    group: u16,
    action: &'static str,
    proto: u8,
    src: IpAddr,
    dst: IpAddr,
    dport: Option<u16>,
    trace: Vec<u32>,
}

#[derive(Debug, Default)]
struct Counts {
    /// Packets logged (every denied one; the first of each allowed connection).
    packets: u64,
    /// Distinct (source, source port): connections (a retransmitted
    /// first packet, still "new" to conntrack, meets policy again), and
    /// those the connection tracker counted traffic for.
    sports: std::collections::HashSet<(IpAddr, Option<u16>)>,
    first: u64,
    last: u64,
    /// Into and out of the reporting endpoint (see `FlowRecord`).
    packets_in: u64,
    packets_out: u64,
    bytes_in: u64,
    bytes_out: u64,
    started: u64,
    completed: u64,
    live: u64,
}

/// A named record's sums while endpoints are merged.
#[derive(Debug, Clone, Copy)]
struct Sum {
    flows: u64,
    first: u64,
    last: u64,
    packets_in: u64,
    packets_out: u64,
    bytes_in: u64,
    bytes_out: u64,
    started: u64,
    completed: u64,
    live: u64,
}

/// The IP length of a logged packet (its total length field).
pub fn ip_len(payload: &[u8]) -> u64 {
    match payload.first().map(|b| b >> 4) {
        Some(4) => payload
            .get(2..4)
            .map_or(0, |b| u64::from(u16::from_be_bytes([b[0], b[1]]))),
        Some(6) => payload
            .get(4..6)
            .map_or(0, |b| 40 + u64::from(u16::from_be_bytes([b[0], b[1]]))),
        _ => 0,
    }
}

fn conn_tuple(t: &Tuple) -> calico_kernel::conntrack::ConnTuple {
    calico_kernel::conntrack::ConnTuple {
        src: t.src,
        dst: t.dst,
        proto: t.proto,
        sport: t.sport,
        dport: t.dport,
    }
}

/// A log prefix read back: the trace entry it stands for (interned) and
/// its action; None when this agent did not program that chain.
type Resolved = Option<(u32, &'static str)>;

/// Flow records being aggregated for the current interval.
///
/// Per packet it parses the headers, looks the prefix up in a cache of
/// resolved prefixes (position in the trace included) and counts under
/// addresses; names are given to the addresses when an interval's records
/// are made, from the ones it first saw them with.
#[derive(Debug, Default)]
pub struct Aggregator {
    flows: std::collections::HashMap<Key, Counts>,
    /// Pass verdicts waiting for the decision on the same packet.
    passes: std::collections::HashMap<(u16, Tuple), Vec<u32>>,
    /// prefix → resolved at each position in the trace, for the names of
    /// generation `generation`.
    resolved: std::collections::HashMap<String, Vec<Option<Resolved>>>,
    generation: u64,
    /// Interned trace entries.
    entries: Vec<String>,
    interned: std::collections::HashMap<String, u32>,
    /// Each address's end as first seen this interval.
    ends: std::collections::HashMap<IpAddr, End>,
    /// Deciding packets per (trace entry, reporter) since the last take.
    hits: std::collections::HashMap<(u32, &'static str), u64>,
    /// Allowed connections logged (by group and connection tuple), and the
    /// record they count under, while the connection tracker holds them.
    conns: std::collections::HashMap<(u16, calico_kernel::conntrack::ConnTuple), Key>,
    /// Each tracked connection's counters at the last accounting (by id):
    /// source to destination packets and bytes, then back.
    counted: std::collections::HashMap<u64, [u64; 4]>,
    /// Logged packets that could not be read back (unknown chain, bad header).
    pub unreadable: u64,
}

fn proto_name(p: u8) -> String {
    calico_calc::explain::protocol_name(p)
}

impl Aggregator {
    fn intern(&mut self, entry: String) -> u32 {
        if let Some(&id) = self.interned.get(&entry) {
            return id;
        }
        let id = u32::try_from(self.entries.len()).unwrap_or(u32::MAX);
        self.entries.push(entry.clone());
        self.interned.insert(entry, id);
        id
    }

    fn resolve(&mut self, names: &Names, prefix: &str, position: usize) -> Resolved {
        if self.generation != names.generation {
            self.generation = names.generation;
            self.resolved.clear();
        }
        if let Some(Some(r)) = self.resolved.get(prefix).and_then(|at| at.get(position)) {
            return *r;
        }
        let r = verdict(prefix)
            .and_then(|v| entry(names, &v, position))
            .map(|(text, action)| (self.intern(text), action));
        let at = self.resolved.entry(prefix.to_string()).or_default();
        if at.len() <= position {
            at.resize(position + 1, None);
        }
        at[position] = Some(r);
        r
    }

    /// Takes one logged packet at `now` (Unix seconds); returns the
    /// deciding rule's trace entry and the reporter (None when the packet
    /// was a Pass on its way, or could not be read back).
    pub fn add(&mut self, names: &Names, p: &Logged, now: u64) -> Option<(&str, &'static str)> {
        let Some(t) = tuple(&p.payload) else {
            self.unreadable += 1;
            return None;
        };
        let pkey = (p.group, t);
        let passed = self.passes.get(&pkey).map_or(0, Vec::len);
        let Some((id, action)) = self.resolve(names, &p.prefix, passed) else {
            self.unreadable += 1;
            return None;
        };
        if action == "pass" {
            self.passes.entry(pkey).or_default().push(id);
            return None;
        }
        let mut trace = self.passes.remove(&pkey).unwrap_or_default();
        trace.push(id);
        let reporter = if p.group == calico_dataplane::flow_group(true) {
            "dst"
        } else {
            "src"
        };
        for ip in [t.src, t.dst] {
            self.ends.entry(ip).or_insert_with(|| end_of(names, ip));
        }
        *self.hits.entry((id, reporter)).or_default() += 1;
        let k = Key {
            group: p.group,
            action,
            proto: t.proto,
            src: t.src,
            dst: t.dst,
            dport: t.dport,
            trace,
        };
        let k_copy = k.clone();
        let c = self.flows.entry(k).or_default();
        if c.packets == 0 {
            c.first = now;
        }
        c.packets += 1;
        c.last = now;
        c.sports.insert((t.src, t.sport));
        if action == "allow" {
            if let std::collections::hash_map::Entry::Vacant(v) =
                self.conns.entry((p.group, conn_tuple(&t)))
            {
                v.insert(k_copy);
                c.started += 1;
            }
        } else {
            let len = ip_len(&p.payload);
            if reporter == "dst" {
                c.packets_in += 1;
                c.bytes_in += len;
            } else {
                c.packets_out += 1;
                c.bytes_out += len;
            }
        }
        Some((self.entries[id as usize].as_str(), reporter))
    }

    /// Takes the connection tracker's counters for the allowed connections
    /// logged so far: traffic since the last accounting goes to their
    /// records (for this interval, at `now`); those gone from the table
    /// have completed; the rest are live.
    pub fn account(&mut self, table: &calico_kernel::conntrack::Table, now: u64) {
        let mut present = std::collections::HashSet::new();
        let mut counted = std::collections::HashMap::new();
        let groups = [
            calico_dataplane::flow_group(true),
            calico_dataplane::flow_group(false),
        ];
        for conn in &table.conns {
            for group in groups {
                let Some(key) = self.conns.get(&(group, conn.tuple)) else {
                    continue;
                };
                present.insert((group, conn.tuple));
                let now_counts = [
                    conn.orig_packets,
                    conn.orig_bytes,
                    conn.reply_packets,
                    conn.reply_bytes,
                ];
                let before = self.counted.get(&conn.id).copied().unwrap_or_default();
                counted.insert(conn.id, now_counts);
                let d: Vec<u64> = now_counts
                    .iter()
                    .zip(before)
                    .map(|(n, b)| n.saturating_sub(b))
                    .collect();
                let c = self.flows.entry(key.clone()).or_default();
                if c.first == 0 {
                    c.first = now;
                }
                c.last = now;
                c.sports.insert((conn.tuple.src, conn.tuple.sport));
                c.live += 1;
                // In and out as the reporter sees them.
                if group == groups[0] {
                    c.packets_in += d[0];
                    c.bytes_in += d[1];
                    c.packets_out += d[2];
                    c.bytes_out += d[3];
                } else {
                    c.packets_out += d[0];
                    c.bytes_out += d[1];
                    c.packets_in += d[2];
                    c.bytes_in += d[3];
                }
            }
        }
        // Ids seen twice (both ends on this node) kept once.
        self.counted = counted;
        let gone: Vec<_> = self
            .conns
            .keys()
            .filter(|k| !present.contains(*k))
            .copied()
            .collect();
        for k in gone {
            if let Some(key) = self.conns.remove(&k) {
                let c = self.flows.entry(key).or_default();
                if c.first == 0 {
                    c.first = now;
                }
                c.last = c.last.max(now);
                c.sports.insert((k.1.src, k.1.sport));
                c.completed += 1;
            }
        }
    }

    /// Whether allowed connections are being followed (the connection
    /// tracker is worth reading).
    pub fn tracking(&self) -> bool {
        !self.conns.is_empty()
    }

    /// Deciding packets per (trace entry, reporter) since the last call.
    pub fn take_hits(&mut self) -> Vec<(String, &'static str, u64)> {
        let entries = &self.entries;
        self.hits
            .drain()
            .map(|((id, r), n)| (entries[id as usize].clone(), r, n))
            .collect()
    }

    /// The records so far (reported by `node`), emptying the aggregator;
    /// endpoints merged by name (two addresses of one pod are one end);
    /// each with its pending trace when `names` has staged policies.
    pub fn flush(&mut self, node: &str, names: &Names) -> Vec<FlowRecord> {
        self.passes.clear();
        // Addresses met only through the connection tracker are named now.
        let keys: Vec<(IpAddr, IpAddr)> = self.flows.keys().map(|k| (k.src, k.dst)).collect();
        for (a, b) in keys {
            for ip in [a, b] {
                self.ends.entry(ip).or_insert_with(|| end_of(names, ip));
            }
        }
        let ends = std::mem::take(&mut self.ends);
        let end = |ip: &IpAddr| ends.get(ip).cloned().unwrap_or_default();
        let mut merged: BTreeMap<Named, Sum> = BTreeMap::new();
        for (k, c) in std::mem::take(&mut self.flows) {
            let reporter = if k.group == calico_dataplane::flow_group(true) {
                "dst"
            } else {
                "src"
            };
            let trace = k
                .trace
                .iter()
                .map(|id| self.entries[*id as usize].clone())
                .collect();
            let flows = c.sports.len() as u64;
            let pending = names.pending.as_ref().map_or_else(Vec::new, |p| {
                p.0.trace(reporter == "dst", k.src, k.dst, k.proto, k.dport)
            });
            let m = merged
                .entry((
                    reporter,
                    k.action,
                    k.proto,
                    end(&k.src),
                    end(&k.dst),
                    k.dport,
                    trace,
                    pending,
                ))
                .or_insert(Sum {
                    flows: 0,
                    first: u64::MAX,
                    last: 0,
                    packets_in: 0,
                    packets_out: 0,
                    bytes_in: 0,
                    bytes_out: 0,
                    started: 0,
                    completed: 0,
                    live: 0,
                });
            m.flows += flows;
            m.first = m.first.min(c.first);
            m.last = m.last.max(c.last);
            m.packets_in += c.packets_in;
            m.packets_out += c.packets_out;
            m.bytes_in += c.bytes_in;
            m.bytes_out += c.bytes_out;
            m.started += c.started;
            m.completed += c.completed;
            m.live += c.live;
        }
        // Interned entries are kept while the names stay the same (and
        // with them the connections that refer to them).
        if self.entries.len() > 100_000 {
            self.entries.clear();
            self.interned.clear();
            self.resolved.clear();
            self.conns.clear();
        }
        merged
            .into_iter()
            .map(
                |((reporter, action, proto, src, dst, dport, trace, pending), m)| FlowRecord {
                    start_time: m.first,
                    end_time: m.last,
                    node: node.to_string(),
                    reporter: reporter.to_string(),
                    action: action.to_string(),
                    proto: proto_name(proto),
                    source_ip: src.2,
                    source_type: if src.2.is_some() { "net" } else { "wep" }.to_string(),
                    source_namespace: src.0,
                    source_name: src.1,
                    source_labels: src.3,
                    dest_ip: dst.2,
                    dest_type: if dst.2.is_some() { "net" } else { "wep" }.to_string(),
                    dest_namespace: dst.0,
                    dest_name: dst.1,
                    dest_labels: dst.3,
                    dest_port: dport,
                    policies: trace,
                    pending_policies: pending,
                    packets: m.packets_in + m.packets_out,
                    bytes: m.bytes_in + m.bytes_out,
                    packets_in: m.packets_in,
                    packets_out: m.packets_out,
                    bytes_in: m.bytes_in,
                    bytes_out: m.bytes_out,
                    num_flows: m.flows,
                    num_flows_started: m.started,
                    num_flows_completed: m.completed,
                    num_flows_live: m.live,
                },
            )
            .collect()
    }
}

/// An address as a flow's end: a workload of the cluster by name, or
/// `pub`/`pvt` with the address.
fn end_of(names: &Names, ip: IpAddr) -> End {
    match names.workloads.get(&ip) {
        Some(w) => (w.namespace.clone(), w.name.clone(), None, w.labels.clone()),
        None => (
            "-".to_string(),
            if is_private(ip) { "pvt" } else { "pub" }.to_string(),
            Some(ip),
            BTreeMap::new(),
        ),
    }
}

fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => a.is_private() || a.is_loopback() || a.is_link_local(),
        IpAddr::V6(a) => (a.segments()[0] & 0xfe00) == 0xfc00 || a.is_loopback(),
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Reads NFLOG groups 1 and 2 on a thread of its own; every flush
/// interval appends the aggregated records to `<directory>/flows.log`
/// and/or offers them to the flow service's exporter.
pub fn start(
    node: String,
    config: &crate::config::FlowLogs,
    names: Arc<Mutex<Names>>,
    metrics: Arc<crate::status::Metrics>,
) -> anyhow::Result<std::thread::JoinHandle<()>> {
    use anyhow::Context;
    let file = match &config.directory {
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            Some(dir.join("flows.log"))
        }
        None => None,
    };
    let exporter = match &config.server {
        Some(server) => Some(
            calico_flows::export::Exporter::start(calico_flows::export::ExportConfig {
                server: server.clone(),
                node: node.clone(),
                capacity: config.buffer,
                tls: config
                    .tls
                    .clone()
                    .map(|(ca, cert, key)| calico_flows::export::ClientTls {
                        ca,
                        cert,
                        key,
                        server_name: None,
                    }),
            })
            .context("starting the flow exporter")?,
        ),
        None => None,
    };
    let flush = config.flush;
    let groups = [
        calico_dataplane::flow_group(true),
        calico_dataplane::flow_group(false),
    ];
    let mut log = Nflog::open(&groups).context("subscribing to the flow log NFLOG groups")?;
    // Packet and byte counters on tracked connections (for new ones).
    use calico_kernel::Sysctl;
    calico_kernel::ProcSysctl
        .write("net/netfilter/nf_conntrack_acct", "1")
        .context("turning on the connection tracker's accounting")?;
    let thread = std::thread::Builder::new()
        .name("flow-logs".into())
        .spawn(move || {
            let mut agg = Aggregator::default();
            let mut last = Instant::now();
            let mut seen = ExportSeen::default();
            loop {
                match log.recv(Duration::from_millis(250)) {
                    Ok(packets) => {
                        let names = names
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner);
                        let now = unix_now();
                        let unreadable = agg.unreadable;
                        for p in &packets {
                            agg.add(&names, p, now);
                        }
                        drop(names);
                        for (entry, reporter, n) in agg.take_hits() {
                            metrics
                                .rule_packets
                                .get_or_create(&labels(&entry, reporter))
                                .inc_by(n);
                        }
                        metrics.flow_unreadable.inc_by(agg.unreadable - unreadable);
                    }
                    Err(e) => warn!("reading flow logs: {e}"),
                }
                if last.elapsed() >= flush {
                    last = Instant::now();
                    if agg.tracking() {
                        match calico_kernel::conntrack::list() {
                            Ok(table) => {
                                agg.account(&table, unix_now());
                                metrics.flow_unreadable.inc_by(table.unreadable);
                            }
                            Err(e) => warn!("reading the connection tracker's counters: {e}"),
                        }
                    }
                    let records = {
                        let names = names
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .clone();
                        agg.flush(&node, &names)
                    };
                    if let Some(file) = &file {
                        if let Err(e) = append(file, &records) {
                            warn!("writing {}: {e}", file.display());
                        }
                    }
                    if let Some(x) = &exporter {
                        if !records.is_empty() {
                            x.offer(records);
                        }
                    }
                }
                if let Some(x) = &exporter {
                    seen.report(x.stats(), &metrics);
                }
            }
        })?;
    Ok(thread)
}

/// The exporter's counters as last copied into the metrics.
#[derive(Debug, Default)]
struct ExportSeen {
    sent: u64,
    refused: u64,
    dropped: u64,
}

impl ExportSeen {
    fn report(&mut self, s: &calico_flows::export::ExportStats, m: &crate::status::Metrics) {
        use std::sync::atomic::Ordering::Relaxed;
        let step = |seen: &mut u64, now: u64, c: &prometheus_client::metrics::counter::Counter| {
            c.inc_by(now.saturating_sub(*seen));
            *seen = now;
        };
        step(&mut self.sent, s.sent.load(Relaxed), &m.flow_export_sent);
        step(
            &mut self.refused,
            s.refused.load(Relaxed),
            &m.flow_export_refused,
        );
        step(
            &mut self.dropped,
            s.dropped.load(Relaxed),
            &m.flow_export_dropped,
        );
        m.flow_export_buffered.set(s.buffered.load(Relaxed) as i64);
        m.flow_export_connected
            .set(i64::from(s.connected.load(Relaxed)));
    }
}

/// A trace entry (`<i>|<tier>|<policy>|<action>|<rule>`) as metric labels.
fn labels(entry: &str, reporter: &str) -> crate::status::RuleLabels {
    let mut parts = entry.splitn(5, '|').skip(1);
    let mut next = || parts.next().unwrap_or_default().to_string();
    crate::status::RuleLabels {
        tier: next(),
        policy: next(),
        action: next(),
        rule: next(),
        reporter: reporter.to_string(),
    }
}

fn append(file: &std::path::Path, records: &[FlowRecord]) -> std::io::Result<()> {
    if records.is_empty() {
        return Ok(());
    }
    let mut out = Vec::new();
    for r in records {
        serde_json::to_writer(&mut out, r).map_err(std::io::Error::other)?;
        out.push(b'\n');
    }
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(file)?;
    f.write_all(&out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(src: [u8; 4], dst: [u8; 4], proto: u8, sport: u16, dport: u16) -> Vec<u8> {
        let mut p = vec![0x45, 0, 0, 40, 0, 0, 0, 0, 64, proto, 0, 0];
        p.extend(src);
        p.extend(dst);
        p.extend(sport.to_be_bytes());
        p.extend(dport.to_be_bytes());
        p.extend([0u8; 16]);
        p
    }

    fn names() -> Names {
        let mut n = Names::default();
        n.policies
            .insert("p-aaa-in".into(), ("default".into(), "shop/db".into()));
        n.policies
            .insert("p-bbb-in".into(), ("security".into(), "audit".into()));
        n.profiles.insert("r-ccc-in".into(), "kns.shop".into());
        n.tiers
            .insert("tw-cali1".into(), vec!["security".into(), "default".into()]);
        let w = |name: &str| Workload {
            namespace: "shop".into(),
            name: name.into(),
            labels: BTreeMap::from([("app".to_string(), name.to_string())]),
        };
        n.workloads
            .insert("10.0.0.1".parse().expect("ip"), w("web"));
        n.workloads.insert("10.0.0.2".parse().expect("ip"), w("db"));
        n
    }

    fn logged(group: u16, prefix: &str, payload: Vec<u8>) -> Logged {
        Logged {
            group,
            prefix: prefix.into(),
            payload,
        }
    }

    #[test]
    fn prefixes_and_headers_read_back() {
        assert_eq!(
            verdict("A3|p-aaa-in"),
            Some(Verdict::Rule {
                action: 'A',
                index: 3,
                chain: "p-aaa-in".into()
            })
        );
        assert_eq!(
            verdict("DT1|tw-cali1"),
            Some(Verdict::TierEnd {
                tier: 1,
                chain: "tw-cali1".into()
            })
        );
        assert_eq!(verdict("calico-packet: "), None);
        assert_eq!(verdict("X1|p"), None);
        let t = tuple(&v4([10, 0, 0, 1], [10, 0, 0, 2], 6, 40000, 5432)).expect("tuple");
        assert_eq!((t.proto, t.sport, t.dport), (6, Some(40000), Some(5432)));
        assert_eq!(tuple(&[0x45, 0]), None, "truncated");
    }

    #[test]
    fn connections_aggregate_by_endpoint_port_action_and_trace() {
        let n = names();
        let mut a = Aggregator::default();
        for sport in [40000, 40001, 40001] {
            let pkt = v4([10, 0, 0, 1], [10, 0, 0, 2], 6, sport, 5432);
            assert_eq!(a.add(&n, &logged(1, "P0|p-bbb-in", pkt.clone()), 100), None);
            assert_eq!(
                a.add(&n, &logged(1, "A2|p-aaa-in", pkt), 101),
                Some(("1|default|shop/db|allow|2", "dst"))
            );
        }
        a.add(
            &n,
            &logged(
                1,
                "DT1|tw-cali1",
                v4([192, 0, 2, 9], [10, 0, 0, 2], 6, 5555, 80),
            ),
            102,
        );
        a.add(
            &n,
            &logged(1, "A0|p-unknown", v4([1, 1, 1, 1], [10, 0, 0, 2], 6, 1, 2)),
            103,
        );
        let records = a.flush("node-1", &n);
        assert_eq!(records.len(), 2, "{records:?}");
        let allowed = &records[0];
        assert_eq!(
            (
                allowed.reporter.as_str(),
                allowed.action.as_str(),
                allowed.proto.as_str()
            ),
            ("dst", "allow", "TCP")
        );
        assert_eq!(
            (
                allowed.source_name.as_str(),
                allowed.dest_name.as_str(),
                allowed.dest_port
            ),
            ("web", "db", Some(5432))
        );
        assert_eq!(
            allowed.policies,
            vec!["0|security|audit|pass|0", "1|default|shop/db|allow|2"]
        );
        // Three logged first packets, two connections (one retransmitted);
        // traffic counts come from the connection tracker (none here).
        assert_eq!(
            (
                allowed.num_flows,
                allowed.num_flows_started,
                allowed.packets
            ),
            (2, 2, 0)
        );
        assert_eq!(
            allowed.source_labels.get("app").map(String::as_str),
            Some("web")
        );
        assert_eq!((allowed.start_time, allowed.end_time), (101, 101));
        let denied = &records[1];
        assert_eq!(denied.action, "deny");
        assert_eq!(denied.node, "node-1");
        assert_eq!(
            (denied.source_type.as_str(), denied.source_name.as_str()),
            ("net", "pub")
        );
        assert_eq!(
            denied.policies,
            vec!["0|default|default.end-of-tier|deny|-1"]
        );
        assert_eq!(a.unreadable, 1, "the chain this agent did not program");
        assert!(a.flush("node-1", &n).is_empty());
    }

    #[test]
    fn the_connection_tracker_counts_allowed_connections_both_ways() {
        use calico_kernel::conntrack::parse;
        let n = names();
        let mut a = Aggregator::default();
        let syn = v4([10, 0, 0, 1], [10, 0, 0, 2], 6, 40000, 5432);
        a.add(&n, &logged(1, "A2|p-aaa-in", syn), 100);
        let denied = v4([10, 0, 0, 1], [10, 0, 0, 2], 6, 40001, 81);
        a.add(&n, &logged(1, "DT1|tw-cali1", denied.clone()), 100);
        a.add(&n, &logged(1, "DT1|tw-cali1", denied), 101);
        assert!(a.tracking());
        let line = |p1: u64, b1: u64, p2: u64, b2: u64| {
            format!("ipv4 2 tcp 6 100 ESTABLISHED src=10.0.0.1 dst=10.0.0.2 sport=40000 dport=5432 packets={p1} bytes={b1} src=10.0.0.2 dst=10.0.0.1 sport=5432 dport=40000 packets={p2} bytes={b2} [ASSURED] mark=0 use=1 id=42\n")
        };
        a.account(&parse(&line(3, 180, 2, 120)), 102);
        let r = a.flush("node-1", &n);
        let allowed = r.iter().find(|r| r.action == "allow").expect("allowed");
        // Reported at the destination: in is source to destination.
        assert_eq!(
            (
                allowed.packets_in,
                allowed.bytes_in,
                allowed.packets_out,
                allowed.bytes_out
            ),
            (3, 180, 2, 120)
        );
        assert_eq!(
            (
                allowed.num_flows_started,
                allowed.num_flows_live,
                allowed.num_flows_completed
            ),
            (1, 1, 0)
        );
        assert_eq!((allowed.packets, allowed.bytes), (5, 300));
        let denied = r.iter().find(|r| r.action == "deny").expect("denied");
        assert_eq!(
            (denied.packets_in, denied.bytes_in, denied.num_flows),
            (2, 80, 1),
            "the IP length of each dropped packet"
        );
        // The next interval: only what is new, then the end.
        a.account(&parse(&line(10, 600, 8, 480)), 115);
        let r = a.flush("node-1", &n);
        assert_eq!(r.len(), 1, "{r:?}");
        assert_eq!(
            (
                r[0].packets_in,
                r[0].bytes_out,
                r[0].num_flows_started,
                r[0].num_flows_live
            ),
            (7, 360, 0, 1)
        );
        a.account(&parse(""), 130);
        let r = a.flush("node-1", &n);
        assert_eq!(
            (r[0].num_flows_completed, r[0].num_flows_live, r[0].packets),
            (1, 0, 0)
        );
        assert!(!a.tracking());
        assert!(a.flush("node-1", &n).is_empty());
    }
}
