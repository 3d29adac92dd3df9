//! Records as a careless or hostile writer makes them (interface names with
//! quotes, braces, spaces, separators; names of host interfaces; clashes)
//! never yield a ruleset nft refuses, never name an interface that is not
//! a workload's, and never reach the table through a second endpoint on
//! the same interface.

use calico_api::{decode_resource, Resource};
use calico_calc::{CalcGraph, DesiredState, Update};
use calico_test_support::Netns;
use proptest::prelude::*;
use serde_json::json;

fn wep(name: &str, iface: &str, ip: &str, labels: &[(&str, &str)]) -> serde_json::Value {
    let labels: serde_json::Map<String, serde_json::Value> = labels
        .iter()
        .map(|(k, v)| ((*k).to_string(), json!(v)))
        .collect();
    json!({"apiVersion": "projectcalico.org/v3", "kind": "WorkloadEndpoint",
        "metadata": {"name": name, "namespace": "x", "labels": labels},
        "spec": {"node": "node-1", "interfaceName": iface, "ipNetworks": [ip], "profiles": ["kns.x"]}})
}

/// The resource as the agent sees it: validated when it decodes (one that
/// does not decode is skipped). To reach the graph and the renderer as
/// well, each record is also fed past validation (its interface name
/// written into an otherwise valid endpoint), as a bug upstream might.
fn updates(records: &[serde_json::Value]) -> Vec<Update> {
    let mut out = Vec::new();
    for r in records {
        if let Ok(res) = decode_resource(r.clone()) {
            out.push(Update::Put(res));
        }
        let mut valid = r.clone();
        if valid["kind"] == "WorkloadEndpoint" {
            valid["spec"]["interfaceName"] = json!("caliplaceholder");
        }
        let Resource::WorkloadEndpoint(mut w) = decode_resource(valid).expect("valid shape") else {
            continue;
        };
        w.spec.interface_name = r["spec"]["interfaceName"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        out.push(Update::Put(Resource::WorkloadEndpoint(w)));
    }
    out
}

fn render(records: &[serde_json::Value]) -> (String, CalcGraph) {
    let mut g = CalcGraph::new("node-1");
    let mut state = DesiredState::default();
    let policy = json!({"apiVersion": "projectcalico.org/v3", "kind": "NetworkPolicy",
        "metadata": {"name": "p", "namespace": "x"},
        "spec": {"selector": "app == 'db'", "ingress": [{"action": "Allow", "source": {"selector": "role == 'ok'"}}]}});
    let mut all = vec![Update::Put(decode_resource(policy).expect("policy"))];
    all.extend(updates(records));
    state.apply(&g.apply_all(all)).expect("ordering");
    (calico_dataplane::render(&state), g)
}

fn nft_accepts(ns: &Netns, text: &str) -> Result<(), String> {
    let file = std::env::temp_dir().join(format!("{}.nft", calico_test_support::unique("hostile")));
    std::fs::write(&file, text).expect("write");
    let check = ns.exec(&["nft", "-c", "-f", file.to_str().expect("path")]);
    let _ = std::fs::remove_file(&file);
    if check.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&check.stderr).to_string())
    }
}

#[test]
fn named_hostile_interfaces_are_left_out() {
    let records: Vec<serde_json::Value> = [
        "x\"; flush ruleset; \"",
        "cali}{",
        "cali a",
        "cali\nb",
        "eth0",
        "uplink0",
        "cali",
        "..",
        "caliaaaaaaaaaaaaaaaaaaaa",
        "calié",
    ]
    .iter()
    .enumerate()
    .map(|(i, iface)| {
        wep(
            &format!("bad-{i}"),
            iface,
            &format!("10.1.0.{i}/32"),
            &[("app", "db")],
        )
    })
    .chain([
        wep("good", "cali0123456789a", "10.1.1.1/32", &[("app", "db")]),
        wep("twin-a", "calitwin", "10.1.1.2/32", &[("app", "db")]),
        wep("twin-b", "calitwin", "10.1.1.3/32", &[("role", "ok")]),
    ])
    .collect();
    let (text, g) = render(&records);
    let ns = Netns::new("nft-hostile");
    nft_accepts(&ns, &text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert!(text.contains("cali0123456789a"), "{text}");
    for gone in ["flush", "eth0", "uplink0", "calitwin", "calié", "caliaaaa"] {
        assert!(!text.contains(gone), "{gone} reached the table:\n{text}");
    }
    let rejected = g.rejected();
    assert!(
        rejected.keys().any(|id| id.name == "twin-a")
            && rejected.keys().any(|id| id.name == "twin-b")
    );
    assert!(
        rejected.keys().any(|id| id.name == "bad-4"),
        "eth0: {rejected:?}"
    );
    // Resolving the clash gives the interface back to the one left.
    let mut g = g;
    let intents = g.apply(Update::Delete {
        kind: calico_api::Kind::WorkloadEndpoint,
        namespace: Some("x".into()),
        name: "twin-b".into(),
    });
    assert!(
        intents.iter().any(|i| matches!(i, calico_calc::Intent::EndpointUpdate { endpoint, .. } if endpoint.interface == "calitwin")),
        "{intents:?}"
    );
    assert!(!g.rejected().keys().any(|id| id.name.starts_with("twin")));
}

fn iface() -> impl Strategy<Value = String> {
    prop_oneof![
        "cali[0-9a-f]{1,11}",
        "[ -~]{0,20}",
        "cali[\"{}; \\\\@$]{1,6}",
        Just("eth0".to_string()),
        Just("calitwin".to_string()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
    #[test]
    fn arbitrary_endpoint_records_always_load(
        eps in prop::collection::vec((iface(), 0u8..=255, prop::bool::ANY), 1..8)
    ) {
        let records: Vec<serde_json::Value> = eps
            .iter()
            .enumerate()
            .map(|(i, (name, last, db))| {
                let labels: &[(&str, &str)] = if *db { &[("app", "db")] } else { &[("role", "ok")] };
                wep(&format!("ep-{i}"), name, &format!("10.2.{i}.{last}/32"), labels)
            })
            .collect();
        let (text, _) = render(&records);
        let ns = Netns::new("nft-prop");
        prop_assert!(nft_accepts(&ns, &text).is_ok(), "{}", text);
        for line in text.lines().filter(|l| l.contains("ifname") || l.contains(": jump")) {
            prop_assert!(!line.contains("eth0"), "{}", line);
        }
    }
}
