//! The in-memory store: the reference semantics every backend must match.

use crate::{Event, KeyValue, Listing, Revision, Store, StoreError, Watch};
use std::collections::BTreeMap;
use std::sync::{mpsc, Mutex, MutexGuard};

/// History kept for watches; older revisions report `Compacted`.
const HISTORY: usize = 100_000;

#[derive(Debug, Default)]
struct State {
    revision: Revision,
    data: BTreeMap<String, KeyValue>,
    history: Vec<Event>,
    watchers: Vec<(String, mpsc::Sender<Result<Event, StoreError>>)>,
}

impl State {
    fn record(&mut self, event: Event) {
        self.watchers.retain(|(prefix, tx)| {
            !event.key().starts_with(prefix.as_str()) || tx.send(Ok(event.clone())).is_ok()
        });
        self.history.push(event);
        if self.history.len() > HISTORY {
            self.history.drain(..HISTORY / 10);
        }
    }
}

/// A process-local store with exactly the semantics of the contract.
#[derive(Debug, Default)]
pub struct MemoryStore {
    state: Mutex<State>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Ends every open watch with `Unavailable`, as a datastore that
    /// restarts or loses its connection does (for consumers' tests).
    pub fn break_watches(&self) {
        for (_, tx) in self.lock().watchers.drain(..) {
            let _ = tx.send(Err(StoreError::unavailable("the store broke its watches")));
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Store for MemoryStore {
    fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        Ok(self.lock().data.get(key).cloned())
    }

    fn list(&self, prefix: &str) -> Result<Listing, StoreError> {
        let st = self.lock();
        let items = st
            .data
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(_, v)| v.clone())
            .collect();
        Ok(Listing {
            items,
            revision: st.revision,
        })
    }

    fn create(&self, key: &str, value: &[u8]) -> Result<Revision, StoreError> {
        let mut st = self.lock();
        if st.data.contains_key(key) {
            return Err(StoreError::AlreadyExists { key: key.into() });
        }
        st.revision += 1;
        let kv = KeyValue {
            key: key.into(),
            value: value.to_vec(),
            create_revision: st.revision,
            mod_revision: st.revision,
        };
        st.data.insert(key.into(), kv.clone());
        st.record(Event::Put(kv));
        Ok(st.revision)
    }

    fn update(&self, key: &str, value: &[u8], expected: Revision) -> Result<Revision, StoreError> {
        let mut st = self.lock();
        let rev = st.revision + 1;
        let kv = match st.data.get_mut(key) {
            None => return Err(StoreError::NotFound { key: key.into() }),
            Some(kv) if kv.mod_revision != expected => {
                return Err(StoreError::Conflict {
                    key: key.into(),
                    expected,
                    actual: Some(kv.mod_revision),
                })
            }
            Some(kv) => {
                kv.value = value.to_vec();
                kv.mod_revision = rev;
                kv.clone()
            }
        };
        st.revision = rev;
        st.record(Event::Put(kv));
        Ok(rev)
    }

    fn delete(&self, key: &str, expected: Option<Revision>) -> Result<Revision, StoreError> {
        let mut st = self.lock();
        match (st.data.get(key), expected) {
            (None, _) => return Err(StoreError::NotFound { key: key.into() }),
            (Some(kv), Some(exp)) if kv.mod_revision != exp => {
                return Err(StoreError::Conflict {
                    key: key.into(),
                    expected: exp,
                    actual: Some(kv.mod_revision),
                })
            }
            _ => {}
        }
        st.data.remove(key);
        st.revision += 1;
        let rev = st.revision;
        st.record(Event::Delete {
            key: key.into(),
            mod_revision: rev,
        });
        Ok(rev)
    }

    fn watch(&self, prefix: &str, from: Revision) -> Result<Watch, StoreError> {
        let mut st = self.lock();
        let (tx, rx) = mpsc::channel();
        if from > 0 && from <= st.revision {
            let oldest = st.history.first().map_or(st.revision + 1, Event::revision);
            if from < oldest {
                return Err(StoreError::Compacted {
                    requested: from,
                    oldest,
                });
            }
            for ev in st
                .history
                .iter()
                .filter(|e| e.revision() >= from && e.key().starts_with(prefix))
            {
                // The receiver is still in scope, so this cannot fail.
                let _ = tx.send(Ok(ev.clone()));
            }
        }
        st.watchers.push((prefix.to_string(), tx));
        Ok(Watch::new(rx, None))
    }

    fn revision(&self) -> Result<Revision, StoreError> {
        Ok(self.lock().revision)
    }
}
