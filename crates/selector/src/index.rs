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

use crate::{Expr, Labels, Selector};
use std::collections::{BTreeMap, BTreeSet};

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

#[derive(Debug, Clone, Default)]
struct Item {
    labels: BTreeMap<String, String>,
    parents: Vec<String>,
    effective: BTreeMap<String, String>,
}

struct View<'a>(&'a BTreeMap<String, String>);

impl Labels for View<'_> {
    fn label(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }
}

#[derive(Debug, Clone)]
pub struct LabelIndex<S: Ord + Clone, I: Ord + Clone> {
    selectors: BTreeMap<S, (Selector, Anchor)>,
    anchored_kv: BTreeMap<(String, String), BTreeSet<S>>,
    anchored_key: BTreeMap<String, BTreeSet<S>>,
    unanchored: BTreeSet<S>,
    items: BTreeMap<I, Item>,
    /// key -> value -> items (nested, so lookups by `&str` clone nothing).
    items_kv: BTreeMap<String, BTreeMap<String, BTreeSet<I>>>,
    items_key: BTreeMap<String, BTreeSet<I>>,
    parents: BTreeMap<String, BTreeMap<String, String>>,
    children: BTreeMap<String, BTreeSet<I>>,
    by_selector: BTreeMap<S, BTreeSet<I>>,
    by_item: BTreeMap<I, BTreeSet<S>>,
}

impl<S: Ord + Clone, I: Ord + Clone> Default for LabelIndex<S, I> {
    fn default() -> Self {
        LabelIndex {
            selectors: BTreeMap::new(),
            anchored_kv: BTreeMap::new(),
            anchored_key: BTreeMap::new(),
            unanchored: BTreeSet::new(),
            items: BTreeMap::new(),
            items_kv: BTreeMap::new(),
            items_key: BTreeMap::new(),
            parents: BTreeMap::new(),
            children: BTreeMap::new(),
            by_selector: BTreeMap::new(),
            by_item: BTreeMap::new(),
        }
    }
}

