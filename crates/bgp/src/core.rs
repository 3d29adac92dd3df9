//! The speaker's core: peers, their connections, collision detection,
//! graceful restart and prefix limits, over the RIB. Pure: it takes one
//! [`Input`] at a time and says what to do as [`Action`]s (connect, start
//! a session on a stream, send to a session, set a timer, change the
//! FIB); the tokio shell in `speaker` does them and feeds back what
//! happens. No task, socket, channel or clock in here, so its behaviour
//! (timers included) is tested by feeding inputs.

mod interface;

pub(crate) use interface::{Action, Input, StreamId, Timer, MAX_CONNECTIONS_PER_PEER};

use crate::config::{PeerConfig, PeerState, PeerStatus, SpeakerConfig};
use crate::rib::{routes_of, Changes, FibOp, PeerId, PeerInfo, Rib};
use crate::session::{ConnId, Direction, Local, SessionEvent, ToSession};
use calico_bgp_codec::{cease, Afi, Capability, Open, Update};
use ipnet::IpNet;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;
use tracing::{debug, info, warn};

struct Peer {
    cfg: PeerConfig,
    /// Bumped whenever the peer is reconfigured, so stale timers and
    /// connect attempts of an older configuration are ignored.
    epoch: u64,
    established: Option<ConnId>,
    connecting: bool,
    state: PeerState,
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

struct Conn {
    peer: PeerId,
    direction: Direction,
    /// Passed the OPEN exchange (OpenConfirm or Established).
    confirmed: bool,
}

pub(crate) struct Core {
    cfg: SpeakerConfig,
    rib: Rib,
    peers: BTreeMap<PeerId, Peer>,
    conns: BTreeMap<ConnId, Conn>,
    next_conn: ConnId,
    next_epoch: u64,
    /// The restart window ended or every peer sent End-of-RIB once.
    converged: bool,
    window_over: bool,
    /// Unix seconds of the input being handled (status stamps only).
    now: u64,
    out: Vec<Action>,
    /// Prefixes whose learned routes stay out of the kernel.
    excluded: Vec<IpNet>,
}

impl Core {
    /// A core with no peers; the first action to take (the restart window's
    /// timer) comes from [`Core::start`].
    pub(crate) fn new(cfg: SpeakerConfig) -> Self {
        let rib = Rib::new(cfg.local_as, cfg.router_id, cfg.cluster_id);
        Core {
            cfg,
            rib,
            peers: BTreeMap::new(),
            conns: BTreeMap::new(),
            next_conn: 1,
            next_epoch: 1,
            converged: false,
            window_over: false,
            now: 0,
            out: Vec::new(),
            excluded: Vec::new(),
        }
    }

    /// What to do at start: time this speaker's restart window.
    pub(crate) fn start(&mut self) -> Vec<Action> {
        vec![Action::After {
            wait: Duration::from_secs(u64::from(self.cfg.restart_time)),
            timer: Timer::RestartWindowOver,
        }]
    }

    /// Takes one input at `now` (Unix seconds); what to do comes back.
    pub(crate) fn handle(&mut self, input: Input, now: u64) -> Vec<Action> {
        self.now = now;
        match input {
            Input::SetPeers(list) => self.set_peers(list),
            Input::SetLocal(prefixes) => {
                let ch = self.rib.set_local(&prefixes);
                self.apply(ch);
            }
            Input::SetExcluded(nets) => self.set_excluded(nets),
            Input::Accepted { stream, from } => self.accepted(stream, from),
            Input::Connected {
                peer,
                epoch,
                result,
            } => self.connected(peer, epoch, result),
            Input::Timer(t) => self.timer(t),
            Input::Session(ev) => self.session(ev),
        }
        std::mem::take(&mut self.out)
    }

    fn session(&mut self, ev: SessionEvent) {
        match ev {
            SessionEvent::Opened { peer, conn, open } => {
                let ok = self.admit(peer, conn, &open);
                self.out.push(Action::Admit { conn, ok });
            }
            SessionEvent::Established {
                peer,
                conn,
                open,
                local_addr,
            } => self.established(peer, conn, &open, local_addr),
            SessionEvent::Received { peer, conn, update } => self.received(peer, conn, update),
            SessionEvent::RefreshRequested { peer, conn } => {
                if self.peers.get(&peer).and_then(|p| p.established) == Some(conn) {
                    let ch = self.rib.refresh(&peer);
                    self.apply(ch);
                    self.send(conn, ToSession::EndOfRib(vec![Afi::Ipv4, Afi::Ipv6]));
                }
            }
            SessionEvent::Closed {
                peer,
                conn,
                graceful,
                reason,
            } => self.closed(peer, conn, graceful, &reason),
        }
    }

