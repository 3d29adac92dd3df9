//! The connection tracker's table with its counters: what flow records
//! take their packet and byte counts from. Read with one ctnetlink dump
//! (`IPCTNL_MSG_CT_GET` with `NLM_F_DUMP`, what `conntrack -L` sends) in
//! this process's network namespace; accounting must be on
//! (`net.netfilter.nf_conntrack_acct = 1`). Each entry is read in place
//! from the receive buffer, strictly: one whose tuple, counters or id do
//! not read is skipped and counted, never guessed at.

use crate::nla::attributes;
use netlink_sys::{constants::NETLINK_NETFILTER, Socket};
use std::net::IpAddr;
/// A connection's original-direction addresses and ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnTuple {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub proto: u8,
    pub sport: Option<u16>,
    pub dport: Option<u16>,
}

impl ConnTuple {
    /// Whether connections of `proto` are told apart by ports: TCP, UDP,
    /// SCTP and UDP-Lite (others, ICMP say, have none in the tuple).
    pub fn has_ports(proto: u8) -> bool {
        matches!(proto, 6 | 17 | 132 | 136)
    }
}

/// One tracked connection and its counters in each direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conn {
    pub id: u64,
    pub tuple: ConnTuple,
    /// Source to destination.
    pub orig_packets: u64,
    pub orig_bytes: u64,
    /// Destination back to source.
    pub reply_packets: u64,
    pub reply_bytes: u64,
    /// A TCP connection that has ended (TIME_WAIT or CLOSE): the tracker
    /// keeps it only for its last stray packets.
    pub closed: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ConntrackError {
    #[error("ctnetlink socket")]
    Socket(#[source] std::io::Error),
    #[error("the connection tracker refused the listing")]
    Refused(#[source] std::io::Error),
}

/// The table as listed, and how many entries did not read.
#[derive(Debug, Default)]
pub struct Table {
    pub conns: Vec<Conn>,
    pub unreadable: u64,
}

/// ctnetlink's subsystem number and its message types.
const SUBSYS_CTNETLINK: u16 = 1;
const MSG_CT_NEW: u16 = 0;
const MSG_CT_GET: u16 = 1;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_DUMP: u16 = 0x300;
/// Attribute numbers (`linux/netfilter/nfnetlink_conntrack.h`).
const CTA_TUPLE_ORIG: u16 = 1;
const CTA_COUNTERS_ORIG: u16 = 9;
const CTA_COUNTERS_REPLY: u16 = 10;
const CTA_PROTOINFO: u16 = 4;
const CTA_ID: u16 = 12;
const CTA_PROTOINFO_TCP: u16 = 1;
const CTA_PROTOINFO_TCP_STATE: u16 = 1;
/// `enum tcp_conntrack`: the states after a connection's end.
const TCP_CONNTRACK_TIME_WAIT: u8 = 7;
const TCP_CONNTRACK_CLOSE: u8 = 8;
const CTA_TUPLE_IP: u16 = 1;
const CTA_TUPLE_PROTO: u16 = 2;
const CTA_IP_V4_SRC: u16 = 1;
const CTA_IP_V4_DST: u16 = 2;
const CTA_IP_V6_SRC: u16 = 3;
const CTA_IP_V6_DST: u16 = 4;
const CTA_PROTO_NUM: u16 = 1;
const CTA_PROTO_SRC_PORT: u16 = 2;
const CTA_PROTO_DST_PORT: u16 = 3;
const CTA_COUNTERS_PACKETS: u16 = 1;
const CTA_COUNTERS_BYTES: u16 = 2;
const CTA_COUNTERS32_PACKETS: u16 = 3;
const CTA_COUNTERS32_BYTES: u16 = 4;

/// Lists this namespace's connections with their counters.
pub fn list() -> Result<Table, ConntrackError> {
    let mut socket = Socket::new(NETLINK_NETFILTER).map_err(ConntrackError::Socket)?;
    socket.bind_auto().map_err(ConntrackError::Socket)?;
    // A dump whose end went missing fails after a while; it never hangs
    // the caller.
    use nix::sys::socket::{setsockopt, sockopt::ReceiveTimeout};
    setsockopt(&socket, ReceiveTimeout, &nix::sys::time::TimeVal::new(5, 0))
        .map_err(|e| ConntrackError::Socket(e.into()))?;
    socket
        .send(&dump_request(), 0)
        .map_err(ConntrackError::Socket)?;
    let mut table = Table::default();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = socket
            .recv(&mut &mut buf[..], 0)
            .map_err(ConntrackError::Socket)?;
        match read_messages(&buf[..n.min(buf.len())], &mut table) {
            Step::More => {}
            Step::Done => return Ok(table),
            Step::Error(code) => {
                return Err(ConntrackError::Refused(std::io::Error::from_raw_os_error(
                    code,
                )))
            }
        }
    }
}

/// `nlmsghdr` (type ctnetlink GET, a dump request) and `nfgenmsg`
/// (AF_UNSPEC: every family).
fn dump_request() -> [u8; 20] {
    let mut m = [0u8; 20];
    m[0..4].copy_from_slice(&20u32.to_ne_bytes());
    m[4..6].copy_from_slice(&((SUBSYS_CTNETLINK << 8) | MSG_CT_GET).to_ne_bytes());
    m[6..8].copy_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    m[8..12].copy_from_slice(&1u32.to_ne_bytes());
    m
}

/// What one receive of a dump held.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    More,
    Done,
    /// The kernel's error (a positive errno).
    Error(i32),
}

