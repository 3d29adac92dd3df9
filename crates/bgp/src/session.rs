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
use tokio::io::{AsyncReadExt, AsyncWriteExt};
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
pub(crate) enum FromSession {
    /// The peer's OPEN arrived; may this connection go on?
    Opened {
        peer: PeerId,
        conn: ConnId,
        open: Open,
        reply: oneshot::Sender<bool>,
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
    fn open(&self) -> Open {
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

struct Conn {
    stream: TcpStream,
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

impl Conn {
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
pub(crate) async fn run(
    stream: TcpStream,
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
    let _ = stream.set_nodelay(true);
    // An IPv4 connection on a dual-stack listener shows v4-mapped
    // addresses; the next hop we announce must be the plain IPv4 one.
    let local_addr = match stream.local_addr().map(|a| a.ip()) {
        Ok(IpAddr::V6(v6)) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        Ok(a) => a,
        Err(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
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
        .send(FromSession::Closed {
            peer,
            conn,
            graceful,
            reason,
        })
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
async fn session(
    c: &mut Conn,
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
        .send(FromSession::Opened {
            peer,
            conn,
            open: theirs.clone(),
            reply,
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
        .send(FromSession::Established {
            peer,
            conn,
            open: theirs,
            local_addr,
        })
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
                        if events.send(FromSession::Received { peer, conn, update }).await.is_err() {
                            return End::Sent(cease(2));
                        }
                    }
                    Ok(Message::RouteRefresh(r)) if r.subtype == 0 => {
                        let _ = events.send(FromSession::RefreshRequested { peer, conn }).await;
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

/// The room a message leaves for prefixes once its attributes are in.
const BUDGET: usize = calico_bgp_codec::MAX_LEN - 64;

fn prefix_size(p: &IpNet) -> usize {
    1 + usize::from(p.prefix_len()).div_ceil(8)
}

/// Packs announcements into as few UPDATEs as fit: withdrawals together,
/// reachable prefixes grouped by identical next hop and attributes.
pub(crate) fn updates(changes: &[Announce], v4: bool, v6: bool) -> Vec<Message> {
    let mut out = Vec::new();
    let (mut w4, mut w6): (Vec<Ipv4Net>, Vec<IpNet>) = (Vec::new(), Vec::new());
    let mut groups: Vec<(IpAddr, Arc<Attributes>, Vec<IpNet>)> = Vec::new();
    for a in changes {
        match a {
            Announce::Withdraw(IpNet::V4(p)) if v4 => w4.push(*p),
            Announce::Withdraw(p @ IpNet::V6(_)) if v6 => w6.push(*p),
            Announce::Withdraw(_) => {}
            Announce::Reach {
                prefix,
                next_hop,
                attrs,
            } => {
                if (prefix.addr().is_ipv4() && !v4) || (prefix.addr().is_ipv6() && !v6) {
                    continue;
                }
                match groups
                    .iter_mut()
                    .find(|(nh, a, _)| nh == next_hop && (Arc::ptr_eq(a, attrs) || a == attrs))
                {
                    Some(g) => g.2.push(*prefix),
                    None => groups.push((*next_hop, Arc::clone(attrs), vec![*prefix])),
                }
            }
        }
    }
    for chunk in chunks(w4.iter().map(|p| IpNet::V4(*p)).collect(), BUDGET) {
        out.push(Message::Update(Update {
            withdrawn: chunk
                .into_iter()
                .filter_map(|p| match p {
                    IpNet::V4(p) => Some(p),
                    IpNet::V6(_) => None,
                })
                .collect(),
            ..Update::default()
        }));
    }
    for chunk in chunks(w6, BUDGET) {
        out.push(Message::Update(Update {
            attributes: Attributes {
                mp_unreach: Some(MpUnreach {
                    afi: 2,
                    safi: 1,
                    withdrawn: chunk,
                }),
                ..Attributes::default()
            },
            ..Update::default()
        }));
    }
    for (nh, attrs, prefixes) in groups {
        let attr_size = attr_estimate(&attrs);
        for chunk in chunks(prefixes, BUDGET.saturating_sub(attr_size).max(64)) {
            let mut a = (*attrs).clone();
            let update = match nh {
                IpAddr::V4(nh4) if chunk[0].addr().is_ipv4() => {
                    a.next_hop = Some(nh4);
                    Update {
                        withdrawn: Vec::new(),
                        attributes: a,
                        nlri: chunk
                            .into_iter()
                            .filter_map(|p| match p {
                                IpNet::V4(p) => Some(p),
                                IpNet::V6(_) => None,
                            })
                            .collect(),
                    }
                }
                _ => {
                    a.mp_reach = Some(MpReach {
                        afi: if chunk[0].addr().is_ipv4() { 1 } else { 2 },
                        safi: 1,
                        next_hops: vec![nh],
                        nlri: chunk,
                    });
                    Update {
                        attributes: a,
                        ..Update::default()
                    }
                }
            };
            out.push(Message::Update(update));
        }
    }
    out
}

/// The message as one or more that each encode within BGP's 4,096
/// bytes: packing by estimate can overshoot (long AS paths, many
/// communities or unknown attributes), so the encoded size decides; a
/// message too large is split in half until each part fits. A single
/// prefix whose attributes alone are too large cannot be sent at all.
pub(crate) fn fit(m: Message, ctx: &Context) -> Vec<Message> {
    if encode(&m, ctx).len() <= calico_bgp_codec::MAX_LEN {
        return vec![m];
    }
    let Message::Update(u) = m else {
        return vec![m];
    };
    let halves = split_update(u);
    if halves.len() < 2 {
        tracing::warn!("an UPDATE for one prefix does not fit in 4096 bytes; not sent");
        return Vec::new();
    }
    halves
        .into_iter()
        .flat_map(|h| fit(Message::Update(h), ctx))
        .collect()
}

/// Two UPDATEs carrying half of `u`'s prefixes each (the same attributes),
/// or `u` alone when it carries one prefix or fewer.
fn split_update(u: Update) -> Vec<Update> {
    fn halve<T: Clone>(v: &[T]) -> Option<(Vec<T>, Vec<T>)> {
        (v.len() > 1).then(|| (v[..v.len() / 2].to_vec(), v[v.len() / 2..].to_vec()))
    }
    if let Some((a, b)) = halve(&u.withdrawn) {
        return vec![
            Update {
                withdrawn: a,
                ..u.clone()
            },
            Update { withdrawn: b, ..u },
        ];
    }
    if let Some((a, b)) = halve(&u.nlri) {
        return vec![
            Update {
                nlri: a,
                ..u.clone()
            },
            Update { nlri: b, ..u },
        ];
    }
    if let Some(r) = &u.attributes.mp_reach {
        if let Some((a, b)) = halve(&r.nlri) {
            let with = |nlri: Vec<IpNet>| {
                let mut x = u.clone();
                if let Some(r) = x.attributes.mp_reach.as_mut() {
                    r.nlri = nlri;
                }
                x
            };
            return vec![with(a), with(b)];
        }
    }
    if let Some(r) = &u.attributes.mp_unreach {
        if let Some((a, b)) = halve(&r.withdrawn) {
            let with = |withdrawn: Vec<IpNet>| {
                let mut x = u.clone();
                if let Some(r) = x.attributes.mp_unreach.as_mut() {
                    r.withdrawn = withdrawn;
                }
                x
            };
            return vec![with(a), with(b)];
        }
    }
    vec![u]
}

fn attr_estimate(a: &Attributes) -> usize {
    let path = a
        .as_path
        .as_ref()
        .map_or(0, |p| p.segments.iter().map(|s| 2 + 4 * s.asns.len()).sum());
    64 + path
        + 4 * a.communities.len()
        + 4 * a.cluster_list.len()
        + a.other.iter().map(|o| 4 + o.value.len()).sum::<usize>()
}

fn chunks(prefixes: Vec<IpNet>, budget: usize) -> Vec<Vec<IpNet>> {
    let mut out: Vec<Vec<IpNet>> = Vec::new();
    let mut size = 0;
    for p in prefixes {
        let s = prefix_size(&p);
        match out.last_mut() {
            Some(cur) if size + s <= budget => {
                cur.push(p);
                size += s;
            }
            _ => {
                out.push(vec![p]);
                size = s;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use calico_bgp_codec::{AsPath, Origin};

    /// The UPDATEs as a peer decodes them, each checked to fit in 4,096 bytes.
    fn on_the_wire(msgs: &[Message], ctx: &Context) -> Vec<Update> {
        msgs.iter()
            .map(|m| {
                let bytes = encode(m, ctx);
                assert!(
                    bytes.len() <= calico_bgp_codec::MAX_LEN,
                    "{} bytes",
                    bytes.len()
                );
                let Ok(Message::Update(u)) = decode(&bytes, ctx) else {
                    panic!("decodes")
                };
                u
            })
            .collect()
    }

    /// `n` /24s from 10.0.0.0 with these attributes, next hop 10.0.0.1.
    fn reach(n: u32, attrs: &Arc<Attributes>) -> Vec<Announce> {
        (0..n)
            .map(|i| Announce::Reach {
                prefix: IpNet::V4(
                    Ipv4Net::new(Ipv4Addr::from(0x0a00_0000 + (i << 8)), 24).expect("net"),
                ),
                next_hop: "10.0.0.1".parse().expect("ip"),
                attrs: Arc::clone(attrs),
            })
            .collect()
    }

    #[test]
    fn many_prefixes_pack_into_messages_that_fit() {
        let attrs = Arc::new(Attributes {
            origin: Some(Origin::Igp),
            as_path: Some(AsPath::sequence(vec![64512])),
            ..Attributes::default()
        });
        let mut changes = reach(20_000, &attrs);
        changes.extend((0..3000u32).map(|i| {
            Announce::Withdraw(IpNet::V6(
                ipnet::Ipv6Net::new(
                    std::net::Ipv6Addr::from(0xfd00_u128 << 112 | u128::from(i) << 64),
                    64,
                )
                .expect("net"),
            ))
        }));
        let msgs = updates(&changes, true, true);
        let ctx = Context {
            four_octet_as: true,
        };
        let mut reach = 0;
        let mut gone = 0;
        for u in on_the_wire(&msgs, &ctx) {
            reach += u.nlri.len();
            gone += u.attributes.mp_unreach.map_or(0, |m| m.withdrawn.len());
        }
        assert_eq!((reach, gone), (20_000, 3000));
        assert!(msgs.len() < 30, "{} messages", msgs.len());
    }

    /// Attributes that leave almost no room (990 communities) still give
    /// messages that fit, with every prefix in (the estimate alone
    /// overshot: it keeps room for at least 64 bytes of prefixes).
    #[test]
    fn large_attributes_are_split_by_encoded_size() {
        let attrs = Arc::new(Attributes {
            origin: Some(Origin::Igp),
            as_path: Some(AsPath::sequence((0..10).map(|i| 64512 + i).collect())),
            communities: (0..990).collect(),
            ..Attributes::default()
        });
        let changes = reach(2000, &attrs);
        let ctx = Context {
            four_octet_as: true,
        };
        let msgs: Vec<Message> = updates(&changes, true, true)
            .into_iter()
            .flat_map(|m| fit(m, &ctx))
            .collect();
        let reach: usize = on_the_wire(&msgs, &ctx).iter().map(|u| u.nlri.len()).sum();
        assert_eq!(reach, 2000);
        // Attributes that cannot fit with even one prefix: nothing is sent.
        let huge = Arc::new(Attributes {
            communities: (0..1100).collect(),
            ..(*attrs).clone()
        });
        let one = vec![Announce::Reach {
            prefix: "10.9.0.0/24".parse().expect("net"),
            next_hop: "10.0.0.1".parse().expect("ip"),
            attrs: huge,
        }];
        let msgs: Vec<Message> = updates(&one, true, true)
            .into_iter()
            .flat_map(|m| fit(m, &ctx))
            .collect();
        assert!(msgs.is_empty());
    }
}
