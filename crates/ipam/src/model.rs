//! IPAM records besides blocks, in Calico's JSON shapes, and their keys.

use calico_net::IpNet;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub const CONFIG_KEY: &str = "/calico/ipam/v2/config";
pub const HANDLE_PREFIX: &str = "/calico/ipam/v2/handle/";
pub const HOST_PREFIX: &str = "/calico/ipam/v2/host/";
pub const BLOCK_PREFIX: &str = "/calico/ipam/v2/assignment/";

pub fn family(net: &IpNet) -> u8 {
    if net.addr().is_ipv4() {
        4
    } else {
        6
    }
}

/// `10.0.0.0/26` written as `10.0.0.0-26`, as Calico's keys do.
pub fn cidr_key_part(net: &IpNet) -> String {
    net.to_string().replacen('/', "-", 1)
}

pub fn parse_cidr_key_part(part: &str) -> Option<IpNet> {
    let (addr, len) = part.rsplit_once('-')?;
    format!("{addr}/{len}").parse().ok()
}

pub fn blocks_prefix(family: u8) -> String {
    format!("{BLOCK_PREFIX}ipv{family}/block/")
}

pub fn block_key(net: &IpNet) -> String {
    format!("{}{}", blocks_prefix(family(net)), cidr_key_part(net))
}

pub fn affinities_prefix(node: &str, family: u8) -> String {
    format!("{HOST_PREFIX}{node}/ipv{family}/block/")
}

pub fn affinity_key(node: &str, net: &IpNet) -> String {
    format!(
        "{}{}",
        affinities_prefix(node, family(net)),
        cidr_key_part(net)
    )
}

/// Splits an affinity key into node and block.
pub fn parse_affinity_key(key: &str) -> Option<(String, IpNet)> {
    let rest = key.strip_prefix(HOST_PREFIX)?;
    let (node, rest) = rest.split_once('/')?;
    let (_, cidr) = rest.split_once("/block/")?;
    Some((node.to_string(), parse_cidr_key_part(cidr)?))
}

pub fn handle_key(handle: &str) -> String {
    format!("{HANDLE_PREFIX}{handle}")
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Handle {
    /// Block CIDR -> number of addresses this handle holds there.
    pub block: BTreeMap<String, usize>,
    #[serde(default)]
    pub deleted: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum AffinityState {
    Pending,
    Confirmed,
    PendingDeletion,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Affinity {
    pub state: AffinityState,
    #[serde(default)]
    pub deleted: bool,
}

/// Cluster-wide IPAM settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpamConfig {
    #[serde(rename = "strict_affinity", default)]
    pub strict_affinity: bool,
    #[serde(rename = "auto_allocate_blocks", default = "yes")]
    pub auto_allocate_blocks: bool,
    /// 0 means no limit.
    #[serde(rename = "maxBlocksPerHost", default, skip_serializing_if = "is_zero")]
    pub max_blocks_per_host: usize,
}

fn yes() -> bool {
    true
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl Default for IpamConfig {
    fn default() -> Self {
        IpamConfig {
            strict_affinity: false,
            auto_allocate_blocks: true,
            max_blocks_per_host: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        let v4: IpNet = "192.168.1.64/26".parse().unwrap();
        assert_eq!(
            block_key(&v4),
            "/calico/ipam/v2/assignment/ipv4/block/192.168.1.64-26"
        );
        assert_eq!(
            affinity_key("node-1", &v4),
            "/calico/ipam/v2/host/node-1/ipv4/block/192.168.1.64-26"
        );
        assert_eq!(
            parse_affinity_key(&affinity_key("node-1", &v4)),
            Some(("node-1".into(), v4))
        );
        let v6: IpNet = "fd00::40/122".parse().unwrap();
        assert_eq!(
            block_key(&v6),
            "/calico/ipam/v2/assignment/ipv6/block/fd00::40-122"
        );
        assert_eq!(parse_cidr_key_part("fd00::40-122"), Some(v6));
        assert_eq!(
            handle_key("k8s-pod-network.abc"),
            "/calico/ipam/v2/handle/k8s-pod-network.abc"
        );
    }
}
