//! One syncer for every consumer of the datastore.
//!
//! A consumer (the policy agent, the BGP agent, the controllers, or the
//! fan-out service on their behalf) names a [`SyncerType`]; the syncer
//! lists and watches exactly the prefixes that type needs, keeps only the
//! kinds it reads, drops what it already delivered (a watch that breaks
//! and lists again yields only the differences: changed keys, new keys,
//! and deletions for keys that vanished meanwhile), and hands the rest on
//! as batches of [`Event`]s with a [`SyncStatus`], the way Calico's
//! syncers report `WaitForDatastore → ResyncInProgress → InSync`.
//!
//! Two sources give the same [`Syncer`] handle: [`direct::start`] over a
//! [`Store`](calico_datastore::Store), and [`typha::client::start`] over
//! the fan-out service ([`typha::server`]), so a consumer cannot tell
//! which one it reads from.
//!
//! The pure part is [`cache::Cache`] (what was delivered, by key, and
//! what a listing or an event changes); the threads around it are thin.

pub mod cache;
pub mod direct;
pub mod typha;

use calico_api::Kind;
use calico_client::keys::{ipam::HOST_PREFIX, parse_resource_key, RESOURCE_PREFIX};
use calico_datastore::Event;
use std::sync::mpsc;
use std::time::Duration;

/// Who the syncer serves; each type reads its own kinds and prefixes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SyncerType {
    /// The policy and route agent: policy, endpoints, sets, pools, nodes,
    /// its configuration, staged policies, and every node's block
    /// affinities (the overlay routes to remote blocks).
    Felix,
    /// The BGP agent: nodes, BGP configuration and peers, pools, workload
    /// endpoints, and block affinities.
    Bgp,
    /// The controllers: nodes, host endpoints, their own configuration.
    Controllers,
}

impl SyncerType {
    pub const ALL: [SyncerType; 3] = [SyncerType::Felix, SyncerType::Bgp, SyncerType::Controllers];

    /// The name on the wire and in logs, as Calico's syncer types.
    pub fn name(self) -> &'static str {
        match self {
            SyncerType::Felix => "felix",
            SyncerType::Bgp => "bgp",
            SyncerType::Controllers => "controllers",
        }
    }

    pub fn from_name(s: &str) -> Option<SyncerType> {
        SyncerType::ALL.into_iter().find(|t| t.name() == s)
    }

    /// The prefixes listed and watched, one watch each. They never overlap.
    /// IPAM blocks and handles are never among them: those change with
    /// every workload and no agent reads them.
    pub fn prefixes(self) -> &'static [&'static str] {
        match self {
            SyncerType::Felix | SyncerType::Bgp => &[RESOURCE_PREFIX, HOST_PREFIX],
            SyncerType::Controllers => &[RESOURCE_PREFIX],
        }
    }

    /// The resource kinds this type reads.
    pub fn kinds(self) -> &'static [Kind] {
        match self {
            SyncerType::Felix => &[
                Kind::Tier,
                Kind::NetworkPolicy,
                Kind::GlobalNetworkPolicy,
                Kind::NetworkSet,
                Kind::GlobalNetworkSet,
                Kind::Profile,
                Kind::WorkloadEndpoint,
                Kind::HostEndpoint,
                Kind::Node,
                Kind::IPPool,
                Kind::FelixConfiguration,
                Kind::StagedNetworkPolicy,
                Kind::StagedGlobalNetworkPolicy,
                Kind::StagedKubernetesNetworkPolicy,
            ],
            SyncerType::Bgp => &[
                Kind::Node,
                Kind::BGPConfiguration,
                Kind::BGPPeer,
                Kind::IPPool,
                Kind::WorkloadEndpoint,
            ],
            SyncerType::Controllers => &[
                Kind::Node,
                Kind::HostEndpoint,
                Kind::KubeControllersConfiguration,
            ],
        }
    }

    /// Whether a key under one of the prefixes is delivered. A resource
    /// key whose kind cannot be read is delivered (the consumer reports
    /// it as a bad record); one of a kind this type never reads is not.
    pub fn wants(self, key: &str) -> bool {
        if key.starts_with(HOST_PREFIX) {
            return self.prefixes().contains(&HOST_PREFIX);
        }
        let Some(rest) = key.strip_prefix(RESOURCE_PREFIX) else {
            return false;
        };
        match parse_resource_key(key) {
            Some((kind, _, _)) => self.kinds().contains(&kind),
            // An unknown plural is no kind of ours.
            None => {
                let plural = rest.split('/').next().unwrap_or_default();
                self.kinds().iter().any(|k| k.plural() == plural)
            }
        }
    }
}

impl std::fmt::Display for SyncerType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Where the syncer stands, as Calico's `api.SyncStatus`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncStatus {
    /// Nothing listed yet (the datastore may be unreachable).
    WaitForDatastore,
    /// Listing again after a break; updates may still be missing.
    ResyncInProgress,
    /// Every prefix listed and watched: what was delivered is the
    /// datastore's state.
    InSync,
}

