//! Wakes watches in this process as soon as a write to the same file commits.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, OnceLock, PoisonError};
use std::time::Duration;

/// A commit counter per database file, shared by every store in the process.
#[derive(Debug, Default)]
pub(crate) struct Notifier {
    commits: Mutex<u64>,
    changed: Condvar,
}

impl Notifier {
    pub(crate) fn for_path(path: &Path) -> Arc<Notifier> {
        static ALL: OnceLock<Mutex<HashMap<PathBuf, Arc<Notifier>>>> = OnceLock::new();
        let key = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
        let mut all = ALL
            .get_or_init(Mutex::default)
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        Arc::clone(all.entry(key).or_default())
    }

    pub(crate) fn notify(&self) {
        *self.commits.lock().unwrap_or_else(PoisonError::into_inner) += 1;
        self.changed.notify_all();
    }

    pub(crate) fn current(&self) -> u64 {
        *self.commits.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits until the counter moves past `seen` or `timeout` passes; returns the counter.
    pub(crate) fn wait_past(&self, seen: u64, timeout: Duration) -> u64 {
        let guard = self.commits.lock().unwrap_or_else(PoisonError::into_inner);
        let (guard, _) = self
            .changed
            .wait_timeout_while(guard, timeout, |n| *n == seen)
            .unwrap_or_else(PoisonError::into_inner);
        *guard
    }
}
