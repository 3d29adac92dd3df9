//! The syncer over a store, and the fan-out between a store and clients:
//! what arrives, what a break costs, slow and strange clients.

// Tests own the clock.
#![allow(clippy::disallowed_methods)]

use calico_api::Kind;
use calico_client::keys::{ipam, resource_key};
use calico_datastore::{Event, MemoryStore, Store};
use calico_syncer::typha::client::{self, ClientConfig, ClientTls};
use calico_syncer::typha::server::{Running, ServerConfig, ServerTls};
use calico_syncer::{direct, RecvError, SyncEvent, SyncStatus, Syncer, SyncerType};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What a consumer holds after applying every delivery; with a check
/// that nothing is delivered twice.
#[derive(Default, Debug)]
struct Consumer {
    keys: BTreeMap<String, Vec<u8>>,
    status: Option<SyncStatus>,
    puts: usize,
    deletes: usize,
}

impl Consumer {
    fn take(&mut self, ev: SyncEvent) {
        match ev {
            SyncEvent::Updates(evs) => {
                for ev in evs {
                    match ev {
                        Event::Put(kv) => {
                            self.puts += 1;
                            self.keys.insert(kv.key, kv.value);
                        }
                        Event::Delete { key, .. } => {
                            self.deletes += 1;
                            assert!(
                                self.keys.remove(&key).is_some(),
                                "{key} deleted but never delivered"
                            );
                        }
                    }
                }
            }
            SyncEvent::Status(s) => self.status = Some(s),
            SyncEvent::Error(_) => {}
        }
    }

    /// Takes events until `done` holds (30 s at most).
    fn until(&mut self, s: &Syncer, what: &str, done: impl Fn(&Consumer) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !done(self) {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {self:?}"
            );
            match s.recv_timeout(Duration::from_millis(100)) {
                Ok(ev) => self.take(ev),
                Err(RecvError::Timeout) => {}
                Err(RecvError::Closed) => panic!("syncer closed"),
            }
        }
    }

    /// Takes whatever arrives within `d`.
    fn drain(&mut self, s: &Syncer, d: Duration) {
        let deadline = Instant::now() + d;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match s.recv_timeout(left) {
                Ok(ev) => self.take(ev),
                Err(_) => return,
            }
        }
    }
}

fn policy(name: &str, order: u32) -> (String, Vec<u8>) {
    (
        resource_key(Kind::GlobalNetworkPolicy, None, name),
        format!(r#"{{"apiVersion":"projectcalico.org/v3","kind":"GlobalNetworkPolicy","metadata":{{"name":"{name}"}},"spec":{{"order":{order}}}}}"#).into_bytes(),
    )
}

fn put(store: &dyn Store, (key, value): (String, Vec<u8>)) {
    match store.get(&key).expect("get") {
        Some(kv) => store.update(&key, &value, kv.mod_revision).map(|_| ()),
        None => store.create(&key, &value).map(|_| ()),
    }
    .expect("write");
}

/// The keys of `ty` in `store`, with their values.
fn wanted(store: &dyn Store, ty: SyncerType) -> BTreeMap<String, Vec<u8>> {
    ty.prefixes()
        .iter()
        .flat_map(|p| store.list(p).expect("list").items)
        .filter(|kv| ty.wants(&kv.key))
        .map(|kv| (kv.key, kv.value))
        .collect()
}

fn seed(store: &dyn Store) {
    for i in 0..50 {
        put(store, policy(&format!("p{i}"), i));
    }
    let net: calico_net::IpNet = "10.0.0.0/26".parse().expect("net");
    store
        .create(
            &ipam::affinity_key("node-1", &net),
            br#"{"state":"confirmed"}"#,
        )
        .expect("affinity");
    store.create(&ipam::block_key(&net), b"{}").expect("block");
    store
        .create(&resource_key(Kind::BGPPeer, None, "rr"), b"{}")
        .expect("peer");
}

#[test]
fn direct_syncer_delivers_its_kinds_once_and_follows_changes() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    seed(store.as_ref());
    let s = direct::start(Arc::clone(&store), SyncerType::Felix);
    let mut c = Consumer::default();
    c.until(&s, "in sync", |c| c.status == Some(SyncStatus::InSync));
    assert_eq!(c.keys, wanted(store.as_ref(), SyncerType::Felix));
    assert_eq!(
        c.keys.len(),
        51,
        "50 policies and the affinity; no block, no BGP peer"
    );
    put(store.as_ref(), policy("p1", 100));
    store
        .delete(&resource_key(Kind::GlobalNetworkPolicy, None, "p2"), None)
        .expect("delete");
    // An IPAM block write is not a felix matter.
    let net: calico_net::IpNet = "10.0.0.64/26".parse().expect("net");
    store.create(&ipam::block_key(&net), b"{}").expect("block");
    c.until(&s, "the changes", |c| c.keys.len() == 50 && c.deletes == 1);
    c.drain(&s, Duration::from_millis(300));
    assert_eq!(c.keys, wanted(store.as_ref(), SyncerType::Felix));
    assert_eq!(c.puts, 52, "51 listed, one change; nothing twice");
    // A resend delivers everything again, then InSync.
    s.resend();
    let before = c.puts;
    c.until(&s, "the resend", |c| {
        c.puts == before + 50 && c.status == Some(SyncStatus::InSync)
    });
}

