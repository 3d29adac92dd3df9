//! The fan-out service (Calico's Typha): one syncer per type against the
//! datastore, served to many node agents ([`server`]), and the client the
//! agents use instead of the datastore when configured ([`client`]).

pub mod client;
pub mod server;

/// The generated protocol.
#[allow(clippy::all, missing_debug_implementations, unreachable_pub)]
pub mod proto {
    tonic::include_proto!("calico.typha.v1");
}

/// Typha's sync port.
pub const DEFAULT_PORT: u16 = 5473;
