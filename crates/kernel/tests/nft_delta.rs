//! Incremental updates: starting from the kernel holding one state, the
//! delta to the next state must leave exactly what loading that state in
//! full leaves, and must be accepted as a delta (not rescued by the full
//! replace). States walk through random subsets of the golden manifest
//! plus network sets that nest, so set elements come and go.

use calico_api::decode_manifest;
use calico_calc::{CalcGraph, DesiredState, Update};
use calico_dataplane::{build, Table};
use calico_kernel::{Applied, Firewall, Nft};
use calico_test_support::Netns;
use std::path::Path;

const EXTRA: &str = "
apiVersion: projectcalico.org/v3
kind: GlobalNetworkSet
metadata: {name: nested, labels: {feed: bad}}
spec: {nets: [192.0.2.7/32, 192.0.2.0/25, 198.51.100.0/24, 2001:db8::/64]}
---
apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata: {name: node--1-k8s-db-eth0, namespace: shop, labels: {app: api, projectcalico.org/namespace: shop, projectcalico.org/orchestrator: k8s}}
spec: {node: node-1, pod: db, endpoint: eth0, interfaceName: cali00000000db, ipNetworks: [10.65.0.3/32, 'fd00::3/128'], profiles: [kns.shop], ports: [{name: http, protocol: TCP, port: 8081}]}
";

fn table_of(docs: &[calico_api::Resource], pick: u64) -> Table {
    let mut g = CalcGraph::new("node-1");
    let mut state = DesiredState::default();
    for (i, r) in docs.iter().enumerate() {
        if pick & (1 << i) != 0 {
            state
                .apply(&g.apply(Update::Put(r.clone())))
                .expect("ordering");
        }
    }
    build(&state)
}

/// The table as the kernel lists it, without handles, objects sorted.
fn listing(ns: &Netns) -> Vec<String> {
    let out = ns.ok(&["nft", "-j", "list", "table", "inet", "calico"]);
    let mut v: serde_json::Value = serde_json::from_str(&out).expect("nft json");
    let mut items = Vec::new();
    for mut o in v["nftables"].as_array_mut().expect("array").drain(..) {
        if o.get("metainfo").is_some() {
            continue;
        }
        if let Some(obj) = o.as_object_mut().and_then(|m| m.values_mut().next()) {
            if let Some(m) = obj.as_object_mut() {
                m.remove("handle");
            }
        }
        items.push(o.to_string());
    }
    items.sort();
    items
}

#[test]
fn deltas_leave_what_a_full_load_leaves() {
    let golden =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../calc/tests/golden/k8s-and-tiers.yaml");
    let mut docs = decode_manifest(&std::fs::read_to_string(golden).expect("read")).expect("valid");
    docs.extend(decode_manifest(EXTRA).expect("extra valid"));
    assert!(docs.len() < 64);
    let all = (1u64 << docs.len()) - 1;

    let live = Netns::new("nft-delta");
    let reference = Netns::new("nft-full");
    let (live_nft, ref_nft) = (Nft::in_netns(&live.name), Nft::in_netns(&reference.name));

    // Everything, nothing, then random subsets (a fixed LCG, so runs repeat).
    let mut picks = vec![all, 0, all];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..30 {
        x = x
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        picks.push((x >> 11) & all);
    }
    picks.push(0);

    let mut old = table_of(&docs, picks[0]);
    live_nft.apply(&old.to_text()).expect("initial load");
    let mut deltas = 0;
    for (step, &pick) in picks.iter().enumerate().skip(1) {
        let new = table_of(&docs, pick);
        let how = live_nft.update(Some(&old), &new).expect("update");
        let expected = if new == old {
            Applied::Unchanged
        } else {
            Applied::Delta
        };
        assert_eq!(
            how,
            expected,
            "step {step}: delta refused:\n{}",
            new.delta(&old).unwrap_or_default()
        );
        deltas += usize::from(how == Applied::Delta);
        ref_nft.apply(&new.to_text()).expect("full load");
        assert_eq!(
            listing(&live),
            listing(&reference),
            "step {step} (subset {pick:#x}) differs"
        );
        old = new;
    }
    assert!(deltas > 20, "only {deltas} steps changed anything");
}

#[test]
fn a_table_changed_behind_our_back_is_replaced_whole() {
    let ns = Netns::new("nft-drift");
    let nft = Nft::in_netns(&ns.name);
    let golden =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../calc/tests/golden/k8s-and-tiers.yaml");
    let docs = decode_manifest(&std::fs::read_to_string(golden).expect("read")).expect("valid");
    let all = (1u64 << docs.len()) - 1;
    let old = table_of(&docs, all);
    let new = table_of(&docs, all & !1);
    nft.apply(&old.to_text()).expect("load");
    ns.ok(&["nft", "delete", "table", "inet", "calico"]);
    assert_eq!(nft.update(Some(&old), &new).expect("update"), Applied::Full);
    let listed = ns.ok(&["nft", "list", "table", "inet", "calico"]);
    assert!(listed.contains("chain forward"), "{listed}");
}
