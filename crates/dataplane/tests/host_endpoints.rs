//! Which interfaces a node's host endpoints take in the table: a named
//! one its own, `*` the rest, one known by expectedIPs alone each
//! interface holding one of them that no named endpoint has (never a
//! workload's), the first by name where two match. And nft loads it.

use calico_api::decode_manifest;
use calico_calc::{CalcGraph, DesiredState, Update};
use calico_dataplane::{build_with, NodeRules};
use calico_test_support::Netns;

fn state(yaml: &str) -> DesiredState {
    let mut g = CalcGraph::new("node-1");
    let mut s = DesiredState::default();
    for r in decode_manifest(yaml).expect("valid") {
        s.apply(&g.apply(Update::Put(r))).expect("ordering");
    }
    s
}

/// nft checks `text` (not committed) in a namespace of its own.
fn nft_accepts(tag: &str, text: &str) {
    let ns = Netns::new(tag);
    let file = std::env::temp_dir().join(format!("{}.nft", calico_test_support::unique(tag)));
    std::fs::write(&file, text).expect("write");
    let check = ns.exec(&["nft", "-c", "-f", file.to_str().expect("path")]);
    let _ = std::fs::remove_file(&file);
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
}

fn hep(name: &str, spec: &str) -> String {
    format!("apiVersion: projectcalico.org/v3\nkind: HostEndpoint\nmetadata: {{name: {name}}}\nspec: {{node: node-1, {spec}}}\n---\n")
}

#[test]
fn expected_ips_bind_to_the_interfaces_holding_them() {
    let s = state(&format!(
        "{}{}{}",
        hep("a-by-ip", "expectedIPs: [10.0.0.1, 10.0.1.1, 10.0.2.1]"),
        hep("b-by-ip", "expectedIPs: [10.0.1.1, 10.0.3.1]"),
        hep("named", "interfaceName: eth2"),
    ));
    let node = NodeRules {
        interface_addresses: [
            ("eth0", "10.0.0.1"),
            ("eth1", "10.0.1.1"),
            ("eth2", "10.0.2.1"),
            ("cali0123456789a", "10.0.0.1"),
            ("eth3", "10.0.3.1"),
            ("eth4", "10.0.4.1"),
        ]
        .iter()
        .map(|(n, a)| (n.to_string(), a.parse().expect("ip")))
        .collect(),
        ..NodeRules::default()
    };
    let table = build_with(&s, &node);
    let map = |name: &str| {
        table
            .collections
            .iter()
            .find(|c| c.name == name)
            .map(|c| c.elements.clone())
            .unwrap_or_default()
    };
    assert_eq!(
        map("hep-in"),
        [
            "\"eth2\" : jump hi-eth2",
            "\"eth0\" : jump hi-eth0",
            "\"eth1\" : jump hi-eth1",
            "\"eth3\" : jump hi-eth3",
        ]
    );
    let text = table.to_text();
    assert!(
        !text.contains("hi-cali") && !text.contains("hi-eth4"),
        "{text}"
    );
    // Nothing holds the addresses: nothing bound, no table part at all.
    let bare = build_with(&s, &NodeRules::default()).to_text();
    assert!(
        bare.contains("hi-eth2") && !bare.contains("hi-eth0"),
        "{bare}"
    );
    nft_accepts("hep-bind", &text);
}

/// With flow logs on, host endpoints walk copies of their policies and
/// profiles that log nothing: their verdicts never reach NFLOG (and so
/// never a workload's flow record), while the workloads' walks still log.
#[test]
fn host_endpoint_walks_never_log_flow_verdicts() {
    let s = state(&format!(
        "{}apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {{name: both}}\n\
         spec: {{selector: all(), types: [Ingress, Egress], ingress: [{{action: Allow, protocol: TCP, destination: {{ports: [80]}}}}], egress: [{{action: Allow}}]}}\n---\n\
         apiVersion: projectcalico.org/v3\nkind: WorkloadEndpoint\nmetadata: {{name: w, namespace: a}}\n\
         spec: {{node: node-1, interfaceName: cali1, ipNetworks: [10.0.0.1/32]}}\n",
        hep("h", "interfaceName: eth0, profiles: [projectcalico-default-allow, undefined-profile]"),
    ));
    let node = NodeRules {
        flow_logs: true,
        ..NodeRules::default()
    };
    let table = build_with(&s, &node);
    let by_name: std::collections::BTreeMap<&str, &calico_dataplane::Chain> =
        table.chains.iter().map(|c| (c.name.as_str(), c)).collect();
    // Everything reachable from the host endpoint's chains.
    let mut seen = std::collections::BTreeSet::new();
    let mut todo: Vec<&str> = by_name
        .keys()
        .copied()
        .filter(|n| {
            ["hi-", "ho-", "hfi-", "hfo-", "hp-", "hui-", "huo-"]
                .iter()
                .any(|p| n.starts_with(p))
        })
        .collect();
    assert!(!todo.is_empty());
    while let Some(name) = todo.pop() {
        if !seen.insert(name) {
            continue;
        }
        let chain = by_name
            .get(name)
            .unwrap_or_else(|| panic!("no chain {name}"));
        for rule in &chain.rules {
            assert!(!rule.contains(" log "), "{name} logs: {rule}");
            for word in rule
                .split_whitespace()
                .skip_while(|w| *w != "jump" && *w != "goto")
                .skip(1)
                .take(1)
            {
                todo.push(word);
            }
        }
    }
    assert!(seen.iter().any(|n| n.ends_with("-q")), "{seen:?}");
    // The workload's own walk still logs.
    let text = table.to_text();
    assert!(text.contains("log prefix"), "{text}");
    nft_accepts("hep-quiet", &text);
}