/// A watch that breaks (here: compaction past the syncer's revision)
/// costs only the differences, and a status that says so.
#[test]
fn a_broken_watch_relists_and_delivers_only_the_differences() {
    let store = Arc::new(MemoryStore::new());
    seed(store.as_ref());
    let dyn_store: Arc<dyn Store> = store.clone();
    let s = direct::start(Arc::clone(&dyn_store), SyncerType::Felix);
    let mut c = Consumer::default();
    c.until(&s, "in sync", |c| c.status == Some(SyncStatus::InSync));
    let puts = c.puts;
    // Break every watch the store has, then change things.
    store.break_watches();
    put(store.as_ref(), policy("p3", 300));
    store
        .delete(&resource_key(Kind::GlobalNetworkPolicy, None, "p4"), None)
        .expect("delete");
    c.until(&s, "the differences", |c| {
        c.keys.get(&policy("p3", 300).0) == Some(&policy("p3", 300).1)
            && c.deletes == 1
            && c.status == Some(SyncStatus::InSync)
    });
    c.drain(&s, Duration::from_millis(300));
    assert_eq!(c.keys, wanted(store.as_ref(), SyncerType::Felix));
    assert_eq!(c.puts, puts + 1, "only the changed key came again");
}

fn typha_config() -> ServerConfig {
    ServerConfig::new("127.0.0.1:0".parse().expect("addr"))
}

fn connect(addr: std::net::SocketAddr, node: &str, tls: Option<ClientTls>) -> Syncer {
    client::start(ClientConfig {
        addr: addr.to_string(),
        node: node.into(),
        syncer: SyncerType::Felix,
        tls,
    })
    .expect("client")
}

#[test]
fn fan_out_serves_many_clients_and_survives_its_own_death() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    seed(store.as_ref());
    let server = Running::start(&store, &typha_config()).expect("typha");
    let addr = server.addr;
    let clients: Vec<Syncer> = (0..20)
        .map(|i| connect(addr, &format!("node-{i}"), None))
        .collect();
    let mut seen: Vec<Consumer> = clients.iter().map(|_| Consumer::default()).collect();
    for (c, s) in seen.iter_mut().zip(&clients) {
        c.until(s, "in sync", |c| c.status == Some(SyncStatus::InSync));
        assert_eq!(c.keys, wanted(store.as_ref(), SyncerType::Felix));
    }
    put(store.as_ref(), policy("p5", 500));
    for (c, s) in seen.iter_mut().zip(&clients) {
        c.until(s, "the change", |c| {
            c.keys.get(&policy("p5", 500).0) == Some(&policy("p5", 500).1)
        });
    }
    // The service dies mid-stream; the datastore changes meanwhile.
    server.kill();
    put(store.as_ref(), policy("p6", 600));
    store
        .delete(&resource_key(Kind::GlobalNetworkPolicy, None, "p7"), None)
        .expect("delete");
    for (c, s) in seen.iter_mut().zip(&clients) {
        c.until(s, "resync status", |c| {
            c.status == Some(SyncStatus::ResyncInProgress)
        });
    }
    // A new one on the same address: every client is back in sync with
    // only the differences, the deletion included.
    let mut config = typha_config();
    config.listen = addr;
    let server = Running::start(&store, &config).expect("typha again");
    let want = wanted(store.as_ref(), SyncerType::Felix);
    for (c, s) in seen.iter_mut().zip(&clients) {
        let puts = c.puts;
        c.until(s, "in sync again", |c| {
            c.status == Some(SyncStatus::InSync) && c.keys == want
        });
        assert_eq!(c.puts, puts + 1, "only p6 came again");
        assert_eq!(c.deletes, 1);
    }
    assert!(
        server
            .stats
            .connections
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 20
    );
}

