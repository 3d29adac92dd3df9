//! Typed resource access over any [`Store`](calico_datastore::Store).
//!
//! Resources are stored as JSON under Calico's keys; `metadata.resourceVersion`
//! is the key's modification revision and is never stored. Every write is
//! compare-and-swap, so concurrent writers never overwrite each other
//! silently. Writes are validated and defaulted here too, so no caller can
//! store an invalid resource.

mod checks;
mod client;
pub mod keys;

pub use checks::ipip_unavailable;
pub use client::{Applied, Client, ClientError, Clock, ResourceList, SystemClock, Unreadable};
