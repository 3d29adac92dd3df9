//! This node's VXLAN tunnel (VTEP) addresses, as Calico's
//! allocate-tunnel-addrs keeps them: while a VXLAN pool of a family selects
//! the node, the node holds one address of that pool from IPAM (handle
//! `vxlan-tunnel-addr-<node>` or `vxlan-v6-tunnel-addr-<node>`, attributes
//! `node` and `type`), recorded on its Node resource with the VTEP MAC;
//! when no pool asks for one any more it is released and the record
//! cleared.

use anyhow::{anyhow, Context, Result};
use calico_api::Mac;
use calico_api::{Kind, NodeSpec, Resource};
use calico_calc::overlay::{derived_mac, tunnel_address, tunnel_pools, Family};
use calico_client::{Client, ClientError};
use calico_ipam::{AutoAssign, Ipam};
use calico_net::IpNet;
use std::collections::BTreeMap;
use std::net::IpAddr;
use tracing::info;

/// What to do about one family's tunnel address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// The recorded address is held and in a wanted pool.
    Keep(IpAddr),
    /// Not recorded (or not valid), but the handle holds one in a wanted
    /// pool (an earlier run allocated it and stopped before recording it).
    Adopt(IpAddr),
    /// Allocate a new one from these pools (after releasing what the
    /// handle holds).
    Assign(Vec<IpNet>),
    /// No pool wants one: release and clear.
    Release,
    /// Nothing recorded, nothing held, nothing wanted.
    Nothing,
}

/// The step for one family: `recorded` on the Node, `held` by the handle,
/// `wanted` pools.
pub fn decide(recorded: Option<IpAddr>, held: &[IpAddr], wanted: &[IpNet]) -> Step {
    if wanted.is_empty() {
        return if recorded.is_some() || !held.is_empty() {
            Step::Release
        } else {
            Step::Nothing
        };
    }
    let usable = |ip: &IpAddr| held.contains(ip) && wanted.iter().any(|p| p.contains(ip));
    match recorded {
        Some(r) if usable(&r) => Step::Keep(r),
        _ => match held.iter().find(|ip| usable(ip)) {
            Some(ip) => Step::Adopt(*ip),
            None => Step::Assign(wanted.to_vec()),
        },
    }
}

/// The Node's tunnel MAC field of family `f`.
fn mac_field(spec: &mut NodeSpec, f: Family) -> &mut Option<Mac> {
    match f {
        Family::V4 => &mut spec.vxlan_tunnel_mac_addr,
        Family::V6 => &mut spec.vxlan_tunnel_mac_addr_v6,
    }
}

/// Records (or clears) the Node's tunnel address of family `f`; an
/// address of the other family clears it.
fn set_tunnel_address(spec: &mut NodeSpec, f: Family, ip: Option<IpAddr>) {
    match f {
        Family::V4 => {
            spec.ipv4_vxlan_tunnel_addr = match ip {
                Some(IpAddr::V4(a)) => Some(a),
                _ => None,
            }
        }
        Family::V6 => {
            spec.ipv6_vxlan_tunnel_addr = match ip {
                Some(IpAddr::V6(a)) => Some(a),
                _ => None,
            }
        }
    }
}

