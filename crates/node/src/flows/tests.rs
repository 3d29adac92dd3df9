//! The collector's pure parts: packets and prefixes read back, aggregation, accounting.

use super::packet::{headers, verdict, Verdict};
use super::*;
use calico_kernel::conntrack::Table;
use calico_kernel::Logged;

fn v4(src: [u8; 4], dst: [u8; 4], proto: u8, sport: u16, dport: u16) -> Vec<u8> {
    let mut p = vec![0x45, 0, 0, 40, 0, 0, 0, 0, 64, proto, 0, 0];
    p.extend(src);
    p.extend(dst);
    p.extend(sport.to_be_bytes());
    p.extend(dport.to_be_bytes());
    p.extend([0u8; 16]);
    p
}

fn names() -> Names {
    let mut n = Names::default();
    n.policies
        .insert("p-aaa-in".into(), ("default".into(), "shop/db".into()));
    n.policies
        .insert("p-bbb-in".into(), ("security".into(), "audit".into()));
    n.profiles.insert("r-ccc-in".into(), "kns.shop".into());
    n.tiers
        .insert("tw-cali1".into(), vec!["security".into(), "default".into()]);
    let w = |name: &str| Workload {
        namespace: "shop".into(),
        name: name.into(),
        generate_name: None,
        labels: Box::new([("app".into(), name.into())]),
    };
    n.workloads.update(|m| {
        m.insert(
            "10.0.0.1".parse().expect("ip"),
            std::sync::Arc::new(w("web")),
        )
    });
    n.workloads.update(|m| {
        m.insert(
            "10.0.0.2".parse().expect("ip"),
            std::sync::Arc::new(w("db")),
        )
    });
    n
}

/// The tracker's table holding one connection, 10.0.0.1:40000 →
/// 10.0.0.2:5432 (TCP), with id `id` and counters `[packets, bytes]`
/// source to destination, then back.
fn table(id: u64, c: [u64; 4]) -> Table {
    Table {
        conns: vec![calico_kernel::conntrack::Conn {
            id,
            tuple: headers(&v4([10, 0, 0, 1], [10, 0, 0, 2], 6, 40000, 5432))
                .expect("headers")
                .0,
            orig_packets: c[0],
            orig_bytes: c[1],
            reply_packets: c[2],
            reply_bytes: c[3],
            closed: false,
        }],
        unreadable: 0,
    }
}

fn logged(group: u16, prefix: &str, payload: Vec<u8>) -> Logged {
    Logged {
        group,
        prefix: prefix.into(),
        mark: 0,
        payload,
    }
}

#[test]
fn prefixes_and_headers_read_back() {
    assert_eq!(
        verdict("A3|p-aaa-in"),
        Some(Verdict::Rule {
            action: 'A',
            index: 3,
            chain: "p-aaa-in".into()
        })
    );
    assert_eq!(
        verdict("DT1|tw-cali1"),
        Some(Verdict::TierEnd {
            tier: 1,
            chain: "tw-cali1".into()
        })
    );
    assert_eq!(verdict("calico-packet: "), None);
    assert_eq!(verdict("X1|p"), None);
    let (t, seq) = headers(&v4([10, 0, 0, 1], [10, 0, 0, 2], 6, 40000, 5432)).expect("tuple");
    assert_eq!(seq, None, "not a SYN");
    assert_eq!((t.proto, t.sport, t.dport), (6, Some(40000), Some(5432)));
    assert_eq!(headers(&[0x45, 0]), None, "truncated");
}

