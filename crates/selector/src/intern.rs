//! Shared copies of strings that repeat across thousands of records
//! (label keys and values, namespaces, node and profile names): each
//! distinct string is held once, behind an `Arc<str>`.

use std::collections::HashSet;
use std::sync::Arc;

/// An interned string.
pub type Str = Arc<str>;

#[derive(Debug, Clone, Default)]
pub struct Interner {
    strings: HashSet<Str>,
    /// How many strings were left after the last sweep.
    swept: usize,
}

impl Interner {
    pub fn new() -> Self {
        Self::default()
    }

    /// The shared copy of `s`.
    pub fn intern(&mut self, s: &str) -> Str {
        if let Some(x) = self.strings.get(s) {
            return Arc::clone(x);
        }
        let x: Str = Arc::from(s);
        self.strings.insert(Arc::clone(&x));
        x
    }

    /// Drops the strings only the interner still holds, once it has
    /// doubled since the last time (amortised: a constant per change).
    /// Call it after records are removed or changed.
    pub fn sweep(&mut self) {
        if self.strings.len() > 2 * self.swept + 1024 {
            self.strings.retain(|s| Arc::strong_count(s) > 1);
            self.swept = self.strings.len();
        }
    }

    /// Distinct strings held.
    pub fn len(&self) -> usize {
        self.strings.len()
    }

    pub fn is_empty(&self) -> bool {
        self.strings.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_copy_per_string_and_unused_ones_swept() {
        let mut i = Interner::new();
        let a = i.intern("app");
        let b = i.intern("app");
        assert!(Arc::ptr_eq(&a, &b));
        let kept: Vec<Str> = (0..600).map(|n| i.intern(&format!("k{n}"))).collect();
        for n in 0..2000 {
            i.intern(&format!("gone{n}"));
        }
        i.sweep();
        assert_eq!(i.len(), kept.len() + 1, "only strings still used stay");
        assert!(Arc::ptr_eq(&i.intern("app"), &a));
    }
}
