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

/// A listing larger than a page comes whole, exact to its prefix (a key
/// that merely shares the prefix's text, or sorts right after it, is not
/// in it), and at one revision: keys written while it is being read (into
/// its last pages) are not in it.
#[test]
fn a_listing_of_many_pages_is_whole_exact_and_at_one_revision() {
    let (store, base) = fresh();
    let prefix = format!("{base}many/");
    for i in 0..2_500 {
        store
            .create(&format!("{prefix}{i:05}"), b"v")
            .expect("create");
    }
    store
        .create(&format!("{base}many0"), b"x")
        .expect("sibling");
    store.create(&format!("{base}manz"), b"x").expect("after");
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (store, prefix, stop) = (Arc::clone(&store), prefix.clone(), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                store
                    .create(&format!("{prefix}zz-{n:06}"), b"w")
                    .expect("write");
                n += 1;
            }
            n
        })
    };
    for _ in 0..5 {
        let listing = store.list(&prefix).expect("list");
        assert!(listing.items.len() >= 2_500);
        assert!(listing.items.iter().all(|kv| kv.key.starts_with(&prefix)));
        assert!(listing.items.windows(2).all(|w| w[0].key < w[1].key));
        assert!(
            listing
                .items
                .iter()
                .all(|kv| kv.mod_revision <= listing.revision),
            "a key newer than the listing's revision"
        );
        // Every key that existed at that revision is in it.
        let later = store.list(&prefix).expect("list");
        let at_revision = later
            .items
            .iter()
            .filter(|kv| kv.mod_revision <= listing.revision)
            .count();
        assert_eq!(listing.items.len(), at_revision);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let n = writer.join().expect("writer");
    assert_eq!(store.list(&prefix).expect("list").items.len(), 2_500 + n);
}
