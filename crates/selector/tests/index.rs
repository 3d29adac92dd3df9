//! The label index agrees with brute force after any sequence of changes,
//! and its events are exactly the difference between consecutive states.

use calico_selector::{LabelIndex, Labels, MatchEvent, Selector};
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Clone)]
enum Op {
    Selector(u8, usize),
    DeleteSelector(u8),
    Item(u8, BTreeMap<String, String>, Vec<u8>),
    DeleteItem(u8),
    Parent(u8, BTreeMap<String, String>),
    DeleteParent(u8),
}

const SELECTORS: &[&str] = &[
    "all()",
    "a == 'x'",
    "has(b)",
    "a != 'x' && has(c)",
    "b in {'x', 'y'} || c == 'z'",
    "!has(a)",
    "pcns.team == 'x'",
];

fn labels() -> impl Strategy<Value = BTreeMap<String, String>> {
    prop::collection::btree_map(
        prop_oneof![
            Just("a".to_string()),
            Just("b".into()),
            Just("c".into()),
            Just("pcns.team".into())
        ],
        prop_oneof![Just("x".to_string()), Just("y".into()), Just("z".into())],
        0..3,
    )
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u8..4, 0..SELECTORS.len()).prop_map(|(s, i)| Op::Selector(s, i)),
        (0u8..4).prop_map(Op::DeleteSelector),
        (0u8..6, labels(), prop::collection::vec(0u8..3, 0..3))
            .prop_map(|(i, l, p)| Op::Item(i, l, p)),
        (0u8..6).prop_map(Op::DeleteItem),
        (0u8..3, labels()).prop_map(|(p, l)| Op::Parent(p, l)),
        (0u8..3).prop_map(Op::DeleteParent),
    ]
}

/// The reference: recompute every match from scratch.
#[derive(Default)]
struct Model {
    selectors: BTreeMap<u8, Selector>,
    items: BTreeMap<u8, (BTreeMap<String, String>, Vec<u8>)>,
    parents: BTreeMap<u8, BTreeMap<String, String>>,
}

struct View<'a>(BTreeMap<String, String>, std::marker::PhantomData<&'a ()>);
impl Labels for View<'_> {
    fn label(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }
}

impl Model {
    fn matches(&self) -> BTreeSet<(u8, u8)> {
        let mut out = BTreeSet::new();
        for (i, (own, parents)) in &self.items {
            let mut eff = BTreeMap::new();
            for p in parents.iter().rev() {
                if let Some(l) = self.parents.get(p) {
                    eff.extend(l.clone());
                }
            }
            eff.extend(own.clone());
            let view = View(eff, std::marker::PhantomData);
            for (s, sel) in &self.selectors {
                if sel.matches(&view) {
                    out.insert((*s, *i));
                }
            }
        }
        out
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    #[test]
    fn index_agrees_with_brute_force(ops in prop::collection::vec(op(), 1..40)) {
        let mut index: LabelIndex<u8, u8> = LabelIndex::new();
        let mut model = Model::default();
        let mut before = BTreeSet::new();
        for op in ops {
            let events = match op {
                Op::Selector(s, i) => {
                    let sel = Selector::parse(SELECTORS[i]).unwrap();
                    model.selectors.insert(s, sel.clone());
                    index.update_selector(s, sel)
                }
                Op::DeleteSelector(s) => {
                    model.selectors.remove(&s);
                    index.delete_selector(&s)
                }
                Op::Item(i, l, p) => {
                    model.items.insert(i, (l.clone(), p.clone()));
                    index.update_item(i, l, p.iter().map(|p| format!("p{p}")).collect())
                }
                Op::DeleteItem(i) => {
                    model.items.remove(&i);
                    index.delete_item(&i)
                }
                Op::Parent(p, l) => {
                    model.parents.insert(p, l.clone());
                    index.update_parent(&format!("p{p}"), l)
                }
                Op::DeleteParent(p) => {
                    model.parents.remove(&p);
                    index.delete_parent(&format!("p{p}"))
                }
            };
            let after = model.matches();
            let mut expected: Vec<MatchEvent<u8, u8>> = after.difference(&before).map(|(s, i)| MatchEvent::Started(*s, *i)).collect();
            expected.extend(before.difference(&after).map(|(s, i)| MatchEvent::Stopped(*s, *i)));
            let mut got = events;
            got.sort();
            expected.sort();
            prop_assert_eq!(got, expected);
            for s in 0u8..4 {
                let via_index: BTreeSet<u8> = index.matches(&s).copied().collect();
                let via_model: BTreeSet<u8> = after.iter().filter(|(ms, _)| *ms == s).map(|(_, i)| *i).collect();
                prop_assert_eq!(via_index, via_model);
            }
            before = after;
        }
    }
}

#[test]
fn own_labels_override_parents_and_first_parent_wins() {
    let mut index: LabelIndex<&str, &str> = LabelIndex::new();
    index.update_parent(
        "kns.shop",
        BTreeMap::from([("team".into(), "web".into()), ("tier".into(), "ns".into())]),
    );
    index.update_parent(
        "ksa.shop.api",
        BTreeMap::from([("tier".into(), "sa".into())]),
    );
    index.update_item(
        "ep",
        BTreeMap::from([("app".into(), "api".into())]),
        vec!["kns.shop".into(), "ksa.shop.api".into()],
    );
    assert_eq!(index.label_of(&"ep", "tier"), Some("ns"));
    let ev = index.update_selector(
        "s",
        Selector::parse("team == 'web' && app == 'api'").unwrap(),
    );
    assert_eq!(ev, vec![MatchEvent::Started("s", "ep")]);
    let ev = index.update_parent("kns.shop", BTreeMap::new());
    assert_eq!(ev, vec![MatchEvent::Stopped("s", "ep")]);
}
