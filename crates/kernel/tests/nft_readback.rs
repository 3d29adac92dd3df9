//! Refreshes read the kernel's table back and send only the difference.
//! Every table the renderer makes (the golden manifests, with and without
//! VXLAN peers, flow logs, both families, named ports) must read back as
//! itself (so a refresh with nothing changed sends nothing); a changed
//! state, or a table someone edited behind our back, must end as a full
//! load would leave it, by a delta; and what cannot be a delta (a foreign
//! base chain, no table at all) is loaded whole.

use calico_api::decode_manifest;
use calico_calc::{CalcGraph, DesiredState, Update};
use calico_dataplane::{build_with, NodeRules, Table, VxlanSources};
use calico_kernel::{Applied, Firewall, Nft};
use calico_test_support::Netns;
use std::collections::BTreeMap;
use std::path::Path;

const EXTRA: &str = "
apiVersion: projectcalico.org/v3
kind: GlobalNetworkSet
metadata: {name: nested, labels: {feed: bad}}
spec: {nets: [192.0.2.7/32, 192.0.2.0/25, 198.51.100.0/24, 2001:db8::/64, '2001:db8:1::5/128']}
---
apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata: {name: node--1-k8s-db-eth0, namespace: shop, labels: {app: api, projectcalico.org/namespace: shop, projectcalico.org/orchestrator: k8s}}
spec: {node: node-1, pod: db, endpoint: eth0, interfaceName: cali00000000db, ipNetworks: [10.65.0.3/32, 'fd00::3/128'], profiles: [kns.shop], ports: [{name: http, protocol: TCP, port: 8081}, {name: dns, protocol: UDP, port: 53}]}
";

fn docs(name: &str) -> Vec<calico_api::Resource> {
    let golden = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../calc/tests/golden")
        .join(name);
    let mut docs = decode_manifest(&std::fs::read_to_string(golden).expect("read")).expect("valid");
    docs.extend(decode_manifest(EXTRA).expect("extra"));
    docs
}

fn state_of(docs: &[calico_api::Resource], pick: u64) -> DesiredState {
    let mut g = CalcGraph::new("node-1");
    let mut state = DesiredState::default();
    for (i, r) in docs.iter().enumerate() {
        if pick & (1 << i) != 0 {
            state
                .apply(&g.apply(Update::Put(r.clone())))
                .expect("ordering");
        }
    }
    state
}

/// Node-wide variants: the defaults; VXLAN peers of both families, flow
/// logs, spoofing allowed, outgoing NAT of both families (SNAT for IPv4).
fn variants() -> Vec<NodeRules> {
    let busy = NodeRules {
        vxlan: VxlanSources {
            port: 4789,
            v4: Some(
                ["10.250.0.2", "10.250.1.3"]
                    .iter()
                    .map(|a| a.parse().expect("ip"))
                    .collect(),
            ),
            v6: Some(
                ["fd00:250::2"]
                    .iter()
                    .map(|a| a.parse().expect("ip"))
                    .collect(),
            ),
        },
        flow_logs: true,
        source_spoofing: true,
        nat: calico_dataplane::NatOutgoing {
            masquerade: ["10.65.0.0/16", "fd00::/64"]
                .iter()
                .map(|n| n.parse().expect("net"))
                .collect(),
            pools: ["10.65.0.0/16", "10.66.0.0/16", "fd00::/64"]
                .iter()
                .map(|n| n.parse().expect("net"))
                .collect(),
            to: Some("192.0.2.10".parse().expect("ip")),
            ports: Some((40000, 40999)),
        },
        ..NodeRules::default()
    };
    vec![NodeRules::default(), busy]
}

/// The table as the kernel lists it, comparable between a delta and a
/// full load: objects by name without handles, elements sorted, each
/// chain's rules in order.
fn listing(ns: &Netns) -> BTreeMap<String, Vec<String>> {
    let out = ns.ok(&["nft", "-j", "list", "table", "inet", "calico"]);
    let v: serde_json::Value = serde_json::from_str(&out).expect("nft json");
    let mut m: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for o in v["nftables"].as_array().expect("array") {
        let Some((kind, body)) = o.as_object().and_then(|m| m.iter().next()) else {
            continue;
        };
        let mut body = body.clone();
        let Some(b) = body.as_object_mut() else {
            continue;
        };
        b.remove("handle");
        match kind.as_str() {
            "rule" => {
                let chain = b["chain"].as_str().unwrap_or_default().to_string();
                m.entry(format!("rules {chain}"))
                    .or_default()
                    .push(body.to_string());
            }
            "set" | "map" => {
                let mut elems: Vec<String> = b
                    .remove("elem")
                    .and_then(|e| e.as_array().cloned())
                    .unwrap_or_default()
                    .iter()
                    .map(ToString::to_string)
                    .collect();
                elems.sort();
                let name = b["name"].as_str().unwrap_or_default().to_string();
                let mut v = vec![body.to_string()];
                v.extend(elems);
                m.insert(format!("{kind} {name}"), v);
            }
            "chain" => {
                let name = b["name"].as_str().unwrap_or_default().to_string();
                m.insert(format!("chain {name}"), vec![body.to_string()]);
            }
            _ => {}
        }
    }
    m
}

fn read_back(nft: &Nft, desired: &Table) -> Table {
    let json = nft.list().expect("list").expect("a table");
    sorted(Table::from_kernel(&json, desired).expect("reads back"))
}

/// Elements in order (the kernel keeps hashed ones in its own).
fn sorted(mut t: Table) -> Table {
    for c in &mut t.collections {
        c.elements.sort();
    }
    t
}

