//! What goes into the core and what comes out.

use crate::config::PeerConfig;
use crate::rib::{FibOp, PeerId};
use crate::session::{ConnId, Local, SessionEvent, ToSession};
use ipnet::IpNet;
use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Duration;

/// Connections one peer may hold at once (ours, its, and one being
/// replaced); more are closed at once, so that a peer cannot pile up
/// sessions waiting for an OPEN.
pub(crate) const MAX_CONNECTIONS_PER_PEER: usize = 3;

/// A stream the shell holds (accepted or connected) until the core says
/// what becomes of it.
pub(crate) type StreamId = u64;

/// What the core is told.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // each is handled once, straight away
pub(crate) enum Input {
    SetPeers(Vec<PeerConfig>),
    SetLocal(BTreeSet<IpNet>),
    /// Learned routes inside these prefixes stay out of the kernel.
    SetExcluded(Vec<IpNet>),
    /// A connection came in from `from`.
    Accepted {
        stream: StreamId,
        from: IpAddr,
    },
    /// An outgoing connection attempt ended.
    Connected {
        peer: PeerId,
        epoch: u64,
        result: Result<StreamId, String>,
    },
    Timer(Timer),
    /// What a session reports; an OPEN is answered with [`Action::Admit`].
    Session(SessionEvent),
}

/// Timers the core sets ([`Action::After`]); they come back as inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Timer {
    /// Connect to the peer again (if still configured as in `epoch`).
    Retry { peer: PeerId, epoch: u64 },
    /// A restarting peer's restart time ran out (for its `loss`th loss).
    StaleExpired { peer: PeerId, loss: u64 },
    /// This speaker's own restart window is over.
    RestartWindowOver,
}

/// What the core asks the shell to do, in order.
#[derive(Debug)]
pub(crate) enum Action {
    Connect {
        peer: PeerId,
        epoch: u64,
        cfg: PeerConfig,
    },
    /// Run a session on `stream` as connection `conn`.
    StartSession {
        stream: StreamId,
        conn: ConnId,
        peer: PeerId,
        expected_as: u32,
        local: Local,
    },
    /// Whether the connection whose OPEN arrived may go on.
    Admit {
        conn: ConnId,
        ok: bool,
    },
    Send {
        conn: ConnId,
        msg: ToSession,
    },
    After {
        wait: Duration,
        timer: Timer,
    },
    Fib(Vec<FibOp>),
    /// Routes from before this run that were not learned again may go.
    FibConverged,
    /// Set (or remove) a peer's MD5 key on the listening socket.
    ListenerKey {
        peer: PeerId,
        key: Option<String>,
    },
}
