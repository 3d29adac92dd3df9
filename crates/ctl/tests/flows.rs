//! `calicoctl flows` against a running flow service: the table reads the
//! trace as `tier/policy rule N → action`, filters select, JSON is the
//! records, a bad filter is refused before anything is asked, an absent
//! service is an error (not an empty list), and `--follow` prints new
//! records as they are stored.

// Tests own the clock.
#![allow(clippy::disallowed_methods)]

use calico_flows::export::{ExportConfig, Exporter};
use calico_flows::server::{Config, Running};
use calico_flows::store::Store;
use calico_flows::Flow;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

/// A record of the last minute (older ones would be rolled up into hours).
fn record(src: (&str, &str), dst: (&str, &str), port: u16, action: &str, trace: &[&str]) -> Flow {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    Flow {
        start_time: now - 60,
        end_time: now - 45,
        node: "node-1".into(),
        reporter: "dst".into(),
        action: action.into(),
        proto: "TCP".into(),
        source_namespace: src.0.into(),
        source_name: src.1.into(),
        source_type: "wep".into(),
        dest_namespace: dst.0.into(),
        dest_name: dst.1.into(),
        dest_type: "wep".into(),
        dest_port: Some(port),
        policies: trace.iter().map(|s| s.to_string()).collect(),
        packets: 2,
        num_flows: 2,
        ..Flow::default()
    }
}

fn calicoctl(server: &str, args: &[&str]) -> (bool, String, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_calicoctl"))
        .arg("flows")
        .args(["--server", server])
        .args(args)
        .output()
        .expect("calicoctl");
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn flows_lists_filters_follows_and_fails_loudly() {
    let dir = tempfile::tempdir().expect("dir");
    let db = dir.path().join("flows.db");
    {
        let mut s = Store::open(&db).expect("store");
        s.insert(&[
            record(
                ("shop", "web"),
                ("shop", "db"),
                5432,
                "allow",
                &["0|default|shop/db|allow|0"],
            ),
            Flow {
                // From a node that keeps addresses and source ports.
                source_ip: Some("10.0.0.9".parse().expect("ip")),
                source_port: Some(40_000),
                ..record(
                    ("bank", "api"),
                    ("shop", "db"),
                    5432,
                    "deny",
                    &[
                        "0|security|quarantine|pass|2",
                        "1|default|default.end-of-tier|deny|-1",
                    ],
                )
            },
        ])
        .expect("insert");
    }
    let svc = Running::start(Config {
        grpc: "127.0.0.1:0".parse().expect("addr"),
        http: "127.0.0.1:0".parse().expect("addr"),
        db,
        raw_retention: Duration::from_secs(3600),
        hourly_retention: Duration::from_secs(86_400),
        tls: None,
    })
    .expect("the flow service starts");
    let server = format!("http://{}", svc.bound.http);

    let (ok, out, err) = calicoctl(&server, &[]);
    assert!(ok, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(
        lines[0].starts_with("SOURCE") && lines[0].contains("POLICIES"),
        "{out}"
    );
    assert!(
        lines.iter().any(|l| l.contains("bank/api(10.0.0.9:40000)")
            && l.contains("TCP/5432")
            && l.contains("DENY")
            && l.ends_with("security/quarantine rule 2 → pass, default.end-of-tier → deny")),
        "{out}"
    );

    let (ok, out, _) = calicoctl(&server, &["--action", "allow", "-o", "wide"]);
    assert!(ok);
    assert_eq!(out.lines().count(), 2, "{out}");
    assert!(out.contains("default/shop/db rule 0 → allow"), "{out}");
    assert!(
        out.lines()
            .next()
            .is_some_and(|h| h.starts_with("TIME") && h.contains("PENDING")),
        "{out}"
    );

    let (ok, out, _) = calicoctl(&server, &["--policy", "quarantine", "-o", "json"]);
    assert!(ok);
    let flows: Vec<Flow> = serde_json::from_str(&out).expect("json");
    assert_eq!(flows.len(), 1);
    assert_eq!(flows[0].source_name, "api");

    let (ok, _, err) = calicoctl(&server, &["--action", "perhaps"]);
    assert!(!ok);
    assert!(
        err.contains("action: must be one of allow, deny, pass"),
        "{err}"
    );

    let (ok, out, err) = calicoctl("http://127.0.0.1:9", &[]);
    assert!(!ok, "an absent service is an error: {out}");
    assert!(err.contains("reaching the flow service"), "{err}");

    // --follow: the matching history, then what arrives.
    let mut follow = Command::new(env!("CARGO_BIN_EXE_calicoctl"))
        .args(["flows", "--server", &server, "--follow", "--action", "deny"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("calicoctl flows --follow");
    let mut lines = BufReader::new(follow.stdout.take().expect("stdout")).lines();
    let mut next = move || lines.next().expect("a line").expect("text");
    assert!(next().starts_with("SOURCE"));
    assert!(next().contains("bank/api"));
    let x = Exporter::start(ExportConfig {
        server: svc.bound.grpc.to_string(),
        node: "node-2".into(),
        capacity: 10,
        tls: None,
    })
    .expect("exporter");
    // Until the stream is open, records may go by unseen: keep offering.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::iter::from_fn(|| Some(next())) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let mut seen = None;
    for _ in 0..100 {
        x.offer([
            record(
                ("shop", "web"),
                ("shop", "cache"),
                6379,
                "allow",
                &["0|default|shop/cache|allow|0"],
            ),
            record(
                ("shop", "web"),
                ("shop", "cache"),
                6380,
                "deny",
                &["0|default|default.end-of-tier|deny|-1"],
            ),
        ]);
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
            seen = Some(line);
            break;
        }
    }
    let _ = follow.kill();
    let _ = follow.wait();
    let line = seen.expect("--follow printed a new record");
    assert!(
        line.contains("shop/cache") && line.contains("TCP/6380") && line.contains("DENY"),
        "{line}"
    );
}
