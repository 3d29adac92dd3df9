//! Staged policies: decoded as their enforced kinds plus `stagedAction`,
//! refused as strictly, and the pending set they stand for.

use calico_api::{decode_manifest, pending, Kind, Resource};

fn names(rs: &[Resource]) -> Vec<String> {
    rs.iter()
        .map(|r| {
            let m = r.meta();
            match &m.namespace {
                Some(ns) => format!("{}({ns}/{})", r.kind(), m.name),
                None => format!("{}({})", r.kind(), m.name),
            }
        })
        .collect()
}

const ENFORCED: &str = "
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: web, namespace: shop}
spec: {selector: app == 'web', ingress: [{action: Allow}]}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: old}
spec: {selector: all(), egress: [{action: Allow}]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db, namespace: shop}
spec: {podSelector: {}, policyTypes: [Ingress]}
";

#[test]
fn staged_kinds_decode_with_their_action_and_default_like_their_enforced_kinds() {
    let rs = decode_manifest(
        "apiVersion: projectcalico.org/v3
kind: StagedNetworkPolicy
metadata: {name: web, namespace: shop}
spec: {stagedAction: Set, selector: app == 'web', ingress: [{action: Deny}]}
---
apiVersion: projectcalico.org/v3
kind: StagedGlobalNetworkPolicy
metadata: {name: old}
spec: {stagedAction: Delete}
---
apiVersion: projectcalico.org/v3
kind: StagedKubernetesNetworkPolicy
metadata: {name: db, namespace: shop}
spec: {podSelector: {matchLabels: {app: db}}, ingress: [{ports: [{port: 5432}]}]}
",
    )
    .expect("valid");
    assert_eq!(
        rs.iter().map(Resource::kind).collect::<Vec<_>>(),
        vec![
            Kind::StagedNetworkPolicy,
            Kind::StagedGlobalNetworkPolicy,
            Kind::StagedKubernetesNetworkPolicy
        ]
    );
    let v = serde_json::to_value(&rs[0]).expect("json");
    assert_eq!(v["spec"]["stagedAction"], "Set");
    assert_eq!(
        v["spec"]["tier"], "default",
        "defaulted as a NetworkPolicy is"
    );
    assert_eq!(v["spec"]["types"][0], "Ingress");
    let v = serde_json::to_value(&rs[1]).expect("json");
    assert_eq!(v["spec"]["stagedAction"], "Delete");
    assert_eq!(Kind::from_alias("snp"), Some(Kind::StagedNetworkPolicy));
}

#[test]
fn staged_kinds_are_checked_as_strictly_as_enforced_ones() {
    for (spec, why) in [
        (
            "{stagedAction: Later}",
            "stagedAction must be Set or Delete",
        ),
        (
            "{stagedAction: Set, selctor: all()}",
            "unknown field `selctor`",
        ),
        ("{selector: app ==}", "spec: selector: invalid selector"),
        (
            "{ingress: [{action: Allow, destination: {ports: [80]}}]}",
            "protocol",
        ),
    ] {
        let e = decode_manifest(&format!(
            "apiVersion: projectcalico.org/v3\nkind: StagedNetworkPolicy\nmetadata: {{name: p, namespace: ns}}\nspec: {spec}\n"
        ))
        .expect_err(spec)
        .to_string();
        assert!(e.contains(why), "{spec}: {e}");
    }
    let e = decode_manifest(
        "apiVersion: projectcalico.org/v3\nkind: StagedKubernetesNetworkPolicy\nmetadata: {name: p, namespace: ns}\n\
         spec: {podSelector: {}, policyTypes: [Sideways]}\n",
    )
    .expect_err("bad policy type")
    .to_string();
    assert!(e.contains("spec.policyTypes[0]"), "{e}");
}

#[test]
fn pending_puts_staged_sets_in_place_and_takes_staged_deletes_away() {
    let mut rs = decode_manifest(ENFORCED).expect("enforced");
    let staged = decode_manifest(
        "apiVersion: projectcalico.org/v3
kind: StagedNetworkPolicy
metadata: {name: web, namespace: shop}
spec: {selector: app == 'web', ingress: [{action: Deny}]}
---
apiVersion: projectcalico.org/v3
kind: StagedGlobalNetworkPolicy
metadata: {name: old}
spec: {stagedAction: Delete}
---
apiVersion: projectcalico.org/v3
kind: StagedGlobalNetworkPolicy
metadata: {name: new}
spec: {selector: all(), ingress: [{action: Pass}]}
---
apiVersion: projectcalico.org/v3
kind: StagedKubernetesNetworkPolicy
metadata: {name: db, namespace: shop}
spec: {stagedAction: Delete, podSelector: {}}
",
    )
    .expect("staged");
    rs.extend(staged);
    let p = pending(&rs);
    assert_eq!(
        names(&p),
        vec!["NetworkPolicy(shop/web)", "GlobalNetworkPolicy(new)",]
    );
    let Resource::NetworkPolicy(web) = &p[0] else {
        panic!("a NetworkPolicy");
    };
    assert_eq!(
        web.spec.ingress[0].action,
        calico_api::Action::Deny,
        "the staged one"
    );
    // Nothing staged: pending is what is enforced.
    let enforced = decode_manifest(ENFORCED).expect("enforced");
    assert_eq!(names(&pending(&enforced)).len(), 3);
}
