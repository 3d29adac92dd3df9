//! The label index: which items (endpoints, network sets) each selector
//! matches, kept up to date incrementally, with labels inherited from
//! parents (profiles, namespaces).
//!
//! An item's effective labels are its parents' labels, earlier parents
//! winning over later ones, overridden by the item's own labels. Every
//! change returns exactly the (selector, item) matches that started or
//! stopped.
//!
//! Cost: each selector has an *anchor*, a label that any matching item must
//! carry (`app == 'web'` in `app == 'web' && tier != 'db'`), and items are
//! indexed by their labels. A selector change evaluates only the items with
//! its anchor; an item change evaluates only the selectors anchored on one
//! of its labels, plus the few with no anchor. So with 10,000 selectors and
//! 100,000 items, one change costs a handful of evaluations, not millions.
//!
//! Memory: items are numbered inside the index (its sets hold 4-byte ids,
//! not copies of the caller's keys), and label keys and values are
//! interned (every endpoint labelled `app=web` shares one `app` and one
//! `web`); strings no item uses any more are dropped as the index shrinks.

use crate::{Expr, Labels, Selector};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::intern::{Interner, Str};
/// An item's number inside the index.
type Id = u32;
type Interned = BTreeMap<Str, Str>;

/// A match between a selector and an item began or ended.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum MatchEvent<S, I> {
    Started(S, I),
    Stopped(S, I),
}

/// A label every item a selector matches must have.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Anchor {
    KeyValue(String, String),
    Key(String),
    None,
}

/// The label a selector is indexed under: one every match must carry.
/// Among several required `key == value` labels the one carried by the
/// fewest items now wins (`count`); on a tie the later one, since scoping
/// puts broad terms (namespace) first and the selector's own terms last.
fn anchor(e: &Expr, count: &dyn Fn(&str, &str) -> usize) -> Anchor {
    match e {
        Expr::Eq(k, v) => Anchor::KeyValue(k.clone(), v.clone()),
        Expr::In(k, vs) if vs.len() == 1 => {
            Anchor::KeyValue(k.clone(), vs.iter().next().cloned().unwrap_or_default())
        }
        Expr::Has(k)
        | Expr::In(k, _)
        | Expr::Contains(k, _)
        | Expr::StartsWith(k, _)
        | Expr::EndsWith(k, _) => Anchor::Key(k.clone()),
        Expr::And(ops) => {
            let anchors: Vec<Anchor> = ops.iter().map(|o| anchor(o, count)).collect();
            anchors
                .iter()
                .enumerate()
                .filter_map(|(n, a)| match a {
                    Anchor::KeyValue(k, v) => Some((count(k, v), std::cmp::Reverse(n), a)),
                    _ => None,
                })
                .min_by_key(|(c, n, _)| (*c, *n))
                .map(|(_, _, a)| a)
                .or_else(|| anchors.iter().find(|a| matches!(a, Anchor::Key(_))))
                .cloned()
                .unwrap_or(Anchor::None)
        }
        _ => Anchor::None,
    }
}

#[derive(Debug, Clone)]
struct Item<I> {
    key: I,
    /// Its own labels, sorted by key (a slice: a map's node would be
    /// mostly empty for the handful of labels an endpoint has).
    labels: Box<[(Str, Str)]>,
    parents: Box<[Str]>,
    /// False while a deleted item's matches are being undone.
    alive: bool,
}

/// An item's effective labels as selectors see them, looked up through
/// its own labels, then its parents' in order (never materialised).
struct View<'a> {
    own: &'a [(Str, Str)],
    parents: &'a [Str],
    parent_labels: &'a BTreeMap<Str, Interned>,
}

impl<'a> View<'a> {
    fn get(&self, key: &str) -> Option<&'a str> {
        if let Ok(i) = self.own.binary_search_by(|(k, _)| (**k).cmp(key)) {
            return Some(&self.own[i].1);
        }
        let parent_labels = self.parent_labels;
        self.parents
            .iter()
            .find_map(|p| parent_labels.get(p)?.get(key))
            .map(|v| &**v)
    }
}

impl Labels for View<'_> {
    fn label(&self, key: &str) -> Option<&str> {
        self.get(key)
    }
}

