//! The routing information base, pure: routes learned per peer (Adj-RIB-In),
//! the best route per prefix (Loc-RIB), and what each peer has been sent
//! (Adj-RIB-Out). Every call returns the [`Changes`] it causes: UPDATE
//! contents per peer and kernel route changes. No I/O, no clock.

use calico_bgp_codec::{pass_on, AsPath, Attributes, Origin};
use ipnet::IpNet;
use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

/// A peer is known by its address.
pub type PeerId = IpAddr;

/// What the RIB needs to know about an established peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    pub addr: IpAddr,
    pub asn: u32,
    pub router_id: Ipv4Addr,
    /// Our address on the session: the next hop we announce ourselves as.
    pub local_addr: IpAddr,
    /// A route-reflector client of ours.
    pub rr_client: bool,
    pub ipv4: bool,
    pub ipv6: bool,
}

/// One route: where to send traffic and the attributes it came with
/// (next hop and MP attributes are not kept in `attrs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Path {
    pub next_hop: IpAddr,
    pub attrs: Arc<Attributes>,
    /// Marked when its peer's session dropped during graceful restart.
    pub stale: bool,
}

/// A change to announce to one peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Announce {
    Reach {
        prefix: IpNet,
        next_hop: IpAddr,
        attrs: Arc<Attributes>,
    },
    Withdraw(IpNet),
}

impl Announce {
    pub fn prefix(&self) -> &IpNet {
        match self {
            Announce::Reach { prefix, .. } | Announce::Withdraw(prefix) => prefix,
        }
    }
}

/// A change to the kernel's routes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FibOp {
    Set(IpNet, IpAddr),
    Remove(IpNet),
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    pub send: BTreeMap<PeerId, Vec<Announce>>,
    pub fib: Vec<FibOp>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.send.values().all(Vec::is_empty) && self.fib.is_empty()
    }
}

/// The routes peers sent for one prefix: usually one or two, so a small
/// vector rather than a map (a map node per prefix costs hundreds of bytes).
#[derive(Debug, Default)]
struct Paths(Vec<(PeerId, Path)>);

impl Paths {
    fn get(&self, peer: &PeerId) -> Option<&Path> {
        self.0.iter().find(|(p, _)| p == peer).map(|(_, x)| x)
    }
    fn get_mut(&mut self, peer: &PeerId) -> Option<&mut Path> {
        self.0.iter_mut().find(|(p, _)| p == peer).map(|(_, x)| x)
    }
    fn contains_key(&self, peer: &PeerId) -> bool {
        self.get(peer).is_some()
    }
    fn insert(&mut self, peer: PeerId, path: Path) {
        match self.get_mut(&peer) {
            Some(p) => *p = path,
            None => {
                self.0.reserve_exact(1);
                self.0.push((peer, path));
            }
        }
    }
    fn remove(&mut self, peer: &PeerId) -> Option<Path> {
        let i = self.0.iter().position(|(p, _)| p == peer)?;
        Some(self.0.swap_remove(i).1)
    }
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    fn iter(&self) -> impl Iterator<Item = (&PeerId, &Path)> {
        self.0.iter().map(|(id, p)| (id, p))
    }
}

/// Where the best route for a prefix came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Local,
    Peer(PeerId),
}

#[derive(Debug)]
pub struct Rib {
    local_as: u32,
    router_id: Ipv4Addr,
    /// Set when this speaker is a route reflector.
    cluster_id: Option<Ipv4Addr>,
    peers: BTreeMap<PeerId, PeerInfo>,
    local: BTreeMap<IpNet, Arc<Attributes>>,
    adj_in: BTreeMap<IpNet, Paths>,
    best: BTreeMap<IpNet, (Source, Path)>,
    adj_out: BTreeMap<PeerId, BTreeMap<IpNet, (IpAddr, Arc<Attributes>)>>,
    /// Prefixes whose best route came from a peer (the kernel holds them).
    installed: usize,
}

fn local_attrs() -> Arc<Attributes> {
    Arc::new(Attributes {
        origin: Some(Origin::Igp),
        as_path: Some(AsPath::default()),
        ..Attributes::default()
    })
}

