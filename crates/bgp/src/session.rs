//! One BGP connection: the OPEN exchange, keepalives and the hold timer,
//! reading and writing messages (RFC 4271 §8, simplified to what a TCP
//! connection already gives: OpenSent → OpenConfirm → Established).
//!
//! The task talks to the speaker's main loop only through messages: it
//! asks whether it may proceed after the OPEN (collision detection), says
//! when it is established and what it receives, and takes UPDATE contents
//! to send.
// The tokio shell around one connection: it owns the timers.
#![allow(clippy::disallowed_methods)]

use crate::rib::{Announce, PeerId};
use calico_bgp_codec::{
    cease, decode, encode, frame, Afi, Attributes, Capability, Context, GracefulRestart, Message,
    MpReach, MpUnreach, Notification, Open, Safi, Update,
};
use ipnet::{IpNet, Ipv4Net};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

pub(crate) type ConnId = u64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Direction {
    Outgoing,
    Incoming,
}

/// What the main loop tells a connection.
#[derive(Debug)]
pub(crate) enum ToSession {
    Send(Vec<Announce>),
    EndOfRib(Vec<Afi>),
    Close(Notification),
    /// Drop the connection without a NOTIFICATION, as a crash or a
    /// graceful restart looks to the peer (it keeps our routes).
    Abort,
}

/// What a connection tells the main loop.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // each is moved once through a channel
pub(crate) enum SessionEvent {
    /// The peer's OPEN arrived; may this connection go on?
    Opened {
        peer: PeerId,
        conn: ConnId,
        open: Open,
    },
    Established {
        peer: PeerId,
        conn: ConnId,
        open: Open,
        local_addr: IpAddr,
    },
    Received {
        peer: PeerId,
        conn: ConnId,
        update: Update,
    },
    RefreshRequested {
        peer: PeerId,
        conn: ConnId,
    },
    Closed {
        peer: PeerId,
        conn: ConnId,
        /// Whether the peer may be restarting gracefully (the session did
        /// not end with a NOTIFICATION).
        graceful: bool,
        reason: String,
    },
}

/// An event on its way to the main loop, with (for an OPEN) where the
/// answer goes.
#[derive(Debug)]
pub(crate) struct FromSession {
    pub event: SessionEvent,
    pub reply: Option<oneshot::Sender<bool>>,
}

impl From<SessionEvent> for FromSession {
    fn from(event: SessionEvent) -> Self {
        FromSession { event, reply: None }
    }
}

/// Our side of the OPEN, and the session parameters.
#[derive(Debug, Clone)]
pub(crate) struct Local {
    pub asn: u32,
    pub router_id: Ipv4Addr,
    pub hold_time: u16,
    pub restart_time: u16,
    /// Set on the first sessions after this speaker started (R bit).
    pub restarted: bool,
}

impl Local {
    pub(crate) fn open(&self) -> Open {
        let fams = [(Afi::Ipv4, Safi::Unicast), (Afi::Ipv6, Safi::Unicast)];
        let mut caps: Vec<Capability> = fams
            .iter()
            .map(|(a, s)| Capability::Multiprotocol(*a, *s))
            .collect();
        caps.push(Capability::RouteRefresh);
        caps.push(Capability::GracefulRestart(GracefulRestart {
            restarted: self.restarted,
            notification: false,
            time: self.restart_time,
            families: fams.iter().map(|(a, s)| (*a, *s, true)).collect(),
        }));
        Open::new(self.asn, self.hold_time, self.router_id, caps)
    }
}

/// What a session runs over: a TCP connection (an in-memory pipe in tests).
pub(crate) trait Transport: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// Our address on it, as the next hop we announce.
    fn local_ip(&self) -> Option<IpAddr>;
}

impl Transport for TcpStream {
    fn local_ip(&self) -> Option<IpAddr> {
        let _ = self.set_nodelay(true);
        self.local_addr().ok().map(|a| a.ip())
    }
}

struct Conn<S> {
    stream: S,
    buf: Vec<u8>,
    ctx: Context,
    /// How long one write may wait for the peer to read: the hold time
    /// once negotiated (RFC 4271's 4 minutes before).
    write_deadline: Duration,
}

enum ReadError {
    Closed(String),
    /// The peer broke the protocol; tell it why.
    Protocol(Notification),
}

impl<S: Transport> Conn<S> {
    async fn send(&mut self, m: &Message) -> std::io::Result<()> {
        let bytes = encode(m, &self.ctx);
        self.write(&bytes).await
    }

