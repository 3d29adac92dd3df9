//! Resource client behaviour on the reference store.

use calico_api::{decode_manifest, Kind, Resource};
use calico_client::{Applied, Client, ClientError, Clock};
use calico_datastore::{MemoryStore, Store};
use std::sync::Arc;

struct FixedClock;
impl Clock for FixedClock {
    fn now_rfc3339(&self) -> String {
        "2026-11-22T00:00:00Z".into()
    }
}

fn client() -> Client {
    Client::new(Arc::new(MemoryStore::new()), Arc::new(FixedClock))
}

fn one(yaml: &str) -> Resource {
    decode_manifest(yaml).expect("valid").remove(0)
}

const POOL: &str = "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: p1}\nspec: {cidr: 10.1.0.0/16}\n";

#[test]
fn create_get_replace_delete() {
    let c = client();
    let created = c.create(one(POOL)).expect("create");
    assert_eq!(
        created.meta().creation_timestamp.as_deref(),
        Some("2026-11-22T00:00:00Z")
    );
    assert!(created.meta().uid.is_some());
    let rv = created.meta().resource_version.clone().expect("version");
    assert!(matches!(
        c.create(one(POOL)),
        Err(ClientError::AlreadyExists(_))
    ));

    let got = c.get(Kind::IPPool, None, "p1").expect("get");
    assert_eq!(got, created);

    let mut changed =
        one(&POOL.replace("cidr: 10.1.0.0/16", "cidr: 10.1.0.0/16, natOutgoing: true"));
    changed.meta_mut().resource_version = Some(rv.clone());
    let replaced = c
        .replace(changed.clone())
        .expect("replace at current version");
    assert_eq!(
        replaced.meta().uid,
        created.meta().uid,
        "uid survives replace"
    );
    assert!(
        matches!(c.replace(changed), Err(ClientError::Conflict { .. })),
        "stale resourceVersion conflicts"
    );

    assert!(matches!(
        c.delete(Kind::IPPool, None, "p1", Some(&rv)),
        Err(ClientError::Conflict { .. })
    ));
    c.delete(Kind::IPPool, None, "p1", None).expect("delete");
    assert!(matches!(
        c.get(Kind::IPPool, None, "p1"),
        Err(ClientError::NotFound(_))
    ));
    assert!(matches!(
        c.delete(Kind::IPPool, None, "p1", None),
        Err(ClientError::NotFound(_))
    ));
}

#[test]
fn apply_creates_then_updates() {
    let c = client();
    assert_eq!(c.apply(one(POOL)).expect("apply").1, Applied::Created);
    assert_eq!(c.apply(one(POOL)).expect("apply").1, Applied::Updated);
}

#[test]
fn overlapping_pools_are_rejected() {
    let c = client();
    c.create(one(POOL)).expect("create");
    let other = one(&POOL
        .replace("p1", "p2")
        .replace("10.1.0.0/16", "10.0.0.0/8"));
    let err = c.create(other).expect_err("overlap");
    assert!(err.to_string().contains("overlaps IPPool p1"), "{err}");
    let changed = one(&POOL.replace("10.1.0.0/16", "10.2.0.0/16"));
    let err = c.replace(changed).expect_err("cidr is immutable");
    assert!(err.to_string().contains("spec.cidr cannot change"), "{err}");
}

#[test]
fn policies_need_their_tier_and_tiers_in_use_stay() {
    let c = client();
    let gnp = one("apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: sec.p}\nspec: {tier: sec}\n");
    let err = c.create(gnp.clone()).expect_err("missing tier");
    assert!(
        err.to_string().contains("tier \"sec\" does not exist"),
        "{err}"
    );
    c.create(one(
        "apiVersion: projectcalico.org/v3\nkind: Tier\nmetadata: {name: sec}\nspec: {order: 10}\n",
    ))
    .expect("tier");
    c.create(gnp).expect("policy in tier");
    let err = c
        .delete(Kind::Tier, None, "sec", None)
        .expect_err("tier in use");
    assert!(err.to_string().contains("still holds policies"), "{err}");
    c.delete(Kind::GlobalNetworkPolicy, None, "sec.p", None)
        .expect("delete policy");
    c.delete(Kind::Tier, None, "sec", None)
        .expect("delete tier");
}

#[test]
fn namespaced_listing() {
    let c = client();
    for (ns, name) in [("a", "x"), ("a", "y"), ("b", "x")] {
        c.create(one(&format!(
            "apiVersion: projectcalico.org/v3\nkind: NetworkSet\nmetadata: {{name: {name}, namespace: {ns}}}\nspec: {{nets: [10.0.0.0/8]}}\n"
        )))
        .expect("create");
    }
    assert_eq!(
        c.list(Kind::NetworkSet, Some("a"))
            .expect("list")
            .items
            .len(),
        2
    );
    assert_eq!(c.list(Kind::NetworkSet, None).expect("list").items.len(), 3);
    assert!(c.get(Kind::NetworkSet, Some("b"), "y").is_err());
}

#[test]
fn invalid_resources_never_reach_the_store() {
    let store = Arc::new(MemoryStore::new());
    let c = Client::new(store.clone(), Arc::new(FixedClock));
    let mut bad = one(POOL);
    if let Resource::IPPool(p) = &mut bad {
        // (A CIDR with host bits cannot even be held: it fails to decode.)
        p.spec.block_size = Some(33);
    }
    assert!(matches!(c.create(bad), Err(ClientError::Invalid(_))));
    assert_eq!(store.revision().expect("revision"), 0);
}

/// Every Kubernetes conversion can be stored and read back, including a
/// policy with egress rules but no Egress type (Calico keeps such rules, unused).
#[test]
fn converted_kubernetes_policies_round_trip() {
    let c = client();
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../api/tests/golden/knp-edge-cases.yaml"
    ))
    .expect("read");
    for r in decode_manifest(&text).expect("valid") {
        let created = c.create(r.clone()).expect("create");
        let got = c
            .get(r.kind(), r.meta().namespace.as_deref(), &r.meta().name)
            .expect("get");
        assert_eq!(got, created);
    }
}