impl Rib {
    pub fn new(local_as: u32, router_id: Ipv4Addr, cluster_id: Option<Ipv4Addr>) -> Self {
        Rib {
            local_as,
            router_id,
            cluster_id,
            peers: BTreeMap::new(),
            local: BTreeMap::new(),
            adj_in: BTreeMap::new(),
            best: BTreeMap::new(),
            adj_out: BTreeMap::new(),
            installed: 0,
        }
    }

    pub fn local_as(&self) -> u32 {
        self.local_as
    }

    /// Prefixes received from `peer` (stale ones included).
    pub fn received(&self, peer: &PeerId) -> usize {
        self.adj_in
            .values()
            .filter(|paths| paths.contains_key(peer))
            .count()
    }

    /// Prefixes currently announced to `peer`.
    pub fn advertised(&self, peer: &PeerId) -> usize {
        self.adj_out.get(peer).map_or(0, BTreeMap::len)
    }

    /// How many prefixes are routed by a peer's route.
    pub fn installed(&self) -> usize {
        self.installed
    }

    /// The best routes learned from peers: prefix and next hop.
    pub fn learned(&self) -> impl Iterator<Item = (&IpNet, &IpAddr)> {
        self.best.iter().filter_map(|(p, (s, path))| match s {
            Source::Peer(_) => Some((p, &path.next_hop)),
            Source::Local => None,
        })
    }

    /// Replaces the prefixes this speaker originates.
    pub fn set_local(&mut self, prefixes: &BTreeSet<IpNet>) -> Changes {
        let mut dirty: BTreeSet<IpNet> = BTreeSet::new();
        let gone: Vec<IpNet> = self
            .local
            .keys()
            .filter(|p| !prefixes.contains(*p))
            .copied()
            .collect();
        for p in gone {
            self.local.remove(&p);
            dirty.insert(p);
        }
        let attrs = local_attrs();
        for p in prefixes {
            if !self.local.contains_key(p) {
                self.local.insert(*p, Arc::clone(&attrs));
                dirty.insert(*p);
            }
        }
        self.recompute(dirty)
    }

    /// A session came up: everything it should get is sent.
    pub fn peer_up(&mut self, info: PeerInfo) -> Changes {
        let id = info.addr;
        self.peers.insert(id, info);
        self.adj_out.insert(id, BTreeMap::new());
        let mut ch = Changes::default();
        let prefixes: Vec<IpNet> = self.best.keys().copied().collect();
        for p in prefixes {
            self.export_to(&id, &p, &mut ch);
        }
        ch
    }

    /// A session went down. With `keep` (graceful restart) its routes stay,
    /// marked stale, until the peer's End-of-RIB or [`Rib::drop_stale`];
    /// otherwise they go now.
    pub fn peer_down(&mut self, peer: &PeerId, keep: bool) -> Changes {
        self.peers.remove(peer);
        self.adj_out.remove(peer);
        let mut dirty = BTreeSet::new();
        for (prefix, paths) in self.adj_in.iter_mut() {
            if keep {
                if let Some(p) = paths.get_mut(peer) {
                    p.stale = true;
                }
            } else if paths.remove(peer).is_some() {
                dirty.insert(*prefix);
            }
        }
        self.adj_in.retain(|_, paths| !paths.is_empty());
        self.recompute(dirty)
    }

    /// Drops `peer`'s routes still marked stale (its End-of-RIB arrived, or
    /// the restart time ran out).
    pub fn drop_stale(&mut self, peer: &PeerId) -> Changes {
        let mut dirty = BTreeSet::new();
        for (prefix, paths) in self.adj_in.iter_mut() {
            if paths.get(peer).is_some_and(|p| p.stale) {
                paths.remove(peer);
                dirty.insert(*prefix);
            }
        }
        self.adj_in.retain(|_, paths| !paths.is_empty());
        self.recompute(dirty)
    }

    /// Routes from an UPDATE: each prefix with its path, or `None` when
    /// withdrawn. Routes that would loop are treated as withdrawn.
    pub fn update(&mut self, peer: &PeerId, routes: Vec<(IpNet, Option<Path>)>) -> Changes {
        let mut dirty = BTreeSet::new();
        for (prefix, path) in routes {
            let path = path.filter(|p| !self.loops(peer, p));
            match path {
                Some(p) => {
                    self.adj_in.entry(prefix).or_default().insert(*peer, p);
                }
                None => {
                    if let Some(paths) = self.adj_in.get_mut(&prefix) {
                        paths.remove(peer);
                        if paths.is_empty() {
                            self.adj_in.remove(&prefix);
                        }
                    }
                }
            }
            dirty.insert(prefix);
        }
        self.recompute(dirty)
    }

