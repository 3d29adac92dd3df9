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

mod model {
    //! The RIB kept incrementally (one entry per prefix, paths shared, the
    //! best remembered) against the same decision taken from scratch over a
    //! plain copy of everything received, after every step of random runs.
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    const PEERS: [(&str, u32, bool); 3] = [
        ("10.0.0.2", 64512, true),
        ("10.0.0.3", 65001, false),
        ("10.0.0.4", 64512, false),
    ];

    #[derive(Debug, Clone)]
    enum Op {
        Update {
            peer: usize,
            prefixes: Vec<usize>,
            path: Option<(usize, usize, u32)>,
        },
        Down {
            peer: usize,
            keep: bool,
        },
        Up(usize),
        DropStale(usize),
        Local(Vec<usize>),
    }

    fn prefix(i: usize) -> IpNet {
        net(&format!("10.244.{i}.0/26"))
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (
                0..3usize,
                prop::collection::vec(0..6usize, 1..4),
                prop::option::of((0..2usize, 0..3usize, prop::sample::select(vec![50u32, 100, 200]))),
            )
                .prop_map(|(peer, prefixes, path)| Op::Update { peer, prefixes, path }),
            1 => (0..3usize, any::<bool>()).prop_map(|(peer, keep)| Op::Down { peer, keep }),
            2 => (0..3usize).prop_map(Op::Up),
            1 => (0..3usize).prop_map(Op::DropStale),
            1 => prop::collection::vec(0..6usize, 0..3).prop_map(Op::Local),
        ]
    }

    /// What was received, kept plainly.
    #[derive(Default)]
    struct Plain {
        adj_in: BTreeMap<IpNet, BTreeMap<PeerId, Path>>,
        local: BTreeSet<IpNet>,
        up: BTreeSet<usize>,
        kernel: BTreeMap<IpNet, IpAddr>,
        sent: BTreeMap<PeerId, BTreeMap<IpNet, IpAddr>>,
    }

    fn follow(plain: &mut Plain, ch: &Changes) {
        for op in &ch.fib {
            match op {
                FibOp::Set(p, nh) => plain.kernel.insert(*p, *nh),
                FibOp::Remove(p) => plain.kernel.remove(p),
            };
        }
        for (peer, list) in &ch.send {
            let sent = plain.sent.entry(*peer).or_default();
            for a in list {
                match a {
                    Announce::Reach {
                        prefix, next_hop, ..
                    } => sent.insert(*prefix, *next_hop),
                    Announce::Withdraw(p) => sent.remove(p),
                };
            }
        }
    }

    /// The best route for `prefix` chosen from scratch.
    fn scratch(rib: &Rib, plain: &Plain, prefix: &IpNet) -> Chosen {
        let local = plain
            .local
            .contains(prefix)
            .then(|| local_path(&local_attrs()));
        let mut cands: Vec<(Source, &Path)> = Vec::new();
        if let Some(p) = &local {
            cands.push((Source::Local, p));
        }
        if let Some(paths) = plain.adj_in.get(prefix) {
            cands.extend(paths.iter().map(|(id, p)| (Source::Peer(*id), p)));
        }
        cands
            .into_iter()
            .min_by(|a, b| rib.compare((&a.0, a.1), (&b.0, b.1)))
            .map(|(s, p)| (s, p.clone()))
    }

    fn check(rib: &Rib, plain: &Plain) -> Result<(), TestCaseError> {
        let mut kernel = BTreeMap::new();
        for i in 0..6 {
            let p = prefix(i);
            let want = scratch(rib, plain, &p);
            let have = rib.best(&p);
            prop_assert_eq!(
                have.as_ref()
                    .map(|(s, x)| (*s, x.next_hop, x.stale, (*x.attrs).clone())),
                want.as_ref()
                    .map(|(s, x)| (*s, x.next_hop, x.stale, (*x.attrs).clone())),
                "best for {}",
                p
            );
            if let Some((Source::Peer(_), x)) = want {
                kernel.insert(p, x.next_hop);
            }
        }
        prop_assert_eq!(
            &plain.kernel,
            &kernel,
            "the kernel follows the best peer routes"
        );
        let learned: BTreeMap<IpNet, IpAddr> = rib.learned().collect();
        prop_assert_eq!(&learned, &kernel);
        prop_assert_eq!(rib.installed(), kernel.len());
        for &i in &plain.up {
            let id = ip(PEERS[i].0);
            let count = plain
                .adj_in
                .values()
                .filter(|m| m.contains_key(&id))
                .count();
            prop_assert_eq!(rib.received(&id), count);
            let sent = plain.sent.get(&id).cloned().unwrap_or_default();
            let out: BTreeMap<IpNet, IpAddr> = rib.adj_out[&id]
                .iter()
                .map(|(p, (nh, _))| (*p, *nh))
                .collect();
            prop_assert_eq!(&sent, &out, "what {} was sent", id);
            let mut memo = Memo::new();
            let exported: BTreeMap<IpNet, IpAddr> = (0..6)
                .map(prefix)
                .filter_map(|p| rib.exported(&id, &p, &mut memo).map(|(nh, _)| (p, nh)))
                .collect();
            prop_assert_eq!(&sent, &exported, "what {} should hold", id);
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(400))]
        #[test]
        fn incremental_rib_matches_a_decision_from_scratch(ops in prop::collection::vec(op(), 1..40)) {
            let mut rib = Rib::new(64512, Ipv4Addr::new(10, 0, 0, 1), Some(Ipv4Addr::new(244, 0, 0, 1)));
            let mut plain = Plain::default();
            for op in ops {
                let ch = match op {
                    Op::Update { peer, prefixes, path: chosen } => {
                        if !plain.up.contains(&peer) {
                            continue;
                        }
                        let id = ip(PEERS[peer].0);
                        // One attribute set for the whole UPDATE, as the codec gives.
                        let path = chosen.map(|(nh, len, lp)| {
                            let mut p = path(["10.0.0.2", "10.0.0.3"][nh], vec![65001; len]);
                            Arc::make_mut(&mut p.attrs).local_pref = Some(lp);
                            p
                        });
                        let routes: Vec<(IpNet, Option<Path>)> =
                            prefixes.iter().map(|&i| (prefix(i), path.clone())).collect();
                        for (p, x) in &routes {
                            match x.as_ref().filter(|x| !rib.loops(&id, x)) {
                                Some(x) => {
                                    plain.adj_in.entry(*p).or_default().insert(id, x.clone());
                                }
                                None => {
                                    if let Some(m) = plain.adj_in.get_mut(p) {
                                        m.remove(&id);
                                    }
                                }
                            }
                        }
                        rib.update(&id, routes)
                    }
                    Op::Down { peer, keep } => {
                        if !plain.up.remove(&peer) {
                            continue;
                        }
                        let id = ip(PEERS[peer].0);
                        for m in plain.adj_in.values_mut() {
                            if keep {
                                if let Some(x) = m.get_mut(&id) {
                                    x.stale = true;
                                }
                            } else {
                                m.remove(&id);
                            }
                        }
                        plain.sent.remove(&id);
                        rib.peer_down(&id, keep)
                    }
                    Op::Up(peer) => {
                        if !plain.up.insert(peer) {
                            continue;
                        }
                        let (addr, asn, client) = PEERS[peer];
                        plain.sent.remove(&ip(addr));
                        rib.peer_up(peer_info(addr, asn, client))
                    }
                    Op::DropStale(peer) => {
                        let id = ip(PEERS[peer].0);
                        for m in plain.adj_in.values_mut() {
                            m.retain(|p, x| !(*p == id && x.stale));
                        }
                        rib.drop_stale(&id)
                    }
                    Op::Local(list) => {
                        plain.local = list.into_iter().map(prefix).collect();
                        rib.set_local(&plain.local)
                    }
                };
                plain.adj_in.retain(|_, m| !m.is_empty());
                follow(&mut plain, &ch);
                check(&rib, &plain)?;
            }
        }
    }

    fn peer_info(addr: &str, asn: u32, rr_client: bool) -> PeerInfo {
        peer(addr, asn, rr_client)
    }
}
