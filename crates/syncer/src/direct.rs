//! The syncer over a datastore: a watcher thread per prefix (list, watch
//! from the listing's revision, and on any break list again, with
//! back-off) feeding one thread that owns the [`Cache`] and hands the
//! consumer its batches.

use crate::cache::Cache;
use crate::{Backoff, Control, SyncEvent, SyncStatus, Syncer, SyncerType};
use calico_datastore::{Chain, Event, Listing, Store, WatchError};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

/// What watcher threads tell the syncer thread.
enum Msg {
    Listed(usize, Listing),
    Event(usize, Event),
    /// Listing or watching failed; the watcher lists again after a pause.
    Broken(String),
    Control(Control),
}

/// How often a watcher with nothing to say looks at its stop and relist flags.
const TICK: Duration = Duration::from_millis(200);

struct Flags {
    stop: AtomicBool,
    relist: Vec<AtomicBool>,
}

/// Starts a syncer of type `ty` over `store`. Its threads stop when the
/// returned handle is dropped.
pub fn start(store: Arc<dyn Store>, ty: SyncerType) -> Syncer {
    let (out_tx, out_rx) = mpsc::channel();
    let (msg_tx, msg_rx) = mpsc::channel::<Msg>();
    let (control_tx, control_rx) = mpsc::channel::<Control>();
    let flags = Arc::new(Flags {
        stop: AtomicBool::new(false),
        relist: ty
            .prefixes()
            .iter()
            .map(|_| AtomicBool::new(false))
            .collect(),
    });
    for (i, prefix) in ty.prefixes().iter().enumerate() {
        let store = Arc::clone(&store);
        let tx = msg_tx.clone();
        let flags = Arc::clone(&flags);
        let _ = std::thread::Builder::new()
            .name(format!("sync-{}-{i}", ty.name()))
            .spawn(move || watcher(store.as_ref(), prefix, i, &tx, &flags));
    }
    // Control requests join the same queue, so they keep their place
    // among the watchers' messages.
    let control_fwd = msg_tx;
    let _ = std::thread::Builder::new()
        .name(format!("sync-{}-ctl", ty.name()))
        .spawn(move || {
            for c in control_rx {
                if control_fwd.send(Msg::Control(c)).is_err() {
                    return;
                }
            }
        });
    let run_flags = Arc::clone(&flags);
    let _ = std::thread::Builder::new()
        .name(format!("sync-{}", ty.name()))
        .spawn(move || {
            run(ty, store.as_ref(), &msg_rx, &out_tx, &run_flags);
            run_flags.stop.store(true, Ordering::SeqCst);
        });
    let stop = Arc::clone(&flags);
    Syncer::new(
        out_rx,
        control_tx,
        calico_datastore::StopOnDrop::new(move || stop.stop.store(true, Ordering::SeqCst)),
    )
}

