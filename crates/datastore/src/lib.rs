//! The datastore contract every backend implements.
//!
//! A flat key space of byte values. Every write bumps one store-wide
//! revision (as etcd does); each key remembers the revision that created
//! it and the one that last modified it. Updates and deletes can be
//! compare-and-swap on the modification revision, which is what makes
//! concurrent writers (IPAM allocators on many nodes) safe. Watches
//! deliver every change under a prefix from a given revision on, in
//! revision order, without gaps.

pub mod conformance;
mod memory;

pub use memory::MemoryStore;

use std::sync::mpsc;
use std::time::Duration;

/// A store-wide, strictly increasing write counter.
pub type Revision = i64;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Vec<u8>,
    pub create_revision: Revision,
    pub mod_revision: Revision,
}

/// A consistent snapshot of a prefix, and the revision it was read at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    pub items: Vec<KeyValue>,
    pub revision: Revision,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Put(KeyValue),
    Delete { key: String, mod_revision: Revision },
}

impl Event {
    pub fn key(&self) -> &str {
        match self {
            Event::Put(kv) => &kv.key,
            Event::Delete { key, .. } => key,
        }
    }

    pub fn revision(&self) -> Revision {
        match self {
            Event::Put(kv) => kv.mod_revision,
            Event::Delete { mod_revision, .. } => *mod_revision,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("key {key} does not exist")]
    NotFound { key: String },
    #[error("key {key} already exists")]
    AlreadyExists { key: String },
    #[error(
        "key {key} was modified concurrently (expected revision {expected}, found {actual:?})"
    )]
    Conflict {
        key: String,
        expected: Revision,
        actual: Option<Revision>,
    },
    #[error("revision {requested} has been compacted (oldest available is {oldest}); list again and watch from the new revision")]
    Compacted {
        requested: Revision,
        oldest: Revision,
    },
    /// The store cannot be reached or is busy: worth retrying.
    #[error("datastore unavailable: {what}")]
    Unavailable {
        what: String,
        #[source]
        cause: Option<Cause>,
    },
    /// The backend failed otherwise.
    #[error("datastore error: {what}")]
    Backend {
        what: String,
        #[source]
        cause: Option<Cause>,
    },
}

/// The backend's own error, kept as the source of a [`StoreError`].
/// Shared, so the error stays cloneable; equal when it reads the same.
#[derive(Clone)]
pub struct Cause(std::sync::Arc<dyn std::error::Error + Send + Sync + 'static>);

impl Cause {
    pub fn new(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        Cause(std::sync::Arc::new(e))
    }
}

impl std::fmt::Debug for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&self.0, f)
    }
}

impl std::fmt::Display for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&self.0, f)
    }
}

impl std::error::Error for Cause {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

impl PartialEq for Cause {
    fn eq(&self, other: &Self) -> bool {
        self.to_string() == other.to_string()
    }
}
impl Eq for Cause {}

impl StoreError {
    pub fn unavailable(what: impl Into<String>) -> Self {
        StoreError::Unavailable {
            what: what.into(),
            cause: None,
        }
    }

    pub fn unavailable_because(
        what: impl Into<String>,
        cause: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        StoreError::Unavailable {
            what: what.into(),
            cause: Some(Cause::new(cause)),
        }
    }

    pub fn backend(what: impl Into<String>) -> Self {
        StoreError::Backend {
            what: what.into(),
            cause: None,
        }
    }

    pub fn backend_because(
        what: impl Into<String>,
        cause: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        StoreError::Backend {
            what: what.into(),
            cause: Some(Cause::new(cause)),
        }
    }
}

/// An error with every cause below it, `outer: inner: innermost`, for
/// places that print one line (logs, CNI error details).
#[derive(Debug)]
pub struct Chain<'a>(pub &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut next = self.0.source();
        while let Some(e) = next {
            write!(f, ": {e}")?;
            next = e.source();
        }
        Ok(())
    }
}

