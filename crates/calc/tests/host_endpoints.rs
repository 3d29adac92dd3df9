//! Host endpoints in the calculation graph: which policies select them
//! (global ones only, by label), which kind of policy lands where, and
//! the endpoints a node cannot program (reported, changing nothing else).

use calico_api::decode_manifest;
use calico_calc::{CalcGraph, DesiredState, Update};

fn state(yaml: &str) -> (CalcGraph, DesiredState) {
    let mut g = CalcGraph::new("node-1");
    let mut s = DesiredState::default();
    for r in decode_manifest(yaml).expect("valid") {
        s.apply(&g.apply(Update::Put(r))).expect("ordering");
    }
    (g, s)
}

const HEP: &str = "apiVersion: projectcalico.org/v3\nkind: HostEndpoint\nmetadata: {name: NAME, labels: {app: web, projectcalico.org/namespace: a}}\nspec: {node: node-1, interfaceName: 'IFACE', expectedIPs: [10.0.9.1]}\n";

fn hep(name: &str, iface: &str) -> String {
    HEP.replace("NAME", name).replace("IFACE", iface)
}

#[test]
fn namespaced_policy_never_selects_a_host_endpoint() {
    // Even one that claims the namespace in its labels.
    let (_, s) = state(&format!(
        "{}---\napiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {{name: np, namespace: a}}\nspec: {{selector: all(), ingress: [{{action: Deny}}]}}\n",
        hep("h", "eth0")
    ));
    let h = &s.host_endpoints["h"];
    assert!(h.ingress.is_empty() && s.policies.is_empty(), "{h:?}");
}

#[test]
fn each_kind_of_policy_lands_in_its_own_place() {
    let gnp = |name: &str, extra: &str| {
        format!("---\napiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {{name: {name}}}\nspec: {{selector: app == 'web', {extra} ingress: [{{action: Allow}}]}}\n")
    };
    let wep = "---\napiVersion: projectcalico.org/v3\nkind: WorkloadEndpoint\nmetadata: {name: w, namespace: a, labels: {app: web}}\nspec: {node: node-1, interfaceName: cali1, ipNetworks: [10.0.0.1/32]}\n";
    let (_, s) = state(&format!(
        "{}{}{}{}{}{wep}",
        hep("h", "eth0"),
        gnp("normal", ""),
        gnp("fwd", "applyOnForward: true,"),
        gnp("prednat", "applyOnForward: true, preDNAT: true,"),
        gnp("untracked", "applyOnForward: true, doNotTrack: true,"),
    ));
    let names = |tiers: &[calico_calc::TierPolicies]| -> Vec<String> {
        tiers
            .iter()
            .flat_map(|t| t.policies.iter().map(|p| p.name.clone()))
            .collect()
    };
    let h = &s.host_endpoints["h"];
    assert_eq!(names(&h.ingress), ["fwd", "normal"]);
    assert_eq!(names(&h.forward_ingress), ["fwd"]);
    assert_eq!(names(&h.pre_dnat), ["prednat"]);
    assert_eq!(names(&h.untracked_ingress), ["untracked"]);
    // A workload gets normal policy only (applyOnForward or not).
    let w = &s.endpoints["a/w"];
    assert_eq!(names(&w.ingress), ["fwd", "normal"]);
}

#[test]
fn endpoints_a_node_cannot_program_are_reported_alone() {
    let (g, s) = state(&format!(
        "{}---\n{}---\n{}---\n{}---\n{}",
        hep("a-first", "eth0"),
        hep("b-second", "eth0"),
        hep("cali", "cali0123456789a"),
        hep("all", "*"),
        "apiVersion: projectcalico.org/v3\nkind: HostEndpoint\nmetadata: {name: by-ip}\nspec: {node: node-1, expectedIPs: [10.0.9.9]}\n",
    ));
    let programmed: Vec<&String> = s.host_endpoints.keys().collect();
    assert_eq!(programmed, ["a-first", "all", "by-ip"]);
    // Known by its address: the dataplane binds it to the interface.
    let by_ip = &s.host_endpoints["by-ip"];
    assert_eq!(by_ip.interface, "");
    assert_eq!(
        by_ip.expected_ips,
        ["10.0.9.9".parse::<std::net::IpAddr>().expect("ip")]
    );
    let why = g.rejected_hosts();
    assert!(
        why["b-second"].contains("already has host endpoint a-first"),
        "{why:?}"
    );
    assert!(why["cali"].contains("workload interface"), "{why:?}");
    assert_eq!(why.len(), 2, "{why:?}");
}

#[test]
fn the_interface_passes_on_when_its_holder_goes() {
    let (mut g, mut s) = state(&format!("{}---\n{}", hep("a", "eth0"), hep("b", "eth0")));
    assert!(s.host_endpoints.contains_key("a") && !s.host_endpoints.contains_key("b"));
    let intents = g.apply(Update::Delete {
        kind: calico_api::Kind::HostEndpoint,
        namespace: None,
        name: "a".into(),
    });
    s.apply(&intents).expect("ordering");
    assert!(s.host_endpoints.contains_key("b") && !s.host_endpoints.contains_key("a"));
    assert!(g.rejected_hosts().is_empty());
}
