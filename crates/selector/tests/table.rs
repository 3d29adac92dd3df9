//! Table-driven tests: matching, canonical form and rejected input.

use calico_selector::Selector;
use std::collections::BTreeMap;

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// (selector, labels, expected match)
type Case = (&'static str, &'static [(&'static str, &'static str)], bool);
const MATCHES: &[Case] = &[
    (r#"a == "b""#, &[("a", "b")], true),
    (r#"a == "b""#, &[("a", "b"), ("c", "d")], true),
    (r#"a == "b""#, &[], false),
    (r#"a == "b""#, &[("a", "c")], false),
    (r#"a == "b""#, &[("c", "b")], false),
    ("a == 'a'", &[("a", "a")], true),
    (r#"a != "b""#, &[("a", "a")], true),
    (r#"a != "a""#, &[], true),
    (r#"a != "a""#, &[("a", "a")], false),
    (r#"a == "b" && c == "d""#, &[("a", "b"), ("c", "d")], true),
    (r#"a == "b" && c == "d""#, &[("a", "b"), ("c", "e")], false),
    (r#"a == "b" && c == "d""#, &[("a", "b")], false),
    (r#"a == "b" || c == "d""#, &[("c", "d")], true),
    (r#"a == "b" || c == "d""#, &[("a", "e"), ("c", "e")], false),
    (r#"a in {"'", '"', "c"}"#, &[("a", "\"")], true),
    (r#"a in {"'", '"', "c"}"#, &[("a", "'")], true),
    (r#"a in {"'", '"', "c"}"#, &[("a", "e")], false),
    (r#"a in {"'", '"', "c"}"#, &[], false),
    (r#"a not in {"'", '"', "c"}"#, &[], true),
    (r#"a not in {"'", '"', "c"}"#, &[("a", "e")], true),
    (r#"a not in {"'", '"', "c"}"#, &[("a", "c")], false),
    ("a in {}", &[("a", "")], false),
    ("a not in {}", &[], true),
    (r#"a contains "a""#, &[("a", "bab")], true),
    (r#"a contains "a""#, &[("b", "aaa")], false),
    (r#"a contains "a""#, &[], false),
    (r#"a starts with "a""#, &[("a", "abb")], true),
    (r#"a starts with "a""#, &[("a", "baa")], false),
    (r#"a startswith "a""#, &[("a", "abb")], true),
    (r#"a ends with "a""#, &[("a", "bba")], true),
    (r#"a ends with "a""#, &[("a", "aab")], false),
    (r#"a endswith "a""#, &[("a", "bba")], true),
    (r#"!a in {"a"}"#, &[("a", "b")], true),
    (
        r#"!a == "a1" && b == "b1""#,
        &[("a", "a1"), ("b", "b1")],
        false,
    ),
    ("has(a)", &[("a", "b")], true),
    ("has(b)", &[("a", "b")], false),
    ("!has(a)", &[("b", "b")], true),
    ("!has(a)", &[("a", "b")], false),
    ("! has(a)", &[("a", "b")], false),
    ("!!has(b)", &[("a", "b")], false),
    ("!!! has(a)", &[("a", "b")], false),
    ("has( a )", &[("a", "")], true),
    ("", &[], true),
    (" ", &[("a", "b")], true),
    ("all()", &[], true),
    (" all( ) ", &[("a", "b")], true),
    ("global()", &[("a", "b")], true),
    ("has(a) && !has(b)", &[("a", "a")], true),
    ("!(!has(a) || has(b))", &[("a", "a")], true),
    ("!(has(b) || !has(a))", &[("a", "a")], true),
    ("a == 'a1' || b != 'b1'", &[("a", "a1"), ("b", "b1")], true),
    ("a != 'a1' || b != 'b1'", &[("a", "a1"), ("b", "b1")], false),
    (
        "! a == 'a1' || ! b == 'b1'",
        &[("a", "a1"), ("b", "b1")],
        false,
    ),
    (
        "(a == 'x' || b == 'y') && c == 'z'",
        &[("b", "y"), ("c", "z")],
        true,
    ),
    ("a == 'x' || b == 'y' && c == 'z'", &[("a", "x")], true),
    ("a == 'x' || b == 'y' && c == 'z'", &[("b", "y")], false),
    (
        "projectcalico.org/namespace == 'ns-1'",
        &[("projectcalico.org/namespace", "ns-1")],
        true,
    ),
    (
        "app.kubernetes.io/name in {'web', 'db'}",
        &[("app.kubernetes.io/name", "db")],
        true,
    ),
    ("\ta\t==\t'b'", &[("a", "b")], true),
    ("a == 'ünï'", &[("a", "ünï")], true),
];

#[test]
fn matching() {
    for (sel, pairs, want) in MATCHES {
        let parsed = Selector::parse(sel).unwrap_or_else(|e| panic!("{sel:?}: {e}"));
        let l = labels(pairs);
        assert_eq!(parsed.matches(&l), *want, "{sel:?} against {pairs:?}");
        let again = Selector::parse(&parsed.to_string()).expect("canonical form parses");
        assert_eq!(
            again.matches(&l),
            *want,
            "canonical {parsed} against {pairs:?}"
        );
        assert_eq!(again, parsed, "round trip of {sel:?}");
    }
}

/// (input, canonical form)
const CANONICAL: &[(&str, &str)] = &[
    ("", "all()"),
    (" all() ", "all()"),
    (" (all() )", "all()"),
    ("! (has( b)||! has(a ))", "!(has(b) || !has(a))"),
    (r#"! (a == "b"&&! c != "d")"#, r#"!(a == "b" && !c != "d")"#),
    (r#"a == "'""#, r#"a == "'""#),
    (r#"a == '"'"#, r#"a == '"'"#),
    (r#"a contains '"'"#, r#"a contains '"'"#),
    (r#"a startswith '"'"#, r#"a starts with '"'"#),
    (r#"a endswith "'""#, r#"a ends with "'""#),
    (r#"a!='"'"#, r#"a != '"'"#),
    ("a == 'b'", r#"a == "b""#),
    (r#"a in {"d", "a", "b"}"#, r#"a in {"a", "b", "d"}"#),
    (
        r#"a in {"z", "z", "x", "y", "x", "a"}"#,
        r#"a in {"a", "x", "y", "z"}"#,
    ),
    ("a not in {'q'}", r#"a not in {"q"}"#),
    ("a in {}", "a in {}"),
    ("k == 'v' && x == 'y'", r#"(k == "v" && x == "y")"#),
    ("k == 'v' || has(x)", r#"(k == "v" || has(x))"#),
    ("!(k == 'v')", r#"!k == "v""#),
    (
        "a == 'a' && b == 'b' && c == 'c'",
        r#"(a == "a" && b == "b" && c == "c")"#,
    ),
    (
        "(a == 'a' && b == 'b') && c == 'c'",
        r#"((a == "a" && b == "b") && c == "c")"#,
    ),
    (
        "!(!(k == 'v' && has(t) || all()) && (a in {'b', 'c'}))",
        r#"!(!((k == "v" && has(t)) || all()) && a in {"b", "c"})"#,
    ),
    ("global()", "global()"),
];

#[test]
fn canonical_form() {
    for (input, want) in CANONICAL {
        let sel = Selector::parse(input).unwrap_or_else(|e| panic!("{input:?}: {e}"));
        assert_eq!(sel.to_string(), *want, "canonical form of {input:?}");
        let again = Selector::parse(want).expect("canonical parses");
        assert_eq!(again.to_string(), *want, "canonical form is a fixed point");
        assert_eq!(again, sel);
    }
}

/// (input, column of the error, fragment of the message)
const REJECTED: &[(&str, usize, &str)] = &[
    ("b == b", 6, "expected a quoted string after '=='"),
    ("b contains b", 12, "quoted string"),
    ("b starts with b", 15, "quoted string"),
    ("b ends with b", 13, "quoted string"),
    ("'b1' == b", 1, "expected a label"),
    ("b", 2, "expected an operator"),
    ("a b", 3, "expected an operator"),
    ("!", 2, "expected a label"),
    ("foo == \"bar\" &", 14, "expected '&&'"),
    ("foo == \"bar\" |", 14, "expected '||'"),
    ("foo != ||", 8, "quoted string"),
    ("foo in {\"\", ||", 13, "quoted string"),
    ("foo in \"\"", 8, "expected '{'"),
    ("\"FOO", 1, "unterminated string"),
    ("\"FOO'", 1, "unterminated string"),
    ("'FOO", 1, "unterminated string"),
    ("(", 2, "expected a label"),
    ("(a == \"foo\"", 12, "expected ')'"),
    (")", 1, "expected a label"),
    ("()", 2, "expected a label"),
    ("%", 1, "unexpected character '%'"),
    ("a == \"b\" && %", 13, "unexpected character '%'"),
    ("a == \"b\" || %", 13, "unexpected character '%'"),
    ("a ", 3, "expected an operator"),
    ("has(foo) &&", 12, "expected a label"),
    ("has(foo", 1, "no closing ')' after has("),
    ("has()", 5, "expected a label name inside has("),
    ("all(x)", 1, "no closing ')' after all("),
    ("a = 'b'", 3, "expected '=='"),
    ("a starts 'b'", 3, "'starts with'"),
    ("a not 'b'", 3, "'not in'"),
    ("a in {'x' 'y'}", 11, "expected ',' or '}'"),
    ("a == 'b' c == 'd'", 10, "unexpected label 'c'"),
];

#[test]
fn rejected_with_column() {
    for (input, column, fragment) in REJECTED {
        let err = Selector::parse(input).expect_err(input);
        assert!(
            err.message.contains(fragment),
            "{input:?}: message {:?} lacks {fragment:?}",
            err.message
        );
        assert_eq!(err.column, *column, "{input:?}: {err}");
    }
}

#[test]
fn deep_nesting_is_an_error_not_a_crash() {
    let deep = format!("{}has(a){}", "(".repeat(10_000), ")".repeat(10_000));
    let err = Selector::parse(&deep).expect_err("too deep");
    assert!(err.message.contains("nests deeper"), "{err}");
    let nots = format!("{}has(a)", "!".repeat(10_000));
    assert!(Selector::parse(&nots).is_err());
}

#[test]
fn uses_global_and_keys() {
    let sel = Selector::parse("global() || (b == 'x' && has(a) && b != 'y')").unwrap();
    assert!(sel.uses_global());
    assert_eq!(sel.label_keys(), vec!["a", "b"]);
    assert!(!Selector::parse("all()").unwrap().uses_global());
}

/// Label keys as long as Calico's tokenizer takes them (512), no longer.
#[test]
fn label_keys_are_at_most_512_characters() {
    let ok = "k".repeat(512);
    for text in [
        format!("{ok} == 'v'"),
        format!("has({ok})"),
        format!("{ok} in {{'a'}}"),
    ] {
        assert!(Selector::parse(&text).is_ok(), "{}", &text[..20]);
    }
    let long = "k".repeat(513);
    for text in [
        format!("{long} == 'v'"),
        format!("has({long})"),
        format!("a == 'b' && {long} == 'v'"),
    ] {
        let e = Selector::parse(&text).expect_err("513 characters");
        assert!(
            e.to_string().contains("at most 512") || e.to_string().contains("label name"),
            "{e}"
        );
    }
}
