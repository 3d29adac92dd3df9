//! The web UI in a real browser (headless Chromium): the page loads
//! against a running flow service, the flows appear, the filters in the
//! link select them, a denied flow's detail names the policy that denied
//! it, the graph draws allowed and denied edges, the policy table counts
//! rule hits. Screenshots go to `target/screenshots/`.

// Tests own the clock.
#![allow(clippy::disallowed_methods)]

use calico_flows::export::{ExportConfig, Exporter};
use calico_flows::server::{Config, Running};
use calico_flows::store::Store;
use calico_flows::Flow;
use calico_test_support::Browser;
use std::path::{Path, PathBuf};
use std::time::Duration;

fn record(
    src: (&str, &str),
    dst: (&str, &str),
    port: u16,
    action: &str,
    trace: &[&str],
    t: u64,
) -> Flow {
    Flow {
        start_time: t,
        end_time: t + 5,
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
        pending_policies: if action == "allow" && dst.1 == "db" {
            vec!["0|default|shop/lockdown|deny|0".into()]
        } else {
            vec![]
        },
        packets: 3,
        bytes: 180,
        num_flows: 1,
        ..Flow::default()
    }
}

fn screenshots() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/screenshots");
    std::fs::create_dir_all(&dir).expect("screenshot directory");
    dir
}

