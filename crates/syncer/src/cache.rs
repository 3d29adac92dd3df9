//! What a syncer delivered, by key, and what a listing or a watch event
//! changes of it (pure: no I/O).
//!
//! Each key is remembered by its modification revision and a hash of its
//! value, not the value itself (a node holds 50,000 workload endpoints;
//! the consumer keeps what it needs of them). A key is delivered again only
//! when one of the two differs, so a datastore restored from a backup
//! (revisions rewound, values changed) is still noticed.
//!
//! Prefixes are numbered; each remembers the revision of its last
//! listing, and watch events at or below it are already in that listing
//! (a watch delivers in revision order) and are skipped.

use calico_datastore::{Event, KeyValue, Listing, Revision};
use std::collections::HashMap;
use std::hash::{Hash, Hasher};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    prefix: usize,
    mod_revision: Revision,
    hash: u64,
}

fn hash(value: &[u8]) -> u64 {
    // SipHash with fixed keys: the same value hashes the same in every
    // process (the fan-out's clients compare against their own cache).
    let mut h = std::hash::DefaultHasher::new();
    value.hash(&mut h);
    h.finish()
}

/// The delivered state of one syncer.
#[derive(Debug, Clone)]
pub struct Cache {
    entries: HashMap<String, Entry>,
    /// Per prefix: the revision of its last listing (None: never listed).
    listed_at: Vec<Option<Revision>>,
}

impl Cache {
    pub fn new(prefixes: usize) -> Self {
        Cache {
            entries: HashMap::new(),
            listed_at: vec![None; prefixes],
        }
    }

    /// How many keys are held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether every prefix has been listed.
    pub fn listed(&self) -> bool {
        self.listed_at.iter().all(Option::is_some)
    }

    /// Forgets every key and listing (before delivering everything again).
    pub fn clear(&mut self) {
        self.entries.clear();
        self.listed_at.iter_mut().for_each(|l| *l = None);
    }

    /// Takes a put; `Some` when it is news.
    fn put(&mut self, prefix: usize, kv: KeyValue) -> Option<Event> {
        let entry = Entry {
            prefix,
            mod_revision: kv.mod_revision,
            hash: hash(&kv.value),
        };
        match self.entries.get_mut(&kv.key) {
            Some(e) if *e == entry => None,
            Some(e) => {
                *e = entry;
                Some(Event::Put(kv))
            }
            None => {
                self.entries.insert(kv.key.clone(), entry);
                Some(Event::Put(kv))
            }
        }
    }

    /// A full listing of prefix `prefix`, filtered by `wants`: the puts
    /// for keys new or changed, then deletions for the keys of this prefix
    /// the listing no longer shows.
    pub fn listing(
        &mut self,
        prefix: usize,
        listing: Listing,
        wants: impl Fn(&str) -> bool,
    ) -> Vec<Event> {
        let revision = listing.revision;
        self.listed_at[prefix] = Some(revision);
        let mut out = Vec::new();
        let mut seen = std::collections::HashSet::with_capacity(listing.items.len());
        for kv in listing.items {
            if !wants(&kv.key) {
                continue;
            }
            seen.insert(kv.key.clone());
            out.extend(self.put(prefix, kv));
        }
        let mut gone: Vec<String> = self
            .entries
            .iter()
            .filter(|(k, e)| e.prefix == prefix && !seen.contains(k.as_str()))
            .map(|(k, _)| k.clone())
            .collect();
        gone.sort();
        for key in gone {
            self.entries.remove(&key);
            out.push(Event::Delete {
                key,
                mod_revision: revision,
            });
        }
        out
    }

    /// One watch event of prefix `prefix`; `Some` when it is news.
    pub fn event(
        &mut self,
        prefix: usize,
        ev: Event,
        wants: impl Fn(&str) -> bool,
    ) -> Option<Event> {
        if self.listed_at[prefix].is_some_and(|at| ev.revision() <= at) || !wants(ev.key()) {
            return None;
        }
        match ev {
            Event::Put(kv) => self.put(prefix, kv),
            Event::Delete { key, mod_revision } => self
                .entries
                .remove(&key)
                .map(|_| Event::Delete { key, mod_revision }),
        }
    }

