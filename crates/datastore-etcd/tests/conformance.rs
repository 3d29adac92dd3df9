//! The etcd backend passes the datastore conformance suite against a real
//! etcd; the checks share one server, each under a prefix of its own.

use calico_datastore::{conformance_tests, Store};
use calico_datastore_etcd::EtcdStore;
use calico_test_support::{unique, EtcdServer};
use std::sync::Arc;

fn fresh() -> (Arc<dyn Store>, String) {
    let etcd = EtcdServer::shared();
    let store = EtcdStore::connect(std::slice::from_ref(&etcd.endpoint)).expect("connect to etcd");
    (Arc::new(store), format!("/{}/", unique("conformance")))
}

conformance_tests!(fresh());

#[test]
fn unreachable_etcd_is_reported_as_unavailable() {
    let port = calico_test_support::free_port();
    let err = EtcdStore::connect(&[format!("http://127.0.0.1:{port}")]).and_then(|s| s.get("/x"));
    assert!(
        matches!(err, Err(calico_datastore::StoreError::Unavailable { .. })),
        "{err:?}"
    );
}