    /// What `peer` should hold, sent again in full (ROUTE-REFRESH).
    pub fn refresh(&mut self, peer: &PeerId) -> Changes {
        let mut ch = Changes::default();
        if let Some(out) = self.adj_out.get(peer) {
            let v = out
                .iter()
                .map(|(p, (nh, a))| Announce::Reach {
                    prefix: *p,
                    next_hop: *nh,
                    attrs: Arc::clone(a),
                })
                .collect();
            ch.send.insert(*peer, v);
        }
        ch
    }

    fn loops(&self, peer: &PeerId, p: &Path) -> bool {
        let ibgp = self.peers.get(peer).is_some_and(|i| i.asn == self.local_as);
        if !ibgp
            && p.attrs
                .as_path
                .as_ref()
                .is_some_and(|a| a.contains(self.local_as))
        {
            return true;
        }
        if p.attrs.originator_id == Some(self.router_id) {
            return true;
        }
        self.cluster_id
            .is_some_and(|c| p.attrs.cluster_list.contains(&c))
    }

    /// RFC 4271 §9.1.2.2 decision process, then the usual tie-breakers.
    fn compare(&self, a: (&Source, &Path), b: (&Source, &Path)) -> Ordering {
        let info = |s: &Source| match s {
            Source::Local => None,
            Source::Peer(id) => self.peers.get(id),
        };
        let (ia, ib) = (info(a.0), info(b.0));
        let local = |s: &Source| matches!(s, Source::Local);
        let lp = |p: &Path| p.attrs.local_pref.unwrap_or(100);
        let len = |p: &Path| p.attrs.as_path.as_ref().map_or(0, AsPath::length);
        let origin = |p: &Path| p.attrs.origin.unwrap_or(Origin::Incomplete);
        let ebgp = |i: Option<&PeerInfo>| i.is_some_and(|i| i.asn != self.local_as);
        let rid = |s: &Source, p: &Path, i: Option<&PeerInfo>| {
            p.attrs
                .originator_id
                .or(i.map(|i| i.router_id))
                .unwrap_or(match s {
                    Source::Local => self.router_id,
                    Source::Peer(_) => Ipv4Addr::BROADCAST,
                })
        };
        // Less is better throughout.
        local(b.0)
            .cmp(&local(a.0))
            .then(a.1.stale.cmp(&b.1.stale))
            .then(lp(b.1).cmp(&lp(a.1)))
            .then(len(a.1).cmp(&len(b.1)))
            .then(origin(a.1).cmp(&origin(b.1)))
            .then(a.1.attrs.med.unwrap_or(0).cmp(&b.1.attrs.med.unwrap_or(0)))
            .then(ebgp(ib).cmp(&ebgp(ia)))
            .then(rid(a.0, a.1, ia).cmp(&rid(b.0, b.1, ib)))
            .then(
                a.1.attrs
                    .cluster_list
                    .len()
                    .cmp(&b.1.attrs.cluster_list.len()),
            )
            .then(ia.map(|i| i.addr).cmp(&ib.map(|i| i.addr)))
    }

    fn choose(&self, prefix: &IpNet) -> Option<(Source, Path)> {
        let mut cands: Vec<(Source, &Path)> = Vec::new();
        let local_path;
        if let Some(a) = self.local.get(prefix) {
            local_path = Path {
                next_hop: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                attrs: Arc::clone(a),
                stale: false,
            };
            cands.push((Source::Local, &local_path));
        }
        if let Some(paths) = self.adj_in.get(prefix) {
            cands.extend(paths.iter().map(|(id, p)| (Source::Peer(*id), p)));
        }
        cands
            .into_iter()
            .min_by(|a, b| self.compare((&a.0, a.1), (&b.0, b.1)))
            .map(|(s, p)| (s, p.clone()))
    }

