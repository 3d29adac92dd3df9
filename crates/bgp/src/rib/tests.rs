use super::*;

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}
fn net(s: &str) -> IpNet {
    s.parse().expect("net")
}
fn peer(addr: &str, asn: u32, rr_client: bool) -> PeerInfo {
    PeerInfo {
        addr: ip(addr),
        asn,
        router_id: match ip(addr) {
            IpAddr::V4(a) => a,
            IpAddr::V6(_) => Ipv4Addr::new(9, 9, 9, 9),
        },
        local_addr: ip("10.0.0.1"),
        rr_client,
        ipv4: true,
        ipv6: false,
    }
}
fn path(nh: &str, asns: Vec<u32>) -> Path {
    Path {
        next_hop: ip(nh),
        attrs: Arc::new(Attributes {
            origin: Some(Origin::Igp),
            as_path: Some(AsPath::sequence(asns)),
            local_pref: Some(100),
            ..Attributes::default()
        }),
        stale: false,
    }
}
fn reach_of(ch: &Changes, to: &str) -> Vec<(IpNet, IpAddr)> {
    ch.send
        .get(&ip(to))
        .into_iter()
        .flatten()
        .filter_map(|a| match a {
            Announce::Reach {
                prefix, next_hop, ..
            } => Some((*prefix, *next_hop)),
            Announce::Withdraw(_) => None,
        })
        .collect()
}

#[test]
fn mesh_announces_local_blocks_and_installs_learned_ones() {
    let mut rib = Rib::new(64512, Ipv4Addr::new(10, 0, 0, 1), None);
    rib.set_local(&[net("10.244.1.0/26")].into());
    let ch = rib.peer_up(peer("10.0.0.2", 64512, false));
    assert_eq!(
        reach_of(&ch, "10.0.0.2"),
        vec![(net("10.244.1.0/26"), ip("10.0.0.1"))]
    );
    let ch = rib.update(
        &ip("10.0.0.2"),
        vec![(net("10.244.2.0/26"), Some(path("10.0.0.2", vec![])))],
    );
    assert_eq!(
        ch.fib,
        vec![FibOp::Set(net("10.244.2.0/26"), ip("10.0.0.2"))]
    );
    assert!(
        ch.send.values().all(Vec::is_empty),
        "iBGP routes are not sent back"
    );
    // A second iBGP peer does not get the first one's route (no RR).
    let ch = rib.peer_up(peer("10.0.0.3", 64512, false));
    assert_eq!(
        reach_of(&ch, "10.0.0.3"),
        vec![(net("10.244.1.0/26"), ip("10.0.0.1"))]
    );
    // Withdrawn: out of the kernel.
    let ch = rib.update(&ip("10.0.0.2"), vec![(net("10.244.2.0/26"), None)]);
    assert_eq!(ch.fib, vec![FibOp::Remove(net("10.244.2.0/26"))]);
    // Local prefix removed: withdrawn from everyone.
    let ch = rib.set_local(&BTreeSet::new());
    assert_eq!(ch.send.len(), 2);
    assert!(ch
        .send
        .values()
        .all(|v| v == &vec![Announce::Withdraw(net("10.244.1.0/26"))]));
}

