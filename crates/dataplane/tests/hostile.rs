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

/// One rule built from random parts (many combinations are invalid and
/// refused by validation; the rest must render to a script nft accepts).
fn rule() -> impl Strategy<Value = String> {
    let action = prop_oneof![Just("Allow"), Just("Deny"), Just("Pass"), Just("Log")];
    let protocol = prop_oneof![
        Just(""),
        Just("protocol: TCP, "),
        Just("protocol: UDP, "),
        Just("protocol: ICMP, "),
        Just("protocol: ICMPv6, "),
        Just("protocol: SCTP, "),
        Just("protocol: 47, "),
        Just("notProtocol: UDP, "),
    ];
    let extra = prop_oneof![
        Just(""),
        Just("ipVersion: 4, "),
        Just("ipVersion: 6, "),
        Just("icmp: {type: 8, code: 0}, "),
        Just("notICMP: {type: 3}, "),
        Just("icmp: {type: 128}, "),
    ];
    let side = prop_oneof![
        Just(""),
        Just("nets: [10.1.0.0/16, 'fd00::/64'], "),
        Just("notNets: [10.1.2.0/24], "),
        Just("nets: ['fd00:1::/48'], "),
        Just("selector: role == 'ok', "),
        Just("notSelector: role == 'ok', "),
        Just("namespaceSelector: team == 'x', "),
        Just("ports: [80, '1000:2000', http], "),
        Just("notPorts: [22], "),
        Just("serviceAccounts: {names: [sa]}, "),
    ];
    (action, protocol, extra, side.clone(), side).prop_map(|(a, p, x, s, d)| {
        format!("{{action: {a}, {p}{x}source: {{{s}}}, destination: {{{d}}}}}")
    })
}

fn policy(name: &str, ingress: &[&String], egress: &[&String]) -> String {
    let join = |v: &[&String]| v.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ");
    format!(
        "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {{name: {name}}}\nspec: {{selector: app == 'db', types: [Ingress, Egress], ingress: [{}], egress: [{}]}}\n",
        join(ingress),
        join(egress)
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
    #[test]
    fn arbitrary_valid_rules_always_load(ingress in prop::collection::vec(rule(), 1..8), egress in prop::collection::vec(rule(), 0..6)) {
        // Only the rules validation accepts (checked one by one, so that
        // one bad rule does not discard the rest).
        let valid = |rules: &[String]| -> Vec<String> {
            rules
                .iter()
                .filter(|r| calico_api::decode_manifest(&policy("probe", &[*r], &[])).is_ok())
                .cloned()
                .collect()
        };
        let (ingress, egress) = (valid(&ingress), valid(&egress));
        let m = policy("g", &ingress.iter().collect::<Vec<_>>(), &egress.iter().collect::<Vec<_>>());
        let policy = calico_api::decode_manifest(&m).expect("valid rules make a valid policy");
        let mut g = CalcGraph::new("node-1");
        let mut state = DesiredState::default();
        let ep = decode_resource(wep("ep", "cali0123", "10.2.0.1/32", &[("app", "db")])).expect("endpoint");
        let other = decode_resource(wep("ok", "cali0456", "10.2.0.2/32", &[("role", "ok")])).expect("endpoint");
        let updates = policy.into_iter().chain([ep, other]).map(Update::Put);
        state.apply(&g.apply_all(updates)).expect("ordering");
        let text = calico_dataplane::render(&state);
        let ns = Netns::new("nft-rules");
        let checked = nft_accepts(&ns, &text);
        prop_assert!(checked.is_ok(), "{:?}\n{}\n{}", checked, m, text);
        // And with flow logs: every deciding verdict logs to NFLOG.
        let node = calico_dataplane::NodeRules { flow_logs: true, ..calico_dataplane::NodeRules::default() };
        let text = calico_dataplane::build_with(&state, &node).to_text();
        let checked = nft_accepts(&ns, &text);
        prop_assert!(checked.is_ok(), "{:?}\n{}\n{}", checked, m, text);
        prop_assert!(text.contains("log prefix \"DN|tw-cali0123\" group 1 drop"), "{}", text);
    }
}