    fn recompute(&mut self, dirty: BTreeSet<IpNet>) -> Changes {
        let mut ch = Changes::default();
        for prefix in dirty {
            let new = self.choose(&prefix);
            let old = self.best.get(&prefix);
            if new.as_ref() == old {
                continue;
            }
            // The kernel follows the best route learned from a peer.
            let fib_old = old.and_then(|(s, p)| matches!(s, Source::Peer(_)).then_some(p.next_hop));
            let fib_new = new
                .as_ref()
                .and_then(|(s, p)| matches!(s, Source::Peer(_)).then_some(p.next_hop));
            match (fib_old, fib_new) {
                (_, Some(nh)) if fib_old != Some(nh) => ch.fib.push(FibOp::Set(prefix, nh)),
                (Some(_), None) => ch.fib.push(FibOp::Remove(prefix)),
                _ => {}
            }
            match (fib_old.is_some(), fib_new.is_some()) {
                (false, true) => self.installed += 1,
                (true, false) => self.installed -= 1,
                _ => {}
            }
            match new {
                Some(b) => {
                    self.best.insert(prefix, b);
                }
                None => {
                    self.best.remove(&prefix);
                }
            }
            let peers: Vec<PeerId> = self.peers.keys().copied().collect();
            for id in peers {
                self.export_to(&id, &prefix, &mut ch);
            }
        }
        ch
    }

    /// What peer `to` should hold for `prefix` under the export rules, and
    /// the announcement if that differs from what it was sent.
    fn export_to(&mut self, to: &PeerId, prefix: &IpNet, ch: &mut Changes) {
        let want = self.exported(to, prefix);
        let Some(out) = self.adj_out.get_mut(to) else {
            return;
        };
        match want {
            Some((nh, attrs)) => {
                if out
                    .get(prefix)
                    .is_some_and(|(n, a)| *n == nh && **a == *attrs)
                {
                    return;
                }
                out.insert(*prefix, (nh, Arc::clone(&attrs)));
                ch.send.entry(*to).or_default().push(Announce::Reach {
                    prefix: *prefix,
                    next_hop: nh,
                    attrs,
                });
            }
            None => {
                if out.remove(prefix).is_some() {
                    ch.send
                        .entry(*to)
                        .or_default()
                        .push(Announce::Withdraw(*prefix));
                }
            }
        }
    }

