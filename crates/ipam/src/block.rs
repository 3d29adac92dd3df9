//! An allocation block: a CIDR carved from a pool, its free list and who
//! holds each address. Pure data and pure operations; stored as JSON in
//! exactly Calico's `AllocationBlock` shape.

use calico_net::IpNet;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::IpAddr;

/// Who holds an address: a handle and free-form attributes (pod, namespace, node, timestamp).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attribute {
    #[serde(rename = "handle_id")]
    pub handle: Option<String>,
    #[serde(default)]
    pub secondary: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Block {
    pub cidr: IpNet,
    /// `host:<node>` when affine to a node.
    pub affinity: Option<String>,
    /// Per ordinal: index into `attributes` when allocated.
    pub allocations: Vec<Option<usize>>,
    /// Free ordinals, in the order they will be handed out.
    pub unallocated: Vec<u32>,
    pub attributes: Vec<Attribute>,
    #[serde(default)]
    pub sequence_number: u64,
    #[serde(default)]
    pub sequence_number_for_allocation: BTreeMap<String, u64>,
    #[serde(default)]
    pub deleted: bool,
}

/// The address at `ordinal` in `net`.
pub fn nth(net: &IpNet, ordinal: u128) -> IpAddr {
    match net {
        IpNet::V4(n) => {
            let base = u128::from(u32::from(n.network()));
            IpAddr::V4(u32::try_from(base + ordinal).unwrap_or(u32::MAX).into())
        }
        IpNet::V6(n) => IpAddr::V6((u128::from(n.network()) + ordinal).into()),
    }
}

/// The ordinal of `ip` in `net`, if it is inside.
pub fn ordinal_of(net: &IpNet, ip: IpAddr) -> Option<u128> {
    if !net.contains(&ip) {
        return None;
    }
    Some(match (net, ip) {
        (IpNet::V4(n), IpAddr::V4(a)) => u128::from(u32::from(a) - u32::from(n.network())),
        (IpNet::V6(n), IpAddr::V6(a)) => u128::from(a) - u128::from(n.network()),
        _ => return None,
    })
}

/// Number of addresses in `net`, saturating for huge IPv6 nets.
pub fn size_of(net: &IpNet) -> u128 {
    let bits = u32::from(net.max_prefix_len() - net.prefix_len());
    1u128.checked_shl(bits).unwrap_or(u128::MAX)
}

impl Block {
    /// An empty block; blocks are at most 2^16 addresses (a /112 or a /16).
    pub fn new(cidr: IpNet, affinity: Option<String>) -> Self {
        let size = u32::try_from(size_of(&cidr).min(1 << 16)).unwrap_or(1 << 16);
        Block {
            cidr,
            affinity,
            allocations: vec![None; size as usize],
            unallocated: (0..size).collect(),
            attributes: Vec::new(),
            sequence_number: 0,
            sequence_number_for_allocation: BTreeMap::new(),
            deleted: false,
        }
    }

    pub fn size(&self) -> usize {
        self.allocations.len()
    }

    pub fn host(&self) -> Option<&str> {
        self.affinity
            .as_deref()
            .and_then(|a| a.strip_prefix("host:"))
    }

    pub fn ip(&self, ordinal: u32) -> IpAddr {
        nth(&self.cidr, u128::from(ordinal))
    }

    pub fn ordinal(&self, ip: IpAddr) -> Option<u32> {
        ordinal_of(&self.cidr, ip)
            .and_then(|o| u32::try_from(o).ok())
            .filter(|o| (*o as usize) < self.size())
    }

    pub fn in_use(&self) -> usize {
        self.allocations.iter().filter(|a| a.is_some()).count()
    }

    pub fn is_empty(&self) -> bool {
        self.in_use() == 0
    }

    /// The attribute of an allocated address.
    pub fn holder(&self, ip: IpAddr) -> Option<&Attribute> {
        let ord = self.ordinal(ip)?;
        self.allocations[ord as usize].and_then(|i| self.attributes.get(i))
    }

    fn attribute_index(&mut self, attr: &Attribute) -> usize {
        if let Some(i) = self.attributes.iter().position(|a| a == attr) {
            return i;
        }
        self.attributes.push(attr.clone());
        self.attributes.len() - 1
    }

    fn bump(&mut self) {
        self.sequence_number += 1;
    }

    /// Allocates up to `n` free addresses the `usable` predicate accepts, in free-list order.
    pub fn allocate(
        &mut self,
        n: usize,
        attr: &Attribute,
        usable: &dyn Fn(IpAddr) -> bool,
    ) -> Vec<IpAddr> {
        let mut taken = Vec::new();
        let mut idx = 0;
        while taken.len() < n && idx < self.unallocated.len() {
            let ord = self.unallocated[idx];
            if usable(self.ip(ord)) {
                self.unallocated.remove(idx);
                taken.push(ord);
            } else {
                idx += 1;
            }
        }
        if taken.is_empty() {
            return Vec::new();
        }
        self.bump();
        let a = self.attribute_index(attr);
        for ord in &taken {
            self.allocations[*ord as usize] = Some(a);
            self.sequence_number_for_allocation
                .insert(ord.to_string(), self.sequence_number);
        }
        taken.into_iter().map(|o| self.ip(o)).collect()
    }

