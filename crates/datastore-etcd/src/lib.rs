//! The etcd v3 backend.
//!
//! The `Store` trait is blocking; etcd's client is async. This crate owns a
//! small tokio runtime (one worker thread) that drives the gRPC channel and
//! watch streams, and callers block on it. Nothing async leaks out.
//!
//! Compare-and-swap maps to etcd transactions: create compares
//! `create_revision == 0`, update and delete compare `mod_revision`.

use calico_datastore::{Event, KeyValue, Listing, Revision, StopOnDrop, Store, StoreError, Watch};
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, Txn, TxnOp, WatchOptions,
};
use std::sync::mpsc;
use std::time::Duration;
use tokio::runtime::Runtime;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Keys per page of a listing.
const LIST_PAGE: i64 = 1000;

/// The first key after every key that starts with `prefix` (etcd's range
/// end for a prefix): the prefix with its last byte below 0xff raised by
/// one; "\0" (the whole keyspace) when there is none.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// A connection to an etcd cluster.
pub struct EtcdStore {
    rt: Runtime,
    client: Client,
    endpoints: Vec<String>,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore")
            .field("endpoints", &self.endpoints)
            .finish_non_exhaustive()
    }
}

fn map_err(e: etcd_client::Error) -> StoreError {
    match e {
        etcd_client::Error::TransportError(t) => {
            StoreError::unavailable_because("cannot reach etcd", t)
        }
        etcd_client::Error::GRpcStatus(s)
            if matches!(
                s.code(),
                tonic_code::UNAVAILABLE | tonic_code::DEADLINE_EXCEEDED
            ) =>
        {
            StoreError::unavailable_because("etcd did not answer", s)
        }
        other => StoreError::backend_because("etcd failed", other),
    }
}

mod tonic_code {
    pub const UNAVAILABLE: tonic::Code = tonic::Code::Unavailable;
    pub const DEADLINE_EXCEEDED: tonic::Code = tonic::Code::DeadlineExceeded;
}

fn convert(kv: &etcd_client::KeyValue) -> Result<KeyValue, StoreError> {
    Ok(KeyValue {
        key: kv
            .key_str()
            .map_err(|e| StoreError::backend_because("etcd returned a non-UTF-8 key", e))?
            .to_string(),
        value: kv.value().to_vec(),
        create_revision: kv.create_revision(),
        mod_revision: kv.mod_revision(),
    })
}

fn header_rev(h: Option<&etcd_client::ResponseHeader>) -> Revision {
    h.map_or(0, etcd_client::ResponseHeader::revision)
}

/// How to reach a secured etcd, as Calico's etcd settings say: a CA to
/// trust (TLS; endpoints then are `https://`), a client certificate and
/// key (mutual TLS), and a user name and password (etcd's auth).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct EtcdSecurity {
    /// PEM.
    pub ca_cert: Option<Vec<u8>>,
    /// PEM certificate and key.
    pub client: Option<(Vec<u8>, Vec<u8>)>,
    pub user: Option<(String, String)>,
}

impl std::fmt::Debug for EtcdSecurity {
    /// Never prints the key or the password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdSecurity")
            .field("tls", &self.ca_cert.is_some())
            .field("client_cert", &self.client.is_some())
            .field("user", &self.user.as_ref().map(|(u, _)| u))
            .finish()
    }
}

impl EtcdStore {
    /// Connects to `endpoints` (`http://host:port` or `host:port`).
    pub fn connect(endpoints: &[String]) -> Result<Self, StoreError> {
        Self::connect_with(endpoints, &EtcdSecurity::default())
    }

