//! Blocks and affinities: taking addresses from a block, claiming a new
//! block for a node (affinity first, then the block, both compare-and-swap)
//! and confirming the affinity.

use crate::allocator::*;
use crate::block::{Attribute, Block};
use crate::model::*;
use crate::pools::PoolSet;
use calico_datastore::StoreError;
use calico_net::IpNet;
use std::collections::BTreeSet;
use std::net::IpAddr;

impl Ipam {
    /// Tries to take `n` addresses from one block; returns what it got.
    pub(crate) fn take_from(
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
            match self.store.update(&block_key(net), &encode(&block)?, rev) {
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
    pub(crate) fn confirm_affinity(&self, node: &str, net: &IpNet) -> Result<(), IpamError> {
        let key = affinity_key(node, net);
        let confirmed = encode(&Affinity {
            state: AffinityState::Confirmed,
            deleted: false,
        })?;
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
    pub(crate) fn claim_block(
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
            match self.store.create(&aff_key, &encode(&pending)?) {
                Ok(_) | Err(StoreError::AlreadyExists { .. }) => {}
                Err(e) => return Err(e.into()),
            }
            let block = Block::new(candidate, Some(host.clone()));
            match self.store.create(&block_key(&candidate), &encode(&block)?) {
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
}
