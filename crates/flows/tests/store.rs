//! The flow store: the SQL filters mean what `Filter::matches` means,
//! history survives reopening, old records roll up into hours, and
//! records that could confuse a reader are refused.

use calico_flows::query::{Filter, Query, Resolution, Sort};
use calico_flows::store::{check, Hint, Store};
use calico_flows::Flow;
use proptest::prelude::*;
use std::collections::BTreeMap;

fn flow(
    i: u64,
    src: (&str, &str),
    dst: (&str, &str),
    action: &str,
    port: u16,
    trace: &[&str],
) -> Flow {
    Flow {
        start_time: 1_000 + i,
        end_time: 1_010 + i,
        node: format!("node-{}", i % 2 + 1),
        reporter: if i.is_multiple_of(3) { "src" } else { "dst" }.into(),
        action: action.into(),
        proto: if port == 53 { "UDP" } else { "TCP" }.into(),
        source_namespace: src.0.into(),
        source_name: src.1.into(),
        source_type: "wep".into(),
        source_labels: BTreeMap::from([("app".to_string(), src.1.to_string())]),
        dest_namespace: dst.0.into(),
        dest_name: dst.1.into(),
        dest_type: "wep".into(),
        dest_port: Some(port),
        policies: trace.iter().map(|s| s.to_string()).collect(),
        packets: i + 1,
        bytes: 60 * (i + 1),
        num_flows: 1,
        ..Flow::default()
    }
}

const PODS: [(&str, &str); 4] = [
    ("shop", "web"),
    ("shop", "db"),
    ("bank", "api"),
    ("bank", "db"),
];
const TRACES: [&[&str]; 4] = [
    &["0|default|shop/db|allow|0"],
    &["0|security|audit|pass|0", "1|default|shop/db|deny|1"],
    &["0|default|default.end-of-tier|deny|-1"],
    &["0|__PROFILE__|__PROFILE__.kns.bank|allow|0"],
];

fn arb_flow() -> impl Strategy<Value = Flow> {
    (
        0u64..30,
        0usize..4,
        0usize..4,
        0usize..3,
        prop::sample::select(vec![53u16, 80, 5432]),
        0usize..4,
    )
        .prop_map(|(i, s, d, a, port, t)| {
            let action = ["allow", "deny", "pass"][a];
            let mut f = flow(i, PODS[s], PODS[d], action, port, TRACES[t]);
            // A node keeping source ports (aggregation level 0) now and then.
            f.source_port = (i % 4 == 0).then_some(40_000 + i as u16);
            f
        })
}

