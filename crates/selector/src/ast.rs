//! The selector tree and its canonical printing.

use std::collections::BTreeSet;
use std::fmt;

/// A selector expression. `And`/`Or` always hold two or more operands.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Expr {
    All,
    Global,
    Has(String),
    Eq(String, String),
    Ne(String, String),
    In(String, BTreeSet<String>),
    NotIn(String, BTreeSet<String>),
    Contains(String, String),
    StartsWith(String, String),
    EndsWith(String, String),
    Not(Box<Expr>),
    And(Vec<Expr>),
    Or(Vec<Expr>),
}

impl Expr {
    /// Whether `pred` holds for this node or any node below it.
    pub fn any(&self, pred: &dyn Fn(&Expr) -> bool) -> bool {
        if pred(self) {
            return true;
        }
        match self {
            Expr::Not(inner) => inner.any(pred),
            Expr::And(ops) | Expr::Or(ops) => ops.iter().any(|e| e.any(pred)),
            _ => false,
        }
    }

    pub(crate) fn collect_keys<'a>(&'a self, out: &mut Vec<&'a str>) {
        match self {
            Expr::All | Expr::Global => {}
            Expr::Has(k)
            | Expr::Eq(k, _)
            | Expr::Ne(k, _)
            | Expr::In(k, _)
            | Expr::NotIn(k, _)
            | Expr::Contains(k, _)
            | Expr::StartsWith(k, _)
            | Expr::EndsWith(k, _) => out.push(k),
            Expr::Not(inner) => inner.collect_keys(out),
            Expr::And(ops) | Expr::Or(ops) => ops.iter().for_each(|e| e.collect_keys(out)),
        }
    }
}

/// Writes a string literal: double quotes unless the value contains one.
fn quoted(f: &mut fmt::Formatter<'_>, value: &str) -> fmt::Result {
    if value.contains('"') {
        write!(f, "'{value}'")
    } else {
        write!(f, "\"{value}\"")
    }
}

fn set(f: &mut fmt::Formatter<'_>, values: &BTreeSet<String>) -> fmt::Result {
    f.write_str("{")?;
    for (i, v) in values.iter().enumerate() {
        if i > 0 {
            f.write_str(", ")?;
        }
        quoted(f, v)?;
    }
    f.write_str("}")
}

fn joined(f: &mut fmt::Formatter<'_>, ops: &[Expr], sep: &str) -> fmt::Result {
    f.write_str("(")?;
    for (i, e) in ops.iter().enumerate() {
        if i > 0 {
            f.write_str(sep)?;
        }
        fmt::Display::fmt(e, f)?;
    }
    f.write_str(")")
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expr::All => f.write_str("all()"),
            Expr::Global => f.write_str("global()"),
            Expr::Has(k) => write!(f, "has({k})"),
            Expr::Eq(k, v) => {
                write!(f, "{k} == ")?;
                quoted(f, v)
            }
            Expr::Ne(k, v) => {
                write!(f, "{k} != ")?;
                quoted(f, v)
            }
            Expr::Contains(k, v) => {
                write!(f, "{k} contains ")?;
                quoted(f, v)
            }
            Expr::StartsWith(k, v) => {
                write!(f, "{k} starts with ")?;
                quoted(f, v)
            }
            Expr::EndsWith(k, v) => {
                write!(f, "{k} ends with ")?;
                quoted(f, v)
            }
            Expr::In(k, vs) => {
                write!(f, "{k} in ")?;
                set(f, vs)
            }
            Expr::NotIn(k, vs) => {
                write!(f, "{k} not in ")?;
                set(f, vs)
            }
            Expr::Not(inner) => {
                f.write_str("!")?;
                fmt::Display::fmt(inner, f)
            }
            Expr::And(ops) => joined(f, ops, " && "),
            Expr::Or(ops) => joined(f, ops, " || "),
        }
    }
}