    /// A key the fan-out sent as part of a snapshot (no prefix numbers on
    /// the wire: every key is prefix 0, and `sweep` ends the snapshot).
    pub fn snapshot_put(
        &mut self,
        kv: KeyValue,
        seen: &mut std::collections::HashSet<String>,
    ) -> Option<Event> {
        seen.insert(kv.key.clone());
        self.put(0, kv)
    }

    /// Ends a snapshot: deletions for every key it did not show.
    pub fn sweep(
        &mut self,
        seen: &std::collections::HashSet<String>,
        revision: Revision,
    ) -> Vec<Event> {
        let mut gone: Vec<String> = self
            .entries
            .keys()
            .filter(|k| !seen.contains(k.as_str()))
            .cloned()
            .collect();
        gone.sort();
        gone.into_iter()
            .map(|key| {
                self.entries.remove(&key);
                Event::Delete {
                    key,
                    mod_revision: revision,
                }
            })
            .collect()
    }

    /// A change the fan-out streamed after its snapshot; `Some` when news.
    pub fn streamed(&mut self, ev: Event) -> Option<Event> {
        match ev {
            Event::Put(kv) => self.put(0, kv),
            Event::Delete { key, mod_revision } => self
                .entries
                .remove(&key)
                .map(|_| Event::Delete { key, mod_revision }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn kv(key: &str, value: &str, rev: Revision) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: value.as_bytes().to_vec(),
            create_revision: rev,
            mod_revision: rev,
        }
    }

    fn all(_: &str) -> bool {
        true
    }

    #[test]
    fn a_relisting_delivers_only_the_differences() {
        let mut c = Cache::new(2);
        let first = c.listing(
            0,
            Listing {
                items: vec![kv("/a/1", "x", 1), kv("/a/2", "y", 2)],
                revision: 2,
            },
            all,
        );
        assert_eq!(first.len(), 2);
        assert!(!c.listed());
        assert!(
            c.listing(
                1,
                Listing {
                    items: vec![kv("/b/1", "z", 3)],
                    revision: 3
                },
                all
            )
            .len()
                == 1
        );
        assert!(c.listed());
        // The watch broke; meanwhile /a/1 changed, /a/2 went, /a/3 came.
        let again = c.listing(
            0,
            Listing {
                items: vec![kv("/a/1", "x2", 5), kv("/a/3", "w", 6)],
                revision: 7,
            },
            all,
        );
        assert_eq!(
            again,
            vec![
                Event::Put(kv("/a/1", "x2", 5)),
                Event::Put(kv("/a/3", "w", 6)),
                Event::Delete {
                    key: "/a/2".into(),
                    mod_revision: 7
                },
            ]
        );
        // The other prefix's keys are untouched by it.
        assert_eq!(c.len(), 3);
        // Events the listing already holds are skipped; later ones are not.
        assert_eq!(c.event(0, Event::Put(kv("/a/1", "x2", 5)), all), None);
        assert_eq!(
            c.event(
                0,
                Event::Delete {
                    key: "/a/3".into(),
                    mod_revision: 8
                },
                all
            ),
            Some(Event::Delete {
                key: "/a/3".into(),
                mod_revision: 8
            })
        );
        assert_eq!(
            c.event(
                0,
                Event::Delete {
                    key: "/a/3".into(),
                    mod_revision: 9
                },
                all
            ),
            None
        );
    }

    #[test]
    fn a_rewound_datastore_with_new_values_is_noticed() {
        let mut c = Cache::new(1);
        c.listing(
            0,
            Listing {
                items: vec![kv("/a", "old", 4)],
                revision: 4,
            },
            all,
        );
        c.clear();
        let after = c.listing(
            0,
            Listing {
                items: vec![kv("/a", "old", 4)],
                revision: 4,
            },
            all,
        );
        assert_eq!(after.len(), 1, "a cleared cache delivers everything again");
        let restored = c.listing(
            0,
            Listing {
                items: vec![kv("/a", "new", 4)],
                revision: 4,
            },
            all,
        );
        assert_eq!(restored, vec![Event::Put(kv("/a", "new", 4))]);
    }

    #[test]
    fn a_snapshot_sweeps_what_it_did_not_show() {
        let mut c = Cache::new(1);
        let mut seen = Default::default();
        assert!(c.snapshot_put(kv("/a", "1", 1), &mut seen).is_some());
        assert!(c.snapshot_put(kv("/b", "1", 2), &mut seen).is_some());
        assert!(c.sweep(&seen, 2).is_empty());
        let mut seen = Default::default();
        assert!(c.snapshot_put(kv("/a", "1", 1), &mut seen).is_none());
        assert_eq!(
            c.sweep(&seen, 9),
            vec![Event::Delete {
                key: "/b".into(),
                mod_revision: 9
            }]
        );
    }

    /// One step of a random history of one prefix.
    #[derive(Debug, Clone)]
    enum Step {
        Put(u8, u8),
        Delete(u8),
        /// The watch breaks; the next listing comes after this many more steps.
        Break,
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            4 => (0u8..6, 0u8..3).prop_map(|(k, v)| Step::Put(k, v)),
            2 => (0u8..6).prop_map(Step::Delete),
            1 => Just(Step::Break),
        ]
    }