#[test]
fn connections_aggregate_by_endpoint_port_action_and_trace() {
    let n = names();
    let mut a = Aggregator::default();
    for sport in [40000, 40001, 40001] {
        let pkt = v4([10, 0, 0, 1], [10, 0, 0, 2], 6, sport, 5432);
        assert_eq!(a.add(&n, &logged(1, "P0|p-bbb-in", pkt.clone()), 100), None);
        assert_eq!(
            a.add(&n, &logged(1, "A2|p-aaa-in", pkt), 101),
            Some(("1|default|shop/db|allow|2", "dst"))
        );
    }
    a.add(
        &n,
        &logged(
            1,
            "DT1|tw-cali1",
            v4([192, 0, 2, 9], [10, 0, 0, 2], 6, 5555, 80),
        ),
        102,
    );
    a.add(
        &n,
        &logged(1, "A0|p-unknown", v4([1, 1, 1, 1], [10, 0, 0, 2], 6, 1, 2)),
        103,
    );
    let records = a.flush("node-1", &n);
    assert_eq!(records.len(), 2, "{records:?}");
    let allowed = &records[0];
    assert_eq!(
        (
            allowed.reporter.as_str(),
            allowed.action.as_str(),
            allowed.proto.as_str()
        ),
        ("dst", "allow", "TCP")
    );
    assert_eq!(
        (
            allowed.source_name.as_str(),
            allowed.dest_name.as_str(),
            allowed.dest_port
        ),
        ("web", "db", Some(5432))
    );
    assert_eq!(
        allowed.policies,
        vec!["0|security|audit|pass|0", "1|default|shop/db|allow|2"]
    );
    // Three logged first packets, two connections (one retransmitted);
    // traffic counts come from the connection tracker (none here).
    assert_eq!(
        (
            allowed.num_flows,
            allowed.num_flows_started,
            allowed.packets
        ),
        (2, 2, 0)
    );
    assert_eq!(
        allowed.source_labels.get("app").map(String::as_str),
        Some("web")
    );
    assert_eq!((allowed.start_time, allowed.end_time), (101, 101));
    let denied = &records[1];
    assert_eq!(denied.action, "deny");
    assert_eq!(denied.node, "node-1");
    assert_eq!(
        (denied.source_type.as_str(), denied.source_name.as_str()),
        ("net", "pub")
    );
    assert_eq!(
        denied.policies,
        vec!["0|default|default.end-of-tier|deny|-1"]
    );
    assert_eq!(a.unreadable, 1, "the chain this agent did not program");
    assert!(a.flush("node-1", &n).is_empty());
}

#[test]
fn the_connection_tracker_counts_allowed_connections_both_ways() {
    let n = names();
    let mut a = Aggregator::default();
    let syn = v4([10, 0, 0, 1], [10, 0, 0, 2], 6, 40000, 5432);
    a.add(&n, &logged(1, "A2|p-aaa-in", syn), 100);
    let denied = v4([10, 0, 0, 1], [10, 0, 0, 2], 6, 40001, 81);
    a.add(&n, &logged(1, "DT1|tw-cali1", denied.clone()), 100);
    a.add(&n, &logged(1, "DT1|tw-cali1", denied), 101);
    assert!(a.tracking());
    let line = |p1: u64, b1: u64, p2: u64, b2: u64| table(42, [p1, b1, p2, b2]);
    a.account(&line(3, 180, 2, 120), 102);
    let r = a.flush("node-1", &n);
    let allowed = r.iter().find(|r| r.action == "allow").expect("allowed");
    // Reported at the destination: in is source to destination.
    assert_eq!(
        (
            allowed.packets_in,
            allowed.bytes_in,
            allowed.packets_out,
            allowed.bytes_out
        ),
        (3, 180, 2, 120)
    );
    assert_eq!(
        (
            allowed.num_flows_started,
            allowed.num_flows_live,
            allowed.num_flows_completed
        ),
        (1, 1, 0)
    );
    assert_eq!((allowed.packets, allowed.bytes), (5, 300));
    let denied = r.iter().find(|r| r.action == "deny").expect("denied");
    assert_eq!(
        (denied.packets_in, denied.bytes_in, denied.num_flows),
        (2, 80, 1),
        "the IP length of each dropped packet"
    );
    // The next interval: only what is new, then the end.
    a.account(&line(10, 600, 8, 480), 115);
    let r = a.flush("node-1", &n);
    assert_eq!(r.len(), 1, "{r:?}");
    assert_eq!(
        (
            r[0].packets_in,
            r[0].bytes_out,
            r[0].num_flows_started,
            r[0].num_flows_live,
            r[0].num_flows
        ),
        (7, 360, 0, 1, 1),
        "a connection carried over counts once in the next interval"
    );
    a.account(&Table::default(), 130);
    let r = a.flush("node-1", &n);
    assert_eq!(
        (
            r[0].num_flows_completed,
            r[0].num_flows_live,
            r[0].packets,
            r[0].num_flows
        ),
        (1, 0, 0, 1)
    );
    assert!(!a.tracking());
    assert!(a.flush("node-1", &n).is_empty());
}

