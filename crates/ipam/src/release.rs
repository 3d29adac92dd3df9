//! Release: by address and by handle, each block re-read and changed with
//! compare-and-swap.

use crate::allocator::*;
use crate::block::Block;
use crate::model::*;
use calico_datastore::StoreError;
use calico_net::IpNet;
use std::collections::BTreeMap;
use std::net::IpAddr;

impl Ipam {
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
            match self.store.update(&block_key(net), &encode(&block)?, rev) {
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
}
