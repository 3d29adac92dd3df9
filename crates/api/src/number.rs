//! Numbers written the way Go's encoding/json writes a float64: `100`, not `100.0`.

use serde::Serializer;

#[allow(clippy::ref_option)]
pub(crate) fn float<S: Serializer>(value: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
    match value {
        #[allow(clippy::cast_possible_truncation, clippy::float_cmp)]
        Some(v) if v.fract() == 0.0 && v.abs() < 1e15 => s.serialize_i64(*v as i64),
        Some(v) => s.serialize_f64(*v),
        None => s.serialize_none(),
    }
}
