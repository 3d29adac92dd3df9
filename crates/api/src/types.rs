//! Values parsed once, when a resource is decoded.
//!
//! Every field that holds a selector, a CIDR, an address or a MAC is one of
//! these types, so a decoded resource cannot hold an invalid one and code
//! downstream never parses (or silently drops) them again. Each keeps the
//! spelling Calico users write, so `calicoctl get` prints what was applied.

use calico_net::{parse_cidr_or_ip, parse_network, CidrError, IpNet};
use serde::{de, Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

/// Serde for a value spelled as a string, through `FromStr` and `Display`.
macro_rules! string_serde {
    ($ty:ty, $what:literal) => {
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl de::Visitor<'_> for V {
                    type Value = $ty;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str($what)
                    }
                    fn visit_str<E: de::Error>(self, v: &str) -> Result<$ty, E> {
                        v.parse().map_err(E::custom)
                    }
                }
                d.deserialize_str(V)
            }
        }
    };
}

/// A label selector (`app == 'web' && has(tier)`), parsed when decoded.
/// Empty is `all()`; where an empty selector means "no constraint" instead,
/// callers ask [`Selector::is_empty`]. Equal when written alike.
#[derive(Clone, Debug)]
pub struct Selector {
    text: String,
    parsed: calico_selector::Selector,
}

impl Default for Selector {
    fn default() -> Self {
        Selector {
            text: String::new(),
            parsed: calico_selector::Selector::all(),
        }
    }
}

impl Selector {
    pub fn parse(text: &str) -> Result<Self, calico_selector::ParseError> {
        Ok(Selector {
            parsed: calico_selector::Selector::parse(text)?,
            text: text.to_string(),
        })
    }

    /// As written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Nothing written (or only blanks): `all()`.
    pub fn is_empty(&self) -> bool {
        self.text.trim().is_empty()
    }

    pub fn parsed(&self) -> &calico_selector::Selector {
        &self.parsed
    }

    pub fn matches<L: calico_selector::Labels + ?Sized>(&self, labels: &L) -> bool {
        self.parsed.matches(labels)
    }
}

impl PartialEq for Selector {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}
impl Eq for Selector {}

impl PartialEq<str> for Selector {
    fn eq(&self, other: &str) -> bool {
        self.text == other
    }
}

impl PartialEq<&str> for Selector {
    fn eq(&self, other: &&str) -> bool {
        self.text == *other
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl FromStr for Selector {
    type Err = calico_selector::ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Selector::parse(s)
    }
}
string_serde!(Selector, "a selector expression");

/// A CIDR as rule `nets`, NetworkSets and endpoint networks take it: a
/// network, or a bare address meaning /32 or /128; host bits are cleared,
/// as Calico does. A bare address is printed back bare.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cidr {
    net: IpNet,
    bare: bool,
}

impl Cidr {
    pub fn net(&self) -> IpNet {
        self.net
    }
}

impl From<IpNet> for Cidr {
    fn from(net: IpNet) -> Self {
        Cidr {
            net: net.trunc(),
            bare: false,
        }
    }
}

impl From<IpAddr> for Cidr {
    fn from(ip: IpAddr) -> Self {
        Cidr {
            net: IpNet::from(ip),
            bare: true,
        }
    }
}

impl FromStr for Cidr {
    type Err = CidrError;
    fn from_str(s: &str) -> Result<Self, CidrError> {
        Ok(Cidr {
            net: parse_cidr_or_ip(s)?,
            bare: !s.contains('/'),
        })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.bare {
            write!(f, "{}", self.net.addr())
        } else {
            write!(f, "{}", self.net)
        }
    }
}
string_serde!(Cidr, "a CIDR or an IP address");

/// A CIDR that must name a network exactly, as an IP pool's does: host bits
/// set is an error (it would silently widen or move the pool otherwise).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Network(IpNet);

impl Network {
    pub fn net(&self) -> IpNet {
        self.0
    }
}

impl From<IpNet> for Network {
    fn from(net: IpNet) -> Self {
        Network(net.trunc())
    }
}

impl FromStr for Network {
    type Err = CidrError;
    fn from_str(s: &str) -> Result<Self, CidrError> {
        parse_network(s).map(Network)
    }
}

impl fmt::Display for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}
string_serde!(Network, "a CIDR");

/// An interface's address with its subnet (`10.0.0.5/24`) or alone, as a
/// Node's BGP addresses are written: the host bits are the address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct InterfaceAddress {
    net: IpNet,
    bare: bool,
}

