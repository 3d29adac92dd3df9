//! A session's outgoing queue: bounded, with a per-prefix backlog so a
//! slow reader costs memory bounded by the routes there are.

use crate::rib::{Announce, PeerId};
use crate::session::ToSession;
use calico_bgp_codec::Afi;
use ipnet::IpNet;
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::sync::mpsc;
use tracing::warn;

/// A session's queue, as the shell sees it.
pub(super) struct Outbox {
    pub(super) peer: PeerId,
    pub(super) tx: mpsc::Sender<ToSession>,
    pub(super) kill: Arc<tokio::sync::Notify>,
    /// Route changes waiting for room in the queue, by prefix.
    pub(super) backlog: BTreeMap<IpNet, Announce>,
    /// End-of-RIB to send once the backlog is out.
    pub(super) eor_after: Option<Vec<Afi>>,
}

impl Outbox {
    /// Queues `m` for the session. Route changes that do not fit wait in
    /// the backlog, where a later change to a prefix replaces an earlier
    /// one: what waits is bounded by the routes there are, however fast
    /// they change (a peer that stops reading is caught by the session's
    /// write deadline). End-of-RIB waits behind the backlog; a control
    /// message that does not fit ends the session.
    pub(super) fn push(&mut self, m: ToSession) {
        match m {
            ToSession::Send(announces) if !self.backlog.is_empty() => {
                self.backlog
                    .extend(announces.into_iter().map(|a| (*a.prefix(), a)));
            }
            ToSession::EndOfRib(afis) if !self.backlog.is_empty() => self.eor_after = Some(afis),
            m => match self.tx.try_send(m) {
                Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => {}
                Err(mpsc::error::TrySendError::Full(ToSession::Send(announces))) => {
                    self.backlog
                        .extend(announces.into_iter().map(|a| (*a.prefix(), a)));
                }
                Err(mpsc::error::TrySendError::Full(ToSession::EndOfRib(afis))) => {
                    self.eor_after = Some(afis);
                }
                Err(mpsc::error::TrySendError::Full(_)) => {
                    warn!("BGP {}: send queue full, ending the session", self.peer);
                    self.kill.notify_one();
                }
            },
        }
    }

    /// Moves the backlog to the session once its queue has room.
    pub(super) fn flush(&mut self) {
        if !self.backlog.is_empty() {
            let permit = match self.tx.try_reserve() {
                Ok(p) => p,
                Err(_) => return,
            };
            let batch = std::mem::take(&mut self.backlog).into_values().collect();
            permit.send(ToSession::Send(batch));
        }
        if let Some(afis) = self.eor_after.take() {
            self.push(ToSession::EndOfRib(afis));
        }
    }
}
