//! Wakes watches in this process as soon as a write to the same file
//! commits: at once for writers in this process, and, through inotify on
//! the file's directory, as soon as another process writes the file or
//! its write-ahead log (a reader writes neither: the WAL index is mapped
//! memory, which inotify does not report). Where inotify is not available
//! watches fall back to polling often.

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};
use std::collections::HashMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, PoisonError, Weak};
use std::time::Duration;

/// How often a watch looks for commits by other processes when the kernel
/// tells it about them (a safety net), and when it cannot.
const POLL_NOTIFIED: Duration = Duration::from_millis(100);
const POLL_BLIND: Duration = Duration::from_millis(2);

/// Per watched directory, the files (database and `-wal`) whose writes
/// wake which notifier.
type Followed = HashMap<WatchDescriptor, Vec<(OsString, Weak<Notifier>)>>;

/// One inotify instance and thread for the process.
struct Watcher {
    inotify: Inotify,
    files: Mutex<Followed>,
}

impl Watcher {
    fn get() -> Option<&'static Watcher> {
        static ONE: OnceLock<Option<&'static Watcher>> = OnceLock::new();
        *ONE.get_or_init(|| {
            let inotify = Inotify::init(InitFlags::IN_CLOEXEC).ok()?;
            let w: &'static Watcher = Box::leak(Box::new(Watcher {
                inotify,
                files: Mutex::default(),
            }));
            std::thread::Builder::new()
                .name("sqlite-inotify".into())
                .spawn(move || w.run())
                .ok()?;
            Some(w)
        })
    }

    /// Wakes `n` whenever `path` or its write-ahead log is written.
    fn follow(&self, path: &Path, n: &Arc<Notifier>) -> bool {
        let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
            return false;
        };
        let flags =
            AddWatchFlags::IN_MODIFY | AddWatchFlags::IN_CREATE | AddWatchFlags::IN_MOVED_TO;
        let Ok(wd) = self.inotify.add_watch(dir, flags) else {
            return false;
        };
        let mut wal = name.to_os_string();
        wal.push("-wal");
        let mut files = self.files.lock().unwrap_or_else(PoisonError::into_inner);
        let list = files.entry(wd).or_default();
        list.retain(|(_, n)| n.strong_count() > 0);
        list.push((name.to_os_string(), Arc::downgrade(n)));
        list.push((wal, Arc::downgrade(n)));
        true
    }

    fn run(&self) {
        loop {
            let events = match self.inotify.read_events() {
                Ok(e) => e,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => return,
            };
            let files = self.files.lock().unwrap_or_else(PoisonError::into_inner);
            for e in events {
                let (Some(list), Some(name)) = (files.get(&e.wd), e.name.as_ref()) else {
                    continue;
                };
                for (file, n) in list {
                    if file == name {
                        if let Some(n) = n.upgrade() {
                            n.notify();
                        }
                    }
                }
            }
        }
    }
}

/// A commit counter per database file, shared by every store in the process.
#[derive(Debug, Default)]
pub(crate) struct Notifier {
    commits: Mutex<u64>,
    changed: Condvar,
    /// Whether the kernel reports other processes' writes (inotify).
    notified: AtomicBool,
}

impl Notifier {
    pub(crate) fn for_path(path: &Path) -> Arc<Notifier> {
        static ALL: OnceLock<Mutex<HashMap<PathBuf, Arc<Notifier>>>> = OnceLock::new();
        let key = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
        let mut all = ALL
            .get_or_init(Mutex::default)
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let n = all.entry(key.clone()).or_insert_with(|| {
            let n = Arc::new(Notifier::default());
            let notified = Watcher::get().is_some_and(|w| w.follow(&key, &n));
            n.notified.store(notified, Ordering::Relaxed);
            n
        });
        Arc::clone(n)
    }

    /// How long a watch may wait before looking again by itself.
    pub(crate) fn poll_interval(&self) -> Duration {
        if self.notified.load(Ordering::Relaxed) {
            POLL_NOTIFIED
        } else {
            POLL_BLIND
        }
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