impl InterfaceAddress {
    pub fn addr(&self) -> IpAddr {
        self.net.addr()
    }

    /// The address with its prefix (a bare address as /32 or /128).
    pub fn with_prefix(&self) -> IpNet {
        self.net
    }
}

impl From<IpAddr> for InterfaceAddress {
    fn from(ip: IpAddr) -> Self {
        InterfaceAddress {
            net: IpNet::from(ip),
            bare: true,
        }
    }
}

impl From<IpNet> for InterfaceAddress {
    fn from(net: IpNet) -> Self {
        InterfaceAddress { net, bare: false }
    }
}

impl FromStr for InterfaceAddress {
    type Err = CidrError;
    fn from_str(s: &str) -> Result<Self, CidrError> {
        if let Ok(net) = s.parse::<IpNet>() {
            return Ok(InterfaceAddress { net, bare: false });
        }
        s.parse::<IpAddr>()
            .map(InterfaceAddress::from)
            .map_err(|_| CidrError::Syntax(s.to_string()))
    }
}

impl fmt::Display for InterfaceAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.bare {
            write!(f, "{}", self.net.addr())
        } else {
            write!(f, "{}", self.net)
        }
    }
}
string_serde!(InterfaceAddress, "an IP address, alone or with its prefix");

/// A BGP peer's address: `10.0.0.1`, `10.0.0.1:1179` or `[fd00::1]:1179`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PeerAddress {
    pub ip: IpAddr,
    pub port: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an IP address, IP:port or [IPv6]:port")]
pub struct PeerAddressError(String);

impl FromStr for PeerAddress {
    type Err = PeerAddressError;
    fn from_str(s: &str) -> Result<Self, PeerAddressError> {
        if let Ok(ip) = s.parse() {
            return Ok(PeerAddress { ip, port: None });
        }
        let sock: SocketAddr = s.parse().map_err(|_| PeerAddressError(s.to_string()))?;
        Ok(PeerAddress {
            ip: sock.ip(),
            port: Some(sock.port()),
        })
    }
}

impl fmt::Display for PeerAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.port {
            None => write!(f, "{}", self.ip),
            Some(port) => write!(f, "{}", SocketAddr::new(self.ip, port)),
        }
    }
}
string_serde!(PeerAddress, "an IP address, IP:port or [IPv6]:port");

/// An Ethernet address, written `aa:bb:cc:dd:ee:ff`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Mac(pub [u8; 6]);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a MAC address (aa:bb:cc:dd:ee:ff)")]
pub struct MacError(String);

impl FromStr for Mac {
    type Err = MacError;
    fn from_str(s: &str) -> Result<Self, MacError> {
        let bad = || MacError(s.to_string());
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for byte in &mut out {
            let part = parts.next().ok_or_else(bad)?;
            if part.len() != 2 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad());
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| bad())?;
        }
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(Mac(out))
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}
string_serde!(Mac, "a MAC address");

/// A duration in Go's syntax, as Calico writes them (`90s`, `1m30s`,
/// `1.5h`, `250ms`): parsed once, to the nanosecond; printed as written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GoDuration {
    text: String,
    value: std::time::Duration,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a duration (like 90s, 1m30s, 250ms)")]
pub struct DurationError(String);

impl GoDuration {
    pub fn value(&self) -> std::time::Duration {
        self.value
    }
}

impl FromStr for GoDuration {
    type Err = DurationError;
    fn from_str(s: &str) -> Result<Self, DurationError> {
        let bad = || DurationError(s.to_string());
        if s == "0" {
            return Ok(GoDuration {
                text: s.into(),
                value: std::time::Duration::ZERO,
            });
        }
        let mut rest = s;
        let mut nanos: f64 = 0.0;
        if rest.is_empty() {
            return Err(bad());
        }
        while !rest.is_empty() {
            let digits = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .ok_or_else(bad)?;
            let unit_len = rest[digits..]
                .find(|c: char| c.is_ascii_digit() || c == '.')
                .unwrap_or(rest.len() - digits);
            let (num, unit) = (&rest[..digits], &rest[digits..digits + unit_len]);
            let n: f64 = num.parse().map_err(|_| bad())?;
            let scale = match unit {
                "ns" => 1.0,
                "us" | "µs" => 1e3,
                "ms" => 1e6,
                "s" => 1e9,
                "m" => 60e9,
                "h" => 3600e9,
                _ => return Err(bad()),
            };
            nanos += n * scale;
            rest = &rest[digits + unit_len..];
        }
        // Go's durations stop at about 292 years.
        if !nanos.is_finite() || nanos > 9.2e18 {
            return Err(bad());
        }
        Ok(GoDuration {
            text: s.to_string(),
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            value: std::time::Duration::from_nanos(nanos.round() as u64),
        })
    }
}