fn arb_filter() -> impl Strategy<Value = Filter> {
    let name = || {
        prop::option::weighted(
            0.3,
            prop::sample::select(vec!["web", "db", "api", "nothing"]),
        )
    };
    let ns = || prop::option::weighted(0.3, prop::sample::select(vec!["shop", "bank"]));
    (
        (
            prop::option::weighted(0.3, 1_005u64..1_045),
            prop::option::weighted(0.3, 1_000u64..1_045),
            ns(),
            name(),
            ns(),
            name(),
        ),
        (
            prop::option::weighted(0.3, prop::sample::select(vec!["allow", "deny", "pass"])),
            prop::option::weighted(0.3, prop::sample::select(vec!["src", "dst"])),
            prop::option::weighted(
                0.3,
                prop::sample::select(vec![
                    "shop/db",
                    "db",
                    "audit",
                    "default.end-of-tier",
                    "__PROFILE__.kns.bank",
                ]),
            ),
            prop::option::weighted(
                0.3,
                prop::sample::select(vec!["default", "security", "__PROFILE__", "fault"]),
            ),
            prop::option::weighted(0.3, prop::sample::select(vec![53u16, 80, 81])),
            prop::option::weighted(
                0.3,
                prop::sample::select(vec![("app", "web"), ("app", "db"), ("tier", "x")]),
            ),
        ),
    )
        .prop_map(
            |((from, to, namespace, n, dns, dn), (action, reporter, policy, tier, port, label))| {
                let s = |v: Option<&str>| v.map(str::to_string);
                Filter {
                    from,
                    to: to.map(|t| t.max(from.unwrap_or(0))),
                    namespace: s(namespace),
                    name: s(n),
                    dest_namespace: s(dns),
                    dest_name: s(dn),
                    action: s(action),
                    reporter: s(reporter),
                    policy: s(policy),
                    tier: s(tier),
                    port,
                    labels: label
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .into_iter()
                        .collect(),
                    ..Filter::default()
                }
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]
    #[test]
    fn sql_filters_mean_what_matches_means(
        flows in prop::collection::vec(arb_flow(), 0..60),
        filter in arb_filter(),
    ) {
        let dir = tempfile::tempdir().expect("dir");
        let mut store = Store::open(&dir.path().join("flows.db")).expect("open");
        store.insert(&flows).expect("insert");
        let mut got = Vec::new();
        for page in 0.. {
            let q = Query { filter: filter.clone(), sort: Sort::Oldest, page, limit: 7, resolution: Resolution::Raw };
            let p = store.query(&q).expect("query");
            got.extend(p.flows);
            if !p.more { break; }
        }
        let mut want: Vec<Flow> = flows.iter().filter(|f| filter.matches(f)).cloned().collect();
        // Oldest first: by end time, then insertion order.
        want.sort_by_key(|f| f.end_time);
        let key = |f: &Flow| (f.end_time, serde_json::to_string(f).expect("json"));
        let mut g: Vec<_> = got.iter().map(key).collect();
        let mut w: Vec<_> = want.iter().map(key).collect();
        g.sort();
        w.sort();
        prop_assert_eq!(g, w);
        // The order holds too.
        prop_assert!(got.windows(2).all(|p| p[0].end_time <= p[1].end_time));
    }
}

#[test]
fn history_survives_reopening_and_rolls_up_into_hours() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("flows.db");
    let hour = 3600;
    let mut old = flow(0, PODS[0], PODS[1], "allow", 5432, TRACES[0]);
    old.node = "node-1".into();
    old.reporter = "dst".into();
    let at = |f: &Flow, t: u64| Flow {
        start_time: t,
        end_time: t + 5,
        ..f.clone()
    };
    let mut denied = flow(1, PODS[2], PODS[1], "deny", 5432, TRACES[2]);
    denied.node = "node-1".into();
    {
        let mut s = Store::open(&path).expect("open");
        s.insert(&[
            at(&old, 10 * hour + 10),
            at(&old, 10 * hour + 1000),
            at(&denied, 10 * hour + 2000),
            at(&old, 11 * hour + 10),
            at(&old, 30 * hour),
        ])
        .expect("insert");
    }
    let mut s = Store::open(&path).expect("reopen");
    assert_eq!(s.count().expect("count"), 5, "history survives");
    // Raw kept 12 hours: at 24h+100s, hours 10 and 11 roll up, hour 30's record stays.
    let e = s
        .expire(24 * hour + 100, 12 * hour, 7 * 24 * hour)
        .expect("expire");
    assert_eq!((e.raw_deleted, e.rolled_up), (4, 3));
    assert_eq!(s.count().expect("count"), 1);
    let q = Query {
        resolution: Resolution::Hour,
        sort: Sort::Oldest,
        limit: 100,
        ..Query::default()
    };
    let hours = s.query(&q).expect("hourly");
    let summary: Vec<_> = hours
        .flows
        .iter()
        .map(|f| (f.start_time / hour, f.action.as_str(), f.packets))
        .collect();
    assert_eq!(
        summary,
        vec![(10, "allow", 2), (10, "deny", 2), (11, "allow", 1)]
    );
    assert_eq!(hours.flows[0].policies, old.policies, "the trace is kept");
    // Roll-ups older than their retention go.
    let e = s
        .expire(24 * hour + 100, 12 * hour, 13 * hour + 30)
        .expect("expire");
    assert_eq!(e.hourly_deleted, 2);
}

