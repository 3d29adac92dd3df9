//! The flow service: gRPC ingest from the nodes, the durable store, the
//! HTTP query API with a live stream, Prometheus metrics and the web UI.
//!
//! HTTP (`docs/design/flows.md` has the whole API):
//! - `GET /api/v1/flows?<filters>`: a page of flows, newest first.
//! - `GET /api/v1/flows/stream?<filters>`: server-sent events, one `flow`
//!   event per stored record that passes the filters (`lagged` when this
//!   reader fell behind and missed some).
//! - `GET /api/v1/hints?field=namespace|name|node|policy|tier&<filters>`.
//! - `GET /api/v1/policies?<filters>`: hits per policy rule.
//! - `GET /api/v1/graph?<filters>`: endpoint-to-endpoint edges.
//! - `GET /metrics`, `GET /healthz`, and the UI at `/`.
//!
//! This is the service's tokio shell: it owns the clock (query timing,
//! the expiry tick).
#![allow(clippy::disallowed_methods)]

mod http;
mod ingest;
mod limit;

use crate::proto::flow_collector_server::FlowCollectorServer;
use crate::proto::FlowBatch;
use crate::query::{Query, QueryError};
use crate::record::Flow;
use crate::store::{check, Store, StoreError};
use crate::wire::from_wire;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use http::{router, serve_http};
use ingest::Ingest;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{broadcast, Semaphore};
use tonic::transport::{Certificate, Identity, ServerTlsConfig};
use tracing::{info, warn};

/// At most this many records in one batch; a bigger one ends the stream.
pub const MAX_BATCH: usize = 10_000;
const MAX_MESSAGE: usize = 16 * 1024 * 1024;
const HTTP_CONNECTIONS: usize = 256;
const STREAM_READERS: usize = 64;
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
const QUERY_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug)]
pub struct Metrics {
    pub ingested: Counter,
    pub refused: Counter,
    pub batches: Counter,
    pub stored: Gauge,
    pub query_seconds: Histogram,
    pub stream_readers: Gauge,
    pub stream_lagged: Counter,
    registry: Registry,
}

impl Metrics {
    fn new() -> Metrics {
        let mut m = Metrics {
            ingested: Counter::default(),
            refused: Counter::default(),
            batches: Counter::default(),
            stored: Gauge::default(),
            query_seconds: Histogram::new(exponential_buckets(0.0005, 2.0, 14)),
            stream_readers: Gauge::default(),
            stream_lagged: Counter::default(),
            registry: Registry::with_prefix("calico_flows"),
        };
        let r = &mut m.registry;
        r.register("ingested", "Flow records stored", m.ingested.clone());
        r.register(
            "refused",
            "Flow records refused by the checks",
            m.refused.clone(),
        );
        r.register("batches", "Batches received from nodes", m.batches.clone());
        r.register("stored_records", "Raw flow records held", m.stored.clone());
        r.register(
            "query_seconds",
            "Time to answer a query",
            m.query_seconds.clone(),
        );
        r.register(
            "stream_readers",
            "Live stream readers",
            m.stream_readers.clone(),
        );
        r.register(
            "stream_lagged",
            "Records live-stream readers missed by falling behind",
            m.stream_lagged.clone(),
        );
        m
    }

