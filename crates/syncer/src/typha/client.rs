//! A node agent's end of the fan-out: the same [`Syncer`] handle as a
//! direct syncer, fed from the service.
//!
//! The client keeps its own [`Cache`] across connections. After a
//! reconnect the service's snapshot is compared with it, so the consumer
//! sees only what changed while it was away (and deletions for keys that
//! vanished) — never a reset. Keys the snapshot did not show are deleted
//! only once the service reports `InSync`: a service that is itself still
//! listing never makes an agent forget its policy.

use super::proto::typha_client::TyphaClient;
use super::proto::{Hello, Kv, Status as WireStatus};
use crate::cache::Cache;
use crate::{Backoff, Control, SyncEvent, SyncStatus, Syncer, SyncerType};
use calico_datastore::{Event, KeyValue};
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

/// Client certificate and the CA that signs the service's (Felix's
/// `TyphaCAFile`, `TyphaCertFile`, `TyphaKeyFile`, `TyphaCN`).
#[derive(Debug, Clone)]
pub struct ClientTls {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The name the service's certificate must carry (default: the host of `addr`).
    pub server_name: Option<String>,
}

#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// `host:port` of the service (Felix's `TyphaAddr`).
    pub addr: String,
    pub node: String,
    pub syncer: SyncerType,
    pub tls: Option<ClientTls>,
}

fn from_kv(kv: Kv) -> Event {
    if kv.deleted {
        Event::Delete {
            key: kv.key,
            mod_revision: kv.mod_revision,
        }
    } else {
        Event::Put(KeyValue {
            key: kv.key,
            value: kv.value.to_vec(),
            create_revision: kv.create_revision,
            mod_revision: kv.mod_revision,
        })
    }
}

fn endpoint(c: &ClientConfig) -> anyhow::Result<Endpoint> {
    let scheme = if c.tls.is_some() { "https" } else { "http" };
    let mut ep = Endpoint::from_shared(format!("{scheme}://{}", c.addr))?
        .connect_timeout(Duration::from_secs(5))
        .tcp_keepalive(Some(Duration::from_secs(30)))
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(10))
        .keep_alive_while_idle(true);
    if let Some(tls) = &c.tls {
        let mut t = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(std::fs::read(&tls.ca)?))
            .identity(Identity::from_pem(
                std::fs::read(&tls.cert)?,
                std::fs::read(&tls.key)?,
            ));
        if let Some(name) = &tls.server_name {
            t = t.domain_name(name.clone());
        }
        ep = ep.tls_config(t)?;
    }
    Ok(ep)
}

/// Starts following the service; reconnects for ever with back-off. The
/// thread stops when the handle is dropped.
pub fn start(config: ClientConfig) -> std::io::Result<Syncer> {
    let (out_tx, out_rx) = mpsc::channel();
    let (control_tx, control_rx) = mpsc::channel::<Control>();
    let stop = Arc::new(AtomicBool::new(false));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let stopping = Arc::clone(&stop);
    std::thread::Builder::new()
        .name(format!("typha-{}", config.syncer))
        .spawn(move || runtime.block_on(run(&config, &out_tx, &control_rx, &stopping)))?;
    Ok(Syncer::new(
        out_rx,
        control_tx,
        calico_datastore::StopOnDrop::new(move || stop.store(true, Ordering::SeqCst)),
    ))
}

/// How one connection ended.
enum End {
    /// The consumer is gone.
    Stop,
    /// The consumer asked for everything again.
    Resend,
    Broken(String),
}

