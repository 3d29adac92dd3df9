//! The fan-out service: for each syncer type, one [`direct`](crate::direct)
//! syncer against the datastore whose state (every key's value, shared
//! between clients) and changes are served to any number of clients.
//!
//! A new client gets a snapshot (in chunks), the status, then the changes
//! as a broadcast. The broadcast is a bounded ring: a client that falls
//! more than [`ServerConfig::queue`] messages behind is disconnected
//! (counted as `slow`); it reconnects and takes a fresh snapshot. So the
//! service's memory is the state plus the ring, whatever the clients do.

// The shell: real time for send timeouts.
#![allow(clippy::disallowed_methods)]

use super::proto::typha_server::{Typha, TyphaServer};
use super::proto::{Hello, Kv, Status as WireStatus, SyncMessage};
use crate::{direct, SyncEvent, SyncStatus, SyncerType};
use calico_datastore::{Event, Store};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{broadcast, mpsc};
use tonic::transport::{Certificate, Identity, ServerTlsConfig};
use tonic::{Request, Response, Status};
use tracing::{info, warn};

/// Keys per message of changes.
const CHUNK: usize = 1000;
/// Bytes (keys and values) per message at most, unless one key alone is
/// bigger: a resource may be 1.5 MiB, and clients decode messages of up to
/// 64 MiB, so no batch of big resources can make a message they refuse.
const CHUNK_BYTES: usize = 4 << 20;
/// Keys per snapshot message (smaller: hundreds of clients may be taking
/// a snapshot at once, each with a few messages queued).
const SNAPSHOT_CHUNK: usize = 100;
/// A client that takes no message for this long is disconnected as slow.
const SEND_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest node name a client may give (a DNS subdomain).
const MAX_NODE: usize = 253;

/// The service's certificate and the CA its clients' certificates must
/// chain to (mTLS: a client without one is refused).
#[derive(Debug, Clone)]
pub struct ServerTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: PathBuf,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub tls: Option<ServerTls>,
    /// Messages a client may fall behind before it is disconnected.
    pub queue: usize,
    /// Clients served at once at most (Typha's MaxConnectionsUpperLimit).
    pub max_clients: usize,
}

impl ServerConfig {
    pub fn new(listen: SocketAddr) -> Self {
        ServerConfig {
            listen,
            tls: None,
            queue: 256,
            max_clients: 10_000,
        }
    }
}

/// What the service did, for its metrics.
#[derive(Debug, Default)]
pub struct ServerStats {
    /// Clients connected now.
    pub clients: AtomicU64,
    /// Clients served since start.
    pub connections: AtomicU64,
    /// Clients disconnected for falling behind.
    pub slow: AtomicU64,
    /// Clients refused (too many, bad hello).
    pub refused: AtomicU64,
    /// Keys sent in snapshots.
    pub snapshot_keys: AtomicU64,
    /// Update batches broadcast.
    pub batches: AtomicU64,
    /// Keys held, over all syncer types.
    pub keys: AtomicU64,
}

/// One syncer type's state, as served.
struct FeedState {
    values: HashMap<String, Kv>,
    status: SyncStatus,
    /// The values as one shared snapshot, built when a client first asks
    /// after a change; every client connecting meanwhile shares it.
    snapshot: Option<Arc<[Kv]>>,
}

struct Feed {
    state: Mutex<FeedState>,
    tx: broadcast::Sender<Arc<SyncMessage>>,
}

impl Feed {
    fn lock(&self) -> std::sync::MutexGuard<'_, FeedState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

pub(crate) fn wire_status(s: SyncStatus) -> WireStatus {
    match s {
        SyncStatus::WaitForDatastore => WireStatus::WaitForDatastore,
        SyncStatus::ResyncInProgress => WireStatus::ResyncInProgress,
        SyncStatus::InSync => WireStatus::InSync,
    }
}

pub(crate) fn to_kv(ev: &Event) -> Kv {
    match ev {
        Event::Put(kv) => Kv {
            key: kv.key.clone(),
            value: bytes::Bytes::copy_from_slice(&kv.value),
            deleted: false,
            mod_revision: kv.mod_revision,
            create_revision: kv.create_revision,
        },
        Event::Delete { key, mod_revision } => Kv {
            key: key.clone(),
            value: bytes::Bytes::new(),
            deleted: true,
            mod_revision: *mod_revision,
            create_revision: 0,
        },
    }
}

/// `kvs` in runs of at most `keys` keys and [`CHUNK_BYTES`] bytes (a key
/// bigger than that alone makes a run of one).
fn chunks(kvs: &[Kv], keys: usize) -> impl Iterator<Item = &[Kv]> {
    let mut rest = kvs;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut bytes = 0;
        let mut n = 0;
        while n < rest.len() && n < keys {
            let size = rest[n].key.len() + rest[n].value.len();
            if n > 0 && bytes + size > CHUNK_BYTES {
                break;
            }
            bytes += size;
            n += 1;
        }
        let (run, tail) = rest.split_at(n);
        rest = tail;
        Some(run)
    })
}