    /// Writes within the deadline: a peer that stops reading ends its
    /// session instead of wedging it.
    async fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match tokio::time::timeout(self.write_deadline, self.stream.write_all(bytes)).await {
            Ok(r) => r,
            Err(_) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("peer read nothing for {:?}", self.write_deadline),
            )),
        }
    }

    /// The next message, or why there is none.
    async fn recv(&mut self) -> Result<Message, ReadError> {
        loop {
            match frame(&self.buf) {
                Ok(Some(len)) => {
                    let m = decode(&self.buf[..len], &self.ctx).map_err(ReadError::Protocol)?;
                    self.buf.drain(..len);
                    return Ok(m);
                }
                Ok(None) => {}
                Err(n) => return Err(ReadError::Protocol(n)),
            }
            let mut chunk = [0u8; 65536];
            let n = self
                .stream
                .read(&mut chunk)
                .await
                .map_err(|e| ReadError::Closed(e.to_string()))?;
            if n == 0 {
                return Err(ReadError::Closed("connection closed by peer".into()));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// How a session and the main loop talk: events up (bounded, so a session
/// waits while the main loop is behind), commands down (bounded by the
/// main loop's backlog), and the main loop's word to end the session.
pub(crate) struct Wiring {
    pub events: mpsc::Sender<FromSession>,
    pub commands: mpsc::Receiver<ToSession>,
    pub kill: Arc<tokio::sync::Notify>,
}

/// Runs one connection to the end; tells the main loop it closed.
pub(crate) async fn run<S: Transport>(
    stream: S,
    peer: PeerId,
    expected_as: u32,
    conn: ConnId,
    local: Local,
    wiring: Wiring,
) {
    let Wiring {
        events,
        mut commands,
        kill,
    } = wiring;
    // An IPv4 connection on a dual-stack listener shows v4-mapped
    // addresses; the next hop we announce must be the plain IPv4 one.
    let local_addr = match stream.local_ip() {
        Some(IpAddr::V6(v6)) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        Some(a) => a,
        None => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
    };
    let mut c = Conn {
        stream,
        buf: Vec::new(),
        ctx: Context::default(),
        write_deadline: OPEN_WAIT,
    };
    let (graceful, reason) = match session(
        &mut c,
        peer,
        expected_as,
        conn,
        &local,
        local_addr,
        &events,
        &mut commands,
        &kill,
    )
    .await
    {
        End::Sent(n) => {
            let _ = c.send(&Message::Notification(n.clone())).await;
            (false, format!("sent {n}"))
        }
        End::Received(n) => (false, format!("received {n}")),
        End::Lost(why) => (true, why),
    };
    let _ = c.stream.shutdown().await;
    let _ = events
        .send(FromSession::from(SessionEvent::Closed {
            peer,
            conn,
            graceful,
            reason,
        }))
        .await;
}

enum End {
    /// We end it with this NOTIFICATION.
    Sent(Notification),
    Received(Notification),
    /// The transport went away (or the hold timer ran out quietly).
    Lost(String),
}

#[allow(clippy::too_many_arguments)]
async fn session<S: Transport>(
    c: &mut Conn<S>,
    peer: PeerId,
    expected_as: u32,
    conn: ConnId,
    local: &Local,
    local_addr: IpAddr,
    events: &mpsc::Sender<FromSession>,
    commands: &mut mpsc::Receiver<ToSession>,
    kill: &tokio::sync::Notify,
) -> End {
    let ours = local.open();
    if let Err(e) = c.send(&Message::Open(ours.clone())).await {
        return End::Lost(e.to_string());
    }
    // OpenSent: the peer's OPEN within a generous hold time (RFC: 4 min).
    let theirs = match tokio::time::timeout(OPEN_WAIT, c.recv()).await {
        Err(_) => return End::Sent(Notification::hold_timer_expired()),
        Ok(Err(ReadError::Closed(why))) => return End::Lost(why),
        Ok(Err(ReadError::Protocol(n))) => return End::Sent(n),
        Ok(Ok(Message::Open(o))) => o,
        Ok(Ok(Message::Notification(n))) => return End::Received(n),
        Ok(Ok(_)) => return End::Sent(Notification::fsm(1)),
    };
    if theirs.asn() != expected_as {
        return End::Sent(Notification::bad_peer_as());
    }
    if theirs.bgp_id == local.router_id && expected_as == local.asn {
        return End::Sent(Notification::bad_bgp_id());
    }
    c.ctx.four_octet_as = theirs.has(|c| matches!(c, Capability::FourOctetAs(_)));
    let (reply, answer) = oneshot::channel();
    if events
        .send(FromSession {
            event: SessionEvent::Opened {
                peer,
                conn,
                open: theirs.clone(),
            },
            reply: Some(reply),
        })
        .await
        .is_err()
    {
        return End::Sent(cease(2));
    }
    if !answer.await.unwrap_or(false) {
        return End::Sent(cease(7));
    }
    let hold = ours.hold_time.min(theirs.hold_time);
    let keepalive = (hold > 0).then(|| Duration::from_secs(u64::from(hold / 3).max(1)));
    let hold = (hold > 0).then(|| Duration::from_secs(u64::from(hold)));
    if let Some(h) = hold {
        c.write_deadline = h;
    }
    if let Err(e) = c.send(&Message::Keepalive).await {
        return End::Lost(e.to_string());
    }
    // OpenConfirm: their KEEPALIVE.
    let first = hold.unwrap_or(Duration::from_secs(240));
    match tokio::time::timeout(first, c.recv()).await {
        Err(_) => return End::Sent(Notification::hold_timer_expired()),
        Ok(Err(ReadError::Closed(why))) => return End::Lost(why),
        Ok(Err(ReadError::Protocol(n))) => return End::Sent(n),
        Ok(Ok(Message::Keepalive)) => {}
        Ok(Ok(Message::Notification(n))) => return End::Received(n),
        Ok(Ok(_)) => return End::Sent(Notification::fsm(2)),
    }
    let v6 = theirs.families().contains(&(Afi::Ipv6, Safi::Unicast));
    let v4 = theirs.families().contains(&(Afi::Ipv4, Safi::Unicast));
    if events
        .send(FromSession::from(SessionEvent::Established {
            peer,
            conn,
            open: theirs,
            local_addr,
        }))
        .await
        .is_err()
    {
        return End::Sent(cease(2));
    }
    let far = Instant::now() + Duration::from_secs(365 * 24 * 3600);
    let mut hold_deadline = hold.map_or(far, |h| Instant::now() + h);
    let mut next_keepalive = keepalive.map_or(far, |k| Instant::now() + k);
    loop {
        tokio::select! {
            m = c.recv() => {
                hold_deadline = hold.map_or(far, |h| Instant::now() + h);
                match m {
                    Err(ReadError::Closed(why)) => return End::Lost(why),
                    Err(ReadError::Protocol(n)) => return End::Sent(n),
                    Ok(Message::Keepalive) => {}
                    Ok(Message::Update(update)) => {
                        // Back-pressure: while the main loop is behind, this
                        // session reads no further (TCP slows the peer).
                        if events.send(FromSession::from(SessionEvent::Received { peer, conn, update })).await.is_err() {
                            return End::Sent(cease(2));
                        }
                    }
                    Ok(Message::RouteRefresh(r)) if r.subtype == 0 => {
                        let _ = events.send(FromSession::from(SessionEvent::RefreshRequested { peer, conn })).await;
                    }
                    Ok(Message::RouteRefresh(_)) => {}
                    Ok(Message::Notification(n)) => return End::Received(n),
                    Ok(Message::Open(_)) => return End::Sent(Notification::fsm(3)),
                }
            }
            cmd = commands.recv() => {
                let msgs: Vec<Message> = match cmd {
                    None => return End::Sent(cease(2)),
                    Some(ToSession::Close(n)) => return End::Sent(n),
                    Some(ToSession::Abort) => return End::Lost("restarting".into()),
                    Some(ToSession::Send(changes)) => updates(&changes, v4, v6)
                        .into_iter()
                        .flat_map(|m| fit(m, &c.ctx))
                        .collect(),
                    Some(ToSession::EndOfRib(afis)) => afis
                        .into_iter()
                        .filter(|a| (*a == Afi::Ipv4 && v4) || (*a == Afi::Ipv6 && v6))
                        .map(|a| Message::Update(Update::end_of_rib(a)))
                        .collect(),
                };
                let mut bytes = Vec::new();
                for m in &msgs {
                    bytes.extend_from_slice(&encode(m, &c.ctx));
                }
                if let Err(e) = c.write(&bytes).await {
                    return End::Lost(e.to_string());
                }
                if !msgs.is_empty() {
                    next_keepalive = keepalive.map_or(far, |k| Instant::now() + k);
                }
            }
            () = tokio::time::sleep_until(next_keepalive) => {
                if let Err(e) = c.send(&Message::Keepalive).await {
                    return End::Lost(e.to_string());
                }
                next_keepalive = keepalive.map_or(far, |k| Instant::now() + k);
            }
            () = kill.notified() => {
                return End::Lost("peer fell too far behind (send queue full)".into());
            }
            () = tokio::time::sleep_until(hold_deadline) => {
                // The peer may be restarting: its routes are kept (RFC 4724).
                let _ = c.send(&Message::Notification(Notification::hold_timer_expired())).await;
                return End::Lost("hold timer expired".into());
            }
        }
    }
}

/// How long to wait for the peer's OPEN (and to write before a hold time
/// is agreed): RFC 4271's suggested 4 minutes.
const OPEN_WAIT: Duration = Duration::from_secs(240);

mod pack;

pub(crate) use pack::{fit, updates};

#[cfg(test)]
mod tests;
