//! The allocator: Calico's auto-assign, assign-IP and release, every block,
//! handle and affinity change a compare-and-swap on the datastore.
//!
//! Order of writes for an allocation (as Calico): the handle's count goes up
//! first, then the block is written; if the block write loses a race the
//! handle is put back and the next attempt starts from fresh reads.

use crate::block::Block;
use crate::model::*;
use calico_datastore::{KeyValue, Revision, Store, StoreError};
use calico_net::IpNet;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

/// How many times a lost compare-and-swap race is retried before giving up.
pub(crate) const ATTEMPTS: usize = 100;

#[derive(Debug, thiserror::Error)]
pub enum IpamError {
    #[error("no enabled IPv{family} pool allows {what} addresses for node {node}")]
    NoPool {
        family: u8,
        node: String,
        what: &'static str,
    },
    #[error("the IPv{family} pools have no free address left for node {node}")]
    Exhausted { family: u8, node: String },
    #[error("node {node} has no free address in its own blocks and no unclaimed IPv{family} block is left; strict affinity forbids borrowing from other nodes' blocks")]
    StrictAffinity { family: u8, node: String },
    #[error("node {node} already holds {max} blocks (maxBlocksPerHost) and they are full")]
    BlockLimit { node: String, max: usize },
    #[error("{ip} is not in any enabled IP pool")]
    NotInPool { ip: IpAddr },
    #[error("{ip} is reserved by IPReservation {reservation}")]
    Reserved { ip: IpAddr, reservation: String },
    #[error("{ip} is already in use by handle {handle}")]
    InUse { ip: IpAddr, handle: String },
    #[error("IPPool {pool} still has {in_use} addresses in use; release them first (or delete with --force, leaving their blocks outside any pool)")]
    PoolInUse { pool: String, in_use: usize },
    #[error("gave up after {ATTEMPTS} attempts: the datastore kept changing under {what}")]
    Contention { what: String },
    #[error("the IPAM record at {key} cannot be read: {reason}")]
    Corrupt { key: String, reason: String },
    #[error("an IPAM record cannot be encoded")]
    Encode(#[source] serde_json::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Client(#[from] calico_client::ClientError),
}

/// What to allocate.
#[derive(Debug, Clone, Default)]
pub struct AutoAssign {
    pub handle: String,
    pub node: String,
    pub num_v4: usize,
    pub num_v6: usize,
    /// Stored with each address (pod, namespace, node, timestamp...).
    pub attrs: BTreeMap<String, String>,
    /// Restrict to these pools (names or CIDRs); empty means all that apply.
    pub pools_v4: Vec<String>,
    pub pools_v6: Vec<String>,
    /// Workload (default) or Tunnel addresses.
    pub tunnel: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Assigned {
    pub v4: Vec<IpNet>,
    pub v6: Vec<IpNet>,
}

/// Block-based IPAM over a datastore.
pub struct Ipam {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) client: calico_client::Client,
}

impl std::fmt::Debug for Ipam {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ipam").field("store", &self.store).finish()
    }
}

pub(crate) fn decode<T: serde::de::DeserializeOwned>(kv: &KeyValue) -> Result<T, IpamError> {
    serde_json::from_slice(&kv.value).map_err(|e| IpamError::Corrupt {
        key: kv.key.clone(),
        reason: e.to_string(),
    })
}

pub(crate) fn encode<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, IpamError> {
    serde_json::to_vec(value).map_err(IpamError::Encode)
}

/// A write that lost a race (someone changed, created or deleted the key
/// first) is retried from fresh reads; any other failure is final.
pub(crate) fn settle<T>(outcome: Result<T, StoreError>) -> Result<Option<T>, IpamError> {
    match outcome {
        Ok(v) => Ok(Some(v)),
        Err(
            StoreError::Conflict { .. }
            | StoreError::AlreadyExists { .. }
            | StoreError::NotFound { .. },
        ) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Runs `attempt` until it succeeds (`Some`), fails, or loses too many races.
pub(crate) fn retry_cas<T>(
    what: &str,
    mut attempt: impl FnMut() -> Result<Option<T>, IpamError>,
) -> Result<T, IpamError> {
    for _ in 0..ATTEMPTS {
        if let Some(v) = attempt()? {
            return Ok(v);
        }
    }
    Err(IpamError::Contention {
        what: what.to_string(),
    })
}

pub(crate) fn host_net(ip: IpAddr) -> IpNet {
    IpNet::from(ip)
}

impl Ipam {
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn calico_client::Clock>) -> Self {
        let client = calico_client::Client::new(Arc::clone(&store), clock);
        Ipam { store, client }
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn client(&self) -> &calico_client::Client {
        &self.client
    }

    // ---- configuration ----

    pub fn config(&self) -> Result<IpamConfig, IpamError> {
        match self.store.get(CONFIG_KEY)? {
            Some(kv) => decode(&kv),
            None => Ok(IpamConfig::default()),
        }
    }

    pub fn set_config(&self, change: impl Fn(&mut IpamConfig)) -> Result<IpamConfig, IpamError> {
        retry_cas("the IPAM configuration", || {
            let current = self.store.get(CONFIG_KEY)?;
            let mut cfg = match &current {
                Some(kv) => decode(kv)?,
                None => IpamConfig::default(),
            };
            change(&mut cfg);
            let outcome = match &current {
                Some(kv) => self
                    .store
                    .update(CONFIG_KEY, &encode(&cfg)?, kv.mod_revision),
                None => self.store.create(CONFIG_KEY, &encode(&cfg)?),
            };
            settle(outcome.map(|_| cfg))
        })
    }

    // ---- blocks ----

    pub fn read_block(&self, net: &IpNet) -> Result<Option<(Block, Revision)>, IpamError> {
        match self.store.get(&block_key(net))? {
            Some(kv) => Ok(Some((decode(&kv)?, kv.mod_revision))),
            None => Ok(None),
        }
    }

    /// Every block of a family, with revisions.
    pub fn blocks(&self, family: u8) -> Result<Vec<(Block, Revision)>, IpamError> {
        let listing = self.store.list(&blocks_prefix(family))?;
        listing
            .items
            .iter()
            .map(|kv| Ok((decode(kv)?, kv.mod_revision)))
            .collect()
    }

    /// The blocks affine to `node` (confirmed affinities only).
    pub fn node_blocks(&self, node: &str, family: u8) -> Result<Vec<IpNet>, IpamError> {
        let listing = self.store.list(&affinities_prefix(node, family))?;
        let mut out = Vec::new();
        for kv in &listing.items {
            let aff: Affinity = decode(kv)?;
            if aff.state == AffinityState::Confirmed {
                if let Some((_, net)) = parse_affinity_key(&kv.key) {
                    out.push(net);
                }
            }
        }
        Ok(out)
    }

    // ---- handles ----
}
