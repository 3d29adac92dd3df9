//! Path attributes (RFC 4271 §4.3, §5; RFC 4760; RFC 1997; RFC 4456).

use crate::error::{update_error, Notification};
use crate::message::Context;
use crate::wire::{read_prefixes, write_prefix, Reader};
use ipnet::IpNet;
use std::net::{IpAddr, Ipv4Addr};

const OPTIONAL: u8 = 0x80;
const TRANSITIVE: u8 = 0x40;
const PARTIAL: u8 = 0x20;
const EXTENDED: u8 = 0x10;

const ORIGIN: u8 = 1;
const AS_PATH: u8 = 2;
const NEXT_HOP: u8 = 3;
const MED: u8 = 4;
const LOCAL_PREF: u8 = 5;
const ATOMIC_AGGREGATE: u8 = 6;
const AGGREGATOR: u8 = 7;
const COMMUNITIES: u8 = 8;
const ORIGINATOR_ID: u8 = 9;
const CLUSTER_LIST: u8 = 10;
const MP_REACH: u8 = 14;
const MP_UNREACH: u8 = 15;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Origin {
    Igp = 0,
    Egp = 1,
    Incomplete = 2,
}

/// One AS_PATH segment: 1 AS_SET, 2 AS_SEQUENCE, 3 AS_CONFED_SEQUENCE,
/// 4 AS_CONFED_SET.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AsSegment {
    pub kind: u8,
    pub asns: Vec<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AsPath {
    pub segments: Vec<AsSegment>,
}

impl AsPath {
    pub fn sequence(asns: Vec<u32>) -> Self {
        if asns.is_empty() {
            return AsPath::default();
        }
        AsPath {
            segments: vec![AsSegment { kind: 2, asns }],
        }
    }

    /// The path length best-path selection compares: each AS in a
    /// sequence counts, a set counts once, confederation segments not at all.
    pub fn length(&self) -> usize {
        self.segments
            .iter()
            .map(|s| match s.kind {
                2 => s.asns.len(),
                1 => 1,
                _ => 0,
            })
            .sum()
    }

    pub fn contains(&self, asn: u32) -> bool {
        self.segments.iter().any(|s| s.asns.contains(&asn))
    }

    /// The neighbouring AS (first of the first sequence), for MED rules.
    pub fn first(&self) -> Option<u32> {
        self.segments
            .first()
            .filter(|s| s.kind == 2)
            .and_then(|s| s.asns.first().copied())
    }

    /// `asn` prepended, as a speaker does when sending to an external peer.
    pub fn prepended(&self, asn: u32) -> AsPath {
        let mut p = self.clone();
        match p.segments.first_mut() {
            Some(s) if s.kind == 2 && s.asns.len() < 255 => s.asns.insert(0, asn),
            _ => p.segments.insert(
                0,
                AsSegment {
                    kind: 2,
                    asns: vec![asn],
                },
            ),
        }
        p
    }
}

/// MP_REACH_NLRI for one address family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MpReach {
    pub afi: u16,
    pub safi: u8,
    /// One next hop, or for IPv6 a global and a link-local one.
    pub next_hops: Vec<IpAddr>,
    pub nlri: Vec<IpNet>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MpUnreach {
    pub afi: u16,
    pub safi: u8,
    pub withdrawn: Vec<IpNet>,
}

/// An attribute this codec does not interpret, kept as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawAttribute {
    pub flags: u8,
    pub code: u8,
    pub value: Vec<u8>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attributes {
    pub origin: Option<Origin>,
    pub as_path: Option<AsPath>,
    pub next_hop: Option<Ipv4Addr>,
    pub med: Option<u32>,
    pub local_pref: Option<u32>,
    pub atomic_aggregate: bool,
    pub aggregator: Option<(u32, Ipv4Addr)>,
    /// Absent when empty.
    pub communities: Vec<u32>,
    pub originator_id: Option<Ipv4Addr>,
    /// Absent when empty.
    pub cluster_list: Vec<Ipv4Addr>,
    pub mp_reach: Option<MpReach>,
    pub mp_unreach: Option<MpUnreach>,
    /// Attributes not interpreted here, by type code.
    pub other: Vec<RawAttribute>,
}

impl Attributes {
    pub fn is_empty(&self) -> bool {
        *self == Attributes::default()
    }
}

