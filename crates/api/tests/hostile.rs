//! Manifests as a careless operator or a hostile client writes them:
//! explicit nulls, repeated keys, huge values, deep nesting, huge inputs.

use calico_api::{decode_manifest, Resource};

#[test]
fn explicit_null_is_an_absent_field() {
    let m = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: n, namespace: x, labels: null}\n\
spec:\n  podSelector:\n    matchLabels:\n  policyTypes: [Ingress]\n  ingress:\n  - from:\n    - podSelector:\n        matchLabels:\n      namespaceSelector: null\n    ports: null\n";
    let r = decode_manifest(m).unwrap_or_else(|e| panic!("{e}"));
    let Resource::NetworkPolicy(p) = &r[0] else {
        panic!("{r:?}")
    };
    assert_eq!(p.spec.selector, "projectcalico.org/orchestrator == 'k8s'");
    assert_eq!(p.spec.ingress.len(), 1);
    // The same for Calico kinds.
    let m = "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: g}\nspec: {selector: null, order: null, ingress: [{action: Allow, source: null}]}\n";
    decode_manifest(m).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn repeated_keys_are_refused() {
    for m in [
        "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: g}\nspec:\n  selector: a == 'b'\n  selector: all()\n",
        "{\"apiVersion\": \"projectcalico.org/v3\", \"kind\": \"IPPool\", \"metadata\": {\"name\": \"p\"}, \"spec\": {\"cidr\": \"10.0.0.0/8\", \"cidr\": \"0.0.0.0/0\"}}",
    ] {
        let e = decode_manifest(m).expect_err("duplicate key accepted");
        assert!(e.to_string().contains("duplicate key"), "{e}");
    }
}

#[test]
fn every_bad_document_is_reported() {
    let m = "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: a}\nspec: {cidr: nope}\n---\n\
apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: b}\nspec: {cidr: 10.0.0.0/8}\n---\n\
apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: c}\nspec: {cidr: alsono}\n";
    let e = decode_manifest(m).expect_err("invalid");
    assert_eq!(e.problems.len(), 2, "{e}");
    assert!(e.problems[0].location == "document 1" && e.problems[1].location == "document 3");
}

#[test]
fn deep_nesting_and_bracket_floods_are_refused_cheaply() {
    let flood = format!("{{\"kind\": {}", "[".repeat(100_000));
    let e = decode_manifest(&flood).expect_err("flood");
    assert!(e.to_string().contains("flow collections"), "{e}");
    // Block nesting is bounded as it is parsed.
    let deep: String = (0..200)
        .map(|i| format!("{}- \n", "  ".repeat(i)))
        .collect();
    let deep = format!(
        "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: p\n  labels:\n{}",
        deep.lines()
            .map(|l| format!("    {l}\n"))
            .collect::<String>()
    );
    let e = decode_manifest(&deep).expect_err("deep");
    assert!(
        e.to_string().contains("deeper") || e.to_string().contains("recursion"),
        "{e}"
    );
    // A selector nested past the selector parser's limit.
    let sel = format!("{}a == 'b'{}", "(".repeat(5_000), ")".repeat(5_000));
    let m = format!("apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {{name: g}}\nspec: {{selector: \"{sel}\"}}\n");
    let e = decode_manifest(&m).expect_err("deep selector");
    assert!(e.to_string().contains("deeper than"), "{e}");
    assert!(
        e.to_string().len() < 4096,
        "the error echoes the whole selector"
    );
}

#[test]
fn huge_inputs_are_refused_before_parsing_and_not_echoed() {
    let rule = "  - action: Allow\n    source: {nets: [10.0.0.0/8]}\n";
    let m = format!("apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {{name: g}}\nspec:\n  ingress:\n{}", rule.repeat(100_000));
    let e = decode_manifest(&m).expect_err("10 MB policy");
    assert!(e.to_string().contains("at most"), "{e}");
    let whole = "x".repeat(17 * 1024 * 1024);
    assert!(decode_manifest(&whole).is_err());
    // A 1 MB value in an error is cut short.
    let big = "z".repeat(1 << 20);
    let m = format!("apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {{name: p}}\nspec: {{cidr: {big}}}\n");
    let e = decode_manifest(&m).expect_err("bad cidr");
    assert!(
        e.to_string().len() < 4096,
        "{} bytes of error",
        e.to_string().len()
    );
}

/// BGPPeer fields the speaker cannot honour, whose absence would let more
/// through, are refused rather than stored and ignored.
#[test]
fn unenforceable_bgp_peer_fields_are_refused() {
    for (field, value) in [("filters", "[only-default]"), ("ttlSecurity", "1")] {
        let m = format!("apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata: {{name: tor}}\nspec: {{peerIP: 10.0.0.254, asNumber: 65001, {field}: {value}}}\n");
        let e = decode_manifest(&m).expect_err(field);
        assert!(e.to_string().contains(&format!("spec.{field}")), "{e}");
    }
}
