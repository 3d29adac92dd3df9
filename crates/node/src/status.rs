//! Health, readiness, the in-sync report and Prometheus metrics, served
//! over plain HTTP by one small thread.
//!
//! - `/liveness`: 200 while the agent loop is running.
//! - `/readiness`: 200 once the dataplane holds everything up to the
//!   datastore revision it last read, 503 before (or after a failed apply).
//! - `/status`: JSON `{"node", "in_sync", "applied_revision"}`: the
//!   datastore revision the dataplane has fully applied; tools wait on it.
//! - `/metrics`: Prometheus text.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

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
    pub apply_seconds: Histogram,
    /// Records skipped as bad (unreadable, or endpoints that cannot be programmed).
    pub bad_records: Gauge,
    registry: Registry,
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
            apply_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 14)),
            bad_records: Gauge::default(),
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
            "dataplane_apply_seconds",
            "Time to apply one ruleset",
            m.apply_seconds.clone(),
        );
        registry.register(
            "bad_records",
            "Datastore records skipped: unreadable, or endpoints that cannot be programmed",
            m.bad_records.clone(),
        );
        Metrics { registry, ..m }
    }

    fn text(&self) -> String {
        let mut out = String::new();
        let _ = encode(&mut out, &self.registry);
        out
    }
}

fn respond(stream: &mut std::net::TcpStream, code: &str, kind: &str, body: &str) {
    let _ = write!(stream, "HTTP/1.1 {code}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
}

/// Serves until the process ends; a port that cannot be bound is an error.
pub fn serve(addr: &str, status: Arc<Mutex<Status>>, metrics: Arc<Metrics>) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr)?;
    std::thread::Builder::new().name("status".into()).spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut line = String::new();
            if BufReader::new(&stream).read_line(&mut line).is_err() {
                continue;
            }
            let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
            let s = status.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            match path.as_str() {
                "/liveness" => respond(&mut stream, "200 OK", "text/plain", "live\n"),
                "/readiness" if s.in_sync => respond(&mut stream, "200 OK", "text/plain", "ready\n"),
                "/readiness" => respond(&mut stream, "503 Service Unavailable", "text/plain", "not in sync\n"),
                "/status" => {
                    let body = serde_json::json!({"node": s.node, "in_sync": s.in_sync, "applied_revision": s.applied_revision, "rejected": s.rejected}).to_string();
                    respond(&mut stream, "200 OK", "application/json", &body);
                }
                "/metrics" => {
                    drop(s);
                    respond(&mut stream, "200 OK", "application/openmetrics-text; version=1.0.0; charset=utf-8", &metrics.text());
                }
                _ => respond(&mut stream, "404 Not Found", "text/plain", "not found\n"),
            }
        }
    })?;
    Ok(())
}
