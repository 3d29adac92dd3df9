//! IPAM records besides blocks, in Calico's JSON shapes, and their keys.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub use calico_client::keys::ipam::*;

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