#[test]
fn a_file_from_before_source_ports_is_upgraded_in_place() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("flows.db");
    let old = flow(0, PODS[0], PODS[1], "allow", 5432, TRACES[0]);
    {
        let mut s = Store::open(&path).expect("open");
        s.insert(std::slice::from_ref(&old)).expect("insert");
    }
    // The file as the previous version left it: no source_port column.
    {
        let c = rusqlite::Connection::open(&path).expect("sqlite");
        c.execute_batch(
            "ALTER TABLE flows DROP COLUMN source_port;
             ALTER TABLE flows_hourly DROP COLUMN source_port;",
        )
        .expect("drop");
    }
    let mut s = Store::open(&path).expect("reopen and upgrade");
    let new = Flow {
        source_port: Some(40_123),
        end_time: old.end_time + 1,
        ..old.clone()
    };
    s.insert(std::slice::from_ref(&new))
        .expect("insert after upgrade");
    let q = Query {
        sort: Sort::Oldest,
        limit: 10,
        ..Query::default()
    };
    assert_eq!(
        s.query(&q).expect("query").flows,
        vec![old.clone(), new.clone()]
    );
    // Roll-ups keep connections of other source ports apart.
    s.expire(10 * 3600, 0, 7 * 24 * 3600).expect("expire");
    let hours = s
        .query(&Query {
            resolution: Resolution::Hour,
            ..q
        })
        .expect("hourly");
    let mut ports: Vec<_> = hours.flows.iter().map(|f| f.source_port).collect();
    ports.sort();
    assert_eq!(ports, vec![None, Some(40_123)]);
}

#[test]
fn hints_statistics_and_graph() {
    let dir = tempfile::tempdir().expect("dir");
    let mut s = Store::open(&dir.path().join("flows.db")).expect("open");
    s.insert(&[
        flow(1, PODS[0], PODS[1], "allow", 5432, TRACES[0]),
        flow(2, PODS[0], PODS[1], "allow", 5432, TRACES[0]),
        flow(4, PODS[2], PODS[1], "deny", 5432, TRACES[1]),
    ])
    .expect("insert");
    let all = Filter::default();
    assert_eq!(
        s.hints(Hint::Namespace, &all, 10).expect("hints"),
        vec!["bank", "shop"]
    );
    assert_eq!(
        s.hints(Hint::Policy, &all, 10).expect("hints"),
        vec!["audit", "shop/db"]
    );
    assert_eq!(
        s.hints(Hint::Tier, &all, 10).expect("hints"),
        vec!["default", "security"]
    );
    let stats = s.policy_stats(&all).expect("stats");
    let db_allow = stats
        .iter()
        .find(|r| r.policy == "shop/db" && r.action == "allow")
        .expect("shop/db allow rule");
    assert_eq!(
        (db_allow.rule, db_allow.flows, db_allow.allowed_packets),
        (0, 2, 5)
    );
    let db_deny = stats
        .iter()
        .find(|r| r.policy == "shop/db" && r.action == "deny")
        .expect("shop/db deny rule");
    assert_eq!(
        (db_deny.rule, db_deny.denied_packets, db_deny.denied_bytes),
        (1, 5, 300)
    );
    let graph = s.graph(&all).expect("graph");
    let edge = |a: &str, b: &str| graph.iter().find(|e| e.source == a && e.dest == b).cloned();
    let e = edge("shop/web", "shop/db").expect("web -> db");
    assert_eq!((e.allowed_packets, e.denied_packets), (5, 0));
    let e = edge("bank/api", "shop/db").expect("api -> db");
    assert_eq!((e.allowed_flows, e.denied_flows), (0, 1));
}

