//! Logged packets and the connection tracker's counters, aggregated into
//! an interval's flow records.

use super::packet::{entry, headers, ip_len, verdict, Tuple};
use super::{Aggregation, FlowRecord, Level, Names};
use calico_kernel::LoggedRef;
use std::collections::BTreeMap;
use std::net::IpAddr;

/// Hash maps with a fast, per-process seeded hasher: the collector hashes
/// several keys per logged packet.
type Map<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
type Set<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;

/// Allowed connections followed for their counters at most; beyond it new
/// ones are counted as started but not followed (`untracked`), so a
/// workload opening connections without end cannot grow the agent.
const MAX_FOLLOWED: usize = 200_000;
/// Records one interval holds at most: beyond, a logged packet that would
/// start another is counted (`overflow`) but not recorded, so that a flood
/// of denied packets from ever new addresses (or ports, at level 0)
/// cannot grow the agent. The kernel enforces all the same.
pub const MAX_RECORDS: usize = 250_000;
/// Distinct sources of denied packets remembered per record and interval
/// at most; beyond it each further denied packet counts as a connection of
/// its own.
const MAX_SOURCES: usize = 65_536;

/// One end of a flow as first seen in an interval: who holds the address.
/// What a record shows of it depends on its aggregation level (`view`).
#[derive(Debug, Clone, Default)]
struct End {
    /// `wep`, `hep`, `ns` (in a NetworkSet or GlobalNetworkSet) or `net`.
    kind: &'static str,
    namespace: String,
    /// The pod, host endpoint or network set; `pub`/`pvt` for a network.
    name: String,
    /// A workload's pods' shared name (`<generateName>*`), if it has one.
    prefix: Option<String>,
    labels: BTreeMap<String, String>,
}

/// An end as a record's key holds it: namespace, name, address (at levels
/// that keep it) and kind.
type EndKey = (String, String, Option<IpAddr>, &'static str);

impl End {
    /// The end at `ip` as a record at `level` shows it.
    fn view(&self, ip: IpAddr, level: Level) -> EndKey {
        let (name, ip) = match level {
            Level::PodPrefix => (self.prefix.as_ref().unwrap_or(&self.name), None),
            Level::None | Level::SourcePort => (&self.name, Some(ip)),
        };
        (self.namespace.clone(), name.clone(), ip, self.kind)
    }
}

/// A record's key once named: reporter, action, protocol, both ends,
/// source port (kept at level 0), destination port, trace and pending trace.
type Named = (
    &'static str,
    &'static str,
    u8,
    EndKey,
    EndKey,
    Option<u16>,
    Option<u16>,
    Vec<String>,
    Vec<String>,
);

/// A named record's sums, and the labels every end merged into it shares.
#[derive(Debug)]
struct Merged {
    sum: Sum,
    labels: [Option<BTreeMap<String, String>>; 2],
}

impl Merged {
    fn absorb(&mut self, c: &Sum, flows: u64, ends: [&End; 2]) {
        self.sum.absorb(c, flows);
        for (have, end) in self.labels.iter_mut().zip(ends) {
            match have {
                None => *have = Some(end.labels.clone()),
                Some(l) => l.retain(|k, v| end.labels.get(k) == Some(v)),
            }
        }
    }
}

/// What a packet is counted under, cheap to hash: addresses, not names
/// (named once per interval), and the trace interned: nothing on the heap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    group: u16,
    action: &'static str,
    proto: u8,
    src: IpAddr,
    dst: IpAddr,
    /// Kept only where the level keeps source ports (0).
    sport: Option<u16>,
    dport: Option<u16>,
    /// An interned trace (a list of interned entries).
    trace: u32,
}

