//! The VXLAN overlay one node needs, from the datastore (Felix's VXLAN
//! resolver and route resolver): its tunnel devices (`vxlan.calico`,
//! `vxlan-v6.calico`), the remote tunnel endpoints (VTEPs) each device
//! reaches, and how every remote block of a VXLAN pool is routed: through
//! the owner's VTEP, or (CrossSubnet, owner on our subnet) natively via the
//! owner's address. Pure: resources in, one [`Overlay`] value out.

use calico_api::{EncapMode, IpPoolSpec, IpPoolUse, NodeSpec};
use calico_net::IpNet;
use sha1::{Digest, Sha1};
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

/// The IPv4 tunnel device.
pub const DEVICE_V4: &str = "vxlan.calico";
/// The IPv6 tunnel device.
pub const DEVICE_V6: &str = "vxlan-v6.calico";
/// Calico's VNI and UDP port (FelixConfiguration vxlanVNI / vxlanPort).
pub const DEFAULT_VNI: u32 = 4096;
pub const DEFAULT_PORT: u16 = 4789;
/// Bytes VXLAN adds to every packet: outer IPv4 (20) + UDP (8) + VXLAN (8)
/// + inner Ethernet (14); IPv6 outer headers are 20 bytes longer.
pub const OVERHEAD_V4: u32 = 50;
pub const OVERHEAD_V6: u32 = 70;

/// A MAC address.
pub type Mac = [u8; 6];

/// Formats a MAC as Calico stores it (`66:0a:...`).
pub fn mac_string(mac: &Mac) -> String {
    calico_api::Mac(*mac).to_string()
}

/// The VTEP MAC Calico derives for a node that has none recorded: `0x66`
/// (locally administered, unicast) then the first five bytes of the SHA-1
/// of the node's name (`<name>-v6` for the IPv6 device).
pub fn derived_mac(node: &str, v6: bool) -> Mac {
    let name = if v6 {
        format!("{node}-v6")
    } else {
        node.to_string()
    };
    let sha = Sha1::digest(name.as_bytes());
    let mut mac = [0x66u8; 6];
    mac[1..].copy_from_slice(&sha[..5]);
    mac
}

/// IPv4 or IPv6.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn of(ip: IpAddr) -> Family {
        if ip.is_ipv4() {
            Family::V4
        } else {
            Family::V6
        }
    }
    pub fn device(self) -> &'static str {
        match self {
            Family::V4 => DEVICE_V4,
            Family::V6 => DEVICE_V6,
        }
    }
    pub fn overhead(self) -> u32 {
        match self {
            Family::V4 => OVERHEAD_V4,
            Family::V6 => OVERHEAD_V6,
        }
    }
    /// The IPAM handle of a node's tunnel address (Calico's names).
    pub fn tunnel_handle(self, node: &str) -> String {
        match self {
            Family::V4 => format!("vxlan-tunnel-addr-{node}"),
            Family::V6 => format!("vxlan-v6-tunnel-addr-{node}"),
        }
    }
    /// The IPAM attribute `type` of a node's tunnel address.
    pub fn tunnel_type(self) -> &'static str {
        match self {
            Family::V4 => "vxlanTunnelAddress",
            Family::V6 => "vxlanV6TunnelAddress",
        }
    }
}

/// A node's address on the underlay (`spec.bgp.ipv4Address` or
/// `ipv6Address`, with its subnet's length).
pub fn node_address(spec: &NodeSpec, f: Family) -> Option<IpNet> {
    let bgp = spec.bgp.as_ref()?;
    let addr = match f {
        Family::V4 => bgp.ipv4_address,
        Family::V6 => bgp.ipv6_address,
    };
    // The host's own address with its subnet's length (not the network).
    addr.map(|a| a.with_prefix())
}

/// A node's tunnel address as its Node resource records it.
pub fn tunnel_address(spec: &NodeSpec, f: Family) -> Option<IpAddr> {
    match f {
        Family::V4 => spec.ipv4_vxlan_tunnel_addr.map(IpAddr::V4),
        Family::V6 => spec.ipv6_vxlan_tunnel_addr.map(IpAddr::V6),
    }
}

/// A node's VTEP MAC: the one recorded, else the derived one.
pub fn tunnel_mac(node: &str, spec: &NodeSpec, f: Family) -> Mac {
    let recorded = match f {
        Family::V4 => spec.vxlan_tunnel_mac_addr,
        Family::V6 => spec.vxlan_tunnel_mac_addr_v6,
    };
    recorded.map_or_else(|| derived_mac(node, f == Family::V6), |m| m.0)
}

fn pool_net(p: &IpPoolSpec) -> IpNet {
    p.cidr.net()
}