#[test]
fn the_ui_shows_flows_filters_traces_graph_and_rule_hits() {
    let dir = tempfile::tempdir().expect("dir");
    let db = dir.path().join("flows.db");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    {
        let mut s = Store::open(&db).expect("store");
        let allow = ["0|default|shop/db|allow|0"];
        let deny = [
            "0|security|quarantine|pass|2",
            "1|default|default.end-of-tier|deny|-1",
        ];
        s.insert(&[
            record(
                ("shop", "web"),
                ("shop", "db"),
                5432,
                "allow",
                &allow,
                now - 60,
            ),
            record(
                ("shop", "web"),
                ("shop", "db"),
                5432,
                "allow",
                &allow,
                now - 40,
            ),
            record(
                ("bank", "api"),
                ("shop", "db"),
                5432,
                "deny",
                &deny,
                now - 30,
            ),
            record(
                ("shop", "web"),
                ("bank", "api"),
                443,
                "allow",
                &["0|default|bank/api|allow|1"],
                now - 20,
            ),
        ])
        .expect("insert");
    }
    let running = Running::start(Config {
        grpc: "127.0.0.1:0".parse().expect("addr"),
        http: "127.0.0.1:0".parse().expect("addr"),
        db,
        raw_retention: Duration::from_secs(3600),
        hourly_retention: Duration::from_secs(86_400),
        tls: None,
    })
    .expect("the flow service starts");
    let bound = running.bound;
    let base = format!("http://{}/", bound.http);
    let shots = screenshots();
    let wait = Duration::from_secs(15);
    let mut b = Browser::start();
    let rows = "document.querySelectorAll('#flows tr.flow').length";

    // Everything, newest first, with what decided each.
    b.goto(&base);
    b.wait_for(&format!("{rows} === 4"), wait);
    let first = b.eval("[...document.querySelectorAll('#flows tr.flow')].map(r => r.innerText)");
    assert!(
        first[0].as_str().expect("row").contains("bank/api"),
        "newest first: {first}"
    );
    assert!(
        first[1]
            .as_str()
            .expect("row")
            .contains("default.end-of-tier → deny"),
        "the table says what decided: {first}"
    );

    // A live record arrives while the page is open.
    let x = Exporter::start(ExportConfig {
        server: bound.grpc.to_string(),
        node: "node-2".into(),
        capacity: 100,
        tls: None,
    })
    .expect("exporter");
    x.offer([record(
        ("shop", "web"),
        ("shop", "cache"),
        6379,
        "deny",
        &["0|default|default.end-of-tier|deny|-1"],
        now,
    )]);
    b.wait_for(
        &format!("{rows} === 5 && document.querySelector('#flows tr.flow.fresh')"),
        wait,
    );
    assert_eq!(
        b.eval("document.querySelector('#flows tr.flow').dataset.dest"),
        "shop/cache",
        "the live record is on top"
    );

    // The filter form: denied flows to shop/db.
    b.eval("document.querySelector('[name=action]').value = 'deny'; document.querySelector('[name=name]').value = 'db'; document.querySelector('#filters button[type=submit]').click()");
    b.wait_for(&format!("{rows} === 1"), wait);
    assert_eq!(
        b.eval("location.hash"),
        "#name=db&action=deny",
        "the filters are in the link"
    );
    // The denied flow's detail names the policy that denied it.
    b.eval("document.querySelector('#flows tr.flow').click()");
    b.wait_for("!document.querySelector('#detail').hidden", wait);
    assert_eq!(
        b.eval("document.querySelector('#detail-title').innerText"),
        "bank/api → shop/db"
    );
    let trace = b.eval("[...document.querySelectorAll('#trace li')].map(l => l.innerText)");
    assert_eq!(
        trace,
        serde_json::json!([
            "security/quarantine rule 2 → pass",
            "default.end-of-tier → deny"
        ]),
        "the whole trace, the pass on the way included"
    );
    assert_eq!(
        b.eval("document.querySelector('#trace li.decided').dataset.policy"),
        "default.end-of-tier"
    );
    b.screenshot(&shots.join("flows-denied-detail.png"));

    // A shared link opens with its filters and the flow's detail; a staged
    // policy's verdict shows as the pending trace.
    b.goto(&format!("{base}#name=db&action=allow&flow=0"));
    b.wait_for(
        &format!("{rows} === 2 && !document.querySelector('#detail').hidden"),
        wait,
    );
    assert_eq!(
        b.eval("document.querySelector('[name=action]').value"),
        "allow"
    );
    assert_eq!(
        b.eval("document.querySelector('#pending li').innerText"),
        "default/shop/lockdown rule 0 → deny"
    );
    b.goto(&format!("{base}#namespace=bank&policy=bank%2Fapi"));
    b.wait_for(&format!("{rows} === 1"), wait);

    // A filter the API refuses says why, on the page.
    b.eval("document.querySelector('[name=port]').value = '99999'; document.querySelector('#filters button[type=submit]').click()");
    let err = b.wait_for("document.querySelector('#error').innerText", wait);
    assert!(
        err.as_str()
            .expect("text")
            .contains("not a number in range"),
        "{err}"
    );

    // The graph: allowed and denied edges between the workloads.
    b.goto(&format!("{base}#"));
    b.wait_for(&format!("{rows} === 5"), wait);
    b.eval("document.querySelector('nav button[data-view=graph]').click()");
    b.wait_for(
        "document.querySelectorAll('#graph .node').length === 4",
        wait,
    );
    let edges = b.eval("[...document.querySelectorAll('#graph path.edge')].map(e => e.getAttribute('class') + ' ' + e.dataset.source + ' ' + e.dataset.dest).sort()");
    assert_eq!(
        edges,
        serde_json::json!([
            "edge allow shop/web bank/api",
            "edge allow shop/web shop/db",
            "edge deny bank/api shop/db",
            "edge deny shop/web shop/cache"
        ])
    );
    b.screenshot(&shots.join("flows-graph.png"));

    // Rule hits per policy rule.
    b.eval("document.querySelector('nav button[data-view=policies]').click()");
    b.wait_for(
        "document.querySelectorAll('#policies tr.rule').length >= 4",
        wait,
    );
    let hits = b.eval("[...document.querySelectorAll('#policies tr.rule')].map(r => r.innerText.replace(/\t/g, ' '))");
    assert!(
        hits.as_array().expect("rows").iter().any(|r| r
            .as_str()
            .is_some_and(|r| r.starts_with("default shop/db 0 allow dst 2 6 0"))),
        "{hits}"
    );
    b.eval("document.querySelector('nav button[data-view=flows]').click()");
    b.screenshot(&shots.join("flows-table.png"));
    for s in [
        "flows-denied-detail.png",
        "flows-graph.png",
        "flows-table.png",
    ] {
        let len = std::fs::metadata(shots.join(s))
            .map(|m| m.len())
            .unwrap_or(0);
        assert!(len > 10_000, "screenshot {s} is {len} bytes");
    }
    drop(b);
    drop(running);
}
