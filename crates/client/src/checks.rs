//! Checks that span resources: overlapping pools, tiers that must exist,
//! fields that may not change, resources that may not be deleted.

use crate::client::{Client, ClientError};
use calico_api::{Kind, Resource};
use calico_net::parse_cidr_or_ip;

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
            let Ok(net) = parse_cidr_or_ip(&pool.spec.cidr) else {
                return Ok(());
            };
            for other in client.list(Kind::IPPool, None)?.items {
                let Resource::IPPool(o) = &other else {
                    continue;
                };
                if o.metadata.name == pool.metadata.name {
                    continue;
                }
                let Ok(onet) = parse_cidr_or_ip(&o.spec.cidr) else {
                    continue;
                };
                if net.contains(&onet) || onet.contains(&net) {
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
        _ => Ok(()),
    }
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
