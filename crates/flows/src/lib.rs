//! Flow records beyond the node: the record every part shares, the flow
//! service's store and query language, its gRPC ingest and HTTP API, and
//! the exporter a node streams its records through.

#[cfg(feature = "service")]
pub mod export;
pub mod query;
pub mod record;
#[cfg(feature = "service")]
pub mod server;
#[cfg(feature = "service")]
pub mod store;
#[cfg(feature = "service")]
pub mod wire;

/// The generated gRPC types (`proto/flows.proto`).
#[cfg(feature = "service")]
#[allow(missing_debug_implementations, clippy::all, clippy::pedantic)]
pub mod proto {
    tonic::include_proto!("calico.flows.v1");
}

pub use record::{Flow, TraceEntry};

/// Goldmane's port, which the flow service's gRPC ingest listens on by default.
pub const GRPC_PORT: u16 = 7443;
/// Whisker's port, which the HTTP API and web UI listen on by default.
pub const HTTP_PORT: u16 = 8081;