    /// Connects to `endpoints` with TLS and/or auth.
    pub fn connect_with(endpoints: &[String], security: &EtcdSecurity) -> Result<Self, StoreError> {
        if endpoints.is_empty() {
            return Err(StoreError::unavailable("no etcd endpoints given"));
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("etcd-client")
            .enable_all()
            .build()
            .map_err(|e| StoreError::backend_because("cannot start the etcd client runtime", e))?;
        let mut opts = ConnectOptions::new()
            .with_connect_timeout(CONNECT_TIMEOUT)
            .with_timeout(REQUEST_TIMEOUT);
        if let Some(ca) = &security.ca_cert {
            let mut tls = etcd_client::TlsOptions::new()
                .ca_certificate(etcd_client::Certificate::from_pem(ca));
            if let Some((cert, key)) = &security.client {
                tls = tls.identity(etcd_client::Identity::from_pem(cert, key));
            }
            opts = opts.with_tls(tls);
        } else if security.client.is_some() {
            return Err(StoreError::unavailable(
                "an etcd client certificate needs the CA certificate too (ETCD_CA_CERT_FILE)",
            ));
        }
        if let Some((user, password)) = &security.user {
            opts = opts.with_user(user.clone(), password.clone());
        }
        let client = rt
            .block_on(Client::connect(endpoints, Some(opts)))
            .map_err(|e| {
                StoreError::unavailable_because(
                    format!("cannot connect to etcd at {}", endpoints.join(",")),
                    e,
                )
            })?;
        Ok(EtcdStore {
            rt,
            client,
            endpoints: endpoints.to_vec(),
        })
    }

    /// Current value's revisions, read after a failed transaction to explain it.
    fn explain(&self, key: &str, expected: Revision) -> StoreError {
        match self.get(key) {
            Ok(None) => StoreError::NotFound { key: key.into() },
            Ok(Some(kv)) => StoreError::Conflict {
                key: key.into(),
                expected,
                actual: Some(kv.mod_revision),
            },
            Err(e) => e,
        }
    }
}

impl Store for EtcdStore {
    fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        let mut kv = self.client.kv_client();
        let resp = self.rt.block_on(kv.get(key, None)).map_err(map_err)?;
        resp.kvs().first().map(convert).transpose()
    }

    fn list(&self, prefix: &str) -> Result<Listing, StoreError> {
        // In pages, every page at the first one's revision (one consistent
        // view): a whole prefix in one response (50,000 endpoints, tens of
        // MB) could outlast the request timeout on a busy etcd, and many
        // agents retrying that at once would keep it busy for ever.
        let end = prefix_end(prefix.as_bytes());
        let mut kv = self.client.kv_client();
        let mut items = Vec::new();
        let mut from = prefix.as_bytes().to_vec();
        let mut revision = 0;
        loop {
            let mut opts = GetOptions::new()
                .with_range(end.clone())
                .with_limit(LIST_PAGE);
            if revision > 0 {
                opts = opts.with_revision(revision);
            }
            let resp = self
                .rt
                .block_on(kv.get(from.clone(), Some(opts)))
                .map_err(map_err)?;
            if revision == 0 {
                revision = header_rev(resp.header());
            }
            for kv in resp.kvs() {
                items.push(convert(kv)?);
            }
            match resp.kvs().last() {
                Some(last) if resp.more() => {
                    // The next page starts just after the last key.
                    from = last.key().to_vec();
                    from.push(0);
                }
                _ => break,
            }
        }
        Ok(Listing { items, revision })
    }

    fn create(&self, key: &str, value: &[u8]) -> Result<Revision, StoreError> {
        let txn = Txn::new()
            .when([Compare::create_revision(key, CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key, value, None)]);
        let resp = self
            .rt
            .block_on(self.client.kv_client().txn(txn))
            .map_err(map_err)?;
        if resp.succeeded() {
            Ok(header_rev(resp.header()))
        } else {
            Err(StoreError::AlreadyExists { key: key.into() })
        }
    }

    fn update(&self, key: &str, value: &[u8], expected: Revision) -> Result<Revision, StoreError> {
        let txn = Txn::new()
            .when([Compare::mod_revision(key, CompareOp::Equal, expected)])
            .and_then([TxnOp::put(key, value, None)]);
        let resp = self
            .rt
            .block_on(self.client.kv_client().txn(txn))
            .map_err(map_err)?;
        if resp.succeeded() {
            Ok(header_rev(resp.header()))
        } else {
            Err(self.explain(key, expected))
        }
    }

