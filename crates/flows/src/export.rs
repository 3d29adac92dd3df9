//! The node's side of the flow service: records offered by the collector
//! wait in a bounded buffer and are streamed to the service by a thread of
//! their own. Offering never blocks and never fails: when the service is
//! slow or away the buffer fills, the oldest records are dropped and
//! counted, and the dataplane does not notice. A batch leaves the buffer
//! for good only when the service acknowledged it; batches in flight when
//! a stream breaks are sent again (at least once).

use crate::proto::flow_collector_client::FlowCollectorClient;
use crate::proto::FlowBatch;
use crate::record::Flow;
use crate::wire::to_wire;
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
use tracing::{info, warn};

/// Records per batch.
pub const BATCH: usize = 500;
/// Batches sent and not yet acknowledged.
const IN_FLIGHT: usize = 8;
/// A stream whose oldest batch waits this long for its acknowledgement is
/// given up and opened again.
const ACK_TIMEOUT: Duration = Duration::from_secs(30);

/// Client certificate and the CA that signs the service's (mTLS).
#[derive(Debug, Clone)]
pub struct ClientTls {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The name the service's certificate must carry (default: the host of `server`).
    pub server_name: Option<String>,
}

#[derive(Debug, Clone)]
pub struct ExportConfig {
    /// `host:port` (or a URL) of the flow service's gRPC ingest.
    pub server: String,
    /// This node's name, sent with every batch.
    pub node: String,
    /// Records buffered at most (not counting the batches in flight).
    pub capacity: usize,
    pub tls: Option<ClientTls>,
}

/// What the exporter did, for the node's metrics.
#[derive(Debug, Default)]
pub struct ExportStats {
    /// Records the service acknowledged as stored.
    pub sent: AtomicU64,
    /// Records the service refused (failed its checks).
    pub refused: AtomicU64,
    /// Records dropped because the buffer was full.
    pub dropped: AtomicU64,
    /// Records waiting (buffered and in flight).
    pub buffered: AtomicU64,
    pub connected: AtomicBool,
}

