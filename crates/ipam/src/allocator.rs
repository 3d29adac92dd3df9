//! The allocator: Calico's auto-assign, assign-IP and release, every block,
//! handle and affinity change a compare-and-swap on the datastore.
//!
//! Order of writes for an allocation (as Calico): the handle's count goes up
//! first, then the block is written; if the block write loses a race the
//! handle is put back and the next attempt starts from fresh reads.

use crate::block::{Attribute, Block};
use crate::model::*;
use crate::pools::{PoolSet, Use};
use calico_datastore::{KeyValue, Revision, Store, StoreError};
use calico_net::IpNet;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

/// How many times a lost compare-and-swap race is retried before giving up.
const ATTEMPTS: usize = 100;

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
    store: Arc<dyn Store>,
    client: calico_client::Client,
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

pub(crate) fn encode<T: serde::Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}

/// A write that lost a race (someone changed, created or deleted the key
/// first) is retried from fresh reads; any other failure is final.
fn settle<T>(outcome: Result<T, StoreError>) -> Result<Option<T>, IpamError> {
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
fn retry_cas<T>(
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

fn host_net(ip: IpAddr) -> IpNet {
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
                    .update(CONFIG_KEY, &encode(&cfg), kv.mod_revision),
                None => self.store.create(CONFIG_KEY, &encode(&cfg)),
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

    fn handle_add(&self, handle: &str, block: &IpNet, n: usize) -> Result<(), IpamError> {
        let key = handle_key(handle);
        // Most handles are new (one per workload): try creating first.
        let fresh = Handle {
            block: BTreeMap::from([(block.to_string(), n)]),
            deleted: false,
        };
        match self.store.create(&key, &encode(&fresh)) {
            Ok(_) => return Ok(()),
            Err(StoreError::AlreadyExists { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        retry_cas(&format!("handle {handle}"), || {
            let outcome = match self.store.get(&key)? {
                Some(kv) => {
                    let mut h: Handle = decode(&kv)?;
                    *h.block.entry(block.to_string()).or_default() += n;
                    self.store.update(&key, &encode(&h), kv.mod_revision)
                }
                None => self.store.create(&key, &encode(&fresh)),
            };
            settle(outcome.map(|_| ()))
        })
    }

    fn handle_remove(&self, handle: &str, block: &IpNet, n: usize) -> Result<(), IpamError> {
        let key = handle_key(handle);
        retry_cas(&format!("handle {handle}"), || {
            let Some(kv) = self.store.get(&key)? else {
                return Ok(Some(()));
            };
            let mut h: Handle = decode(&kv)?;
            let cidr = block.to_string();
            let left = h.block.get(&cidr).copied().unwrap_or(0).saturating_sub(n);
            if left == 0 {
                h.block.remove(&cidr);
            } else {
                h.block.insert(cidr, left);
            }
            let outcome = if h.block.is_empty() {
                self.store.delete(&key, Some(kv.mod_revision))
            } else {
                self.store.update(&key, &encode(&h), kv.mod_revision)
            };
            settle(outcome.map(|_| ()))
        })
    }

    /// The handle record, if any.
    pub fn handle(&self, handle: &str) -> Result<Option<Handle>, IpamError> {
        self.store
            .get(&handle_key(handle))?
            .map(|kv| decode(&kv))
            .transpose()
    }

    // ---- allocation ----

    /// Tries to take `n` addresses from one block; returns what it got.
    fn take_from(
        &self,
        net: &IpNet,
        n: usize,
        attr: &Attribute,
        pools: &PoolSet,
        node: Option<&str>,
    ) -> Result<Vec<IpAddr>, IpamError> {
        for _ in 0..ATTEMPTS {
            let Some((mut block, rev)) = self.read_block(net)? else {
                return Ok(Vec::new());
            };
            if let Some(node) = node {
                if block.host() != Some(node) {
                    return Ok(Vec::new());
                }
            }
            let usable = |ip: IpAddr| pools.usable(ip);
            let ips = block.allocate(n, attr, &usable);
            if ips.is_empty() {
                return Ok(Vec::new());
            }
            let handle = attr.handle.clone().unwrap_or_default();
            self.handle_add(&handle, net, ips.len())?;
            match self.store.update(&block_key(net), &encode(&block), rev) {
                Ok(_) => return Ok(ips),
                Err(StoreError::Conflict { .. } | StoreError::NotFound { .. }) => {
                    self.handle_remove(&handle, net, ips.len())?;
                }
                Err(e) => {
                    self.handle_remove(&handle, net, ips.len())?;
                    return Err(e.into());
                }
            }
        }
        Err(IpamError::Contention {
            what: format!("block {net}"),
        })
    }

    /// Makes `node`'s affinity for `net` confirmed, whatever state it is in.
    fn confirm_affinity(&self, node: &str, net: &IpNet) -> Result<(), IpamError> {
        let key = affinity_key(node, net);
        let confirmed = encode(&Affinity {
            state: AffinityState::Confirmed,
            deleted: false,
        });
        retry_cas(&format!("the affinity of {node} for {net}"), || {
            let outcome = match self.store.get(&key)? {
                Some(kv) if decode::<Affinity>(&kv)?.state == AffinityState::Confirmed => {
                    return Ok(Some(()))
                }
                Some(kv) => self.store.update(&key, &confirmed, kv.mod_revision),
                None => self.store.create(&key, &confirmed),
            };
            settle(outcome.map(|_| ()))
        })
    }

    /// Claims an unclaimed block of `pool` for `node`; None when the pool is full.
    ///
    /// The affinity is written (pending) before the block, so a crash never
    /// leaves a block that no node knows it owns. Whoever creates the block
    /// owns it; a loser whose node is not the owner withdraws its affinity.
    fn claim_block(
        &self,
        node: &str,
        pool: &IpNet,
        block_len: u8,
        existing: &BTreeSet<IpNet>,
    ) -> Result<Option<IpNet>, IpamError> {
        let host = format!("host:{node}");
        for candidate in crate::pools::candidate_blocks(pool, block_len, node) {
            if crate::pools::overlaps_any(existing, &candidate) {
                continue;
            }
            let aff_key = affinity_key(node, &candidate);
            let pending = Affinity {
                state: AffinityState::Pending,
                deleted: false,
            };
            match self.store.create(&aff_key, &encode(&pending)) {
                Ok(_) | Err(StoreError::AlreadyExists { .. }) => {}
                Err(e) => return Err(e.into()),
            }
            let block = Block::new(candidate, Some(host.clone()));
            match self.store.create(&block_key(&candidate), &encode(&block)) {
                Ok(_) => {}
                Err(StoreError::AlreadyExists { .. }) => {
                    let owner = self.read_block(&candidate)?.and_then(|(b, _)| b.affinity);
                    if owner.as_deref() != Some(host.as_str()) {
                        // Another node won it: withdraw our affinity (unless it moved on meanwhile).
                        if let Some(kv) = self.store.get(&aff_key)? {
                            if decode::<Affinity>(&kv)?.state == AffinityState::Pending {
                                match self.store.delete(&aff_key, Some(kv.mod_revision)) {
                                    Ok(_)
                                    | Err(
                                        StoreError::NotFound { .. } | StoreError::Conflict { .. },
                                    ) => {}
                                    Err(e) => return Err(e.into()),
                                }
                            }
                        }
                        continue;
                    }
                    // Another allocator on this same node claimed it: it is ours too.
                }
                Err(e) => return Err(e.into()),
            }
            self.confirm_affinity(node, &candidate)?;
            return Ok(Some(candidate));
        }
        Ok(None)
    }

    fn assign_family(
        &self,
        req: &AutoAssign,
        family: u8,
        n: usize,
        attr: &Attribute,
        cfg: &IpamConfig,
    ) -> Result<Vec<IpNet>, IpamError> {
        if n == 0 {
            return Ok(Vec::new());
        }
        let restrict = if family == 4 {
            &req.pools_v4
        } else {
            &req.pools_v6
        };
        let use_ = if req.tunnel {
            Use::Tunnel
        } else {
            Use::Workload
        };
        let pools = PoolSet::load(&self.client, &req.node, family, use_, restrict)?;
        if pools.is_empty() {
            let what = if req.tunnel { "tunnel" } else { "workload" };
            return Err(IpamError::NoPool {
                family,
                node: req.node.clone(),
                what,
            });
        }
        let mut got: Vec<IpAddr> = Vec::new();
        let release_on_error = |got: &[IpAddr]| {
            if !got.is_empty() {
                let _ = self.release_ips(got);
            }
        };

        // 1. The node's own blocks.
        for net in self.node_blocks(&req.node, family)? {
            if got.len() == n {
                break;
            }
            if !pools.contains_block(&net) {
                continue;
            }
            match self.take_from(&net, n - got.len(), attr, &pools, Some(&req.node)) {
                Ok(ips) => got.extend(ips),
                Err(e) => {
                    release_on_error(&got);
                    return Err(e);
                }
            }
        }

        // 2. New blocks for the node.
        let mut limit_hit = false;
        while got.len() < n && cfg.auto_allocate_blocks {
            let held = self.node_blocks(&req.node, family)?.len();
            if cfg.max_blocks_per_host > 0 && held >= cfg.max_blocks_per_host {
                limit_hit = true;
                break;
            }
            let existing: BTreeSet<IpNet> = self
                .blocks(family)?
                .into_iter()
                .map(|(b, _)| b.cidr)
                .collect();
            let mut claimed = None;
            for pool in pools.pools() {
                if let Some(net) =
                    self.claim_block(&req.node, &pool.cidr, pool.block_size, &existing)?
                {
                    claimed = Some(net);
                    break;
                }
            }
            let Some(net) = claimed else { break };
            match self.take_from(&net, n - got.len(), attr, &pools, Some(&req.node)) {
                Ok(ips) if ips.is_empty() => break, // a block wholly reserved; stop claiming more
                Ok(ips) => got.extend(ips),
                Err(e) => {
                    release_on_error(&got);
                    return Err(e);
                }
            }
        }

        // 3. Borrow from other nodes' blocks.
        if got.len() < n {
            if cfg.strict_affinity {
                release_on_error(&got);
                return Err(if limit_hit {
                    IpamError::BlockLimit {
                        node: req.node.clone(),
                        max: cfg.max_blocks_per_host,
                    }
                } else {
                    IpamError::StrictAffinity {
                        family,
                        node: req.node.clone(),
                    }
                });
            }
            for (block, _) in self.blocks(family)? {
                if got.len() == n {
                    break;
                }
                if !pools.contains_block(&block.cidr) || block.host() == Some(req.node.as_str()) {
                    continue;
                }
                match self.take_from(&block.cidr, n - got.len(), attr, &pools, None) {
                    Ok(ips) => got.extend(ips),
                    Err(e) => {
                        release_on_error(&got);
                        return Err(e);
                    }
                }
            }
        }
        if got.len() < n {
            release_on_error(&got);
            return Err(if limit_hit {
                IpamError::BlockLimit {
                    node: req.node.clone(),
                    max: cfg.max_blocks_per_host,
                }
            } else {
                IpamError::Exhausted {
                    family,
                    node: req.node.clone(),
                }
            });
        }
        Ok(got.into_iter().map(host_net).collect())
    }

    /// Allocates addresses for a workload: from the node's blocks, then new
    /// blocks for the node, then (unless strict affinity) other nodes' blocks.
    /// All or nothing: on failure nothing stays allocated.
    pub fn auto_assign(&self, req: &AutoAssign) -> Result<Assigned, IpamError> {
        let cfg = self.config()?;
        let attr = Attribute {
            handle: Some(req.handle.clone()),
            secondary: Some(req.attrs.clone()),
        };
        let v4 = self.assign_family(req, 4, req.num_v4, &attr, &cfg)?;
        let v6 = match self.assign_family(req, 6, req.num_v6, &attr, &cfg) {
            Ok(v6) => v6,
            Err(e) => {
                let ips: Vec<IpAddr> = v4.iter().map(IpNet::addr).collect();
                let _ = self.release_ips(&ips);
                return Err(e);
            }
        };
        Ok(Assigned { v4, v6 })
    }

    /// Allocates one specific address (claiming its block for `node` if unclaimed).
    pub fn assign_ip(
        &self,
        ip: IpAddr,
        handle: &str,
        attrs: BTreeMap<String, String>,
        node: &str,
    ) -> Result<(), IpamError> {
        let family = if ip.is_ipv4() { 4 } else { 6 };
        let pools = PoolSet::load_all_enabled(&self.client, family)?;
        let Some(pool) = pools.pool_of(ip) else {
            return Err(IpamError::NotInPool { ip });
        };
        if let Some(name) = pools.reservation_of(ip) {
            return Err(IpamError::Reserved {
                ip,
                reservation: name.to_string(),
            });
        }
        let block_net = crate::pools::block_containing(&pool.cidr, pool.block_size, ip);
        let attr = Attribute {
            handle: Some(handle.to_string()),
            secondary: Some(attrs),
        };
        for _ in 0..ATTEMPTS {
            let Some((mut block, rev)) = self.read_block(&block_net)? else {
                // Claim exactly this block for the node, then retry the allocation.
                let block = Block::new(block_net, Some(format!("host:{node}")));
                match self.store.create(&block_key(&block_net), &encode(&block)) {
                    Ok(_) => self.confirm_affinity(node, &block_net)?,
                    Err(StoreError::AlreadyExists { .. }) => {}
                    Err(e) => return Err(e.into()),
                }
                continue;
            };
            if let Err(holder) = block.allocate_ip(ip, &attr) {
                let handle = holder
                    .and_then(|h| h.handle)
                    .unwrap_or_else(|| "(unknown)".into());
                return Err(IpamError::InUse { ip, handle });
            }
            self.handle_add(handle, &block_net, 1)?;
            match self
                .store
                .update(&block_key(&block_net), &encode(&block), rev)
            {
                Ok(_) => return Ok(()),
                Err(StoreError::Conflict { .. }) => {
                    self.handle_remove(handle, &block_net, 1)?;
                }
                Err(e) => {
                    self.handle_remove(handle, &block_net, 1)?;
                    return Err(e.into());
                }
            }
        }
        Err(IpamError::Contention {
            what: format!("block {block_net}"),
        })
    }

    // ---- release ----

    /// Releases addresses (those not allocated are ignored); returns those released.
    pub fn release_ips(&self, ips: &[IpAddr]) -> Result<Vec<IpAddr>, IpamError> {
        let mut by_block: BTreeMap<IpNet, Vec<IpAddr>> = BTreeMap::new();
        for family in [4u8, 6] {
            let wanted: Vec<IpAddr> = ips
                .iter()
                .copied()
                .filter(|ip| (ip.is_ipv4()) == (family == 4))
                .collect();
            if wanted.is_empty() {
                continue;
            }
            for (block, _) in self.blocks(family)? {
                for ip in wanted.iter().filter(|ip| block.cidr.contains(*ip)) {
                    by_block.entry(block.cidr).or_default().push(*ip);
                }
            }
        }
        let mut released = Vec::new();
        for (net, ips) in by_block {
            released.extend(self.release_in_block(&net, |b| b.release(&ips))?);
        }
        Ok(released)
    }

    /// Applies `free` to a block with CAS, then fixes the handles' counts.
    pub(crate) fn release_in_block(
        &self,
        net: &IpNet,
        free: impl Fn(&mut Block) -> Vec<(IpAddr, Option<String>)>,
    ) -> Result<Vec<IpAddr>, IpamError> {
        for _ in 0..ATTEMPTS {
            let Some((mut block, rev)) = self.read_block(net)? else {
                return Ok(Vec::new());
            };
            let freed = free(&mut block);
            if freed.is_empty() {
                return Ok(Vec::new());
            }
            match self.store.update(&block_key(net), &encode(&block), rev) {
                Ok(_) => {
                    let mut per_handle: BTreeMap<String, usize> = BTreeMap::new();
                    for (_, h) in &freed {
                        if let Some(h) = h {
                            *per_handle.entry(h.clone()).or_default() += 1;
                        }
                    }
                    for (h, n) in per_handle {
                        self.handle_remove(&h, net, n)?;
                    }
                    return Ok(freed.into_iter().map(|(ip, _)| ip).collect());
                }
                Err(StoreError::Conflict { .. } | StoreError::NotFound { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(IpamError::Contention {
            what: format!("block {net}"),
        })
    }

    /// Releases everything a handle holds. Releasing twice is harmless.
    pub fn release_handle(&self, handle: &str) -> Result<Vec<IpAddr>, IpamError> {
        let Some(h) = self.handle(handle)? else {
            return Ok(Vec::new());
        };
        let mut released = Vec::new();
        for cidr in h.block.keys() {
            let Ok(net) = cidr.parse::<IpNet>() else {
                continue;
            };
            let handle = handle.to_string();
            released.extend(self.release_in_block(&net, move |b| {
                let ips = b.ips_of(&handle);
                b.release(&ips)
            })?);
        }
        // Counts were decremented as blocks were freed; drop a record left
        // with stale counts (a crash between writes) as well.
        let key = handle_key(handle);
        if let Some(kv) = self.store.get(&key)? {
            let h: Handle = decode(&kv)?;
            let still_held = h
                .block
                .keys()
                .filter_map(|c| c.parse::<IpNet>().ok())
                .any(|net| {
                    self.read_block(&net)
                        .ok()
                        .flatten()
                        .is_some_and(|(b, _)| !b.ips_of(handle).is_empty())
                });
            if !still_held {
                match self.store.delete(&key, Some(kv.mod_revision)) {
                    Ok(_) | Err(StoreError::NotFound { .. } | StoreError::Conflict { .. }) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(released)
    }

    /// The blocks a handle names, as they are now.
    fn blocks_of(&self, handle: &str) -> Result<Vec<Block>, IpamError> {
        let Some(h) = self.handle(handle)? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for cidr in h.block.keys() {
            let Ok(net) = cidr.parse::<IpNet>() else {
                continue;
            };
            if let Some((b, _)) = self.read_block(&net)? {
                out.push(b);
            }
        }
        Ok(out)
    }

    /// The nodes a handle's addresses were assigned for (their `node`
    /// attribute); empty when it holds none.
    pub fn handle_nodes(&self, handle: &str) -> Result<BTreeSet<String>, IpamError> {
        Ok(self
            .blocks_of(handle)?
            .iter()
            .flat_map(|b| {
                b.allocated()
                    .filter(|(_, a)| a.handle.as_deref() == Some(handle))
                    .filter_map(|(_, a)| a.secondary.as_ref()?.get("node").cloned())
                    .collect::<Vec<_>>()
            })
            .collect())
    }

    /// Addresses a handle holds.
    pub fn ips_by_handle(&self, handle: &str) -> Result<Vec<IpAddr>, IpamError> {
        Ok(self
            .blocks_of(handle)?
            .iter()
            .flat_map(|b| b.ips_of(handle))
            .collect())
    }
}
