//! Usage figures for `calicoctl ipam show`.

use crate::allocator::{Ipam, IpamError};
use crate::block::{size_of, Attribute};
use calico_api::{Kind, Resource};
use calico_net::IpNet;
use std::net::IpAddr;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockUsage {
    pub cidr: IpNet,
    pub node: Option<String>,
    pub size: u128,
    pub in_use: u128,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolUsage {
    pub name: String,
    pub cidr: IpNet,
    pub size: u128,
    pub in_use: u128,
    pub blocks: Vec<BlockUsage>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Usage {
    pub pools: Vec<PoolUsage>,
}

impl Ipam {
    /// Addresses in use per pool and per block.
    pub fn usage(&self) -> Result<Usage, IpamError> {
        let mut pools = Vec::new();
        for r in self.client().list(Kind::IPPool, None)?.items {
            let Resource::IPPool(p) = r else { continue };
            let cidr = p.spec.cidr.net();
            pools.push(PoolUsage {
                name: p.metadata.name.clone(),
                cidr,
                size: size_of(&cidr),
                in_use: 0,
                blocks: Vec::new(),
            });
        }
        for family in [4u8, 6] {
            for (b, _) in self.blocks(family)? {
                let Some(pool) = pools.iter_mut().find(|p| p.cidr.contains(&b.cidr)) else {
                    continue;
                };
                let in_use = b.in_use() as u128;
                pool.in_use += in_use;
                pool.blocks.push(BlockUsage {
                    cidr: b.cidr,
                    node: b.host().map(String::from),
                    size: b.size() as u128,
                    in_use,
                });
            }
        }
        Ok(Usage { pools })
    }

    /// Who holds an address: its block and attributes, or None if free.
    pub fn holder(&self, ip: IpAddr) -> Result<Option<(IpNet, Attribute)>, IpamError> {
        let family = if ip.is_ipv4() { 4 } else { 6 };
        for (b, _) in self.blocks(family)? {
            if b.cidr.contains(&ip) {
                return Ok(b.holder(ip).cloned().map(|a| (b.cidr, a)));
            }
        }
        Ok(None)
    }
}
