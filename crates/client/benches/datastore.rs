//! Datastore throughput and watch latency, per backend, in one run.
//!
//! The in-memory reference store is the baseline: read the embedded and
//! etcd figures as multiples of it. `write` is one create of a fresh key
//! (1/time = writes per second from one writer); `cas_update` one
//! compare-and-swap update; `watch_latency` a write plus its delivery to a
//! watcher that was already open.

use calico_datastore::{MemoryStore, Store};
use calico_datastore_etcd::EtcdStore;
use calico_datastore_sqlite::SqliteStore;
use calico_test_support::{EtcdServer, TempStore};
use criterion::{criterion_group, criterion_main, Criterion};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

static N: AtomicU64 = AtomicU64::new(0);

fn next_key(prefix: &str) -> String {
    format!("{prefix}{}", N.fetch_add(1, Ordering::Relaxed))
}

const VALUE: &[u8] = br#"{"apiVersion":"projectcalico.org/v3","kind":"IPPool","metadata":{"name":"pool"},"spec":{"cidr":"10.0.0.0/16","blockSize":26}}"#;

fn bench_store(c: &mut Criterion, name: &str, store: &dyn Store) {
    let mut g = c.benchmark_group(name);
    g.measurement_time(Duration::from_secs(4))
        .warm_up_time(Duration::from_secs(1));
    g.bench_function("write", |b| {
        b.iter(|| store.create(&next_key("/bench/w/"), VALUE).expect("create"))
    });
    let key = "/bench/cas";
    let _ = store.delete(key, None);
    let mut rev = store.create(key, VALUE).expect("create");
    g.bench_function("cas_update", |b| {
        b.iter(|| {
            rev = store.update(key, VALUE, rev).expect("update");
        })
    });
    let watch = store.watch("/bench/watched/", 0).expect("watch");
    g.bench_function("watch_latency", |b| {
        b.iter(|| {
            store
                .create(&next_key("/bench/watched/"), VALUE)
                .expect("create");
            watch.recv_timeout(Duration::from_secs(5)).expect("event");
        })
    });
    g.finish();
}

fn benches(c: &mut Criterion) {
    bench_store(c, "memory", &MemoryStore::new());
    let sqlite =
        TempStore::new(|dir| SqliteStore::open(dir.join("bench.db")).expect("open sqlite"));
    bench_store(c, "embedded", &sqlite);
    let etcd = EtcdServer::start();
    let store = EtcdStore::connect(std::slice::from_ref(&etcd.endpoint)).expect("connect etcd");
    bench_store(c, "etcd", &store);
}

criterion_group!(datastore, benches);
criterion_main!(datastore);