fn is_vxlan(p: &IpPoolSpec) -> bool {
    p.vxlan_mode.is_some_and(|m| m != EncapMode::Never)
}

/// Outgoing NAT from the pools, as Felix sets it up: the CIDRs of the
/// pools with `natOutgoing` (disabled ones too: their workloads keep
/// their addresses), and of every pool (destinations never translated).
pub fn nat_outgoing(
    pools: &BTreeMap<String, IpPoolSpec>,
) -> (
    std::collections::BTreeSet<IpNet>,
    std::collections::BTreeSet<IpNet>,
) {
    (
        pools
            .values()
            .filter(|p| p.nat_outgoing)
            .map(pool_net)
            .collect(),
        pools.values().map(pool_net).collect(),
    )
}

/// The CIDRs of every VXLAN pool (any mode but Never): the agent routes
/// their blocks, so BGP must not install routes inside them.
pub fn vxlan_pool_nets(pools: &BTreeMap<String, IpPoolSpec>) -> Vec<IpNet> {
    pools
        .values()
        .filter(|p| is_vxlan(p))
        .map(pool_net)
        .collect()
}

/// The pools a node's tunnel address of family `f` may come from, as
/// Calico picks them: enabled, VXLAN, of that family, selecting the node,
/// allowing tunnel addresses. Their CIDRs, in name order.
pub fn tunnel_pools(
    pools: &BTreeMap<String, IpPoolSpec>,
    labels: &BTreeMap<String, String>,
    f: Family,
) -> Vec<IpNet> {
    pools
        .values()
        .filter(|p| !p.disabled && is_vxlan(p))
        .filter(|p| p.allowed_uses.is_empty() || p.allowed_uses.contains(&IpPoolUse::Tunnel))
        .filter(|p| p.node_selector.matches(labels))
        .map(pool_net)
        .filter(|n| Family::of(n.addr()) == f)
        .collect()
}

/// The datastore, as far as the overlay cares.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OverlayInputs {
    /// Node name → spec.
    pub nodes: BTreeMap<String, NodeSpec>,
    pub pools: BTreeMap<String, IpPoolSpec>,
    /// Confirmed block affinities: block → node.
    pub blocks: BTreeMap<IpNet, String>,
    /// Workload endpoint key → (node, addresses). One per workload of the
    /// cluster: node names are shared copies.
    pub workloads: BTreeMap<String, (std::sync::Arc<str>, Box<[IpNet]>)>,
}

/// Device settings that come from configuration, not resources.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TunnelSettings {
    pub vni: u32,
    pub port: u16,
    pub mtu_v4: u32,
    pub mtu_v6: u32,
}

impl TunnelSettings {
    /// The MTU of family `f`'s device.
    pub fn mtu(&self, f: Family) -> u32 {
        match f {
            Family::V4 => self.mtu_v4,
            Family::V6 => self.mtu_v6,
        }
    }
}

/// A remote tunnel endpoint: a neighbour entry (`addr` → `mac`) and a
/// forwarding entry (`mac` → `host`) on the device.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Vtep {
    pub addr: IpAddr,
    pub mac: Mac,
    pub host: IpAddr,
}

/// One tunnel device as it should be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tunnel {
    pub name: String,
    pub vni: u32,
    pub port: u16,
    pub mtu: u32,
    pub mac: Mac,
    /// The node's underlay address: the outer source, on the parent device.
    pub local: IpAddr,
    /// The node's own VTEP address (a /32 or /128 on the device).
    pub address: IpAddr,
    pub peers: BTreeSet<Vtep>,
}

/// How a destination is reached.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Hop {
    /// Encapsulated: via the remote VTEP address, on-link on the device.
    Encap { vtep: IpAddr, device: String },
    /// Straight out of the device (a remote VTEP's own address).
    Device(String),
    /// Not encapsulated: via the owner's underlay address.
    Native { gateway: IpAddr },
}

/// Everything the overlay asks of the kernel.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overlay {
    /// Zero, one or two devices (IPv4, IPv6).
    pub tunnels: Vec<Tunnel>,
    pub routes: BTreeMap<IpNet, Hop>,
    /// What could not be used, said once per cause (for the log).
    pub problems: Vec<String>,
}

/// Which node's block holds an address. Blocks never overlap, so the one
/// holding an address is the last that starts at or before it: a log-time
/// lookup (clusters have many thousands of blocks and workloads).
pub(crate) struct BlockIndex<'a> {
    starts: BTreeMap<IpAddr, (&'a IpNet, &'a str)>,
}