/// Walks the netlink messages of one receive, adding each entry to `table`.
fn read_messages(buf: &[u8], table: &mut Table) -> Step {
    for msg in crate::nla::messages(buf) {
        let Some((kind, payload)) = msg else {
            // A message that does not read ends the receive; the dump
            // goes on with the next.
            table.unreadable += 1;
            return Step::More;
        };
        match kind {
            NLMSG_DONE => return Step::Done,
            NLMSG_ERROR => {
                let code = payload
                    .get(0..4)
                    .map_or(0, |b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
                return if code == 0 {
                    Step::Done
                } else {
                    Step::Error(-code)
                };
            }
            t if t == (SUBSYS_CTNETLINK << 8) | MSG_CT_NEW
                || t == (SUBSYS_CTNETLINK << 8) | MSG_CT_GET =>
            {
                match read_entry(payload) {
                    Some(c) => table.conns.push(c),
                    None => table.unreadable += 1,
                }
            }
            _ => {}
        }
    }
    Step::More
}

/// One entry: `nfgenmsg`, then its attributes.
fn read_entry(body: &[u8]) -> Option<Conn> {
    let (_, body) = body.split_at_checked(4)?;
    let mut tuple = None;
    let mut orig = None;
    let mut reply = None;
    let mut id = None;
    let mut closed = false;
    for a in attributes(body) {
        let (kind, value) = a?;
        match kind {
            CTA_TUPLE_ORIG => tuple = Some(read_tuple(value)?),
            CTA_PROTOINFO => closed = read_tcp_closed(value)?,
            CTA_COUNTERS_ORIG => orig = Some(read_counters(value)?),
            CTA_COUNTERS_REPLY => reply = Some(read_counters(value)?),
            CTA_ID => id = Some(u64::from(u32::from_be_bytes(value.try_into().ok()?))),
            _ => {}
        }
    }
    // Counters both ways (accounting on), or the entry is no use.
    let (orig, reply) = (orig?, reply?);
    Some(Conn {
        id: id?,
        tuple: tuple?,
        orig_packets: orig.0,
        orig_bytes: orig.1,
        reply_packets: reply.0,
        reply_bytes: reply.1,
        closed,
    })
}

/// `CTA_PROTOINFO`: whether it holds a TCP state past the connection's
/// end (None: an attribute that does not read).
fn read_tcp_closed(value: &[u8]) -> Option<bool> {
    let mut closed = false;
    for a in attributes(value) {
        let (kind, v) = a?;
        if kind == CTA_PROTOINFO_TCP {
            for a in attributes(v) {
                let (kind, v) = a?;
                if kind == CTA_PROTOINFO_TCP_STATE {
                    let state = *v.first()?;
                    closed = state == TCP_CONNTRACK_TIME_WAIT || state == TCP_CONNTRACK_CLOSE;
                }
            }
        }
    }
    Some(closed)
}

/// `CTA_TUPLE_ORIG`: addresses (both of one family), protocol, and the
/// ports of the protocols that have them (as a logged packet reads).
fn read_tuple(value: &[u8]) -> Option<ConnTuple> {
    let (mut src, mut dst, mut proto, mut sport, mut dport) = (None, None, None, None, None);
    for a in attributes(value) {
        let (kind, value) = a?;
        match kind {
            CTA_TUPLE_IP => {
                for a in attributes(value) {
                    let (kind, v) = a?;
                    match kind {
                        CTA_IP_V4_SRC => src = Some(IpAddr::from(<[u8; 4]>::try_from(v).ok()?)),
                        CTA_IP_V4_DST => dst = Some(IpAddr::from(<[u8; 4]>::try_from(v).ok()?)),
                        CTA_IP_V6_SRC => src = Some(IpAddr::from(<[u8; 16]>::try_from(v).ok()?)),
                        CTA_IP_V6_DST => dst = Some(IpAddr::from(<[u8; 16]>::try_from(v).ok()?)),
                        _ => {}
                    }
                }
            }
            CTA_TUPLE_PROTO => {
                for a in attributes(value) {
                    let (kind, v) = a?;
                    match kind {
                        CTA_PROTO_NUM => proto = Some(*v.first()?),
                        CTA_PROTO_SRC_PORT => sport = Some(u16::from_be_bytes(v.try_into().ok()?)),
                        CTA_PROTO_DST_PORT => dport = Some(u16::from_be_bytes(v.try_into().ok()?)),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    let (src, dst, proto) = (src?, dst?, proto?);
    if src.is_ipv4() != dst.is_ipv4() {
        return None;
    }
    let ports = ConnTuple::has_ports(proto) && sport.is_some() && dport.is_some();
    Some(ConnTuple {
        src,
        dst,
        proto,
        sport: sport.filter(|_| ports),
        dport: dport.filter(|_| ports),
    })
}

/// `CTA_COUNTERS_*`: packets and bytes (64-bit, or 32-bit from old kernels).
fn read_counters(value: &[u8]) -> Option<(u64, u64)> {
    let (mut packets, mut bytes) = (None, None);
    let number = |v: &[u8]| match v.len() {
        8 => Some(u64::from_be_bytes(v.try_into().ok()?)),
        4 => Some(u64::from(u32::from_be_bytes(v.try_into().ok()?))),
        _ => None,
    };
    for a in attributes(value) {
        let (kind, v) = a?;
        match kind {
            CTA_COUNTERS_PACKETS | CTA_COUNTERS32_PACKETS => packets = Some(number(v)?),
            CTA_COUNTERS_BYTES | CTA_COUNTERS32_BYTES => bytes = Some(number(v)?),
            // Padding, and whatever a newer kernel adds.
            _ => {}
        }
    }
    Some((packets?, bytes?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// An attribute: length, type, value, padding to 4 bytes.
    fn nla(kind: u16, value: &[u8]) -> Vec<u8> {
        let len = u16::try_from(4 + value.len()).expect("small");
        let mut v = [len.to_ne_bytes(), kind.to_ne_bytes()].concat();
        v.extend_from_slice(value);
        v.resize(v.len().next_multiple_of(4), 0);
        v
    }

    /// A nested attribute (the kernel sets NLA_F_NESTED).
    fn nested(kind: u16, inner: &[Vec<u8>]) -> Vec<u8> {
        nla(kind | 0x8000, &inner.concat())
    }

    fn message(kind: u16, attributes: &[Vec<u8>]) -> Vec<u8> {
        let mut body = vec![2, 0, 0, 0];
        body.extend(attributes.concat());
        let len = u32::try_from(16 + body.len()).expect("small");
        let mut m = len.to_ne_bytes().to_vec();
        m.extend_from_slice(&kind.to_ne_bytes());
        m.extend_from_slice(&[0; 10]);
        m.extend_from_slice(&body);
        m
    }

    const ENTRY: u16 = (SUBSYS_CTNETLINK << 8) | MSG_CT_NEW;

    fn tuple(src: &[u8], dst: &[u8], proto: u8, ports: Option<(u16, u16)>) -> Vec<u8> {
        let (s, d) = if src.len() == 4 {
            (CTA_IP_V4_SRC, CTA_IP_V4_DST)
        } else {
            (CTA_IP_V6_SRC, CTA_IP_V6_DST)
        };
        let mut proto_attrs = vec![nla(CTA_PROTO_NUM, &[proto])];
        if let Some((sp, dp)) = ports {
            proto_attrs.push(nla(CTA_PROTO_SRC_PORT, &sp.to_be_bytes()));
            proto_attrs.push(nla(CTA_PROTO_DST_PORT, &dp.to_be_bytes()));
        }
        nested(
            CTA_TUPLE_ORIG,
            &[
                nested(CTA_TUPLE_IP, &[nla(s, src), nla(d, dst)]),
                nested(CTA_TUPLE_PROTO, &proto_attrs),
            ],
        )
    }

    fn counters(kind: u16, packets: u64, bytes: u64) -> Vec<u8> {
        nested(
            kind,
            &[
                nla(CTA_COUNTERS_PACKETS, &packets.to_be_bytes()),
                nla(CTA_COUNTERS_BYTES, &bytes.to_be_bytes()),
                // Padding the kernel may put between 64-bit values.
                nla(5, &[]),
            ],
        )
    }

    fn entry(tuple: Vec<u8>, id: u32, with_counters: bool) -> Vec<u8> {
        let mut attrs = vec![tuple, nla(CTA_ID, &id.to_be_bytes())];
        if with_counters {
            attrs.push(counters(CTA_COUNTERS_ORIG, 6, 360));
            attrs.push(counters(CTA_COUNTERS_REPLY, 4, 280));
        }
        message(ENTRY, &attrs)
    }

    fn read(buf: &[u8]) -> (Table, Step) {
        let mut t = Table::default();
        let step = read_messages(buf, &mut t);
        (t, step)
    }

    #[test]
    fn entries_read_strictly() {
        let v6 = |last: u8| {
            let mut a = [0u8; 16];
            a[0] = 0xfd;
            a[15] = last;
            a
        };
        let mut buf = entry(
            tuple(&[10, 244, 0, 1], &[10, 244, 1, 1], 6, Some((40000, 80))),
            0xdead_beef,
            true,
        );
        // ICMP: no ports.
        buf.extend(entry(
            tuple(&[10, 0, 0, 1], &[10, 0, 0, 2], 1, None),
            11,
            true,
        ));
        buf.extend(entry(tuple(&v6(1), &v6(2), 17, Some((5353, 53))), 12, true));
        // No counters (accounting off): unreadable.
        buf.extend(entry(
            tuple(&[10, 0, 0, 1], &[10, 0, 0, 2], 6, Some((1, 2))),
            5,
            false,
        ));
        // An address of the wrong length: unreadable.
        buf.extend(entry(
            tuple(&[10, 0, 0], &[10, 0, 0, 2], 6, Some((1, 2))),
            6,
            true,
        ));
        // Mixed families: unreadable.
        buf.extend(entry(
            tuple(&[10, 0, 0, 1], &v6(2), 6, Some((1, 2))),
            7,
            true,
        ));
        let (t, step) = read(&buf);
        assert_eq!(step, Step::More);
        assert_eq!(t.conns.len(), 3, "{t:?}");
        assert_eq!(t.unreadable, 3);
        let c = t.conns[0];
        assert_eq!(
            (c.id, c.tuple.proto, c.tuple.sport, c.tuple.dport),
            (0xdead_beef, 6, Some(40000), Some(80))
        );
        assert_eq!(
            (c.orig_packets, c.orig_bytes, c.reply_packets, c.reply_bytes),
            (6, 360, 4, 280)
        );
        assert_eq!((t.conns[1].tuple.sport, t.conns[1].id), (None, 11));
        assert_eq!(t.conns[2].tuple.dst, IpAddr::from(v6(2)));
        assert!(
            t.conns.iter().all(|c| !c.closed),
            "no TCP state: not closed"
        );
    }

    /// A TCP entry with its protocol information: the state `state`.
    fn tcp_entry(state: &[u8]) -> Vec<u8> {
        let mut m = entry(
            tuple(&[10, 0, 0, 1], &[10, 0, 0, 2], 6, Some((1, 2))),
            5,
            true,
        );
        let info = nested(
            CTA_PROTOINFO,
            &[nested(
                CTA_PROTOINFO_TCP,
                &[nla(CTA_PROTOINFO_TCP_STATE, state), nla(2, &[0])],
            )],
        );
        // The message grows by the attribute: its length first.
        let len = u32::try_from(m.len() + info.len()).expect("small");
        m[0..4].copy_from_slice(&len.to_ne_bytes());
        m.extend(info);
        m
    }

    #[test]
    fn a_tcp_connection_past_its_end_reads_as_closed() {
        let with_state = |state: &[u8]| read(&tcp_entry(state)).0;
        let closed = |state: u8| with_state(&[state]).conns[0].closed;
        assert!(!closed(3), "ESTABLISHED");
        assert!(!closed(4), "FIN_WAIT");
        assert!(closed(TCP_CONNTRACK_TIME_WAIT));
        assert!(closed(TCP_CONNTRACK_CLOSE));
        // A state with no byte: the entry does not read.
        let t = with_state(&[]);
        assert_eq!((t.conns.len(), t.unreadable), (0, 1));
    }

    #[test]
    fn the_end_of_a_dump_and_a_refusal_are_told_apart() {
        let done = message(NLMSG_DONE, &[]);
        assert_eq!(read(&done).1, Step::Done);
        let mut refused = 16u32.to_ne_bytes().to_vec();
        refused.extend(NLMSG_ERROR.to_ne_bytes());
        refused.extend([0; 10]);
        refused.extend((-1i32).to_ne_bytes());
        refused[0..4].copy_from_slice(&20u32.to_ne_bytes());
        assert_eq!(read(&refused).1, Step::Error(1), "EPERM");
        // An entry, then the end, in one receive.
        let mut buf = entry(
            tuple(&[10, 0, 0, 1], &[10, 0, 0, 2], 6, Some((1, 2))),
            5,
            true,
        );
        buf.extend(&done);
        let (t, step) = read(&buf);
        assert_eq!((t.conns.len(), step), (1, Step::Done));
    }

    proptest! {
        /// Whatever the buffer holds, reading it neither panics nor
        /// finds more entries than messages fit.
        #[test]
        fn any_bytes_read_without_panic(buf in proptest::collection::vec(any::<u8>(), 0..512)) {
            let (t, _) = read(&buf);
            prop_assert!(t.conns.len() <= buf.len() / 16);
        }

        #[test]
        fn mutated_entries_read_without_panic(
            flips in proptest::collection::vec((0usize..200, any::<u8>()), 0..8)
        ) {
            let mut buf = tcp_entry(&[TCP_CONNTRACK_TIME_WAIT]);
            for (i, b) in flips {
                if let Some(x) = buf.get_mut(i) {
                    *x = b;
                }
            }
            let _ = read(&buf);
        }
    }
}
