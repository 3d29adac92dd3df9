//! FelixConfiguration: the node agent's settings.
//!
//! Upstream has well over a hundred optional fields; they are kept as written
//! and each known field is checked against its type. Unknown fields are
//! refused so that a typo never silently does nothing.

use crate::kinds::node::{check_duration, LOG_LEVELS};
use crate::validate::Errors;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy)]
enum Ty {
    Bool,
    Int(i64, i64),
    Duration,
    Str,
    /// An IPv4 or IPv6 address.
    Addr,
    OneOf(&'static [&'static str]),
    Strings,
    /// `[{protocol, port, net?}]`
    ProtoPorts,
    /// A port or a port range: `32768`, `"32768"` or `"32768:65535"`.
    PortRange,
    Object,
}

const ACTIONS: &[&str] = &["Drop", "Accept", "Return"];
const ENABLED: &[&str] = &["Enabled", "Disabled"];

const FIELDS: &[(&str, Ty)] = &[
    ("allowIPIPPacketsFromWorkloads", Ty::Bool),
    ("allowVXLANPacketsFromWorkloads", Ty::Bool),
    ("bpfEnabled", Ty::Bool),
    ("bpfLogLevel", Ty::OneOf(&["Off", "Info", "Debug"])),
    ("chainInsertMode", Ty::OneOf(&["Insert", "Append"])),
    ("dataplaneWatchdogTimeout", Ty::Duration),
    ("defaultEndpointToHostAction", Ty::OneOf(ACTIONS)),
    ("deviceRouteProtocol", Ty::Int(1, 255)),
    ("deviceRouteSourceAddress", Ty::Str),
    ("deviceRouteSourceAddressIPv6", Ty::Str),
    ("endpointReportingDelay", Ty::Duration),
    ("endpointReportingEnabled", Ty::Bool),
    ("endpointStatusPathPrefix", Ty::Str),
    ("externalNodesList", Ty::Strings),
    ("failsafeInboundHostPorts", Ty::ProtoPorts),
    ("failsafeOutboundHostPorts", Ty::ProtoPorts),
    ("floatingIPs", Ty::OneOf(ENABLED)),
    // Calico's levels: 0 none, 1 source ports, 2 addresses and pods by
    // prefix too (3, destination prefixes, is refused: not implemented).
    ("flowLogsCollectorDebugTrace", Ty::Bool),
    ("flowLogsFileAggregationKindForAllowed", Ty::Int(0, 2)),
    ("flowLogsFileAggregationKindForDenied", Ty::Int(0, 2)),
    ("flowLogsFileDirectory", Ty::Str),
    ("flowLogsFileEnabled", Ty::Bool),
    ("flowLogsFlushInterval", Ty::Duration),
    ("flowLogsGoldmaneServer", Ty::Str),
    // Calico's local unix socket reporter is not implemented: refused
    // when turned on rather than accepted and ignored.
    ("flowLogsLocalReporter", Ty::OneOf(&["Disabled"])),
    (
        "flowLogsPolicyEvaluationMode",
        Ty::OneOf(&["None", "Continuous"]),
    ),
    ("genericXDPEnabled", Ty::Bool),
    ("healthEnabled", Ty::Bool),
    ("healthHost", Ty::Str),
    ("healthPort", Ty::Int(1, 65535)),
    ("healthTimeoutOverrides", Ty::Object),
    ("interfaceExclude", Ty::Str),
    ("interfacePrefix", Ty::Str),
    ("interfaceRefreshInterval", Ty::Duration),
    ("ipipEnabled", Ty::Bool),
    ("ipipMTU", Ty::Int(0, 65535)),
    ("ipsetsRefreshInterval", Ty::Duration),
    ("iptablesBackend", Ty::OneOf(&["Legacy", "NFT", "Auto"])),
    ("iptablesFilterAllowAction", Ty::OneOf(ACTIONS)),
    ("iptablesMangleAllowAction", Ty::OneOf(ACTIONS)),
    ("iptablesMarkMask", Ty::Int(0, 4_294_967_295)),
    ("iptablesRefreshInterval", Ty::Duration),
    ("ipv6Support", Ty::Bool),
    ("logFilePath", Ty::Str),
    ("logPrefix", Ty::Str),
    ("logSeverityFile", Ty::OneOf(LOG_LEVELS)),
    ("logSeverityScreen", Ty::OneOf(LOG_LEVELS)),
    ("logSeveritySys", Ty::OneOf(LOG_LEVELS)),
    ("maxIpsetSize", Ty::Int(1, 1 << 30)),
    ("metadataAddr", Ty::Str),
    ("metadataPort", Ty::Int(1, 65535)),
    ("mtuIfacePattern", Ty::Str),
    ("natOutgoingAddress", Ty::Addr),
    ("natPortRange", Ty::PortRange),
    ("netlinkTimeout", Ty::Duration),
    ("nftablesFilterAllowAction", Ty::OneOf(ACTIONS)),
    ("nftablesFilterDenyAction", Ty::OneOf(&["Drop", "Reject"])),
    ("nftablesMangleAllowAction", Ty::OneOf(ACTIONS)),
    ("nftablesMarkMask", Ty::Int(0, 4_294_967_295)),
    ("nftablesMode", Ty::OneOf(&["Enabled", "Disabled", "Auto"])),
    ("nftablesRefreshInterval", Ty::Duration),
    ("prometheusGoMetricsEnabled", Ty::Bool),
    ("prometheusMetricsEnabled", Ty::Bool),
    ("prometheusMetricsHost", Ty::Str),
    ("prometheusMetricsPort", Ty::Int(1, 65535)),
    ("prometheusProcessMetricsEnabled", Ty::Bool),
    ("removeExternalRoutes", Ty::Bool),
    ("reportingInterval", Ty::Duration),
    ("reportingTTL", Ty::Duration),
    ("routeRefreshInterval", Ty::Duration),
    ("routeSource", Ty::OneOf(&["WorkloadIPs", "CalicoIPAM"])),
    ("routeSyncDisabled", Ty::Bool),
    ("routeTableRange", Ty::Object),
    ("routeTableRanges", Ty::Object),
    (
        "serviceLoopPrevention",
        Ty::OneOf(&["Drop", "Reject", "Disabled"]),
    ),
    ("sidecarAccelerationEnabled", Ty::Bool),
    ("usageReportingEnabled", Ty::Bool),
    ("useInternalDataplaneDriver", Ty::Bool),
    ("vxlanEnabled", Ty::Bool),
    ("vxlanMTU", Ty::Int(0, 65535)),
    ("vxlanMTUV6", Ty::Int(0, 65535)),
    ("vxlanPort", Ty::Int(1, 65535)),
    ("vxlanVNI", Ty::Int(1, 16_777_215)),
    ("wireguardEnabled", Ty::Bool),
    ("wireguardEnabledV6", Ty::Bool),
    ("wireguardInterfaceName", Ty::Str),
    ("wireguardListeningPort", Ty::Int(1, 65535)),
    ("wireguardMTU", Ty::Int(0, 65535)),
    ("workloadSourceSpoofing", Ty::OneOf(&["Disabled", "Any"])),
    ("xdpEnabled", Ty::Bool),
    ("xdpRefreshInterval", Ty::Duration),
];