/// The whole attribute (flags, code, length, value) as the error data.
fn whole(flags: u8, code: u8, value: &[u8]) -> Vec<u8> {
    let mut v = vec![flags, code];
    if flags & EXTENDED != 0 {
        v.extend_from_slice(&u16::try_from(value.len()).unwrap_or(u16::MAX).to_be_bytes());
    } else {
        v.push(u8::try_from(value.len()).unwrap_or(u8::MAX));
    }
    v.extend_from_slice(value);
    v
}

fn check_len(ok: bool, flags: u8, code: u8, value: &[u8]) -> Result<(), Notification> {
    if ok {
        Ok(())
    } else {
        Err(update_error(5, whole(flags, code, value)))
    }
}

fn as_path(value: &[u8], four: bool) -> Result<AsPath, Notification> {
    let bad = || update_error(11, Vec::new());
    let mut r = Reader::new(value);
    let mut segments = Vec::new();
    while !r.is_empty() {
        let kind = r.u8(bad)?;
        if !(1..=4).contains(&kind) {
            return Err(bad());
        }
        let n = r.u8(bad)?;
        if n == 0 {
            return Err(bad());
        }
        let mut asns = Vec::with_capacity(usize::from(n));
        for _ in 0..n {
            asns.push(if four {
                r.u32(bad)?
            } else {
                u32::from(r.u16(bad)?)
            });
        }
        segments.push(AsSegment { kind, asns });
    }
    Ok(AsPath { segments })
}

fn mp_family(afi: u16, safi: u8) -> Option<bool> {
    match (afi, safi) {
        (1, 1) => Some(false),
        (2, 1) => Some(true),
        _ => None,
    }
}

/// MP_REACH_NLRI; `None` for a family this codec does not carry.
fn mp_reach(value: &[u8]) -> Result<Option<MpReach>, Notification> {
    let bad = || update_error(9, Vec::new());
    let mut r = Reader::new(value);
    let afi = r.u16(bad)?;
    let safi = r.u8(bad)?;
    let Some(v6) = mp_family(afi, safi) else {
        return Ok(None);
    };
    let nh_len = r.u8(bad)?;
    let nh = r.take(usize::from(nh_len), bad)?;
    let mut nr = Reader::new(nh);
    let next_hops = match (v6, nh_len) {
        (false, 4) => vec![IpAddr::V4(nr.ipv4(bad)?)],
        // IPv4 over an IPv6 next hop (RFC 8950) is not carried.
        (true, 16) => vec![IpAddr::V6(nr.ipv6(bad)?)],
        (true, 32) => vec![IpAddr::V6(nr.ipv6(bad)?), IpAddr::V6(nr.ipv6(bad)?)],
        _ => return Err(bad()),
    };
    let _reserved = r.u8(bad)?;
    let nlri = read_prefixes(r.rest(), v6, update_error(9, Vec::new()))?;
    Ok(Some(MpReach {
        afi,
        safi,
        next_hops,
        nlri,
    }))
}

fn mp_unreach(value: &[u8]) -> Result<Option<MpUnreach>, Notification> {
    let bad = || update_error(9, Vec::new());
    let mut r = Reader::new(value);
    let afi = r.u16(bad)?;
    let safi = r.u8(bad)?;
    let Some(v6) = mp_family(afi, safi) else {
        return Ok(None);
    };
    let withdrawn = read_prefixes(r.rest(), v6, update_error(9, Vec::new()))?;
    Ok(Some(MpUnreach {
        afi,
        safi,
        withdrawn,
    }))
}

/// The flags a recognised attribute must carry (optional, transitive).
fn expected_flags(code: u8) -> Option<(bool, bool)> {
    match code {
        ORIGIN | AS_PATH | NEXT_HOP | LOCAL_PREF | ATOMIC_AGGREGATE => Some((false, true)),
        AGGREGATOR | COMMUNITIES => Some((true, true)),
        MED | ORIGINATOR_ID | CLUSTER_LIST | MP_REACH | MP_UNREACH => Some((true, false)),
        _ => None,
    }
}