/// Keeps a feed's state from its syncer and broadcasts every change;
/// runs until the process ends.
fn pump(
    ty: SyncerType,
    syncer: &crate::Syncer,
    feed: &Feed,
    stats: &ServerStats,
    stop: &AtomicBool,
) {
    while !stop.load(Ordering::SeqCst) {
        let ev = match syncer.recv_timeout(Duration::from_millis(200)) {
            Ok(ev) => ev,
            Err(crate::RecvError::Timeout) => continue,
            Err(crate::RecvError::Closed) => return,
        };
        let mut state = feed.lock();
        let msgs: Vec<SyncMessage> = match ev {
            SyncEvent::Updates(evs) => {
                let updates: Vec<Kv> = evs.iter().map(to_kv).collect();
                state.snapshot = None;
                for kv in &updates {
                    if kv.deleted {
                        state.values.remove(&kv.key);
                    } else {
                        state.values.insert(kv.key.clone(), kv.clone());
                    }
                }
                // In chunks, as snapshots are: no message grows with the
                // size of a bulk change.
                chunks(&updates, CHUNK)
                    .map(|c| SyncMessage {
                        updates: c.to_vec(),
                        status: WireStatus::Unspecified.into(),
                    })
                    .collect()
            }
            SyncEvent::Status(s) => {
                info!("{ty} syncer: {s:?}");
                state.status = s;
                vec![SyncMessage {
                    updates: Vec::new(),
                    status: wire_status(s).into(),
                }]
            }
            SyncEvent::Error(e) => {
                warn!("{ty} syncer: {e}");
                continue;
            }
        };
        let held: usize = state.values.len();
        // Sent while the state is locked: a client subscribing now sees
        // either the state before these messages and then the messages,
        // or the state after them and not the messages.
        for msg in msgs {
            let _ = feed.tx.send(Arc::new(msg));
        }
        drop(state);
        stats.batches.fetch_add(1, Ordering::Relaxed);
        stats.keys.store(held as u64, Ordering::Relaxed);
    }
}

/// The running service.
#[derive(Clone)]
pub struct Service {
    feeds: Arc<HashMap<SyncerType, Arc<Feed>>>,
    stats: Arc<ServerStats>,
    queue: usize,
    max_clients: usize,
    /// Stops the syncers (set when a [`Running`] is killed).
    stop: Arc<AtomicBool>,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("stats", &self.stats)
            .finish()
    }
}

impl Service {
    /// Starts a syncer for every type against `store`.
    pub fn new(store: &Arc<dyn Store>, config: &ServerConfig) -> Self {
        let stats = Arc::new(ServerStats::default());
        let stop = Arc::new(AtomicBool::new(false));
        let mut feeds = HashMap::new();
        for ty in SyncerType::ALL {
            let (tx, _) = broadcast::channel(config.queue.max(1));
            let feed = Arc::new(Feed {
                state: Mutex::new(FeedState {
                    values: HashMap::new(),
                    status: SyncStatus::WaitForDatastore,
                    snapshot: None,
                }),
                tx,
            });
            let syncer = direct::start(Arc::clone(store), ty);
            let f = Arc::clone(&feed);
            let s = Arc::clone(&stats);
            let halt = Arc::clone(&stop);
            let _ = std::thread::Builder::new()
                .name(format!("typha-{ty}"))
                .spawn(move || pump(ty, &syncer, &f, &s, &halt));
            feeds.insert(ty, feed);
        }
        Service {
            feeds: Arc::new(feeds),
            stats,
            queue: config.queue,
            max_clients: config.max_clients,
            stop,
        }
    }

    pub fn stats(&self) -> Arc<ServerStats> {
        Arc::clone(&self.stats)
    }

