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

/// With flow logs on, a host endpoint's normal policy logs its verdicts
/// (group 1 in, group 2 out, its tier ends under the walk's own chain), as
/// a workload's does; its preDNAT and doNotTrack walks go through copies
/// that log nothing (an untracked packet would log every time).
#[test]
fn host_endpoint_walks_log_flow_verdicts_but_untracked_and_prednat_ones_do_not() {
    let s = state(&format!(
        "{}apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {{name: both}}\n\
         spec: {{selector: all(), types: [Ingress, Egress], ingress: [{{action: Allow, protocol: TCP, destination: {{ports: [80]}}}}], egress: [{{action: Allow}}]}}\n---\n\
         apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {{name: raw}}\n\
         spec: {{selector: all(), doNotTrack: true, applyOnForward: true, types: [Ingress, Egress], ingress: [{{action: Allow, protocol: UDP}}], egress: [{{action: Allow, protocol: UDP}}]}}\n---\n\
         apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {{name: pre}}\n\
         spec: {{selector: all(), preDNAT: true, applyOnForward: true, types: [Ingress], ingress: [{{action: Deny, protocol: TCP, destination: {{ports: [23]}}}}]}}\n---\n\
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
    // Every rule reachable from the chains whose names start with `heads`.
    let reachable = |heads: &[&str]| -> Vec<String> {
        let mut seen = std::collections::BTreeSet::new();
        let mut rules = Vec::new();
        let mut todo: Vec<&str> = by_name
            .keys()
            .copied()
            .filter(|n| heads.iter().any(|p| n.starts_with(p)))
            .collect();
        assert!(!todo.is_empty(), "{heads:?}");
        while let Some(name) = todo.pop() {
            if !seen.insert(name) {
                continue;
            }
            let chain = by_name
                .get(name)
                .unwrap_or_else(|| panic!("no chain {name}"));
            for rule in &chain.rules {
                rules.push(rule.clone());
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
        rules
    };
    for rule in reachable(&["hp-", "hui-", "huo-"]) {
        assert!(
            !rule.contains(" log "),
            "a preDNAT or untracked walk logs: {rule}"
        );
    }
    let logged = reachable(&["hi-"]).join("\n");
    assert!(logged.contains("group 1"), "{logged}");
    assert!(!logged.contains("group 2"), "{logged}");
    assert!(
        logged.contains("log prefix \"DN|hi-eth0/p\" group 1"),
        "{logged}"
    );
    let logged = reachable(&["ho-"]).join("\n");
    assert!(
        logged.contains("log prefix \"DN|ho-eth0/p\" group 2"),
        "{logged}"
    );
    // Its Allows set their identity in the mark instead of logging; the
    // endpoint's chain logs it after the walk.
    assert!(!logged.contains("log prefix \"A"), "{logged}");
    assert!(
        logged.contains("meta mark set meta mark & 0xfffff | "),
        "{logged}"
    );
    assert!(
        logged.contains("meta mark & 0xfff00000 != 0 log prefix \"E|\" group 2"),
        "{logged}"
    );
    // The walks the agent names for the collector are the logging ones.
    let walks: Vec<(String, bool)> = calico_dataplane::host_endpoint_walks(&s, &node)
        .into_iter()
        .map(|(chain, ingress, _, _)| (chain, ingress))
        .collect();
    assert_eq!(
        walks,
        vec![
            ("hi-eth0/p".to_string(), true),
            ("ho-eth0/p".to_string(), false),
        ],
        "no forward walks: no normal policy applies on forward"
    );
    let text = table.to_text();
    nft_accepts("hep-flowlog", &text);
}

/// With flow logs, egress Allows leave their identity in the mark instead
/// of logging (docs/design/flows.md): every path out of an egress walk
/// logs it unless a workload's ingress walk will, and every walk that may
/// set it starts with it cleared, so no identity but this walk's is read.
#[test]
fn deferred_egress_verdicts_are_logged_on_every_path_and_start_cleared() {
    let s = state(&format!(
        "{}apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {{name: edge}}\n\
         spec: {{selector: all(), applyOnForward: true, types: [Ingress, Egress], ingress: [{{action: Allow}}], egress: [{{action: Allow, protocol: TCP}}, {{action: Deny}}]}}\n---\n\
         apiVersion: projectcalico.org/v3\nkind: WorkloadEndpoint\nmetadata: {{name: w, namespace: a}}\n\
         spec: {{node: node-1, interfaceName: cali1, ipNetworks: [10.0.0.1/32], profiles: [kns.a]}}\n---\n\
         apiVersion: projectcalico.org/v3\nkind: Profile\nmetadata: {{name: kns.a}}\n\
         spec: {{ingress: [{{action: Allow}}], egress: [{{action: Allow}}]}}\n",
        hep("h", "interfaceName: eth0"),
    ));
    let node = NodeRules {
        flow_logs: true,
        ..NodeRules::default()
    };
    let table = build_with(&s, &node);
    let chain = |name: &str| -> Vec<String> {
        table
            .chains
            .iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("no chain {name}"))
            .rules
            .clone()
    };
    let clear = "meta mark set meta mark & 0xfffcffff";
    let clear_all = "meta mark set meta mark & 0xcffff";
    let sets_id = "meta mark set meta mark & 0xfffff | ";
    let log = "meta mark & 0xfff00000 != 0 log prefix \"E|\" group 2";
    let log_unless_to_workload =
        "meta mark & 0xfff00000 != 0 oifname != \"cali*\" log prefix \"E|\" group 2";
    let at = |rules: &[String], text: &str, from: usize| -> usize {
        from + rules[from..]
            .iter()
            .position(|r| r.contains(text))
            .unwrap_or_else(|| panic!("no {text:?} after {from} in {rules:#?}"))
    };
    let forward = chain("forward");
    // A workload's egress walk: cleared before, logged after unless the
    // packet goes to a workload ...
    let from_wl = at(&forward, "iifname vmap @from-wl", 0);
    assert_eq!(forward[from_wl - 1], clear_all, "{forward:#?}");
    let logged = at(&forward, log_unless_to_workload, from_wl);
    // ... whose ingress walk (not clearing it) logs it, or which is no
    // workload of this node.
    let to_wl = at(&forward, "oifname vmap @to-wl", logged);
    assert_eq!(forward[to_wl - 1], clear, "{forward:#?}");
    let unknown = at(&forward, "oifname \"cali*\"", to_wl);
    assert!(forward[unknown].ends_with(log), "{forward:#?}");
    // A host endpoint's egress walks (forwarded, and the host's own):
    // cleared before, logged right after, before the allowed packet is
    // accepted or returned.
    at(&forward, "oifname vmap @hep-fwd-out", unknown);
    let output = chain("output");
    at(&output, "oifname vmap @hep-out", 0);
    for wrapper in ["hfo-eth0", "ho-eth0"] {
        let rules = chain(wrapper);
        assert_eq!(rules[0], clear_all, "{wrapper}: {rules:#?}");
        let walked = at(&rules, &format!("jump {wrapper}/p"), 0);
        assert_eq!(rules[walked + 1], log, "{wrapper}: {rules:#?}");
    }
    // Workload to host: logged after the walk.
    let input = chain("input");
    let from_wl = at(&input, "iifname vmap @from-wl", 0);
    at(&input, log_unless_to_workload, from_wl);
    // Ingress walks neither clear nor log it.
    for wrapper in ["hfi-eth0", "hi-eth0"] {
        let rules = chain(wrapper);
        assert_eq!(rules[0], clear, "{wrapper}: {rules:#?}");
        assert!(
            !rules.iter().any(|r| r.contains("\"E|\"")),
            "{wrapper}: {rules:#?}"
        );
    }
    // Only egress Allows set an identity, and only in the chains that log.
    let mut deferred = 0;
    for c in &table.chains {
        for r in &c.rules {
            if r.contains(sets_id) {
                deferred += 1;
                assert!(c.name.ends_with("-out"), "{}: {r}", c.name);
                assert!(!r.contains(" log "), "{}: {r}", c.name);
            }
        }
    }
    let ids = calico_dataplane::deferred_allows(&s);
    assert!(deferred >= 2 && deferred >= ids.len(), "{deferred} {ids:?}");
    for prefix in ids.values() {
        assert!(
            prefix.starts_with('A') && prefix.ends_with("-out"),
            "{prefix}"
        );
    }
    // The egress Deny still logs itself.
    assert!(
        table.to_text().contains("log prefix \"D1|p-"),
        "{}",
        table.to_text()
    );
    nft_accepts("hep-deferred", &table.to_text());
}