impl fmt::Display for GoDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}
string_serde!(GoDuration, "a duration (like 90s, 1m30s, 250ms)");

/// Serde for an optional value Calico spells as a string that may be empty:
/// `""` (or absent) is `None`. Use with `#[serde(default, with = "opt")]`.
pub mod opt {
    use serde::{de, Deserialize, Deserializer, Serialize, Serializer};
    use std::fmt::Display;
    use std::str::FromStr;

    pub fn serialize<T: Serialize, S: Serializer>(v: &Option<T>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => v.serialize(s),
            None => s.serialize_str(""),
        }
    }

    pub fn deserialize<'de, T, D>(d: D) -> Result<Option<T>, D::Error>
    where
        T: FromStr,
        T::Err: Display,
        D: Deserializer<'de>,
    {
        let text = String::deserialize(d)?;
        if text.is_empty() {
            return Ok(None);
        }
        text.parse().map(Some).map_err(|e: T::Err| {
            // Name the value, unless the parser's message already does.
            let why = e.to_string();
            if why.contains(&format!("{text:?}")) {
                de::Error::custom(why)
            } else {
                de::Error::custom(format!("{text:?}: {why}"))
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round<T: Serialize + for<'a> Deserialize<'a>>(text: &str) -> String {
        let v: T = serde_json::from_value(serde_json::Value::String(text.into())).unwrap();
        serde_json::to_value(&v)
            .unwrap()
            .as_str()
            .unwrap()
            .to_string()
    }

    #[test]
    fn spellings_survive_a_round_trip() {
        assert_eq!(round::<Cidr>("10.0.0.1"), "10.0.0.1");
        assert_eq!(round::<Cidr>("10.0.0.1/8"), "10.0.0.0/8");
        assert_eq!(round::<Cidr>("fd00::/64"), "fd00::/64");
        assert_eq!(round::<InterfaceAddress>("10.0.0.5/24"), "10.0.0.5/24");
        assert_eq!(round::<InterfaceAddress>("10.0.0.5"), "10.0.0.5");
        assert_eq!(round::<PeerAddress>("[fd00::1]:1179"), "[fd00::1]:1179");
        assert_eq!(round::<PeerAddress>("10.0.0.1"), "10.0.0.1");
        assert_eq!(round::<Mac>("0A:bb:cc:dd:ee:ff"), "0a:bb:cc:dd:ee:ff");
        assert_eq!(round::<Selector>("app == 'x'"), "app == 'x'");
        assert_eq!(round::<Network>("192.168.0.0/16"), "192.168.0.0/16");
        assert_eq!(round::<GoDuration>("1m30s"), "1m30s");
    }

    #[test]
    fn durations_as_go_writes_them() {
        let d = |s: &str| s.parse::<GoDuration>().map(|d| d.value());
        use std::time::Duration as D;
        assert_eq!(d("90s"), Ok(D::from_secs(90)));
        assert_eq!(d("1m30s"), Ok(D::from_secs(90)));
        assert_eq!(d("1.5h"), Ok(D::from_secs(5400)));
        assert_eq!(d("250ms"), Ok(D::from_millis(250)));
        assert_eq!(d("0"), Ok(D::ZERO));
        for bad in ["", "90", "s", "1d", "1m30", "-5s", "1..5s", "99999999999h"] {
            assert!(d(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn invalid_values_do_not_decode() {
        let bad = |v: &str| serde_json::Value::String(v.into());
        assert!(serde_json::from_value::<Cidr>(bad("10.0.0/8")).is_err());
        assert!(serde_json::from_value::<Network>(bad("192.168.1.0/16")).is_err());
        assert!(serde_json::from_value::<Mac>(bad("aa:bb:cc:dd:ee")).is_err());
        assert!(serde_json::from_value::<Mac>(bad("aa:bb:cc:dd:ee:ff:00")).is_err());
        assert!(serde_json::from_value::<Mac>(bad("+a:bb:cc:dd:ee:ff")).is_err());
        assert!(serde_json::from_value::<Selector>(bad("app ==")).is_err());
        assert!(serde_json::from_value::<PeerAddress>(bad("peer-1")).is_err());
        assert!(serde_json::from_value::<Cidr>(serde_json::json!(7)).is_err());
    }
}
