//! Consistency checks and garbage collection.
//!
//! An allocation is live when a WorkloadEndpoint lists its address or names
//! its pod, or when it is a node's tunnel address and the node exists. A
//! dead allocation younger than the grace period is left alone (its
//! workload may still be being created); older ones are leaks. Releasing a
//! leak re-reads the block and frees the address only if the same handle
//! still holds it, so a concurrent re-allocation is never undone. Empty
//! blocks of nodes that no longer exist are deleted with compare-and-swap
//! at the revision they were seen empty.

use crate::allocator::{decode, Ipam, IpamError};
use crate::block::Block;
use crate::model::*;
use calico_api::{Kind, Resource};
use calico_datastore::StoreError;
use calico_net::IpNet;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::{Duration, SystemTime};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leak {
    pub ip: IpAddr,
    pub handle: Option<String>,
    pub attrs: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckReport {
    pub in_use: usize,
    pub leaks: Vec<Leak>,
    /// Allocations without a live workload but younger than the grace period.
    pub pending: usize,
    pub problems: Vec<String>,
}

impl CheckReport {
    pub fn is_clean(&self) -> bool {
        self.leaks.is_empty() && self.problems.is_empty()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcOutcome {
    pub released: Vec<IpAddr>,
    pub blocks_removed: Vec<IpNet>,
    pub handles_removed: Vec<String>,
}

/// What the datastore says is alive.
struct Live {
    ips: BTreeSet<IpAddr>,
    pods: BTreeSet<(String, String)>,
    nodes: BTreeSet<String>,
}

const TUNNEL_TYPES: &[&str] = &[
    "ipipTunnelAddress",
    "vxlanTunnelAddress",
    "vxlanV6TunnelAddress",
    "wireguardTunnelAddress",
    "wireguardV6TunnelAddress",
];

impl Live {
    fn load(ipam: &Ipam) -> Result<Self, IpamError> {
        let mut live = Live {
            ips: BTreeSet::new(),
            pods: BTreeSet::new(),
            nodes: BTreeSet::new(),
        };
        for r in ipam.client().list(Kind::WorkloadEndpoint, None)?.items {
            if let Resource::WorkloadEndpoint(w) = r {
                for n in &w.spec.ip_networks {
                    live.ips.insert(n.net().addr());
                }
                let ns = w.metadata.namespace.clone().unwrap_or_default();
                let pod = if w.spec.pod.is_empty() {
                    w.spec.workload.clone()
                } else {
                    w.spec.pod.clone()
                };
                live.pods.insert((ns, pod));
            }
        }
        for r in ipam.client().list(Kind::Node, None)?.items {
            live.nodes.insert(r.meta().name.clone());
        }
        Ok(live)
    }

    fn holds(&self, ip: IpAddr, attrs: &BTreeMap<String, String>) -> bool {
        if self.ips.contains(&ip) {
            return true;
        }
        if let (Some(ns), Some(pod)) = (attrs.get("namespace"), attrs.get("pod")) {
            if self.pods.contains(&(ns.clone(), pod.clone())) {
                return true;
            }
        }
        attrs
            .get("type")
            .is_some_and(|t| TUNNEL_TYPES.contains(&t.as_str()))
            && attrs.get("node").is_some_and(|n| self.nodes.contains(n))
    }
}

/// Every pair of blocks that share addresses (a block inside another, or
/// the same addresses in blocks of two sizes).
fn overlapping(cidrs: &[IpNet]) -> Vec<String> {
    let mut sorted = cidrs.to_vec();
    sorted.sort_by_key(|n| (n.network(), n.prefix_len()));
    let mut out = Vec::new();
    let mut open: Vec<IpNet> = Vec::new();
    for n in sorted {
        open.retain(|o| o.contains(&n.network()));
        for o in &open {
            out.push(format!("blocks {o} and {n} overlap"));
        }
        open.push(n);
    }
    out
}

fn young(attrs: &BTreeMap<String, String>, now: SystemTime, grace: Duration) -> bool {
    attrs
        .get("timestamp")
        .and_then(|t| humantime_parse(t))
        .is_some_and(|t| now.duration_since(t).map_or(true, |age| age < grace))
}

fn humantime_parse(text: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339_weak(text).ok()
}

impl Ipam {
    /// Looks for leaks and inconsistencies; changes nothing.
    pub fn check(&self, now: SystemTime, grace: Duration) -> Result<CheckReport, IpamError> {
        let live = Live::load(self)?;
        let mut report = CheckReport::default();
        let mut held: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
        let mut pool_nets: Vec<IpNet> = Vec::new();
        for r in self.client().list(Kind::IPPool, None)?.items {
            if let Resource::IPPool(p) = r {
                pool_nets.push(p.spec.cidr.net());
            }
        }
        let mut affine: BTreeSet<(String, IpNet)> = BTreeSet::new();
        let mut holders: BTreeMap<IpAddr, Vec<IpNet>> = BTreeMap::new();
        for family in [4u8, 6] {
            let blocks = self.blocks(family)?;
            let cidrs: Vec<IpNet> = blocks.iter().map(|(b, _)| b.cidr).collect();
            report.problems.extend(overlapping(&cidrs));
            for (b, _) in blocks {
                if let Err(e) = b.check() {
                    report.problems.push(format!("block {}: {e}", b.cidr));
                }
                if !pool_nets.iter().any(|p| p.contains(&b.cidr)) {
                    report
                        .problems
                        .push(format!("block {} is in no IP pool", b.cidr));
                }
                if let Some(node) = b.host() {
                    affine.insert((node.to_string(), b.cidr));
                    if self.store().get(&affinity_key(node, &b.cidr))?.is_none() {
                        report.problems.push(format!("block {} says it is affine to {node}, but the affinity record is missing", b.cidr));
                    }
                }
                for (ip, attr) in b.allocated() {
                    report.in_use += 1;
                    holders.entry(ip).or_default().push(b.cidr);
                    if let Some(h) = &attr.handle {
                        *held
                            .entry(h.clone())
                            .or_default()
                            .entry(b.cidr.to_string())
                            .or_default() += 1;
                    }
                    let attrs = attr.secondary.clone().unwrap_or_default();
                    if !live.holds(ip, &attrs) {
                        if young(&attrs, now, grace) {
                            report.pending += 1;
                        } else {
                            report.leaks.push(Leak {
                                ip,
                                handle: attr.handle.clone(),
                                attrs,
                            });
                        }
                    }
                }
            }
        }
        for (ip, blocks) in holders.iter().filter(|(_, b)| b.len() > 1) {
            report.problems.push(format!(
                "address {ip} is allocated {} times (blocks {})",
                blocks.len(),
                blocks
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        for kv in self.store().list(HANDLE_PREFIX)?.items {
            let id = kv.key.trim_start_matches(HANDLE_PREFIX).to_string();
            let h: Handle = decode(&kv)?;
            let counted: BTreeMap<String, usize> =
                h.block.into_iter().filter(|(_, n)| *n > 0).collect();
            let actual = held.remove(&id).unwrap_or_default();
            if counted != actual {
                report.problems.push(format!(
                    "handle {id} records {counted:?} but the blocks hold {actual:?}"
                ));
            }
        }
        for (id, blocks) in held {
            report.problems.push(format!(
                "addresses in {:?} belong to handle {id}, which has no handle record",
                blocks.keys().collect::<Vec<_>>()
            ));
        }
        for kv in self.store().list(HOST_PREFIX)?.items {
            if let Some((node, net)) = parse_affinity_key(&kv.key) {
                if !affine.contains(&(node.clone(), net)) {
                    report.problems.push(format!("node {node} has an affinity for block {net}, which does not exist or is not affine to it"));
                }
            }
        }
        Ok(report)
    }

    /// Releases leaked addresses and removes empty blocks of nodes that no
    /// longer exist.
    pub fn gc(&self, now: SystemTime, grace: Duration) -> Result<GcOutcome, IpamError> {
        let report = self.check(now, grace)?;
        let mut out = GcOutcome::default();
        let mut by_block: BTreeMap<IpNet, Vec<(IpAddr, Option<String>)>> = BTreeMap::new();
        for leak in &report.leaks {
            for family in [4u8, 6] {
                if leak.ip.is_ipv4() != (family == 4) {
                    continue;
                }
                for (b, _) in self.blocks(family)? {
                    if b.cidr.contains(&leak.ip) {
                        by_block
                            .entry(b.cidr)
                            .or_default()
                            .push((leak.ip, leak.handle.clone()));
                    }
                }
            }
        }
        for (net, leaks) in by_block {
            let freed = self.release_where(&net, &leaks)?;
            out.released.extend(freed);
        }
        let live_nodes: BTreeSet<String> = self
            .client()
            .list(Kind::Node, None)?
            .items
            .iter()
            .map(|r| r.meta().name.clone())
            .collect();
        for family in [4u8, 6] {
            for (b, rev) in self.blocks(family)? {
                let orphan =
                    b.host().is_some_and(|n| !live_nodes.contains(n)) || b.host().is_none();
                if b.is_empty() && orphan && self.remove_empty_block(&b, rev)? {
                    out.blocks_removed.push(b.cidr);
                }
            }
        }
        for kv in self.store().list(HANDLE_PREFIX)?.items {
            let h: Handle = decode(&kv)?;
            if h.block.values().all(|n| *n == 0) {
                let id = kv.key.trim_start_matches(HANDLE_PREFIX).to_string();
                match self.store().delete(&kv.key, Some(kv.mod_revision)) {
                    Ok(_) => out.handles_removed.push(id),
                    Err(StoreError::NotFound { .. } | StoreError::Conflict { .. }) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(out)
    }

    /// Frees each address only if the same handle still holds it.
    fn release_where(
        &self,
        net: &IpNet,
        leaks: &[(IpAddr, Option<String>)],
    ) -> Result<Vec<IpAddr>, IpamError> {
        let leaks = leaks.to_vec();
        self.release_in_block(net, move |b: &mut Block| {
            let still: Vec<IpAddr> = leaks
                .iter()
                .filter(|(ip, h)| b.holder(*ip).is_some_and(|a| &a.handle == h))
                .map(|(ip, _)| *ip)
                .collect();
            b.release(&still)
        })
    }

    pub(crate) fn remove_empty_block(
        &self,
        b: &Block,
        rev: calico_datastore::Revision,
    ) -> Result<bool, IpamError> {
        if let Some(node) = b.host() {
            let key = affinity_key(node, &b.cidr);
            if let Some(kv) = self.store().get(&key)? {
                let marked = Affinity {
                    state: AffinityState::PendingDeletion,
                    deleted: false,
                };
                let _ =
                    self.store()
                        .update(&key, &crate::allocator::encode(&marked)?, kv.mod_revision);
            }
        }
        match self.store().delete(&block_key(&b.cidr), Some(rev)) {
            Ok(_) => {}
            Err(StoreError::Conflict { .. }) => {
                // Someone allocated meanwhile: the block stays, and so does its affinity.
                if let Some(node) = b.host() {
                    let key = affinity_key(node, &b.cidr);
                    if let Some(kv) = self.store().get(&key)? {
                        let confirmed = Affinity {
                            state: AffinityState::Confirmed,
                            deleted: false,
                        };
                        let _ = self.store().update(
                            &key,
                            &crate::allocator::encode(&confirmed)?,
                            kv.mod_revision,
                        );
                    }
                }
                return Ok(false);
            }
            Err(StoreError::NotFound { .. }) => return Ok(false),
            Err(e) => return Err(e.into()),
        }
        if let Some(node) = b.host() {
            match self.store().delete(&affinity_key(node, &b.cidr), None) {
                Ok(_) | Err(StoreError::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(true)
    }

    /// Releases a node's empty blocks (when the node is being removed) and
    /// returns how many were released.
    pub fn release_node_affinities(&self, node: &str) -> Result<usize, IpamError> {
        let mut n = 0;
        for family in [4u8, 6] {
            for net in self.node_blocks(node, family)? {
                if let Some((b, rev)) = self.read_block(&net)? {
                    if b.is_empty() && self.remove_empty_block(&b, rev)? {
                        n += 1;
                    }
                }
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::humantime_parse;
    use std::time::{Duration, SystemTime};

    #[test]
    fn rfc3339() {
        let t = humantime_parse("1970-01-02T00:00:01Z").unwrap();
        assert_eq!(t, SystemTime::UNIX_EPOCH + Duration::from_secs(86_401));
        let t = humantime_parse("2026-11-22T21:37:34.5Z").unwrap();
        assert_eq!(
            t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs(),
            1_795_383_454
        );
        assert!(humantime_parse("yesterday").is_none());
    }
}