    fn text(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Server certificate and the CA that signs the nodes' (mTLS).
#[derive(Debug, Clone)]
pub struct ServerTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: PathBuf,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    pub db: PathBuf,
    /// Raw records are kept this long, then rolled up into hours.
    pub raw_retention: Duration,
    /// Hourly roll-ups are kept this long.
    pub hourly_retention: Duration,
    pub tls: Option<ServerTls>,
}

/// Shared by the ingest and the HTTP side.
#[derive(Debug)]
struct App {
    db: PathBuf,
    writer: Arc<Mutex<Store>>,
    /// The writer thread's queue (`write_groups`).
    jobs: tokio::sync::mpsc::Sender<Job>,
    readers: Mutex<Vec<Store>>,
    live: broadcast::Sender<Arc<Flow>>,
    metrics: Metrics,
    stream_slots: Arc<Semaphore>,
}

impl App {
    /// Runs `f` on a pooled read connection, off the async threads.
    async fn read<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, Response> {
        let app = self.clone();
        let started = std::time::Instant::now();
        let job = tokio::task::spawn_blocking(move || {
            let store = match app
                .readers
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .pop()
            {
                Some(s) => s,
                None => Store::reader(&app.db)?,
            };
            let out = f(&store);
            app.readers
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(store);
            out
        });
        let out = match tokio::time::timeout(QUERY_TIMEOUT, job).await {
            Ok(Ok(Ok(v))) => Ok(v),
            Ok(Ok(Err(e))) => Err(failure(StatusCode::INTERNAL_SERVER_ERROR, &e)),
            Ok(Err(e)) => Err(failure(StatusCode::INTERNAL_SERVER_ERROR, &e)),
            Err(_) => Err(failure(
                StatusCode::GATEWAY_TIMEOUT,
                &"the query took too long",
            )),
        };
        self.metrics
            .query_seconds
            .observe(started.elapsed().as_secs_f64());
        out
    }

    /// Checks a batch's records: those that pass, and how many did not.
    fn check_batch(batch: FlowBatch) -> (Vec<Flow>, u64) {
        let node_ok = crate::store::check(&Flow {
            node: batch.node.clone(),
            ..sample()
        })
        .is_ok();
        let total = batch.flows.len() as u64;
        let mut flows = Vec::with_capacity(batch.flows.len());
        if node_ok {
            for f in batch.flows {
                match from_wire(&batch.node, f) {
                    Ok(f) if check(&f).is_ok() => flows.push(f),
                    _ => {}
                }
            }
        }
        let refused = total - flows.len() as u64;
        if refused > 0 {
            warn!("node {:?}: {refused} flow records refused", batch.node);
        }
        (flows, refused)
    }

    /// Queues checked records for the writer (waiting while its queue is
    /// full); the answer comes once they are stored.
    async fn submit(&self, flows: Vec<Flow>) -> tokio::sync::oneshot::Receiver<Stored> {
        let (done, answer) = tokio::sync::oneshot::channel();
        if let Err(refused) = self.jobs.send(Job { flows, done }).await {
            // The writer is gone (shutting down): say so.
            let _ = refused.0.done.send(Err(StoreError::Closed));
        }
        answer
    }

