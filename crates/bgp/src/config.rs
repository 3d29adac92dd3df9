//! What the speaker is configured with, and what it reports.

use serde::Serialize;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

/// How a peer came to be configured (for `calicoctl node status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PeerKind {
    NodeToNodeMesh,
    Global,
    Node,
}

impl PeerKind {
    pub fn describe(self) -> &'static str {
        match self {
            PeerKind::NodeToNodeMesh => "node-to-node mesh",
            PeerKind::Global => "global",
            PeerKind::Node => "node specific",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerConfig {
    pub addr: IpAddr,
    pub asn: u32,
    pub kind: PeerKind,
    /// A route-reflector client (when this speaker reflects).
    pub rr_client: bool,
    /// Wait for the peer to connect; never connect out.
    pub passive: bool,
    /// Source address for outgoing connections.
    pub local_addr: Option<IpAddr>,
    pub port: u16,
    /// Hold time offered to this peer (the speaker's when None).
    pub hold_time: Option<u16>,
    /// Graceful-restart time announced to this peer (the speaker's when None).
    pub restart_time: Option<u16>,
    /// TCP MD5 key (RFC 2385) for the session, 1-80 bytes.
    pub password: Option<String>,
    /// Prefixes accepted from this peer at most; past it the session ends
    /// with Cease "maximum number of prefixes reached" (RFC 4486).
    pub max_prefixes: Option<usize>,
}

impl PeerConfig {
    /// A peer at `addr` in `asn` with every other setting at its default:
    /// port 179, active, no password, limits or own timers.
    pub fn new(addr: IpAddr, asn: u32, kind: PeerKind) -> Self {
        PeerConfig {
            addr,
            asn,
            kind,
            rr_client: false,
            passive: false,
            local_addr: None,
            port: 179,
            hold_time: None,
            restart_time: None,
            password: None,
            max_prefixes: None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct SpeakerConfig {
    pub router_id: Ipv4Addr,
    pub local_as: u32,
    /// Set to make this speaker a route reflector.
    pub cluster_id: Option<Ipv4Addr>,
    /// Where to accept connections (None: only connect out).
    pub listen: Option<SocketAddr>,
    pub hold_time: u16,
    /// Seconds peers should keep our routes while we restart.
    pub restart_time: u16,
    pub connect_retry: Duration,
}

impl SpeakerConfig {
    pub fn new(router_id: Ipv4Addr, local_as: u32) -> Self {
        SpeakerConfig {
            router_id,
            local_as,
            cluster_id: None,
            listen: Some(SocketAddr::from(([0, 0, 0, 0], 179))),
            hold_time: 90,
            restart_time: 120,
            connect_retry: Duration::from_secs(5),
        }
    }
}

/// A peer's state as `calicoctl node status` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum PeerState {
    Idle,
    Connect,
    OpenSent,
    Established,
    /// The session is gone; its routes are kept for its restart time.
    Stale,
}

impl std::fmt::Display for PeerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PeerStatus {
    pub address: IpAddr,
    pub asn: u32,
    pub kind: PeerKind,
    pub state: PeerState,
    /// Unix seconds of the last state change.
    pub since: u64,
    pub received: usize,
    pub advertised: usize,
    pub info: String,
}
