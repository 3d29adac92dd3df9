//! The rendered table as a value: sets, maps and chains with their
//! elements and rules. It prints as one `table inet calico { … }` block
//! (the full load) and, given the table already in the kernel, as the
//! smallest transaction that turns one into the other (the delta).

use crate::TABLE;
use sha1::{Digest, Sha1};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

/// The tag a rule carries in the kernel (`comment "cali:<hash>"`): what
/// tells our rules apart when the table is read back, whatever words nft
/// prints them in (Calico tags its iptables rules the same way).
pub fn rule_tag(rule: &str) -> String {
    let hash: String = Sha1::digest(rule.as_bytes())
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("cali:{hash}")
}

/// A rule as sent to nft: its text and its tag.
fn tagged(rule: &str) -> String {
    format!("{rule} comment \"{}\"", rule_tag(rule))
}

/// A set or a verdict map: its declaration and its elements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Collection {
    /// `set` or `map`.
    pub kind: &'static str,
    pub name: String,
    /// Everything between the braces except the elements, e.g.
    /// `type ipv4_addr; flags interval; `.
    pub decl: String,
    /// Elements as nft writes them; for maps `key : verdict`.
    pub elements: Vec<String>,
}

impl Collection {
    /// The part of an element that identifies it (a map element's key).
    fn key(element: &str) -> &str {
        element.split_once(" : ").map_or(element, |(k, _)| k)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    pub name: String,
    /// `type filter hook … policy …;` for base chains.
    pub hook: Option<String>,
    pub rules: Vec<String>,
}

/// The whole `inet calico` table, in the order it prints.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Table {
    pub collections: Vec<Collection>,
    pub chains: Vec<Chain>,
}

impl Table {
    /// The full table as one block (loaded after deleting the old one).
    pub fn to_text(&self) -> String {
        let mut t = String::new();
        let _ = writeln!(t, "table inet {TABLE} {{");
        for c in &self.collections {
            let _ = write!(t, "\t{} {} {{ {}", c.kind, c.name, c.decl);
            if !c.elements.is_empty() {
                let _ = write!(t, "elements = {{ {} }}; ", c.elements.join(", "));
            }
            let _ = writeln!(t, "}}");
        }
        for c in &self.chains {
            let _ = writeln!(t, "\tchain {} {{", c.name);
            if let Some(h) = &c.hook {
                let _ = writeln!(t, "\t\t{h}");
            }
            for r in &c.rules {
                let _ = writeln!(t, "\t\t{}", tagged(r));
            }
            let _ = writeln!(t, "\t}}");
        }
        let _ = writeln!(t, "}}");
        t
    }

    /// The kernel's copy of the table (`nft -j list table inet calico`'s
    /// output) as a value to take a delta from, in `self`'s words where
    /// they mean the same (see `readback`).
    pub fn from_kernel(json: &str, desired: &Table) -> Result<Table, crate::ReadBackError> {
        crate::readback::from_kernel(json, desired)
    }

    /// The commands that turn `old` (what the kernel holds) into `self`, in
    /// an order nft accepts within one transaction: new sets and chains
    /// first, then elements and rules, then what nothing refers to any more.
    /// `None` when a change cannot be expressed as a delta (a set whose
    /// type changed, a base chain's hook changed); the caller loads the
    /// full table. Base chains come and go like the others.
    /// An empty string means nothing changed.
    pub fn delta(&self, old: &Table) -> Option<String> {
        let t = format!("inet {TABLE}");
        let old_cols: BTreeMap<&str, &Collection> = old
            .collections
            .iter()
            .map(|c| (c.name.as_str(), c))
            .collect();
        let new_cols: BTreeMap<&str, &Collection> = self
            .collections
            .iter()
            .map(|c| (c.name.as_str(), c))
            .collect();
        let old_chains: BTreeMap<&str, &Chain> =
            old.chains.iter().map(|c| (c.name.as_str(), c)).collect();
        let new_chains: BTreeMap<&str, &Chain> =
            self.chains.iter().map(|c| (c.name.as_str(), c)).collect();

        let mut create = String::new();
        let mut elements = String::new();
        let mut rules = String::new();
        let mut map_elements = String::new();
        let mut remove = String::new();

        for c in &self.chains {
            match old_chains.get(c.name.as_str()) {
                None => match &c.hook {
                    Some(hook) => {
                        let _ = writeln!(create, "add chain {t} {} {{ {hook} }}", c.name);
                    }
                    None => {
                        let _ = writeln!(create, "add chain {t} {}", c.name);
                    }
                },
                Some(o) if o.hook != c.hook => return None,
                Some(o) if o.rules == c.rules => continue,
                Some(_) => {
                    let _ = writeln!(rules, "flush chain {t} {}", c.name);
                }
            }
            for r in &c.rules {
                let _ = writeln!(rules, "add rule {t} {} {}", c.name, tagged(r));
            }
        }
        for c in &self.collections {
            let Some(o) = old_cols.get(c.name.as_str()) else {
                let _ = write!(create, "add {} {t} {} {{ {}", c.kind, c.name, c.decl);
                if !c.elements.is_empty() {
                    let _ = write!(create, "elements = {{ {} }}; ", c.elements.join(", "));
                }
                let _ = writeln!(create, "}}");
                continue;
            };
            if o.kind != c.kind || o.decl != c.decl {
                return None;
            }
            let before: BTreeSet<&str> = o.elements.iter().map(String::as_str).collect();
            let after: BTreeSet<&str> = c.elements.iter().map(String::as_str).collect();
            let gone: Vec<&str> = before
                .difference(&after)
                .map(|e| Collection::key(e))
                .collect();
            let came: Vec<&str> = after.difference(&before).copied().collect();
            // Maps change after the chains their verdicts jump to exist.
            let out = if c.kind == "map" {
                &mut map_elements
            } else {
                &mut elements
            };
            if !gone.is_empty() {
                let _ = writeln!(
                    out,
                    "delete element {t} {} {{ {} }}",
                    c.name,
                    gone.join(", ")
                );
            }
            if !came.is_empty() {
                let _ = writeln!(out, "add element {t} {} {{ {} }}", c.name, came.join(", "));
            }
        }
        for c in &old.chains {
            if !new_chains.contains_key(c.name.as_str()) {
                // Rules that jump elsewhere go first, so chains can be
                // deleted in any order.
                let _ = writeln!(rules, "flush chain {t} {}", c.name);
                let _ = writeln!(remove, "delete chain {t} {}", c.name);
            }
        }
        for c in &old.collections {
            if !new_cols.contains_key(c.name.as_str()) {
                let _ = writeln!(remove, "delete {} {t} {}", c.kind, c.name);
            }
        }
        Some(create + &elements + &rules + &map_elements + &remove)
    }
}