    fn delete(&self, key: &str, expected: Option<Revision>) -> Result<Revision, StoreError> {
        let compare = match expected {
            Some(rev) => Compare::mod_revision(key, CompareOp::Equal, rev),
            None => Compare::create_revision(key, CompareOp::Greater, 0),
        };
        let txn = Txn::new()
            .when([compare])
            .and_then([TxnOp::delete(key, None)]);
        let resp = self
            .rt
            .block_on(self.client.kv_client().txn(txn))
            .map_err(map_err)?;
        if resp.succeeded() {
            Ok(header_rev(resp.header()))
        } else {
            Err(self.explain(key, expected.unwrap_or(0)))
        }
    }

    fn watch(&self, prefix: &str, from: Revision) -> Result<Watch, StoreError> {
        let start = if from > 0 { from } else { self.revision()? + 1 };
        let opts = WatchOptions::new().with_prefix().with_start_revision(start);
        let mut wc = self.client.watch_client();
        let prefix = prefix.to_string();
        let mut stream = self
            .rt
            .block_on(wc.watch(prefix.clone(), Some(opts)))
            .map_err(map_err)?;
        // Wait for the server to confirm the watch, so nothing written after
        // this call returns can be missed, and a compacted start is reported now.
        let first = self.rt.block_on(stream.message()).map_err(map_err)?;
        let Some(first) = first else {
            return Err(StoreError::unavailable("etcd closed the watch stream"));
        };
        if first.canceled() {
            return Err(if first.compact_revision() > 0 {
                StoreError::Compacted {
                    requested: start,
                    oldest: first.compact_revision(),
                }
            } else {
                StoreError::backend(format!("etcd refused the watch: {}", first.cancel_reason()))
            });
        }
        let (tx, rx) = mpsc::channel();
        let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
        self.rt.spawn(async move {
            let mut pending = Some(first);
            loop {
                let resp = match pending.take() {
                    Some(r) => r,
                    None => tokio::select! {
                        _ = &mut stop_rx => return,
                        msg = stream.message() => match msg {
                            Ok(Some(r)) => r,
                            Ok(None) => {
                                let _ = tx.send(Err(StoreError::unavailable("etcd closed the watch stream")));
                                return;
                            }
                            Err(e) => {
                                let _ = tx.send(Err(map_err(e)));
                                return;
                            }
                        },
                    },
                };
                if resp.canceled() {
                    let err = if resp.compact_revision() > 0 {
                        StoreError::Compacted { requested: start, oldest: resp.compact_revision() }
                    } else {
                        StoreError::backend(format!("etcd cancelled the watch: {}", resp.cancel_reason()))
                    };
                    let _ = tx.send(Err(err));
                    return;
                }
                for ev in resp.events() {
                    let Some(kv) = ev.kv() else { continue };
                    let event = match (ev.event_type(), convert(kv)) {
                        (EventType::Put, Ok(kv)) => Ok(Event::Put(kv)),
                        (EventType::Delete, Ok(kv)) => Ok(Event::Delete { key: kv.key, mod_revision: kv.mod_revision }),
                        (_, Err(e)) => Err(e),
                    };
                    if tx.send(event).is_err() {
                        return;
                    }
                }
            }
        });
        Ok(Watch::new(
            rx,
            Some(StopOnDrop::new(move || {
                let _ = stop_tx.send(());
            })),
        ))
    }

    fn revision(&self) -> Result<Revision, StoreError> {
        let mut kv = self.client.kv_client();
        // A point read of an absent key is the cheapest way to read the header revision.
        let resp = self.rt.block_on(kv.get("\0", None)).map_err(map_err)?;
        Ok(header_rev(resp.header()))
    }
}