/// A client that never reads is disconnected once it falls a queue's
/// length behind; the others carry on.
#[test]
fn a_slow_client_is_dropped_and_the_rest_carry_on() {
    use calico_syncer::typha::proto::{typha_client::TyphaClient, Hello};
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let mut config = typha_config();
    config.queue = 8;
    let server = Running::start(&store, &config).expect("typha");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    // Opens the stream and reads nothing.
    let stalled = rt.block_on(async {
        let mut c = TyphaClient::connect(format!("http://{}", server.addr))
            .await
            .expect("connect");
        c.sync(Hello {
            node: "slow".into(),
            syncer: "felix".into(),
            client_version: String::new(),
        })
        .await
        .expect("sync")
        .into_inner()
    });
    let good = connect(server.addr, "node-1", None);
    let mut c = Consumer::default();
    c.until(&good, "in sync", |c| c.status == Some(SyncStatus::InSync));
    // Big values, one change at a time, fill the stalled client's
    // windows and buffers; then it falls a queue behind.
    let big = "x".repeat(200_000);
    for i in 0..200 {
        let key = resource_key(Kind::GlobalNetworkPolicy, None, &format!("big{i}"));
        put(store.as_ref(), (key, big.clone().into_bytes()));
        std::thread::sleep(Duration::from_millis(5));
    }
    c.until(&good, "every change", |c| c.keys.len() == 200);
    let deadline = Instant::now() + Duration::from_secs(30);
    while server.stats.slow.load(std::sync::atomic::Ordering::Relaxed) == 0 {
        assert!(
            Instant::now() < deadline,
            "the stalled client was never dropped"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(stalled);
    // Strange hellos are refused, the service stays up.
    rt.block_on(async {
        let mut c = TyphaClient::connect(format!("http://{}", server.addr))
            .await
            .expect("connect");
        for (node, syncer) in [
            ("", "felix"),
            ("n", "nonsense"),
            (&*"n".repeat(300), "felix"),
        ] {
            let e = c
                .sync(Hello {
                    node: node.to_string(),
                    syncer: syncer.into(),
                    client_version: String::new(),
                })
                .await
                .expect_err("refused");
            assert_eq!(e.code(), tonic::Code::InvalidArgument);
        }
    });
    put(store.as_ref(), policy("after", 1));
    c.until(&good, "a change after all that", |c| {
        c.keys.contains_key(&policy("after", 1).0)
    });
}

/// A careless operator's huge resources (1.5 MiB each, the most a
/// resource may be) written in one burst: every client still gets them,
/// live and in a snapshot (a message never outgrows what clients decode).
#[test]
fn huge_resources_reach_every_client() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let server = Running::start(&store, &typha_config()).expect("typha");
    let live = connect(server.addr, "node-1", None);
    let mut c = Consumer::default();
    c.until(&live, "in sync", |c| c.status == Some(SyncStatus::InSync));
    let big = "x".repeat(1536 * 1024 - 100);
    for i in 0..60 {
        let key = resource_key(Kind::GlobalNetworkPolicy, None, &format!("huge{i}"));
        put(store.as_ref(), (key, big.clone().into_bytes()));
    }
    c.until(&live, "60 huge resources", |c| c.keys.len() == 60);
    let late = connect(server.addr, "node-2", None);
    let mut l = Consumer::default();
    l.until(&late, "a snapshot of them", |c| {
        c.status == Some(SyncStatus::InSync) && c.keys.len() == 60
    });
}

#[test]
fn mutual_tls_keeps_strangers_out() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = calico_test_support::EtcdTls::generate(dir.path());
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    seed(store.as_ref());
    let mut config = typha_config();
    config.tls = Some(ServerTls {
        cert: certs.server_cert.clone(),
        key: certs.server_key.clone(),
        client_ca: certs.ca.clone(),
    });
    let server = Running::start(&store, &config).expect("typha");
    let tls = |cert: &std::path::Path, key: &std::path::Path| ClientTls {
        ca: certs.ca.clone(),
        cert: cert.to_path_buf(),
        key: key.to_path_buf(),
        server_name: None,
    };
    let good = connect(
        server.addr,
        "node-1",
        Some(tls(&certs.client_cert, &certs.client_key)),
    );
    let mut c = Consumer::default();
    c.until(&good, "in sync over mTLS", |c| {
        c.status == Some(SyncStatus::InSync)
    });
    assert_eq!(c.keys, wanted(store.as_ref(), SyncerType::Felix));
    // A certificate from another CA never gets a byte.
    let stranger = connect(
        server.addr,
        "node-2",
        Some(tls(&certs.other_cert, &certs.other_key)),
    );
    let mut s = Consumer::default();
    s.drain(&stranger, Duration::from_secs(2));
    assert!(s.keys.is_empty());
    assert_ne!(s.status, Some(SyncStatus::InSync));
    // Nor does a client without TLS.
    let plain = connect(server.addr, "node-3", None);
    let mut p = Consumer::default();
    p.drain(&plain, Duration::from_secs(1));
    assert!(p.keys.is_empty());
}
