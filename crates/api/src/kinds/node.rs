//! Node, BGPPeer, BGPConfiguration and ClusterInformation.

use crate::validate::{as_number, Errors};
use serde::{de, Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// An AS number; reads `64512` or `"1.10"` (asdot), writes a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AsNumber(pub u32);

impl Serialize for AsNumber {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u32(self.0)
    }
}

impl<'de> Deserialize<'de> for AsNumber {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = AsNumber;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an AS number (1-4294967295 or asdot like 1.10)")
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<AsNumber, E> {
                as_number(&n.to_string()).map(AsNumber).map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<AsNumber, E> {
                as_number(&n.to_string()).map(AsNumber).map_err(E::custom)
            }
            fn visit_f64<E: de::Error>(self, n: f64) -> Result<AsNumber, E> {
                as_number(&n.to_string()).map(AsNumber).map_err(E::custom)
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<AsNumber, E> {
                as_number(s).map(AsNumber).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// Go's duration syntax (`90s`, `1m30s`, `250ms`), as Calico durations are written.
pub fn check_duration(e: &mut Errors, path: &str, text: &str) {
    let mut rest = text;
    let mut any = false;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let unit_len = rest[digits..]
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len() - digits);
        let (num, unit) = (&rest[..digits], &rest[digits..digits + unit_len]);
        if num.is_empty()
            || num.parse::<f64>().is_err()
            || !["ns", "us", "µs", "ms", "s", "m", "h"].contains(&unit)
        {
            e.add(
                path,
                format!("{text:?} is not a duration (like 90s, 1m30s, 250ms)"),
            );
            return;
        }
        any = true;
        rest = &rest[digits + unit_len..];
    }
    if !any && text != "0" {
        e.add(
            path,
            format!("{text:?} is not a duration (like 90s, 1m30s, 250ms)"),
        );
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeBgpSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub as_number: Option<AsNumber>,
    #[serde(
        default,
        rename = "ipv4Address",
        skip_serializing_if = "String::is_empty"
    )]
    pub ipv4_address: String,
    #[serde(
        default,
        rename = "ipv6Address",
        skip_serializing_if = "String::is_empty"
    )]
    pub ipv6_address: String,
    #[serde(
        default,
        rename = "ipv4IPIPTunnelAddr",
        skip_serializing_if = "String::is_empty"
    )]
    pub ipv4_ipip_tunnel_addr: String,
    #[serde(
        default,
        rename = "routeReflectorClusterID",
        skip_serializing_if = "String::is_empty"
    )]
    pub route_reflector_cluster_id: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OrchRef {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub node_name: String,
    pub orchestrator: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeAddress {
    pub address: String,
    #[serde(default, rename = "type", skip_serializing_if = "String::is_empty")]
    pub kind: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeWireguardSpec {
    #[serde(
        default,
        rename = "interfaceIPv4Address",
        skip_serializing_if = "String::is_empty"
    )]
    pub interface_ipv4_address: String,
    #[serde(
        default,
        rename = "interfaceIPv6Address",
        skip_serializing_if = "String::is_empty"
    )]
    pub interface_ipv6_address: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bgp: Option<NodeBgpSpec>,
    #[serde(
        default,
        rename = "ipv4VXLANTunnelAddr",
        skip_serializing_if = "String::is_empty"
    )]
    pub ipv4_vxlan_tunnel_addr: String,
    #[serde(
        default,
        rename = "vxlanTunnelMACAddr",
        skip_serializing_if = "String::is_empty"
    )]
    pub vxlan_tunnel_mac_addr: String,
    #[serde(
        default,
        rename = "ipv6VXLANTunnelAddr",
        skip_serializing_if = "String::is_empty"
    )]
    pub ipv6_vxlan_tunnel_addr: String,
    #[serde(
        default,
        rename = "vxlanTunnelMACAddrV6",
        skip_serializing_if = "String::is_empty"
    )]
    pub vxlan_tunnel_mac_addr_v6: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub orch_refs: Vec<OrchRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wireguard: Option<NodeWireguardSpec>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<NodeAddress>,
}