/// FelixConfiguration spec: known fields only, values kept as written.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct FelixConfigurationSpec {
    pub fields: BTreeMap<String, Value>,
}

impl FelixConfigurationSpec {
    pub fn get_bool(&self, name: &str) -> Option<bool> {
        self.fields.get(name).and_then(Value::as_bool)
    }

    pub fn get_int(&self, name: &str) -> Option<i64> {
        self.fields.get(name).and_then(Value::as_i64)
    }

    pub fn get_str(&self, name: &str) -> Option<&str> {
        self.fields.get(name).and_then(Value::as_str)
    }

    /// A `[{protocol, port, net?}]` field (failsafe ports), read with the
    /// rules that validated it; None when unset.
    pub fn get_proto_ports(&self, name: &str) -> Option<Vec<ProtoPort>> {
        let list = self.fields.get(name)?.as_array()?;
        Some(list.iter().filter_map(ProtoPort::from_value).collect())
    }

    /// A port-range field (`natPortRange`), read with the rules that
    /// validated it.
    pub fn get_port_range(&self, name: &str) -> Option<(u16, u16)> {
        port_range(self.fields.get(name)?)
    }

    /// A duration field, read with the parser that validated it (so a
    /// stored value that passed validation is never dropped here).
    pub fn get_duration(&self, name: &str) -> Option<std::time::Duration> {
        self.get_str(name)
            .and_then(|t| t.parse::<crate::types::GoDuration>().ok())
            .map(|d| d.value())
    }

    pub(crate) fn check(&self, e: &mut Errors) {
        for (name, value) in &self.fields {
            let path = format!("spec.{name}");
            let Some((_, ty)) = FIELDS.iter().find(|(known, _)| known == name) else {
                e.add(path, "unknown field");
                continue;
            };
            check_value(e, &path, *ty, value);
        }
    }
}

fn check_value(e: &mut Errors, path: &str, ty: Ty, value: &Value) {
    match ty {
        Ty::Bool if !value.is_boolean() => e.add(path, "must be true or false"),
        Ty::Int(lo, hi) => match value.as_i64() {
            Some(n) if (lo..=hi).contains(&n) => {}
            _ => e.add(path, format!("must be a whole number {lo}-{hi}")),
        },
        Ty::Duration => match value.as_str() {
            Some(text) => check_duration(e, path, text),
            None => e.add(path, "must be a duration string (like 90s)"),
        },
        Ty::Str if !value.is_string() => e.add(path, "must be a string"),
        Ty::Addr
            if value
                .as_str()
                .is_none_or(|v| v.parse::<std::net::IpAddr>().is_err()) =>
        {
            e.add(path, "must be an IPv4 or IPv6 address");
        }
        Ty::OneOf(allowed) => match value.as_str() {
            Some(text) => e.one_of(path, text, allowed),
            None => e.add(path, format!("must be one of {}", allowed.join(", "))),
        },
        Ty::Strings
            if !value
                .as_array()
                .is_some_and(|a| a.iter().all(Value::is_string)) =>
        {
            e.add(path, "must be a list of strings");
        }
        Ty::ProtoPorts => check_proto_ports(e, path, value),
        Ty::PortRange if port_range(value).is_none() => e.add(
            path,
            "must be a port or a range of ports (1-65535, low:high)",
        ),
        Ty::Object if !value.is_object() && !value.is_array() => e.add(path, "must be an object"),
        _ => {}
    }
}

