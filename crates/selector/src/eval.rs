//! Evaluation of a selector against a set of labels.

use crate::Expr;
use std::collections::{BTreeMap, HashMap};

/// Anything that can answer "what is the value of label `key`?".
pub trait Labels {
    fn label(&self, key: &str) -> Option<&str>;
}

impl Labels for BTreeMap<String, String> {
    fn label(&self, key: &str) -> Option<&str> {
        self.get(key).map(String::as_str)
    }
}

impl<S: std::hash::BuildHasher> Labels for HashMap<String, String, S> {
    fn label(&self, key: &str) -> Option<&str> {
        self.get(key).map(String::as_str)
    }
}

impl Labels for [(&str, &str)] {
    fn label(&self, key: &str) -> Option<&str> {
        self.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
    }
}

impl Expr {
    /// Evaluates the expression. A missing label never equals, contains,
    /// starts or ends with anything, and is never in a set; `!=` and
    /// `not in` are the exact negations of `==` and `in`.
    pub fn evaluate<L: Labels + ?Sized>(&self, labels: &L) -> bool {
        match self {
            Expr::All | Expr::Global => true,
            Expr::Has(k) => labels.label(k).is_some(),
            Expr::Eq(k, v) => labels.label(k) == Some(v.as_str()),
            Expr::Ne(k, v) => labels.label(k) != Some(v.as_str()),
            Expr::In(k, vs) => labels.label(k).is_some_and(|l| vs.contains(l)),
            Expr::NotIn(k, vs) => !labels.label(k).is_some_and(|l| vs.contains(l)),
            Expr::Contains(k, v) => labels.label(k).is_some_and(|l| l.contains(v.as_str())),
            Expr::StartsWith(k, v) => labels.label(k).is_some_and(|l| l.starts_with(v.as_str())),
            Expr::EndsWith(k, v) => labels.label(k).is_some_and(|l| l.ends_with(v.as_str())),
            Expr::Not(inner) => !inner.evaluate(labels),
            Expr::And(ops) => ops.iter().all(|e| e.evaluate(labels)),
            Expr::Or(ops) => ops.iter().any(|e| e.evaluate(labels)),
        }
    }
}