/// What a consumer receives.
#[derive(Debug, Clone, PartialEq)]
pub enum SyncEvent {
    /// Changes, in order: `Put` with the key's new value, `Delete` with
    /// the revision of the deletion (or of the listing that showed it
    /// gone).
    Updates(Vec<Event>),
    Status(SyncStatus),
    /// The datastore or the fan-out could not be read (retried with
    /// back-off); for logs, and for consumers that give up (`--once`).
    Error(String),
}

/// Why no event came.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RecvError {
    #[error("no event within the timeout")]
    Timeout,
    #[error("the syncer has stopped")]
    Closed,
}

/// Requests from a consumer to its source.
#[derive(Debug)]
pub(crate) enum Control {
    /// Deliver every key again (as `Put`s) and report `InSync` after.
    Resend,
}

/// A consumer's end of a syncer. Dropping it stops the syncer's threads.
#[derive(Debug)]
pub struct Syncer {
    rx: mpsc::Receiver<SyncEvent>,
    control: mpsc::Sender<Control>,
    _stop: calico_datastore::StopOnDrop,
}

impl Syncer {
    pub(crate) fn new(
        rx: mpsc::Receiver<SyncEvent>,
        control: mpsc::Sender<Control>,
        stop: calico_datastore::StopOnDrop,
    ) -> Self {
        Syncer {
            rx,
            control,
            _stop: stop,
        }
    }

    pub fn recv_timeout(&self, timeout: Duration) -> Result<SyncEvent, RecvError> {
        self.rx.recv_timeout(timeout).map_err(|e| match e {
            mpsc::RecvTimeoutError::Timeout => RecvError::Timeout,
            mpsc::RecvTimeoutError::Disconnected => RecvError::Closed,
        })
    }

    /// An event if one is already waiting.
    pub fn try_recv(&self) -> Option<SyncEvent> {
        self.rx.try_recv().ok()
    }

    /// Asks for every key again: the source forgets what it delivered and
    /// lists anew, so each key arrives once more as a `Put`, and then
    /// `InSync`. (The policy agent uses it when it starts keeping whole
    /// resources, for flow logs.)
    pub fn resend(&self) {
        let _ = self.control.send(Control::Resend);
    }
}

/// Back-off between retries: from 200 ms, doubling, at most 10 s.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Backoff(Duration);

impl Backoff {
    pub(crate) const FIRST: Duration = Duration::from_millis(200);
    pub(crate) const MAX: Duration = Duration::from_secs(10);

    pub(crate) fn new() -> Self {
        Backoff(Self::FIRST)
    }

    /// The wait before the next try, doubling the one after.
    pub(crate) fn next(&mut self) -> Duration {
        let now = self.0;
        self.0 = (self.0 * 2).min(Self::MAX);
        now
    }

    pub(crate) fn reset(&mut self) {
        self.0 = Self::FIRST;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use calico_client::keys::{ipam, resource_key};

    #[test]
    fn each_type_takes_its_kinds_and_never_ipam_blocks() {
        let wep = resource_key(Kind::WorkloadEndpoint, Some("ns"), "n-k8s-p-eth0");
        let peer = resource_key(Kind::BGPPeer, None, "rr");
        let kcc = resource_key(Kind::KubeControllersConfiguration, None, "default");
        let net: calico_net::IpNet = "10.0.0.0/26".parse().expect("net");
        let affinity = ipam::affinity_key("node-1", &net);
        let block = ipam::block_key(&net);
        assert!(SyncerType::Felix.wants(&wep));
        assert!(!SyncerType::Felix.wants(&peer));
        assert!(!SyncerType::Felix.wants(&kcc));
        assert!(SyncerType::Felix.wants(&affinity));
        assert!(SyncerType::Bgp.wants(&peer));
        assert!(SyncerType::Bgp.wants(&affinity));
        assert!(!SyncerType::Controllers.wants(&affinity));
        assert!(SyncerType::Controllers.wants(&kcc));
        for t in SyncerType::ALL {
            assert!(!t.wants(&block), "{t} takes IPAM blocks");
            assert!(!t.wants("/calico/ipam/v2/handle/k8s-pod-network.x"));
            assert!(!t.wants("/calico/resources/v3/projectcalico.org/nosuchkinds/x"));
            assert!(t.prefixes().iter().all(|p| !block.starts_with(p)));
            assert_eq!(SyncerType::from_name(t.name()), Some(t));
        }
    }

    #[test]
    fn prefixes_never_overlap() {
        for t in SyncerType::ALL {
            for (i, a) in t.prefixes().iter().enumerate() {
                for b in &t.prefixes()[i + 1..] {
                    assert!(!a.starts_with(b) && !b.starts_with(a), "{a} and {b}");
                }
            }
        }
    }
}
