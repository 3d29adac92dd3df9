//! The label index: which items (endpoints, network sets) each selector
//! matches, kept up to date incrementally, with labels inherited from
//! parents (profiles, namespaces).
//!
//! An item's effective labels are its parents' labels, earlier parents
//! winning over later ones, overridden by the item's own labels. Every
//! change returns exactly the (selector, item) matches that started or
//! stopped. Costs: an item change evaluates every selector once; a selector
//! change evaluates every item once; a parent change re-evaluates its
//! children only.

use crate::{Labels, Selector};
use std::collections::{BTreeMap, BTreeSet};

/// A match between a selector and an item began or ended.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum MatchEvent<S, I> {
    Started(S, I),
    Stopped(S, I),
}

#[derive(Debug, Clone, Default)]
struct Item {
    labels: BTreeMap<String, String>,
    parents: Vec<String>,
}

/// An item's labels seen through its parents.
struct Effective<'a> {
    own: &'a BTreeMap<String, String>,
    parents: Vec<&'a BTreeMap<String, String>>,
}

impl Labels for Effective<'_> {
    fn label(&self, key: &str) -> Option<&str> {
        self.own
            .get(key)
            .or_else(|| self.parents.iter().find_map(|p| p.get(key)))
            .map(String::as_str)
    }
}

#[derive(Debug, Clone)]
pub struct LabelIndex<S: Ord + Clone, I: Ord + Clone> {
    selectors: BTreeMap<S, Selector>,
    items: BTreeMap<I, Item>,
    parents: BTreeMap<String, BTreeMap<String, String>>,
    children: BTreeMap<String, BTreeSet<I>>,
    by_selector: BTreeMap<S, BTreeSet<I>>,
    by_item: BTreeMap<I, BTreeSet<S>>,
}

impl<S: Ord + Clone, I: Ord + Clone> Default for LabelIndex<S, I> {
    fn default() -> Self {
        LabelIndex {
            selectors: BTreeMap::new(),
            items: BTreeMap::new(),
            parents: BTreeMap::new(),
            children: BTreeMap::new(),
            by_selector: BTreeMap::new(),
            by_item: BTreeMap::new(),
        }
    }
}

static EMPTY: BTreeMap<String, String> = BTreeMap::new();

impl<S: Ord + Clone, I: Ord + Clone> LabelIndex<S, I> {
    pub fn new() -> Self {
        Self::default()
    }

    fn effective<'a>(&'a self, item: &'a Item) -> Effective<'a> {
        Effective {
            own: &item.labels,
            parents: item
                .parents
                .iter()
                .map(|p| self.parents.get(p).unwrap_or(&EMPTY))
                .collect(),
        }
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
            if let Some(set) = self.by_selector.get_mut(s) {
                set.remove(i);
                if set.is_empty() {
                    self.by_selector.remove(s);
                }
            }
            if let Some(set) = self.by_item.get_mut(i) {
                set.remove(s);
                if set.is_empty() {
                    self.by_item.remove(i);
                }
            }
            events.push(MatchEvent::Stopped(s.clone(), i.clone()));
        }
    }

    /// Evaluates every selector against one item.
    fn reevaluate_item(&mut self, i: &I, events: &mut Vec<MatchEvent<S, I>>) {
        let results: Vec<(S, bool)> = match self.items.get(i) {
            Some(item) => {
                let labels = self.effective(item);
                self.selectors
                    .iter()
                    .map(|(s, sel)| (s.clone(), sel.matches(&labels)))
                    .collect()
            }
            None => self
                .by_item
                .get(i)
                .into_iter()
                .flatten()
                .map(|s| (s.clone(), false))
                .collect(),
        };
        for (s, m) in results {
            self.set_match(&s, i, m, events);
        }
    }

    /// Adds or changes a selector.
    pub fn update_selector(&mut self, id: S, selector: Selector) -> Vec<MatchEvent<S, I>> {
        let mut events = Vec::new();
        let results: Vec<(I, bool)> = self
            .items
            .iter()
            .map(|(i, item)| (i.clone(), selector.matches(&self.effective(item))))
            .collect();
        self.selectors.insert(id.clone(), selector);
        for (i, m) in results {
            self.set_match(&id, &i, m, &mut events);
        }
        events
    }

    pub fn delete_selector(&mut self, id: &S) -> Vec<MatchEvent<S, I>> {
        let mut events = Vec::new();
        self.selectors.remove(id);
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
        if let Some(old) = self.items.get(&id) {
            for p in &old.parents {
                if let Some(set) = self.children.get_mut(p) {
                    set.remove(&id);
                }
            }
        }
        for p in &parents {
            self.children
                .entry(p.clone())
                .or_default()
                .insert(id.clone());
        }
        self.items.insert(id.clone(), Item { labels, parents });
        let mut events = Vec::new();
        self.reevaluate_item(&id, &mut events);
        events
    }

    pub fn delete_item(&mut self, id: &I) -> Vec<MatchEvent<S, I>> {
        if let Some(old) = self.items.remove(id) {
            for p in &old.parents {
                if let Some(set) = self.children.get_mut(p) {
                    set.remove(id);
                    if set.is_empty() {
                        self.children.remove(p);
                    }
                }
            }
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
        self.items.get(item).and_then(|it| {
            it.labels
                .get(key)
                .or_else(|| {
                    it.parents
                        .iter()
                        .find_map(|p| self.parents.get(p)?.get(key))
                })
                .map(String::as_str)
        })
    }
}