impl<'a> BlockIndex<'a> {
    pub(crate) fn new(blocks: &'a BTreeMap<IpNet, String>) -> Self {
        BlockIndex {
            starts: blocks
                .iter()
                .map(|(b, n)| (b.network(), (b, n.as_str())))
                .collect(),
        }
    }

    pub(crate) fn owner(&self, ip: IpAddr) -> Option<&'a str> {
        self.starts
            .range(..=ip)
            .next_back()
            .filter(|(_, (b, _))| b.contains(&ip))
            .map(|(_, (_, n))| *n)
    }
}

struct Remote {
    host: IpNet,
    vtep: Option<(IpAddr, Mac)>,
}

/// The overlay `node` needs.
pub fn plan(inputs: &OverlayInputs, node: &str, settings: &TunnelSettings) -> Overlay {
    let mut out = Overlay::default();
    for f in [Family::V4, Family::V6] {
        plan_family(inputs, node, settings, f, &mut out);
    }
    out
}

fn plan_family(
    inputs: &OverlayInputs,
    node: &str,
    settings: &TunnelSettings,
    f: Family,
    out: &mut Overlay,
) {
    let pools: Vec<(IpNet, EncapMode)> = inputs
        .pools
        .values()
        .filter(|p| is_vxlan(p))
        .filter_map(|p| Some((pool_net(p), p.vxlan_mode?)))
        .filter(|(n, _)| Family::of(n.addr()) == f)
        .collect();
    if pools.is_empty() {
        return;
    }
    let Some(me) = inputs.nodes.get(node) else {
        return;
    };
    let (Some(local), Some(address)) = (node_address(me, f), tunnel_address(me, f)) else {
        // No underlay address or no tunnel address yet: nothing to build.
        return;
    };
    let mac = tunnel_mac(node, me, f);
    let mut remotes: BTreeMap<&str, Remote> = BTreeMap::new();
    for (name, spec) in &inputs.nodes {
        if name == node {
            continue;
        }
        let Some(host) = node_address(spec, f) else {
            continue;
        };
        let vtep = tunnel_address(spec, f).map(|a| (a, tunnel_mac(name, spec, f)));
        remotes.insert(name, Remote { host, vtep });
    }
    let device = f.device().to_string();
    let mode_of = |ip: IpAddr| {
        pools
            .iter()
            .filter(|(n, _)| n.contains(&ip))
            .max_by_key(|(n, _)| n.prefix_len())
            .map(|(_, m)| *m)
    };
    // How to reach something on `owner`, by the pool's mode.
    let hop = |owner: &str, mode: EncapMode| -> Option<Hop> {
        let r = remotes.get(owner)?;
        let same_subnet = local.contains(&r.host.addr());
        if mode == EncapMode::CrossSubnet && same_subnet {
            return Some(Hop::Native {
                gateway: r.host.addr(),
            });
        }
        r.vtep.map(|(vtep, _)| Hop::Encap {
            vtep,
            device: device.clone(),
        })
    };
    let index = BlockIndex::new(&inputs.blocks);
    let owner_of = |ip: IpAddr| index.owner(ip);
    for (block, owner) in &inputs.blocks {
        if owner == node || Family::of(block.addr()) != f {
            continue;
        }
        if let Some(h) = mode_of(block.addr()).and_then(|m| hop(owner, m)) {
            out.routes.insert(*block, h);
        }
    }
    // Addresses borrowed from a block of another node (or of ours) by a
    // workload elsewhere: a host route to where the workload is.
    for (wnode, ips) in inputs.workloads.values() {
        if **wnode == *node {
            continue;
        }
        for ip in ips.iter().filter(|n| Family::of(n.addr()) == f) {
            let a = ip.addr();
            if owner_of(a) == Some(&**wnode) {
                continue;
            }
            if let Some(h) = mode_of(a).and_then(|m| hop(wnode, m)) {
                out.routes.insert(IpNet::from(a), h);
            }
        }
    }
    // A remote VTEP address outside its node's own blocks: a route to it.
    for (name, r) in &remotes {
        if let Some((vtep, _)) = r.vtep {
            if owner_of(vtep) != Some(*name) {
                out.routes
                    .entry(IpNet::from(vtep))
                    .or_insert_with(|| Hop::Device(device.clone()));
            }
        }
    }
    out.tunnels.push(Tunnel {
        name: device.clone(),
        vni: settings.vni,
        port: settings.port,
        mtu: settings.mtu(f),
        mac,
        local: local.addr(),
        address,
        peers: remotes
            .values()
            .filter_map(|r| {
                r.vtep.map(|(addr, mac)| Vtep {
                    addr,
                    mac,
                    host: r.host.addr(),
                })
            })
            .collect(),
    });
}

#[cfg(test)]
mod tests;