/// An allowed connection followed through the connection tracker, by its
/// original addresses and ports (one entry for both reporters when both
/// ends are on this node).
#[derive(Debug, Clone, Copy)]
struct Followed {
    /// The sequence number of its SYN (TCP): a SYN with another is a new
    /// connection reusing the addresses and ports.
    seq: Option<u32>,
    /// The tracker's id for it and its counters at the last accounting:
    /// source to destination packets and bytes, then back.
    ct: Option<u64>,
    counted: [u64; 4],
    /// The last accounting that found it in the table.
    seen: u64,
    /// The tracker holds it past its end (TCP TIME_WAIT or CLOSE): it has
    /// completed, its last counters taken.
    closed: bool,
    /// Per reporter (`dst`, then `src`), the record it counts under.
    sides: [Option<Side>; 2],
}

/// A followed connection as one reporter counts it: the record, and the
/// interval it was last counted in.
#[derive(Debug, Clone, Copy)]
struct Side {
    key: Key,
    interval: u64,
}

impl Side {
    /// Traffic `d` (source to destination packets and bytes, then back)
    /// seen on the connection since the last accounting, for reporter
    /// `side`: counted in `interval` (at `now`), and live unless `closed`.
    fn count(
        &mut self,
        flows: &mut Map<Key, Counts>,
        side: usize,
        d: &[u64; 4],
        closed: bool,
        interval: u64,
        now: u64,
    ) {
        let c = flows.entry(self.key).or_default();
        if c.sum.first == 0 {
            c.sum.first = now;
        }
        c.sum.last = now;
        if self.interval != interval {
            self.interval = interval;
            c.sum.flows += 1;
        }
        c.sum.live += u64::from(!closed);
        // In and out as the reporter sees them: into the destination is
        // the original direction.
        let (inn, out) = if side == 0 { (0, 2) } else { (2, 0) };
        c.sum.packets_in += d[inn];
        c.sum.bytes_in += d[inn + 1];
        c.sum.packets_out += d[out];
        c.sum.bytes_out += d[out + 1];
    }

    /// The connection has ended: its record counts it as completed (at
    /// `now`, in `interval`).
    fn complete(&self, flows: &mut Map<Key, Counts>, interval: u64, now: u64) {
        let c = flows.entry(self.key).or_default();
        if c.sum.first == 0 {
            c.sum.first = now;
        }
        c.sum.last = c.sum.last.max(now);
        if self.interval != interval {
            c.sum.flows += 1;
        }
        c.sum.completed += 1;
    }
}

impl Followed {
    fn new(seq: Option<u32>, side: usize, first: Side) -> Self {
        let mut sides = [None; 2];
        sides[side] = Some(first);
        Followed {
            seq,
            ct: None,
            counted: [0; 4],
            seen: 0,
            closed: false,
            sides,
        }
    }
}

/// The log groups of traffic into workloads and out of them.
const INGRESS: u16 = calico_dataplane::flow_group(true);
const EGRESS: u16 = calico_dataplane::flow_group(false);

/// The reporter of a log group: `dst` for traffic into workloads, `src`
/// for traffic out of them.
fn reporter_of(group: u16) -> &'static str {
    if group == calico_dataplane::flow_group(true) {
        "dst"
    } else {
        "src"
    }
}

/// The reporter a log group stands for: 0 for `dst` (into workloads), 1
/// for `src`.
fn side_of(group: u16) -> usize {
    usize::from(group != calico_dataplane::flow_group(true))
}

#[derive(Debug, Default)]
struct Counts {
    /// Packets logged (every denied one; the first of each allowed connection).
    packets: u64,
    /// The record's `hits()` already handed on to the rule metrics.
    hits_taken: Hits,
    /// Distinct (source, source port) of denied packets.
    sports: Set<(IpAddr, Option<u16>)>,
    /// Sources past `MAX_SOURCES`, each counted as new.
    beyond: u64,
    /// Times and counters; `sum.flows` counts allowed connections once
    /// each (a retransmitted first packet, still "new" to conntrack, meets
    /// policy again but is the connection already followed) and those the
    /// connection tracker counted traffic for.
    sum: Sum,
}

