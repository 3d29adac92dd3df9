//! The embedded datastore: a single SQLite file.
//!
//! Layout: `kv` holds current values with their create/modify revisions;
//! `log` holds one row per write (the revision is its primary key), which
//! is both the revision counter and the watch history. Writes run in
//! `BEGIN IMMEDIATE` transactions, so writers from any number of threads
//! or processes serialise on the file lock and compare-and-swap is exact.
//! WAL mode lets readers proceed during a write. Watches read the log when
//! `PRAGMA data_version` says something was committed: writers in the same
//! process wake them at once; writes from other processes as soon as
//! inotify reports the file or its write-ahead log written (or within 2 ms
//! where inotify is not available; `notify.rs`).

mod notify;

use calico_datastore::{
    prefix_end, Event, KeyValue, Listing, Revision, StopOnDrop, Store, StoreError, Watch,
};
use notify::Notifier;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::time::Duration;

/// Log rows kept for watches by default; older revisions report `Compacted`.
pub const DEFAULT_HISTORY: i64 = 100_000;
/// How long a writer waits for the file lock before reporting `Unavailable`.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause between attempts to take the lock: short, because transactions are.
const BUSY_PAUSE: Duration = Duration::from_micros(100);

/// SQLite's default busy handler sleeps in growing steps (up to 100 ms);
/// our write transactions last tens of microseconds, so retry often instead.
fn busy(attempt: i32) -> bool {
    let waited = BUSY_PAUSE * u32::try_from(attempt).unwrap_or(u32::MAX);
    if waited >= BUSY_TIMEOUT {
        return false;
    }
    std::thread::sleep(BUSY_PAUSE);
    true
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS kv (
    key        TEXT PRIMARY KEY,
    value      BLOB NOT NULL,
    create_rev INTEGER NOT NULL,
    mod_rev    INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS log (
    rev        INTEGER PRIMARY KEY,
    key        TEXT NOT NULL,
    value      BLOB,            -- NULL: the key was deleted
    create_rev INTEGER
);
";

/// The embedded store. Cheap to open; one per process is plenty.
#[derive(Debug)]
pub struct SqliteStore {
    path: PathBuf,
    conn: Mutex<Connection>,
    notifier: Arc<Notifier>,
    history: i64,
}

fn backend(e: rusqlite::Error) -> StoreError {
    match e {
        rusqlite::Error::SqliteFailure(f, msg)
            if matches!(
                f.code,
                rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
            ) =>
        {
            StoreError::unavailable(msg.unwrap_or_else(|| "the database is locked".into()))
        }
        other => StoreError::backend_because("SQLite failed", other),
    }
}

/// Creates the database file readable and writable by its owner only
/// (0600), whatever the umask: it holds every policy and address. SQLite
/// gives its -wal and -shm files the same mode. An existing file keeps
/// the mode it has.
fn create_private(path: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(StoreError::unavailable_because(
            format!("cannot create {}", path.display()),
            e,
        )),
    }
}

fn open_conn(path: &Path) -> Result<Connection, StoreError> {
    create_private(path)?;
    let mut conn = Connection::open(path).map_err(|e| {
        StoreError::unavailable_because(format!("cannot open {}", path.display()), e)
    })?;
    conn.busy_handler(Some(busy)).map_err(backend)?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(backend)?;
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(backend)?;
    Ok(conn)
}

fn read_kv(row: &rusqlite::Row<'_>) -> rusqlite::Result<KeyValue> {
    Ok(KeyValue {
        key: row.get(0)?,
        value: row.get(1)?,
        create_revision: row.get(2)?,
        mod_revision: row.get(3)?,
    })
}

fn current_revision(conn: &Connection) -> rusqlite::Result<Revision> {
    conn.query_row("SELECT COALESCE(MAX(rev), 0) FROM log", [], |r| r.get(0))
}

impl SqliteStore {
    /// Opens (creating if needed) the store at `path`; its directory must exist.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        Self::open_with_history(path, DEFAULT_HISTORY)
    }

    /// Like [`SqliteStore::open`], keeping about `history` writes for watches.
    pub fn open_with_history(path: impl AsRef<Path>, history: i64) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        let conn = open_conn(&path)?;
        conn.execute_batch(SCHEMA).map_err(backend)?;
        let notifier = Notifier::for_path(&path);
        Ok(SqliteStore {
            path,
            conn: Mutex::new(conn),
            notifier,
            history: history.max(1),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        self.conn
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Runs `f` in an immediate (write-locked) transaction and commits only if it succeeds.
    fn write<T>(
        &self,
        f: impl FnOnce(&rusqlite::Transaction<'_>, Revision) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut conn = self.lock();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(backend)?;
        let next = current_revision(&tx).map_err(backend)? + 1;
        let out = f(&tx, next)?;
        // Trim a tenth of the history at a time, so trimming is rare and cheap.
        if next % (self.history / 10).max(1) == 0 {
            tx.execute(
                "DELETE FROM log WHERE rev <= ?1",
                params![next - self.history],
            )
            .map_err(backend)?;
        }
        tx.commit().map_err(backend)?;
        self.notifier.notify();
        Ok(out)
    }
}

fn mod_rev(
    tx: &rusqlite::Transaction<'_>,
    key: &str,
) -> Result<Option<(Revision, Revision)>, StoreError> {
    tx.query_row(
        "SELECT create_rev, mod_rev FROM kv WHERE key = ?1",
        params![key],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .optional()
    .map_err(backend)
}

fn put(
    tx: &rusqlite::Transaction<'_>,
    key: &str,
    value: &[u8],
    create: Revision,
    rev: Revision,
) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO kv (key, value, create_rev, mod_rev) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT(key) DO UPDATE SET value = excluded.value, mod_rev = excluded.mod_rev",
        params![key, value, create, rev],
    )
    .map_err(backend)?;
    tx.execute(
        "INSERT INTO log (rev, key, value, create_rev) VALUES (?1, ?2, ?3, ?4)",
        params![rev, key, value, create],
    )
    .map_err(backend)?;
    Ok(())
}

impl Store for SqliteStore {
    fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        self.lock()
            .query_row(
                "SELECT key, value, create_rev, mod_rev FROM kv WHERE key = ?1",
                params![key],
                read_kv,
            )
            .optional()
            .map_err(backend)
    }

    fn list(&self, prefix: &str) -> Result<Listing, StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(backend)?;
        let revision = current_revision(&tx).map_err(backend)?;
        let items = {
            let mut stmt = tx
                .prepare_cached("SELECT key, value, create_rev, mod_rev FROM kv WHERE key >= ?1 AND key < CAST(?2 AS TEXT) ORDER BY key")
                .map_err(backend)?;
            let rows = stmt
                .query_map(params![prefix, prefix_end(prefix)], read_kv)
                .map_err(backend)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(backend)?
        };
        tx.finish().map_err(backend)?;
        Ok(Listing { items, revision })
    }

    fn create(&self, key: &str, value: &[u8]) -> Result<Revision, StoreError> {
        self.write(|tx, rev| {
            if mod_rev(tx, key)?.is_some() {
                return Err(StoreError::AlreadyExists { key: key.into() });
            }
            put(tx, key, value, rev, rev)?;
            Ok(rev)
        })
    }

    fn update(&self, key: &str, value: &[u8], expected: Revision) -> Result<Revision, StoreError> {
        self.write(|tx, rev| match mod_rev(tx, key)? {
            None => Err(StoreError::NotFound { key: key.into() }),
            Some((_, actual)) if actual != expected => Err(StoreError::Conflict {
                key: key.into(),
                expected,
                actual: Some(actual),
            }),
            Some((create, _)) => {
                put(tx, key, value, create, rev)?;
                Ok(rev)
            }
        })
    }

    fn delete(&self, key: &str, expected: Option<Revision>) -> Result<Revision, StoreError> {
        self.write(|tx, rev| {
            match (mod_rev(tx, key)?, expected) {
                (None, _) => return Err(StoreError::NotFound { key: key.into() }),
                (Some((_, actual)), Some(exp)) if actual != exp => {
                    return Err(StoreError::Conflict {
                        key: key.into(),
                        expected: exp,
                        actual: Some(actual),
                    })
                }
                _ => {}
            }
            tx.execute("DELETE FROM kv WHERE key = ?1", params![key])
                .map_err(backend)?;
            tx.execute(
                "INSERT INTO log (rev, key, value, create_rev) VALUES (?1, ?2, NULL, NULL)",
                params![rev, key],
            )
            .map_err(backend)?;
            Ok(rev)
        })
    }

    fn watch(&self, prefix: &str, from: Revision) -> Result<Watch, StoreError> {
        let conn = open_conn(&self.path)?;
        let current = current_revision(&conn).map_err(backend)?;
        let start = if from <= 0 { current + 1 } else { from };
        if start <= current {
            let oldest: Revision = conn
                .query_row("SELECT COALESCE(MIN(rev), 0) FROM log", [], |r| r.get(0))
                .map_err(backend)?;
            if start < oldest {
                return Err(StoreError::Compacted {
                    requested: start,
                    oldest,
                });
            }
        }
        let (tx, rx) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = Arc::clone(&stop);
        let prefix = prefix.to_string();
        let notifier = Arc::clone(&self.notifier);
        std::thread::Builder::new()
            .name("sqlite-watch".into())
            .spawn(move || poll(&conn, &notifier, &prefix, start, &tx, &stop2))
            .map_err(|e| StoreError::backend_because("cannot start the watch thread", e))?;
        Ok(Watch::new(
            rx,
            Some(StopOnDrop::new(move || stop.store(true, Ordering::Relaxed))),
        ))
    }

    fn revision(&self) -> Result<Revision, StoreError> {
        current_revision(&self.lock()).map_err(backend)
    }
}

