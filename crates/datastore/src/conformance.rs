//! The conformance suite: the contract as executable checks. Every backend
//! runs all of them through [`conformance_tests!`](crate::conformance_tests).
//!
//! Each check gets a store and a key prefix of its own, so checks may share
//! one server and run in parallel; they use only revisions they observed.

use crate::{Event, Store, StoreError, WatchError};
use std::sync::Arc;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(10);

/// Generates one `#[test]` per check. `$setup` must evaluate to
/// `(Arc<dyn Store>, String)`: a store and a fresh key prefix.
#[macro_export]
macro_rules! conformance_tests {
    ($setup:expr) => {
        $crate::conformance_tests!(@each $setup;
            get_missing, create_then_get, create_existing_fails, update_is_compare_and_swap,
            delete_is_compare_and_swap, list_is_prefix_scoped_and_sorted, revisions_increase,
            watch_sees_future_changes_in_order, watch_replays_from_revision, watch_filters_by_prefix,
            list_then_watch_has_no_gap, concurrent_updates_lose_nothing, concurrent_creates_have_one_winner,
            values_are_binary_safe, dropped_watch_is_harmless);
    };
    (@each $setup:expr; $($name:ident),*) => {
        $(
            #[test]
            fn $name() {
                let (store, prefix): (std::sync::Arc<dyn $crate::Store>, String) = $setup;
                $crate::conformance::$name(store, &prefix);
            }
        )*
    };
}

fn next(w: &crate::Watch) -> Event {
    match w.recv_timeout(WAIT) {
        Ok(ev) => ev,
        Err(e) => panic!("expected a watch event: {e}"),
    }
}

fn assert_quiet(w: &crate::Watch) {
    match w.recv_timeout(Duration::from_millis(300)) {
        Err(WatchError::Timeout) => {}
        other => panic!("expected no more events, got {other:?}"),
    }
}

pub fn get_missing(s: Arc<dyn Store>, p: &str) {
    assert_eq!(s.get(&format!("{p}nothing")).expect("get"), None);
}

pub fn create_then_get(s: Arc<dyn Store>, p: &str) {
    let key = format!("{p}a");
    let rev = s.create(&key, b"one").expect("create");
    let kv = s.get(&key).expect("get").expect("present");
    assert_eq!(kv.value, b"one");
    assert_eq!(kv.key, key);
    assert_eq!(kv.create_revision, rev);
    assert_eq!(kv.mod_revision, rev);
    assert!(s.revision().expect("revision") >= rev);
}

pub fn create_existing_fails(s: Arc<dyn Store>, p: &str) {
    let key = format!("{p}a");
    s.create(&key, b"one").expect("create");
    assert!(matches!(
        s.create(&key, b"two"),
        Err(StoreError::AlreadyExists { .. })
    ));
    assert_eq!(s.get(&key).expect("get").expect("present").value, b"one");
}

pub fn update_is_compare_and_swap(s: Arc<dyn Store>, p: &str) {
    let key = format!("{p}a");
    assert!(matches!(
        s.update(&key, b"x", 1),
        Err(StoreError::NotFound { .. })
    ));
    let r1 = s.create(&key, b"one").expect("create");
    let r2 = s
        .update(&key, b"two", r1)
        .expect("update with current revision");
    assert!(r2 > r1);
    match s.update(&key, b"stale", r1) {
        Err(StoreError::Conflict {
            expected, actual, ..
        }) => {
            assert_eq!(expected, r1);
            assert_eq!(actual, Some(r2));
        }
        other => panic!("stale update must conflict, got {other:?}"),
    }
    let kv = s.get(&key).expect("get").expect("present");
    assert_eq!(kv.value, b"two");
    assert_eq!(kv.create_revision, r1);
    assert_eq!(kv.mod_revision, r2);
}

pub fn delete_is_compare_and_swap(s: Arc<dyn Store>, p: &str) {
    let key = format!("{p}a");
    assert!(matches!(
        s.delete(&key, None),
        Err(StoreError::NotFound { .. })
    ));
    let r1 = s.create(&key, b"one").expect("create");
    let r2 = s.update(&key, b"two", r1).expect("update");
    assert!(matches!(
        s.delete(&key, Some(r1)),
        Err(StoreError::Conflict { .. })
    ));
    assert!(s.get(&key).expect("get").is_some());
    let r3 = s
        .delete(&key, Some(r2))
        .expect("delete at current revision");
    assert!(r3 > r2);
    assert_eq!(s.get(&key).expect("get"), None);
    s.create(&key, b"again").expect("recreate");
    s.delete(&key, None).expect("unconditional delete");
    assert_eq!(s.get(&key).expect("get"), None);
}

pub fn list_is_prefix_scoped_and_sorted(s: Arc<dyn Store>, p: &str) {
    for k in ["dir/b", "dir/a", "dir/c/d", "dirx", "di"] {
        s.create(&format!("{p}{k}"), k.as_bytes()).expect("create");
    }
    let listing = s.list(&format!("{p}dir/")).expect("list");
    let keys: Vec<String> = listing
        .items
        .iter()
        .map(|kv| kv.key.trim_start_matches(p).to_string())
        .collect();
    assert_eq!(keys, ["dir/a", "dir/b", "dir/c/d"]);
    let max = listing
        .items
        .iter()
        .map(|kv| kv.mod_revision)
        .max()
        .expect("items");
    assert!(listing.revision >= max);
    assert!(s
        .list(&format!("{p}nothing/"))
        .expect("list")
        .items
        .is_empty());
}