impl Counts {
    /// Notes a denied packet's source; whether it is new to this record.
    fn source(&mut self, ip: IpAddr, port: Option<u16>) -> bool {
        if self.sports.len() >= MAX_SOURCES && !self.sports.contains(&(ip, port)) {
            self.beyond += 1;
            return true;
        }
        self.sports.insert((ip, port))
    }

    /// The record's connections this interval: allowed and tracked ones,
    /// and denied ones by distinct source.
    fn connections(&self) -> u64 {
        self.sum.flows + self.sports.len() as u64 + self.beyond
    }

    /// What its rule has decided so far: packets and bytes both ways
    /// (every denied packet; the tracker's counters of allowed
    /// connections), and connections (started; attempts, if denied).
    fn hits(&self) -> Hits {
        let s = &self.sum;
        [
            s.packets_in + s.packets_out,
            s.bytes_in + s.bytes_out,
            s.started + self.sports.len() as u64 + self.beyond,
        ]
    }
}

/// A rule's packets, bytes and connections.
pub type Hits = [u64; 3];

/// A record's times and counters; a named record's sums while endpoints
/// are merged.
#[derive(Debug, Clone, Copy, Default)]
struct Sum {
    flows: u64,
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

impl Sum {
    /// Adds `c`'s counters (its `flows` connections) to these.
    fn absorb(&mut self, c: &Sum, flows: u64) {
        self.flows += flows;
        self.first = self.first.min(c.first);
        self.last = self.last.max(c.last);
        self.packets_in += c.packets_in;
        self.packets_out += c.packets_out;
        self.bytes_in += c.bytes_in;
        self.bytes_out += c.bytes_out;
        self.started += c.started;
        self.completed += c.completed;
        self.live += c.live;
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
    flows: Map<Key, Counts>,
    /// Pass verdicts waiting for the decision on the same packet.
    passes: Map<(u16, Tuple), Vec<u32>>,
    /// prefix → resolved at each position in the trace, for the names of
    /// generation `generation`.
    resolved: Map<String, Vec<Option<Resolved>>>,
    generation: u64,
    /// Trace entries, and traces (lists of entries), by number.
    entries: Numbered<String>,
    traces: Numbered<Vec<u32>>,
    /// Flushes so far: the interval being aggregated.
    interval: u64,
    /// Each address's end as first seen this interval.
    ends: Map<IpAddr, End>,
    /// Hits per (trace entry, reporter) of records already flushed, not
    /// taken yet (the rest are in `flows`).
    hits: Map<(String, &'static str), Hits>,
    /// Allowed connections logged, while the connection tracker holds them.
    conns: Map<Tuple, Followed>,
    /// A followed connection's further records of one reporter, by side:
    /// decided at a second point (a workload's and a host endpoint's
    /// forward policy), each a connection of its own record. Rare; empty
    /// on most nodes.
    more: Map<Tuple, Vec<(usize, Side)>>,
    /// Accountings so far.
    accountings: u64,
    /// Logged packets that could not be read back (unknown chain, bad header).
    pub unreadable: u64,
    /// Allowed connections not followed for counters (`MAX_FOLLOWED`).
    pub untracked: u64,
    /// Logged packets not recorded: the interval held `MAX_RECORDS`.
    pub overflow: u64,
    /// What the records keep, for allowed and for denied flows.
    aggregation: Aggregation,
    /// Records carry pending traces (`flowLogsPolicyEvaluationMode:
    /// Continuous`): with nothing staged, the trace itself.
    pending_traces: bool,
}

impl Aggregator {
    /// An aggregator whose records keep what `aggregation` says, with
    /// pending traces if `pending_traces`.
    pub fn new(aggregation: Aggregation, pending_traces: bool) -> Self {
        Aggregator {
            aggregation,
            pending_traces,
            ..Aggregator::default()
        }
    }
}

fn proto_name(p: u8) -> String {
    calico_calc::explain::protocol_name(p)
}

/// Values numbered in the order first met: a record's key holds the
/// number, cheap to hash and copy, not the value.
#[derive(Debug)]
struct Numbered<T> {
    values: Vec<T>,
    ids: Map<T, u32>,
}

impl<T> Default for Numbered<T> {
    fn default() -> Self {
        Numbered {
            values: Vec::new(),
            ids: Map::default(),
        }
    }
}

impl<T: std::hash::Hash + Eq + Clone> Numbered<T> {
    /// The number of `v`; allocates only for a value not met before.
    fn id<Q>(&mut self, v: &Q) -> u32
    where
        T: std::borrow::Borrow<Q>,
        Q: std::hash::Hash + Eq + ToOwned<Owned = T> + ?Sized,
    {
        if let Some(&id) = self.ids.get(v) {
            return id;
        }
        let id = u32::try_from(self.values.len()).unwrap_or(u32::MAX);
        self.values.push(v.to_owned());
        self.ids.insert(v.to_owned(), id);
        id
    }

    fn get(&self, id: u32) -> Option<&T> {
        self.values.get(id as usize)
    }

    fn len(&self) -> usize {
        self.values.len()
    }

    fn clear(&mut self) {
        self.values.clear();
        self.ids.clear();
    }
}

impl Aggregator {
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
            .map(|(text, action)| (self.entries.id(text.as_str()), action));
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
    ///
    /// A workload's egress Allow may not have logged itself but left its
    /// identity in the packet's mark (`calico_dataplane::deferred_allows`):
    /// then this is its log after the walk (prefix `E|`), or the log of
    /// the packet's verdict into a workload of this node, which brings the
    /// egress verdict first.
    pub fn add<'p>(
        &mut self,
        names: &Names,
        p: impl Into<LoggedRef<'p>>,
        now: u64,
    ) -> Option<(&str, &'static str)> {
        let p: LoggedRef<'p> = p.into();
        let id = calico_dataplane::flow_id(p.mark);
        let deferred = |id: Option<u16>| id.and_then(|id| names.deferred.get(&id));
        if p.prefix == calico_dataplane::DEFERRED_PREFIX {
            let Some(prefix) = deferred(id) else {
                self.unreadable += 1;
                return None;
            };
            return self.add_one(names, LoggedRef { prefix, ..p }, now);
        }
        // A Pass on the way into the workload carries it too: taken at the
        // walk's last log only.
        if id.is_some() && p.group == INGRESS && !p.prefix.starts_with('P') {
            match deferred(id) {
                Some(prefix) => {
                    let egress = LoggedRef {
                        group: EGRESS,
                        prefix,
                        ..p
                    };
                    self.add_one(names, egress, now);
                }
                None => self.unreadable += 1,
            }
        }
        self.add_one(names, p, now)
    }

    fn add_one(
        &mut self,
        names: &Names,
        p: LoggedRef<'_>,
        now: u64,
    ) -> Option<(&str, &'static str)> {
        let Some((t, seq)) = headers(p.payload) else {
            self.unreadable += 1;
            return None;
        };
        let pkey = (p.group, t);
        let passed = if self.passes.is_empty() {
            0
        } else {
            self.passes.get(&pkey).map_or(0, Vec::len)
        };
        let Some((id, action)) = self.resolve(names, p.prefix, passed) else {
            self.unreadable += 1;
            return None;
        };
        if action == "pass" {
            self.passes.entry(pkey).or_default().push(id);
            return None;
        }
        let trace = match passed {
            0 => self.traces.id(&[id][..]),
            _ => {
                let mut entries = self.passes.remove(&pkey).unwrap_or_default();
                entries.push(id);
                self.traces.id(entries.as_slice())
            }
        };
        let reporter = reporter_of(p.group);
        let k = Key {
            group: p.group,
            action,
            proto: t.proto,
            src: t.src,
            dst: t.dst,
            sport: if self.aggregation.of(action) == Level::None {
                t.sport
            } else {
                None
            },
            dport: t.dport,
            trace,
        };
        if self.flows.len() >= MAX_RECORDS && !self.flows.contains_key(&k) {
            self.overflow += 1;
            return None;
        }
        let mut ended = [None; 2];
        let mut ended_more = None;
        let c = self.flows.entry(k).or_default();
        // A record new this interval: its addresses are named as they are
        // now (a workload deleted before the flush keeps its name).
        let new_record = c.packets == 0;
        if new_record {
            c.sum.first = now;
        }
        c.packets += 1;
        c.sum.last = now;
        if action == "allow" {
            // One probe of the table: a connection already followed (its
            // first packet again, or the other reporter's), or a new one.
            let full = self.conns.len() >= MAX_FOLLOWED;
            let side = side_of(p.group);
            let this = Side {
                key: k,
                interval: self.interval,
            };
            let new = match self.conns.entry(t) {
                std::collections::hash_map::Entry::Occupied(mut o) => {
                    let f = o.get_mut();
                    if seq.is_some() && seq != f.seq {
                        // Another SYN: the connection followed has ended
                        // and a new one reuses its addresses and ports.
                        ended = f.sides;
                        if !self.more.is_empty() {
                            ended_more = self.more.remove(&t);
                        }
                        *f = Followed::new(seq, side, this);
                        true
                    } else if f.sides[side].is_none() {
                        f.sides[side] = Some(this);
                        true
                    } else if f.sides[side].is_some_and(|s| s.key == k) {
                        // Its first packet again.
                        false
                    } else {
                        // Decided again on its way, by another endpoint's
                        // policy of this reporter: another record's.
                        let more = self.more.entry(t).or_default();
                        let known = more.iter().any(|(at, s)| *at == side && s.key == k);
                        if !known {
                            more.push((side, this));
                        }
                        !known
                    }
                }
                std::collections::hash_map::Entry::Vacant(v) => {
                    if full {
                        self.untracked += 1;
                    } else {
                        v.insert(Followed::new(seq, side, this));
                    }
                    true
                }
            };
            if new {
                c.sum.started += 1;
                c.sum.flows += 1;
            }
        } else {
            c.source(t.src, t.sport);
            let len = ip_len(p.payload);
            if reporter == "dst" {
                c.sum.packets_in += 1;
                c.sum.bytes_in += len;
            } else {
                c.sum.packets_out += 1;
                c.sum.bytes_out += len;
            }
        }
        for s in ended
            .iter()
            .flatten()
            .chain(ended_more.iter().flatten().map(|(_, s)| s))
        {
            s.complete(&mut self.flows, self.interval, now);
        }
        if new_record {
            for ip in [t.src, t.dst] {
                self.ends.entry(ip).or_insert_with(|| end_of(names, ip));
            }
        }
        Some((self.entries.get(id)?.as_str(), reporter))
    }

    /// Takes the connection tracker's counters for the allowed connections
    /// logged so far: traffic since the last accounting goes to their
    /// records (for this interval, at `now`); those gone from the table
    /// have completed; the rest are live.
    pub fn account(&mut self, table: &calico_kernel::conntrack::Table, now: u64) {
        self.accountings += 1;
        let this = self.accountings;
        let interval = self.interval;
        for conn in &table.conns {
            let Some(f) = self.conns.get_mut(&conn.tuple) else {
                continue;
            };
            if f.seen == this {
                // Listed twice (another zone): counted once.
                continue;
            }
            f.seen = this;
            f.closed = conn.closed;
            let now_counts = [
                conn.orig_packets,
                conn.orig_bytes,
                conn.reply_packets,
                conn.reply_bytes,
            ];
            // Another id is another connection on the same tuple: all of
            // its counters are new.
            let before = match f.ct {
                Some(id) if id == conn.id => f.counted,
                _ => [0; 4],
            };
            f.ct = Some(conn.id);
            f.counted = now_counts;
            let d: [u64; 4] = std::array::from_fn(|i| now_counts[i].saturating_sub(before[i]));
            for (side, s) in f.sides.iter_mut().enumerate() {
                if let Some(s) = s {
                    s.count(&mut self.flows, side, &d, conn.closed, interval, now);
                }
            }
            if !self.more.is_empty() {
                for (side, s) in self.more.get_mut(&conn.tuple).into_iter().flatten() {
                    s.count(&mut self.flows, *side, &d, conn.closed, interval, now);
                }
            }
        }
        // Those gone from the table, or past their end, have completed.
        let (flows, more) = (&mut self.flows, &mut self.more);
        self.conns.retain(|t, f| {
            if f.seen == this && !f.closed {
                return true;
            }
            for s in f.sides.iter().flatten() {
                s.complete(flows, interval, now);
            }
            if !more.is_empty() {
                for (_, s) in more.remove(t).into_iter().flatten() {
                    s.complete(flows, interval, now);
                }
            }
            false
        });
    }

    /// Whether allowed connections are being followed (the connection
    /// tracker is worth reading).
    pub fn tracking(&self) -> bool {
        !self.conns.is_empty()
    }

    /// Packets, bytes and connections per deciding (trace entry,
    /// reporter) since the last call.
    pub fn take_hits(&mut self) -> Vec<(String, &'static str, Hits)> {
        self.gather_hits();
        self.hits.drain().map(|((e, r), n)| (e, r, n)).collect()
    }

    /// Moves the records' hits not taken yet into `hits`, by the deciding
    /// entry (the trace's last) and reporter.
    fn gather_hits(&mut self) {
        let mut by_id: Map<(u32, &'static str), Hits> = Map::default();
        for (k, c) in &mut self.flows {
            let now = c.hits();
            if now == c.hits_taken {
                continue;
            }
            let d: Hits = std::array::from_fn(|i| now[i].saturating_sub(c.hits_taken[i]));
            c.hits_taken = now;
            let Some(&id) = self.traces.get(k.trace).and_then(|t| t.last()) else {
                continue;
            };
            let h = by_id.entry((id, reporter_of(k.group))).or_default();
            for (sum, n) in h.iter_mut().zip(d) {
                *sum += n;
            }
        }
        for ((id, r), d) in by_id {
            if let Some(e) = self.entries.get(id) {
                let h = self.hits.entry((e.clone(), r)).or_default();
                for (sum, n) in h.iter_mut().zip(d) {
                    *sum += n;
                }
            }
        }
    }

    /// The records so far (reported by `node`), emptying the aggregator;
    /// endpoints merged as each record's level says (`End::view`: by
    /// address and name, or by name or pod prefix alone), labels to the
    /// ones they share; each with its pending trace when `names` has
    /// staged policies.
    pub fn flush(&mut self, node: &str, names: &Names) -> Vec<FlowRecord> {
        self.gather_hits();
        self.passes.clear();
        self.interval += 1;
        // Addresses met only through the connection tracker are named now.
        let keys: Vec<(IpAddr, IpAddr)> = self.flows.keys().map(|k| (k.src, k.dst)).collect();
        for (a, b) in keys {
            for ip in [a, b] {
                self.ends.entry(ip).or_insert_with(|| end_of(names, ip));
            }
        }
        let ends = std::mem::take(&mut self.ends);
        let unknown = End::default();
        let end = |ip: &IpAddr| ends.get(ip).unwrap_or(&unknown);
        let mut merged: BTreeMap<Named, Merged> = BTreeMap::new();
        for (k, c) in std::mem::take(&mut self.flows) {
            let reporter = reporter_of(k.group);
            let level = self.aggregation.of(k.action);
            let trace: Vec<String> = self
                .traces
                .get(k.trace)
                .into_iter()
                .flatten()
                .filter_map(|id| self.entries.get(*id).cloned())
                .collect();
            let flows = c.connections();
            // What would happen with the staged policies enforced: with
            // none staged, what did.
            let pending = match &names.pending {
                Some(p) => p.0.trace(reporter == "dst", k.src, k.dst, k.proto, k.dport),
                None if self.pending_traces => trace.clone(),
                None => Vec::new(),
            };
            let (src, dst) = (end(&k.src), end(&k.dst));
            merged
                .entry((
                    reporter,
                    k.action,
                    k.proto,
                    src.view(k.src, level),
                    dst.view(k.dst, level),
                    k.sport,
                    k.dport,
                    trace,
                    pending,
                ))
                .or_insert(Merged {
                    sum: Sum {
                        first: u64::MAX,
                        ..Sum::default()
                    },
                    labels: [None, None],
                })
                .absorb(&c.sum, flows, [src, dst]);
        }
        // Interned entries are kept while the names stay the same (and
        // with them the connections that refer to them).
        if self.entries.len() > 100_000 || self.traces.len() > 100_000 {
            self.entries.clear();
            self.traces.clear();
            self.resolved.clear();
            self.conns.clear();
        }
        merged
            .into_iter()
            .map(
                |((reporter, action, proto, src, dst, sport, dport, trace, pending), m)| {
                    let [src_labels, dst_labels] = m.labels;
                    let m = m.sum;
                    FlowRecord {
                        start_time: m.first,
                        end_time: m.last,
                        node: node.to_string(),
                        reporter: reporter.to_string(),
                        action: action.to_string(),
                        proto: proto_name(proto),
                        source_ip: src.2,
                        source_port: sport,
                        source_type: src.3.to_string(),
                        source_namespace: src.0,
                        source_name: src.1,
                        source_labels: src_labels.unwrap_or_default(),
                        dest_ip: dst.2,
                        dest_type: dst.3.to_string(),
                        dest_namespace: dst.0,
                        dest_name: dst.1,
                        dest_labels: dst_labels.unwrap_or_default(),
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
                    }
                },
            )
            .collect()
    }
}

/// An address as a flow's end: a workload of the cluster by name, a host
/// endpoint by its expected addresses, the network set that holds it, or
/// `pub`/`pvt`.
fn end_of(names: &Names, ip: IpAddr) -> End {
    if let Some(w) = names.workloads.get(&ip) {
        return End {
            kind: "wep",
            namespace: w.namespace.to_string(),
            name: w.name.to_string(),
            prefix: w.generate_name.as_ref().map(|g| format!("{g}*")),
            labels: w.label_map(),
        };
    }
    // A host endpoint's expected address (a node, say).
    if let Some(h) = names.host_endpoints.get(&ip) {
        return End {
            kind: "hep",
            namespace: "-".to_string(),
            name: h.name.clone(),
            prefix: None,
            labels: h.labels.clone(),
        };
    }
    // The most specific network set that holds it (sets are kept longest
    // prefix first); its members are one end, as Calico aggregates them.
    if let Some(set) = names.network_sets.iter().find(|s| s.net.contains(&ip)) {
        return End {
            kind: "ns",
            namespace: set.namespace.clone(),
            name: set.name.clone(),
            prefix: None,
            labels: set.labels.clone(),
        };
    }
    End {
        kind: "net",
        namespace: "-".to_string(),
        name: if is_private(ip) { "pvt" } else { "pub" }.to_string(),
        prefix: None,
        labels: BTreeMap::new(),
    }
}

fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => a.is_private() || a.is_loopback() || a.is_link_local(),
        IpAddr::V6(a) => (a.segments()[0] & 0xfe00) == 0xfc00 || a.is_loopback(),
    }
}