#[test]
fn addresses_in_network_sets_are_named_by_the_most_specific_set() {
    let mut n = names();
    let set = |net: &str, ns: &str, name: &str| NetworkSetNet {
        net: net.parse().expect("net"),
        namespace: ns.into(),
        name: name.into(),
        labels: BTreeMap::from([("feed".to_string(), name.to_string())]),
    };
    // Longest prefix first, as the agent keeps them.
    n.network_sets = vec![
        set("192.0.2.0/28", "shop", "partners"),
        set("192.0.2.0/24", "-", "documentation"),
    ];
    let mut a = Aggregator::default();
    for (src, port) in [
        ([192, 0, 2, 9], 1),
        ([192, 0, 2, 99], 2),
        ([198, 51, 100, 1], 3),
    ] {
        a.add(
            &n,
            &logged(1, "DT1|tw-cali1", v4(src, [10, 0, 0, 2], 6, 5555, port)),
            100,
        );
    }
    let r = a.flush("node-1", &n);
    let by_port = |p: u16| r.iter().find(|r| r.dest_port == Some(p)).expect("record");
    let ends = |p: u16| {
        let f = by_port(p);
        (
            f.source_type.as_str(),
            f.source_namespace.as_str(),
            f.source_name.as_str(),
            f.source_ip,
        )
    };
    // Denied flows keep addresses (Calico's level 1 by default).
    let ip = |s: &str| Some(s.parse().expect("ip"));
    assert_eq!(ends(1), ("ns", "shop", "partners", ip("192.0.2.9")));
    assert_eq!(
        by_port(1).source_labels.get("feed").map(String::as_str),
        Some("partners")
    );
    assert_eq!(ends(2), ("ns", "-", "documentation", ip("192.0.2.99")));
    assert_eq!(
        ends(3),
        ("net", "-", "pub", Some("198.51.100.1".parse().expect("ip")))
    );
}

#[test]
fn a_workload_opening_connections_without_end_cannot_grow_the_collector() {
    let n = names();
    let mut a = Aggregator::default();
    // 200,010 new connections from one pod (source ports and addresses
    // vary), all allowed, within one interval.
    let total: u32 = 200_010;
    for i in 0..total {
        let b = i.to_be_bytes();
        let pkt = v4(
            [10, 0, b[1], b[2]],
            [10, 0, 0, 2],
            6,
            u16::from(b[3]) + 1024,
            5432,
        );
        a.add(&n, &logged(1, "A2|p-aaa-in", pkt), 100);
    }
    assert_eq!(a.untracked, 10, "followed at most 200,000 at once");
    let r = a.flush("node-1", &n);
    let started: u64 = r.iter().map(|r| r.num_flows_started).sum();
    let flows: u64 = r.iter().map(|r| r.num_flows).sum();
    assert_eq!(started, u64::from(total), "every one is counted as started");
    assert_eq!(
        flows,
        u64::from(total),
        "and as a connection, past the remembered sources too"
    );
}

