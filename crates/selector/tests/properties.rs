//! Property tests: printing then parsing gives back the same tree, and the
//! parser never panics whatever it is fed.

use calico_selector::{Expr, Selector};
use proptest::prelude::*;
use std::collections::BTreeMap;

fn label() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("a".to_string()),
        Just("b".to_string()),
        Just("app.kubernetes.io/name".to_string()),
        "[a-zA-Z0-9_./-]{1,12}",
    ]
}

/// Values may hold either quote character, but not both (no literal can).
fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9 ._-]{0,6}",
        "[a-z\"]{0,4}",
        "[a-z']{0,4}",
        Just(String::new())
    ]
}

fn leaf() -> impl Strategy<Value = Expr> {
    prop_oneof![
        Just(Expr::All),
        Just(Expr::Global),
        label().prop_map(Expr::Has),
        (label(), value()).prop_map(|(k, v)| Expr::Eq(k, v)),
        (label(), value()).prop_map(|(k, v)| Expr::Ne(k, v)),
        (label(), value()).prop_map(|(k, v)| Expr::Contains(k, v)),
        (label(), value()).prop_map(|(k, v)| Expr::StartsWith(k, v)),
        (label(), value()).prop_map(|(k, v)| Expr::EndsWith(k, v)),
        (label(), prop::collection::btree_set(value(), 0..4)).prop_map(|(k, v)| Expr::In(k, v)),
        (label(), prop::collection::btree_set(value(), 0..4)).prop_map(|(k, v)| Expr::NotIn(k, v)),
    ]
}

fn expr() -> impl Strategy<Value = Expr> {
    leaf().prop_recursive(5, 40, 4, |inner| {
        prop_oneof![
            inner.clone().prop_map(|e| Expr::Not(Box::new(e))),
            prop::collection::vec(inner.clone(), 2..4).prop_map(Expr::And),
            prop::collection::vec(inner, 2..4).prop_map(Expr::Or),
        ]
    })
}

fn label_set() -> impl Strategy<Value = BTreeMap<String, String>> {
    prop::collection::btree_map(label(), value(), 0..4)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn print_parse_round_trip(e in expr()) {
        let sel = Selector::from_expr(e);
        let printed = sel.to_string();
        let parsed = Selector::parse(&printed).map_err(|err| TestCaseError::fail(format!("{printed}: {err}")))?;
        prop_assert_eq!(&parsed, &sel, "printed as {}", printed);
        prop_assert_eq!(parsed.to_string(), printed);
    }

    #[test]
    fn canonical_form_means_the_same(e in expr(), labels in label_set()) {
        let sel = Selector::from_expr(e);
        let parsed = Selector::parse(&sel.to_string()).expect("canonical parses");
        prop_assert_eq!(parsed.matches(&labels), sel.matches(&labels));
    }

    #[test]
    fn negation_is_exact(e in expr(), labels in label_set()) {
        let not = Expr::Not(Box::new(e.clone()));
        prop_assert_eq!(not.evaluate(&labels), !e.evaluate(&labels));
    }

    #[test]
    fn parser_never_panics(input in "\\PC{0,64}") {
        let _ = Selector::parse(&input);
    }

    #[test]
    fn parser_never_panics_on_selector_like_text(
        parts in prop::collection::vec(
            prop_oneof![
                Just("("), Just(")"), Just("!"), Just("&&"), Just("||"), Just("=="), Just("!="),
                Just("in"), Just("not in"), Just("{"), Just("}"), Just(","), Just("'x'"), Just("\""),
                Just("has("), Just("all("), Just("global()"), Just("a"), Just(" "), Just("starts"),
                Just("with"), Just("contains"), Just("é"),
            ],
            0..24,
        )
    ) {
        let input: String = parts.concat();
        if let Ok(sel) = Selector::parse(&input) {
            let again = Selector::parse(&sel.to_string()).expect("canonical form of accepted input parses");
            prop_assert_eq!(again, sel);
        }
    }

    #[test]
    fn errors_point_inside_the_input(input in "[a-z(){}!=&|' \"]{0,32}") {
        if let Err(err) = Selector::parse(&input) {
            prop_assert!(err.column >= 1 && err.column <= input.chars().count() + 1, "{err} for {input:?}");
        }
    }
}