    /// Counts stored records and hands them to the live stream.
    fn stored(&self, flows: Vec<Flow>, refused: u64) -> u64 {
        let stored = flows.len() as u64;
        self.metrics.batches.inc();
        self.metrics.ingested.inc_by(stored);
        self.metrics.refused.inc_by(refused);
        self.metrics.stored.inc_by(stored as i64);
        for f in flows {
            let _ = self.live.send(Arc::new(f));
        }
        stored
    }
}

/// A batch's records, stored (given back, for the live stream) or not.
type Stored = Result<Vec<Flow>, StoreError>;

/// Records for the writer, and where to say they are stored.
#[derive(Debug)]
struct Job {
    flows: Vec<Flow>,
    done: tokio::sync::oneshot::Sender<Stored>,
}

/// Records one transaction takes at most when batches are waiting.
pub const GROUP: usize = 5_000;

/// The writer: takes the batches waiting (from every node's stream) and
/// stores them in one transaction, so the commit's cost is shared; if
/// that fails, each batch is tried alone and answered for itself. Ends
/// when the service drops the queue.
fn write_groups(store: &Mutex<Store>, mut jobs: tokio::sync::mpsc::Receiver<Job>) {
    while let Some(first) = jobs.blocking_recv() {
        let mut group = vec![first];
        let mut records = group[0].flows.len();
        while records < GROUP {
            match jobs.try_recv() {
                Ok(j) => {
                    records += j.flows.len();
                    group.push(j);
                }
                Err(_) => break,
            }
        }
        let mut store = store
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let together = match group.as_slice() {
            [one] => store.insert(&one.flows),
            _ => store.insert_groups(group.iter().map(|j| j.flows.as_slice())),
        };
        for j in group {
            let result = match &together {
                Ok(()) => Ok(j.flows),
                Err(_) => store.insert(&j.flows).map(|()| j.flows),
            };
            let _ = j.done.send(result);
        }
    }
}

/// A record that passes the checks, to check a node name with.
fn sample() -> Flow {
    Flow {
        node: "n".into(),
        reporter: "src".into(),
        action: "allow".into(),
        proto: "TCP".into(),
        source_namespace: "-".into(),
        source_name: "pvt".into(),
        source_type: "net".into(),
        dest_namespace: "-".into(),
        dest_name: "pvt".into(),
        dest_type: "net".into(),
        ..Flow::default()
    }
}

fn failure(status: StatusCode, e: &dyn std::fmt::Display) -> Response {
    (status, Json(serde_json::json!({ "error": e.to_string() }))).into_response()
}

fn parse(q: Option<String>) -> Result<Query, Box<Response>> {
    Query::parse(q.as_deref().unwrap_or(""))
        .map_err(|e: QueryError| Box::new(failure(StatusCode::BAD_REQUEST, &e)))
}

/// Where a started service listens.
#[derive(Debug, Clone, Copy)]
pub struct Bound {
    pub grpc: SocketAddr,
    pub http: SocketAddr,
}

/// Opens the store, binds both listeners and serves until `shutdown`
/// completes. `ready` hears the bound addresses (for port 0).
async fn serve(
    config: Config,
    ready: Option<tokio::sync::oneshot::Sender<Bound>>,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    use anyhow::Context;
    let writer = Store::open(&config.db)?;
    let held = writer.count()?;
    let writer = Arc::new(Mutex::new(writer));
    let (jobs, queue) = tokio::sync::mpsc::channel(64);
    {
        let writer = writer.clone();
        std::thread::Builder::new()
            .name("flow-writer".into())
            .spawn(move || write_groups(&writer, queue))
            .context("starting the writer thread")?;
    }
    let app = Arc::new(App {
        db: config.db.clone(),
        writer,
        jobs,
        readers: Mutex::new(Vec::new()),
        live: broadcast::channel(4096).0,
        metrics: Metrics::new(),
        stream_slots: Arc::new(Semaphore::new(STREAM_READERS)),
    });
    app.metrics.stored.set(held as i64);
    info!("flow store {} holds {held} records", config.db.display());

    let grpc = TcpListener::bind(config.grpc)
        .await
        .with_context(|| format!("binding {}", config.grpc))?;
    let http = TcpListener::bind(config.http)
        .await
        .with_context(|| format!("binding {}", config.http))?;
    let bound = Bound {
        grpc: grpc.local_addr()?,
        http: http.local_addr()?,
    };
    info!(
        "flow service: gRPC ingest on {}, HTTP on {}",
        bound.grpc, bound.http
    );

    let mut builder = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .concurrency_limit_per_connection(8);
    if let Some(tls) = &config.tls {
        let cert =
            std::fs::read(&tls.cert).with_context(|| format!("reading {}", tls.cert.display()))?;
        let key =
            std::fs::read(&tls.key).with_context(|| format!("reading {}", tls.key.display()))?;
        let ca = std::fs::read(&tls.client_ca)
            .with_context(|| format!("reading {}", tls.client_ca.display()))?;
        builder = builder.tls_config(
            ServerTlsConfig::new()
                .identity(Identity::from_pem(cert, key))
                .client_ca_root(Certificate::from_pem(ca)),
        )?;
    }
    let service =
        FlowCollectorServer::new(Ingest(app.clone())).max_decoding_message_size(MAX_MESSAGE);
    let grpc_task = builder
        .add_service(service)
        .serve_with_incoming(limit::incoming(grpc));

    let expiry = {
        let app = app.clone();
        let (raw, hourly) = (
            config.raw_retention.as_secs(),
            config.hourly_retention.as_secs(),
        );
        async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            loop {
                tick.tick().await;
                let a = app.clone();
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                let done = tokio::task::spawn_blocking(move || {
                    let mut w = a
                        .writer
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    let e = w.expire(now, raw, hourly)?;
                    Ok::<_, StoreError>((e, w.count()?))
                })
                .await;
                match done {
                    Ok(Ok((e, held))) => {
                        app.metrics.stored.set(held as i64);
                        if e.raw_deleted > 0 {
                            info!(
                                "flow store: {} raw records rolled into {} hourly ones",
                                e.raw_deleted, e.rolled_up
                            );
                        }
                    }
                    Ok(Err(e)) => warn!("flow store expiry: {e}"),
                    Err(e) => warn!("flow store expiry: {e}"),
                }
            }
        }
    };

