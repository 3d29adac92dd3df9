//! What the BGP speaker of one node should do, from the datastore: its
//! identity (router ID, AS, route-reflector cluster), its peers (the
//! node-to-node mesh and BGPPeer resources) and the prefixes it originates
//! (its affine blocks, and the addresses of its workloads that lie outside
//! them). Pure: the resources come in as values, the answer goes out as one.

use calico_api::{BgpConfigurationSpec, BgpPeerSpec, IpPoolSpec, NodeSpec};
use calico_bgp::{PeerConfig, PeerKind};
use calico_net::IpNet;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};

pub const DEFAULT_AS: u32 = 64512;

/// The datastore, as far as BGP cares.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Inputs {
    /// Node name → (labels, spec).
    pub nodes: BTreeMap<String, (BTreeMap<String, String>, NodeSpec)>,
    /// The BGPConfiguration named `default`.
    pub config: Option<BgpConfigurationSpec>,
    pub peers: BTreeMap<String, BgpPeerSpec>,
    pub pools: BTreeMap<String, IpPoolSpec>,
    /// This node's confirmed block affinities.
    pub blocks: BTreeSet<IpNet>,
    /// Addresses of workloads on this node.
    pub workload_ips: BTreeSet<IpNet>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub router_id: Ipv4Addr,
    pub asn: u32,
    pub cluster_id: Option<Ipv4Addr>,
    pub port: u16,
    pub address: Ipv4Addr,
    pub address6: Option<std::net::Ipv6Addr>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub identity: Identity,
    pub peers: Vec<PeerConfig>,
    pub local: BTreeSet<IpNet>,
    /// Peers left out, and why (a password whose secret is missing).
    pub problems: Vec<String>,
}

/// What the plan takes beside the datastore: secrets (name, key) → value
/// as the node has them, and the per-peer prefix limit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Extras {
    pub secrets: BTreeMap<(String, String), String>,
    pub max_prefixes: Option<usize>,
}

/// The secrets (name, key) the BGP passwords refer to.
pub fn secret_refs(inputs: &Inputs) -> BTreeSet<(String, String)> {
    inputs
        .peers
        .values()
        .filter_map(|p| p.password.as_ref())
        .chain(
            inputs
                .config
                .as_ref()
                .and_then(|c| c.node_mesh_password.as_ref()),
        )
        .filter_map(|pw| pw.secret_key_ref.as_ref())
        .map(|r| (r.name.clone(), r.key.clone()))
        .collect()
}

/// A password's value: None for no password, Err when it names a secret
/// the node does not have (the peer is then left out: never a session
/// without the password it was given).
fn password(
    pw: Option<&calico_api::BgpPassword>,
    extras: &Extras,
) -> Result<Option<String>, String> {
    let Some(r) = pw.and_then(|p| p.secret_key_ref.as_ref()) else {
        return Ok(None);
    };
    match extras.secrets.get(&(r.name.clone(), r.key.clone())) {
        Some(v) if (1..=calico_tcp_md5::MAX_KEY_LEN).contains(&v.len()) => Ok(Some(v.clone())),
        Some(v) => Err(format!(
            "secret {}/{} is {} bytes; a TCP MD5 key is 1 to {}",
            r.name,
            r.key,
            v.len(),
            calico_tcp_md5::MAX_KEY_LEN
        )),
        None => Err(format!("secret {}/{} is missing", r.name, r.key)),
    }
}

fn node_addr(spec: &NodeSpec) -> Option<Ipv4Addr> {
    match spec.bgp.as_ref()?.ipv4_address?.addr() {
        IpAddr::V4(a) => Some(a),
        IpAddr::V6(_) => None,
    }
}

fn node_addr6(spec: &NodeSpec) -> Option<std::net::Ipv6Addr> {
    match spec.bgp.as_ref()?.ipv6_address?.addr() {
        IpAddr::V6(a) => Some(a),
        IpAddr::V4(_) => None,
    }
}

