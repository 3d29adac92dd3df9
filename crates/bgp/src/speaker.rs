//! The speaker's shell: one thread with a current-thread tokio runtime runs
//! the main loop (the RIB, peers, collision detection, graceful restart
//! timers), a task per TCP connection, and a listener. Kernel route changes
//! go to a [`Fib`] on a thread of its own, in batches.
// The tokio shell of the speaker: it owns the timers and stamps status times.
#![allow(clippy::disallowed_methods)]

use crate::rib::{Announce, Changes, FibOp, Path, PeerId, PeerInfo, Rib};
use crate::session::{self, ConnId, Direction, FromSession, Local, ToSession};
use calico_bgp_codec::{cease, Afi, Capability, Open, Update};
use ipnet::IpNet;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

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
    /// Routes inside these prefixes stay in the RIB (and are passed on to
    /// peers) but are not installed: someone else routes them (the node
    /// agent, for VXLAN pools). Those already installed are taken out, and
    /// those no longer excluded put in.
    fn set_excluded(&mut self, _nets: Vec<IpNet>) {}
}

/// How a peer came to be configured (for `calicoctl node status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PeerKind {
    NodeToNodeMesh,
    Global,
    Node,
}

impl PeerKind {
    pub fn describe(self) -> &'static str {
        match self {
            PeerKind::NodeToNodeMesh => "node-to-node mesh",
            PeerKind::Global => "global",
            PeerKind::Node => "node specific",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerConfig {
    pub addr: IpAddr,
    pub asn: u32,
    pub kind: PeerKind,
    /// A route-reflector client (when this speaker reflects).
    pub rr_client: bool,
    /// Wait for the peer to connect; never connect out.
    pub passive: bool,
    /// Source address for outgoing connections.
    pub local_addr: Option<IpAddr>,
    pub port: u16,
    /// Hold time offered to this peer (the speaker's when None).
    pub hold_time: Option<u16>,
    /// Graceful-restart time announced to this peer (the speaker's when None).
    pub restart_time: Option<u16>,
    /// TCP MD5 key (RFC 2385) for the session, 1-80 bytes.
    pub password: Option<String>,
    /// Prefixes accepted from this peer at most; past it the session ends
    /// with Cease "maximum number of prefixes reached" (RFC 4486).
    pub max_prefixes: Option<usize>,
}

#[derive(Debug, Clone)]
pub struct SpeakerConfig {
    pub router_id: Ipv4Addr,
    pub local_as: u32,
    /// Set to make this speaker a route reflector.
    pub cluster_id: Option<Ipv4Addr>,
    /// Where to accept connections (None: only connect out).
    pub listen: Option<SocketAddr>,
    pub hold_time: u16,
    /// Seconds peers should keep our routes while we restart.
    pub restart_time: u16,
    pub connect_retry: Duration,
}

impl SpeakerConfig {
    pub fn new(router_id: Ipv4Addr, local_as: u32) -> Self {
        SpeakerConfig {
            router_id,
            local_as,
            cluster_id: None,
            listen: Some(SocketAddr::from(([0, 0, 0, 0], 179))),
            hold_time: 90,
            restart_time: 120,
            connect_retry: Duration::from_secs(5),
        }
    }
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PeerStatus {
    pub address: IpAddr,
    pub asn: u32,
    pub kind: PeerKind,
    /// Idle, Connect, OpenSent, Established, or Stale (routes kept for a
    /// restarting peer).
    pub state: String,
    /// Unix seconds of the last state change.
    pub since: u64,
    pub received: usize,
    pub advertised: usize,
    pub info: String,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Status {
    pub router_id: String,
    pub local_as: u32,
    pub peers: Vec<PeerStatus>,
    /// Routes installed from peers.
    pub installed: usize,
}

enum Command {
    SetPeers(Vec<PeerConfig>),
    SetLocal(BTreeSet<IpNet>),
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
    RetryConnect(PeerId, u64),
    StaleExpired(PeerId, u64),
    RestartWindowOver,
}

/// The running speaker. Dropping it stops the speaker (its peers get a
/// Cease).
pub struct Speaker {
    tx: mpsc::UnboundedSender<Event>,
    fib: std::sync::mpsc::Sender<FibWork>,
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
        std::thread::Builder::new()
            .name("bgp-fib".into())
            .spawn(move || fib_thread(fib, &fib_rx))?;
        let fib = fib_tx.clone();
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
                    let window = Duration::from_secs(u64::from(cfg.restart_time));
                    let t = loop_tx.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(window).await;
                        let _ = t.send(Event::RestartWindowOver);
                    });
                    Main::new(cfg, loop_tx, stx, listener_fd, loop_status, fib_tx)
                        .run(rx, srx)
                        .await;
                });
            })?;
        Ok(Speaker {
            tx,
            fib,
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

    /// Prefixes whose routes are not installed in the kernel (see
    /// [`Fib::set_excluded`]).
    pub fn set_kernel_exclusions(&self, nets: Vec<IpNet>) {
        let _ = self.fib.send(FibWork::Exclude(nets));
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
    Exclude(Vec<IpNet>),
    /// Answered once everything before it is applied.
    Barrier(std::sync::mpsc::Sender<()>),
}

fn fib_thread(mut fib: Box<dyn Fib>, rx: &std::sync::mpsc::Receiver<FibWork>) {
    while let Ok(first) = rx.recv() {
        let mut ops = Vec::new();
        let mut converged = false;
        let mut barriers = Vec::new();
        let mut next = Some(first);
        while let Some(w) = next {
            match w {
                FibWork::Exclude(nets) => {
                    if !ops.is_empty() {
                        fib.apply(&std::mem::take(&mut ops));
                    }
                    fib.set_excluded(nets);
                }
                FibWork::Ops(o) => ops.extend(o),
                FibWork::Converged => converged = true,
                FibWork::Barrier(b) => barriers.push(b),
            }
            next = rx.try_recv().ok();
        }
        if !ops.is_empty() {
            let t = std::time::Instant::now();
            fib.apply(&ops);
            debug!("FIB: {} changes in {:?}", ops.len(), t.elapsed());
        }
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

/// Connections one peer may hold at once (ours, its, and one being
/// replaced); more are closed at once, so that a peer cannot pile up
/// sessions waiting for an OPEN.
const MAX_CONNECTIONS_PER_PEER: usize = 3;

/// Batches queued for one session at most: a peer that reads slower than
/// the routes change is dropped (and resynced when it reconnects), never
/// allowed to grow the speaker's memory.
const SESSION_QUEUE: usize = 64;
/// Session events (chiefly received UPDATEs) waiting for the main loop;
/// when full, sessions stop reading and TCP slows their peers.
const EVENTS_QUEUE: usize = 256;

struct ConnState {
    peer: PeerId,
    direction: Direction,
    tx: mpsc::Sender<ToSession>,
    kill: Arc<tokio::sync::Notify>,
    /// Route changes waiting for room in the queue, by prefix.
    backlog: BTreeMap<IpNet, Announce>,
    /// End-of-RIB to send once the backlog is out.
    eor_after: Option<Vec<Afi>>,
    /// Passed the OPEN exchange (OpenConfirm or Established).
    confirmed: bool,
}

impl ConnState {
    /// Queues `m` for the session. Route changes that do not fit wait in
    /// the backlog, where a later change to a prefix replaces an earlier
    /// one: what waits is bounded by the routes there are, however fast
    /// they change (a peer that stops reading is caught by the session's
    /// write deadline). End-of-RIB waits behind the backlog; a control
    /// message that does not fit ends the session.
    fn push(&mut self, m: ToSession) {
        match m {
            ToSession::Send(announces) if !self.backlog.is_empty() => {
                self.backlog
                    .extend(announces.into_iter().map(|a| (*a.prefix(), a)));
            }
            ToSession::EndOfRib(afis) if !self.backlog.is_empty() => self.eor_after = Some(afis),
            m => match self.tx.try_send(m) {
                Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => {}
                Err(mpsc::error::TrySendError::Full(ToSession::Send(announces))) => {
                    self.backlog
                        .extend(announces.into_iter().map(|a| (*a.prefix(), a)));
                }
                Err(mpsc::error::TrySendError::Full(ToSession::EndOfRib(afis))) => {
                    self.eor_after = Some(afis);
                }
                Err(mpsc::error::TrySendError::Full(_)) => {
                    warn!("BGP {}: send queue full, ending the session", self.peer);
                    self.kill.notify_one();
                }
            },
        }
    }

    /// Moves the backlog to the session once its queue has room.
    fn flush(&mut self) {
        if !self.backlog.is_empty() {
            let permit = match self.tx.try_reserve() {
                Ok(p) => p,
                Err(_) => return,
            };
            let batch = std::mem::take(&mut self.backlog).into_values().collect();
            permit.send(ToSession::Send(batch));
        }
        if let Some(afis) = self.eor_after.take() {
            self.push(ToSession::EndOfRib(afis));
        }
    }
}

struct PeerState {
    cfg: PeerConfig,
    /// Bumped whenever the peer is reconfigured, so stale timers and
    /// connect attempts of an older configuration are ignored.
    epoch: u64,
    established: Option<ConnId>,
    connecting: bool,
    state: &'static str,
    since: u64,
    info: String,
    /// Routes kept for a restarting peer (graceful restart).
    stale: bool,
    /// Its End-of-RIB has not arrived yet since it (re)connected.
    awaiting_eor: bool,
    /// The restart time it announced (graceful restart), if any.
    restart_time: Option<u16>,
    /// Sessions lost so far: a restart timer counts for one loss only.
    losses: u64,
    /// Prefixes received, as last counted, and announced since.
    counted: usize,
    unchecked: usize,
}

struct Main {
    cfg: SpeakerConfig,
    tx: mpsc::UnboundedSender<Event>,
    /// Where sessions report (bounded: see EVENTS_QUEUE).
    sessions: mpsc::Sender<FromSession>,
    /// A copy of the listening socket, for the peers' MD5 keys.
    listener: Option<std::os::fd::OwnedFd>,
    status: Arc<Mutex<Status>>,
    fib: std::sync::mpsc::Sender<FibWork>,
    rib: Rib,
    peers: BTreeMap<PeerId, PeerState>,
    conns: BTreeMap<ConnId, ConnState>,
    next_conn: ConnId,
    next_epoch: u64,
    /// The restart window ended or every peer sent End-of-RIB once.
    converged: bool,
    window_over: bool,
}

impl Main {
    fn new(
        cfg: SpeakerConfig,
        tx: mpsc::UnboundedSender<Event>,
        sessions: mpsc::Sender<FromSession>,
        listener: Option<std::os::fd::OwnedFd>,
        status: Arc<Mutex<Status>>,
        fib: std::sync::mpsc::Sender<FibWork>,
    ) -> Self {
        let rib = Rib::new(cfg.local_as, cfg.router_id, cfg.cluster_id);
        Main {
            cfg,
            tx,
            sessions,
            listener,
            status,
            fib,
            rib,
            peers: BTreeMap::new(),
            conns: BTreeMap::new(),
            next_conn: 1,
            next_epoch: 1,
            converged: false,
            window_over: false,
        }
    }

    fn local(&self, peer: &PeerConfig) -> Local {
        Local {
            asn: self.cfg.local_as,
            router_id: self.cfg.router_id,
            hold_time: peer.hold_time.unwrap_or(self.cfg.hold_time),
            restart_time: peer.restart_time.unwrap_or(self.cfg.restart_time),
            restarted: false,
        }
    }

    async fn run(
        mut self,
        mut rx: mpsc::UnboundedReceiver<Event>,
        mut sessions: mpsc::Receiver<FromSession>,
    ) {
        let mut drain = tokio::time::interval(Duration::from_millis(20));
        drain.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let ev = tokio::select! {
                ev = rx.recv() => match ev {
                    Some(ev) => ev,
                    None => return,
                },
                Some(s) = sessions.recv() => Event::Session(s),
                _ = drain.tick(), if self.conns.values().any(|c| !c.backlog.is_empty() || c.eor_after.is_some()) => {
                    for c in self.conns.values_mut() {
                        c.flush();
                    }
                    continue;
                }
            };
            match ev {
                Event::Command(Command::Stop { done, restart }) => {
                    for c in self.conns.values_mut() {
                        c.push(if restart {
                            ToSession::Abort
                        } else {
                            ToSession::Close(cease(2))
                        });
                    }
                    // Stopping for good: what we installed goes (a restart
                    // keeps it forwarding for the next run to take over).
                    // Routes left by an earlier run and not learned again
                    // yet go too (converging now removes them).
                    if !restart {
                        let ops: Vec<FibOp> =
                            self.rib.learned().map(|(p, _)| FibOp::Remove(*p)).collect();
                        let _ = self.fib.send(FibWork::Ops(ops));
                        let _ = self.fib.send(FibWork::Converged);
                    }
                    let (btx, brx) = std::sync::mpsc::channel();
                    let _ = self.fib.send(FibWork::Barrier(btx));
                    let _ = tokio::task::spawn_blocking(move || {
                        brx.recv_timeout(Duration::from_secs(10))
                    })
                    .await;
                    // Let the sessions send their Cease.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    let _ = done.send(());
                    return;
                }
                ev => self.handle(ev),
            }
            self.publish();
        }
    }

    fn set_state(&mut self, peer: &PeerId, state: &'static str, info: String) {
        if let Some(p) = self.peers.get_mut(peer) {
            if p.state != state {
                p.since = now_secs();
            }
            p.state = state;
            p.info = info;
        }
    }

    fn publish(&self) {
        let peers = self
            .peers
            .values()
            .map(|p| PeerStatus {
                address: p.cfg.addr,
                asn: p.cfg.asn,
                kind: p.cfg.kind,
                state: p.state.to_string(),
                since: p.since,
                received: self.rib.received(&p.cfg.addr),
                advertised: self.rib.advertised(&p.cfg.addr),
                info: p.info.clone(),
            })
            .collect();
        let mut s = self
            .status
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        s.peers = peers;
        s.installed = self.rib.installed();
    }

    fn apply(&mut self, ch: Changes) {
        for (peer, announces) in ch.send {
            if announces.is_empty() {
                continue;
            }
            if let Some(conn) = self.peers.get(&peer).and_then(|p| p.established) {
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.push(ToSession::Send(announces));
                }
            }
        }
        if !ch.fib.is_empty() {
            let _ = self.fib.send(FibWork::Ops(ch.fib));
        }
    }

    fn check_converged(&mut self) {
        if self.converged {
            return;
        }
        let all_in = self
            .peers
            .values()
            .all(|p| p.established.is_some() && !p.awaiting_eor);
        if self.window_over || (all_in && !self.peers.is_empty()) {
            self.converged = true;
            let _ = self.fib.send(FibWork::Converged);
        }
    }

    fn connect(&mut self, peer: PeerId) {
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        if p.cfg.passive || p.connecting || p.established.is_some() {
            return;
        }
        p.connecting = true;
        let (cfg, epoch, tx) = (p.cfg.clone(), p.epoch, self.tx.clone());
        if p.state == "Idle" {
            p.state = "Connect";
            p.since = now_secs();
        }
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

    fn start_session(&mut self, stream: TcpStream, peer: PeerId, direction: Direction) {
        let Some(p) = self.peers.get(&peer) else {
            return;
        };
        let conn = self.next_conn;
        self.next_conn += 1;
        let (ctx, crx) = mpsc::channel(SESSION_QUEUE);
        let kill = Arc::new(tokio::sync::Notify::new());
        self.conns.insert(
            conn,
            ConnState {
                peer,
                direction,
                tx: ctx,
                kill: Arc::clone(&kill),
                backlog: BTreeMap::new(),
                eor_after: None,
                confirmed: false,
            },
        );
        let (asn, local, events) = (p.cfg.asn, self.local(&p.cfg), self.sessions.clone());
        let wiring = session::Wiring {
            events,
            commands: crx,
            kill,
        };
        tokio::spawn(session::run(stream, peer, asn, conn, local, wiring));
        if self
            .peers
            .get(&peer)
            .is_some_and(|p| p.established.is_none())
        {
            self.set_state(&peer, "OpenSent", String::new());
        }
    }

    fn schedule_retry(&self, peer: PeerId, epoch: u64) {
        let (tx, wait) = (self.tx.clone(), self.cfg.connect_retry);
        tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            let _ = tx.send(Event::RetryConnect(peer, epoch));
        });
    }

    fn handle(&mut self, ev: Event) {
        match ev {
            Event::Command(Command::SetPeers(list)) => self.set_peers(list),
            Event::Command(Command::SetLocal(prefixes)) => {
                let ch = self.rib.set_local(&prefixes);
                self.apply(ch);
            }
            Event::Command(Command::Stop { .. }) => {}
            Event::Accepted(stream, from) => {
                let ip = match from.ip() {
                    IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
                    v4 => v4,
                };
                let open = self.conns.values().filter(|c| c.peer == ip).count();
                if self.peers.contains_key(&ip) && open >= MAX_CONNECTIONS_PER_PEER {
                    debug!("refusing a BGP connection from {from}: it has {open} open already");
                } else if self.peers.contains_key(&ip) {
                    self.start_session(stream, ip, Direction::Incoming);
                } else {
                    debug!("refusing a BGP connection from {from}: not a configured peer");
                }
            }
            Event::Connected(peer, epoch, result) => {
                let Some(p) = self.peers.get_mut(&peer) else {
                    return;
                };
                if p.epoch != epoch {
                    return;
                }
                p.connecting = false;
                match result {
                    Ok(stream) => self.start_session(stream, peer, Direction::Outgoing),
                    Err(e) => {
                        let established = p.established.is_some();
                        if !established {
                            self.set_state(&peer, "Connect", format!("connect: {e}"));
                        }
                        self.schedule_retry(peer, epoch);
                    }
                }
            }
            Event::RetryConnect(peer, epoch) => {
                if self.peers.get(&peer).is_some_and(|p| p.epoch == epoch) {
                    self.connect(peer);
                }
            }
            Event::StaleExpired(peer, loss) => {
                if self
                    .peers
                    .get(&peer)
                    .is_some_and(|p| p.losses == loss && p.stale)
                {
                    info!("BGP {peer}: restart time over, dropping its stale routes");
                    if let Some(p) = self.peers.get_mut(&peer) {
                        p.stale = false;
                    }
                    let ch = self.rib.drop_stale(&peer);
                    self.apply(ch);
                }
            }
            Event::RestartWindowOver => {
                self.window_over = true;
                self.check_converged();
            }
            Event::Session(s) => self.session_event(s),
        }
    }

    fn set_peers(&mut self, list: Vec<PeerConfig>) {
        let wanted: BTreeMap<PeerId, PeerConfig> = list.into_iter().map(|p| (p.addr, p)).collect();
        let gone: Vec<PeerId> = self
            .peers
            .iter()
            .filter(|(id, p)| wanted.get(*id) != Some(&p.cfg))
            .map(|(id, _)| *id)
            .collect();
        for id in gone {
            info!("BGP peer {id} removed or changed");
            if let Some(p) = self.peers.remove(&id) {
                if p.cfg.password.is_some() {
                    self.listener_key(id, None);
                }
            }
            for c in self.conns.values_mut().filter(|c| c.peer == id) {
                c.push(ToSession::Close(cease(3)));
            }
            let ch = self.rib.peer_down(&id, false);
            self.apply(ch);
        }
        for (id, cfg) in wanted {
            if self.peers.contains_key(&id) {
                continue;
            }
            if let Some(pw) = &cfg.password {
                self.listener_key(id, Some(pw));
            }
            let epoch = self.next_epoch;
            self.next_epoch += 1;
            self.peers.insert(
                id,
                PeerState {
                    cfg,
                    epoch,
                    established: None,
                    connecting: false,
                    state: "Idle",
                    since: now_secs(),
                    info: String::new(),
                    stale: false,
                    awaiting_eor: true,
                    restart_time: None,
                    losses: 0,
                    counted: 0,
                    unchecked: 0,
                },
            );
            self.connect(id);
        }
        self.check_converged();
    }

    /// Ends a peer's session once it has sent more prefixes than allowed.
    /// The exact count (a walk over the RIB) is taken only once the peer
    /// could have reached the limit since the last count.
    fn check_prefix_limit(&mut self, peer: PeerId, conn: ConnId, announced: usize) {
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        let Some(limit) = p.cfg.max_prefixes else {
            return;
        };
        p.unchecked += announced;
        if p.counted + p.unchecked <= limit {
            return;
        }
        p.counted = self.rib.received(&peer);
        p.unchecked = 0;
        if p.counted > limit {
            warn!(
                "BGP {peer}: {} prefixes, more than the {limit} allowed",
                p.counted
            );
            p.info = format!("sent more than {limit} prefixes");
            if let Some(c) = self.conns.get_mut(&conn) {
                // Cease, maximum number of prefixes reached (RFC 4486).
                c.push(ToSession::Close(cease(1)));
            }
        }
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

    fn session_event(&mut self, s: FromSession) {
        match s {
            FromSession::Opened {
                peer,
                conn,
                open,
                reply,
            } => {
                let ok = self.admit(peer, conn, &open);
                let _ = reply.send(ok);
            }
            FromSession::Established {
                peer,
                conn,
                open,
                local_addr,
            } => self.established(peer, conn, &open, local_addr),
            FromSession::Received { peer, conn, update } => {
                if self.peers.get(&peer).and_then(|p| p.established) != Some(conn) {
                    return;
                }
                if update.is_end_of_rib().is_some() {
                    let was_stale = self.peers.get(&peer).is_some_and(|p| p.stale);
                    if let Some(p) = self.peers.get_mut(&peer) {
                        p.awaiting_eor = false;
                        p.stale = false;
                    }
                    if was_stale {
                        let ch = self.rib.drop_stale(&peer);
                        self.apply(ch);
                    }
                    self.check_converged();
                    return;
                }
                let routes = routes_of(update);
                debug!("BGP {peer}: UPDATE with {} prefixes", routes.len());
                let announced = routes.iter().filter(|(_, p)| p.is_some()).count();
                let ch = self.rib.update(&peer, routes);
                self.apply(ch);
                self.check_prefix_limit(peer, conn, announced);
            }
            FromSession::RefreshRequested { peer, conn } => {
                if self.peers.get(&peer).and_then(|p| p.established) == Some(conn) {
                    let ch = self.rib.refresh(&peer);
                    self.apply(ch);
                    if let Some(c) = self.conns.get_mut(&conn) {
                        c.push(ToSession::EndOfRib(vec![Afi::Ipv4, Afi::Ipv6]));
                    }
                }
            }
            FromSession::Closed {
                peer,
                conn,
                graceful,
                reason,
            } => self.closed(peer, conn, graceful, &reason),
        }
    }

    /// Collision detection (RFC 4271 §6.8): one session per peer; of two
    /// connections, the one opened by the side with the higher BGP
    /// Identifier stays.
    fn admit(&mut self, peer: PeerId, conn: ConnId, open: &Open) -> bool {
        let Some(p) = self.peers.get(&peer) else {
            return false;
        };
        if p.established.is_some() {
            return false;
        }
        let Some(direction) = self.conns.get(&conn).map(|c| c.direction) else {
            return false;
        };
        let other = self
            .conns
            .iter()
            .find(|(id, c)| **id != conn && c.peer == peer && c.confirmed)
            .map(|(id, c)| (*id, c.direction));
        if let Some((other_id, _)) = other {
            let winner = if self.cfg.router_id > open.bgp_id {
                Direction::Outgoing
            } else {
                Direction::Incoming
            };
            if direction != winner {
                return false;
            }
            if let Some(o) = self.conns.get_mut(&other_id) {
                o.push(ToSession::Close(cease(7)));
            }
        }
        if let Some(c) = self.conns.get_mut(&conn) {
            c.confirmed = true;
        }
        true
    }

    fn established(&mut self, peer: PeerId, conn: ConnId, open: &Open, local_addr: IpAddr) {
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        if p.established.is_some() {
            if let Some(c) = self.conns.get_mut(&conn) {
                c.push(ToSession::Close(cease(7)));
            }
            return;
        }
        p.established = Some(conn);
        p.awaiting_eor = true;
        p.restart_time = open.graceful_restart().map(|g| g.time);
        let fams = open.families();
        let info = PeerInfo {
            addr: peer,
            asn: p.cfg.asn,
            router_id: open.bgp_id,
            local_addr: p.cfg.local_addr.unwrap_or(local_addr),
            rr_client: p.cfg.rr_client,
            ipv4: fams.contains(&(Afi::Ipv4, calico_bgp_codec::Safi::Unicast)),
            ipv6: fams.contains(&(Afi::Ipv6, calico_bgp_codec::Safi::Unicast)),
        };
        info!("BGP {peer}: established");
        self.set_state(&peer, "Established", String::new());
        let ch = self.rib.peer_up(info);
        self.apply(ch);
        if let Some(c) = self.conns.get_mut(&conn) {
            c.push(ToSession::EndOfRib(vec![Afi::Ipv4, Afi::Ipv6]));
        }
        // A peer without graceful restart sends no End-of-RIB to wait for.
        if !open.has(|c| matches!(c, Capability::GracefulRestart(_))) {
            if let Some(p) = self.peers.get_mut(&peer) {
                p.awaiting_eor = false;
            }
            self.check_converged();
        }
    }

    fn closed(&mut self, peer: PeerId, conn: ConnId, graceful: bool, reason: &str) {
        self.conns.remove(&conn);
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        if p.established != Some(conn) {
            // A connection that lost a collision or never got going.
            if p.established.is_none() {
                let epoch = p.epoch;
                self.set_state(&peer, "Connect", reason.to_string());
                self.schedule_retry(peer, epoch);
            }
            return;
        }
        p.established = None;
        p.losses += 1;
        let (epoch, loss) = (p.epoch, p.losses);
        warn!("BGP {peer}: session closed: {reason}");
        // The restart time the peer announced, if it can restart gracefully.
        let restart = p.restart_time.filter(|_| graceful);
        let keep = restart.is_some_and(|t| t > 0);
        p.stale = keep;
        let ch = self.rib.peer_down(&peer, keep);
        self.apply(ch);
        if let Some(t) = restart.filter(|t| *t > 0) {
            self.set_state(&peer, "Stale", reason.to_string());
            let tx = self.tx.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(u64::from(t))).await;
                let _ = tx.send(Event::StaleExpired(peer, loss));
            });
        } else {
            self.set_state(&peer, "Connect", reason.to_string());
        }
        self.schedule_retry(peer, epoch);
    }
}

/// An UPDATE as RIB input: every prefix it reaches (with its path) or
/// withdraws.
fn routes_of(u: Update) -> Vec<(IpNet, Option<Path>)> {
    let mut out: Vec<(IpNet, Option<Path>)> = Vec::new();
    for w in &u.withdrawn {
        out.push((IpNet::V4(*w), None));
    }
    let mut attrs = u.attributes;
    if let Some(un) = attrs.mp_unreach.take() {
        out.extend(un.withdrawn.into_iter().map(|p| (p, None)));
    }
    let reach = attrs.mp_reach.take();
    let next_hop = attrs.next_hop.take();
    let shared = Arc::new(attrs);
    if let Some(nh) = next_hop {
        for n in &u.nlri {
            out.push((
                IpNet::V4(*n),
                Some(Path {
                    next_hop: IpAddr::V4(nh),
                    attrs: Arc::clone(&shared),
                    stale: false,
                }),
            ));
        }
    }
    if let Some(r) = reach {
        if let Some(nh) = r.next_hops.first() {
            for p in r.nlri {
                out.push((
                    p,
                    Some(Path {
                        next_hop: *nh,
                        attrs: Arc::clone(&shared),
                        stale: false,
                    }),
                ));
            }
        }
    }
    out
}
