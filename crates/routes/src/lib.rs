//! Routes the agent owns.
//!
//! An owner (the policy agent, later the BGP speaker) marks every route it
//! installs with its own route protocol number, so it can tell its routes
//! from everyone else's: [`plan`] compares what the owner wants with what
//! the kernel holds under that protocol, and only those routes are ever
//! added, replaced or removed. The kernel side is `calico-kernel`'s
//! `RouteTable`.

mod plan;

pub use plan::{plan, Op, Route, Target};

/// The protocol number calico-node's agent marks its routes with
/// (`ip route show proto 80`).
pub const PROTO_AGENT: u8 = 80;

/// The protocol number calico-node's BGP speaker marks the routes it
/// learned with (`ip route show proto bgp`; RTPROT_BGP).
pub const PROTO_BGP: u8 = 186;
