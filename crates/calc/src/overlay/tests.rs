use super::*;
use calico_api::NodeBgpSpec;

fn net(s: &str) -> IpNet {
    s.parse().expect("net")
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

/// A typed field from its spelling; `""` is unset.
fn opt<T: std::str::FromStr>(s: &str) -> Option<T>
where
    T::Err: std::fmt::Debug,
{
    (!s.is_empty()).then(|| s.parse().expect("valid test value"))
}

fn node(addr: &str, tunnel: &str) -> NodeSpec {
    NodeSpec {
        bgp: Some(NodeBgpSpec {
            ipv4_address: opt(addr),
            ..NodeBgpSpec::default()
        }),
        ipv4_vxlan_tunnel_addr: opt(tunnel),
        ..NodeSpec::default()
    }
}

fn pool(cidr: &str, mode: EncapMode) -> IpPoolSpec {
    IpPoolSpec {
        vxlan_mode: Some(mode),
        node_selector: "all()".parse().expect("selector"),
        ..IpPoolSpec::new(cidr.parse().expect("pool cidr"))
    }
}

const SETTINGS: TunnelSettings = TunnelSettings {
    vni: 4096,
    port: 4789,
    mtu_v4: 1450,
    mtu_v6: 1430,
};

/// node-1 and node-2 on 10.250.0.0/24, node-3 on 10.250.1.0/24; each
/// owns one block and has its tunnel address at the block's start.
fn cluster(mode: EncapMode) -> OverlayInputs {
    let mut i = OverlayInputs::default();
    i.pools.insert("p".into(), pool("10.244.0.0/16", mode));
    for (n, addr, block) in [
        ("node-1", "10.250.0.1/24", "10.244.1.0/26"),
        ("node-2", "10.250.0.2/24", "10.244.2.0/26"),
        ("node-3", "10.250.1.3/24", "10.244.3.0/26"),
    ] {
        let b = net(block);
        i.nodes.insert(n.into(), node(addr, &b.addr().to_string()));
        i.blocks.insert(b, n.into());
    }
    i
}

fn encap(vtep: &str) -> Hop {
    Hop::Encap {
        vtep: ip(vtep),
        device: DEVICE_V4.into(),
    }
}

#[test]
fn derived_macs_match_calicos() {
    assert_eq!(
        mac_string(&derived_mac("node-1", false)),
        "66:b3:68:28:39:8e"
    );
    assert_eq!(
        mac_string(&derived_mac("node-1", true)),
        "66:24:ac:63:df:6c"
    );
    assert_eq!(
        "66:B3:68:28:39:8e".parse::<calico_api::Mac>().map(|m| m.0),
        Ok(derived_mac("node-1", false))
    );
}

#[test]
fn always_encapsulates_towards_every_node() {
    let o = plan(&cluster(EncapMode::Always), "node-1", &SETTINGS);
    assert!(o.problems.is_empty(), "{:?}", o.problems);
    assert_eq!(
        o.routes,
        BTreeMap::from([
            (net("10.244.2.0/26"), encap("10.244.2.0")),
            (net("10.244.3.0/26"), encap("10.244.3.0")),
        ])
    );
    let [t] = o.tunnels.as_slice() else {
        panic!("one tunnel: {:?}", o.tunnels)
    };
    assert_eq!(t.name, "vxlan.calico");
    assert_eq!((t.vni, t.port, t.mtu), (4096, 4789, 1450));
    assert_eq!(t.local, ip("10.250.0.1"));
    assert_eq!(t.address, ip("10.244.1.0"));
    assert_eq!(t.mac, derived_mac("node-1", false));
    let peers: Vec<(IpAddr, IpAddr)> = t.peers.iter().map(|v| (v.addr, v.host)).collect();
    assert_eq!(
        peers,
        vec![
            (ip("10.244.2.0"), ip("10.250.0.2")),
            (ip("10.244.3.0"), ip("10.250.1.3"))
        ]
    );
}

#[test]
fn cross_subnet_routes_natively_on_the_local_subnet() {
    let i = cluster(EncapMode::CrossSubnet);
    let o = plan(&i, "node-1", &SETTINGS);
    assert_eq!(
        o.routes,
        BTreeMap::from([
            (
                net("10.244.2.0/26"),
                Hop::Native {
                    gateway: ip("10.250.0.2")
                }
            ),
            (net("10.244.3.0/26"), encap("10.244.3.0")),
        ])
    );
    // node-3 is alone on its subnet: everything it sends is encapsulated.
    let o3 = plan(&i, "node-3", &SETTINGS);
    assert!(o3.routes.values().all(|h| matches!(h, Hop::Encap { .. })));
    assert_eq!(o3.routes.len(), 2);
}

#[test]
fn nothing_without_a_vxlan_pool_or_our_tunnel_address() {
    let mut i = cluster(EncapMode::Never);
    assert_eq!(plan(&i, "node-1", &SETTINGS), Overlay::default());
    i = cluster(EncapMode::Always);
    if let Some(n) = i.nodes.get_mut("node-1") {
        n.ipv4_vxlan_tunnel_addr = None;
    }
    assert_eq!(plan(&i, "node-1", &SETTINGS), Overlay::default());
    // A remote node without one yet: not a peer, its block not routed.
    let mut i = cluster(EncapMode::Always);
    if let Some(n) = i.nodes.get_mut("node-3") {
        n.ipv4_vxlan_tunnel_addr = None;
    }
    let o = plan(&i, "node-1", &SETTINGS);
    assert_eq!(
        o.routes.keys().collect::<Vec<_>>(),
        vec![&net("10.244.2.0/26")]
    );
    assert_eq!(o.tunnels[0].peers.len(), 1);
}

#[test]
fn blocks_outside_vxlan_pools_are_left_to_bgp() {
    let mut i = cluster(EncapMode::Always);
    i.pools
        .insert("bgp".into(), pool("10.99.0.0/16", EncapMode::Never));
    i.blocks.insert(net("10.99.0.0/26"), "node-2".into());
    let o = plan(&i, "node-1", &SETTINGS);
    assert!(!o.routes.contains_key(&net("10.99.0.0/26")));
    assert_eq!(vxlan_pool_nets(&i.pools), vec![net("10.244.0.0/16")]);
}

#[test]
fn borrowed_addresses_get_host_routes_to_their_node() {
    let mut i = cluster(EncapMode::Always);
    // A pod on node-3 holding an address of node-2's block, and one on
    // node-2 holding an address of ours.
    i.workloads.insert(
        "a".into(),
        ("node-3".into(), vec![net("10.244.2.9/32")].into()),
    );
    i.workloads.insert(
        "b".into(),
        ("node-2".into(), vec![net("10.244.1.7/32")].into()),
    );
    i.workloads.insert(
        "c".into(),
        ("node-2".into(), vec![net("10.244.2.5/32")].into()),
    );
    let o = plan(&i, "node-1", &SETTINGS);
    assert_eq!(
        o.routes.get(&net("10.244.2.9/32")),
        Some(&encap("10.244.3.0"))
    );
    assert_eq!(
        o.routes.get(&net("10.244.1.7/32")),
        Some(&encap("10.244.2.0"))
    );
    assert!(!o.routes.contains_key(&net("10.244.2.5/32")));
}

#[test]
fn a_vtep_outside_its_nodes_blocks_is_routed_on_the_device() {
    let mut i = cluster(EncapMode::Always);
    if let Some(n) = i.nodes.get_mut("node-3") {
        n.ipv4_vxlan_tunnel_addr = opt("10.244.2.60");
    }
    let o = plan(&i, "node-1", &SETTINGS);
    assert_eq!(
        o.routes.get(&net("10.244.2.60/32")),
        Some(&Hop::Device(DEVICE_V4.into()))
    );
}

#[test]
fn recorded_macs_are_used_else_derived_ones() {
    // (A MAC that is not one never gets this far: the Node does not decode.)
    let mut i = cluster(EncapMode::Always);
    if let Some(n) = i.nodes.get_mut("node-2") {
        n.vxlan_tunnel_mac_addr = opt("66:00:00:00:00:02");
    }
    let o = plan(&i, "node-1", &SETTINGS);
    let peers: Vec<String> = o.tunnels[0]
        .peers
        .iter()
        .map(|v| mac_string(&v.mac))
        .collect();
    assert_eq!(
        peers,
        vec![
            "66:00:00:00:00:02".to_string(),
            mac_string(&derived_mac("node-3", false))
        ]
    );
    assert!(o.problems.is_empty(), "{:?}", o.problems);
}

#[test]
fn ipv6_uses_its_own_device_addresses_and_macs() {
    let mut i = OverlayInputs::default();
    i.pools
        .insert("v6".into(), pool("fd00:244::/48", EncapMode::Always));
    for (n, addr, block) in [
        ("node-1", "fd00:250::1/64", "fd00:244:0:1::/122"),
        ("node-2", "fd00:250::2/64", "fd00:244:0:2::/122"),
    ] {
        let b = net(block);
        let mut spec = node("", "");
        if let Some(bgp) = spec.bgp.as_mut() {
            bgp.ipv6_address = opt(addr);
        }
        spec.ipv6_vxlan_tunnel_addr = opt(&b.addr().to_string());
        i.nodes.insert(n.into(), spec);
        i.blocks.insert(b, n.into());
    }
    let o = plan(&i, "node-1", &SETTINGS);
    let [t] = o.tunnels.as_slice() else {
        panic!("one tunnel: {:?}", o.tunnels)
    };
    assert_eq!(t.name, "vxlan-v6.calico");
    assert_eq!(t.mtu, 1430);
    assert_eq!(t.mac, derived_mac("node-1", true));
    assert_eq!(
        o.routes,
        BTreeMap::from([(
            net("fd00:244:0:2::/122"),
            Hop::Encap {
                vtep: ip("fd00:244:0:2::"),
                device: DEVICE_V6.into()
            }
        )])
    );
}

#[test]
fn tunnel_pools_follow_selector_use_and_state() {
    let mut pools = BTreeMap::new();
    pools.insert("a".into(), pool("10.1.0.0/16", EncapMode::Always));
    let mut b = pool("10.2.0.0/16", EncapMode::CrossSubnet);
    b.node_selector = "zone == 'b'".parse().expect("selector");
    pools.insert("b".into(), b);
    let mut c = pool("10.3.0.0/16", EncapMode::Always);
    c.allowed_uses = vec![IpPoolUse::Workload];
    pools.insert("c".into(), c);
    let mut d = pool("10.4.0.0/16", EncapMode::Always);
    d.disabled = true;
    pools.insert("d".into(), d);
    pools.insert("e".into(), pool("10.5.0.0/16", EncapMode::Never));
    let zone_a = BTreeMap::from([("zone".to_string(), "a".to_string())]);
    let zone_b = BTreeMap::from([("zone".to_string(), "b".to_string())]);
    assert_eq!(
        tunnel_pools(&pools, &zone_a, Family::V4),
        vec![net("10.1.0.0/16")]
    );
    assert_eq!(
        tunnel_pools(&pools, &zone_b, Family::V4),
        vec![net("10.1.0.0/16"), net("10.2.0.0/16")]
    );
    assert!(tunnel_pools(&pools, &zone_b, Family::V6).is_empty());
}

mod index {
    use super::super::BlockIndex;
    use calico_net::IpNet;
    use proptest::prelude::*;
    use std::collections::BTreeMap;
    use std::net::{IpAddr, Ipv4Addr};

    proptest! {
        /// The indexed lookup finds the same owner as a scan of every block.
        #[test]
        fn owner_lookup_equals_a_scan(
            blocks in proptest::collection::btree_map(0u16..1024, 0u8..4, 0..64),
            probes in proptest::collection::vec(any::<u16>(), 1..64),
        ) {
            // Non-overlapping /26 blocks of 10.0.0.0/16, owned by n0..n3.
            let blocks: BTreeMap<IpNet, String> = blocks
                .into_iter()
                .map(|(i, o)| {
                    let start = u32::from(Ipv4Addr::new(10, 0, 0, 0)) + u32::from(i) * 64;
                    (
                        IpNet::new(IpAddr::V4(Ipv4Addr::from(start)), 26).expect("net"),
                        format!("n{o}"),
                    )
                })
                .collect();
            let index = BlockIndex::new(&blocks);
            for p in probes {
                let ip = IpAddr::V4(Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 0, 0, 0)) + u32::from(p)));
                let scan = blocks.iter().find(|(b, _)| b.contains(&ip)).map(|(_, n)| n.as_str());
                prop_assert_eq!(index.owner(ip), scan);
            }
        }
    }
}
