//! Flow records: what the dataplane logs to NFLOG when flow logs are on
//! (`flowLogsGoldmaneServer` and/or `flowLogsFileEnabled`): every deciding
//! verdict of a new connection (groups 1, into workloads, and 2, out of
//! them), every denied packet, with the connection tracker's counters.
//! Aggregated per flush interval by reporter, endpoints, protocol,
//! destination port, action and trace, at Calico's aggregation levels
//! ([`Level`]: by default allowed flows drop addresses and name a
//! Deployment's pods by their prefix, denied ones drop source ports), then
//! appended to `flows.log` as JSON lines and/or streamed to
//! the flow service. `packet.rs` reads a logged packet back,
//! `aggregate.rs` counts; this file runs the collector's thread.

mod aggregate;
mod packet;
#[cfg(test)]
mod tests;

pub use aggregate::Aggregator;

use calico_kernel::Nflog;
use std::collections::BTreeMap;
use std::io::Write;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tracing::{info, warn};

pub use calico_flows::Flow as FlowRecord;

/// What a flow record keeps of the connections it sums: Calico's flow log
/// aggregation levels (`flowLogsFileAggregationKindForAllowed`, default
/// 2, and `…ForDenied`, default 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// 0: a record per connection, with both addresses and both ports.
    None,
    /// 1: connections that differ only in their source port are one record.
    SourcePort,
    /// 2: addresses dropped too, and a workload named by the prefix its
    /// pods share (`<generateName>*`; its own name when it has none), with
    /// the labels all of them share: a Deployment's pods are one end.
    PodPrefix,
}

impl Level {
    /// The level a FelixConfiguration value stands for (the API refuses
    /// any but 0, 1 and 2; anything else aggregates most).
    pub fn of(kind: i64) -> Level {
        match kind {
            0 => Level::None,
            1 => Level::SourcePort,
            _ => Level::PodPrefix,
        }
    }
}

/// The level for allowed flows and the one for denied flows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Aggregation {
    pub allowed: Level,
    pub denied: Level,
}

impl Default for Aggregation {
    /// Calico's defaults.
    fn default() -> Self {
        Aggregation {
            allowed: Level::PodPrefix,
            denied: Level::SourcePort,
        }
    }
}

impl Aggregation {
    /// The level records of `action` are kept at.
    pub fn of(&self, action: &str) -> Level {
        if action == "deny" {
            self.denied
        } else {
            self.allowed
        }
    }
}

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
    /// An identity in a logged packet's mark → the egress Allow it stands
    /// for, as that rule would have logged it (`A<index>|<chain>`;
    /// `calico_dataplane::deferred_allows`).
    pub deferred: BTreeMap<u16, String>,
    /// Every workload's address → who it is (shared with the agent, which
    /// keeps it as changes come).
    pub workloads: SharedWorkloads,
    /// Every host endpoint's expected address → its name and labels.
    pub host_endpoints: BTreeMap<IpAddr, Arc<HostEndpointName>>,
    /// Every net of every NetworkSet and GlobalNetworkSet, longest prefix first.
    pub network_sets: Vec<NetworkSetNet>,
    /// The policy with the staged policies applied, when there are any.
    pub pending: Option<crate::pending::PendingRef>,
    /// Changes whenever the rest does (the collector's caches follow it).
    pub generation: u64,
}

/// A host endpoint as flow records name it (`hep`, no namespace).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostEndpointName {
    pub name: String,
    pub labels: BTreeMap<String, String>,
}

/// One net of a network set: the set's namespace (`-` for a global one),
/// name and labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkSetNet {
    pub net: calico_net::IpNet,
    pub namespace: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
}

/// Every workload by address, one map the agent updates in place (a
/// change costs one entry, not a copy of 50,000) and the collector reads.
/// Two are equal when they are the same map.
#[derive(Debug, Clone, Default)]
pub struct SharedWorkloads(Arc<std::sync::RwLock<BTreeMap<IpAddr, Arc<Workload>>>>);

impl PartialEq for SharedWorkloads {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for SharedWorkloads {}

impl SharedWorkloads {
    pub fn get(&self, ip: &IpAddr) -> Option<Arc<Workload>> {
        self.0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(ip)
            .cloned()
    }