fn node_as(spec: &NodeSpec, global: u32) -> u32 {
    spec.bgp
        .as_ref()
        .and_then(|b| b.as_number)
        .map_or(global, |a| a.0)
}

fn cluster_of(spec: &NodeSpec) -> Option<Ipv4Addr> {
    spec.bgp.as_ref()?.route_reflector_cluster_id
}

/// A duration in whole seconds (as BIRD takes them); None beyond u16.
fn secs(d: &Option<calico_api::GoDuration>) -> Option<u16> {
    d.as_ref()
        .and_then(|d| u16::try_from(d.value().as_secs()).ok())
}

/// Why a node cannot speak BGP.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("there is no Node resource named {0:?}")]
    NoNode(String),
    #[error("Node {0:?} has no spec.bgp.ipv4Address")]
    NoAddress(String),
}

/// The plan for `node`.
#[cfg(test)]
pub fn plan(inputs: &Inputs, node: &str) -> Result<Plan, PlanError> {
    plan_with(inputs, node, &Extras::default())
}

/// The plan, with the node's secrets and prefix limit.
pub fn plan_with(inputs: &Inputs, node: &str, extras: &Extras) -> Result<Plan, PlanError> {
    let (labels, me) = inputs
        .nodes
        .get(node)
        .ok_or_else(|| PlanError::NoNode(node.to_string()))?;
    let address = node_addr(me).ok_or_else(|| PlanError::NoAddress(node.to_string()))?;
    let cfg = inputs.config.clone().unwrap_or_default();
    let global_as = cfg.as_number.map_or(DEFAULT_AS, |a| a.0);
    let asn = node_as(me, global_as);
    let cluster_id = cluster_of(me);
    let identity = Identity {
        router_id: address,
        asn,
        cluster_id,
        port: cfg.listen_port.unwrap_or(179),
        address,
        address6: node_addr6(me),
    };
    let address6 = identity.address6;
    // An iBGP peer is our client when we reflect and it is not a reflector
    // of our cluster.
    let client = |peer_cluster: Option<Ipv4Addr>, peer_as: u32| {
        cluster_id.is_some() && peer_as == asn && peer_cluster != cluster_id
    };
    let mut peers: BTreeMap<IpAddr, PeerConfig> = BTreeMap::new();
    let mut add = |p: PeerConfig| {
        if p.addr != IpAddr::V4(address) && Some(p.addr) != address6.map(IpAddr::V6) {
            peers.entry(p.addr).or_insert(p);
        }
    };
    // Sessions run over IPv4 between IPv4 addresses and over IPv6 between
    // IPv6 ones (each carries the prefixes it can give a next hop for).
    let base = |addr: IpAddr, asn: u32, kind: PeerKind| PeerConfig {
        local_addr: match addr {
            IpAddr::V4(_) => Some(IpAddr::V4(address)),
            IpAddr::V6(_) => address6.map(IpAddr::V6),
        },
        max_prefixes: extras.max_prefixes,
        ..PeerConfig::new(addr, asn, kind)
    };
    let mut problems = Vec::new();
    // A node's addresses: its IPv4 one, and its IPv6 one when both ends
    // have one.
    let addrs = |spec: &NodeSpec| -> Vec<IpAddr> {
        let mut v: Vec<IpAddr> = node_addr(spec).map(IpAddr::V4).into_iter().collect();
        if address6.is_some() {
            v.extend(node_addr6(spec).map(IpAddr::V6));
        }
        v
    };
    let mesh_restart = secs(&cfg.node_mesh_max_restart_time);
    let mesh_password = password(cfg.node_mesh_password.as_ref(), extras);
    if let Err(why) = &mesh_password {
        problems.push(format!("node-to-node mesh left out: {why}"));
    }
    if let (true, Ok(mesh_password)) =
        (cfg.node_to_node_mesh_enabled.unwrap_or(true), mesh_password)
    {
        for (name, (_, spec)) in &inputs.nodes {
            if name == node {
                continue;
            }
            for a in addrs(spec) {
                let pas = node_as(spec, global_as);
                add(PeerConfig {
                    rr_client: client(cluster_of(spec), pas),
                    restart_time: mesh_restart,
                    password: mesh_password.clone(),
                    ..base(a, pas, PeerKind::NodeToNodeMesh)
                });
            }
        }
    }
    for (peer_name, p) in &inputs.peers {
        let applies = if !p.node.is_empty() {
            p.node == node
        } else if !p.node_selector.is_empty() {
            p.node_selector.matches(labels)
        } else {
            true
        };
        if !applies {
            continue;
        }
        // keepaliveTime as BIRD takes it: the hold time is three of them.
        let hold_time = secs(&p.keepalive_time).map(|k| k.saturating_mul(3));
        let restart_time = secs(&p.max_restart_time);
        let kind = if p.node.is_empty() && p.node_selector.is_empty() {
            PeerKind::Global
        } else {
            PeerKind::Node
        };
        // Written past validation: still never peered without them.
        if let Some((field, why)) = p.unsupported().first() {
            problems.push(format!("BGPPeer {peer_name} left out: {field}: {why}"));
            continue;
        }
        let password = match password(p.password.as_ref(), extras) {
            Ok(pw) => pw,
            Err(why) => {
                problems.push(format!("BGPPeer {peer_name} left out: {why}"));
                continue;
            }
        };
        if !p.peer_selector.is_empty() {
            for (name, (plabels, spec)) in &inputs.nodes {
                if name == node || !p.peer_selector.matches(plabels) {
                    continue;
                }
                for a in addrs(spec) {
                    let pas = node_as(spec, global_as);
                    add(PeerConfig {
                        rr_client: client(cluster_of(spec), pas),
                        hold_time,
                        restart_time,
                        password: password.clone(),
                        ..base(a, pas, kind)
                    });
                }
            }
        } else if let Some(calico_api::PeerAddress { ip: addr, port }) = p.peer_ip {
            let pas = p.as_number.map_or(global_as, |a| a.0);
            // A peer that is one of our nodes keeps that node's cluster.
            let pcluster = inputs
                .nodes
                .values()
                .find(|(_, s)| {
                    node_addr(s).map(IpAddr::V4) == Some(addr)
                        || node_addr6(s).map(IpAddr::V6) == Some(addr)
                })
                .and_then(|(_, s)| cluster_of(s));
            add(PeerConfig {
                rr_client: client(pcluster, pas),
                port: port.unwrap_or(179),
                hold_time,
                restart_time,
                password,
                ..base(addr, pas, kind)
            });
        }
    }
    // Blocks of pools that may be exported, and workload addresses outside
    // this node's blocks (borrowed from another node's block).
    let exported: Vec<IpNet> = inputs
        .pools
        .values()
        .filter(|p| !p.disable_bgp_export)
        .map(|p| p.cidr.net())
        .collect();
    let in_pools = |n: &IpNet| exported.iter().any(|p| p.contains(n));
    let mut local: BTreeSet<IpNet> = inputs
        .blocks
        .iter()
        .filter(|b| in_pools(b))
        .copied()
        .collect();
    for ip in &inputs.workload_ips {
        if in_pools(ip) && !inputs.blocks.iter().any(|b| b.contains(ip)) {
            local.insert(*ip);
        }
    }
    Ok(Plan {
        identity,
        peers: peers.into_values().collect(),
        local,
        problems,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use calico_api::{AsNumber, NodeBgpSpec};

    fn node(
        addr: &str,
        cluster: &str,
        labels: &[(&str, &str)],
    ) -> (BTreeMap<String, String>, NodeSpec) {
        (
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            NodeSpec {
                bgp: Some(NodeBgpSpec {
                    ipv4_address: opt(addr),
                    route_reflector_cluster_id: opt(cluster),
                    ..NodeBgpSpec::default()
                }),
                ..NodeSpec::default()
            },
        )
    }

    fn net(s: &str) -> IpNet {
        s.parse().expect("net")
    }

    /// A typed field from its spelling (`""` is unset).
    fn opt<T: std::str::FromStr>(s: &str) -> Option<T>
    where
        T::Err: std::fmt::Debug,
    {
        (!s.is_empty()).then(|| s.parse().expect("valid test value"))
    }

    fn sel(s: &str) -> calico_api::Selector {
        s.parse().expect("selector")
    }

    fn inputs() -> Inputs {
        let mut i = Inputs::default();
        i.nodes
            .insert("a".into(), node("10.0.0.1/24", "", &[("rack", "r1")]));
        i.nodes
            .insert("b".into(), node("10.0.0.2/24", "", &[("rack", "r1")]));
        i.nodes
            .insert("c".into(), node("10.0.0.3/24", "", &[("rack", "r2")]));
        i.pools.insert(
            "p".into(),
            IpPoolSpec::new("10.244.0.0/16".parse().expect("cidr")),
        );
        i.blocks.insert(net("10.244.1.0/26"));
        i.workload_ips.insert(net("10.244.1.5/32"));
        i.workload_ips.insert(net("10.244.9.7/32"));
        i
    }

    #[test]
    fn mesh_by_default_with_blocks_and_borrowed_addresses() {
        let p = plan(&inputs(), "a").expect("plan");
        assert_eq!(p.identity.router_id, Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(p.identity.asn, 64512);
        let addrs: Vec<String> = p.peers.iter().map(|p| p.addr.to_string()).collect();
        assert_eq!(addrs, vec!["10.0.0.2", "10.0.0.3"]);
        assert!(p
            .peers
            .iter()
            .all(|p| p.kind == PeerKind::NodeToNodeMesh && !p.rr_client));
        assert_eq!(p.local, [net("10.244.1.0/26"), net("10.244.9.7/32")].into());
        assert!(plan(&inputs(), "nope").is_err());
    }

    #[test]
    fn passwords_come_from_secrets_and_a_missing_one_leaves_the_peer_out() {
        let pw = |name: &str| {
            Some(calico_api::BgpPassword {
                secret_key_ref: Some(calico_api::SecretKeyRef {
                    name: name.into(),
                    key: "pw".into(),
                }),
            })
        };
        let mut i = inputs();
        i.config = Some(BgpConfigurationSpec {
            node_mesh_password: pw("mesh"),
            ..BgpConfigurationSpec::default()
        });
        i.peers.insert(
            "tor".into(),
            BgpPeerSpec {
                peer_ip: opt("10.0.0.254"),
                as_number: Some(AsNumber(65001)),
                password: pw("tor"),
                ..BgpPeerSpec::default()
            },
        );
        assert_eq!(
            secret_refs(&i),
            [
                ("mesh".to_string(), "pw".to_string()),
                ("tor".into(), "pw".into())
            ]
            .into()
        );
        // No secrets: nobody is peered without the password it was given.
        let p = plan(&i, "a").expect("plan");
        assert!(p.peers.is_empty(), "{:?}", p.peers);
        assert_eq!(p.problems.len(), 2, "{:?}", p.problems);
        let extras = Extras {
            secrets: [
                (("mesh".to_string(), "pw".to_string()), "m3sh".to_string()),
                (("tor".into(), "pw".into()), "t0r".into()),
            ]
            .into(),
            max_prefixes: Some(10),
        };
        let p = plan_with(&i, "a", &extras).expect("plan");
        let got: Vec<(String, Option<String>)> = p
            .peers
            .iter()
            .map(|p| (p.addr.to_string(), p.password.clone()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("10.0.0.2".into(), Some("m3sh".into())),
                ("10.0.0.3".into(), Some("m3sh".into())),
                ("10.0.0.254".into(), Some("t0r".into())),
            ]
        );
        assert!(p.peers.iter().all(|p| p.max_prefixes == Some(10)));
        assert!(p.problems.is_empty());
        // A peer with fields this speaker cannot honour is left out too.
        i.peers.get_mut("tor").expect("tor").filters = vec!["only-default".into()];
        let p = plan_with(&i, "a", &extras).expect("plan");
        assert!(!p.peers.iter().any(|p| p.addr.to_string() == "10.0.0.254"));
        assert!(
            p.problems.iter().any(|w| w.contains("spec.filters")),
            "{:?}",
            p.problems
        );
    }

    #[test]
    fn peers_by_node_selector_and_route_reflectors() {
        let mut i = inputs();
        i.config = Some(BgpConfigurationSpec {
            node_to_node_mesh_enabled: Some(false),
            as_number: Some(AsNumber(65000)),
            ..BgpConfigurationSpec::default()
        });
        // c reflects for rack r1; rack r1 nodes peer with nodes labelled rr.
        i.nodes.insert(
            "c".into(),
            node("10.0.0.3/24", "244.0.0.1", &[("rr", "yes")]),
        );
        i.peers.insert(
            "to-rr".into(),
            BgpPeerSpec {
                node_selector: sel("rack == 'r1'"),
                peer_selector: sel("rr == 'yes'"),
                ..BgpPeerSpec::default()
            },
        );
        i.peers.insert(
            "rr-to-clients".into(),
            BgpPeerSpec {
                node_selector: sel("rr == 'yes'"),
                peer_selector: sel("rack == 'r1'"),
                ..BgpPeerSpec::default()
            },
        );
        i.peers.insert(
            "tor".into(),
            BgpPeerSpec {
                node: "a".into(),
                peer_ip: opt("10.0.0.254:1179"),
                as_number: Some(AsNumber(65100)),
                keepalive_time: opt("20s"),
                max_restart_time: opt("2m"),
                ..BgpPeerSpec::default()
            },
        );
        let a = plan(&i, "a").expect("plan");
        assert_eq!(a.identity.asn, 65000);
        let got: Vec<(String, u32, u16, bool)> = a
            .peers
            .iter()
            .map(|p| (p.addr.to_string(), p.asn, p.port, p.rr_client))
            .collect();
        assert_eq!(
            got,
            vec![
                ("10.0.0.3".into(), 65000, 179, false),
                ("10.0.0.254".into(), 65100, 1179, false)
            ]
        );
        let tor = a.peers.iter().find(|p| p.port == 1179).expect("tor");
        assert_eq!((tor.hold_time, tor.restart_time), (Some(60), Some(120)));
        let c = plan(&i, "c").expect("plan");
        assert_eq!(c.identity.cluster_id, Some(Ipv4Addr::new(244, 0, 0, 1)));
        assert!(c
            .peers
            .iter()
            .all(|p| p.rr_client && p.kind == PeerKind::Node));
        assert_eq!(c.peers.len(), 2);
    }

    #[test]
    fn ipv6_mesh_between_nodes_with_ipv6_addresses() {
        let mut i = inputs();
        for (name, a6) in [("a", "fd00::1/64"), ("b", "fd00::2/64")] {
            let spec = &mut i.nodes.get_mut(name).expect("node").1;
            spec.bgp.as_mut().expect("bgp").ipv6_address = opt(a6);
        }
        let a = plan(&i, "a").expect("plan");
        let got: Vec<(String, Option<String>)> = a
            .peers
            .iter()
            .map(|p| (p.addr.to_string(), p.local_addr.map(|l| l.to_string())))
            .collect();
        assert_eq!(
            got,
            vec![
                ("10.0.0.2".into(), Some("10.0.0.1".into())),
                ("10.0.0.3".into(), Some("10.0.0.1".into())),
                ("fd00::2".into(), Some("fd00::1".into())),
            ]
        );
        // Without an IPv6 address of its own a node makes no IPv6 sessions.
        assert_eq!(plan(&i, "c").expect("plan").peers.len(), 2);
    }

    #[test]
    fn pools_that_do_not_export_are_not_announced() {
        let mut i = inputs();
        i.pools.get_mut("p").expect("pool").disable_bgp_export = true;
        assert!(plan(&i, "a").expect("plan").local.is_empty());
    }
}