    /// Stopping: every session closed (with Cease, or dropped silently for
    /// a restart); stopping for good also withdraws what was installed.
    pub(crate) fn stop(&mut self, restart: bool) -> Vec<Action> {
        let conns: Vec<ConnId> = self.conns.keys().copied().collect();
        for conn in conns {
            self.send(
                conn,
                if restart {
                    ToSession::Abort
                } else {
                    ToSession::Close(cease(2))
                },
            );
        }
        if !restart {
            let ops: Vec<FibOp> = self.rib.learned().map(|(p, _)| FibOp::Remove(p)).collect();
            self.out.push(Action::Fib(ops));
            self.out.push(Action::FibConverged);
        }
        std::mem::take(&mut self.out)
    }

    /// Learned routes inside `nets` are kept out of the kernel from now on:
    /// those installed are taken out, those no longer excluded put back.
    /// (Sent on every datastore change: most of the time nothing moves.)
    fn set_excluded(&mut self, nets: Vec<IpNet>) {
        if nets == self.excluded {
            return;
        }
        let inside = |list: &[IpNet], p: &IpNet| list.iter().any(|e| e.contains(p));
        let ops: Vec<FibOp> = self
            .rib
            .learned()
            .filter_map(
                |(p, nh)| match (inside(&self.excluded, &p), inside(&nets, &p)) {
                    (false, true) => Some(FibOp::Remove(p)),
                    (true, false) => Some(FibOp::Set(p, nh)),
                    _ => None,
                },
            )
            .collect();
        if !ops.is_empty() {
            info!(
                "BGP: {} routes change hands with the pools' encapsulation",
                ops.len()
            );
        }
        self.excluded = nets;
        if !ops.is_empty() {
            self.out.push(Action::Fib(ops));
        }
    }

    /// Every peer as `calicoctl node status` shows it, and the routes installed.
    pub(crate) fn status(&self) -> (Vec<PeerStatus>, usize) {
        let peers = self
            .peers
            .values()
            .map(|p| PeerStatus {
                address: p.cfg.addr,
                asn: p.cfg.asn,
                kind: p.cfg.kind,
                state: p.state,
                since: p.since,
                received: self.rib.received(&p.cfg.addr),
                advertised: self.rib.advertised(&p.cfg.addr),
                info: p.info.clone(),
            })
            .collect();
        (peers, self.rib.installed())
    }