/// The syncer thread: until the consumer goes away.
fn run(
    ty: SyncerType,
    store: &dyn Store,
    rx: &mpsc::Receiver<Msg>,
    out: &mpsc::Sender<SyncEvent>,
    flags: &Flags,
) {
    let mut cache = Cache::new(ty.prefixes().len());
    let mut status = SyncStatus::WaitForDatastore;
    if out.send(SyncEvent::Status(status)).is_err() {
        return;
    }
    let wants = |k: &str| ty.wants(k);
    while let Ok(first) = rx.recv() {
        // Everything already queued goes out as one batch.
        let mut batch = Vec::new();
        let mut next = Some(first);
        let mut new_status = status;
        while let Some(msg) = next {
            match msg {
                Msg::Listed(i, listing) => {
                    batch.extend(cache.listing(i, listing, wants));
                    if cache.listed() {
                        new_status = SyncStatus::InSync;
                    }
                }
                Msg::Event(i, ev) => batch.extend(cache.event(i, ev, wants)),
                Msg::Broken(why) => {
                    if !batch.is_empty()
                        && out
                            .send(SyncEvent::Updates(std::mem::take(&mut batch)))
                            .is_err()
                    {
                        return;
                    }
                    if out.send(SyncEvent::Error(why)).is_err() {
                        return;
                    }
                    if status == SyncStatus::InSync || new_status == SyncStatus::InSync {
                        new_status = SyncStatus::ResyncInProgress;
                    }
                }
                Msg::Control(Control::Resend) => {
                    if !batch.is_empty()
                        && out
                            .send(SyncEvent::Updates(std::mem::take(&mut batch)))
                            .is_err()
                    {
                        return;
                    }
                    cache.clear();
                    // Said at once, so the consumer sees the InSync that
                    // ends the resend even when it comes in this batch.
                    status = SyncStatus::ResyncInProgress;
                    new_status = status;
                    if out.send(SyncEvent::Status(status)).is_err() {
                        return;
                    }
                    // Listed here and now (the watchers' later events
                    // at or below a listing's revision are skipped); a
                    // prefix that fails is left to its watcher.
                    for (i, prefix) in ty.prefixes().iter().enumerate() {
                        match store.list(prefix) {
                            Ok(listing) => batch.extend(cache.listing(i, listing, wants)),
                            Err(_) => flags.relist[i].store(true, Ordering::SeqCst),
                        }
                    }
                    if cache.listed() {
                        new_status = SyncStatus::InSync;
                    }
                }
            }
            next = rx.try_recv().ok();
        }
        // A prefix still to list after a break or a resend keeps the
        // status where it is.
        if new_status == SyncStatus::InSync && !cache.listed() {
            new_status = status;
        }
        if !batch.is_empty() && out.send(SyncEvent::Updates(batch)).is_err() {
            return;
        }
        if new_status != status {
            status = new_status;
            if out.send(SyncEvent::Status(status)).is_err() {
                return;
            }
        }
    }
}

/// One prefix: list, watch, and on any break list again; until stopped.
fn watcher(store: &dyn Store, prefix: &str, i: usize, tx: &mpsc::Sender<Msg>, flags: &Flags) {
    let backoff = std::cell::Cell::new(Backoff::new());
    // Reports a failure, then waits out the back-off in ticks (so a stop
    // is seen); false when the syncer is gone.
    let broke = |what: &str, e: &(dyn std::error::Error + 'static)| {
        let mut b = backoff.get();
        let d = b.next();
        backoff.set(b);
        let why = format!("{what} {prefix}: {}; listing again in {d:?}", Chain(e));
        if tx.send(Msg::Broken(why)).is_err() {
            return false;
        }
        let mut left = d;
        while !left.is_zero() && !flags.stop.load(Ordering::SeqCst) {
            let t = left.min(TICK);
            std::thread::sleep(t);
            left -= t;
        }
        true
    };
    while !flags.stop.load(Ordering::SeqCst) {
        flags.relist[i].store(false, Ordering::SeqCst);
        let listing = match store.list(prefix) {
            Ok(l) => l,
            Err(e) if broke("listing", &e) => continue,
            Err(_) => return,
        };
        let from = listing.revision + 1;
        if tx.send(Msg::Listed(i, listing)).is_err() {
            return;
        }
        let watch = match store.watch(prefix, from) {
            Ok(w) => w,
            Err(e) if broke("watching", &e) => continue,
            Err(_) => return,
        };
        backoff.set(Backoff::new());
        loop {
            if flags.stop.load(Ordering::SeqCst) {
                return;
            }
            if flags.relist[i].load(Ordering::SeqCst) {
                break;
            }
            match watch.recv_timeout(TICK) {
                Ok(ev) => {
                    if tx.send(Msg::Event(i, ev)).is_err() {
                        return;
                    }
                }
                Err(WatchError::Timeout) => {}
                Err(e) if broke("watching", &e) => break,
                Err(_) => return,
            }
        }
    }
}