#[derive(Debug, Clone)]
pub struct LabelIndex<S: Ord + Clone, I: Ord + Clone> {
    selectors: BTreeMap<S, (Selector, Anchor)>,
    /// key -> value -> selectors anchored there.
    anchored_kv: BTreeMap<String, BTreeMap<String, BTreeSet<S>>>,
    anchored_key: BTreeMap<String, BTreeSet<S>>,
    unanchored: BTreeSet<S>,
    ids: BTreeMap<I, Id>,
    /// By id; None for a free number.
    items: Vec<Option<Item<I>>>,
    free: Vec<Id>,
    /// key -> value -> items (nested, so lookups by `&str` clone nothing).
    items_kv: BTreeMap<Str, BTreeMap<Str, BTreeSet<Id>>>,
    items_key: BTreeMap<Str, BTreeSet<Id>>,
    parents: BTreeMap<Str, Interned>,
    children: BTreeMap<Str, BTreeSet<Id>>,
    by_selector: BTreeMap<S, BTreeSet<Id>>,
    by_item: BTreeMap<Id, BTreeSet<S>>,
    strings: Interner,
}

impl<S: Ord + Clone, I: Ord + Clone> Default for LabelIndex<S, I> {
    fn default() -> Self {
        LabelIndex {
            selectors: BTreeMap::new(),
            anchored_kv: BTreeMap::new(),
            anchored_key: BTreeMap::new(),
            unanchored: BTreeSet::new(),
            ids: BTreeMap::new(),
            items: Vec::new(),
            free: Vec::new(),
            items_kv: BTreeMap::new(),
            items_key: BTreeMap::new(),
            parents: BTreeMap::new(),
            children: BTreeMap::new(),
            by_selector: BTreeMap::new(),
            by_item: BTreeMap::new(),
            strings: Interner::new(),
        }
    }
}

fn remove_from<K, V, Q>(map: &mut BTreeMap<K, BTreeSet<V>>, key: &Q, value: &V)
where
    K: Ord + std::borrow::Borrow<Q>,
    V: Ord,
    Q: Ord + ?Sized,
{
    if let Some(set) = map.get_mut(key) {
        set.remove(value);
        if set.is_empty() {
            map.remove(key);
        }
    }
}

impl<S: Ord + Clone, I: Ord + Clone> LabelIndex<S, I> {
    pub fn new() -> Self {
        Self::default()
    }

    fn intern(&mut self, s: &str) -> Str {
        self.strings.intern(s)
    }

    fn intern_map(&mut self, labels: &BTreeMap<String, String>) -> Interned {
        labels
            .iter()
            .map(|(k, v)| (self.intern(k), self.intern(v)))
            .collect()
    }

    fn sweep(&mut self) {
        self.strings.sweep();
    }

    fn item(&self, id: Id) -> Option<&Item<I>> {
        self.items.get(id as usize).and_then(Option::as_ref)
    }

    fn key_of(&self, id: Id) -> Option<&I> {
        self.item(id).map(|it| &it.key)
    }

    /// An item's effective labels, built (for indexing them).
    fn effective_of(&self, labels: &[(Str, Str)], parents: &[Str]) -> Interned {
        let mut eff = BTreeMap::new();
        for p in parents.iter().rev() {
            if let Some(l) = self.parents.get(p) {
                eff.extend(l.iter().map(|(k, v)| (Arc::clone(k), Arc::clone(v))));
            }
        }
        eff.extend(labels.iter().map(|(k, v)| (Arc::clone(k), Arc::clone(v))));
        eff
    }

    fn view<'a>(&'a self, item: &'a Item<I>) -> View<'a> {
        View {
            own: &item.labels,
            parents: &item.parents,
            parent_labels: &self.parents,
        }
    }

    fn index_labels(&mut self, id: Id, labels: &Interned, add: bool) {
        for (k, v) in labels {
            if add {
                self.items_kv
                    .entry(Arc::clone(k))
                    .or_default()
                    .entry(Arc::clone(v))
                    .or_default()
                    .insert(id);
                self.items_key.entry(Arc::clone(k)).or_default().insert(id);
            } else {
                if let Some(values) = self.items_kv.get_mut(k) {
                    remove_from(values, &**v, &id);
                    if values.is_empty() {
                        self.items_kv.remove(k);
                    }
                }
                remove_from(&mut self.items_key, &**k, &id);
            }
        }
    }

    /// The items carrying label `k` = `v`.
    fn items_with(&self, k: &str, v: &str) -> Option<&BTreeSet<Id>> {
        self.items_kv.get(k)?.get(v)
    }