/// One failsafe port: traffic of this protocol to this port (and, with
/// `net`, from or to that network) that host endpoint policy never blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ProtoPort {
    /// IANA number: 6 (TCP), 17 (UDP) or 132 (SCTP).
    pub protocol: u8,
    pub port: u16,
    pub net: Option<calico_net::IpNet>,
}

impl ProtoPort {
    fn from_value(v: &Value) -> Option<ProtoPort> {
        let protocol = protocol_number(v.get("protocol")?.as_str()?)?;
        let port = u16::try_from(v.get("port")?.as_u64()?)
            .ok()
            .filter(|p| *p > 0)?;
        let net = match v.get("net") {
            None | Some(Value::Null) => None,
            Some(n) => Some(calico_net::parse_cidr_or_ip(n.as_str()?).ok()?),
        };
        Some(ProtoPort {
            protocol,
            port,
            net,
        })
    }
}

/// A port (`32768`, `"32768"`) or range (`"32768:65535"`), 1-65535, low
/// end first.
pub fn port_range(v: &Value) -> Option<(u16, u16)> {
    let one = |t: &str| t.trim().parse::<u16>().ok().filter(|p| *p > 0);
    let (lo, hi) = match v {
        Value::Number(n) => {
            let p = u16::try_from(n.as_u64()?).ok().filter(|p| *p > 0)?;
            (p, p)
        }
        Value::String(t) => match t.split_once(':') {
            Some((a, b)) => (one(a)?, one(b)?),
            None => (one(t)?, one(t)?),
        },
        _ => return None,
    };
    (lo <= hi).then_some((lo, hi))
}

/// Felix's failsafe ports: inbound SSH, DHCP, BGP, etcd, Typha, the
/// Kubernetes API and etcd's self-hosted ports; outbound DNS, DHCP and
/// the same services.
pub fn failsafe_defaults(inbound: bool) -> Vec<ProtoPort> {
    // BGP, etcd (and its self-hosted ports), Typha, the Kubernetes API.
    const SERVICES: [u16; 7] = [179, 2379, 2380, 5473, 6443, 6666, 6667];
    let own: &[(u8, u16)] = if inbound {
        &[(6, 22), (17, 68)]
    } else {
        &[(17, 53), (17, 67)]
    };
    own.iter()
        .copied()
        .chain(SERVICES.iter().map(|&port| (6, port)))
        .map(|(protocol, port)| ProtoPort {
            protocol,
            port,
            net: None,
        })
        .collect()
}

/// Calico spells the protocol either way round (`TCP`, `tcp`).
fn protocol_number(name: &str) -> Option<u8> {
    match name.to_ascii_uppercase().as_str() {
        "TCP" => Some(6),
        "UDP" => Some(17),
        "SCTP" => Some(132),
        _ => None,
    }
}

fn check_proto_ports(e: &mut Errors, path: &str, value: &Value) {
    let Some(list) = value.as_array() else {
        e.add(path, "must be a list of {protocol, port}");
        return;
    };
    for (i, item) in list.iter().enumerate() {
        let p = format!("{path}[{i}]");
        let Some(obj) = item.as_object() else {
            e.add(p, "must be {protocol, port}");
            continue;
        };
        for key in obj.keys() {
            if !["protocol", "port", "net"].contains(&key.as_str()) {
                e.add(format!("{p}.{key}"), "unknown field");
            }
        }
        match obj.get("protocol").and_then(Value::as_str) {
            Some(proto) if protocol_number(proto).is_some() => {}
            Some(proto) => e.add(
                format!("{p}.protocol"),
                format!("{proto:?} is not one of TCP, UDP, SCTP"),
            ),
            None => e.add(format!("{p}.protocol"), "is required"),
        }
        if !obj
            .get("port")
            .and_then(Value::as_u64)
            .is_some_and(|n| (1..=65535).contains(&n))
        {
            e.add(format!("{p}.port"), "must be 1-65535");
        }
        match obj.get("net") {
            None | Some(Value::Null) => {}
            Some(Value::String(net)) => {
                e.net(&format!("{p}.net"), net);
            }
            Some(_) => e.add(format!("{p}.net"), "must be a CIDR string"),
        }
    }
}
