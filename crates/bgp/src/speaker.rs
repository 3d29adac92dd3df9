//! The speaker's shell: one thread with a current-thread tokio runtime
//! feeds the [`Core`] its inputs (commands, accepted and connected
//! streams, session events, timers) and carries out the actions it returns:
//! connect attempts, a task per TCP connection, timers, the listener's MD5
//! keys. Kernel route changes go to a [`Fib`] on a thread of its own, in
//! batches. Everything decided is decided in `core`; only I/O is here.
// The tokio shell of the speaker: it owns the timers and stamps status times.
#![allow(clippy::disallowed_methods)]

use crate::config::{PeerConfig, PeerStatus, SpeakerConfig};
use crate::core::{Action, Core, Input, StreamId, Timer};
use crate::rib::{FibOp, PeerId};
use crate::session::{self, ConnId, FromSession, SessionEvent};
use ipnet::IpNet;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

mod outbox;

use outbox::Outbox;

/// Socket receive buffer for BGP connections (the kernel caps it at
/// `net.core.rmem_max` unless raised).
const RECV_BUFFER: u32 = 4 << 20;

/// Where learned routes go: the kernel, in calico-node.
pub trait Fib: Send + 'static {
    /// Applies route changes, in order.
    fn apply(&mut self, ops: &[FibOp]);
    /// Every peer has sent its routes once (End-of-RIB) or the restart time
    /// ran out: routes left from before this speaker started may go.
    fn converged(&mut self) {}
}

#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Status {
    pub router_id: String,
    pub local_as: u32,
    pub peers: Vec<PeerStatus>,
    /// Routes installed from peers.
    pub installed: usize,
}

/// The running speaker. Dropping it stops the speaker (its peers get a
/// Cease).
pub struct Speaker {
    tx: mpsc::UnboundedSender<Event>,
    status: Arc<Mutex<Status>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for Speaker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Speaker")
    }
}

impl Speaker {
    /// Starts the speaker (binding the listener first, so a busy port is an
    /// error here).
    pub fn start(cfg: SpeakerConfig, fib: Box<dyn Fib>) -> std::io::Result<Speaker> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let listener = match cfg.listen {
            Some(addr) => {
                let _g = rt.enter();
                let sock = if addr.is_ipv4() {
                    TcpSocket::new_v4()?
                } else {
                    TcpSocket::new_v6()?
                };
                sock.set_reuseaddr(true)?;
                // A large receive buffer (inherited by accepted sockets)
                // lets a peer send a full table without stalling.
                let _ = sock.set_recv_buffer_size(RECV_BUFFER);
                sock.bind(addr)?;
                Some(sock.listen(128)?)
            }
            None => None,
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let status = Arc::new(Mutex::new(Status {
            router_id: cfg.router_id.to_string(),
            local_as: cfg.local_as,
            ..Status::default()
        }));
        let (fib_tx, fib_rx) = std::sync::mpsc::channel::<FibWork>();
        let fib_tx = FibQueue {
            tx: fib_tx,
            backlog: Arc::new(AtomicUsize::new(0)),
        };
        let (backlog, wake) = (Arc::clone(&fib_tx.backlog), tx.clone());
        std::thread::Builder::new()
            .name("bgp-fib".into())
            .spawn(move || fib_thread(fib, &fib_rx, &backlog, &wake))?;
        let loop_tx = tx.clone();
        let loop_status = Arc::clone(&status);
        let thread = std::thread::Builder::new()
            .name("bgp".into())
            .spawn(move || {
                rt.block_on(async move {
                    let listener_fd = listener.as_ref().and_then(|l| {
                        use std::os::fd::AsFd;
                        l.as_fd().try_clone_to_owned().ok()
                    });
                    if let Some(l) = listener {
                        tokio::spawn(accept(l, loop_tx.clone()));
                    }
                    let (stx, srx) = mpsc::channel(EVENTS_QUEUE);
                    Shell::new(cfg, loop_tx, stx, listener_fd, loop_status, fib_tx)
                        .run(rx, srx)
                        .await;
                });
            })?;
        Ok(Speaker {
            tx,
            status,
            thread: Some(thread),
        })
    }

    /// Replaces the set of peers: new ones are connected, removed ones
    /// closed (Cease, peer de-configured), changed ones restarted.
    pub fn set_peers(&self, peers: Vec<PeerConfig>) {
        let _ = self.tx.send(Event::Command(Command::SetPeers(peers)));
    }

    /// Replaces the prefixes this speaker originates.
    pub fn set_local(&self, prefixes: BTreeSet<IpNet>) {
        let _ = self.tx.send(Event::Command(Command::SetLocal(prefixes)));
    }

