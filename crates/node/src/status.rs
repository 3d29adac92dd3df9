//! Health, readiness, the in-sync report and Prometheus metrics, served
//! over HTTP/1 (hyper) by one thread with its own small runtime.
//!
//! - `/liveness`: 200 while the agent loop is running.
//! - `/readiness`: 200 once the dataplane holds everything up to the
//!   datastore revision it last read, 503 before (or after a failed apply).
//! - `/status`: JSON `{"node", "in_sync", "applied_revision"}`: the
//!   datastore revision the dataplane has fully applied; tools wait on it.
//! - `/metrics`: Prometheus text.

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{header, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the agent reports; shared between the loop and the server.
#[derive(Debug, Default)]
pub struct Status {
    pub node: String,
    pub applied_revision: i64,
    pub in_sync: bool,
    /// Records left out of the dataplane (endpoint or key -> why).
    pub rejected: std::collections::BTreeMap<String, String>,
}

#[derive(Debug)]
pub struct Metrics {
    pub endpoints: Gauge,
    pub policies: Gauge,
    pub set_members: Gauge,
    pub resyncs: Counter,
    pub apply_errors: Counter,
    /// Refreshes that found table `inet calico` changed behind our back.
    pub nft_repairs: Counter,
    pub apply_seconds: Histogram,
    /// Records skipped as bad (unreadable, or endpoints that cannot be programmed).
    pub bad_records: Gauge,
    /// Packets, bytes and connections of flow records, by the rule that
    /// decided (policy or profile, rule index, action, reporter).
    pub rule_packets: Family<RuleLabels, Counter>,
    pub rule_bytes: Family<RuleLabels, Counter>,
    pub rule_connections: Family<RuleLabels, Counter>,
    /// Logged packets the flow collector could not read back.
    pub flow_unreadable: Counter,
    /// Times logged packets were lost because the collector fell behind.
    pub flow_overruns: Counter,
    /// Logged packets not recorded: an interval held the most records.
    pub flow_overflow: Counter,
    /// Flow records the flow service stored, refused, and those dropped
    /// because it was slow or away; records waiting for it.
    pub flow_export_sent: Counter,
    /// Allowed connections not followed for their counters (too many at once).
    pub flow_unfollowed: Counter,
    pub flow_export_refused: Counter,
    pub flow_export_dropped: Counter,
    pub flow_export_buffered: Gauge,
    pub flow_export_connected: Gauge,
    registry: Registry,
}

/// The deciding rule of a logged packet, as metric labels.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RuleLabels {
    pub tier: String,
    pub policy: String,
    pub rule: String,
    pub action: String,
    pub reporter: String,
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("felix");
        let m = Metrics {
            endpoints: Gauge::default(),
            policies: Gauge::default(),
            set_members: Gauge::default(),
            resyncs: Counter::default(),
            apply_errors: Counter::default(),
            nft_repairs: Counter::default(),
            apply_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 14)),
            bad_records: Gauge::default(),
            rule_packets: Family::default(),
            rule_bytes: Family::default(),
            rule_connections: Family::default(),
            flow_unreadable: Counter::default(),
            flow_overruns: Counter::default(),
            flow_overflow: Counter::default(),
            flow_export_sent: Counter::default(),
            flow_unfollowed: Counter::default(),
            flow_export_refused: Counter::default(),
            flow_export_dropped: Counter::default(),
            flow_export_buffered: Gauge::default(),
            flow_export_connected: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register(
            "active_local_endpoints",
            "Local workload endpoints programmed",
            m.endpoints.clone(),
        );
        registry.register(
            "active_local_policies",
            "Policies applying to local endpoints",
            m.policies.clone(),
        );
        registry.register(
            "ipset_members",
            "Members across all IP sets",
            m.set_members.clone(),
        );
        registry.register(
            "resyncs_started",
            "Full resyncs with the datastore",
            m.resyncs.clone(),
        );
        registry.register(
            "dataplane_apply_errors",
            "Rulesets the kernel refused",
            m.apply_errors.clone(),
        );
        registry.register(
            "dataplane_drift_repairs",
            "Refreshes that found the nftables table changed behind the agent's back and repaired it by the difference",
            m.nft_repairs.clone(),
        );
        registry.register(
            "dataplane_apply_seconds",
            "Time to apply one ruleset",
            m.apply_seconds.clone(),
        );
        registry.register(
            "bad_records",
            "Datastore records skipped: unreadable, or endpoints that cannot be programmed",
            m.bad_records.clone(),
        );
        registry.register(
            "policy_rule_packets",
            "Packets of the connections each policy or profile rule decided, both ways (flow logs on: every denied packet; allowed connections' as the connection tracker counts them, at each flush)",
            m.rule_packets.clone(),
        );
        registry.register(
            "policy_rule_bytes",
            "Bytes of the connections each policy or profile rule decided, both ways (as policy_rule_packets)",
            m.rule_bytes.clone(),
        );
        registry.register(
            "policy_rule_connections",
            "Connections each policy or profile rule decided: allowed ones started, denied attempts (distinct sources and ports)",
            m.rule_connections.clone(),
        );
        registry.register(
            "flow_log_unreadable",
            "Logged packets the flow collector could not read back",
            m.flow_unreadable.clone(),
        );
        registry.register(
            "flow_log_overruns",
            "Times the kernel had more logged packets than the flow collector's buffer held, so some were lost",
            m.flow_overruns.clone(),
        );
        registry.register(
            "flow_log_overflow",
            "Logged packets not recorded because an interval already held the most flow records (250,000)",
            m.flow_overflow.clone(),
        );
        registry.register(
            "flow_connections_unfollowed",
            "Allowed connections whose packet and byte counts were not followed (more open at once than the collector follows)",
            m.flow_unfollowed.clone(),
        );
        registry.register(
            "flow_export_sent",
            "Flow records the flow service acknowledged as stored",
            m.flow_export_sent.clone(),
        );
        registry.register(
            "flow_export_refused",
            "Flow records the flow service refused",
            m.flow_export_refused.clone(),
        );
        registry.register(
            "flow_export_dropped",
            "Flow records dropped because the flow service was slow or away and the buffer was full",
            m.flow_export_dropped.clone(),
        );
        registry.register(
            "flow_export_buffered",
            "Flow records waiting for the flow service",
            m.flow_export_buffered.clone(),
        );
        registry.register(
            "flow_export_connected",
            "1 while a stream to the flow service is open",
            m.flow_export_connected.clone(),
        );
        Metrics { registry, ..m }
    }

    fn text(&self) -> String {
        let mut out = String::new();
        let _ = encode(&mut out, &self.registry);
        out
    }
}

