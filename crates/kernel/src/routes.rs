//! The kernel's main routing table through rtnetlink. rtnetlink is async;
//! a current-thread runtime private to [`NetlinkRoutes`] drives it, so
//! callers see plain blocking calls.

use crate::RouteTable;
use calico_net::IpNet;
use calico_routes::{Op, Route, Target};
use futures_util::TryStreamExt;
use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_REPLACE,
    NLM_F_REQUEST,
};
use netlink_packet_route::link::LinkAttribute;
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::AddressFamily;
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{protocols::NETLINK_ROUTE, Socket};
use rtnetlink::{Handle, RouteMessageBuilder};
use std::collections::BTreeMap;
use std::net::IpAddr;

#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error("cannot start the netlink runtime")]
    Runtime(#[source] std::io::Error),
    #[error("netlink: {what}")]
    Netlink {
        what: String,
        #[source]
        cause: crate::Cause,
    },
    #[error("interface {0} does not exist")]
    NoLink(String),
}

/// Netlink requests per send in [`NetlinkRoutes::apply`].
const BATCH: usize = 512;

fn batch_socket() -> std::io::Result<Socket> {
    let mut s = Socket::new(NETLINK_ROUTE)?;
    s.bind_auto()?;
    s.set_rx_buf_sz(1 << 20)?;
    Ok(s)
}

fn nl(what: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> RouteError {
    let what = what.into();
    move |e| RouteError::Netlink {
        what,
        cause: std::sync::Arc::new(e),
    }
}

/// Every one of `ops`, failed for one cause.
fn all_failed(
    ops: &[Op],
    what: &str,
    e: impl std::error::Error + Send + Sync + 'static,
) -> Vec<(Op, RouteError)> {
    let cause: crate::Cause = std::sync::Arc::new(e);
    ops.iter()
        .map(|op| {
            let e = RouteError::Netlink {
                what: what.to_string(),
                cause: cause.clone(),
            };
            (op.clone(), e)
        })
        .collect()
}

/// The main table, seen as one owner (a route protocol number) sees it.
pub struct NetlinkRoutes {
    rt: tokio::runtime::Runtime,
    handle: Handle,
    proto: u8,
}

impl std::fmt::Debug for NetlinkRoutes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NetlinkRoutes(proto {})", self.proto)
    }
}

fn addr_of(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

/// An rtnetlink handle in the calling thread's network namespace, with the
/// current-thread runtime that drives its connection (rtnetlink is async;
/// its users block on this runtime, so no async type leaves this crate).
pub(crate) fn netlink() -> std::io::Result<(tokio::runtime::Runtime, Handle)> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    let handle = {
        let _guard = rt.enter();
        let (conn, handle, _) = rtnetlink::new_connection()?;
        rt.spawn(conn);
        handle
    };
    Ok((rt, handle))
}

impl NetlinkRoutes {
    /// Routes are added and listed with protocol `proto`.
    pub fn new(proto: u8) -> Result<Self, RouteError> {
        let (rt, handle) = netlink().map_err(RouteError::Runtime)?;
        Ok(NetlinkRoutes { rt, handle, proto })
    }

    async fn links(&self) -> Result<BTreeMap<u32, String>, RouteError> {
        let mut out = BTreeMap::new();
        let mut links = self.handle.link().get().execute();
        while let Some(msg) = links.try_next().await.map_err(nl("list links"))? {
            if let Some(name) = msg.attributes.iter().find_map(|a| match a {
                LinkAttribute::IfName(n) => Some(n.clone()),
                _ => None,
            }) {
                out.insert(msg.header.index, name);
            }
        }
        Ok(out)
    }