    /// Changes the map in place.
    pub fn update<T>(&self, f: impl FnOnce(&mut BTreeMap<IpAddr, Arc<Workload>>) -> T) -> T {
        f(&mut self
            .0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner))
    }
}

/// A workload as flow records name it: its namespace, pod and labels.
/// One is kept for every workload of the cluster, so the namespace and
/// the labels are shared copies (see [`calico_selector::Interner`]) and
/// the labels a sorted slice, not a map.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Workload {
    pub namespace: calico_selector::Str,
    pub name: Box<str>,
    /// The prefix its pod's name was generated from (`generateName`, as
    /// a Deployment's pods have), if any; shared, like the namespace.
    pub generate_name: Option<calico_selector::Str>,
    /// Sorted by key.
    pub labels: Box<[(calico_selector::Str, calico_selector::Str)]>,
}

impl Workload {
    /// The labels as a flow record carries them.
    pub fn label_map(&self) -> BTreeMap<String, String> {
        self.labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
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
    let aggregation = config.aggregation;
    let debug_trace = config.debug_trace;
    let pending_traces = config.pending_traces;
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
            let mut agg = Aggregator::new(aggregation, pending_traces);
            let mut last = Instant::now();
            let mut seen = ExportSeen::default();
            let mut overrun_said = None;
            let mut overflow_said = None;
            let mut hits_taken = Instant::now();
            loop {
                let unreadable = agg.unreadable;
                // The names are locked once packets have come (not while
                // waiting), for the whole batch.
                let mut locked = None;
                let got = log.recv_each(Duration::from_millis(250), |p| {
                    let (names, now) = locked.get_or_insert_with(|| {
                        let names = names
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner);
                        (names, unix_now())
                    });
                    agg.add(names, p, *now);
                });
                drop(locked);
                match got {
                    Ok(_) => {
                        // Rule hits are summed from the records once a
                        // second, not per batch.
                        if hits_taken.elapsed() >= Duration::from_secs(1) {
                            hits_taken = Instant::now();
                            publish_hits(&mut agg, &metrics);
                        }
                        metrics.flow_unreadable.inc_by(agg.unreadable - unreadable);
                        metrics
                            .flow_unfollowed
                            .inc_by(std::mem::take(&mut agg.untracked));
                        let overflow = std::mem::take(&mut agg.overflow);
                        if overflow > 0 {
                            metrics.flow_overflow.inc_by(overflow);
                            if overflow_said.is_none_or(|t: Instant| t.elapsed() >= Duration::from_secs(60)) {
                                overflow_said = Some(Instant::now());
                                warn!("flow logs: an interval reached {} records; packets from further sources are counted in felix_flow_log_overflow_total, not recorded", aggregate::MAX_RECORDS);
                            }
                        }
                    }
                    Err(calico_kernel::NflogError::Overrun) => {
                        metrics.flow_overruns.inc();
                        // Once a minute at most: a node under a flood
                        // would otherwise fill its log with this line.
                        if overrun_said.is_none_or(|t: Instant| t.elapsed() >= Duration::from_secs(60)) {
                            overrun_said = Some(Instant::now());
                            warn!("flow logs: the collector fell behind and logged packets were lost (felix_flow_log_overruns_total)");
                        }
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
                    // The interval's hits are on the metrics before its
                    // records are anywhere.
                    publish_hits(&mut agg, &metrics);
                    if debug_trace {
                        for r in &records {
                            info!(record = ?r, "flow record");
                        }
                    }
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

/// The rule hits gathered since the last call, onto the metrics.
fn publish_hits(agg: &mut Aggregator, metrics: &crate::status::Metrics) {
    for (entry, reporter, [packets, bytes, connections]) in agg.take_hits() {
        let l = labels(&entry, reporter);
        metrics.rule_packets.get_or_create(&l).inc_by(packets);
        metrics.rule_bytes.get_or_create(&l).inc_by(bytes);
        metrics
            .rule_connections
            .get_or_create(&l)
            .inc_by(connections);
    }
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
