//! IPPool and IPReservation.

use crate::types::{Cidr, Network, Selector};
use crate::validate::Errors;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum EncapMode {
    #[default]
    Never,
    Always,
    CrossSubnet,
}

impl EncapMode {
    pub fn is_never(&self) -> bool {
        *self == EncapMode::Never
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum IpPoolUse {
    Workload,
    Tunnel,
    LoadBalancer,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AssignmentMode {
    Automatic,
    Manual,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IpPoolSpec {
    pub cidr: Network,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vxlan_mode: Option<EncapMode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipip_mode: Option<EncapMode>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub nat_outgoing: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub disabled: bool,
    #[serde(
        default,
        rename = "disableBGPExport",
        skip_serializing_if = "std::ops::Not::not"
    )]
    pub disable_bgp_export: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_size: Option<u8>,
    #[serde(default, skip_serializing_if = "Selector::is_empty")]
    pub node_selector: Selector,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_uses: Vec<IpPoolUse>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assignment_mode: Option<AssignmentMode>,
}

impl IpPoolSpec {
    /// A pool of `cidr` with nothing else set (defaults come with
    /// `Resource::with_defaults`).
    pub fn new(cidr: Network) -> Self {
        IpPoolSpec {
            cidr,
            vxlan_mode: None,
            ipip_mode: None,
            nat_outgoing: false,
            disabled: false,
            disable_bgp_export: false,
            block_size: None,
            node_selector: Selector::default(),
            allowed_uses: Vec::new(),
            assignment_mode: None,
        }
    }

    pub(crate) fn default_fields(&mut self) {
        let v6 = self.cidr.net().addr().is_ipv6();
        self.block_size.get_or_insert(if v6 { 122 } else { 26 });
        self.vxlan_mode.get_or_insert(EncapMode::Never);
        self.ipip_mode.get_or_insert(EncapMode::Never);
        if self.node_selector.is_empty() {
            self.node_selector = Selector::parse("all()").expect("all() is a selector");
        }
        if self.allowed_uses.is_empty() {
            self.allowed_uses = vec![IpPoolUse::Workload, IpPoolUse::Tunnel];
        }
        self.assignment_mode
            .get_or_insert(AssignmentMode::Automatic);
    }

    pub(crate) fn check(&self, e: &mut Errors) {
        let net = self.cidr.net();
        if let Some(bs) = self.block_size {
            let (lo, hi) = if net.addr().is_ipv4() {
                (20, 32)
            } else {
                (116, 128)
            };
            if !(lo..=hi).contains(&bs) {
                e.add(
                    "spec.blockSize",
                    format!("block size {bs} is out of range {lo}-{hi} for this address family"),
                );
            } else if bs < net.prefix_len() {
                e.add(
                    "spec.blockSize",
                    format!("block size /{bs} is larger than the pool {net}"),
                );
            }
        }
        if net.addr().is_ipv6() && self.ipip_mode.is_some_and(|m| !m.is_never()) {
            e.add("spec.ipipMode", "IPIP is not supported for IPv6 pools");
        }
        if net.prefix_len() == 0 && !self.disabled {
            e.add(
                "spec.cidr",
                format!("{net} covers every address; an enabled pool must be smaller"),
            );
        }
        if self.ipip_mode.is_some_and(|m| !m.is_never())
            && self.vxlan_mode.is_some_and(|m| !m.is_never())
        {
            e.add(
                "spec.vxlanMode",
                "ipipMode and vxlanMode cannot both be enabled",
            );
        }
        e.no_global("spec.nodeSelector", &self.node_selector);
        let mut uses = self.allowed_uses.clone();
        uses.sort();
        uses.dedup();
        if uses.len() != self.allowed_uses.len() {
            e.add("spec.allowedUses", "a use is listed twice");
        }
        if self.allowed_uses.contains(&IpPoolUse::LoadBalancer) && self.allowed_uses.len() > 1 {
            e.add(
                "spec.allowedUses",
                "LoadBalancer cannot be combined with other uses",
            );
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IpReservationSpec {
    #[serde(default, rename = "reservedCIDRs")]
    pub reserved_cidrs: Vec<Cidr>,
}

impl IpReservationSpec {
    pub(crate) fn check(&self, _: &mut Errors) {}
}