    async fn owned(&self) -> Result<Vec<Route>, RouteError> {
        let names = self.links().await?;
        let mut out = Vec::new();
        for family in [AddressFamily::Inet, AddressFamily::Inet6] {
            let mut query = RouteMessage::default();
            query.header.address_family = family;
            let mut routes = self.handle.route().get(query).execute();
            while let Some(msg) = routes.try_next().await.map_err(nl("list routes"))? {
                if u8::from(msg.header.protocol) != self.proto
                    || msg.header.table != RouteHeader::RT_TABLE_MAIN
                {
                    continue;
                }
                out.extend(to_route(&msg, &names));
            }
        }
        Ok(out)
    }

    /// This owner's routes in the main table.
    pub fn list(&self) -> Result<Vec<Route>, RouteError> {
        self.rt.block_on(self.owned())
    }

    /// Applies changes without listing first (the caller knows what it
    /// installed). Requests go in batches: up to [`BATCH`] netlink messages
    /// per send on a socket of our own, each acknowledged, so a full table
    /// costs a few hundred system calls rather than one round trip per
    /// route. The changes that failed come back with their error; deleting
    /// a route that is already gone is not a failure.
    pub fn apply(&self, ops: &[Op]) -> Vec<(Op, RouteError)> {
        let mut failed = Vec::new();
        let names = match self.rt.block_on(self.links()) {
            Ok(n) => n,
            Err(e) => return all_failed(ops, "list links", e),
        };
        let index: BTreeMap<&str, u32> = names.iter().map(|(i, n)| (n.as_str(), *i)).collect();
        let socket = match batch_socket() {
            Ok(s) => s,
            Err(e) => return all_failed(ops, "open a netlink socket", e),
        };
        let mut seq: u32 = 1;
        for chunk in ops.chunks(BATCH) {
            let mut buf = Vec::new();
            let mut sent: BTreeMap<u32, &Op> = BTreeMap::new();
            for op in chunk {
                let built = match op {
                    Op::Replace(r) => self.route_message(r, &index).map(|m| {
                        (
                            RouteNetlinkMessage::NewRoute(m),
                            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
                        )
                    }),
                    Op::Delete(r) => self
                        .delete_message(r)
                        .map(|m| (RouteNetlinkMessage::DelRoute(m), NLM_F_REQUEST | NLM_F_ACK)),
                };
                let (payload, flags) = match built {
                    Ok(x) => x,
                    Err(e) => {
                        failed.push((op.clone(), e));
                        continue;
                    }
                };
                let mut header = NetlinkHeader::default();
                header.flags = flags;
                header.sequence_number = seq;
                let mut msg = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(payload));
                msg.finalize();
                let at = buf.len();
                buf.resize(at + msg.buffer_len(), 0);
                msg.serialize(&mut buf[at..]);
                sent.insert(seq, op);
                seq = seq.wrapping_add(1);
            }
            if sent.is_empty() {
                continue;
            }
            if let Err(e) = socket.send(&buf, 0) {
                let ops: Vec<Op> = sent.into_values().cloned().collect();
                failed.extend(all_failed(&ops, "send to netlink", e));
                continue;
            }
            // One acknowledgement (or error) per request.
            let mut rx = vec![0u8; 1 << 16];
            while !sent.is_empty() {
                let n = match socket.recv(&mut &mut rx[..], 0) {
                    Ok(n) => n,
                    Err(e) => {
                        let ops: Vec<Op> =
                            std::mem::take(&mut sent).into_values().cloned().collect();
                        failed.extend(all_failed(&ops, "receive from netlink", e));
                        break;
                    }
                };
                let mut at = 0;
                while at < n {
                    let Ok(msg) = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&rx[at..n])
                    else {
                        break;
                    };
                    let len = msg.header.length as usize;
                    let seq = msg.header.sequence_number;
                    if let NetlinkPayload::Error(err) = &msg.payload {
                        if let Some(op) = sent.remove(&seq) {
                            let code = err.raw_code();
                            let gone = matches!(op, Op::Delete(_))
                                && (code == -nix::libc::ESRCH || code == -nix::libc::ENOENT);
                            if code != 0 && !gone {
                                failed.push((
                                    op.clone(),
                                    RouteError::Netlink {
                                        what: format!("{op:?}"),
                                        cause: std::sync::Arc::new(err.to_io()),
                                    },
                                ));
                            }
                        }
                    }
                    if len == 0 {
                        break;
                    }
                    at += (len + 3) & !3;
                }
            }
        }
        failed
    }

    /// The message that adds `r` (interfaces resolved through `index`).
    fn route_message(
        &self,
        r: &Route,
        index: &BTreeMap<&str, u32>,
    ) -> Result<RouteMessage, RouteError> {
        let dev = |name: &str| {
            index
                .get(name)
                .copied()
                .ok_or_else(|| RouteError::NoLink(name.to_string()))
        };
        let mut b = self.builder(r)?;
        match &r.target {
            Target::Device(d) => b = b.output_interface(dev(d)?).scope(RouteScope::Link),
            Target::Blackhole => b = b.kind(RouteType::BlackHole),
            Target::Via {
                gateway,
                device,
                onlink,
            } => {
                b = b.gateway(*gateway).map_err(|e| RouteError::Netlink {
                    what: format!("route to {} via {gateway}", r.dst),
                    cause: std::sync::Arc::new(e),
                })?;
                if let Some(d) = device {
                    b = b.output_interface(dev(d)?);
                }
                if *onlink {
                    b = b.onlink();
                }
            }
        }
        Ok(b.build())
    }

    /// A message for our route to `r.dst`, marked with our protocol.
    fn builder(&self, r: &Route) -> Result<RouteMessageBuilder<IpAddr>, RouteError> {
        Ok(RouteMessageBuilder::<IpAddr>::new()
            .destination_prefix(r.dst.addr(), r.dst.prefix_len())
            .map_err(|e| RouteError::Netlink {
                what: format!("route to {}", r.dst),
                cause: std::sync::Arc::new(e),
            })?
            .protocol(RouteProtocol::from(self.proto)))
    }

    /// A message that deletes our route to `r.dst` (whatever its target).
    fn delete_message(&self, r: &Route) -> Result<RouteMessage, RouteError> {
        let mut b = self
            .builder(r)?
            // Any scope and (but for blackholes) any type, as `ip route del`.
            .scope(RouteScope::NoWhere)
            .kind(RouteType::Unspec);
        if r.target == Target::Blackhole {
            b = b.kind(RouteType::BlackHole);
        }
        Ok(b.build())
    }
}