#[test]
fn host_endpoints_are_named_by_their_expected_addresses() {
    let mut n = names();
    n.host_endpoints.insert(
        "10.250.0.2".parse().expect("ip"),
        std::sync::Arc::new(crate::flows::HostEndpointName {
            name: "node-2-eth0".into(),
            labels: BTreeMap::from([("role".to_string(), "node".to_string())]),
        }),
    );
    // And a network set that also holds the address: the endpoint wins.
    n.network_sets = vec![NetworkSetNet {
        net: "10.250.0.0/24".parse().expect("net"),
        namespace: "-".into(),
        name: "fabric".into(),
        labels: BTreeMap::new(),
    }];
    let mut a = Aggregator::default();
    a.add(
        &n,
        &logged(
            1,
            "DT1|tw-cali1",
            v4([10, 250, 0, 2], [10, 0, 0, 2], 6, 5555, 80),
        ),
        100,
    );
    a.add(
        &n,
        &logged(
            1,
            "DT1|tw-cali1",
            v4([10, 250, 0, 3], [10, 0, 0, 2], 6, 5555, 81),
        ),
        100,
    );
    let r = a.flush("node-1", &n);
    let by_port = |p: u16| r.iter().find(|r| r.dest_port == Some(p)).expect("record");
    let f = by_port(80);
    assert_eq!(
        (
            f.source_type.as_str(),
            f.source_namespace.as_str(),
            f.source_name.as_str(),
            f.source_ip
        ),
        (
            "hep",
            "-",
            "node-2-eth0",
            Some("10.250.0.2".parse().expect("ip"))
        ),
        "a denied flow keeps the address"
    );
    assert_eq!(
        f.source_labels.get("role").map(String::as_str),
        Some("node")
    );
    assert_eq!(
        by_port(81).source_type,
        "ns",
        "another address of the subnet"
    );
}

/// A TCP SYN from 10.0.0.1:40000 to 10.0.0.2:5432 with sequence number `seq`.
fn syn(seq: u32) -> Vec<u8> {
    let mut p = v4([10, 0, 0, 1], [10, 0, 0, 2], 6, 40000, 5432);
    p[24..28].copy_from_slice(&seq.to_be_bytes());
    p[33] = 0x02;
    p
}

/// The same SYN (sequence number 0) from source port `sport`.
fn syn_from(sport: u16) -> Vec<u8> {
    let mut p = syn(0);
    p[20..22].copy_from_slice(&sport.to_be_bytes());
    p
}

#[test]
fn a_new_connection_reusing_addresses_and_ports_counts_apart_from_a_retransmission() {
    let n = names();
    let mut a = Aggregator::default();
    // Both ends on this node: the client's egress, the server's ingress.
    for group in [2, 1] {
        a.add(&n, &logged(group, "A2|p-aaa-in", syn(7)), 100);
    }
    // The SYN again (lost on the way): the same connection.
    a.add(&n, &logged(1, "A2|p-aaa-in", syn(7)), 101);
    let (t, seq) = headers(&syn(7)).expect("headers");
    assert_eq!((t.sport, seq), (Some(40000), Some(7)));
    let line = |id: u64, p1: u64| table(id, [p1, p1 * 60, 1, 60]);
    a.account(&line(1, 3), 102);
    let r = a.flush("node-1", &n);
    assert_eq!(r.len(), 2, "one record per reporter: {r:?}");
    for rec in &r {
        assert_eq!(
            (rec.num_flows_started, rec.num_flows_live, rec.num_flows),
            (1, 1, 1),
            "{}: the SYN twice is one connection",
            rec.reporter
        );
    }
    // Closed, and a new connection from the same port (another sequence
    // number) before the tracker forgot the old one.
    a.add(&n, &logged(2, "A2|p-aaa-in", syn(9)), 103);
    a.add(&n, &logged(1, "A2|p-aaa-in", syn(9)), 103);
    a.account(&line(2, 2), 104);
    let r = a.flush("node-1", &n);
    assert_eq!(r.len(), 2, "one record per reporter: {r:?}");
    for rec in &r {
        assert_eq!(
            (
                rec.num_flows_started,
                rec.num_flows_completed,
                rec.num_flows_live,
                rec.num_flows
            ),
            (1, 1, 1, 2),
            "{}: the first connection completed, the second started",
            rec.reporter
        );
        // The second connection's counters start from zero (another id).
        let (to_dst, from_dst) = if rec.reporter == "dst" {
            (rec.packets_in, rec.packets_out)
        } else {
            (rec.packets_out, rec.packets_in)
        };
        assert_eq!((to_dst, from_dst), (2, 1), "{}", rec.reporter);
    }
}