    proptest! {
        /// Whatever breaks and relistings happen, applying what the cache
        /// delivers to an empty map gives the datastore's state, and no
        /// delivery is a no-op (nothing delivered twice).
        #[test]
        fn deliveries_rebuild_the_datastore(steps in proptest::collection::vec(step(), 0..60)) {
            let mut store: BTreeMap<String, (String, Revision)> = BTreeMap::new();
            let mut rev: Revision = 0;
            let mut c = Cache::new(1);
            let mut consumer: BTreeMap<String, (String, Revision)> = BTreeMap::new();
            let deliver = |evs: Vec<Event>, consumer: &mut BTreeMap<String, (String, Revision)>| {
                for ev in evs {
                    match ev {
                        Event::Put(kv) => {
                            let v = (String::from_utf8(kv.value).expect("utf8"), kv.mod_revision);
                            let old = consumer.insert(kv.key, v.clone());
                            prop_assert_ne!(old, Some(v), "delivered twice");
                        }
                        Event::Delete { key, .. } => {
                            prop_assert!(consumer.remove(&key).is_some(), "deleted twice");
                        }
                    }
                }
                Ok(())
            };
            let list = |store: &BTreeMap<String, (String, Revision)>, rev| Listing {
                items: store.iter().map(|(k, (v, r))| kv(k, v, *r)).collect(),
                revision: rev,
            };
            deliver(c.listing(0, list(&store, rev), all), &mut consumer)?;
            let mut broken = false;
            for s in steps {
                match s {
                    Step::Put(k, v) => {
                        rev += 1;
                        let key = format!("/k/{k}");
                        store.insert(key.clone(), (v.to_string(), rev));
                        if !broken {
                            deliver(c.event(0, Event::Put(kv(&key, &v.to_string(), rev)), all).into_iter().collect(), &mut consumer)?;
                        }
                    }
                    Step::Delete(k) => {
                        let key = format!("/k/{k}");
                        if store.remove(&key).is_some() {
                            rev += 1;
                            if !broken {
                                deliver(c.event(0, Event::Delete { key, mod_revision: rev }, all).into_iter().collect(), &mut consumer)?;
                            }
                        }
                    }
                    Step::Break if broken => {
                        deliver(c.listing(0, list(&store, rev), all), &mut consumer)?;
                        broken = false;
                    }
                    Step::Break => broken = true,
                }
            }
            deliver(c.listing(0, list(&store, rev), all), &mut consumer)?;
            let want: BTreeMap<String, (String, Revision)> = store;
            prop_assert_eq!(consumer, want);
        }
    }
}
