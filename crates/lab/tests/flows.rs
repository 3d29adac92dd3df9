//! Flow records end to end in a two-node lab: the nodes stream what their
//! policy decided to the lab's flow service; `calico-lab flows` (that is,
//! `calicoctl flows`) and the web UI in a browser find the allowed and the
//! denied connections with the right endpoints, labels, action and trace,
//! the pending trace of a staged policy, and counts matching what was
//! sent. With the service stopped the nodes keep enforcing and report that
//! they are buffering; started again, it still has its history and
//! receives what was buffered.

// Tests own the clock.
#![allow(clippy::disallowed_methods)]

use calico_test_support::LabCli as Lab;
use std::path::Path;
use std::time::{Duration, Instant};

const POLICY: &str = "
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: db, namespace: shop}
spec:
  selector: app == 'db'
  types: [Ingress]
  ingress:
  - action: Allow
    protocol: TCP
    source: {selector: app == 'web'}
    destination: {ports: [80]}
---
apiVersion: projectcalico.org/v3
kind: StagedNetworkPolicy
metadata: {name: lockdown, namespace: shop}
spec:
  stagedAction: Set
  order: 10
  selector: app == 'db'
  types: [Ingress]
  ingress:
  - action: Deny
    protocol: TCP
    source: {selector: app == 'web'}
    destination: {ports: [80]}
---
apiVersion: projectcalico.org/v3
kind: FelixConfiguration
metadata: {name: default}
spec:
  prometheusMetricsEnabled: true
";