pub fn revisions_increase(s: Arc<dyn Store>, p: &str) {
    let mut last = s.revision().expect("revision");
    for i in 0..5 {
        let key = format!("{p}k{i}");
        let r = s.create(&key, b"v").expect("create");
        assert!(r > last);
        let r2 = s.update(&key, b"w", r).expect("update");
        assert!(r2 > r);
        let r3 = s.delete(&key, None).expect("delete");
        assert!(r3 > r2);
        last = r3;
    }
}

pub fn watch_sees_future_changes_in_order(s: Arc<dyn Store>, p: &str) {
    let w = s.watch(p, 0).expect("watch");
    let key = format!("{p}a");
    let r1 = s.create(&key, b"1").expect("create");
    let r2 = s.update(&key, b"2", r1).expect("update");
    let r3 = s.delete(&key, None).expect("delete");
    match next(&w) {
        Event::Put(kv) => assert_eq!(
            (kv.value.as_slice(), kv.mod_revision, kv.create_revision),
            (&b"1"[..], r1, r1)
        ),
        other => panic!("{other:?}"),
    }
    match next(&w) {
        Event::Put(kv) => assert_eq!(
            (kv.value.as_slice(), kv.mod_revision, kv.create_revision),
            (&b"2"[..], r2, r1)
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        next(&w),
        Event::Delete {
            key,
            mod_revision: r3
        }
    );
    assert_quiet(&w);
}

pub fn watch_replays_from_revision(s: Arc<dyn Store>, p: &str) {
    let (a, b) = (format!("{p}a"), format!("{p}b"));
    let ra = s.create(&a, b"a1").expect("create");
    let rb = s.create(&b, b"b1").expect("create");
    let ra2 = s.update(&a, b"a2", ra).expect("update");
    let w = s.watch(p, rb).expect("watch from revision");
    assert_eq!(next(&w).revision(), rb);
    match next(&w) {
        Event::Put(kv) => assert_eq!((kv.key.as_str(), kv.mod_revision), (a.as_str(), ra2)),
        other => panic!("{other:?}"),
    }
    assert_quiet(&w);
    let rd = s.delete(&b, None).expect("delete");
    assert_eq!(
        next(&w),
        Event::Delete {
            key: b,
            mod_revision: rd
        }
    );
}

pub fn watch_filters_by_prefix(s: Arc<dyn Store>, p: &str) {
    let w = s.watch(&format!("{p}in/"), 0).expect("watch");
    s.create(&format!("{p}out"), b"x").expect("create");
    s.create(&format!("{p}inx"), b"x").expect("create");
    let r = s.create(&format!("{p}in/yes"), b"y").expect("create");
    assert_eq!(next(&w).revision(), r);
    assert_quiet(&w);
}

pub fn list_then_watch_has_no_gap(s: Arc<dyn Store>, p: &str) {
    for i in 0..3 {
        s.create(&format!("{p}pre{i}"), b"x").expect("create");
    }
    let listing = s.list(p).expect("list");
    assert_eq!(listing.items.len(), 3);
    let mut written = Vec::new();
    for i in 0..5 {
        written.push(s.create(&format!("{p}post{i}"), b"y").expect("create"));
    }
    let w = s.watch(p, listing.revision + 1).expect("watch");
    let seen: Vec<i64> = (0..5).map(|_| next(&w).revision()).collect();
    assert_eq!(seen, written);
    assert_quiet(&w);
}

pub fn concurrent_updates_lose_nothing(s: Arc<dyn Store>, p: &str) {
    const THREADS: usize = 4;
    const EACH: usize = 25;
    let key = format!("{p}counter");
    s.create(&key, b"0").expect("create");
    std::thread::scope(|scope| {
        for _ in 0..THREADS {
            scope.spawn(|| {
                for _ in 0..EACH {
                    loop {
                        let kv = s.get(&key).expect("get").expect("present");
                        let n: usize = String::from_utf8_lossy(&kv.value).parse().expect("number");
                        match s.update(&key, (n + 1).to_string().as_bytes(), kv.mod_revision) {
                            Ok(_) => break,
                            Err(StoreError::Conflict { .. }) => continue,
                            Err(e) => panic!("update: {e}"),
                        }
                    }
                }
            });
        }
    });
    let kv = s.get(&key).expect("get").expect("present");
    assert_eq!(
        String::from_utf8_lossy(&kv.value),
        (THREADS * EACH).to_string()
    );
}

pub fn concurrent_creates_have_one_winner(s: Arc<dyn Store>, p: &str) {
    let key = format!("{p}contested");
    let wins: usize = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let (s, key) = (&s, &key);
                scope.spawn(move || match s.create(key, format!("{i}").as_bytes()) {
                    Ok(_) => 1,
                    Err(StoreError::AlreadyExists { .. }) => 0,
                    Err(e) => panic!("create: {e}"),
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("thread")).sum()
    });
    assert_eq!(wins, 1);
}

pub fn values_are_binary_safe(s: Arc<dyn Store>, p: &str) {
    let all: Vec<u8> = (0..=255u8).cycle().take(64 * 1024).collect();
    let key = format!("{p}bin");
    s.create(&key, &all).expect("create");
    assert_eq!(s.get(&key).expect("get").expect("present").value, all);
    let key2 = format!("{p}ünïcode/ключ");
    s.create(&key2, b"")
        .expect("create empty value with unicode key");
    assert_eq!(s.get(&key2).expect("get").expect("present").value, b"");
}

pub fn dropped_watch_is_harmless(s: Arc<dyn Store>, p: &str) {
    let w = s.watch(p, 0).expect("watch");
    drop(w);
    s.create(&format!("{p}after"), b"x")
        .expect("create after a watch was dropped");
    let w2 = s.watch(p, 0).expect("watch again");
    let r = s.create(&format!("{p}after2"), b"x").expect("create");
    assert_eq!(next(&w2).revision(), r);
}
