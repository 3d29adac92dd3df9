//! Checks that span resources: overlapping pools, tiers that must exist,
//! fields that may not change, resources that may not be deleted.

use crate::client::{Client, ClientError};
use crate::keys::ipam::{blocks_prefix, parse_block_key};
use calico_api::{Kind, Resource};

fn rejected(r: &Resource, reason: String) -> ClientError {
    ClientError::Rejected {
        resource: r.display_name(),
        reason,
    }
}

pub(crate) fn references(client: &Client, r: &Resource) -> Result<(), ClientError> {
    match r {
        Resource::IPPool(pool) => {
            if let Some(mode) = pool.spec.ipip_mode.filter(|m| !m.is_never()) {
                return Err(rejected(
                    r,
                    format!(
                        "spec.ipipMode: {mode:?} is refused: {}; use vxlanMode (Always or CrossSubnet) instead",
                        ipip_unavailable()
                    ),
                ));
            }
            let net = pool.spec.cidr.net();
            if let Some(size) = pool.spec.block_size {
                stray_blocks(client, r, &net, size)?;
            }
            for other in client.list(Kind::IPPool, None)?.items {
                let Resource::IPPool(o) = &other else {
                    continue;
                };
                if o.metadata.name == pool.metadata.name {
                    continue;
                }
                let onet = o.spec.cidr.net();
                if calico_net::overlaps(&net, &onet) {
                    return Err(rejected(
                        r,
                        format!(
                            "spec.cidr: {net} overlaps IPPool {} ({onet})",
                            o.metadata.name
                        ),
                    ));
                }
            }
            Ok(())
        }
        Resource::NetworkPolicy(p) => tier_exists(client, r, &p.spec.tier),
        Resource::GlobalNetworkPolicy(p) => tier_exists(client, r, &p.spec.tier),
        Resource::StagedNetworkPolicy(p) => tier_exists(client, r, &p.spec.spec.tier),
        Resource::StagedGlobalNetworkPolicy(p) => tier_exists(client, r, &p.spec.spec.tier),
        _ => Ok(()),
    }
}

/// IPAM blocks left inside a pool's CIDR (by a pool deleted while in
/// use) must be blocks this pool would make: one of another size, or one
/// reaching outside the CIDR, would share addresses with the new pool's
/// blocks and hand them out twice.
fn stray_blocks(
    client: &Client,
    r: &Resource,
    net: &calico_net::IpNet,
    size: u8,
) -> Result<(), ClientError> {
    let family = if net.addr().is_ipv4() { 4 } else { 6 };
    for kv in client
        .store()
        .list(&blocks_prefix(family))
        .map_err(ClientError::Store)?
        .items
    {
        let Some(block) = parse_block_key(&kv.key) else {
            continue;
        };
        if calico_net::overlaps(net, &block)
            && (block.prefix_len() != size || !net.contains(&block))
        {
            return Err(rejected(
                r,
                format!(
                    "spec.cidr: IPAM block {block} (left by a deleted pool) overlaps {net} with blocks of /{size}; \
                     release its addresses (calicoctl ipam release) or use its block size"
                ),
            ));
        }
    }
    Ok(())
}

/// Why IP-in-IP encapsulation cannot be honoured on this host.
pub fn ipip_unavailable() -> String {
    if std::path::Path::new("/sys/module/ipip").exists() {
        "calico-rs does not implement IP-in-IP encapsulation".into()
    } else {
        "this kernel has no ipip module, so IP-in-IP encapsulation cannot work here \
         (and calico-rs does not implement it)"
            .into()
    }
}

fn tier_exists(client: &Client, r: &Resource, tier: &str) -> Result<(), ClientError> {
    if tier.is_empty() || tier == "default" {
        return Ok(());
    }
    match client.get(Kind::Tier, None, tier) {
        Ok(_) => Ok(()),
        Err(ClientError::NotFound(_)) => Err(rejected(
            r,
            format!("spec.tier: tier {tier:?} does not exist; create it first"),
        )),
        Err(e) => Err(e),
    }
}

pub(crate) fn immutable(current: &Resource, new: &Resource) -> Result<(), ClientError> {
    if let (Resource::IPPool(old), Resource::IPPool(new_pool)) = (current, new) {
        if old.spec.cidr != new_pool.spec.cidr {
            return Err(rejected(
                new,
                format!(
                    "spec.cidr cannot change ({} to {}); create a new pool instead",
                    old.spec.cidr, new_pool.spec.cidr
                ),
            ));
        }
        if old.spec.block_size != new_pool.spec.block_size {
            return Err(rejected(
                new,
                "spec.blockSize cannot change once a pool exists".into(),
            ));
        }
    }
    Ok(())
}

pub(crate) fn deletable(client: &Client, r: &Resource) -> Result<(), ClientError> {
    if let Resource::Tier(t) = r {
        let name = &t.metadata.name;
        let in_use = client
            .list(Kind::NetworkPolicy, None)?
            .items
            .iter()
            .chain(client.list(Kind::GlobalNetworkPolicy, None)?.items.iter())
            .any(|p| match p {
                Resource::NetworkPolicy(p) => &p.spec.tier == name,
                Resource::GlobalNetworkPolicy(p) => &p.spec.tier == name,
                _ => false,
            });
        if in_use {
            return Err(rejected(
                r,
                "the tier still holds policies; delete them first".into(),
            ));
        }
    }
    Ok(())
}