    if let Some(ready) = ready {
        let _ = ready.send(bound);
    }
    tokio::select! {
        r = grpc_task => r.context("gRPC ingest")?,
        r = serve_http(http, router(app)) => r?,
        () = expiry => {}
        () = shutdown => info!("flow service stopping"),
    }
    Ok(())
}

/// Runs the service on this thread (with a runtime of `workers` threads)
/// until SIGTERM or SIGINT.
pub fn run_until_signal(config: Config, workers: usize) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers.max(1))
        .enable_all()
        .build()?
        .block_on(serve(config, None, async {
            let Ok(mut term) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            else {
                let _ = tokio::signal::ctrl_c().await;
                return;
            };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }))
}

/// A flow service on a thread of its own (tests, tools): stopped and
/// joined when dropped.
#[derive(Debug)]
pub struct Running {
    pub bound: Bound,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<anyhow::Result<()>>>,
}

impl Running {
    /// Starts the service with `config`; returns once it listens.
    pub fn start(config: Config) -> anyhow::Result<Running> {
        Running::start_with_workers(config, 2)
    }

    /// The same on a runtime of `workers` threads.
    pub fn start_with_workers(config: Config, workers: usize) -> anyhow::Result<Running> {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("flow-service".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(workers.max(1))
                    .max_blocking_threads(workers.max(1))
                    .enable_all()
                    .build()?;
                rt.block_on(async {
                    let (tx, rx) = tokio::sync::oneshot::channel();
                    let forward = async move {
                        if let Ok(b) = rx.await {
                            let _ = ready_tx.send(b);
                        }
                    };
                    let run = serve(config, Some(tx), async {
                        let _ = stop_rx.await;
                    });
                    tokio::join!(run, forward).0
                })
            })?;
        match ready_rx.recv() {
            Ok(bound) => Ok(Running {
                bound,
                stop: Some(stop_tx),
                thread: Some(thread),
            }),
            Err(_) => match thread.join() {
                Ok(Err(e)) => Err(e),
                _ => anyhow::bail!("the flow service did not start"),
            },
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Batches queued together are stored in one transaction, and each
    /// submitter gets back exactly its own records.
    #[test]
    fn the_writer_stores_waiting_batches_together_and_answers_each() {
        let dir = tempfile::tempdir().expect("dir");
        let store = Mutex::new(Store::open(&dir.path().join("f.db")).expect("store"));
        let (jobs, queue) = tokio::sync::mpsc::channel(8);
        let mut answers = Vec::new();
        for (node, n) in [("a", 2), ("b", 3), ("c", 1)] {
            let (done, answer) = tokio::sync::oneshot::channel();
            let flows = (0..n)
                .map(|_| Flow {
                    node: node.into(),
                    ..sample()
                })
                .collect();
            jobs.blocking_send(Job { flows, done }).expect("queued");
            answers.push((node, n, answer));
        }
        drop(jobs);
        write_groups(&store, queue);
        for (node, n, answer) in answers {
            let flows = answer.blocking_recv().expect("answered").expect("stored");
            assert_eq!(flows.len(), n);
            assert!(flows.iter().all(|f| f.node == node));
        }
        let held = store.lock().expect("lock").count().expect("count");
        assert_eq!(held, 6);
    }
}