/// Decodes the path attribute block of an UPDATE.
pub(crate) fn decode_attributes(buf: &[u8], ctx: &Context) -> Result<Attributes, Notification> {
    let malformed = || update_error(1, Vec::new());
    let mut r = Reader::new(buf);
    let mut a = Attributes::default();
    let mut seen = [false; 256];
    while !r.is_empty() {
        let flags = r.u8(malformed)?;
        let code = r.u8(malformed)?;
        let len = if flags & EXTENDED != 0 {
            usize::from(r.u16(malformed)?)
        } else {
            usize::from(r.u8(malformed)?)
        };
        let value = r.take(len, malformed)?;
        if seen[usize::from(code)] {
            return Err(malformed());
        }
        seen[usize::from(code)] = true;
        if let Some((optional, transitive)) = expected_flags(code) {
            if (flags & OPTIONAL != 0) != optional || (flags & TRANSITIVE != 0) != transitive {
                return Err(update_error(4, whole(flags, code, value)));
            }
        } else if flags & OPTIONAL == 0 {
            return Err(update_error(2, whole(flags, code, value)));
        }
        let mut v = Reader::new(value);
        let short = || update_error(5, Vec::new());
        let raw = || RawAttribute {
            flags: flags & !EXTENDED,
            code,
            value: value.to_vec(),
        };
        match code {
            ORIGIN => {
                check_len(len == 1, flags, code, value)?;
                a.origin = Some(match value[0] {
                    0 => Origin::Igp,
                    1 => Origin::Egp,
                    2 => Origin::Incomplete,
                    _ => return Err(update_error(6, whole(flags, code, value))),
                });
            }
            AS_PATH => a.as_path = Some(as_path(value, ctx.four_octet_as)?),
            NEXT_HOP => {
                check_len(len == 4, flags, code, value)?;
                let nh = v.ipv4(short)?;
                if nh.is_unspecified() || nh.is_multicast() || nh.is_broadcast() {
                    return Err(update_error(8, whole(flags, code, value)));
                }
                a.next_hop = Some(nh);
            }
            MED => {
                check_len(len == 4, flags, code, value)?;
                a.med = Some(v.u32(short)?);
            }
            LOCAL_PREF => {
                check_len(len == 4, flags, code, value)?;
                a.local_pref = Some(v.u32(short)?);
            }
            ATOMIC_AGGREGATE => {
                check_len(len == 0, flags, code, value)?;
                a.atomic_aggregate = true;
            }
            AGGREGATOR => {
                let four = ctx.four_octet_as;
                check_len(len == if four { 8 } else { 6 }, flags, code, value)?;
                let asn = if four {
                    v.u32(short)?
                } else {
                    u32::from(v.u16(short)?)
                };
                a.aggregator = Some((asn, v.ipv4(short)?));
            }
            COMMUNITIES => {
                check_len(len.is_multiple_of(4), flags, code, value)?;
                while !v.is_empty() {
                    a.communities.push(v.u32(short)?);
                }
            }
            ORIGINATOR_ID => {
                check_len(len == 4, flags, code, value)?;
                a.originator_id = Some(v.ipv4(short)?);
            }
            CLUSTER_LIST => {
                check_len(len.is_multiple_of(4), flags, code, value)?;
                while !v.is_empty() {
                    a.cluster_list.push(v.ipv4(short)?);
                }
            }
            // MP attributes of a family not carried here are kept as bytes.
            MP_REACH => match mp_reach(value)? {
                Some(m) => a.mp_reach = Some(m),
                None => a.other.push(raw()),
            },
            MP_UNREACH => match mp_unreach(value)? {
                Some(m) => a.mp_unreach = Some(m),
                None => a.other.push(raw()),
            },
            _ => a.other.push(raw()),
        }
    }
    // Kept in type-code order, the order they are sent in.
    a.other.sort_by_key(|o| o.code);
    Ok(a)
}

fn put(out: &mut Vec<u8>, flags: u8, code: u8, value: &[u8]) {
    match u8::try_from(value.len()) {
        Ok(len) => {
            out.extend_from_slice(&[flags & !EXTENDED, code, len]);
        }
        Err(_) => {
            out.extend_from_slice(&[flags | EXTENDED, code]);
            let len = u16::try_from(value.len()).unwrap_or(u16::MAX);
            out.extend_from_slice(&len.to_be_bytes());
        }
    }
    out.extend_from_slice(value);
}

fn encode_as_path(p: &AsPath, four: bool) -> Vec<u8> {
    let mut v = Vec::new();
    for s in &p.segments {
        for chunk in s.asns.chunks(255) {
            v.push(s.kind);
            v.push(u8::try_from(chunk.len()).unwrap_or(u8::MAX));
            for asn in chunk {
                if four {
                    v.extend_from_slice(&asn.to_be_bytes());
                } else {
                    let two = u16::try_from(*asn).unwrap_or(crate::message::AS_TRANS);
                    v.extend_from_slice(&two.to_be_bytes());
                }
            }
        }
    }
    v
}