fn to_route(msg: &RouteMessage, names: &BTreeMap<u32, String>) -> Option<Route> {
    let mut dst = None;
    let mut gateway = None;
    let mut oif = None;
    for a in &msg.attributes {
        match a {
            RouteAttribute::Destination(d) => dst = addr_of(d),
            RouteAttribute::Gateway(g) => gateway = addr_of(g),
            RouteAttribute::Oif(i) => oif = names.get(i).cloned(),
            _ => {}
        }
    }
    let dst = match dst {
        Some(a) => IpNet::new(a, msg.header.destination_prefix_length).ok()?,
        None if msg.header.address_family == AddressFamily::Inet => "0.0.0.0/0".parse().ok()?,
        None => "::/0".parse().ok()?,
    };
    let target = if msg.header.kind == RouteType::BlackHole {
        Target::Blackhole
    } else if let Some(gateway) = gateway {
        Target::Via {
            gateway,
            device: oif,
            onlink: msg
                .header
                .flags
                .contains(netlink_packet_route::route::RouteFlags::Onlink),
        }
    } else {
        Target::Device(oif?)
    };
    Some(Route { dst, target })
}

impl RouteTable for NetlinkRoutes {
    fn list(&self) -> Result<Vec<Route>, RouteError> {
        NetlinkRoutes::list(self)
    }

    fn apply(&self, ops: &[Op]) -> Vec<(Op, RouteError)> {
        NetlinkRoutes::apply(self, ops)
    }
}