    fn set_match(&mut self, s: &S, id: Id, matched: bool, events: &mut Vec<MatchEvent<S, I>>) {
        let was = self.by_selector.get(s).is_some_and(|set| set.contains(&id));
        let Some(key) = self.key_of(id).cloned() else {
            return;
        };
        if matched && !was {
            self.by_selector.entry(s.clone()).or_default().insert(id);
            self.by_item.entry(id).or_default().insert(s.clone());
            events.push(MatchEvent::Started(s.clone(), key));
        } else if !matched && was {
            remove_from(&mut self.by_selector, s, &id);
            remove_from(&mut self.by_item, &id, s);
            events.push(MatchEvent::Stopped(s.clone(), key));
        }
    }

    /// Re-evaluates the selectors that could match item `id` (or did).
    fn reevaluate_item(&mut self, id: Id, events: &mut Vec<MatchEvent<S, I>>) {
        let mut candidates: BTreeSet<S> = self.by_item.get(&id).cloned().unwrap_or_default();
        if let Some(item) = self.item(id).filter(|it| it.alive) {
            candidates.extend(self.unanchored.iter().cloned());
            for (k, v) in &self.effective_of(&item.labels, &item.parents) {
                if let Some(values) = self.anchored_kv.get(&**k) {
                    candidates.extend(values.get(&**v).into_iter().flatten().cloned());
                }
                candidates.extend(self.anchored_key.get(&**k).into_iter().flatten().cloned());
            }
        }
        for s in candidates {
            let matched = match (self.item(id).filter(|it| it.alive), self.selectors.get(&s)) {
                (Some(item), Some((sel, _))) => sel.matches(&self.view(item)),
                _ => false,
            };
            self.set_match(&s, id, matched, events);
        }
    }

    fn unanchor(&mut self, id: &S) {
        if let Some((_, a)) = self.selectors.get(id) {
            match a.clone() {
                Anchor::KeyValue(k, v) => {
                    if let Some(values) = self.anchored_kv.get_mut(&k) {
                        remove_from(values, &v, id);
                        if values.is_empty() {
                            self.anchored_kv.remove(&k);
                        }
                    }
                }
                Anchor::Key(k) => remove_from(&mut self.anchored_key, &k, id),
                Anchor::None => {
                    self.unanchored.remove(id);
                }
            }
        }
    }

    /// Adds or changes a selector.
    pub fn update_selector(&mut self, id: S, selector: Selector) -> Vec<MatchEvent<S, I>> {
        self.unanchor(&id);
        let count = |k: &str, v: &str| self.items_with(k, v).map_or(0, BTreeSet::len);
        let a = anchor(selector.expr(), &count);
        let mut candidates: BTreeSet<Id> = self.by_selector.get(&id).cloned().unwrap_or_default();
        match &a {
            Anchor::KeyValue(k, v) => {
                self.anchored_kv
                    .entry(k.clone())
                    .or_default()
                    .entry(v.clone())
                    .or_default()
                    .insert(id.clone());
                candidates.extend(self.items_with(k, v).into_iter().flatten().copied());
            }
            Anchor::Key(k) => {
                self.anchored_key
                    .entry(k.clone())
                    .or_default()
                    .insert(id.clone());
                candidates.extend(
                    self.items_key
                        .get(k.as_str())
                        .into_iter()
                        .flatten()
                        .copied(),
                );
            }
            Anchor::None => {
                self.unanchored.insert(id.clone());
                candidates.extend(self.ids.values().copied());
            }
        }
        let mut events = Vec::new();
        for i in candidates {
            let matched = self
                .item(i)
                .filter(|it| it.alive)
                .is_some_and(|item| selector.matches(&self.view(item)));
            self.set_match(&id, i, matched, &mut events);
        }
        self.selectors.insert(id, (selector, a));
        events
    }

    pub fn delete_selector(&mut self, id: &S) -> Vec<MatchEvent<S, I>> {
        self.unanchor(id);
        self.selectors.remove(id);
        let mut events = Vec::new();
        let matched: Vec<Id> = self
            .by_selector
            .get(id)
            .into_iter()
            .flatten()
            .copied()
            .collect();
        for i in matched {
            self.set_match(id, i, false, &mut events);
        }
        events
    }