    /// Prefixes whose learned routes stay in the RIB (and are passed on to
    /// peers) but are not installed: someone else routes them (the node
    /// agent, for VXLAN pools). Those installed are taken out, those no
    /// longer excluded put back.
    pub fn set_kernel_exclusions(&self, nets: Vec<IpNet>) {
        let _ = self.tx.send(Event::Command(Command::SetExcluded(nets)));
    }

    /// The live status, shared (it changes as the speaker runs).
    pub fn status_source(&self) -> Arc<Mutex<Status>> {
        Arc::clone(&self.status)
    }

    pub fn status(&self) -> Status {
        self.status
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Closes every session with a Cease and stops.
    pub fn stop(mut self) {
        self.shutdown(false);
    }

    /// Stops for a restart: sessions are dropped without a NOTIFICATION, so
    /// peers that support graceful restart keep forwarding to our routes
    /// until the next run has sent them again. The kernel keeps the routes
    /// this speaker installed.
    pub fn stop_for_restart(mut self) {
        self.shutdown(true);
    }

    fn shutdown(&mut self, restart: bool) {
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        if self
            .tx
            .send(Event::Command(Command::Stop {
                done: done_tx,
                restart,
            }))
            .is_ok()
        {
            let _ = done_rx.recv_timeout(Duration::from_secs(5));
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Speaker {
    fn drop(&mut self) {
        self.shutdown(false);
    }
}

enum FibWork {
    Ops(Vec<FibOp>),
    Converged,
    /// Answered once everything before it is applied.
    Barrier(std::sync::mpsc::Sender<()>),
}

/// Route changes applied at a time: a burst (a full feed arriving) goes to
/// the kernel in pieces.
const FIB_BATCH: usize = 4096;
/// Route changes waiting for the kernel at most: beyond this the speaker
/// stops taking UPDATEs from its sessions (TCP slows the peers) until the
/// kernel has caught up, so a full feed never waits in memory whole.
pub const FIB_BACKLOG: usize = 4 * FIB_BATCH;

/// The way to the FIB thread, with the count of route changes sent and not
/// yet applied.
struct FibQueue {
    tx: std::sync::mpsc::Sender<FibWork>,
    backlog: Arc<AtomicUsize>,
}

impl FibQueue {
    fn send(&self, w: FibWork) {
        if let FibWork::Ops(ops) = &w {
            self.backlog.fetch_add(ops.len(), Ordering::Relaxed);
        }
        let _ = self.tx.send(w);
    }
    fn behind(&self) -> bool {
        self.backlog.load(Ordering::Relaxed) >= FIB_BACKLOG
    }
}

fn fib_thread(
    mut fib: Box<dyn Fib>,
    rx: &std::sync::mpsc::Receiver<FibWork>,
    backlog: &AtomicUsize,
    wake: &mpsc::UnboundedSender<Event>,
) {
    let flush = |fib: &mut Box<dyn Fib>, ops: &mut Vec<FibOp>| {
        if ops.is_empty() {
            return;
        }
        let t = std::time::Instant::now();
        fib.apply(ops);
        debug!("FIB: {} changes in {:?}", ops.len(), t.elapsed());
        let before = backlog.fetch_sub(ops.len(), Ordering::Relaxed);
        if before >= FIB_BACKLOG && before - ops.len() < FIB_BACKLOG {
            // The speaker may be waiting for the kernel to catch up.
            let _ = wake.send(Event::FibCaughtUp);
        }
        ops.clear();
    };
    let mut ops = Vec::new();
    while let Ok(first) = rx.recv() {
        let mut converged = false;
        let mut barriers = Vec::new();
        let mut next = Some(first);
        while let Some(w) = next {
            match w {
                FibWork::Ops(o) => {
                    ops.extend(o);
                    if ops.len() >= FIB_BATCH {
                        flush(&mut fib, &mut ops);
                    }
                }
                FibWork::Converged => converged = true,
                FibWork::Barrier(b) => barriers.push(b),
            }
            next = rx.try_recv().ok();
        }
        flush(&mut fib, &mut ops);
        if converged {
            fib.converged();
        }
        for b in barriers {
            let _ = b.send(());
        }
    }
}

async fn accept(l: TcpListener, tx: mpsc::UnboundedSender<Event>) {
    loop {
        match l.accept().await {
            Ok((s, addr)) => {
                if tx.send(Event::Accepted(s, addr)).is_err() {
                    return;
                }
            }
            Err(e) => {
                warn!("BGP listener: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Batches queued for one session at most: a peer that reads slower than
/// the routes change is dropped (and resynced when it reconnects), never
/// allowed to grow the speaker's memory.
const SESSION_QUEUE: usize = 64;
/// Session events (chiefly received UPDATEs) waiting for the main loop;
/// when full, sessions stop reading and TCP slows their peers.
const EVENTS_QUEUE: usize = 256;

enum Command {
    SetPeers(Vec<PeerConfig>),
    SetLocal(BTreeSet<IpNet>),
    SetExcluded(Vec<IpNet>),
    /// Stop; with `restart`, without telling peers (they keep our routes
    /// for the restart time while the next run comes up).
    Stop {
        done: std::sync::mpsc::Sender<()>,
        restart: bool,
    },
}

#[allow(clippy::large_enum_variant)] // each is moved once through a channel
enum Event {
    Command(Command),
    Session(FromSession),
    Accepted(TcpStream, SocketAddr),
    Connected(PeerId, u64, std::io::Result<TcpStream>),
    Timer(Timer),
    /// The kernel has caught up with the route changes sent to it.
    FibCaughtUp,
}

struct Shell {
    core: Core,
    tx: mpsc::UnboundedSender<Event>,
    /// Where sessions report (bounded: see EVENTS_QUEUE).
    sessions: mpsc::Sender<FromSession>,
    /// A copy of the listening socket, for the peers' MD5 keys.
    listener: Option<std::os::fd::OwnedFd>,
    status: Arc<Mutex<Status>>,
    fib: FibQueue,
    outboxes: BTreeMap<ConnId, Outbox>,
    /// Streams handed to the core, until it starts a session on them.
    streams: BTreeMap<StreamId, TcpStream>,
    next_stream: StreamId,
    /// Sessions waiting to hear whether their OPEN is admitted.
    replies: BTreeMap<ConnId, oneshot::Sender<bool>>,
}

impl Shell {
    fn new(
        cfg: SpeakerConfig,
        tx: mpsc::UnboundedSender<Event>,
        sessions: mpsc::Sender<FromSession>,
        listener: Option<std::os::fd::OwnedFd>,
        status: Arc<Mutex<Status>>,
        fib: FibQueue,
    ) -> Self {
        Shell {
            core: Core::new(cfg),
            tx,
            sessions,
            listener,
            status,
            fib,
            outboxes: BTreeMap::new(),
            streams: BTreeMap::new(),
            next_stream: 1,
            replies: BTreeMap::new(),
        }
    }

    async fn run(
        mut self,
        mut rx: mpsc::UnboundedReceiver<Event>,
        mut sessions: mpsc::Receiver<FromSession>,
    ) {
        let start = self.core.start();
        self.execute(start);
        let mut drain = tokio::time::interval(Duration::from_millis(20));
        drain.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let ev = tokio::select! {
                ev = rx.recv() => match ev {
                    Some(ev) => ev,
                    None => return,
                },
                // Not while the kernel is far behind (see FIB_BACKLOG).
                Some(s) = sessions.recv(), if !self.fib.behind() => Event::Session(s),
                _ = drain.tick(), if self.outboxes.values().any(|c| !c.backlog.is_empty() || c.eor_after.is_some()) => {
                    for c in self.outboxes.values_mut() {
                        c.flush();
                    }
                    continue;
                }
            };
            if matches!(ev, Event::FibCaughtUp) {
                continue;
            }
            if let Event::Command(Command::Stop { done, restart }) = ev {
                let actions = self.core.stop(restart);
                self.execute(actions);
                let (btx, brx) = std::sync::mpsc::channel();
                self.fib.send(FibWork::Barrier(btx));
                let _ =
                    tokio::task::spawn_blocking(move || brx.recv_timeout(Duration::from_secs(10)))
                        .await;
                // Let the sessions send their Cease.
                tokio::time::sleep(Duration::from_millis(50)).await;
                let _ = done.send(());
                return;
            }
            let (input, closed) = self.input(ev);
            let actions = self.core.handle(input, now_secs());
            self.execute(actions);
            // A stream the core did not take is closed here.
            self.streams.clear();
            if let Some(conn) = closed {
                self.outboxes.remove(&conn);
                self.replies.remove(&conn);
            }
            self.publish();
        }
    }

    fn stream(&mut self, s: TcpStream) -> StreamId {
        let id = self.next_stream;
        self.next_stream += 1;
        self.streams.insert(id, s);
        id
    }

    /// The core's input for an event (and the connection it closes).
    fn input(&mut self, ev: Event) -> (Input, Option<ConnId>) {
        let input = match ev {
            Event::Command(Command::SetPeers(list)) => Input::SetPeers(list),
            Event::Command(Command::SetLocal(p)) => Input::SetLocal(p),
            Event::Command(Command::SetExcluded(n)) => Input::SetExcluded(n),
            Event::Command(Command::Stop { .. }) => unreachable!("handled by run"),
            Event::Accepted(s, from) => Input::Accepted {
                stream: self.stream(s),
                from: from.ip(),
            },
            Event::Connected(peer, epoch, result) => Input::Connected {
                peer,
                epoch,
                result: result.map(|s| self.stream(s)).map_err(|e| e.to_string()),
            },
            Event::Timer(t) => Input::Timer(t),
            Event::FibCaughtUp => unreachable!("handled by run"),
            Event::Session(FromSession { event, reply }) => {
                let closed = match &event {
                    SessionEvent::Opened { conn, .. } => {
                        if let Some(reply) = reply {
                            self.replies.insert(*conn, reply);
                        }
                        None
                    }
                    SessionEvent::Closed { conn, .. } => Some(*conn),
                    _ => None,
                };
                return (Input::Session(event), closed);
            }
        };
        (input, None)
    }

    fn execute(&mut self, actions: Vec<Action>) {
        for a in actions {
            match a {
                Action::Connect { peer, epoch, cfg } => self.connect(peer, epoch, cfg),
                Action::StartSession {
                    stream,
                    conn,
                    peer,
                    expected_as,
                    local,
                } => {
                    let Some(stream) = self.streams.remove(&stream) else {
                        continue;
                    };
                    let (ctx, crx) = mpsc::channel(SESSION_QUEUE);
                    let kill = Arc::new(tokio::sync::Notify::new());
                    self.outboxes.insert(
                        conn,
                        Outbox {
                            peer,
                            tx: ctx,
                            kill: Arc::clone(&kill),
                            backlog: BTreeMap::new(),
                            eor_after: None,
                        },
                    );
                    let wiring = session::Wiring {
                        events: self.sessions.clone(),
                        commands: crx,
                        kill,
                    };
                    tokio::spawn(session::run(stream, peer, expected_as, conn, local, wiring));
                }
                Action::Admit { conn, ok } => {
                    if let Some(reply) = self.replies.remove(&conn) {
                        let _ = reply.send(ok);
                    }
                }
                Action::Send { conn, msg } => {
                    if let Some(o) = self.outboxes.get_mut(&conn) {
                        o.push(msg);
                    }
                }
                Action::After { wait, timer } => {
                    let tx = self.tx.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(wait).await;
                        let _ = tx.send(Event::Timer(timer));
                    });
                }
                Action::Fib(ops) => {
                    if !ops.is_empty() {
                        self.fib.send(FibWork::Ops(ops));
                    }
                }
                Action::FibConverged => {
                    self.fib.send(FibWork::Converged);
                }
                Action::ListenerKey { peer, key } => self.listener_key(peer, key.as_deref()),
            }
        }
    }

    fn connect(&self, peer: PeerId, epoch: u64, cfg: PeerConfig) {
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let target = SocketAddr::new(cfg.addr, cfg.port);
            let attempt = async {
                let sock = if cfg.addr.is_ipv4() {
                    TcpSocket::new_v4()?
                } else {
                    TcpSocket::new_v6()?
                };
                let _ = sock.set_recv_buffer_size(RECV_BUFFER);
                if let Some(pw) = &cfg.password {
                    use std::os::fd::AsFd;
                    calico_tcp_md5::set_key(sock.as_fd(), cfg.addr, pw.as_bytes())?;
                }
                if let Some(local) = cfg.local_addr {
                    sock.bind(SocketAddr::new(local, 0))?;
                }
                sock.connect(target).await
            };
            let result = match tokio::time::timeout(Duration::from_secs(5), attempt).await {
                Ok(r) => r,
                Err(_) => Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "connect timed out",
                )),
            };
            let _ = tx.send(Event::Connected(peer, epoch, result));
        });
    }

    /// Sets (or with None removes) a peer's MD5 key on the listening
    /// socket: the kernel then drops that peer's unsigned segments.
    fn listener_key(&self, peer: PeerId, key: Option<&str>) {
        use std::os::fd::AsFd;
        let Some(l) = &self.listener else { return };
        let outcome = match key {
            Some(k) => calico_tcp_md5::set_key(l.as_fd(), peer, k.as_bytes()),
            None => calico_tcp_md5::clear_key(l.as_fd(), peer),
        };
        if let Err(e) = outcome {
            warn!("BGP {peer}: TCP MD5 key on the listener: {e}");
        }
    }

    fn publish(&self) {
        let (peers, installed) = self.core.status();
        let mut s = self
            .status
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        s.peers = peers;
        s.installed = installed;
    }
}