/// An egress Allow that left its identity in the mark (instead of logging)
/// makes the same records as one that logged, whether the packet's
/// ingress verdict on this node brings it or the log after the walk does.
#[test]
fn an_egress_allow_carried_in_the_mark_counts_as_if_it_had_logged() {
    let mut n = names();
    n.policies
        .insert("p-ddd-out".into(), ("default".into(), "shop/web".into()));
    n.policies
        .insert("p-eee-out".into(), ("security".into(), "audit".into()));
    n.deferred.insert(77, "A1|p-ddd-out".into());
    let id = 77u32 << calico_dataplane::FLOW_ID_SHIFT;
    let marked = |group, prefix: &str, pkt: Vec<u8>, mark| Logged {
        mark,
        ..logged(group, prefix, pkt)
    };
    // Logged by each rule.
    let mut each = Aggregator::default();
    for sport in [40000, 40001] {
        each.add(&n, &logged(2, "P0|p-eee-out", syn_from(sport)), 100);
        each.add(&n, &logged(2, "A1|p-ddd-out", syn_from(sport)), 100);
        each.add(&n, &logged(1, "P0|p-bbb-in", syn_from(sport)), 100);
        each.add(&n, &logged(1, "A2|p-aaa-in", syn_from(sport)), 100);
    }
    // Carried: by the ingress walk's logs (its Pass and its Allow both
    // carry the mark; the egress verdict counts once) ...
    let mut carried = Aggregator::default();
    for sport in [40000, 40001] {
        carried.add(&n, &logged(2, "P0|p-eee-out", syn_from(sport)), 100);
        carried.add(&n, &marked(1, "P0|p-bbb-in", syn_from(sport), id), 100);
        carried.add(&n, &marked(1, "A2|p-aaa-in", syn_from(sport), id), 100);
    }
    let records = each.flush("node-1", &n);
    assert_eq!(records.len(), 2, "{records:?}");
    assert!(records.iter().any(|r| r.reporter == "src"
        && r.policies == ["0|security|audit|pass|0", "1|default|shop/web|allow|1"]));
    assert_eq!(carried.flush("node-1", &n), records);
    assert_eq!(carried.unreadable, 0);
    // ... or, leaving the node, by the log after the walk.
    let mut out = Aggregator::default();
    let mut by_rule = Aggregator::default();
    for sport in [40000, 40001] {
        out.add(&n, &marked(2, "E|", syn_from(sport), id), 100);
        by_rule.add(&n, &logged(2, "A1|p-ddd-out", syn_from(sport)), 100);
    }
    assert_eq!(out.flush("node-1", &n), by_rule.flush("node-1", &n));
    // An identity no rule has (the ruleset changed since): unreadable, and
    // the ingress verdict is still counted; none at all: nothing added.
    let mut odd = Aggregator::default();
    let stray = 78u32 << calico_dataplane::FLOW_ID_SHIFT;
    odd.add(&n, &marked(2, "E|", syn_from(40000), stray), 100);
    odd.add(&n, &marked(1, "A2|p-aaa-in", syn_from(40001), stray), 100);
    odd.add(
        &n,
        &marked(1, "A2|p-aaa-in", syn_from(40002), 0x1_0000),
        100,
    );
    assert_eq!(odd.unreadable, 2);
    let r = odd.flush("node-1", &n);
    assert_eq!(r.len(), 1, "{r:?}");
    assert_eq!((r[0].reporter.as_str(), r[0].num_flows), ("dst", 2));
}

