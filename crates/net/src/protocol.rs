//! An IP protocol as Calico writes it: a name or a number 1-255.

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// The names Calico accepts, with their protocol numbers.
const NAMED: &[(&str, u8)] = &[
    ("TCP", 6),
    ("UDP", 17),
    ("ICMP", 1),
    ("ICMPv6", 58),
    ("SCTP", 132),
    ("UDPLite", 136),
];

/// A protocol, remembering how it was written so it reads back the same.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Protocol {
    Named(String),
    Number(u8),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("unknown protocol {0:?} (expected TCP, UDP, ICMP, ICMPv6, SCTP, UDPLite or 1-255)")]
    Unknown(String),
    #[error("protocol number {0} is out of range 1-255")]
    OutOfRange(i64),
}

impl Protocol {
    pub fn parse(text: &str) -> Result<Self, ProtocolError> {
        if let Ok(n) = text.parse::<i64>() {
            return Protocol::from_number(n);
        }
        NAMED
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(text))
            .map(|_| Protocol::Named(text.to_string()))
            .ok_or_else(|| ProtocolError::Unknown(text.to_string()))
    }

    pub fn from_number(n: i64) -> Result<Self, ProtocolError> {
        match u8::try_from(n) {
            Ok(p) if p > 0 => Ok(Protocol::Number(p)),
            _ => Err(ProtocolError::OutOfRange(n)),
        }
    }

    pub fn tcp() -> Self {
        Protocol::Named("TCP".into())
    }

    /// The IANA protocol number.
    pub fn number(&self) -> u8 {
        match self {
            Protocol::Number(n) => *n,
            Protocol::Named(name) => NAMED
                .iter()
                .find(|(known, _)| known.eq_ignore_ascii_case(name))
                .map_or(0, |(_, n)| *n),
        }
    }

    /// Whether rules with this protocol may match on ports.
    pub fn supports_ports(&self) -> bool {
        matches!(self.number(), 6 | 17 | 132 | 136)
    }

    pub fn is_icmp(&self) -> bool {
        matches!(self.number(), 1 | 58)
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Protocol::Named(n) => f.write_str(n),
            Protocol::Number(n) => write!(f, "{n}"),
        }
    }
}

impl Serialize for Protocol {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Protocol::Named(n) => s.serialize_str(n),
            Protocol::Number(n) => s.serialize_u8(*n),
        }
    }
}

impl<'de> Deserialize<'de> for Protocol {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = Protocol;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a protocol name or number")
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Protocol, E> {
                Protocol::from_number(n).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<Protocol, E> {
                Protocol::from_number(i64::try_from(n).unwrap_or(i64::MAX)).map_err(E::custom)
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Protocol, E> {
                Protocol::parse(s).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_numbers() {
        assert_eq!(Protocol::parse("TCP").unwrap().number(), 6);
        assert_eq!(Protocol::parse("udp").unwrap().number(), 17);
        assert_eq!(Protocol::parse("132").unwrap(), Protocol::Number(132));
        assert!(Protocol::parse("0").is_err());
        assert!(Protocol::parse("GRE").is_err());
        assert!(Protocol::parse("ICMPv6").unwrap().is_icmp());
        assert!(!Protocol::Number(47).supports_ports());
    }
}