fn flows(lab: &Lab, args: &[&str]) -> Vec<serde_json::Value> {
    let mut all = vec!["flows", "--", "-o", "json", "--limit", "1000"];
    all.extend(args);
    let out = lab.ok(&all);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

fn sum(records: &[serde_json::Value], field: &str) -> u64 {
    records.iter().map(|r| r[field].as_u64().unwrap_or(0)).sum()
}

/// Waits until `ok` holds for the records `args` select; returns them.
fn wait_flows(
    lab: &Lab,
    args: &[&str],
    what: &str,
    ok: impl Fn(&[serde_json::Value]) -> bool,
) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = flows(lab, args);
        if ok(&r) {
            return r;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {r:#?}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn metrics(lab: &Lab, node: &str) -> String {
    let out = lab.in_netns(
        node,
        &[
            "curl",
            "-s",
            "--max-time",
            "5",
            "http://127.0.0.1:9091/metrics",
        ],
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

#[test]
fn flows_reach_the_service_with_verdicts_traces_and_counts() {
    let lab = Lab::new(
        format!("fl{}", std::process::id() % 100_000),
        Path::new(env!("CARGO_BIN_EXE_calico-lab")),
    );
    lab.ok(&["up", "--nodes", "2", "--flow-flush", "1"]);
    lab.ok(&["ns", "create", "shop"]);
    lab.ok(&[
        "pod", "create", "shop/web", "--node", "node-1", "--labels", "app=web",
    ]);
    lab.ok(&[
        "pod", "create", "shop/db", "--node", "node-2", "--labels", "app=db",
    ]);
    lab.apply(POLICY);
    let probe = |port: &str| {
        lab.ok(&[
            "probe",
            "shop/web",
            "shop/db",
            "--port",
            port,
            "--timeout-ms",
            "400",
        ])
    };

    for _ in 0..5 {
        assert_eq!(probe("80").trim(), "allowed");
    }
    for _ in 0..2 {
        assert_eq!(probe("81").trim(), "denied");
    }

    // Ingress at shop/db: five connections allowed by the policy's rule 0.
    let allowed = wait_flows(
        &lab,
        &[
            "--reporter",
            "dst",
            "--action",
            "allow",
            "--dest-name",
            "db",
        ],
        "five allowed connections at the destination",
        |r| sum(r, "num_flows_started") >= 5,
    );
    assert_eq!(sum(&allowed, "num_flows_started"), 5, "{allowed:#?}");
    for r in &allowed {
        assert_eq!(r["node"], "node-2");
        assert_eq!(
            (r["source_namespace"].as_str(), r["source_name"].as_str()),
            (Some("shop"), Some("web"))
        );
        assert_eq!(r["source_labels"]["app"], "web");
        assert_eq!(r["dest_labels"]["app"], "db");
        assert_eq!(r["dest_port"], 80);
        assert_eq!(
            r["policies"],
            serde_json::json!(["0|default|shop/db|allow|0"])
        );
    }
    // Egress at shop/web: nothing selects it; its namespace's profile allows.
    let egress = wait_flows(
        &lab,
        &["--reporter", "src", "--dest-name", "db", "--port", "80"],
        "five connections at the source",
        |r| sum(r, "num_flows_started") >= 5,
    );
    assert!(
        egress
            .iter()
            .all(|r| r["policies"]
                == serde_json::json!(["0|__PROFILE__|__PROFILE__.kns.shop|allow|0"])),
        "{egress:#?}"
    );

    // Port 81: denied at the end of the default tier, every packet counted.
    let denied = wait_flows(
        &lab,
        &["--action", "deny", "--name", "db"],
        "the denied attempts",
        |r| sum(r, "packets_in") >= 2,
    );
    assert!(
        denied
            .iter()
            .all(|r| r["reporter"] == "dst" && r["dest_port"] == 81),
        "{denied:#?}"
    );
    assert_eq!(
        denied[0]["policies"],
        serde_json::json!(["0|default|default.end-of-tier|deny|-1"])
    );
    assert_eq!(
        denied[0]["pending_policies"],
        serde_json::json!(["0|default|default.end-of-tier|deny|-1"]),
        "the staged rule is for port 80 only: {denied:#?}"
    );
    // Each attempt is a SYN; a retransmission or two at most. Counted at
    // the destination as coming in, 60 bytes each (IPv4, TCP with options).
    let packets = sum(&denied, "packets_in");
    assert!(
        (2..=4).contains(&packets),
        "{packets} denied packets for 2 attempts"
    );
    assert_eq!(sum(&denied, "bytes_in"), packets * 60, "{denied:#?}");
    assert_eq!(sum(&denied, "num_flows"), 2, "two attempts");

    // The connection tracker's counts of the allowed ones, both ways: each
    // probe is a handshake, a request, an answer and a close.
    let allowed = wait_flows(
        &lab,
        &[
            "--reporter",
            "dst",
            "--action",
            "allow",
            "--dest-name",
            "db",
        ],
        "the connection tracker's counts",
        |r| {
            sum(r, "num_flows_completed") + sum(r, "num_flows_live") >= 5
                && sum(r, "packets_out") >= 15
        },
    );
    let (pin, pout) = (sum(&allowed, "packets_in"), sum(&allowed, "packets_out"));
    assert!(
        (20..=40).contains(&pin),
        "{pin} packets in for 5 probes: {allowed:#?}"
    );
    assert!((15..=40).contains(&pout), "{pout} packets out for 5 probes");
    let bytes = sum(&allowed, "bytes_in");
    assert!(
        (pin * 52..=pin * 120).contains(&bytes),
        "{bytes} bytes in {pin} packets"
    );
    assert_eq!(sum(&allowed, "packets"), pin + pout);
    // The table reads the trace; denied flows keep the addresses
    // (Calico's aggregation level 1 for them), allowed ones do not (2).
    let table = lab.ok(&["flows", "--", "--action", "deny"]);
    assert!(
        table.contains("shop/web(10.244.") && table.contains("shop/db(10.244."),
        "{table}"
    );
    assert!(table.contains("default.end-of-tier → deny"), "{table}");
    let table = lab.ok(&["flows", "--", "--action", "allow", "--dest-name", "db"]);
    assert!(table.contains("shop/web   shop/db"), "{table}");

    // The web UI of the lab's service, in a real browser: the denied flow
    // and the rule that denied it.
    let url = lab.ok(&["flows", "--url"]).trim().to_string();
    let mut b = calico_test_support::Browser::start();
    b.goto(&format!("{url}/#action=deny&name=db&flow=0"));
    b.wait_for(
        "document.querySelectorAll('#flows tr.flow').length >= 1 && !document.querySelector('#detail').hidden",
        Duration::from_secs(20),
    );
    let title = b.eval("document.querySelector('#detail-title').innerText");
    let title = title.as_str().unwrap_or_default();
    assert!(
        title.starts_with("shop/web (10.244.") && title.contains(") → shop/db (10.244."),
        "{title}"
    );
    assert_eq!(
        b.eval("[...document.querySelectorAll('#trace li')].map(l => l.innerText)"),
        serde_json::json!(["default.end-of-tier → deny"])
    );
    b.screenshot(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/screenshots/lab-denied-flow.png"),
    );
    drop(b);

    // The service goes away: the nodes keep enforcing, and say they buffer.
    lab.ok(&["flow-service", "stop"]);
    for _ in 0..3 {
        assert_eq!(probe("80").trim(), "allowed");
        assert_eq!(probe("81").trim(), "denied");
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let m = metrics(&lab, "node-2");
        let buffered = metric(&m, "felix_flow_export_buffered").unwrap_or(0.0);
        let connected = metric(&m, "felix_flow_export_connected");
        if buffered >= 1.0 && connected == Some(0.0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node-2 does not report buffering:\n{m}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let m = metrics(&lab, "node-2");
    assert_eq!(
        metric(&m, "felix_flow_export_dropped_total"),
        Some(0.0),
        "{m}"
    );

    // Back: the history is still there, and the buffered records arrive.
    lab.ok(&["flow-service", "start"]);
    wait_flows(
        &lab,
        &[
            "--reporter",
            "dst",
            "--action",
            "allow",
            "--dest-name",
            "db",
        ],
        "the buffered connections",
        |r| sum(r, "num_flows_started") >= 8,
    );
    let denied = flows(&lab, &["--action", "deny", "--name", "db"]);
    assert!(sum(&denied, "packets_in") >= 5, "{denied:#?}");
    calico_test_support::wait_logged(
        lab.dir.path(),
        "node-2's stream open again",
        Duration::from_secs(30),
        || {
            let m = metrics(&lab, "node-2");
            metric(&m, "felix_flow_export_connected") == Some(1.0)
                && metric(&m, "felix_flow_export_buffered") == Some(0.0)
        },
    );
}