/// At most this many connections are served at once; more are closed.
const MAX_CONNECTIONS: usize = 128;
/// A request's head must arrive within this time ...
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// ... and a whole connection may last no longer than this.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes buffered per connection (hyper's smallest allowed): a request
/// line without end is cut off here, never buffered without bound.
const MAX_REQUEST: usize = 8192;

fn reply(code: StatusCode, kind: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = code;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, header::HeaderValue::from_static(kind));
    r
}

fn route(path: &str, status: &Mutex<Status>, metrics: &Metrics) -> Response<Full<Bytes>> {
    if path == "/metrics" {
        return reply(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            metrics.text(),
        );
    }
    let s = status
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    match path {
        "/liveness" => reply(StatusCode::OK, "text/plain", "live\n".into()),
        "/readiness" if s.in_sync => reply(StatusCode::OK, "text/plain", "ready\n".into()),
        "/readiness" => reply(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "not in sync\n".into(),
        ),
        "/status" => {
            let body = serde_json::json!({"node": s.node, "in_sync": s.in_sync, "applied_revision": s.applied_revision, "rejected": s.rejected}).to_string();
            reply(StatusCode::OK, "application/json", body)
        }
        _ => reply(StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
    }
}

/// Serves until the process ends; a port that cannot be bound is an error.
/// Each connection is served on its own (an idle or slow client delays
/// nobody else), with a deadline for the request head and for the whole
/// connection, a bounded request size and a bounded number of connections.
pub fn serve(addr: &str, status: Arc<Mutex<Status>>, metrics: Arc<Metrics>) -> std::io::Result<()> {
    let listener = std::net::TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("status".into())
        .spawn(move || {
            rt.block_on(async move {
                let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                    return;
                };
                let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        // Out of descriptors, say: back off rather than spin.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    };
                    let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
                        continue; // dropped: closed at once
                    };
                    let (status, metrics) = (Arc::clone(&status), Arc::clone(&metrics));
                    tokio::spawn(async move {
                        let svc = service_fn(move |req: Request<Incoming>| {
                            let r = route(req.uri().path(), &status, &metrics);
                            async move { Ok::<_, Infallible>(r) }
                        });
                        let conn = http1::Builder::new()
                            .timer(TokioTimer::new())
                            .header_read_timeout(HEADER_TIMEOUT)
                            .max_buf_size(MAX_REQUEST)
                            .keep_alive(false)
                            .serve_connection(TokioIo::new(stream), svc);
                        let _ = tokio::time::timeout(CONNECTION_TIMEOUT, conn).await;
                        drop(slot);
                    });
                }
            });
        })?;
    Ok(())
}