/// The operations every backend provides. Implementations are safe to
/// share between threads; the embedded and etcd backends are also safe
/// between processes.
pub trait Store: Send + Sync + std::fmt::Debug {
    fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError>;

    /// Every key starting with `prefix`, in key order.
    fn list(&self, prefix: &str) -> Result<Listing, StoreError>;

    /// Writes a key that must not exist yet.
    fn create(&self, key: &str, value: &[u8]) -> Result<Revision, StoreError>;

    /// Rewrites a key whose modification revision is still `expected`.
    fn update(&self, key: &str, value: &[u8], expected: Revision) -> Result<Revision, StoreError>;

    /// Deletes a key; with `expected`, only if unmodified since then.
    /// Returns the revision of the deletion.
    fn delete(&self, key: &str, expected: Option<Revision>) -> Result<Revision, StoreError>;

    /// Changes under `prefix` with revision >= `from`; `from` = 0 means
    /// changes after now. Fails with `Compacted` when history is gone.
    fn watch(&self, prefix: &str, from: Revision) -> Result<Watch, StoreError>;

    /// The store's current revision.
    fn revision(&self) -> Result<Revision, StoreError>;
}

/// A stream of events. Dropping it stops the watch.
#[derive(Debug)]
pub struct Watch {
    rx: mpsc::Receiver<Result<Event, StoreError>>,
    _stop: Option<StopOnDrop>,
}

/// Runs a closure when the watch is dropped (to stop a backend's poller).
pub struct StopOnDrop(Option<Box<dyn FnOnce() + Send>>);

impl std::fmt::Debug for StopOnDrop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StopOnDrop")
    }
}

impl StopOnDrop {
    pub fn new(f: impl FnOnce() + Send + 'static) -> Self {
        StopOnDrop(Some(Box::new(f)))
    }
}

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        if let Some(f) = self.0.take() {
            f();
        }
    }
}

/// Why a watch produced no event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WatchError {
    #[error("no event within the timeout")]
    Timeout,
    #[error("the watch has ended")]
    Closed,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Watch {
    /// A watch fed by a backend through `rx`; `stop` runs when it is dropped.
    pub fn new(rx: mpsc::Receiver<Result<Event, StoreError>>, stop: Option<StopOnDrop>) -> Self {
        Watch { rx, _stop: stop }
    }

    pub fn recv_timeout(&self, timeout: Duration) -> Result<Event, WatchError> {
        match self.rx.recv_timeout(timeout) {
            Ok(Ok(ev)) => Ok(ev),
            Ok(Err(e)) => Err(WatchError::Store(e)),
            Err(mpsc::RecvTimeoutError::Timeout) => Err(WatchError::Timeout),
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(WatchError::Closed),
        }
    }

    pub fn recv(&self) -> Result<Event, WatchError> {
        match self.rx.recv() {
            Ok(Ok(ev)) => Ok(ev),
            Ok(Err(e)) => Err(WatchError::Store(e)),
            Err(mpsc::RecvError) => Err(WatchError::Closed),
        }
    }

    /// An event if one is already waiting.
    pub fn try_recv(&self) -> Option<Result<Event, StoreError>> {
        self.rx.try_recv().ok()
    }
}

/// The first key after every key that starts with `prefix` (etcd's range end).
pub fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error;

    #[test]
    fn a_backend_error_keeps_its_cause() {
        let io = std::io::Error::other("disk on fire");
        let e = StoreError::backend_because("SQLite failed", io);
        assert_eq!(e.to_string(), "datastore error: SQLite failed");
        assert_eq!(
            e.source().map(ToString::to_string).as_deref(),
            Some("disk on fire")
        );
        assert_eq!(
            Chain(&e).to_string(),
            "datastore error: SQLite failed: disk on fire"
        );
        assert_eq!(e.clone(), e);
        assert!(StoreError::unavailable("no endpoints").source().is_none());
    }
}