type Sender = mpsc::Sender<Result<Event, StoreError>>;

/// Sends every log row under `prefix` from `next` on, until stopped or the receiver goes away.
fn poll(
    conn: &Connection,
    notifier: &Notifier,
    prefix: &str,
    mut next: Revision,
    tx: &Sender,
    stop: &AtomicBool,
) {
    let end = prefix_end(prefix);
    let mut seen_version: Option<i64> = None;
    let mut seen_local = notifier.current();
    while !stop.load(Ordering::Relaxed) {
        let version: Result<i64, _> = conn.query_row("PRAGMA data_version", [], |r| r.get(0));
        let version = match version {
            Ok(v) => v,
            Err(e) => {
                let _ = tx.send(Err(backend(e)));
                return;
            }
        };
        if seen_version != Some(version) {
            seen_version = Some(version);
            match read_log(conn, prefix, &end, next) {
                Ok((events, trimmed_past)) => {
                    if let Some(oldest) = trimmed_past {
                        let _ = tx.send(Err(StoreError::Compacted {
                            requested: next,
                            oldest,
                        }));
                        return;
                    }
                    for ev in events {
                        next = ev.revision() + 1;
                        if tx.send(Ok(ev)).is_err() {
                            return;
                        }
                    }
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            }
        }
        seen_local = notifier.wait_past(seen_local, notifier.poll_interval());
    }
}

/// Log events from `from` on, and the oldest kept revision if history was trimmed past `from`.
fn read_log(
    conn: &Connection,
    prefix: &str,
    end: &[u8],
    from: Revision,
) -> Result<(Vec<Event>, Option<Revision>), StoreError> {
    let oldest: Revision = conn
        .query_row("SELECT COALESCE(MIN(rev), 0) FROM log", [], |r| r.get(0))
        .map_err(backend)?;
    let trimmed = (oldest > from).then_some(oldest);
    let mut stmt = conn
        .prepare_cached(// Unary `+` keeps the planner on the revision (rowid) range.
            "SELECT rev, key, value, create_rev FROM log WHERE rev >= ?1 AND +key >= ?2 AND +key < CAST(?3 AS TEXT) ORDER BY rev")
        .map_err(backend)?;
    let rows = stmt
        .query_map(params![from, prefix, end], |r| {
            let rev: Revision = r.get(0)?;
            let key: String = r.get(1)?;
            let value: Option<Vec<u8>> = r.get(2)?;
            let create: Option<Revision> = r.get(3)?;
            Ok(match value {
                Some(value) => Event::Put(KeyValue {
                    key,
                    value,
                    create_revision: create.unwrap_or(rev),
                    mod_revision: rev,
                }),
                None => Event::Delete {
                    key,
                    mod_revision: rev,
                },
            })
        })
        .map_err(backend)?;
    let events = rows.collect::<Result<Vec<_>, _>>().map_err(backend)?;
    Ok((events, trimmed))
}
