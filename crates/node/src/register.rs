//! Registering a node: its underlay address (Calico's `IP`: `addr/len` or
//! `autodetect`) and AS on its Node resource, as Calico's node start-up
//! does. Both agents may do it at once; a write happens only when the Node
//! says something else, and a lost race is retried from a fresh read.

use anyhow::{anyhow, Context, Result};
use calico_api::{InterfaceAddress, Kind, NodeBgpSpec, Object, ObjectMeta, Resource};
use calico_client::{Client, ClientError};
use calico_net::IpNet;
use tracing::info;

/// Interfaces never used for the node's address (Calico's defaults).
const SKIP: &[&str] = &[
    "lo",
    "docker",
    "cbr",
    "dummy",
    "virbr",
    "lxcbr",
    "veth",
    "cali",
    "tunl",
    "flannel",
    "kube-ipvs",
    "cni",
    "vxlan.calico",
    "vxlan-v6.calico",
    "wireguard.cali",
    "nodelocaldns",
];

/// The first IPv4 address (with its prefix) on an interface that is not
/// excluded, in interface order.
fn autodetect() -> Result<String> {
    let addrs = nix::ifaddrs::getifaddrs().context("listing interface addresses")?;
    for a in addrs {
        if SKIP.iter().any(|p| a.interface_name.starts_with(p)) {
            continue;
        }
        let (Some(addr), Some(mask)) = (a.address, a.netmask) else {
            continue;
        };
        let (Some(ip), Some(m)) = (addr.as_sockaddr_in(), mask.as_sockaddr_in()) else {
            continue;
        };
        let len = u32::from(m.ip()).count_ones();
        return Ok(format!("{}/{len}", ip.ip()));
    }
    Err(anyhow!(
        "no IPv4 address found to autodetect (set IP to the node's address)"
    ))
}

/// The node's address as `IP` gives it (`addr/len`, a bare address, or
/// `autodetect`), written `addr/len` with the host's own address.
pub fn address(ip: &str) -> Result<InterfaceAddress> {
    let cidr = if ip == "autodetect" {
        autodetect()?
    } else {
        ip.to_string()
    };
    // The host's own address with its subnet's length (not the network).
    let net: IpNet = match cidr.parse::<IpNet>() {
        Ok(n) => n,
        Err(_) => calico_net::parse_cidr_or_ip(&cidr).map_err(|e| anyhow!("IP={cidr:?}: {e}"))?,
    };
    if !net.addr().is_ipv4() {
        return Err(anyhow!("IP={cidr:?}: an IPv4 address is needed"));
    }
    Ok(InterfaceAddress::from(net))
}

/// The node's IPv6 address as `IP6` gives it (`addr/len` or a bare
/// address).
pub fn address6(ip: &str) -> Result<InterfaceAddress> {
    let net: IpNet = match ip.parse::<IpNet>() {
        Ok(n) => n,
        Err(_) => calico_net::parse_cidr_or_ip(ip).map_err(|e| anyhow!("IP6={ip:?}: {e}"))?,
    };
    if !net.addr().is_ipv6() {
        return Err(anyhow!("IP6={ip:?}: an IPv6 address is needed"));
    }
    Ok(InterfaceAddress::from(net))
}