    /// Serves on `listener` until the runtime ends.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        config: &ServerConfig,
    ) -> anyhow::Result<()> {
        let mut builder = tonic::transport::Server::builder()
            .tcp_keepalive(Some(Duration::from_secs(30)))
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .http2_keepalive_timeout(Some(Duration::from_secs(10)));
        if let Some(tls) = &config.tls {
            use anyhow::Context;
            let read =
                |p: &PathBuf| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
            builder = builder.tls_config(
                ServerTlsConfig::new()
                    .identity(Identity::from_pem(read(&tls.cert)?, read(&tls.key)?))
                    .client_ca_root(Certificate::from_pem(read(&tls.client_ca)?)),
            )?;
        }
        if config.tls.is_none() {
            warn!(
                "serving without TLS: any client that reaches {} reads the cluster's policy and endpoints (set a server certificate, key and client CA)",
                config.listen
            );
        }
        builder
            .add_service(TyphaServer::new(self))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await?;
        Ok(())
    }
}

/// A service running on a runtime of its own.
#[derive(Debug)]
pub struct Running {
    runtime: Option<tokio::runtime::Runtime>,
    stop: Arc<AtomicBool>,
    pub addr: SocketAddr,
    pub stats: Arc<ServerStats>,
}

impl Running {
    /// Binds `config.listen` (port 0: any) and serves from two worker threads.
    pub fn start(store: &Arc<dyn Store>, config: &ServerConfig) -> anyhow::Result<Running> {
        use anyhow::Context;
        let listener = std::net::TcpListener::bind(config.listen)
            .with_context(|| format!("listening on {}", config.listen))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("typha")
            .enable_all()
            .build()?;
        let service = Service::new(store, config);
        let stats = service.stats();
        let stop = Arc::clone(&service.stop);
        let config = config.clone();
        let listener = {
            let _guard = runtime.enter();
            tokio::net::TcpListener::from_std(listener)?
        };
        runtime.spawn(async move {
            if let Err(e) = service.serve(listener, &config).await {
                tracing::error!("fan-out service: {e:#}");
            }
        });
        Ok(Running {
            runtime: Some(runtime),
            stop,
            addr,
            stats,
        })
    }

    /// Stops at once: every connection drops, the syncers stop (as if
    /// the process died).
    pub fn kill(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.halt();
    }
}

/// Why a client's stream ended.
enum Slow {
    /// The client went away.
    Gone,
    /// It fell behind (the reason).
    Behind(String),
}

/// One client's stream.
struct Client {
    node: String,
    tx: mpsc::Sender<Result<SyncMessage, Status>>,
    changes: broadcast::Receiver<Arc<SyncMessage>>,
    queue: usize,
    stats: Arc<ServerStats>,
}

impl Client {
    /// The snapshot, the status, then every change, until the client goes
    /// or falls behind.
    async fn serve(&mut self, snapshot: Arc<[Kv]>, status: SyncStatus) -> Result<(), Slow> {
        let n = snapshot.len() as u64;
        // One small chunk at a time is copied out of the shared snapshot,
        // so a client costs a few chunks of memory however big the state.
        for chunk in chunks(&snapshot, SNAPSHOT_CHUNK) {
            self.send(SyncMessage {
                updates: chunk.to_vec(),
                status: WireStatus::Unspecified.into(),
            })
            .await?;
        }
        self.stats.snapshot_keys.fetch_add(n, Ordering::Relaxed);
        self.send(SyncMessage {
            updates: Vec::new(),
            status: wire_status(status).into(),
        })
        .await?;
        loop {
            match self.changes.recv().await {
                Ok(msg) => self.send((*msg).clone()).await?,
                Err(broadcast::error::RecvError::Lagged(behind)) => {
                    return Err(Slow::Behind(format!(
                        "fell {behind} messages behind (queue {})",
                        self.queue
                    )))
                }
                Err(broadcast::error::RecvError::Closed) => return Err(Slow::Gone),
            }
        }
    }

    /// Sends one message once the client has room for it. While it has
    /// none, the changes it has not taken are watched: a client a whole
    /// queue behind, or that took nothing for [`SEND_TIMEOUT`], is slow.
    async fn send(&mut self, msg: SyncMessage) -> Result<(), Slow> {
        let waiting = std::time::Instant::now();
        loop {
            tokio::select! {
                permit = self.tx.reserve() => {
                    let permit = permit.map_err(|_| Slow::Gone)?;
                    permit.send(Ok(msg));
                    return Ok(());
                }
                () = tokio::time::sleep(Duration::from_millis(100)) => {
                    if self.changes.len() >= self.queue {
                        return Err(Slow::Behind(format!(
                            "is a whole queue ({}) of changes behind",
                            self.queue
                        )));
                    }
                    if waiting.elapsed() >= SEND_TIMEOUT {
                        return Err(Slow::Behind(format!("took nothing for {SEND_TIMEOUT:?}")));
                    }
                }
            }
        }
    }
}

