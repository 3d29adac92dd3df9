//! One test per row of the rule-field audit in docs/design/dataplane.md:
//! every field of Rule and EntityRule is enforced exactly, refused at
//! validation, or (for application-layer matches) makes an Allow rule
//! match nothing. Nothing accepted may widen what a rule matches.

use calico_api::decode_manifest;
use calico_calc::{CalcGraph, CompiledRule, DesiredState, PortRange, Update};

const ENDPOINT: &str = "apiVersion: projectcalico.org/v3\nkind: WorkloadEndpoint\nmetadata: {name: ep, namespace: ns, labels: {app: db}}\n\
spec: {node: node-1, interfaceName: cali0123, ipNetworks: [10.0.0.1/32]}\n";

/// The state for one GlobalNetworkPolicy with `spec` selecting the local
/// endpoint, or the validation error.
fn state(spec: &str) -> Result<DesiredState, String> {
    let manifest = format!(
        "{ENDPOINT}---\napiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {{name: p}}\nspec: {spec}\n"
    );
    let resources = decode_manifest(&manifest).map_err(|e| e.to_string())?;
    let mut g = CalcGraph::new("node-1");
    let mut s = DesiredState::default();
    s.apply(&g.apply_all(resources.into_iter().map(Update::Put)))
        .expect("ordering");
    Ok(s)
}

/// The compiled ingress rules of a policy with these rules.
fn ingress(rules: &str) -> Vec<CompiledRule> {
    let s = state(&format!("{{selector: app == 'db', ingress: {rules}}}")).expect("valid");
    s.policies.values().next().expect("policy").ingress.clone()
}

fn refused(rules: &str, why: &str) {
    let e = state(&format!("{{selector: app == 'db', ingress: {rules}}}")).expect_err("refused");
    assert!(e.contains(why), "{e}");
}

#[test]
fn action_protocol_not_protocol_ip_version() {
    let r = &ingress("[{action: Deny, protocol: TCP, notProtocol: UDP, ipVersion: 4}]")[0];
    assert_eq!(r.action, calico_api::Action::Deny);
    assert_eq!(
        (r.protocol, r.not_protocol, r.ip_version),
        (Some(6), Some(17), Some(4))
    );
    refused("[{action: Allow, ipVersion: 5}]", "is not 4 or 6");
}

#[test]
fn icmp_and_not_icmp() {
    let r =
        &ingress("[{action: Allow, protocol: ICMP, icmp: {type: 8, code: 0}, notICMP: {type: 3}}]")
            [0];
    assert_eq!((r.icmp, r.not_icmp), (Some((8, Some(0))), Some((3, None))));
    refused(
        "[{action: Allow, protocol: TCP, icmp: {type: 8}}]",
        "needs protocol ICMP",
    );
    refused(
        "[{action: Allow, protocol: ICMP, icmp: {type: 255}}]",
        "out of range",
    );
}

#[test]
fn nets_and_not_nets() {
    let r = &ingress("[{action: Allow, source: {nets: [10.1.0.0/16], notNets: [10.1.2.0/24]}}]")[0];
    assert_eq!(r.src.nets, vec!["10.1.0.0/16".parse().expect("net")]);
    assert_eq!(r.src.not_nets, vec!["10.1.2.0/24".parse().expect("net")]);
    refused("[{action: Allow, source: {nets: [nope]}}]", "nets");
}

#[test]
fn selector_not_selector_namespace_selector_service_accounts() {
    let r = &ingress("[{action: Allow, source: {selector: role == 'a', notSelector: role == 'b', namespaceSelector: team == 'x', serviceAccounts: {names: [sa]}}}]")[0];
    assert_eq!((r.src.sets.len(), r.src.not_sets.len()), (1, 1));
    refused("[{action: Allow, source: {selector: 'a ==='}}]", "selector");
}

#[test]
fn ports_not_ports_and_named_ports() {
    let r = &ingress("[{action: Allow, protocol: TCP, destination: {ports: [80, '8000:8080', http], notPorts: [8081]}}]")[0];
    assert_eq!(
        r.dst.ports,
        vec![
            PortRange { min: 80, max: 80 },
            PortRange {
                min: 8000,
                max: 8080
            }
        ]
    );
    assert_eq!(
        r.dst.not_ports,
        vec![PortRange {
            min: 8081,
            max: 8081
        }]
    );
    assert_eq!(r.dst.named_port_sets.len(), 1);
    refused(
        "[{action: Allow, destination: {ports: [80]}}]",
        "must set protocol",
    );
}

#[test]
fn services_are_refused() {
    refused(
        "[{action: Allow, protocol: TCP, source: {services: {name: web, namespace: ns}}}]",
        "service matches are not supported",
    );
    refused(
        "[{action: Deny, destination: {services: {name: web}}}]",
        "service matches are not supported",
    );
}

#[test]
fn http_allow_matches_nothing_and_http_deny_denies_at_layer_4() {
    let rules = ingress("[{action: Allow, http: {methods: [GET]}}, {action: Deny, protocol: TCP, http: {paths: [{exact: /admin}]}}]");
    assert_eq!(
        rules.len(),
        1,
        "the Allow rule with http is not compiled: {rules:?}"
    );
    assert_eq!(
        (rules[0].action, rules[0].protocol),
        (calico_api::Action::Deny, Some(6))
    );
    refused(
        "[{action: Pass, http: {methods: [GET]}}]",
        "only valid on Allow or Deny",
    );
}

#[test]
fn rule_metadata_changes_nothing() {
    assert_eq!(
        ingress("[{action: Allow, metadata: {annotations: {why: test}}}]"),
        ingress("[{action: Allow}]")
    );
}

#[test]
fn do_not_track_and_pre_dnat_policies_never_apply_to_workloads() {
    for spec in [
        "{selector: app == 'db', doNotTrack: true, applyOnForward: true, ingress: [{action: Allow}]}",
        "{selector: app == 'db', preDNAT: true, applyOnForward: true, ingress: [{action: Allow}]}",
    ] {
        let s = state(spec).expect("valid");
        let ep = s.endpoints.values().next().expect("endpoint");
        assert!(ep.ingress.is_empty() && ep.egress.is_empty(), "{spec}: {ep:?}");
    }
    let e = state("{selector: app == 'db', doNotTrack: true, ingress: [{action: Allow}]}")
        .expect_err("refused");
    assert!(e.contains("applyOnForward"), "{e}");
}

#[test]
fn unknown_fields_are_refused() {
    refused(
        "[{action: Allow, sourceNets: [10.0.0.0/8]}]",
        "unknown field",
    );
    refused(
        "[{action: Allow, source: {nets: [10.0.0.0/8], ipset: x}}]",
        "unknown field",
    );
}
