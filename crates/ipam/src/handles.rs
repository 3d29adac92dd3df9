//! Handles: how many addresses each holds in which block, kept in step
//! with the blocks (the count goes up before a block write, down after).

use crate::allocator::*;
use crate::block::Block;
use crate::model::*;
use calico_datastore::StoreError;
use calico_net::IpNet;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

impl Ipam {
    pub(crate) fn handle_add(
        &self,
        handle: &str,
        block: &IpNet,
        n: usize,
    ) -> Result<(), IpamError> {
        let key = handle_key(handle);
        // Most handles are new (one per workload): try creating first.
        let fresh = Handle {
            block: BTreeMap::from([(block.to_string(), n)]),
            deleted: false,
        };
        match self.store.create(&key, &encode(&fresh)?) {
            Ok(_) => return Ok(()),
            Err(StoreError::AlreadyExists { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        retry_cas(&format!("handle {handle}"), || {
            let outcome = match self.store.get(&key)? {
                Some(kv) => {
                    let mut h: Handle = decode(&kv)?;
                    *h.block.entry(block.to_string()).or_default() += n;
                    self.store.update(&key, &encode(&h)?, kv.mod_revision)
                }
                None => self.store.create(&key, &encode(&fresh)?),
            };
            settle(outcome.map(|_| ()))
        })
    }

    pub(crate) fn handle_remove(
        &self,
        handle: &str,
        block: &IpNet,
        n: usize,
    ) -> Result<(), IpamError> {
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
                self.store.update(&key, &encode(&h)?, kv.mod_revision)
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

    /// The blocks a handle names, as they are now.
    pub(crate) fn blocks_of(&self, handle: &str) -> Result<Vec<Block>, IpamError> {
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