    /// Adds or changes an item: its own labels and its parents, in priority order.
    pub fn update_item(
        &mut self,
        key: I,
        labels: BTreeMap<String, String>,
        parents: Vec<String>,
    ) -> Vec<MatchEvent<S, I>> {
        let labels: Box<[(Str, Str)]> = self.intern_map(&labels).into_iter().collect();
        let parents: Box<[Str]> = parents.iter().map(|p| self.intern(p)).collect();
        let id = match self.ids.get(&key) {
            Some(&id) => {
                if let Some(old) = self.items.get_mut(id as usize).and_then(Option::take) {
                    for p in &old.parents {
                        remove_from(&mut self.children, &**p, &id);
                    }
                    let effective = self.effective_of(&old.labels, &old.parents);
                    self.index_labels(id, &effective, false);
                }
                id
            }
            None => {
                let id = self.free.pop().unwrap_or_else(|| {
                    self.items.push(None);
                    Id::try_from(self.items.len() - 1).unwrap_or(Id::MAX)
                });
                self.ids.insert(key.clone(), id);
                id
            }
        };
        for p in parents.iter() {
            self.children.entry(Arc::clone(p)).or_default().insert(id);
        }
        let effective = self.effective_of(&labels, &parents);
        self.index_labels(id, &effective, true);
        if let Some(slot) = self.items.get_mut(id as usize) {
            *slot = Some(Item {
                key,
                labels,
                parents,
                alive: true,
            });
        }
        let mut events = Vec::new();
        self.reevaluate_item(id, &mut events);
        self.sweep();
        events
    }

    pub fn delete_item(&mut self, key: &I) -> Vec<MatchEvent<S, I>> {
        let mut events = Vec::new();
        let Some(id) = self.ids.remove(key) else {
            return events;
        };
        let old = self
            .items
            .get_mut(id as usize)
            .and_then(Option::as_mut)
            .map(|it| {
                it.alive = false;
                (
                    std::mem::take(&mut it.labels),
                    std::mem::take(&mut it.parents),
                )
            });
        if let Some((labels, parents)) = old {
            for p in parents.iter() {
                remove_from(&mut self.children, &**p, &id);
            }
            let effective = self.effective_of(&labels, &parents);
            self.index_labels(id, &effective, false);
        }
        self.reevaluate_item(id, &mut events);
        if let Some(slot) = self.items.get_mut(id as usize) {
            *slot = None;
        }
        self.by_item.remove(&id);
        self.free.push(id);
        self.sweep();
        events
    }

    /// Adds or changes a parent's labels (a profile's labelsToApply, a namespace's labels).
    pub fn update_parent(
        &mut self,
        id: &str,
        labels: BTreeMap<String, String>,
    ) -> Vec<MatchEvent<S, I>> {
        let key = self.intern(id);
        let labels = self.intern_map(&labels);
        self.change_parent(id, Some((key, labels)))
    }

    pub fn delete_parent(&mut self, id: &str) -> Vec<MatchEvent<S, I>> {
        let events = self.change_parent(id, None);
        self.sweep();
        events
    }

    /// Sets or removes a parent's labels, re-indexing its children: their
    /// effective labels before the change come out, after it go in.
    fn change_parent(
        &mut self,
        parent: &str,
        new: Option<(Str, Interned)>,
    ) -> Vec<MatchEvent<S, I>> {
        let children: Vec<Id> = self
            .children
            .get(parent)
            .into_iter()
            .flatten()
            .copied()
            .collect();
        for &i in &children {
            if let Some(item) = self.item(i) {
                let old = self.effective_of(&item.labels, &item.parents);
                self.index_labels(i, &old, false);
            }
        }
        match new {
            Some((key, labels)) => {
                self.parents.insert(key, labels);
            }
            None => {
                self.parents.remove(parent);
            }
        }
        let mut events = Vec::new();
        for i in children {
            if let Some(item) = self.item(i) {
                let new = self.effective_of(&item.labels, &item.parents);
                self.index_labels(i, &new, true);
            }
            self.reevaluate_item(i, &mut events);
        }
        events
    }

    /// The items a selector matches now.
    pub fn matches(&self, selector: &S) -> impl Iterator<Item = &I> {
        self.by_selector
            .get(selector)
            .into_iter()
            .flatten()
            .filter_map(|&id| self.key_of(id))
    }

    /// The selectors that match an item now.
    pub fn selectors_of(&self, item: &I) -> impl Iterator<Item = &S> {
        self.ids
            .get(item)
            .and_then(|id| self.by_item.get(id))
            .into_iter()
            .flatten()
    }

    /// An item's effective label, as selectors see it.
    pub fn label_of(&self, item: &I, key: &str) -> Option<&str> {
        let id = *self.ids.get(item)?;
        let item = self.item(id)?;
        self.view(item).get(key)
    }
}