    /// Allocates one specific address; returns the current holder if taken.
    pub fn allocate_ip(&mut self, ip: IpAddr, attr: &Attribute) -> Result<(), Option<Attribute>> {
        let ord = self.ordinal(ip).ok_or(None)?;
        if let Some(i) = self.allocations[ord as usize] {
            return Err(self.attributes.get(i).cloned());
        }
        self.unallocated.retain(|o| *o != ord);
        self.bump();
        let a = self.attribute_index(attr);
        self.allocations[ord as usize] = Some(a);
        self.sequence_number_for_allocation
            .insert(ord.to_string(), self.sequence_number);
        Ok(())
    }

    fn free(&mut self, ord: u32) {
        self.allocations[ord as usize] = None;
        self.sequence_number_for_allocation.remove(&ord.to_string());
        self.unallocated.push(ord);
    }

    /// Drops attributes no allocation refers to, renumbering the rest.
    fn compact_attributes(&mut self) {
        let mut used: Vec<bool> = vec![false; self.attributes.len()];
        for i in self.allocations.iter().flatten() {
            if let Some(u) = used.get_mut(*i) {
                *u = true;
            }
        }
        let mut remap = vec![usize::MAX; self.attributes.len()];
        let mut kept = Vec::new();
        for (i, attr) in std::mem::take(&mut self.attributes).into_iter().enumerate() {
            if used[i] {
                remap[i] = kept.len();
                kept.push(attr);
            }
        }
        self.attributes = kept;
        for slot in self.allocations.iter_mut().flatten() {
            *slot = remap[*slot];
        }
    }

    /// Frees the given addresses if allocated; returns (ip, handle) for each one freed.
    pub fn release(&mut self, ips: &[IpAddr]) -> Vec<(IpAddr, Option<String>)> {
        let mut freed = Vec::new();
        for ip in ips {
            let Some(ord) = self.ordinal(*ip) else {
                continue;
            };
            if let Some(i) = self.allocations[ord as usize] {
                let handle = self.attributes.get(i).and_then(|a| a.handle.clone());
                self.free(ord);
                freed.push((*ip, handle));
            }
        }
        if !freed.is_empty() {
            self.bump();
            self.compact_attributes();
        }
        freed
    }

    /// Frees every address held by `handle`; returns how many.
    pub fn release_handle(&mut self, handle: &str) -> usize {
        let ords: Vec<u32> = (0..self.allocations.len())
            .filter(|o| {
                self.allocations[*o]
                    .and_then(|i| self.attributes.get(i))
                    .is_some_and(|a| a.handle.as_deref() == Some(handle))
            })
            .filter_map(|o| u32::try_from(o).ok())
            .collect();
        for ord in &ords {
            self.free(*ord);
        }
        if !ords.is_empty() {
            self.bump();
            self.compact_attributes();
        }
        ords.len()
    }

    /// Addresses held by `handle`.
    pub fn ips_of(&self, handle: &str) -> Vec<IpAddr> {
        (0..self.allocations.len())
            .filter(|o| {
                self.allocations[*o]
                    .and_then(|i| self.attributes.get(i))
                    .is_some_and(|a| a.handle.as_deref() == Some(handle))
            })
            .filter_map(|o| u32::try_from(o).ok())
            .map(|o| self.ip(o))
            .collect()
    }

    /// Every allocated address with its attribute.
    pub fn allocated(&self) -> impl Iterator<Item = (IpAddr, &Attribute)> {
        self.allocations.iter().enumerate().filter_map(|(o, a)| {
            let attr = self.attributes.get((*a)?)?;
            Some((nth(&self.cidr, o as u128), attr))
        })
    }

    /// The block's own bookkeeping is consistent: the free list and the
    /// allocations partition the ordinals, and every allocation has attributes.
    pub fn check(&self) -> Result<(), BlockInconsistency> {
        let mut seen = vec![false; self.size()];
        for o in &self.unallocated {
            let o = *o as usize;
            if o >= self.size() {
                return Err(BlockInconsistency::FreeOutside(o));
            }
            if seen[o] {
                return Err(BlockInconsistency::FreeTwice(o));
            }
            if self.allocations[o].is_some() {
                return Err(BlockInconsistency::FreeAndAllocated(o));
            }
            seen[o] = true;
        }
        for (o, a) in self.allocations.iter().enumerate() {
            match a {
                Some(i) if *i >= self.attributes.len() => {
                    return Err(BlockInconsistency::NoAttributes(o))
                }
                Some(_) => {}
                None if !seen[o] => return Err(BlockInconsistency::Lost(o)),
                None => {}
            }
        }
        Ok(())
    }
}

/// How a block's bookkeeping is broken (ordinals are offsets in the block).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BlockInconsistency {
    #[error("free ordinal {0} is outside the block")]
    FreeOutside(usize),
    #[error("ordinal {0} is free twice")]
    FreeTwice(usize),
    #[error("ordinal {0} is both free and allocated")]
    FreeAndAllocated(usize),
    #[error("ordinal {0} has no attributes")]
    NoAttributes(usize),
    #[error("ordinal {0} is neither free nor allocated")]
    Lost(usize),
}