/// Writes `address` (to `ipv4Address` or `ipv6Address`, by its family;
/// and `asn`) to `node`'s Node resource, creating it if needed.
pub fn register(
    client: &Client,
    node: &str,
    address: InterfaceAddress,
    asn: Option<u32>,
) -> Result<()> {
    for _ in 0..10 {
        let (mut n, exists) = match client.get(Kind::Node, None, node) {
            Ok(Resource::Node(n)) => (n, true),
            Ok(_) => return Err(anyhow!("unexpected resource for Node {node}")),
            Err(ClientError::NotFound(_)) => (
                Object::new(
                    ObjectMeta {
                        name: node.to_string(),
                        ..ObjectMeta::default()
                    },
                    calico_api::NodeSpec::default(),
                ),
                false,
            ),
            Err(e) => return Err(e).context("reading the Node resource"),
        };
        let before = n.spec.clone();
        let bgp = n.spec.bgp.get_or_insert_with(NodeBgpSpec::default);
        if address.addr().is_ipv4() {
            bgp.ipv4_address = Some(address);
        } else {
            bgp.ipv6_address = Some(address);
        }
        if let Some(a) = asn {
            bgp.as_number = Some(calico_api::AsNumber(a));
        }
        if exists && n.spec == before {
            return Ok(());
        }
        // Create, or replace the version read (compare-and-swap).
        let outcome = if exists {
            client.replace(Resource::Node(n))
        } else {
            client.create(Resource::Node(n))
        };
        match outcome {
            Ok(_) => {
                info!("node {node} registered with address {address}");
                return Ok(());
            }
            Err(ClientError::Conflict { .. } | ClientError::AlreadyExists(_)) => continue,
            Err(e) => return Err(e).with_context(|| format!("writing Node {node}")),
        }
    }
    Err(anyhow!("writing Node {node}: it kept changing under us"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use calico_datastore::MemoryStore;
    use calico_datastore::Store;
    use std::sync::Arc;

    #[test]
    fn writes_only_what_changed_and_keeps_the_rest() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let client = Client::new(Arc::clone(&store), Arc::new(calico_client::SystemClock));
        assert_eq!(
            address("10.0.0.5/24").expect("addr").to_string(),
            "10.0.0.5/24"
        );
        assert_eq!(
            address("10.0.0.5").expect("addr").to_string(),
            "10.0.0.5/32"
        );
        assert!(address("fd00::1/64").is_err());
        assert_eq!(
            address6("fd00::1/64").expect("addr").to_string(),
            "fd00::1/64"
        );
        assert!(address6("10.0.0.5/24").is_err());
        assert!(address("not-an-ip").is_err());

        register(
            &client,
            "n1",
            address("10.0.0.5/24").expect("addr"),
            Some(64513),
        )
        .expect("create");
        let rev = store.revision().expect("rev");
        // The same again (as the other agent does at start): no write.
        register(&client, "n1", address("10.0.0.5/24").expect("addr"), None).expect("same");
        assert_eq!(store.revision().expect("rev"), rev);
        // Someone else's field stays when the address changes.
        let Ok(Resource::Node(mut n)) = client.get(Kind::Node, None, "n1") else {
            panic!("node");
        };
        n.spec.ipv4_vxlan_tunnel_addr = Some("10.244.0.1".parse().expect("ip"));
        client.replace(Resource::Node(n)).expect("replace");
        register(&client, "n1", address("10.0.0.6/24").expect("addr"), None).expect("change");
        let Ok(Resource::Node(n)) = client.get(Kind::Node, None, "n1") else {
            panic!("node");
        };
        let bgp = n.spec.bgp.expect("bgp");
        assert_eq!(
            bgp.ipv4_address.map(|a| a.to_string()).as_deref(),
            Some("10.0.0.6/24")
        );
        assert_eq!(bgp.as_number.map(|a| a.0), Some(64513));
        // The IPv6 address goes beside it.
        register(&client, "n1", address6("fd00::6/64").expect("addr"), None).expect("v6");
        let Ok(Resource::Node(n6)) = client.get(Kind::Node, None, "n1") else {
            panic!("node");
        };
        let bgp6 = n6.spec.bgp.expect("bgp");
        assert_eq!(
            bgp6.ipv6_address.map(|a| a.to_string()).as_deref(),
            Some("fd00::6/64")
        );
        assert_eq!(
            bgp6.ipv4_address.map(|a| a.to_string()).as_deref(),
            Some("10.0.0.6/24")
        );
        assert_eq!(
            n.spec.ipv4_vxlan_tunnel_addr,
            Some("10.244.0.1".parse().expect("ip"))
        );
    }
}
