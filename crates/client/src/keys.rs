//! Datastore keys, exactly as Calico lays them out in etcd v3 mode:
//! `/calico/resources/v3/projectcalico.org/<plural>/[<namespace>/]<name>`.

use calico_api::Kind;

pub const RESOURCE_PREFIX: &str = "/calico/resources/v3/projectcalico.org/";

/// The key of one resource.
pub fn resource_key(kind: Kind, namespace: Option<&str>, name: &str) -> String {
    match (kind.namespaced(), namespace) {
        (true, Some(ns)) => format!("{RESOURCE_PREFIX}{}/{ns}/{name}", kind.plural()),
        (true, None) => format!("{RESOURCE_PREFIX}{}/default/{name}", kind.plural()),
        (false, _) => format!("{RESOURCE_PREFIX}{}/{name}", kind.plural()),
    }
}

/// The prefix holding every resource of a kind, or of a kind in one namespace.
pub fn kind_prefix(kind: Kind, namespace: Option<&str>) -> String {
    match (kind.namespaced(), namespace) {
        (true, Some(ns)) => format!("{RESOURCE_PREFIX}{}/{ns}/", kind.plural()),
        _ => format!("{RESOURCE_PREFIX}{}/", kind.plural()),
    }
}

/// Splits a key back into kind, namespace and name.
pub fn parse_resource_key(key: &str) -> Option<(Kind, Option<String>, String)> {
    let rest = key.strip_prefix(RESOURCE_PREFIX)?;
    let (plural, rest) = rest.split_once('/')?;
    let kind = Kind::from_plural(plural)?;
    if kind.namespaced() {
        let (ns, name) = rest.split_once('/')?;
        Some((kind, Some(ns.to_string()), name.to_string()))
    } else {
        Some((kind, None, rest.to_string()))
    }
}

/// IPAM's keys, as Calico lays them out: blocks, affinities, handles.
pub mod ipam {
    use calico_net::IpNet;

    pub const CONFIG_KEY: &str = "/calico/ipam/v2/config";
    pub const HANDLE_PREFIX: &str = "/calico/ipam/v2/handle/";
    pub const HOST_PREFIX: &str = "/calico/ipam/v2/host/";
    pub const BLOCK_PREFIX: &str = "/calico/ipam/v2/assignment/";

    pub fn family(net: &IpNet) -> u8 {
        if net.addr().is_ipv4() {
            4
        } else {
            6
        }
    }

    /// `10.0.0.0/26` written as `10.0.0.0-26`, as Calico's keys do.
    pub fn cidr_key_part(net: &IpNet) -> String {
        net.to_string().replacen('/', "-", 1)
    }

    pub fn parse_cidr_key_part(part: &str) -> Option<IpNet> {
        let (addr, len) = part.rsplit_once('-')?;
        format!("{addr}/{len}").parse().ok()
    }

    pub fn blocks_prefix(family: u8) -> String {
        format!("{BLOCK_PREFIX}ipv{family}/block/")
    }

    pub fn block_key(net: &IpNet) -> String {
        format!("{}{}", blocks_prefix(family(net)), cidr_key_part(net))
    }

    pub fn affinities_prefix(node: &str, family: u8) -> String {
        format!("{HOST_PREFIX}{node}/ipv{family}/block/")
    }

    pub fn affinity_key(node: &str, net: &IpNet) -> String {
        format!(
            "{}{}",
            affinities_prefix(node, family(net)),
            cidr_key_part(net)
        )
    }

    /// Splits an affinity key into node and block.
    pub fn parse_affinity_key(key: &str) -> Option<(String, IpNet)> {
        let rest = key.strip_prefix(HOST_PREFIX)?;
        let (node, rest) = rest.split_once('/')?;
        let (_, cidr) = rest.split_once("/block/")?;
        Some((node.to_string(), parse_cidr_key_part(cidr)?))
    }

    pub fn handle_key(handle: &str) -> String {
        format!("{HANDLE_PREFIX}{handle}")
    }

    /// The block a block key names.
    pub fn parse_block_key(key: &str) -> Option<IpNet> {
        let rest = key.strip_prefix(BLOCK_PREFIX)?;
        let (_, cidr) = rest.split_once("/block/")?;
        parse_cidr_key_part(cidr)
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn keys() {
            let v4: IpNet = "192.168.1.64/26".parse().unwrap();
            assert_eq!(
                block_key(&v4),
                "/calico/ipam/v2/assignment/ipv4/block/192.168.1.64-26"
            );
            assert_eq!(
                affinity_key("node-1", &v4),
                "/calico/ipam/v2/host/node-1/ipv4/block/192.168.1.64-26"
            );
            assert_eq!(
                parse_affinity_key(&affinity_key("node-1", &v4)),
                Some(("node-1".into(), v4))
            );
            let v6: IpNet = "fd00::40/122".parse().unwrap();
            assert_eq!(
                block_key(&v6),
                "/calico/ipam/v2/assignment/ipv6/block/fd00::40-122"
            );
            assert_eq!(parse_cidr_key_part("fd00::40-122"), Some(v6));
            assert_eq!(
                handle_key("k8s-pod-network.abc"),
                "/calico/ipam/v2/handle/k8s-pod-network.abc"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout() {
        assert_eq!(
            resource_key(Kind::IPPool, None, "p1"),
            "/calico/resources/v3/projectcalico.org/ippools/p1"
        );
        assert_eq!(
            resource_key(Kind::NetworkPolicy, Some("shop"), "knp.default.x"),
            "/calico/resources/v3/projectcalico.org/networkpolicies/shop/knp.default.x"
        );
        assert_eq!(
            kind_prefix(Kind::WorkloadEndpoint, None),
            "/calico/resources/v3/projectcalico.org/workloadendpoints/"
        );
        let key = resource_key(Kind::NetworkSet, Some("ns1"), "set");
        assert_eq!(
            parse_resource_key(&key),
            Some((Kind::NetworkSet, Some("ns1".into()), "set".into()))
        );
        assert_eq!(parse_resource_key("/calico/ipam/v2/handle/x"), None);
    }
}
