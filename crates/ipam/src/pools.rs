//! Which pools an allocation may use, and which addresses are reserved.

use crate::allocator::IpamError;
use calico_api::{AssignmentMode, IpPoolSpec, IpPoolUse, Kind, Resource};
use calico_client::{Client, ClientError};
use calico_net::IpNet;
use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::net::IpAddr;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Use {
    Workload,
    Tunnel,
}

#[derive(Debug, Clone)]
pub struct Pool {
    pub name: String,
    pub cidr: IpNet,
    pub block_size: u8,
}

/// The pools that apply to one request, and every reservation.
#[derive(Debug, Default)]
pub struct PoolSet {
    pools: Vec<Pool>,
    reservations: Vec<(String, IpNet)>,
}

fn node_labels(client: &Client, node: &str) -> Result<BTreeMap<String, String>, IpamError> {
    match client.get(Kind::Node, None, node) {
        Ok(r) => Ok(r.meta().labels.clone()),
        Err(ClientError::NotFound(_)) => Ok(BTreeMap::new()),
        Err(e) => Err(e.into()),
    }
}

/// Enabled pools of a family, sorted by CIDR, with their specs.
fn enabled_pools(client: &Client, family: u8) -> Result<Vec<(IpPoolSpec, Pool)>, IpamError> {
    let mut out = Vec::new();
    for r in client.list(Kind::IPPool, None)?.items {
        let Resource::IPPool(p) = r else { continue };
        let cidr = p.spec.cidr.net();
        if cidr.addr().is_ipv4() != (family == 4) || p.spec.disabled {
            continue;
        }
        let block_size = p
            .spec
            .block_size
            .unwrap_or(if family == 4 { 26 } else { 122 });
        out.push((
            p.spec,
            Pool {
                name: p.metadata.name,
                cidr,
                block_size,
            },
        ));
    }
    out.sort_by_key(|(_, pool)| pool.cidr);
    Ok(out)
}

fn reservations(client: &Client) -> Result<Vec<(String, IpNet)>, IpamError> {
    let mut out = Vec::new();
    for r in client.list(Kind::IPReservation, None)?.items {
        if let Resource::IPReservation(res) = r {
            for c in &res.spec.reserved_cidrs {
                out.push((res.metadata.name.clone(), c.net()));
            }
        }
    }
    Ok(out)
}

impl PoolSet {
    /// Enabled pools of `family` for `use_`, whose nodeSelector matches the
    /// node, restricted to `restrict` (names or CIDRs) when given. Pools in
    /// Manual assignment mode apply only when named.
    pub fn load(
        client: &Client,
        node: &str,
        family: u8,
        use_: Use,
        restrict: &[String],
    ) -> Result<Self, IpamError> {
        let labels = node_labels(client, node)?;
        let wanted_use = match use_ {
            Use::Workload => IpPoolUse::Workload,
            Use::Tunnel => IpPoolUse::Tunnel,
        };
        let pools = enabled_pools(client, family)?
            .into_iter()
            .filter(|(spec, pool)| {
                let named = restrict
                    .iter()
                    .any(|w| *w == pool.name || w.parse::<IpNet>().ok() == Some(pool.cidr));
                let uses_ok =
                    spec.allowed_uses.is_empty() || spec.allowed_uses.contains(&wanted_use);
                let auto_ok = spec.assignment_mode != Some(AssignmentMode::Manual) || named;
                let selected = spec.node_selector.matches(&labels);
                uses_ok && auto_ok && selected && (restrict.is_empty() || named)
            })
            .map(|(_, pool)| pool)
            .collect();
        Ok(PoolSet {
            pools,
            reservations: reservations(client)?,
        })
    }

    /// Every enabled pool of `family`, whatever its selector or uses.
    pub fn load_all_enabled(client: &Client, family: u8) -> Result<Self, IpamError> {
        let pools = enabled_pools(client, family)?
            .into_iter()
            .map(|(_, pool)| pool)
            .collect();
        Ok(PoolSet {
            pools,
            reservations: reservations(client)?,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.pools.is_empty()
    }

    pub fn pools(&self) -> &[Pool] {
        &self.pools
    }

    pub fn contains_block(&self, block: &IpNet) -> bool {
        self.pools.iter().any(|p| p.cidr.contains(block))
    }

    pub fn pool_of(&self, ip: IpAddr) -> Option<&Pool> {
        self.pools.iter().find(|p| p.cidr.contains(&ip))
    }

    pub fn reservation_of(&self, ip: IpAddr) -> Option<&str> {
        self.reservations
            .iter()
            .find(|(_, n)| n.contains(&ip))
            .map(|(name, _)| name.as_str())
    }

    /// An address auto-assign may hand out: not reserved.
    pub fn usable(&self, ip: IpAddr) -> bool {
        self.reservation_of(ip).is_none()
    }
}

/// The block of `block_len` inside `pool` that contains `ip`.
pub fn block_containing(pool: &IpNet, block_len: u8, ip: IpAddr) -> IpNet {
    IpNet::new(ip, block_len).map_or(*pool, |n| n.trunc())
}

/// Whether `net` overlaps any of `blocks`: one of them contains it (or is
/// it), or lies inside it. A block of another size over the same addresses
/// (a pool deleted in use and re-created with another block size) must
/// never be claimed: both would hand out the same address.
pub fn overlaps_any(blocks: &std::collections::BTreeSet<IpNet>, net: &IpNet) -> bool {
    let containing = (0..=net.prefix_len())
        .any(|len| IpNet::new(net.addr(), len).is_ok_and(|n| blocks.contains(&n.trunc())));
    let (Ok(lo), Ok(hi)) = (
        IpNet::new(net.network(), 0),
        IpNet::new(net.broadcast(), net.max_prefix_len()),
    ) else {
        return containing;
    };
    containing || blocks.range(lo..=hi).next().is_some()
}

/// Every block of `pool`, starting at a place derived from the node's name
/// (so nodes claiming at once rarely collide) and wrapping around.
pub fn candidate_blocks(pool: &IpNet, block_len: u8, node: &str) -> impl Iterator<Item = IpNet> {
    let bits = u32::from(block_len.saturating_sub(pool.prefix_len()));
    let count: u128 = 1u128.checked_shl(bits).unwrap_or(u128::MAX);
    let mut h = std::collections::hash_map::DefaultHasher::new();
    node.hash(&mut h);
    let start = u128::from(h.finish()) % count;
    let step_bits = u32::from(pool.max_prefix_len() - block_len);
    let pool = *pool;
    (0..count).map(move |i| {
        let index = (start + i) % count;
        let offset = index.checked_shl(step_bits).unwrap_or(0);
        IpNet::new(crate::block::nth(&pool, offset), block_len).map_or(pool, |n| n.trunc())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_cover_the_pool_once() {
        let pool: IpNet = "10.0.0.0/24".parse().unwrap();
        let blocks: Vec<IpNet> = candidate_blocks(&pool, 26, "node-a").collect();
        assert_eq!(blocks.len(), 4);
        let mut sorted = blocks.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), 4);
        assert!(blocks
            .iter()
            .all(|b| pool.contains(b) && b.prefix_len() == 26));
        let v6: IpNet = "fd00::/48".parse().unwrap();
        let first = candidate_blocks(&v6, 122, "n").next().unwrap();
        assert!(v6.contains(&first) && first.prefix_len() == 122);
        assert_eq!(
            block_containing(&pool, 26, "10.0.0.77".parse().unwrap()).to_string(),
            "10.0.0.64/26"
        );
    }
}