    fn send(&mut self, conn: ConnId, msg: ToSession) {
        self.out.push(Action::Send { conn, msg });
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

    fn set_state(&mut self, peer: &PeerId, state: PeerState, info: String) {
        if let Some(p) = self.peers.get_mut(peer) {
            if p.state != state {
                p.since = self.now;
            }
            p.state = state;
            p.info = info;
        }
    }

    fn apply(&mut self, ch: Changes) {
        for (peer, announces) in ch.send {
            if announces.is_empty() {
                continue;
            }
            if let Some(conn) = self.peers.get(&peer).and_then(|p| p.established) {
                if self.conns.contains_key(&conn) {
                    self.send(conn, ToSession::Send(announces));
                }
            }
        }
        if !ch.fib.is_empty() {
            // A route inside an excluded prefix is not ours to install: it
            // is taken out instead (one from before this run may linger).
            let excluded = &self.excluded;
            let ops = ch
                .fib
                .into_iter()
                .map(|op| match op {
                    FibOp::Set(p, _) if excluded.iter().any(|e| e.contains(&p)) => FibOp::Remove(p),
                    op => op,
                })
                .collect();
            self.out.push(Action::Fib(ops));
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
            self.out.push(Action::FibConverged);
        }
    }

    fn connect(&mut self, peer: PeerId) {
        let now = self.now;
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        if p.cfg.passive || p.connecting || p.established.is_some() {
            return;
        }
        p.connecting = true;
        if p.state == PeerState::Idle {
            p.state = PeerState::Connect;
            p.since = now;
        }
        self.out.push(Action::Connect {
            peer,
            epoch: p.epoch,
            cfg: p.cfg.clone(),
        });
    }

    fn start_session(&mut self, stream: StreamId, peer: PeerId, direction: Direction) {
        let Some(p) = self.peers.get(&peer) else {
            return;
        };
        let conn = self.next_conn;
        self.next_conn += 1;
        self.conns.insert(
            conn,
            Conn {
                peer,
                direction,
                confirmed: false,
            },
        );
        self.out.push(Action::StartSession {
            stream,
            conn,
            peer,
            expected_as: p.cfg.asn,
            local: self.local(&p.cfg),
        });
        if p.established.is_none() {
            self.set_state(&peer, PeerState::OpenSent, String::new());
        }
    }

    fn schedule_retry(&mut self, peer: PeerId, epoch: u64) {
        self.out.push(Action::After {
            wait: self.cfg.connect_retry,
            timer: Timer::Retry { peer, epoch },
        });
    }

    fn accepted(&mut self, stream: StreamId, from: IpAddr) {
        let ip = match from {
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

    fn connected(&mut self, peer: PeerId, epoch: u64, result: Result<StreamId, String>) {
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
                if p.established.is_none() {
                    self.set_state(&peer, PeerState::Connect, format!("connect: {e}"));
                }
                self.schedule_retry(peer, epoch);
            }
        }
    }

    fn timer(&mut self, t: Timer) {
        match t {
            Timer::Retry { peer, epoch } => {
                if self.peers.get(&peer).is_some_and(|p| p.epoch == epoch) {
                    self.connect(peer);
                }
            }
            Timer::StaleExpired { peer, loss } => {
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
            Timer::RestartWindowOver => {
                self.window_over = true;
                self.check_converged();
            }
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
                    self.out.push(Action::ListenerKey {
                        peer: id,
                        key: None,
                    });
                }
            }
            let conns: Vec<ConnId> = self
                .conns
                .iter()
                .filter(|(_, c)| c.peer == id)
                .map(|(id, _)| *id)
                .collect();
            for conn in conns {
                self.send(conn, ToSession::Close(cease(3)));
            }
            let ch = self.rib.peer_down(&id, false);
            self.apply(ch);
        }
        for (id, cfg) in wanted {
            if self.peers.contains_key(&id) {
                continue;
            }
            if let Some(pw) = &cfg.password {
                self.out.push(Action::ListenerKey {
                    peer: id,
                    key: Some(pw.clone()),
                });
            }
            let epoch = self.next_epoch;
            self.next_epoch += 1;
            self.peers.insert(
                id,
                Peer {
                    cfg,
                    epoch,
                    established: None,
                    connecting: false,
                    state: PeerState::Idle,
                    since: self.now,
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

    fn received(&mut self, peer: PeerId, conn: ConnId, update: Update) {
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
            // Cease, maximum number of prefixes reached (RFC 4486).
            self.send(conn, ToSession::Close(cease(1)));
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
            .map(|(id, _)| *id);
        if let Some(other_id) = other {
            let winner = if self.cfg.router_id > open.bgp_id {
                Direction::Outgoing
            } else {
                Direction::Incoming
            };
            if direction != winner {
                return false;
            }
            self.send(other_id, ToSession::Close(cease(7)));
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
            self.send(conn, ToSession::Close(cease(7)));
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
        self.set_state(&peer, PeerState::Established, String::new());
        let ch = self.rib.peer_up(info);
        self.apply(ch);
        self.send(conn, ToSession::EndOfRib(vec![Afi::Ipv4, Afi::Ipv6]));
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
                self.set_state(&peer, PeerState::Connect, reason.to_string());
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
            self.set_state(&peer, PeerState::Stale, reason.to_string());
            self.out.push(Action::After {
                wait: Duration::from_secs(u64::from(t)),
                timer: Timer::StaleExpired { peer, loss },
            });
        } else {
            self.set_state(&peer, PeerState::Connect, reason.to_string());
        }
        self.schedule_retry(peer, epoch);
    }
}

#[cfg(test)]
mod tests;
