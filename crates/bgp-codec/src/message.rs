//! Messages (RFC 4271 §4), OPEN capabilities (RFC 5492, 4760, 2918, 4724,
//! 6793, 7313) and ROUTE-REFRESH (RFC 2918, 7313).

use crate::attrs::{decode_attributes, encode_attributes, Attributes, MpUnreach};
use crate::error::{update_error, ErrorCode, Notification};
use crate::wire::{read_prefixes, write_prefix, Reader};
use ipnet::{IpNet, Ipv4Net};
use std::net::Ipv4Addr;

pub const HEADER_LEN: usize = 19;
/// Without extended messages (RFC 8654) a message is at most 4096 bytes.
pub const MAX_LEN: usize = 4096;
/// The 2-octet stand-in for a 4-octet AS (RFC 6793).
pub const AS_TRANS: u16 = 23456;

/// What decoding an UPDATE depends on: whether both ends announced
/// 4-octet AS support.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Context {
    pub four_octet_as: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Afi {
    Ipv4,
    Ipv6,
    Other(u16),
}

impl Afi {
    pub fn code(self) -> u16 {
        match self {
            Afi::Ipv4 => 1,
            Afi::Ipv6 => 2,
            Afi::Other(c) => c,
        }
    }
    pub fn from_code(c: u16) -> Self {
        match c {
            1 => Afi::Ipv4,
            2 => Afi::Ipv6,
            c => Afi::Other(c),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Safi {
    Unicast,
    Other(u8),
}

impl Safi {
    pub fn code(self) -> u8 {
        match self {
            Safi::Unicast => 1,
            Safi::Other(c) => c,
        }
    }
    pub fn from_code(c: u8) -> Self {
        match c {
            1 => Safi::Unicast,
            c => Safi::Other(c),
        }
    }
}

/// The graceful restart capability (RFC 4724 §3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GracefulRestart {
    /// R: the sender has restarted.
    pub restarted: bool,
    /// N: graceful notification (RFC 8538).
    pub notification: bool,
    /// Seconds the peer should keep our routes after the session drops.
    pub time: u16,
    /// Families, each with whether forwarding state was preserved.
    pub families: Vec<(Afi, Safi, bool)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Capability {
    Multiprotocol(Afi, Safi),
    RouteRefresh,
    GracefulRestart(GracefulRestart),
    FourOctetAs(u32),
    EnhancedRouteRefresh,
    Unknown { code: u8, value: Vec<u8> },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Open {
    pub version: u8,
    /// The 2-octet field (`AS_TRANS` when the real AS needs 4 octets).
    pub my_as: u16,
    pub hold_time: u16,
    pub bgp_id: Ipv4Addr,
    pub capabilities: Vec<Capability>,
}

impl Open {
    /// An OPEN for `asn` with these capabilities (a 4-octet AS capability
    /// is added).
    pub fn new(
        asn: u32,
        hold_time: u16,
        bgp_id: Ipv4Addr,
        mut capabilities: Vec<Capability>,
    ) -> Self {
        capabilities.push(Capability::FourOctetAs(asn));
        Open {
            version: 4,
            my_as: u16::try_from(asn).unwrap_or(AS_TRANS),
            hold_time,
            bgp_id,
            capabilities,
        }
    }

    /// The sender's AS: the 4-octet capability's when present.
    pub fn asn(&self) -> u32 {
        self.capabilities
            .iter()
            .find_map(|c| match c {
                Capability::FourOctetAs(a) => Some(*a),
                _ => None,
            })
            .unwrap_or(u32::from(self.my_as))
    }

    pub fn has(&self, f: impl Fn(&Capability) -> bool) -> bool {
        self.capabilities.iter().any(f)
    }

    pub fn graceful_restart(&self) -> Option<&GracefulRestart> {
        self.capabilities.iter().find_map(|c| match c {
            Capability::GracefulRestart(g) => Some(g),
            _ => None,
        })
    }

    /// The families announced (IPv4 unicast when none is, RFC 4760 §8).
    pub fn families(&self) -> Vec<(Afi, Safi)> {
        let fams: Vec<(Afi, Safi)> = self
            .capabilities
            .iter()
            .filter_map(|c| match c {
                Capability::Multiprotocol(a, s) => Some((*a, *s)),
                _ => None,
            })
            .collect();
        if fams.is_empty() {
            vec![(Afi::Ipv4, Safi::Unicast)]
        } else {
            fams
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Update {
    pub withdrawn: Vec<Ipv4Net>,
    pub attributes: Attributes,
    pub nlri: Vec<Ipv4Net>,
}

impl Update {
    /// The End-of-RIB marker for a family (RFC 4724 §2).
    pub fn end_of_rib(afi: Afi) -> Update {
        match afi {
            Afi::Ipv4 => Update::default(),
            _ => Update {
                attributes: Attributes {
                    mp_unreach: Some(MpUnreach {
                        afi: afi.code(),
                        safi: 1,
                        withdrawn: Vec::new(),
                    }),
                    ..Attributes::default()
                },
                ..Update::default()
            },
        }
    }

    /// Which family this End-of-RIB marker ends, if it is one.
    pub fn is_end_of_rib(&self) -> Option<Afi> {
        if !self.withdrawn.is_empty() || !self.nlri.is_empty() {
            return None;
        }
        if self.attributes.is_empty() {
            return Some(Afi::Ipv4);
        }
        match &self.attributes.mp_unreach {
            Some(u)
                if u.withdrawn.is_empty()
                    && self.attributes
                        == (Attributes {
                            mp_unreach: Some(u.clone()),
                            ..Attributes::default()
                        }) =>
            {
                Some(Afi::from_code(u.afi))
            }
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteRefresh {
    pub afi: Afi,
    /// 0 request, 1 beginning and 2 end of a refresh (RFC 7313).
    pub subtype: u8,
    pub safi: Safi,
}

#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(clippy::large_enum_variant)] // one message at a time
pub enum Message {
    Open(Open),
    Update(Update),
    Notification(Notification),
    Keepalive,
    RouteRefresh(RouteRefresh),
}

/// How many bytes the first message in `buf` takes, once they have all
/// arrived (`None`: read more). A bad marker or length is the peer's
/// error, answered with the NOTIFICATION returned.
pub fn frame(buf: &[u8]) -> Result<Option<usize>, Notification> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    if buf[..16].iter().any(|b| *b != 0xff) {
        return Err(Notification::not_synchronized());
    }
    let len = u16::from_be_bytes([buf[16], buf[17]]);
    if usize::from(len) < HEADER_LEN || usize::from(len) > MAX_LEN {
        return Err(Notification::bad_length(len));
    }
    Ok((buf.len() >= usize::from(len)).then_some(usize::from(len)))
}

/// Decodes one whole message (as [`frame`] delimits it).
pub fn decode(msg: &[u8], ctx: &Context) -> Result<Message, Notification> {
    match frame(msg)? {
        Some(len) if len == msg.len() => {}
        _ => {
            return Err(Notification::bad_length(
                u16::try_from(msg.len()).unwrap_or(u16::MAX),
            ))
        }
    }
    let len = u16::try_from(msg.len()).unwrap_or(u16::MAX);
    let body = &msg[HEADER_LEN..];
    let ty = msg[18];
    let length_ok = match ty {
        1 => body.len() >= 10,
        2 => body.len() >= 4,
        3 => body.len() >= 2,
        4 => body.is_empty(),
        5 => body.len() == 4,
        _ => return Err(Notification::bad_type(ty)),
    };
    if !length_ok {
        return Err(Notification::bad_length(len));
    }
    match ty {
        1 => decode_open(body).map(Message::Open),
        2 => decode_update(body, ctx).map(Message::Update),
        3 => Ok(Message::Notification(Notification {
            code: body[0],
            subcode: body[1],
            data: body[2..].to_vec(),
        })),
        4 => Ok(Message::Keepalive),
        _ => Ok(Message::RouteRefresh(RouteRefresh {
            afi: Afi::from_code(u16::from_be_bytes([body[0], body[1]])),
            subtype: body[2],
            safi: Safi::from_code(body[3]),
        })),
    }
}

fn open_error() -> Notification {
    Notification::new(ErrorCode::Open, 0, Vec::new())
}

fn decode_capability(code: u8, value: &[u8]) -> Result<Capability, Notification> {
    let whole = || {
        let mut v = vec![code, u8::try_from(value.len()).unwrap_or(u8::MAX)];
        v.extend_from_slice(value);
        v
    };
    let bad = || Notification::new(ErrorCode::Open, 0, whole());
    let mut r = Reader::new(value);
    Ok(match code {
        1 => {
            if value.len() != 4 {
                return Err(bad());
            }
            let afi = r.u16(bad)?;
            let _ = r.u8(bad)?;
            Capability::Multiprotocol(Afi::from_code(afi), Safi::from_code(r.u8(bad)?))
        }
        2 if value.is_empty() => Capability::RouteRefresh,
        70 if value.is_empty() => Capability::EnhancedRouteRefresh,
        64 => {
            if value.len() < 2 || !(value.len() - 2).is_multiple_of(4) {
                return Err(bad());
            }
            let head = r.u16(bad)?;
            let mut families = Vec::new();
            while !r.is_empty() {
                let afi = Afi::from_code(r.u16(bad)?);
                let safi = Safi::from_code(r.u8(bad)?);
                let flags = r.u8(bad)?;
                families.push((afi, safi, flags & 0x80 != 0));
            }
            Capability::GracefulRestart(GracefulRestart {
                restarted: head & 0x8000 != 0,
                notification: head & 0x4000 != 0,
                time: head & 0x0fff,
                families,
            })
        }
        65 => {
            if value.len() != 4 {
                return Err(bad());
            }
            Capability::FourOctetAs(r.u32(bad)?)
        }
        2 | 70 => return Err(bad()),
        _ => Capability::Unknown {
            code,
            value: value.to_vec(),
        },
    })
}

fn decode_open(body: &[u8]) -> Result<Open, Notification> {
    let mut r = Reader::new(body);
    let version = r.u8(open_error)?;
    if version != 4 {
        return Err(Notification::unsupported_version(4));
    }
    let my_as = r.u16(open_error)?;
    let hold_time = r.u16(open_error)?;
    if hold_time == 1 || hold_time == 2 {
        return Err(Notification::unacceptable_hold_time());
    }
    let bgp_id = r.ipv4(open_error)?;
    if bgp_id.is_unspecified() {
        return Err(Notification::bad_bgp_id());
    }
    let opt_len = usize::from(r.u8(open_error)?);
    if opt_len != r.remaining() {
        return Err(Notification::bad_length(
            u16::try_from(body.len() + HEADER_LEN).unwrap_or(u16::MAX),
        ));
    }
    let mut capabilities = Vec::new();
    while !r.is_empty() {
        let ptype = r.u8(open_error)?;
        let plen = usize::from(r.u8(open_error)?);
        let pval = r.take(plen, open_error)?;
        if ptype != 2 {
            return Err(Notification::unsupported_optional_parameter());
        }
        let mut c = Reader::new(pval);
        while !c.is_empty() {
            let code = c.u8(open_error)?;
            let clen = usize::from(c.u8(open_error)?);
            let cval = c.take(clen, open_error)?;
            capabilities.push(decode_capability(code, cval)?);
        }
    }
    let open = Open {
        version,
        my_as,
        hold_time,
        bgp_id,
        capabilities,
    };
    // A 4-octet AS that fits in 2 octets must match the 2-octet field.
    if let Some(Capability::FourOctetAs(a)) = open
        .capabilities
        .iter()
        .find(|c| matches!(c, Capability::FourOctetAs(_)))
    {
        if let Ok(two) = u16::try_from(*a) {
            if two != my_as {
                return Err(Notification::bad_peer_as());
            }
        } else if my_as != AS_TRANS {
            return Err(Notification::bad_peer_as());
        }
    }
    Ok(open)
}

fn v4_only(nets: Vec<IpNet>) -> Vec<Ipv4Net> {
    nets.into_iter()
        .filter_map(|n| match n {
            IpNet::V4(n) => Some(n),
            IpNet::V6(_) => None,
        })
        .collect()
}

fn decode_update(body: &[u8], ctx: &Context) -> Result<Update, Notification> {
    let malformed = || update_error(1, Vec::new());
    let mut r = Reader::new(body);
    let wlen = usize::from(r.u16(malformed)?);
    let withdrawn = r.take(wlen, malformed)?;
    let alen = usize::from(r.u16(malformed)?);
    let attrs = r.take(alen, malformed)?;
    let nlri = r.rest();
    let invalid = update_error(10, Vec::new());
    let withdrawn = v4_only(read_prefixes(withdrawn, false, invalid.clone())?);
    let nlri = v4_only(read_prefixes(nlri, false, invalid)?);
    let attributes = decode_attributes(attrs, ctx)?;
    let reach = !nlri.is_empty() || attributes.mp_reach.is_some();
    if reach {
        if attributes.origin.is_none() {
            return Err(update_error(3, vec![1]));
        }
        if attributes.as_path.is_none() {
            return Err(update_error(3, vec![2]));
        }
    }
    if !nlri.is_empty() && attributes.next_hop.is_none() {
        return Err(update_error(3, vec![3]));
    }
    Ok(Update {
        withdrawn,
        attributes,
        nlri,
    })
}

fn with_header(ty: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![0xff; 16];
    let len = u16::try_from(HEADER_LEN + body.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.push(ty);
    out.extend_from_slice(body);
    out
}

fn encode_capability(c: &Capability, out: &mut Vec<u8>) {
    let (code, value): (u8, Vec<u8>) = match c {
        Capability::Multiprotocol(a, s) => {
            let mut v = a.code().to_be_bytes().to_vec();
            v.push(0);
            v.push(s.code());
            (1, v)
        }
        Capability::RouteRefresh => (2, Vec::new()),
        Capability::EnhancedRouteRefresh => (70, Vec::new()),
        Capability::GracefulRestart(g) => {
            let mut head = g.time & 0x0fff;
            if g.restarted {
                head |= 0x8000;
            }
            if g.notification {
                head |= 0x4000;
            }
            let mut v = head.to_be_bytes().to_vec();
            for (a, s, fwd) in &g.families {
                v.extend_from_slice(&a.code().to_be_bytes());
                v.push(s.code());
                v.push(if *fwd { 0x80 } else { 0 });
            }
            (64, v)
        }
        Capability::FourOctetAs(a) => (65, a.to_be_bytes().to_vec()),
        Capability::Unknown { code, value } => (*code, value.clone()),
    };
    out.push(code);
    out.push(u8::try_from(value.len()).unwrap_or(u8::MAX));
    out.extend_from_slice(&value);
}

/// Encodes one message, header included. An UPDATE too large for one
/// message is the caller's to split (see `Update` sizes in the speaker).
pub fn encode(m: &Message, ctx: &Context) -> Vec<u8> {
    match m {
        Message::Open(o) => {
            let mut caps = Vec::new();
            for c in &o.capabilities {
                encode_capability(c, &mut caps);
            }
            let mut body = vec![o.version];
            body.extend_from_slice(&o.my_as.to_be_bytes());
            body.extend_from_slice(&o.hold_time.to_be_bytes());
            body.extend_from_slice(&o.bgp_id.octets());
            if caps.is_empty() {
                body.push(0);
            } else {
                // One capabilities parameter per 255 bytes.
                let params: Vec<&[u8]> = caps.chunks(255).collect();
                let mut p = Vec::new();
                for chunk in params {
                    p.push(2);
                    p.push(u8::try_from(chunk.len()).unwrap_or(u8::MAX));
                    p.extend_from_slice(chunk);
                }
                body.push(u8::try_from(p.len()).unwrap_or(u8::MAX));
                body.extend_from_slice(&p);
            }
            with_header(1, &body)
        }
        Message::Update(u) => {
            let mut w = Vec::new();
            for n in &u.withdrawn {
                write_prefix(&mut w, &IpNet::V4(*n));
            }
            let mut a = Vec::new();
            encode_attributes(&u.attributes, ctx, &mut a);
            let mut body = Vec::new();
            body.extend_from_slice(&u16::try_from(w.len()).unwrap_or(u16::MAX).to_be_bytes());
            body.extend_from_slice(&w);
            body.extend_from_slice(&u16::try_from(a.len()).unwrap_or(u16::MAX).to_be_bytes());
            body.extend_from_slice(&a);
            for n in &u.nlri {
                write_prefix(&mut body, &IpNet::V4(*n));
            }
            with_header(2, &body)
        }
        Message::Notification(n) => {
            let mut body = vec![n.code, n.subcode];
            body.extend_from_slice(&n.data);
            with_header(3, &body)
        }
        Message::Keepalive => with_header(4, &[]),
        Message::RouteRefresh(r) => {
            let mut body = r.afi.code().to_be_bytes().to_vec();
            body.push(r.subtype);
            body.push(r.safi.code());
            with_header(5, &body)
        }
    }
}
