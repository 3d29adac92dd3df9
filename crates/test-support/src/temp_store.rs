//! A store that owns the temp directory its files live in.

use calico_datastore::{KeyValue, Listing, Revision, Store, StoreError, Watch};

/// Wraps a store and removes its directory when dropped.
#[derive(Debug)]
pub struct TempStore<S> {
    store: S,
    _dir: tempfile::TempDir,
}

impl<S: Store> TempStore<S> {
    /// Creates a temp dir and opens a store inside it with `open(dir)`.
    pub fn new(open: impl FnOnce(&std::path::Path) -> S) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        TempStore {
            store: open(dir.path()),
            _dir: dir,
        }
    }

    pub fn inner(&self) -> &S {
        &self.store
    }
}

impl<S: Store> Store for TempStore<S> {
    fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        self.store.get(key)
    }
    fn list(&self, prefix: &str) -> Result<Listing, StoreError> {
        self.store.list(prefix)
    }
    fn create(&self, key: &str, value: &[u8]) -> Result<Revision, StoreError> {
        self.store.create(key, value)
    }
    fn update(&self, key: &str, value: &[u8], expected: Revision) -> Result<Revision, StoreError> {
        self.store.update(key, value, expected)
    }
    fn delete(&self, key: &str, expected: Option<Revision>) -> Result<Revision, StoreError> {
        self.store.delete(key, expected)
    }
    fn watch(&self, prefix: &str, from: Revision) -> Result<Watch, StoreError> {
        self.store.watch(prefix, from)
    }
    fn revision(&self) -> Result<Revision, StoreError> {
        self.store.revision()
    }
}
