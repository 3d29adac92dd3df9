//! WorkloadEndpoint and HostEndpoint.

use crate::types::{opt, Cidr, Mac};
use crate::validate::Errors;
use calico_net::Protocol;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EndpointPort {
    pub name: String,
    pub protocol: Protocol,
    pub port: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_port: Option<u16>,
    #[serde(
        default,
        rename = "hostIP",
        with = "opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub host_ip: Option<IpAddr>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IpNat {
    #[serde(rename = "internalIP")]
    pub internal_ip: IpAddr,
    #[serde(rename = "externalIP")]
    pub external_ip: IpAddr,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadEndpointSpec {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub orchestrator: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub workload: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub node: String,
    #[serde(
        default,
        rename = "containerID",
        skip_serializing_if = "String::is_empty"
    )]
    pub container_id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub pod: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub endpoint: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub service_account_name: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ip_networks: Vec<Cidr>,
    #[serde(default, rename = "ipNATs", skip_serializing_if = "Vec::is_empty")]
    pub ip_nats: Vec<IpNat>,
    #[serde(
        default,
        rename = "ipv4Gateway",
        with = "opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub ipv4_gateway: Option<IpAddr>,
    #[serde(
        default,
        rename = "ipv6Gateway",
        with = "opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub ipv6_gateway: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub profiles: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub interface_name: String,
    #[serde(default, with = "opt", skip_serializing_if = "Option::is_none")]
    pub mac: Option<Mac>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<EndpointPort>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_spoofed_source_prefixes: Vec<Cidr>,
}

fn check_ports(e: &mut Errors, ports: &[EndpointPort]) {
    for (i, p) in ports.iter().enumerate() {
        let path = format!("spec.ports[{i}]");
        if calico_net::Port::parse(&p.name).map_or(true, |port| !port.is_named()) {
            e.add(
                format!("{path}.name"),
                format!("{:?} is not a valid port name", p.name),
            );
        }
        if !p.protocol.supports_ports() {
            e.add(
                format!("{path}.protocol"),
                format!("{} has no ports", p.protocol),
            );
        }
        if p.port == 0 {
            e.add(format!("{path}.port"), "port must be 1-65535");
        }
        if ports[..i].iter().any(|q| q.name == p.name) {
            e.add(
                format!("{path}.name"),
                format!("port name {:?} is used twice", p.name),
            );
        }
    }
}

impl WorkloadEndpointSpec {
    pub(crate) fn check(&self, e: &mut Errors) {
        for (field, value) in [
            ("node", &self.node),
            ("interfaceName", &self.interface_name),
        ] {
            if value.is_empty() {
                e.add(format!("spec.{field}"), "is required");
            }
        }
        if !self.interface_name.is_empty() {
            if let Err(why) = crate::validate::interface_name(&self.interface_name) {
                e.add("spec.interfaceName", why.to_string());
            }
        }
        for (field, gateway, v4) in [
            ("ipv4Gateway", self.ipv4_gateway, true),
            ("ipv6Gateway", self.ipv6_gateway, false),
        ] {
            if gateway.is_some_and(|g| g.is_ipv4() != v4) {
                e.add(
                    format!("spec.{field}"),
                    format!("must be an IPv{} address", if v4 { 4 } else { 6 }),
                );
            }
        }
        check_ports(e, &self.ports);
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HostEndpointSpec {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub node: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub interface_name: String,
    #[serde(default, rename = "expectedIPs", skip_serializing_if = "Vec::is_empty")]
    pub expected_ips: Vec<IpAddr>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub profiles: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<EndpointPort>,
}

impl HostEndpointSpec {
    pub(crate) fn check(&self, e: &mut Errors) {
        if self.node.is_empty() {
            e.add("spec.node", "is required");
        }
        if !self.interface_name.is_empty() && self.interface_name != "*" {
            if let Err(why) = crate::validate::interface_name(&self.interface_name) {
                e.add("spec.interfaceName", why.to_string());
            }
        }
        if self.interface_name.is_empty() && self.expected_ips.is_empty() {
            e.add("spec", "a host endpoint needs interfaceName or expectedIPs");
        }
        check_ports(e, &self.ports);
    }
}
