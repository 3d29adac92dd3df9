//! A logged packet read back: its addresses and ports, its length, and
//! what its log prefix says.

use super::Names;
use std::net::IpAddr;

/// A packet's addresses and ports, read from its first bytes: the same
/// tuple the connection tracker keys its connections by.
pub use calico_kernel::conntrack::ConnTuple as Tuple;

/// The IP and transport headers of a logged packet (IPv4, or IPv6 without
/// extension headers), and the sequence number of a TCP SYN (a
/// retransmitted SYN carries its connection's, a new connection that
/// reuses the addresses and ports its own); None if it is neither.
pub fn headers(payload: &[u8]) -> Option<(Tuple, Option<u32>)> {
    let version = payload.first()? >> 4;
    let (src, dst, proto, l4): (IpAddr, IpAddr, u8, &[u8]) = match version {
        4 => {
            let ihl = usize::from(payload[0] & 0x0f) * 4;
            let src: [u8; 4] = payload.get(12..16)?.try_into().ok()?;
            let dst: [u8; 4] = payload.get(16..20)?.try_into().ok()?;
            (
                src.into(),
                dst.into(),
                *payload.get(9)?,
                payload.get(ihl..)?,
            )
        }
        6 => {
            let src: [u8; 16] = payload.get(8..24)?.try_into().ok()?;
            let dst: [u8; 16] = payload.get(24..40)?.try_into().ok()?;
            (src.into(), dst.into(), *payload.get(6)?, payload.get(40..)?)
        }
        _ => return None,
    };
    let ports = Tuple::has_ports(proto) && l4.len() >= 4;
    let port = |at: usize| ports.then(|| u16::from_be_bytes([l4[at], l4[at + 1]]));
    // SYN without ACK: the first packet of a connection.
    let syn = proto == 6 && l4.get(13).is_some_and(|f| f & 0x12 == 0x02);
    let seq = syn.then(|| u32::from_be_bytes([l4[4], l4[5], l4[6], l4[7]]));
    let t = Tuple {
        src,
        dst,
        proto,
        sport: port(0),
        dport: port(2),
    };
    Some((t, seq))
}

/// What a log prefix says: the verdict and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// `<A|D|P><index>|<policy or profile chain>`.
    Rule {
        action: char,
        index: usize,
        chain: String,
    },
    /// `DT<n>|<endpoint chain>`: the end of the endpoint's n-th tier.
    TierEnd { tier: usize, chain: String },
    /// `DN|<endpoint chain>`: no profile allowed it.
    NoProfile { chain: String },
}

pub fn verdict(prefix: &str) -> Option<Verdict> {
    let (head, chain) = prefix.split_once('|')?;
    let chain = chain.to_string();
    if let Some(n) = head.strip_prefix("DT") {
        return Some(Verdict::TierEnd {
            tier: n.parse().ok()?,
            chain,
        });
    }
    if head == "DN" {
        return Some(Verdict::NoProfile { chain });
    }
    let mut chars = head.chars();
    let action = chars.next().filter(|c| matches!(c, 'A' | 'D' | 'P'))?;
    Some(Verdict::Rule {
        action,
        index: chars.as_str().parse().ok()?,
        chain,
    })
}

fn action_word(c: char) -> &'static str {
    match c {
        'A' => "allow",
        'P' => "pass",
        _ => "deny",
    }
}

/// A trace entry, `<position>|<tier>|<policy>|<action>|<rule>` as Calico
/// writes them, with the action; None for a chain this agent did not
/// program.
pub(super) fn entry(names: &Names, v: &Verdict, position: usize) -> Option<(String, &'static str)> {
    Some(match v {
        Verdict::Rule {
            action,
            index,
            chain,
        } => {
            let word = action_word(*action);
            if let Some((tier, name)) = names.policies.get(chain) {
                (format!("{position}|{tier}|{name}|{word}|{index}"), word)
            } else {
                let profile = names.profiles.get(chain)?;
                (
                    format!("{position}|__PROFILE__|__PROFILE__.{profile}|{word}|{index}"),
                    word,
                )
            }
        }
        Verdict::TierEnd { tier, chain } => {
            let name = names.tiers.get(chain)?.get(*tier)?;
            (
                format!("{position}|{name}|{name}.end-of-tier|deny|-1"),
                "deny",
            )
        }
        Verdict::NoProfile { .. } => (
            format!("{position}|__PROFILE__|__NO_MATCH__|deny|-1"),
            "deny",
        ),
    })
}

/// The IP length of a logged packet (its total length field).
pub fn ip_len(payload: &[u8]) -> u64 {
    match payload.first().map(|b| b >> 4) {
        Some(4) => payload
            .get(2..4)
            .map_or(0, |b| u64::from(u16::from_be_bytes([b[0], b[1]]))),
        Some(6) => payload
            .get(4..6)
            .map_or(0, |b| 40 + u64::from(u16::from_be_bytes([b[0], b[1]]))),
        _ => 0,
    }
}