async fn run(
    config: &ClientConfig,
    out: &mpsc::Sender<SyncEvent>,
    control: &mpsc::Receiver<Control>,
    stop: &AtomicBool,
) {
    let mut cache = Cache::new(1);
    let mut status = SyncStatus::WaitForDatastore;
    if out.send(SyncEvent::Status(status)).is_err() {
        return;
    }
    let mut backoff = Backoff::new();
    loop {
        let end = connection(
            config,
            &mut cache,
            &mut status,
            out,
            control,
            stop,
            &mut backoff,
        )
        .await;
        match end {
            End::Stop => return,
            End::Resend => {
                cache.clear();
                status = SyncStatus::ResyncInProgress;
                if out.send(SyncEvent::Status(status)).is_err() {
                    return;
                }
                continue;
            }
            End::Broken(why) => {
                let d = backoff.next();
                if out
                    .send(SyncEvent::Error(format!(
                        "fan-out {}: {why}; reconnecting in {d:?}",
                        config.addr
                    )))
                    .is_err()
                {
                    return;
                }
                if status == SyncStatus::InSync {
                    status = SyncStatus::ResyncInProgress;
                    if out.send(SyncEvent::Status(status)).is_err() {
                        return;
                    }
                }
                let mut left = d;
                while !left.is_zero() {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let t = left.min(Duration::from_millis(100));
                    tokio::time::sleep(t).await;
                    left -= t;
                }
            }
        }
    }
}

async fn connection(
    config: &ClientConfig,
    cache: &mut Cache,
    status: &mut SyncStatus,
    out: &mpsc::Sender<SyncEvent>,
    control: &mpsc::Receiver<Control>,
    stop: &AtomicBool,
    backoff: &mut Backoff,
) -> End {
    let ep = match endpoint(config) {
        Ok(ep) => ep,
        Err(e) => return End::Broken(format!("{e:#}")),
    };
    let channel = match ep.connect().await {
        Ok(c) => c,
        Err(e) => return End::Broken(calico_datastore::Chain(&e).to_string()),
    };
    let mut client = TyphaClient::new(channel).max_decoding_message_size(64 << 20);
    let hello = Hello {
        node: config.node.clone(),
        syncer: config.syncer.name().to_string(),
        client_version: env!("CARGO_PKG_VERSION").to_string(),
    };
    let mut stream = match client.sync(hello).await {
        Ok(r) => r.into_inner(),
        Err(e) => return End::Broken(format!("{}: {}", e.code(), e.message())),
    };
    // The snapshot lasts until the service says it is in sync.
    let mut seen: Option<HashSet<String>> = Some(HashSet::new());
    let mut top = 0;
    loop {
        if stop.load(Ordering::SeqCst) {
            return End::Stop;
        }
        if let Ok(Control::Resend) = control.try_recv() {
            return End::Resend;
        }
        let msg = match tokio::time::timeout(Duration::from_millis(200), stream.message()).await {
            Err(_) => continue,
            Ok(Ok(Some(m))) => m,
            Ok(Ok(None)) => return End::Broken("the service closed the stream".into()),
            Ok(Err(e)) => return End::Broken(format!("{}: {}", e.code(), e.message())),
        };
        backoff.reset();
        let wire = WireStatus::try_from(msg.status).unwrap_or(WireStatus::Unspecified);
        let mut batch = Vec::new();
        for kv in msg.updates {
            top = top.max(kv.mod_revision);
            let ev = from_kv(kv);
            let news = match (&mut seen, ev) {
                (Some(seen), Event::Put(kv)) => cache.snapshot_put(kv, seen),
                (Some(seen), Event::Delete { key, mod_revision }) => {
                    seen.remove(&key);
                    cache.streamed(Event::Delete { key, mod_revision })
                }
                (None, ev) => cache.streamed(ev),
            };
            batch.extend(news);
        }
        let new_status = match wire {
            WireStatus::InSync => {
                if let Some(seen) = seen.take() {
                    batch.extend(cache.sweep(&seen, top));
                }
                Some(SyncStatus::InSync)
            }
            // Until the service is in sync, this client is resyncing (or
            // waiting, if it never was in sync).
            WireStatus::ResyncInProgress | WireStatus::WaitForDatastore
                if *status == SyncStatus::InSync =>
            {
                Some(SyncStatus::ResyncInProgress)
            }
            _ => None,
        };
        if !batch.is_empty() && out.send(SyncEvent::Updates(batch)).is_err() {
            return End::Stop;
        }
        if let Some(s) = new_status.filter(|s| s != status) {
            *status = s;
            if out.send(SyncEvent::Status(s)).is_err() {
                return End::Stop;
            }
        }
    }
}