/// A connection decided twice on its way out (a workload's egress, then a
/// host endpoint's forward egress): each record counts the connection and
/// its traffic; its first packet again counts neither twice.
#[test]
fn a_connection_decided_at_two_points_of_one_reporter_counts_in_both_records() {
    let mut n = names();
    n.policies
        .insert("p-ddd-out".into(), ("default".into(), "shop/web".into()));
    n.policies
        .insert("p-eee-out".into(), ("default".into(), "edge".into()));
    let mut a = Aggregator::default();
    let syn = syn(0);
    for _ in 0..2 {
        a.add(&n, &logged(2, "A0|p-ddd-out", syn.clone()), 100);
        a.add(&n, &logged(2, "A1|p-eee-out", syn.clone()), 100);
    }
    a.account(&table(7, [3, 180, 2, 120]), 101);
    a.account(&Table::default(), 102);
    let r = a.flush("node-1", &n);
    assert_eq!(r.len(), 2, "{r:?}");
    for rec in &r {
        assert_eq!(
            (
                rec.num_flows,
                rec.num_flows_started,
                rec.num_flows_completed,
                rec.packets_out,
                rec.bytes_out,
                rec.packets_in,
            ),
            (1, 1, 1, 3, 180, 2),
            "{rec:?}"
        );
    }
    // Its next connection (another SYN on the same ports) ends this one
    // at both points and is new at both.
    let mut again = syn.clone();
    again[24] = 9;
    a.add(&n, &logged(2, "A0|p-ddd-out", syn.clone()), 103);
    a.add(&n, &logged(2, "A1|p-eee-out", syn), 103);
    a.add(&n, &logged(2, "A0|p-ddd-out", again.clone()), 104);
    a.add(&n, &logged(2, "A1|p-eee-out", again), 104);
    a.account(&Table::default(), 105);
    let r = a.flush("node-1", &n);
    assert_eq!(r.len(), 2, "{r:?}");
    for rec in &r {
        assert_eq!(
            (rec.num_flows_started, rec.num_flows_completed),
            (2, 2),
            "{rec:?}"
        );
    }
}

/// A TCP connection the tracker still lists past its end (TIME_WAIT, up
/// to two minutes) has completed: its last counters are taken, and it is
/// no longer live.
#[test]
fn a_connection_past_its_end_completes_while_still_listed() {
    let n = names();
    let mut a = Aggregator::default();
    let syn = v4([10, 0, 0, 1], [10, 0, 0, 2], 6, 40000, 5432);
    a.add(&n, &logged(1, "A2|p-aaa-in", syn), 100);
    let mut closed = table(42, [5, 300, 4, 3120]);
    closed.conns[0].closed = true;
    a.account(&closed, 102);
    let r = a.flush("node-1", &n);
    assert_eq!(
        (
            r[0].num_flows_started,
            r[0].num_flows_completed,
            r[0].num_flows_live,
            r[0].packets_in,
            r[0].bytes_out
        ),
        (1, 1, 0, 5, 3120),
        "{r:?}"
    );
    // Listed again later: nothing more.
    a.account(&closed, 103);
    assert!(!a.tracking());
    assert!(a.flush("node-1", &n).is_empty());
}

/// Names for the aggregation tests: two pods of one Deployment (one
/// generateName, a label each of their own) and a database.
fn deployment_names() -> Names {
    let n = names();
    let pod = |name: &str, hash: &str| Workload {
        namespace: "shop".into(),
        name: name.into(),
        generate_name: Some("web-7d9f-".into()),
        labels: Box::new([("app".into(), "web".into()), ("pod".into(), hash.into())]),
    };
    for (ip, name, hash) in [
        ("10.0.0.1", "web-7d9f-aaaaa", "a"),
        ("10.0.0.3", "web-7d9f-bbbbb", "b"),
    ] {
        n.workloads.update(|m| {
            m.insert(
                ip.parse().expect("ip"),
                std::sync::Arc::new(pod(name, hash)),
            )
        });
    }
    n
}

