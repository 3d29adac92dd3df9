//! Assignment: auto-assign (own blocks, then a new block, then borrowing,
//! as the pools and strict affinity allow) and a specific address.

use crate::allocator::*;
use crate::block::{Attribute, Block};
use crate::model::*;
use crate::pools::{PoolSet, Use};
use calico_datastore::StoreError;
use calico_net::IpNet;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

impl Ipam {
    pub(crate) fn assign_family(
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
                match self.store.create(&block_key(&block_net), &encode(&block)?) {
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
                .update(&block_key(&block_net), &encode(&block)?, rev)
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
}