/// Brings `node`'s tunnel addresses in line with the pools. Nothing
/// happens until the Node resource exists (whoever registers the node
/// creates it). Whether the Node resource was changed.
pub fn reconcile(ipam: &Ipam, client: &Client, node: &str) -> Result<bool> {
    let mut n = match client.get(Kind::Node, None, node) {
        Ok(Resource::Node(n)) => n,
        Ok(_) => return Err(anyhow!("unexpected resource for Node {node}")),
        Err(ClientError::NotFound(_)) => return Ok(false),
        Err(e) => return Err(e).context("reading the Node resource"),
    };
    let pools: BTreeMap<String, calico_api::IpPoolSpec> = client
        .list(Kind::IPPool, None)
        .context("listing IP pools")?
        .items
        .into_iter()
        .filter_map(|r| match r {
            Resource::IPPool(p) => Some((p.metadata.name, p.spec)),
            _ => None,
        })
        .collect();
    let before = n.spec.clone();
    for f in [Family::V4, Family::V6] {
        let wanted = tunnel_pools(&pools, &n.metadata.labels, f);
        let handle = f.tunnel_handle(node);
        let held: Vec<IpAddr> = ipam
            .ips_by_handle(&handle)
            .with_context(|| format!("reading IPAM handle {handle}"))?
            .into_iter()
            .filter(|ip| Family::of(*ip) == f)
            .collect();
        let recorded = tunnel_address(&n.spec, f);
        let derived = Mac(derived_mac(node, f == Family::V6));
        let keep = match decide(recorded, &held, &wanted) {
            Step::Nothing => continue,
            Step::Keep(ip) => ip,
            Step::Adopt(ip) => {
                let others: Vec<IpAddr> = held.iter().copied().filter(|h| *h != ip).collect();
                ipam.release_ips(&others)
                    .with_context(|| format!("releasing extra tunnel addresses {others:?}"))?;
                ip
            }
            Step::Assign(pools) => {
                ipam.release_handle(&handle)
                    .with_context(|| format!("releasing IPAM handle {handle}"))?;
                let req = AutoAssign {
                    handle: handle.clone(),
                    node: node.to_string(),
                    num_v4: usize::from(f == Family::V4),
                    num_v6: usize::from(f == Family::V6),
                    attrs: BTreeMap::from([
                        ("node".to_string(), node.to_string()),
                        ("type".to_string(), f.tunnel_type().to_string()),
                    ]),
                    pools_v4: pools.iter().map(ToString::to_string).collect(),
                    pools_v6: pools.iter().map(ToString::to_string).collect(),
                    tunnel: true,
                };
                let got = ipam
                    .auto_assign(&req)
                    .with_context(|| format!("allocating a VXLAN tunnel address for {node}"))?;
                let ip = got
                    .v4
                    .first()
                    .or(got.v6.first())
                    .map(IpNet::addr)
                    .ok_or_else(|| anyhow!("IPAM returned no tunnel address for {node}"))?;
                info!("{}: tunnel address {ip} from IPAM", f.device());
                ip
            }
            Step::Release => {
                ipam.release_handle(&handle)
                    .with_context(|| format!("releasing IPAM handle {handle}"))?;
                info!(
                    "{}: no VXLAN pool selects this node; tunnel address released",
                    f.device()
                );
                set_tunnel_address(&mut n.spec, f, None);
                let mac = mac_field(&mut n.spec, f);
                if *mac == Some(derived) {
                    *mac = None;
                }
                continue;
            }
        };
        set_tunnel_address(&mut n.spec, f, Some(keep));
        mac_field(&mut n.spec, f).get_or_insert(derived);
    }
    if n.spec == before {
        return Ok(false);
    }
    // Compare-and-swap on the version read: a concurrent change to the Node
    // makes this fail, and the next round starts from fresh reads (what
    // was allocated is found again through the handle).
    client
        .replace(Resource::Node(n))
        .with_context(|| format!("recording the tunnel addresses on Node {node}"))?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn decisions() {
        let pool: Vec<IpNet> = vec!["10.244.0.0/16".parse().expect("net")];
        let a = ip("10.244.1.0");
        let b = ip("10.244.1.5");
        let outside = ip("10.9.0.1");
        assert_eq!(decide(None, &[], &[]), Step::Nothing);
        assert_eq!(decide(Some(a), &[a], &[]), Step::Release);
        assert_eq!(decide(None, &[a], &[]), Step::Release);
        assert_eq!(decide(Some(a), &[a], &pool), Step::Keep(a));
        assert_eq!(decide(None, &[], &pool), Step::Assign(pool.clone()));
        // Recorded but no longer held (released behind our back): adopt
        // what the handle holds, or assign anew.
        assert_eq!(decide(Some(a), &[b], &pool), Step::Adopt(b));
        assert_eq!(decide(Some(a), &[], &pool), Step::Assign(pool.clone()));
        // Held but outside every wanted pool (the pool changed).
        assert_eq!(
            decide(Some(outside), &[outside], &pool),
            Step::Assign(pool.clone())
        );
    }
}