/// The sources of `records` with `action`: name, address, port and
/// connections, sorted.
fn sources<'a>(
    records: &'a [FlowRecord],
    action: &str,
) -> Vec<(&'a str, Option<std::net::IpAddr>, Option<u16>, u64)> {
    let mut v: Vec<_> = records
        .iter()
        .filter(|f| f.action == action)
        .map(|f| {
            (
                f.source_name.as_str(),
                f.source_ip,
                f.source_port,
                f.num_flows,
            )
        })
        .collect();
    v.sort();
    v
}

/// Two allowed connections from each web pod to the database, and two
/// denied packets from each (other source ports), through `a`.
fn deployment_traffic(a: &mut Aggregator, n: &Names) -> Vec<FlowRecord> {
    for src in [[10, 0, 0, 1], [10, 0, 0, 3]] {
        for sport in [40000, 40001] {
            a.add(
                n,
                &logged(1, "A2|p-aaa-in", v4(src, [10, 0, 0, 2], 6, sport, 5432)),
                100,
            );
            a.add(
                n,
                &logged(1, "DT1|tw-cali1", v4(src, [10, 0, 0, 2], 6, sport, 22)),
                100,
            );
        }
    }
    a.flush("node-1", n)
}

#[test]
fn allowed_flows_aggregate_a_deployments_pods_and_denied_ones_keep_addresses_by_default() {
    let n = deployment_names();
    let r = deployment_traffic(&mut Aggregator::default(), &n);
    assert!(
        r.iter().all(|f| f.pending_policies.is_empty()),
        "pending traces off"
    );
    let allowed: Vec<_> = r.iter().filter(|f| f.action == "allow").collect();
    assert_eq!(allowed.len(), 1, "{r:?}");
    let f = allowed[0];
    assert_eq!(
        (
            f.source_name.as_str(),
            f.source_ip,
            f.source_port,
            f.dest_ip
        ),
        ("web-7d9f-*", None, None, None)
    );
    assert_eq!(f.num_flows, 4, "both pods' connections in one record");
    assert_eq!(
        f.source_labels,
        BTreeMap::from([("app".to_string(), "web".to_string())]),
        "only the labels every pod shares"
    );
    assert_eq!(f.dest_name, "db", "a pod without generateName is itself");
    let denied = sources(&r, "deny");
    let ip = |s: &str| Some(s.parse().expect("ip"));
    assert_eq!(
        denied,
        vec![
            ("web-7d9f-aaaaa", ip("10.0.0.1"), None, 2),
            ("web-7d9f-bbbbb", ip("10.0.0.3"), None, 2),
        ],
        "a record per pod and address, source ports dropped"
    );
    assert_eq!(
        r.iter().find(|f| f.action == "deny").map(|f| f.dest_ip),
        Some(ip("10.0.0.2"))
    );
}

#[test]
fn level_zero_keeps_every_connection_apart_and_level_two_applies_to_denied_flows_too() {
    let n = deployment_names();
    let mut a = Aggregator::new(
        Aggregation {
            allowed: Level::None,
            denied: Level::PodPrefix,
        },
        true,
    );
    let r = deployment_traffic(&mut a, &n);
    let allowed = sources(&r, "allow");
    let ip = |s: &str| Some(s.parse().expect("ip"));
    assert_eq!(
        allowed,
        vec![
            ("web-7d9f-aaaaa", ip("10.0.0.1"), Some(40000), 1),
            ("web-7d9f-aaaaa", ip("10.0.0.1"), Some(40001), 1),
            ("web-7d9f-bbbbb", ip("10.0.0.3"), Some(40000), 1),
            ("web-7d9f-bbbbb", ip("10.0.0.3"), Some(40001), 1),
        ]
    );
    let denied: Vec<_> = r.iter().filter(|f| f.action == "deny").collect();
    assert_eq!(denied.len(), 1, "{denied:?}");
    // Pending traces on and nothing staged: what would happen is what did.
    assert!(r
        .iter()
        .all(|f| f.pending_policies == f.policies && !f.policies.is_empty()));
    assert_eq!(
        (
            denied[0].source_name.as_str(),
            denied[0].source_ip,
            denied[0].num_flows
        ),
        ("web-7d9f-*", None, 4)
    );
}