/// Counts a client while it is connected.
struct Connected(Arc<ServerStats>);

impl Drop for Connected {
    fn drop(&mut self) {
        self.0.clients.fetch_sub(1, Ordering::Relaxed);
    }
}

type SyncStream = Pin<Box<dyn futures_util::Stream<Item = Result<SyncMessage, Status>> + Send>>;

#[tonic::async_trait]
impl Typha for Service {
    type SyncStream = SyncStream;

    async fn sync(&self, request: Request<Hello>) -> Result<Response<SyncStream>, Status> {
        let hello = request.into_inner();
        let refuse = |why: Status| {
            self.stats.refused.fetch_add(1, Ordering::Relaxed);
            Err(why)
        };
        if hello.node.is_empty() || hello.node.len() > MAX_NODE {
            return refuse(Status::invalid_argument(
                "the hello must name the client's node",
            ));
        }
        let Some(ty) = SyncerType::from_name(&hello.syncer) else {
            return refuse(Status::invalid_argument(format!(
                "unknown syncer type {:?}",
                hello.syncer.chars().take(64).collect::<String>()
            )));
        };
        let Some(feed) = self.feeds.get(&ty).map(Arc::clone) else {
            return refuse(Status::unimplemented(format!("no {ty} syncer here")));
        };
        if self.stats.clients.fetch_add(1, Ordering::Relaxed) as usize >= self.max_clients {
            self.stats.clients.fetch_sub(1, Ordering::Relaxed);
            return refuse(Status::resource_exhausted("too many clients"));
        }
        let connected = Connected(Arc::clone(&self.stats));
        self.stats.connections.fetch_add(1, Ordering::Relaxed);
        let (snapshot, status, changes) = {
            let mut state = feed.lock();
            let snapshot = match &state.snapshot {
                Some(s) => Arc::clone(s),
                None => {
                    let s: Arc<[Kv]> = state.values.values().cloned().collect();
                    state.snapshot = Some(Arc::clone(&s));
                    s
                }
            };
            (snapshot, state.status, feed.tx.subscribe())
        };
        let node = hello.node;
        info!("client {node} ({ty}): sending {} keys", snapshot.len());
        let stats = Arc::clone(&self.stats);
        let (tx, rx) = mpsc::channel::<Result<SyncMessage, Status>>(2);
        let queue = self.queue;
        tokio::spawn(async move {
            let _connected = connected;
            let mut client = Client {
                node,
                tx,
                changes,
                queue,
                stats,
            };
            if let Err(Slow::Behind(why)) = client.serve(snapshot, status).await {
                warn!("client {} ({ty}) {why}; disconnecting it", client.node);
                client.stats.slow.fetch_add(1, Ordering::Relaxed);
                let _ = client.tx.try_send(Err(Status::resource_exhausted(format!(
                    "{why}: reconnect for a fresh snapshot"
                ))));
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(n: usize, size: usize) -> Kv {
        Kv {
            key: format!("/k/{n}"),
            value: bytes::Bytes::from(vec![b'x'; size]),
            deleted: false,
            mod_revision: 1,
            create_revision: 1,
        }
    }

    #[test]
    fn messages_stay_under_the_byte_limit_and_keep_every_key_in_order() {
        let big = 1536 * 1024;
        let kvs: Vec<Kv> = (0..100)
            .map(|n| kv(n, if n % 3 == 0 { big } else { 10 }))
            .chain([kv(100, 10 << 20)])
            .collect();
        let runs: Vec<&[Kv]> = chunks(&kvs, 1000).collect();
        let keys: Vec<&str> = runs
            .iter()
            .flat_map(|r| r.iter().map(|k| k.key.as_str()))
            .collect();
        let want: Vec<String> = (0..=100).map(|n| format!("/k/{n}")).collect();
        assert_eq!(keys, want.iter().map(String::as_str).collect::<Vec<_>>());
        for r in &runs {
            let bytes: usize = r.iter().map(|k| k.key.len() + k.value.len()).sum();
            assert!(
                r.len() == 1 || bytes <= CHUNK_BYTES,
                "{} keys, {bytes} bytes",
                r.len()
            );
        }
        // The 10 MiB key travels alone.
        assert_eq!(runs.last().map(|r| r.len()), Some(1));
        // And by count.
        let small: Vec<Kv> = (0..250).map(|n| kv(n, 1)).collect();
        assert_eq!(
            chunks(&small, 100).map(<[Kv]>::len).collect::<Vec<_>>(),
            [100, 100, 50]
        );
        assert_eq!(chunks(&[], 100).count(), 0);
    }
}