#[test]
fn every_rendered_table_reads_back_as_itself() {
    let ns = Netns::new("nft-rb-same");
    let nft = Nft::in_netns(&ns.name);
    assert_eq!(nft.list().expect("list"), None, "no table yet");
    for golden in ["k8s-and-tiers.yaml", "service-accounts.yaml"] {
        let docs = docs(golden);
        let all = (1u64 << docs.len()) - 1;
        for rules in variants() {
            let table = build_with(&state_of(&docs, all), &rules);
            nft.apply(&table.to_text()).expect("load");
            assert_eq!(read_back(&nft, &table), sorted(table.clone()), "{golden}");
            let before = listing(&ns);
            assert_eq!(
                nft.update(None, &table).expect("refresh"),
                Applied::Verified
            );
            assert_eq!(listing(&ns), before);
        }
    }
}

#[test]
fn a_refresh_or_restart_sends_only_the_difference() {
    let ns = Netns::new("nft-rb-diff");
    let reference = Netns::new("nft-rb-ref");
    let (nft, ref_nft) = (Nft::in_netns(&ns.name), Nft::in_netns(&reference.name));
    let docs = docs("k8s-and-tiers.yaml");
    let all = (1u64 << docs.len()) - 1;
    // A restarted agent: the kernel holds what the last one applied.
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut now = build_with(&state_of(&docs, all), &NodeRules::default());
    nft.apply(&now.to_text()).expect("load");
    for step in 0..8 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let rules = &variants()[step % 2];
        let next = build_with(&state_of(&docs, seed & all), rules);
        let how = nft.update(None, &next).expect("update");
        assert!(
            matches!(how, Applied::Reconciled | Applied::Verified),
            "step {step}: {how:?}"
        );
        ref_nft.apply(&next.to_text()).expect("reference");
        assert_eq!(listing(&ns), listing(&reference), "step {step}");
        now = next;
    }
    assert_eq!(nft.update(None, &now).expect("again"), Applied::Verified);
}

#[test]
fn a_table_edited_behind_our_back_is_repaired_by_the_difference() {
    let ns = Netns::new("nft-rb-drift");
    let nft = Nft::in_netns(&ns.name);
    let docs = docs("k8s-and-tiers.yaml");
    let table = build_with(&state_of(&docs, (1u64 << docs.len()) - 1), &variants()[1]);
    nft.apply(&table.to_text()).expect("load");
    let want = listing(&ns);
    // An element gone, one added; a rule gone, a foreign one added; a set
    // element with an attribute we never write.
    let set = table
        .collections
        .iter()
        .find(|c| c.kind == "set" && c.decl.contains("interval") && !c.elements.is_empty())
        .expect("an interval set with elements");
    ns.ok(&[
        "nft",
        "delete",
        "element",
        "inet",
        "calico",
        &set.name,
        &format!("{{ {} }}", set.elements[0]),
    ]);
    let extra = if set.name.ends_with("_v6") {
        "2001:db8:ffff::1"
    } else {
        "203.0.113.99"
    };
    ns.ok(&[
        "nft",
        "add",
        "element",
        "inet",
        "calico",
        &set.name,
        &format!("{{ {extra} }}"),
    ]);
    ns.ok(&["nft", "add", "rule", "inet", "calico", "forward", "accept"]);
    let handles = ns.ok(&["nft", "-a", "list", "chain", "inet", "calico", "forward"]);
    let handle = handles
        .lines()
        .filter(|l| l.starts_with("\t\t"))
        .find_map(|l| {
            l.rsplit_once("# handle ")
                .map(|(_, h)| h.trim().to_string())
        })
        .expect("a rule handle");
    ns.ok(&[
        "nft", "delete", "rule", "inet", "calico", "forward", "handle", &handle,
    ]);
    assert_ne!(listing(&ns), want);
    assert_eq!(
        nft.update(None, &table).expect("refresh"),
        Applied::Reconciled
    );
    assert_eq!(listing(&ns), want);
    assert_eq!(
        nft.update(None, &table).expect("refresh"),
        Applied::Verified
    );
}

#[test]
fn what_cannot_be_a_difference_is_loaded_whole_and_foreign_objects_go() {
    let ns = Netns::new("nft-rb-full");
    let nft = Nft::in_netns(&ns.name);
    let docs = docs("service-accounts.yaml");
    let table = build_with(
        &state_of(&docs, (1u64 << docs.len()) - 1),
        &NodeRules::default(),
    );
    // No table at all.
    assert_eq!(nft.update(None, &table).expect("first"), Applied::Full);
    let want = listing(&ns);
    // Our base chain's policy changed: not a difference a delta can make.
    ns.ok(&[
        "nft",
        "chain",
        "inet",
        "calico",
        "input",
        "{ policy drop; }",
    ]);
    assert_eq!(nft.update(None, &table).expect("refresh"), Applied::Full);
    assert_eq!(listing(&ns), want);
    // A base chain someone hooked into our table: removed.
    ns.ok(&[
        "nft",
        "add",
        "chain",
        "inet",
        "calico",
        "sneaky",
        "{ type filter hook input priority 10; policy drop; }",
    ]);
    assert_eq!(
        nft.update(None, &table).expect("refresh"),
        Applied::Reconciled
    );
    assert_eq!(listing(&ns), want);
    // A set of someone else's, with a flag we never write: removed.
    ns.ok(&[
        "nft",
        "add",
        "set",
        "inet",
        "calico",
        "theirs",
        "{ type ipv4_addr; flags timeout; }",
    ]);
    ns.ok(&[
        "nft",
        "add",
        "element",
        "inet",
        "calico",
        "theirs",
        "{ 192.0.2.1 timeout 1h }",
    ]);
    assert_eq!(
        nft.update(None, &table).expect("refresh"),
        Applied::Reconciled
    );
    assert_eq!(listing(&ns), want);
}
