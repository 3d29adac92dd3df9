//! A BGP-4 speaker for calico-node.
//!
//! `rib` is the pure routing logic (best path, export rules, route
//! reflection, graceful-restart staleness); `speaker` is the tokio shell
//! that runs sessions over TCP, their timers, and hands kernel route
//! changes to a [`Fib`].

mod fib;
pub mod rib;
mod session;
mod speaker;

pub use fib::KernelFib;
pub use rib::{Announce, Changes, FibOp, Path, PeerId, PeerInfo, Rib};
pub use speaker::{Fib, PeerConfig, PeerKind, PeerStatus, Speaker, SpeakerConfig, Status};