fn remove_from<K: Ord, V: Ord>(map: &mut BTreeMap<K, BTreeSet<V>>, key: &K, value: &V) {
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

    fn effective_of(
        &self,
        labels: &BTreeMap<String, String>,
        parents: &[String],
    ) -> BTreeMap<String, String> {
        let mut eff = BTreeMap::new();
        for p in parents.iter().rev() {
            if let Some(l) = self.parents.get(p) {
                eff.extend(l.iter().map(|(k, v)| (k.clone(), v.clone())));
            }
        }
        eff.extend(labels.iter().map(|(k, v)| (k.clone(), v.clone())));
        eff
    }

    fn index_labels(&mut self, i: &I, labels: &BTreeMap<String, String>, add: bool) {
        for (k, v) in labels {
            if add {
                let values = match self.items_kv.get_mut(k.as_str()) {
                    Some(values) => values,
                    None => self.items_kv.entry(k.clone()).or_default(),
                };
                match values.get_mut(v.as_str()) {
                    Some(items) => {
                        items.insert(i.clone());
                    }
                    None => {
                        values.insert(v.clone(), BTreeSet::from([i.clone()]));
                    }
                }
                match self.items_key.get_mut(k.as_str()) {
                    Some(items) => {
                        items.insert(i.clone());
                    }
                    None => {
                        self.items_key
                            .insert(k.clone(), BTreeSet::from([i.clone()]));
                    }
                }
            } else {
                if let Some(values) = self.items_kv.get_mut(k.as_str()) {
                    remove_from(values, v, i);
                    if values.is_empty() {
                        self.items_kv.remove(k.as_str());
                    }
                }
                remove_from(&mut self.items_key, k, i);
            }
        }
    }

    /// The items carrying label `k` = `v`.
    fn items_with(&self, k: &str, v: &str) -> Option<&BTreeSet<I>> {
        self.items_kv.get(k)?.get(v)
    }

    fn set_match(&mut self, s: &S, i: &I, matched: bool, events: &mut Vec<MatchEvent<S, I>>) {
        let was = self.by_selector.get(s).is_some_and(|set| set.contains(i));
        if matched && !was {
            self.by_selector
                .entry(s.clone())
                .or_default()
                .insert(i.clone());
            self.by_item.entry(i.clone()).or_default().insert(s.clone());
            events.push(MatchEvent::Started(s.clone(), i.clone()));
        } else if !matched && was {
            remove_from(&mut self.by_selector, s, i);
            remove_from(&mut self.by_item, i, s);
            events.push(MatchEvent::Stopped(s.clone(), i.clone()));
        }
    }

    /// Re-evaluates the selectors that could match item `i` (or did).
    fn reevaluate_item(&mut self, i: &I, events: &mut Vec<MatchEvent<S, I>>) {
        let mut candidates: BTreeSet<S> = self.by_item.get(i).cloned().unwrap_or_default();
        if let Some(item) = self.items.get(i) {
            candidates.extend(self.unanchored.iter().cloned());
            for (k, v) in &item.effective {
                candidates.extend(
                    self.anchored_kv
                        .get(&(k.clone(), v.clone()))
                        .into_iter()
                        .flatten()
                        .cloned(),
                );
                candidates.extend(self.anchored_key.get(k).into_iter().flatten().cloned());
            }
        }
        for s in candidates {
            let matched = match (self.items.get(i), self.selectors.get(&s)) {
                (Some(item), Some((sel, _))) => sel.matches(&View(&item.effective)),
                _ => false,
            };
            self.set_match(&s, i, matched, events);
        }
    }

    fn unanchor(&mut self, id: &S) {
        if let Some((_, a)) = self.selectors.get(id) {
            match a.clone() {
                Anchor::KeyValue(k, v) => remove_from(&mut self.anchored_kv, &(k, v), id),
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
        let mut candidates: BTreeSet<I> = self.by_selector.get(&id).cloned().unwrap_or_default();
        match &a {
            Anchor::KeyValue(k, v) => {
                self.anchored_kv
                    .entry((k.clone(), v.clone()))
                    .or_default()
                    .insert(id.clone());
                candidates.extend(self.items_with(k, v).into_iter().flatten().cloned());
            }
            Anchor::Key(k) => {
                self.anchored_key
                    .entry(k.clone())
                    .or_default()
                    .insert(id.clone());
                candidates.extend(self.items_key.get(k).into_iter().flatten().cloned());
            }
            Anchor::None => {
                self.unanchored.insert(id.clone());
                candidates.extend(self.items.keys().cloned());
            }
        }
        let mut events = Vec::new();
        for i in candidates {
            let matched = self
                .items
                .get(&i)
                .is_some_and(|item| selector.matches(&View(&item.effective)));
            self.set_match(&id, &i, matched, &mut events);
        }
        self.selectors.insert(id, (selector, a));
        events
    }

    pub fn delete_selector(&mut self, id: &S) -> Vec<MatchEvent<S, I>> {
        self.unanchor(id);
        self.selectors.remove(id);
        let mut events = Vec::new();
        let matched: Vec<I> = self
            .by_selector
            .get(id)
            .into_iter()
            .flatten()
            .cloned()
            .collect();
        for i in matched {
            self.set_match(id, &i, false, &mut events);
        }
        events
    }

    /// Adds or changes an item: its own labels and its parents, in priority order.
    pub fn update_item(
        &mut self,
        id: I,
        labels: BTreeMap<String, String>,
        parents: Vec<String>,
    ) -> Vec<MatchEvent<S, I>> {
        if let Some(old) = self.items.remove(&id) {
            for p in &old.parents {
                remove_from(&mut self.children, p, &id);
            }
            self.index_labels(&id, &old.effective, false);
        }
        for p in &parents {
            self.children
                .entry(p.clone())
                .or_default()
                .insert(id.clone());
        }
        let effective = self.effective_of(&labels, &parents);
        self.index_labels(&id, &effective, true);
        self.items.insert(
            id.clone(),
            Item {
                labels,
                parents,
                effective,
            },
        );
        let mut events = Vec::new();
        self.reevaluate_item(&id, &mut events);
        events
    }

    pub fn delete_item(&mut self, id: &I) -> Vec<MatchEvent<S, I>> {
        if let Some(old) = self.items.remove(id) {
            for p in &old.parents {
                remove_from(&mut self.children, p, id);
            }
            self.index_labels(id, &old.effective, false);
        }
        let mut events = Vec::new();
        self.reevaluate_item(id, &mut events);
        events
    }

    /// Adds or changes a parent's labels (a profile's labelsToApply, a namespace's labels).
    pub fn update_parent(
        &mut self,
        id: &str,
        labels: BTreeMap<String, String>,
    ) -> Vec<MatchEvent<S, I>> {
        self.parents.insert(id.to_string(), labels);
        self.reevaluate_children(id)
    }

    pub fn delete_parent(&mut self, id: &str) -> Vec<MatchEvent<S, I>> {
        self.parents.remove(id);
        self.reevaluate_children(id)
    }

    fn reevaluate_children(&mut self, parent: &str) -> Vec<MatchEvent<S, I>> {
        let mut events = Vec::new();
        let children: Vec<I> = self
            .children
            .get(parent)
            .into_iter()
            .flatten()
            .cloned()
            .collect();
        for i in children {
            let Some(item) = self.items.get(&i) else {
                continue;
            };
            let old = item.effective.clone();
            let new = self.effective_of(&item.labels, &item.parents);
            self.index_labels(&i, &old, false);
            self.index_labels(&i, &new, true);
            if let Some(item) = self.items.get_mut(&i) {
                item.effective = new;
            }
            self.reevaluate_item(&i, &mut events);
        }
        events
    }

    /// The items a selector matches now.
    pub fn matches(&self, selector: &S) -> impl Iterator<Item = &I> {
        self.by_selector.get(selector).into_iter().flatten()
    }

    /// The selectors that match an item now.
    pub fn selectors_of(&self, item: &I) -> impl Iterator<Item = &S> {
        self.by_item.get(item).into_iter().flatten()
    }

    /// An item's effective label, as selectors see it.
    pub fn label_of(&self, item: &I, key: &str) -> Option<&str> {
        self.items
            .get(item)
            .and_then(|it| it.effective.get(key))
            .map(String::as_str)
    }
}