/// Encodes the attributes in type-code order.
pub(crate) fn encode_attributes(a: &Attributes, ctx: &Context, out: &mut Vec<u8>) {
    let wk = TRANSITIVE;
    let opt = OPTIONAL;
    let opt_t = OPTIONAL | TRANSITIVE;
    let mut others: Vec<&RawAttribute> = a.other.iter().collect();
    others.sort_by_key(|o| o.code);
    let mut others = others.into_iter().peekable();
    let mut flush_others = |out: &mut Vec<u8>, below: u8| {
        while let Some(o) = others.next_if(|o| o.code < below) {
            put(out, o.flags, o.code, &o.value);
        }
    };
    flush_others(out, ORIGIN);
    if let Some(o) = a.origin {
        put(out, wk, ORIGIN, &[o as u8]);
    }
    flush_others(out, AS_PATH);
    if let Some(p) = &a.as_path {
        put(out, wk, AS_PATH, &encode_as_path(p, ctx.four_octet_as));
    }
    flush_others(out, NEXT_HOP);
    if let Some(nh) = a.next_hop {
        put(out, wk, NEXT_HOP, &nh.octets());
    }
    flush_others(out, MED);
    if let Some(m) = a.med {
        put(out, opt, MED, &m.to_be_bytes());
    }
    flush_others(out, LOCAL_PREF);
    if let Some(lp) = a.local_pref {
        put(out, wk, LOCAL_PREF, &lp.to_be_bytes());
    }
    flush_others(out, ATOMIC_AGGREGATE);
    if a.atomic_aggregate {
        put(out, wk, ATOMIC_AGGREGATE, &[]);
    }
    flush_others(out, AGGREGATOR);
    if let Some((asn, id)) = a.aggregator {
        let mut v = Vec::new();
        if ctx.four_octet_as {
            v.extend_from_slice(&asn.to_be_bytes());
        } else {
            let two = u16::try_from(asn).unwrap_or(crate::message::AS_TRANS);
            v.extend_from_slice(&two.to_be_bytes());
        }
        v.extend_from_slice(&id.octets());
        put(out, opt_t, AGGREGATOR, &v);
    }
    flush_others(out, COMMUNITIES);
    if !a.communities.is_empty() {
        let v: Vec<u8> = a.communities.iter().flat_map(|c| c.to_be_bytes()).collect();
        put(out, opt_t, COMMUNITIES, &v);
    }
    flush_others(out, ORIGINATOR_ID);
    if let Some(id) = a.originator_id {
        put(out, opt, ORIGINATOR_ID, &id.octets());
    }
    flush_others(out, CLUSTER_LIST);
    if !a.cluster_list.is_empty() {
        let v: Vec<u8> = a.cluster_list.iter().flat_map(|c| c.octets()).collect();
        put(out, opt, CLUSTER_LIST, &v);
    }
    flush_others(out, MP_REACH);
    if let Some(m) = &a.mp_reach {
        let mut v = Vec::new();
        v.extend_from_slice(&m.afi.to_be_bytes());
        v.push(m.safi);
        let nh: Vec<u8> = m
            .next_hops
            .iter()
            .flat_map(|a| match a {
                IpAddr::V4(a) => a.octets().to_vec(),
                IpAddr::V6(a) => a.octets().to_vec(),
            })
            .collect();
        v.push(u8::try_from(nh.len()).unwrap_or(0));
        v.extend_from_slice(&nh);
        v.push(0);
        for n in &m.nlri {
            write_prefix(&mut v, n);
        }
        put(out, opt, MP_REACH, &v);
    }
    flush_others(out, MP_UNREACH);
    if let Some(m) = &a.mp_unreach {
        let mut v = Vec::new();
        v.extend_from_slice(&m.afi.to_be_bytes());
        v.push(m.safi);
        for n in &m.withdrawn {
            write_prefix(&mut v, n);
        }
        put(out, opt, MP_UNREACH, &v);
    }
    flush_others(out, u8::MAX);
    // A code-255 attribute sorts last.
    for o in others {
        put(out, o.flags, o.code, &o.value);
    }
}

/// Attributes as sent on: the partial bit set on unrecognised optional
/// transitive attributes (RFC 4271 §5), non-transitive unknown ones dropped.
pub fn pass_on(other: &[RawAttribute]) -> Vec<RawAttribute> {
    other
        .iter()
        .filter(|o| o.flags & OPTIONAL != 0 && o.flags & TRANSITIVE != 0)
        .map(|o| RawAttribute {
            flags: o.flags | PARTIAL,
            ..o.clone()
        })
        .collect()
}
