//! Reading untrusted manifest text within bounds, before and while it is
//! parsed: a size limit per manifest and per document, a limit on flow
//! collections checked in one pass over the text (the YAML scanner's cost
//! grows with the square of unclosed flow nesting), and a strict reader:
//! a mapping that repeats a key is an error (as kubectl's strict decoding),
//! an explicit `null` is the same as an absent field (as the Kubernetes
//! API reads it), and nesting is bounded.

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};
use std::fmt;

/// etcd's default request limit: no resource larger than this could be
/// stored in a Calico datastore.
pub const MAX_DOCUMENT_BYTES: usize = 1536 * 1024;
/// A whole manifest (many documents).
pub const MAX_MANIFEST_BYTES: usize = 16 * 1024 * 1024;
/// Nesting of collections, flow (`[`, `{`) or block.
pub const MAX_DEPTH: usize = 64;

/// Flow collections one document may open (`[` and `{`, counted
/// everywhere, quoted or not, so that nothing can hide one). The YAML
/// scanner's work grows with the square of unclosed flow nesting (100,000
/// brackets took half a minute); at this many it stays well under a
/// second, and a policy of a few thousand rules still fits.
pub const MAX_FLOW_OPENERS: usize = 20_000;

/// How many flow collections `text` may open, at most.
pub fn flow_openers(text: &str) -> usize {
    text.bytes().filter(|b| matches!(b, b'[' | b'{')).count()
}

/// The documents of a YAML stream as text (split at `---` lines), so that
/// each one's size can be checked before it is parsed.
pub fn document_sizes(text: &str) -> impl Iterator<Item = usize> + '_ {
    let mut sizes = Vec::new();
    let mut current = 0usize;
    for line in text.split_inclusive('\n') {
        let is_marker =
            line.starts_with("---") && line[3..].chars().next().is_none_or(char::is_whitespace);
        if is_marker {
            sizes.push(current);
            current = 0;
        }
        current += line.len();
    }
    sizes.push(current);
    sizes.into_iter()
}

/// A value read strictly (see the module docs).
#[derive(Debug)]
pub struct Strict(pub Value);

struct Seed {
    depth: usize,
}

impl<'de> de::Deserialize<'de> for Strict {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Seed { depth: 0 }.deserialize(d).map(Strict)
    }
}

impl<'de> DeserializeSeed<'de> for Seed {
    type Value = Value;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl Seed {
    fn child<E: de::Error>(&self) -> Result<Seed, E> {
        if self.depth >= MAX_DEPTH {
            return Err(E::custom(format!("nested deeper than {MAX_DEPTH} levels")));
        }
        Ok(Seed {
            depth: self.depth + 1,
        })
    }
}

impl<'de> Visitor<'de> for Seed {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a YAML or JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        while let Some(v) = seq.next_element_seed(self.child()?)? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        let mut seen = std::collections::BTreeSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if !seen.insert(key.clone()) {
                return Err(de::Error::custom(format!(
                    "duplicate key {:?}",
                    crate::validate::truncated(&key)
                )));
            }
            let value = map.next_value_seed(self.child()?)?;
            // An explicit null is an absent field.
            if !value.is_null() {
                out.insert(key, value);
            }
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flow_openers_counts_every_bracket() {
        assert_eq!(flow_openers("a: [1, [2, {b: 3}]] # [\nc: \"{\""), 5);
    }

    #[test]
    fn document_sizes_split_at_markers() {
        let sizes: Vec<usize> = document_sizes("a: 1\n---\nb: 2\n--- # c\nc: 3").collect();
        assert_eq!(sizes, vec![5, 9, 12]);
    }
}