#[test]
fn route_reflector_reflects_with_originator_and_cluster() {
    let cluster = Ipv4Addr::new(244, 0, 0, 1);
    let mut rib = Rib::new(64512, Ipv4Addr::new(10, 0, 0, 1), Some(cluster));
    rib.peer_up(peer("10.0.0.2", 64512, true));
    rib.peer_up(peer("10.0.0.3", 64512, true));
    rib.peer_up(peer("10.0.0.4", 64512, false));
    let ch = rib.update(
        &ip("10.0.0.2"),
        vec![(net("10.244.2.0/26"), Some(path("10.0.0.2", vec![])))],
    );
    assert_eq!(
        reach_of(&ch, "10.0.0.3"),
        vec![(net("10.244.2.0/26"), ip("10.0.0.2"))]
    );
    assert_eq!(
        reach_of(&ch, "10.0.0.4"),
        vec![(net("10.244.2.0/26"), ip("10.0.0.2"))]
    );
    let Some(Announce::Reach { attrs, .. }) = ch.send[&ip("10.0.0.3")].first() else {
        panic!("reflected")
    };
    assert_eq!(attrs.originator_id, Some(Ipv4Addr::new(10, 0, 0, 2)));
    assert_eq!(attrs.cluster_list, vec![cluster]);
    // From a non-client: to clients only.
    let ch = rib.update(
        &ip("10.0.0.4"),
        vec![(net("10.244.4.0/26"), Some(path("10.0.0.4", vec![])))],
    );
    assert_eq!(reach_of(&ch, "10.0.0.2").len(), 1);
    assert_eq!(reach_of(&ch, "10.0.0.3").len(), 1);
    // Our own cluster id coming back is a loop.
    let mut looped = path("10.0.0.3", vec![]);
    Arc::make_mut(&mut looped.attrs).cluster_list = vec![cluster];
    let ch = rib.update(&ip("10.0.0.3"), vec![(net("10.244.9.0/26"), Some(looped))]);
    assert!(ch.fib.is_empty());
}

#[test]
fn ebgp_prepends_and_prefers_shorter_paths() {
    let mut rib = Rib::new(64512, Ipv4Addr::new(10, 0, 0, 1), None);
    rib.peer_up(peer("10.0.0.2", 65001, false));
    rib.peer_up(peer("10.0.0.3", 65002, false));
    rib.peer_up(peer("10.0.0.4", 64512, false));
    rib.update(
        &ip("10.0.0.2"),
        vec![(
            net("192.0.2.0/24"),
            Some(path("10.0.0.2", vec![65001, 65100])),
        )],
    );
    let ch = rib.update(
        &ip("10.0.0.3"),
        vec![(net("192.0.2.0/24"), Some(path("10.0.0.3", vec![65002])))],
    );
    assert_eq!(
        ch.fib,
        vec![FibOp::Set(net("192.0.2.0/24"), ip("10.0.0.3"))]
    );
    let to_2 = ch.send[&ip("10.0.0.2")].clone();
    let Some(Announce::Reach {
        attrs, next_hop, ..
    }) = to_2.first()
    else {
        panic!("sent to the other eBGP peer")
    };
    assert_eq!(attrs.as_path, Some(AsPath::sequence(vec![64512, 65002])));
    assert_eq!(*next_hop, ip("10.0.0.1"));
    assert_eq!(attrs.local_pref, None);
    // Our AS in a received path: a loop, ignored.
    let ch = rib.update(
        &ip("10.0.0.2"),
        vec![(
            net("198.51.100.0/24"),
            Some(path("10.0.0.2", vec![65001, 64512])),
        )],
    );
    assert!(ch.fib.is_empty());
}

#[test]
fn graceful_restart_keeps_routes_until_end_of_rib() {
    let mut rib = Rib::new(64512, Ipv4Addr::new(10, 0, 0, 1), None);
    rib.peer_up(peer("10.0.0.2", 64512, false));
    rib.update(
        &ip("10.0.0.2"),
        vec![
            (net("10.244.2.0/26"), Some(path("10.0.0.2", vec![]))),
            (net("10.244.3.0/26"), Some(path("10.0.0.2", vec![]))),
        ],
    );
    let ch = rib.peer_down(&ip("10.0.0.2"), true);
    assert!(ch.fib.is_empty(), "stale routes keep forwarding");
    assert_eq!(rib.learned().count(), 2);
    rib.peer_up(peer("10.0.0.2", 64512, false));
    rib.update(
        &ip("10.0.0.2"),
        vec![(net("10.244.2.0/26"), Some(path("10.0.0.2", vec![])))],
    );
    let ch = rib.drop_stale(&ip("10.0.0.2"));
    assert_eq!(ch.fib, vec![FibOp::Remove(net("10.244.3.0/26"))]);
    // Without graceful restart the routes go at once.
    let ch = rib.peer_down(&ip("10.0.0.2"), false);
    assert_eq!(ch.fib, vec![FibOp::Remove(net("10.244.2.0/26"))]);
}