#[derive(Debug)]
struct Shared {
    buffer: Mutex<VecDeque<Flow>>,
    wake: tokio::sync::Notify,
    stats: ExportStats,
    capacity: usize,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Flow>> {
        self.buffer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Drops the oldest records beyond capacity; counts them.
    fn trim(&self, buf: &mut VecDeque<Flow>) {
        while buf.len() > self.capacity {
            buf.pop_front();
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Streams offered records to the flow service.
#[derive(Debug, Clone)]
pub struct Exporter {
    shared: Arc<Shared>,
}

impl Exporter {
    /// Starts the sending thread. Connection problems are retried for
    /// ever (with back-off) and logged, never returned.
    pub fn start(config: ExportConfig) -> std::io::Result<Exporter> {
        let shared = Arc::new(Shared {
            buffer: Mutex::new(VecDeque::new()),
            wake: tokio::sync::Notify::new(),
            stats: ExportStats::default(),
            capacity: config.capacity.max(1),
        });
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let s = shared.clone();
        std::thread::Builder::new()
            .name("flow-export".into())
            .spawn(move || runtime.block_on(run(s, config)))?;
        Ok(Exporter { shared })
    }

    /// Queues records for the service; never blocks.
    pub fn offer(&self, flows: impl IntoIterator<Item = Flow>) {
        let mut buf = self.shared.lock();
        buf.extend(flows);
        self.shared.trim(&mut buf);
        drop(buf);
        self.shared.wake.notify_one();
    }

    pub fn stats(&self) -> &ExportStats {
        &self.shared.stats
    }
}

fn endpoint(config: &ExportConfig) -> Result<Endpoint, Box<dyn std::error::Error + Send + Sync>> {
    let scheme = if config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let url = if config.server.contains("://") {
        config.server.clone()
    } else {
        format!("{scheme}://{}", config.server)
    };
    let mut ep = Endpoint::from_shared(url)?
        .connect_timeout(Duration::from_secs(5))
        .tcp_keepalive(Some(Duration::from_secs(30)))
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10));
    if let Some(tls) = &config.tls {
        let mut c = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(std::fs::read(&tls.ca)?))
            .identity(Identity::from_pem(
                std::fs::read(&tls.cert)?,
                std::fs::read(&tls.key)?,
            ));
        if let Some(name) = &tls.server_name {
            c = c.domain_name(name.clone());
        }
        ep = ep.tls_config(c)?;
    }
    Ok(ep)
}

async fn run(shared: Arc<Shared>, config: ExportConfig) {
    let mut in_flight: VecDeque<(u64, Vec<Flow>)> = VecDeque::new();
    let mut sequence = 0u64;
    let mut backoff = Duration::from_millis(500);
    loop {
        match stream(
            &shared,
            &config,
            &mut in_flight,
            &mut sequence,
            &mut backoff,
        )
        .await
        {
            Ok(()) => info!("flow service closed the stream"),
            Err(e) => warn!("flow service {}: {e}", config.server),
        }
        shared.stats.connected.store(false, Ordering::Relaxed);
        // What was in flight goes back to the front, oldest first.
        {
            let mut buf = shared.lock();
            for (_, batch) in in_flight.drain(..).rev() {
                for f in batch.into_iter().rev() {
                    buf.push_front(f);
                }
            }
            shared.trim(&mut buf);
            shared
                .stats
                .buffered
                .store(buf.len() as u64, Ordering::Relaxed);
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

type Failure = Box<dyn std::error::Error + Send + Sync>;

async fn stream(
    shared: &Shared,
    config: &ExportConfig,
    in_flight: &mut VecDeque<(u64, Vec<Flow>)>,
    sequence: &mut u64,
    backoff: &mut Duration,
) -> Result<(), Failure> {
    let channel = endpoint(config)?.connect().await?;
    let mut client = FlowCollectorClient::new(channel);
    let (tx, rx) = tokio::sync::mpsc::channel::<FlowBatch>(IN_FLIGHT);
    let mut acks = client
        .push(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?
        .into_inner();
    shared.stats.connected.store(true, Ordering::Relaxed);
    *backoff = Duration::from_millis(500);
    let mut oldest_sent = tokio::time::Instant::now();
    loop {
        while in_flight.len() < IN_FLIGHT {
            let batch: Vec<Flow> = {
                let mut buf = shared.lock();
                let n = buf.len().min(BATCH);
                buf.drain(..n).collect()
            };
            if batch.is_empty() {
                break;
            }
            *sequence += 1;
            if in_flight.is_empty() {
                oldest_sent = tokio::time::Instant::now();
            }
            let wire = FlowBatch {
                node: config.node.clone(),
                sequence: *sequence,
                flows: batch.iter().map(to_wire).collect(),
            };
            in_flight.push_back((*sequence, batch));
            tx.send(wire).await.map_err(|_| "the stream ended")?;
        }
        let waiting: usize = in_flight.iter().map(|(_, b)| b.len()).sum();
        shared
            .stats
            .buffered
            .store((shared.lock().len() + waiting) as u64, Ordering::Relaxed);
        let deadline = oldest_sent + ACK_TIMEOUT;
        tokio::select! {
            () = shared.wake.notified() => {}
            ack = acks.message() => {
                let Some(ack) = ack? else { return Ok(()) };
                while in_flight.front().is_some_and(|(s, _)| *s <= ack.sequence) {
                    in_flight.pop_front();
                    oldest_sent = tokio::time::Instant::now();
                }
                shared.stats.sent.fetch_add(ack.stored, Ordering::Relaxed);
                shared.stats.refused.fetch_add(ack.refused, Ordering::Relaxed);
            }
            () = tokio::time::sleep_until(deadline), if !in_flight.is_empty() => {
                return Err("no acknowledgement within 30 s".into());
            }
        }
    }
}
