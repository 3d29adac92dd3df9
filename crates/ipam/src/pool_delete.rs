//! Deleting an IP pool as Calico does: disable it (so nothing new is
//! allocated from it), release its empty blocks and their affinities, then
//! delete it. A pool whose addresses are still in use is refused unless
//! forced; forced, the in-use blocks stay (as `ipam check` then reports).

use crate::allocator::{Ipam, IpamError};
use calico_api::{Kind, Resource};
use calico_net::IpNet;

/// What deleting a pool released.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PoolDeleted {
    pub blocks_removed: Vec<IpNet>,
    /// Addresses still allocated in the pool's blocks (only when forced).
    pub left_in_use: usize,
}

impl Ipam {
    fn in_use_within(&self, net: &IpNet) -> Result<usize, IpamError> {
        let family = if net.addr().is_ipv4() { 4 } else { 6 };
        Ok(self
            .blocks(family)?
            .iter()
            .filter(|(b, _)| calico_net::overlaps(net, &b.cidr))
            .map(|(b, _)| b.in_use())
            .sum())
    }

    /// Deletes pool `name` and the IPAM state only it used.
    pub fn delete_pool(&self, name: &str, force: bool) -> Result<PoolDeleted, IpamError> {
        let Resource::IPPool(mut pool) = self.client().get(Kind::IPPool, None, name)? else {
            return Err(calico_client::ClientError::NotFound(format!("IPPool({name})")).into());
        };
        let net: IpNet = pool.spec.cidr.net();
        let refuse = |in_use: usize| IpamError::PoolInUse {
            pool: name.to_string(),
            in_use,
        };
        let in_use = self.in_use_within(&net)?;
        if in_use > 0 && !force {
            return Err(refuse(in_use));
        }
        let was_enabled = !pool.spec.disabled;
        if was_enabled {
            pool.spec.disabled = true;
            self.client().replace(Resource::IPPool(pool.clone()))?;
        }
        let mut out = PoolDeleted::default();
        let family = if net.addr().is_ipv4() { 4 } else { 6 };
        for (b, rev) in self.blocks(family)? {
            if net.contains(&b.cidr) && b.is_empty() && self.remove_empty_block(&b, rev)? {
                out.blocks_removed.push(b.cidr);
            }
        }
        // An address taken between the first look and the disabling.
        out.left_in_use = self.in_use_within(&net)?;
        if out.left_in_use > 0 && !force {
            if was_enabled {
                let Resource::IPPool(mut again) = self.client().get(Kind::IPPool, None, name)?
                else {
                    return Err(refuse(out.left_in_use));
                };
                again.spec.disabled = false;
                self.client().replace(Resource::IPPool(again))?;
            }
            return Err(refuse(out.left_in_use));
        }
        self.client().delete(Kind::IPPool, None, name, None)?;
        Ok(out)
    }
}
