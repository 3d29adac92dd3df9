//! A rule port: one number, a `min:max` range, or a named port.
//! Serialised as Calico does: a number, or a string for ranges and names.

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Port {
    Range { min: u16, max: u16 },
    Named(String),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PortError {
    #[error("port range {min}:{max} is reversed (the first port must not exceed the second)")]
    Reversed { min: u32, max: u32 },
    #[error("port {0} is out of range 0-65535")]
    OutOfRange(i64),
    #[error("{0:?} is not a port, a port range (min:max) or a port name")]
    Syntax(String),
}

fn port_number(text: &str) -> Result<u16, PortError> {
    let n: i64 = text
        .trim()
        .parse()
        .map_err(|_| PortError::Syntax(text.to_string()))?;
    u16::try_from(n).map_err(|_| PortError::OutOfRange(n))
}

/// Port names follow the Kubernetes IANA_SVC_NAME rule: at most 15
/// characters of lower-case letters, digits and '-', with a letter.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 15
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && name.bytes().any(|b| b.is_ascii_lowercase())
        && !name.starts_with('-')
        && !name.ends_with('-')
        && !name.contains("--")
}

impl Port {
    pub fn single(port: u16) -> Self {
        Port::Range {
            min: port,
            max: port,
        }
    }

    pub fn range(min: u16, max: u16) -> Result<Self, PortError> {
        if min > max {
            return Err(PortError::Reversed {
                min: min.into(),
                max: max.into(),
            });
        }
        Ok(Port::Range { min, max })
    }

    pub fn from_number(n: i64) -> Result<Self, PortError> {
        u16::try_from(n)
            .map(Port::single)
            .map_err(|_| PortError::OutOfRange(n))
    }

    /// Parses `"80"`, `"8000:8080"` or a port name such as `"http"`.
    pub fn parse(text: &str) -> Result<Self, PortError> {
        if let Some((lo, hi)) = text.split_once(':') {
            let (min, max) = (port_number(lo)?, port_number(hi)?);
            return Port::range(min, max);
        }
        if text.bytes().all(|b| b.is_ascii_digit()) && !text.is_empty() {
            return port_number(text).map(Port::single);
        }
        if valid_name(text) {
            Ok(Port::Named(text.to_string()))
        } else {
            Err(PortError::Syntax(text.to_string()))
        }
    }

    pub fn is_named(&self) -> bool {
        matches!(self, Port::Named(_))
    }
}

impl fmt::Display for Port {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Port::Range { min, max } if min == max => write!(f, "{min}"),
            Port::Range { min, max } => write!(f, "{min}:{max}"),
            Port::Named(name) => f.write_str(name),
        }
    }
}

impl Serialize for Port {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Port::Range { min, max } if min == max => s.serialize_u16(*min),
            other => s.serialize_str(&other.to_string()),
        }
    }
}

impl<'de> Deserialize<'de> for Port {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = Port;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a port number, a \"min:max\" range or a port name")
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Port, E> {
                Port::from_number(n).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<Port, E> {
                Port::from_number(i64::try_from(n).unwrap_or(i64::MAX)).map_err(E::custom)
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Port, E> {
                Port::parse(s).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        assert_eq!(Port::parse("80").unwrap(), Port::single(80));
        assert_eq!(
            Port::parse("80:90").unwrap(),
            Port::Range { min: 80, max: 90 }
        );
        assert_eq!(
            Port::parse("http-alt").unwrap(),
            Port::Named("http-alt".into())
        );
        assert_eq!(
            Port::parse("90:80").unwrap_err().to_string(),
            "port range 90:80 is reversed (the first port must not exceed the second)"
        );
        assert!(Port::parse("70000").is_err());
        assert!(Port::parse("Http").is_err());
        assert!(Port::parse("").is_err());
        let json: Vec<Port> = serde_json::from_str(r#"[80, "1000:2000", "dns"]"#).unwrap();
        assert_eq!(
            serde_json::to_string(&json).unwrap(),
            r#"[80,"1000:2000","dns"]"#
        );
        assert!(serde_json::from_str::<Port>("-1").is_err());
    }
}