impl NodeSpec {
    pub(crate) fn check(&self, e: &mut Errors) {
        if let Some(bgp) = &self.bgp {
            if !bgp.ipv4_address.is_empty() {
                e.net("spec.bgp.ipv4Address", &bgp.ipv4_address);
            }
            if !bgp.ipv6_address.is_empty() {
                e.net("spec.bgp.ipv6Address", &bgp.ipv6_address);
            }
            if !bgp.ipv4_ipip_tunnel_addr.is_empty() {
                e.ip("spec.bgp.ipv4IPIPTunnelAddr", &bgp.ipv4_ipip_tunnel_addr);
            }
            if !bgp.route_reflector_cluster_id.is_empty()
                && bgp
                    .route_reflector_cluster_id
                    .parse::<std::net::Ipv4Addr>()
                    .is_err()
            {
                e.add(
                    "spec.bgp.routeReflectorClusterID",
                    "must be written as an IPv4 address (like 224.0.0.1)",
                );
            }
        }
        for (field, value) in [
            ("ipv4VXLANTunnelAddr", &self.ipv4_vxlan_tunnel_addr),
            ("ipv6VXLANTunnelAddr", &self.ipv6_vxlan_tunnel_addr),
        ] {
            if !value.is_empty() {
                e.ip(&format!("spec.{field}"), value);
            }
        }
        for (i, a) in self.addresses.iter().enumerate() {
            e.net(&format!("spec.addresses[{i}].address"), &a.address);
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretKeyRef {
    pub name: String,
    pub key: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BgpPassword {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key_ref: Option<SecretKeyRef>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BgpPeerSpec {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub node: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub node_selector: String,
    #[serde(default, rename = "peerIP", skip_serializing_if = "String::is_empty")]
    pub peer_ip: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub as_number: Option<AsNumber>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub peer_selector: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub keep_original_next_hop: bool,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub next_hop_mode: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<BgpPassword>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub source_address: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub max_restart_time: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_allowed_local_as_numbers: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_security: Option<u8>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub keepalive_time: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reachable_by: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub local_workload_selector: String,
}

/// Splits `peerIP` into address and optional port: `10.0.0.1`, `10.0.0.1:179`, `[fd00::1]:179`.
pub fn split_peer_ip(text: &str) -> Option<(std::net::IpAddr, Option<u16>)> {
    if let Ok(ip) = text.parse() {
        return Some((ip, None));
    }
    let sock: std::net::SocketAddr = text.parse().ok()?;
    Some((sock.ip(), Some(sock.port())))
}

impl BgpPeerSpec {
    /// Fields this speaker cannot honour and whose absence would let more
    /// through (unfiltered routes, no TTL check): refused, never ignored.
    pub fn unsupported(&self) -> Vec<(&'static str, &'static str)> {
        let mut out = Vec::new();
        if !self.filters.is_empty() {
            out.push((
                "spec.filters",
                "BGPFilter is not supported: the peer's routes would be imported and exported unfiltered",
            ));
        }
        if self.ttl_security.is_some() {
            out.push((
                "spec.ttlSecurity",
                "TTL security (GTSM) is not supported: packets from farther away would be accepted",
            ));
        }
        out
    }

    pub(crate) fn check(&self, e: &mut Errors) {
        for (field, why) in self.unsupported() {
            e.add(field, why);
        }
        if !self.node.is_empty() && !self.node_selector.is_empty() {
            e.add(
                "spec.nodeSelector",
                "node and nodeSelector cannot both be set",
            );
        }
        if !self.node_selector.is_empty() {
            e.selector("spec.nodeSelector", &self.node_selector, false);
        }
        if !self.peer_selector.is_empty() {
            e.selector("spec.peerSelector", &self.peer_selector, false);
            if !self.peer_ip.is_empty() || self.as_number.is_some() {
                e.add(
                    "spec.peerSelector",
                    "peerSelector cannot be combined with peerIP or asNumber",
                );
            }
        } else if self.peer_ip.is_empty() {
            e.add(
                "spec.peerIP",
                "a BGP peer needs peerIP and asNumber, or peerSelector",
            );
        } else {
            if split_peer_ip(&self.peer_ip).is_none() {
                e.add(
                    "spec.peerIP",
                    format!(
                        "{:?} is not an IP address (optionally with :port)",
                        self.peer_ip
                    ),
                );
            }
            if self.as_number.is_none() {
                e.add("spec.asNumber", "is required with peerIP");
            }
        }
        if !self.source_address.is_empty() {
            e.one_of(
                "spec.sourceAddress",
                &self.source_address,
                &["UseNodeIP", "None"],
            );
        }
        if !self.next_hop_mode.is_empty() {
            e.one_of(
                "spec.nextHopMode",
                &self.next_hop_mode,
                &["Auto", "Self", "Keep"],
            );
        }
        for (field, value) in [
            ("maxRestartTime", &self.max_restart_time),
            ("keepaliveTime", &self.keepalive_time),
        ] {
            if !value.is_empty() {
                check_duration(e, &format!("spec.{field}"), value);
            }
        }
        if !self.local_workload_selector.is_empty() {
            e.selector(
                "spec.localWorkloadSelector",
                &self.local_workload_selector,
                false,
            );
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceIpBlock {
    pub cidr: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Community {
    pub name: String,
    pub value: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PrefixAdvertisement {
    pub cidr: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub communities: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BgpConfigurationSpec {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub log_severity_screen: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_to_node_mesh_enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub as_number: Option<AsNumber>,
    #[serde(
        default,
        rename = "serviceLoadBalancerIPs",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub service_load_balancer_ips: Vec<ServiceIpBlock>,
    #[serde(
        default,
        rename = "serviceExternalIPs",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub service_external_ips: Vec<ServiceIpBlock>,
    #[serde(
        default,
        rename = "serviceClusterIPs",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub service_cluster_ips: Vec<ServiceIpBlock>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen_port: Option<u16>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub communities: Vec<Community>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prefix_advertisements: Vec<PrefixAdvertisement>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub bind_mode: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ignored_interfaces: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_mesh_password: Option<BgpPassword>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub node_mesh_max_restart_time: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub program_cluster_routes: Option<String>,
}

pub(crate) const LOG_LEVELS: &[&str] = &[
    "Trace", "Debug", "Info", "Warning", "Error", "Fatal", "Panic",
];

impl BgpConfigurationSpec {
    pub(crate) fn check(&self, e: &mut Errors) {
        if !self.log_severity_screen.is_empty() {
            e.one_of(
                "spec.logSeverityScreen",
                &self.log_severity_screen,
                LOG_LEVELS,
            );
        }
        for (field, list) in [
            ("serviceLoadBalancerIPs", &self.service_load_balancer_ips),
            ("serviceExternalIPs", &self.service_external_ips),
            ("serviceClusterIPs", &self.service_cluster_ips),
        ] {
            for (i, b) in list.iter().enumerate() {
                e.net(&format!("spec.{field}[{i}].cidr"), &b.cidr);
            }
        }
        if self.listen_port == Some(0) {
            e.add("spec.listenPort", "must be 1-65535");
        }
        for (i, c) in self.communities.iter().enumerate() {
            check_community(e, &format!("spec.communities[{i}].value"), &c.value);
        }
        for (i, pa) in self.prefix_advertisements.iter().enumerate() {
            e.net(&format!("spec.prefixAdvertisements[{i}].cidr"), &pa.cidr);
            for (j, c) in pa.communities.iter().enumerate() {
                if !self.communities.iter().any(|known| &known.name == c) {
                    check_community(
                        e,
                        &format!("spec.prefixAdvertisements[{i}].communities[{j}]"),
                        c,
                    );
                }
            }
        }
        if !self.bind_mode.is_empty() {
            e.one_of("spec.bindMode", &self.bind_mode, &["None", "NodeIP"]);
        }
        if !self.node_mesh_max_restart_time.is_empty() {
            check_duration(
                e,
                "spec.nodeMeshMaxRestartTime",
                &self.node_mesh_max_restart_time,
            );
        }
    }
}

/// A standard (`aa:nn`) or large (`aa:nn:mm`) community.
fn check_community(e: &mut Errors, path: &str, value: &str) {
    let parts: Vec<&str> = value.split(':').collect();
    let ok = match parts.len() {
        2 => parts.iter().all(|p| p.parse::<u16>().is_ok()),
        3 => parts.iter().all(|p| p.parse::<u32>().is_ok()),
        _ => false,
    };
    if !ok {
        e.add(
            path,
            format!("{value:?} is not a community (aa:nn or aa:nn:mm) or a named community"),
        );
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClusterInformationSpec {
    #[serde(
        default,
        rename = "clusterGUID",
        skip_serializing_if = "String::is_empty"
    )]
    pub cluster_guid: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cluster_type: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub calico_version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datastore_ready: Option<bool>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub variant: String,
}