#[test]
fn rule_hits_count_packets_bytes_and_connections_of_what_each_rule_decided() {
    let n = names();
    let mut a = Aggregator::default();
    let conn = v4([10, 0, 0, 1], [10, 0, 0, 2], 6, 40000, 5432);
    a.add(&n, &logged(1, "A2|p-aaa-in", conn), 100);
    for _ in 0..2 {
        a.add(
            &n,
            &logged(
                1,
                "DT1|tw-cali1",
                v4([192, 0, 2, 9], [10, 0, 0, 2], 6, 5555, 22),
            ),
            100,
        );
    }
    let sorted = |mut h: Vec<(String, &'static str, [u64; 3])>| {
        h.sort();
        h
    };
    let allow = "0|default|shop/db|allow|2".to_string();
    let deny = "0|default|default.end-of-tier|deny|-1".to_string();
    // Before the tracker is read: the allowed connection has started, the
    // denied packets are counted with their IP lengths (40 bytes).
    assert_eq!(
        sorted(a.take_hits()),
        vec![(deny, "dst", [2, 80, 1]), (allow.clone(), "dst", [0, 0, 1])]
    );
    // The tracker's counters, both ways, once read; nothing twice.
    a.account(&table(7, [3, 180, 2, 120]), 101);
    assert_eq!(a.take_hits(), vec![(allow.clone(), "dst", [5, 300, 0])]);
    a.account(&table(7, [4, 240, 2, 120]), 102);
    let _ = a.flush("node-1", &n);
    assert_eq!(
        a.take_hits(),
        vec![(allow, "dst", [1, 60, 0])],
        "gathered at the flush"
    );
    assert!(a.take_hits().is_empty());
}

#[test]
fn a_flood_from_ever_new_addresses_cannot_grow_the_collector() {
    let n = names();
    let mut a = Aggregator::default();
    let extra = 1_000;
    for i in 0..(aggregate::MAX_RECORDS + extra) as u32 {
        // Denied packets from a new address each (spoofed, say): a record
        // each, with addresses kept (level 1).
        let [_, b, c, d] = (0x0b00_0000 + i).to_be_bytes();
        a.add(
            &n,
            &logged(
                1,
                "DT1|tw-cali1",
                v4([11, b, c, d], [10, 0, 0, 2], 6, 1, 22),
            ),
            100,
        );
    }
    // An address already recorded is still counted.
    a.add(
        &n,
        &logged(
            1,
            "DT1|tw-cali1",
            v4([11, 0, 0, 0], [10, 0, 0, 2], 6, 1, 22),
        ),
        100,
    );
    assert_eq!(a.overflow, extra as u64);
    let r = a.flush("node-1", &n);
    assert_eq!(r.len(), aggregate::MAX_RECORDS);
    assert_eq!(
        r.iter().map(|f| f.packets_in).sum::<u64>(),
        aggregate::MAX_RECORDS as u64 + 1
    );
    // The next interval starts empty.
    a.add(
        &n,
        &logged(
            1,
            "DT1|tw-cali1",
            v4([12, 0, 0, 1], [10, 0, 0, 2], 6, 1, 22),
        ),
        101,
    );
    assert_eq!(a.flush("node-1", &n).len(), 1);
}