    fn exported(&self, to: &PeerId, prefix: &IpNet) -> Option<(IpAddr, Arc<Attributes>)> {
        let peer = self.peers.get(to)?;
        let family_ok = match prefix {
            IpNet::V4(_) => peer.ipv4,
            IpNet::V6(_) => peer.ipv6,
        };
        if !family_ok {
            return None;
        }
        let (source, path) = self.best.get(prefix)?;
        let to_ibgp = peer.asn == self.local_as;
        let self_nh = || match (prefix, peer.local_addr) {
            (IpNet::V4(_), a @ IpAddr::V4(_)) | (IpNet::V6(_), a @ IpAddr::V6(_)) => Some(a),
            _ => None,
        };
        match source {
            Source::Local => {
                let mut a = (*path.attrs).clone();
                if to_ibgp {
                    a.local_pref = Some(100);
                } else {
                    a.as_path = Some(AsPath::default().prepended(self.local_as));
                }
                Some((self_nh()?, Arc::new(a)))
            }
            Source::Peer(from) => {
                if from == to {
                    return None;
                }
                let src = self.peers.get(from)?;
                let from_ibgp = src.asn == self.local_as;
                let mut a = (*path.attrs).clone();
                a.other = pass_on(&path.attrs.other);
                if to_ibgp && from_ibgp {
                    // Only a route reflector passes iBGP routes to iBGP peers:
                    // client routes to everyone, others' to clients only.
                    let cluster = self.cluster_id?;
                    if !src.rr_client && !peer.rr_client {
                        return None;
                    }
                    a.originator_id.get_or_insert(src.router_id);
                    a.cluster_list.insert(0, cluster);
                    return Some((path.next_hop, Arc::new(a)));
                }
                if to_ibgp {
                    // Learned over eBGP: next hop self for our iBGP peers.
                    a.local_pref = Some(a.local_pref.unwrap_or(100));
                    return Some((self_nh()?, Arc::new(a)));
                }
                // To an external peer: our AS first, next hop self, and
                // nothing that only means something inside our AS.
                a.as_path = Some(
                    a.as_path
                        .clone()
                        .unwrap_or_default()
                        .prepended(self.local_as),
                );
                a.local_pref = None;
                a.med = None;
                a.originator_id = None;
                a.cluster_list.clear();
                Some((self_nh()?, Arc::new(a)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }
    fn net(s: &str) -> IpNet {
        s.parse().expect("net")
    }
    fn peer(addr: &str, asn: u32, rr_client: bool) -> PeerInfo {
        PeerInfo {
            addr: ip(addr),
            asn,
            router_id: match ip(addr) {
                IpAddr::V4(a) => a,
                IpAddr::V6(_) => Ipv4Addr::new(9, 9, 9, 9),
            },
            local_addr: ip("10.0.0.1"),
            rr_client,
            ipv4: true,
            ipv6: false,
        }
    }
    fn path(nh: &str, asns: Vec<u32>) -> Path {
        Path {
            next_hop: ip(nh),
            attrs: Arc::new(Attributes {
                origin: Some(Origin::Igp),
                as_path: Some(AsPath::sequence(asns)),
                local_pref: Some(100),
                ..Attributes::default()
            }),
            stale: false,
        }
    }
    fn reach_of(ch: &Changes, to: &str) -> Vec<(IpNet, IpAddr)> {
        ch.send
            .get(&ip(to))
            .into_iter()
            .flatten()
            .filter_map(|a| match a {
                Announce::Reach {
                    prefix, next_hop, ..
                } => Some((*prefix, *next_hop)),
                Announce::Withdraw(_) => None,
            })
            .collect()
    }

    #[test]
    fn mesh_announces_local_blocks_and_installs_learned_ones() {
        let mut rib = Rib::new(64512, Ipv4Addr::new(10, 0, 0, 1), None);
        rib.set_local(&[net("10.244.1.0/26")].into());
        let ch = rib.peer_up(peer("10.0.0.2", 64512, false));
        assert_eq!(
            reach_of(&ch, "10.0.0.2"),
            vec![(net("10.244.1.0/26"), ip("10.0.0.1"))]
        );
        let ch = rib.update(
            &ip("10.0.0.2"),
            vec![(net("10.244.2.0/26"), Some(path("10.0.0.2", vec![])))],
        );
        assert_eq!(
            ch.fib,
            vec![FibOp::Set(net("10.244.2.0/26"), ip("10.0.0.2"))]
        );
        assert!(
            ch.send.values().all(Vec::is_empty),
            "iBGP routes are not sent back"
        );
        // A second iBGP peer does not get the first one's route (no RR).
        let ch = rib.peer_up(peer("10.0.0.3", 64512, false));
        assert_eq!(
            reach_of(&ch, "10.0.0.3"),
            vec![(net("10.244.1.0/26"), ip("10.0.0.1"))]
        );
        // Withdrawn: out of the kernel.
        let ch = rib.update(&ip("10.0.0.2"), vec![(net("10.244.2.0/26"), None)]);
        assert_eq!(ch.fib, vec![FibOp::Remove(net("10.244.2.0/26"))]);
        // Local prefix removed: withdrawn from everyone.
        let ch = rib.set_local(&BTreeSet::new());
        assert_eq!(ch.send.len(), 2);
        assert!(ch
            .send
            .values()
            .all(|v| v == &vec![Announce::Withdraw(net("10.244.1.0/26"))]));
    }

    #[test]
    fn route_reflector_reflects_with_originator_and_cluster() {
        let cluster = Ipv4Addr::new(244, 0, 0, 1);
        let mut rib = Rib::new(64512, Ipv4Addr::new(10, 0, 0, 1), Some(cluster));
        rib.peer_up(peer("10.0.0.2", 64512, true));
        rib.peer_up(peer("10.0.0.3", 64512, true));
        rib.peer_up(peer("10.0.0.4", 64512, false));
        let ch = rib.update(
            &ip("10.0.0.2"),
            vec![(net("10.244.2.0/26"), Some(path("10.0.0.2", vec![])))],
        );
        assert_eq!(
            reach_of(&ch, "10.0.0.3"),
            vec![(net("10.244.2.0/26"), ip("10.0.0.2"))]
        );
        assert_eq!(
            reach_of(&ch, "10.0.0.4"),
            vec![(net("10.244.2.0/26"), ip("10.0.0.2"))]
        );
        let Some(Announce::Reach { attrs, .. }) = ch.send[&ip("10.0.0.3")].first() else {
            panic!("reflected")
        };
        assert_eq!(attrs.originator_id, Some(Ipv4Addr::new(10, 0, 0, 2)));
        assert_eq!(attrs.cluster_list, vec![cluster]);
        // From a non-client: to clients only.
        let ch = rib.update(
            &ip("10.0.0.4"),
            vec![(net("10.244.4.0/26"), Some(path("10.0.0.4", vec![])))],
        );
        assert_eq!(reach_of(&ch, "10.0.0.2").len(), 1);
        assert_eq!(reach_of(&ch, "10.0.0.3").len(), 1);
        // Our own cluster id coming back is a loop.
        let mut looped = path("10.0.0.3", vec![]);
        Arc::make_mut(&mut looped.attrs).cluster_list = vec![cluster];
        let ch = rib.update(&ip("10.0.0.3"), vec![(net("10.244.9.0/26"), Some(looped))]);
        assert!(ch.fib.is_empty());
    }

    #[test]
    fn ebgp_prepends_and_prefers_shorter_paths() {
        let mut rib = Rib::new(64512, Ipv4Addr::new(10, 0, 0, 1), None);
        rib.peer_up(peer("10.0.0.2", 65001, false));
        rib.peer_up(peer("10.0.0.3", 65002, false));
        rib.peer_up(peer("10.0.0.4", 64512, false));
        rib.update(
            &ip("10.0.0.2"),
            vec![(
                net("192.0.2.0/24"),
                Some(path("10.0.0.2", vec![65001, 65100])),
            )],
        );
        let ch = rib.update(
            &ip("10.0.0.3"),
            vec![(net("192.0.2.0/24"), Some(path("10.0.0.3", vec![65002])))],
        );
        assert_eq!(
            ch.fib,
            vec![FibOp::Set(net("192.0.2.0/24"), ip("10.0.0.3"))]
        );
        let to_2 = ch.send[&ip("10.0.0.2")].clone();
        let Some(Announce::Reach {
            attrs, next_hop, ..
        }) = to_2.first()
        else {
            panic!("sent to the other eBGP peer")
        };
        assert_eq!(attrs.as_path, Some(AsPath::sequence(vec![64512, 65002])));
        assert_eq!(*next_hop, ip("10.0.0.1"));
        assert_eq!(attrs.local_pref, None);
        // Our AS in a received path: a loop, ignored.
        let ch = rib.update(
            &ip("10.0.0.2"),
            vec![(
                net("198.51.100.0/24"),
                Some(path("10.0.0.2", vec![65001, 64512])),
            )],
        );
        assert!(ch.fib.is_empty());
    }

    #[test]
    fn graceful_restart_keeps_routes_until_end_of_rib() {
        let mut rib = Rib::new(64512, Ipv4Addr::new(10, 0, 0, 1), None);
        rib.peer_up(peer("10.0.0.2", 64512, false));
        rib.update(
            &ip("10.0.0.2"),
            vec![
                (net("10.244.2.0/26"), Some(path("10.0.0.2", vec![]))),
                (net("10.244.3.0/26"), Some(path("10.0.0.2", vec![]))),
            ],
        );
        let ch = rib.peer_down(&ip("10.0.0.2"), true);
        assert!(ch.fib.is_empty(), "stale routes keep forwarding");
        assert_eq!(rib.learned().count(), 2);
        rib.peer_up(peer("10.0.0.2", 64512, false));
        rib.update(
            &ip("10.0.0.2"),
            vec![(net("10.244.2.0/26"), Some(path("10.0.0.2", vec![])))],
        );
        let ch = rib.drop_stale(&ip("10.0.0.2"));
        assert_eq!(ch.fib, vec![FibOp::Remove(net("10.244.3.0/26"))]);
        // Without graceful restart the routes go at once.
        let ch = rib.peer_down(&ip("10.0.0.2"), false);
        assert_eq!(ch.fib, vec![FibOp::Remove(net("10.244.2.0/26"))]);
    }
}