#[test]
fn records_that_would_confuse_a_reader_are_refused() {
    let good = flow(1, PODS[0], PODS[1], "allow", 80, TRACES[1]);
    assert_eq!(check(&good), Ok(()));
    let bad = |f: &dyn Fn(&mut Flow)| {
        let mut b = good.clone();
        f(&mut b);
        check(&b)
    };
    assert!(bad(&|f| f.node.clear()).is_err());
    assert!(bad(&|f| f.action = "maybe".into()).is_err());
    assert!(bad(&|f| f.reporter = "both".into()).is_err());
    assert!(bad(&|f| f.source_type = "vm".into()).is_err());
    assert!(bad(&|f| f.source_name = "a\nb".into()).is_err());
    assert!(bad(&|f| f.dest_namespace = "x".repeat(300)).is_err());
    assert!(bad(&|f| f.policies.push("not a trace".into())).is_err());
    assert!(bad(&|f| f.policies.push("0|t|a\nb|allow|1".into())).is_err());
    assert!(bad(&|f| f.policies = vec!["0|default|x|allow|1".into(); 65]).is_err());
    assert!(
        bad(&|f| {
            f.source_labels.insert("k\"ey".into(), "v".into());
        })
        .is_err(),
        "a quote in a label would let it match others' labels"
    );
    assert!(bad(&|f| f.end_time = f.start_time - 1).is_err());
}

/// The writer never checkpoints inside a commit; its checkpointer copies
/// the log into the database file in the background, so everything
/// reaches the file while records keep coming, and restarts the log once
/// it passes its limit (here 1 MiB), so the log stays near that however
/// much is written (about 30 MB here).
#[test]
fn the_log_is_copied_into_the_database_in_the_background() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("flows.db");
    let wal = dir.path().join("flows.db-wal");
    let size = |p: &std::path::Path| std::fs::metadata(p).map_or(0, |m| m.len());
    let mut s = Store::open_with_wal_limit(&path, 1 << 20).expect("open");
    // Records as they come: later and later end times.
    let mut n = 0;
    let mut batch = || -> Vec<Flow> {
        (0..500)
            .map(|_| {
                n += 1;
                flow(n, PODS[0], PODS[1], "allow", 80, TRACES[0])
            })
            .collect()
    };
    let mut largest_wal = 0;
    for _ in 0..60 {
        for _ in 0..4 {
            s.insert(&batch()).expect("insert");
        }
        largest_wal = largest_wal.max(size(&wal));
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    std::thread::sleep(std::time::Duration::from_secs(1));
    assert!(
        size(&path) > 10 << 20,
        "the database file holds the records ({} bytes)",
        size(&path)
    );
    assert!(
        largest_wal < 12 << 20,
        "the log is restarted near its limit, not grown without end ({largest_wal} bytes)"
    );
    drop(s);
    let back = Store::reader(&path).expect("reader");
    let page = back
        .query(&Query::parse("limit=1").expect("query"))
        .expect("query");
    assert_eq!(page.flows.len(), 1);
}

/// The filters a person narrows a busy cluster's history with are read
/// off an index (with the end time after it, so the newest page needs no
/// sort), not by reading every record: a protocol no record has, on a
/// million records, read them all.
#[test]
fn selective_filters_are_read_off_an_index() {
    let dir = tempfile::tempdir().expect("dir");
    let mut s = Store::open(&dir.path().join("flows.db")).expect("open");
    s.insert(&[flow(1, PODS[0], PODS[1], "allow", 5432, TRACES[0])])
        .expect("insert");
    let plan = |q: &str| {
        let q = Query::parse(q).expect("query");
        s.query_plan(&q).expect("plan").join("\n")
    };
    for (q, index) in [
        ("proto=ICMP", "flows_proto"),
        ("proto=UDP&from=100", "flows_proto"),
        ("source_namespace=shop", "flows_src_ns"),
        ("dest_namespace=shop", "flows_dst_ns"),
        ("", "flows_end"),
        ("resolution=hour&proto=UDP", "flows_hourly_proto"),
    ] {
        let p = plan(q);
        assert!(p.contains(index), "{q:?}: {p}");
        assert!(!p.contains("TEMP B-TREE"), "{q:?} sorts: {p}");
    }
}
