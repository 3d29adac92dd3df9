//! A BGP-4 speaker for calico-node.
//!
//! `rib` is the pure routing logic (best path, export rules, route
//! reflection, graceful-restart staleness); `core` is the pure speaker
//! (peers, connections, collisions, timers, limits: inputs in, actions
//! out); `speaker` is the tokio shell that carries the actions out, runs
//! sessions over TCP (`session`), and hands kernel route changes to a
//! [`Fib`].

mod config;
mod core;
mod fib;
pub mod rib;
mod session;
mod speaker;

pub use config::{PeerConfig, PeerKind, PeerState, PeerStatus, SpeakerConfig};
pub use fib::KernelFib;
pub use rib::{Announce, Changes, FibOp, Path, PeerId, PeerInfo, Rib};
pub use speaker::{Fib, Speaker, Status, FIB_BACKLOG};
