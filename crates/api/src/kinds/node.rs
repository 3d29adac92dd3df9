//! Node, BGPPeer, BGPConfiguration and ClusterInformation.

use crate::types::{opt, Cidr, GoDuration, InterfaceAddress, Mac, PeerAddress, Selector};
use crate::validate::{as_number, Errors};
use serde::{de, Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

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

/// The longest keepalive: BGP's hold time (three keepalives) is 16 bits of seconds.
const MAX_KEEPALIVE: u64 = 65535 / 3;
/// The longest graceful-restart time: 12 bits of seconds (RFC 4724).
const MAX_RESTART: u64 = 4095;

/// A duration BGP carries in whole seconds, within its field's range.
fn check_at_most(e: &mut Errors, path: &str, d: Option<&GoDuration>, max_secs: u64) {
    if let Some(d) = d {
        if d.value().as_secs() > max_secs {
            e.add(
                path,
                format!("{d} is more than BGP carries ({max_secs}s at most)"),
            );
        }
    }
}

/// Go's duration syntax (`90s`, `1m30s`, `250ms`), for untyped fields.
pub fn check_duration(e: &mut Errors, path: &str, text: &str) {
    if let Err(why) = text.parse::<GoDuration>() {
        e.add(path, why.to_string());
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
        with = "opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub ipv4_address: Option<InterfaceAddress>,
    #[serde(
        default,
        rename = "ipv6Address",
        with = "opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub ipv6_address: Option<InterfaceAddress>,
    #[serde(
        default,
        rename = "ipv4IPIPTunnelAddr",
        with = "opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub ipv4_ipip_tunnel_addr: Option<Ipv4Addr>,
    #[serde(
        default,
        rename = "routeReflectorClusterID",
        with = "opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub route_reflector_cluster_id: Option<Ipv4Addr>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OrchRef {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub node_name: String,
    pub orchestrator: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeAddress {
    pub address: InterfaceAddress,
    #[serde(default, rename = "type", skip_serializing_if = "String::is_empty")]
    pub kind: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeWireguardSpec {
    #[serde(
        default,
        rename = "interfaceIPv4Address",
        with = "opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub interface_ipv4_address: Option<InterfaceAddress>,
    #[serde(
        default,
        rename = "interfaceIPv6Address",
        with = "opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub interface_ipv6_address: Option<InterfaceAddress>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bgp: Option<NodeBgpSpec>,
    #[serde(
        default,
        rename = "ipv4VXLANTunnelAddr",
        with = "opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub ipv4_vxlan_tunnel_addr: Option<Ipv4Addr>,
    #[serde(
        default,
        rename = "vxlanTunnelMACAddr",
        with = "opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub vxlan_tunnel_mac_addr: Option<Mac>,
    #[serde(
        default,
        rename = "ipv6VXLANTunnelAddr",
        with = "opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub ipv6_vxlan_tunnel_addr: Option<Ipv6Addr>,
    #[serde(
        default,
        rename = "vxlanTunnelMACAddrV6",
        with = "opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub vxlan_tunnel_mac_addr_v6: Option<Mac>,
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
            for (field, addr, v4) in [
                ("ipv4Address", &bgp.ipv4_address, true),
                ("ipv6Address", &bgp.ipv6_address, false),
            ] {
                if addr.is_some_and(|a| a.addr().is_ipv4() != v4) {
                    e.add(
                        format!("spec.bgp.{field}"),
                        format!(
                            "{} is not an IPv{} address",
                            addr.expect("checked"),
                            if v4 { 4 } else { 6 }
                        ),
                    );
                }
            }
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
    #[serde(default, skip_serializing_if = "Selector::is_empty")]
    pub node_selector: Selector,
    #[serde(
        default,
        rename = "peerIP",
        with = "opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub peer_ip: Option<PeerAddress>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub as_number: Option<AsNumber>,
    #[serde(default, skip_serializing_if = "Selector::is_empty")]
    pub peer_selector: Selector,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub keep_original_next_hop: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_hop_mode: Option<NextHopMode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<BgpPassword>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_address: Option<SourceAddress>,
    #[serde(default, with = "opt", skip_serializing_if = "Option::is_none")]
    pub max_restart_time: Option<GoDuration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_allowed_local_as_numbers: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_security: Option<u8>,
    #[serde(default, with = "opt", skip_serializing_if = "Option::is_none")]
    pub keepalive_time: Option<GoDuration>,
    #[serde(default, with = "opt", skip_serializing_if = "Option::is_none")]
    pub reachable_by: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<String>,
    #[serde(default, skip_serializing_if = "Selector::is_empty")]
    pub local_workload_selector: Selector,
}

/// Where the BGP speaker listens (`bindMode`): every address, or the node's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BindMode {
    None,
    #[serde(rename = "NodeIP")]
    NodeIp,
}

/// How a BGPPeer's next hop is chosen (`nextHopMode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum NextHopMode {
    Auto,
    #[serde(rename = "Self")]
    SelfHop,
    Keep,
}

/// Which address a BGPPeer session is opened from (`sourceAddress`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SourceAddress {
    #[serde(rename = "UseNodeIP")]
    UseNodeIp,
    None,
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
        e.no_global("spec.nodeSelector", &self.node_selector);
        e.no_global("spec.peerSelector", &self.peer_selector);
        e.no_global("spec.localWorkloadSelector", &self.local_workload_selector);
        check_at_most(
            e,
            "spec.keepaliveTime",
            self.keepalive_time.as_ref(),
            MAX_KEEPALIVE,
        );
        check_at_most(
            e,
            "spec.maxRestartTime",
            self.max_restart_time.as_ref(),
            MAX_RESTART,
        );
        if !self.peer_selector.is_empty() {
            if self.peer_ip.is_some() || self.as_number.is_some() {
                e.add(
                    "spec.peerSelector",
                    "peerSelector cannot be combined with peerIP or asNumber",
                );
            }
        } else if self.peer_ip.is_none() {
            e.add(
                "spec.peerIP",
                "a BGP peer needs peerIP and asNumber, or peerSelector",
            );
        } else if self.as_number.is_none() {
            e.add("spec.asNumber", "is required with peerIP");
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceIpBlock {
    pub cidr: Cidr,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Community {
    pub name: String,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PrefixAdvertisement {
    pub cidr: Cidr,
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bind_mode: Option<BindMode>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ignored_interfaces: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_mesh_password: Option<BgpPassword>,
    #[serde(default, with = "opt", skip_serializing_if = "Option::is_none")]
    pub node_mesh_max_restart_time: Option<GoDuration>,
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
        check_at_most(
            e,
            "spec.nodeMeshMaxRestartTime",
            self.node_mesh_max_restart_time.as_ref(),
            MAX_RESTART,
        );
        if self.listen_port == Some(0) {
            e.add("spec.listenPort", "must be 1-65535");
        }
        for (i, c) in self.communities.iter().enumerate() {
            check_community(e, &format!("spec.communities[{i}].value"), &c.value);
        }
        for (i, pa) in self.prefix_advertisements.iter().enumerate() {
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
