//! The embedded store passes the datastore conformance suite, each check on a fresh file.

use calico_datastore::{conformance_tests, Store};
use calico_datastore_sqlite::SqliteStore;
use calico_test_support::TempStore;
use std::sync::Arc;

fn fresh() -> (Arc<dyn Store>, String) {
    let store = TempStore::new(|dir| SqliteStore::open(dir.join("calico.db")).expect("open"));
    (Arc::new(store), "/test/".to_string())
}

conformance_tests!(fresh());

/// Separate connections to one file (as separate processes have) still
/// serialise their compare-and-swap updates.
#[test]
fn separate_connections_lose_no_updates() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("shared.db");
    let first = SqliteStore::open(&path).expect("open");
    first.create("/counter", b"0").expect("create");
    std::thread::scope(|scope| {
        for _ in 0..4 {
            let path = path.clone();
            scope.spawn(move || {
                let store = SqliteStore::open(&path).expect("open");
                for _ in 0..50 {
                    loop {
                        let kv = store.get("/counter").expect("get").expect("present");
                        let n: u32 = String::from_utf8_lossy(&kv.value).parse().expect("number");
                        match store.update(
                            "/counter",
                            (n + 1).to_string().as_bytes(),
                            kv.mod_revision,
                        ) {
                            Ok(_) => break,
                            Err(calico_datastore::StoreError::Conflict { .. }) => continue,
                            Err(e) => panic!("{e}"),
                        }
                    }
                }
            });
        }
    });
    assert_eq!(
        first.get("/counter").expect("get").expect("present").value,
        b"200"
    );
}

/// A watch opened on one connection sees writes made through another.
#[test]
fn watch_sees_other_connections() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("shared.db");
    let watcher = SqliteStore::open(&path).expect("open");
    let writer = SqliteStore::open(&path).expect("open");
    let w = watcher.watch("/x/", 0).expect("watch");
    let rev = writer.create("/x/a", b"1").expect("create");
    let ev = w
        .recv_timeout(std::time::Duration::from_secs(5))
        .expect("event");
    assert_eq!(ev.revision(), rev);
}

/// Watching from a revision whose history was trimmed fails with `Compacted`
/// (the caller must list again); recent revisions still replay.
#[test]
fn trimmed_history_reports_compacted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open_with_history(dir.path().join("small.db"), 50).expect("open");
    for i in 0..200 {
        store.create(&format!("/k/{i}"), b"v").expect("create");
    }
    match store.watch("/k/", 1) {
        Err(calico_datastore::StoreError::Compacted { requested, oldest }) => {
            assert_eq!(requested, 1);
            assert!(oldest > 1 && oldest <= 200 - 50 + 1, "oldest {oldest}");
        }
        other => panic!("expected Compacted, got {other:?}"),
    }
    let w = store.watch("/k/", 190).expect("recent history replays");
    assert_eq!(
        w.recv_timeout(std::time::Duration::from_secs(5))
            .expect("event")
            .revision(),
        190
    );
    // Current values are never trimmed.
    assert_eq!(store.list("/k/").expect("list").items.len(), 200);
}

/// A write by another process (this test binary run again, as a writer)
/// reaches a watch in this one: the kernel reports the file written
/// (inotify), and a watch polls by itself as well.
#[test]
fn a_write_by_another_process_reaches_a_watch() {
    const CHILD: &str = "CALICO_SQLITE_TEST_WRITER";
    if let Ok(path) = std::env::var(CHILD) {
        let store = SqliteStore::open(&path).expect("open as the writer");
        store.create("/from/child", b"hello").expect("write");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("shared.db");
    let store = SqliteStore::open(&path).expect("open");
    let from = store.create("/from/parent", b"x").expect("create") + 1;
    let w = store.watch("/from/", from).expect("watch");
    let status = std::process::Command::new(std::env::current_exe().expect("exe"))
        .args(["--exact", "a_write_by_another_process_reaches_a_watch"])
        .env(CHILD, &path)
        .stdout(std::process::Stdio::null())
        .status()
        .expect("run the writer");
    assert!(status.success());
    match w.recv_timeout(std::time::Duration::from_secs(5)) {
        Ok(calico_datastore::Event::Put(kv)) => {
            assert_eq!(
                (kv.key.as_str(), kv.value.as_slice()),
                ("/from/child", &b"hello"[..])
            );
        }
        other => panic!("{other:?}"),
    }
}
