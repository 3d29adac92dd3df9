//! Calico's block-based IPAM.
//!
//! Pools are carved into blocks (default /26 and /122); each block is affine
//! to a node, which allocates from its own blocks first, claims a new block
//! when they are full, and borrows single addresses from other nodes' blocks
//! only when no block is left (never under strict affinity). A handle per
//! workload records which blocks hold its addresses, so release by handle
//! frees everything. Every change is compare-and-swap on the datastore, so
//! any number of allocators on any number of nodes never hand out one
//! address twice. Keys and JSON are Calico's (`/calico/ipam/v2/...`).

mod allocator;
mod assign;
pub mod block;
mod claim;
mod gc;
mod handles;
pub mod model;
mod pool_delete;
pub mod pools;
mod release;
mod report;

pub use allocator::{Assigned, AutoAssign, Ipam, IpamError};
pub use block::{Attribute, Block};
pub use gc::{CheckReport, GcOutcome, Leak};
pub use model::IpamConfig;
pub use pool_delete::PoolDeleted;
pub use report::{PoolUsage, Usage};
