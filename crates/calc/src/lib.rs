//! The node agent's calculation graph (Calico's Felix calc graph).
//!
//! Pure and deterministic: no I/O, no clock. Datastore updates go in
//! (`Update`); dataplane intents come out (`Intent`): which IP sets exist
//! with which members, which policies and profiles are compiled to which
//! rules, and, per local workload endpoint, which tiers and policies apply
//! in each direction, in order. `explain` walks that state for one packet,
//! as the dataplane does, for `calicoctl policy explain`.

mod compile;
pub mod explain;
mod graph;
pub mod intent;
pub mod overlay;
pub mod state;

pub use compile::{policy_selector, SetSpec};
pub use graph::{CalcGraph, Update, WORKLOAD_INTERFACE_PREFIX};
pub use intent::*;
pub use state::{policy_key, DesiredState, OrderError};
