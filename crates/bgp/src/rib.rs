//! The routing information base, pure: routes learned per peer (Adj-RIB-In),
//! the best route per prefix (Loc-RIB), and what each peer has been sent
//! (Adj-RIB-Out). Every call returns the [`Changes`] it causes: UPDATE
//! contents per peer and kernel route changes. No I/O, no clock.

use calico_bgp_codec::{pass_on, AsPath, Attributes, Origin, Update};
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

/// An UPDATE as RIB input: every prefix it reaches (with its path) or
/// withdraws.
pub(crate) fn routes_of(u: Update) -> Vec<(IpNet, Option<Path>)> {
    let mut out: Vec<(IpNet, Option<Path>)> = Vec::new();
    for w in &u.withdrawn {
        out.push((IpNet::V4(*w), None));
    }
    let mut attrs = u.attributes;
    if let Some(un) = attrs.mp_unreach.take() {
        out.extend(un.withdrawn.into_iter().map(|p| (p, None)));
    }
    let reach = attrs.mp_reach.take();
    let next_hop = attrs.next_hop.take();
    let shared = Arc::new(attrs);
    if let Some(nh) = next_hop {
        for n in &u.nlri {
            out.push((
                IpNet::V4(*n),
                Some(Path {
                    next_hop: IpAddr::V4(nh),
                    attrs: Arc::clone(&shared),
                    stale: false,
                }),
            ));
        }
    }
    if let Some(r) = reach {
        if let Some(nh) = r.next_hops.first() {
            for p in r.nlri {
                out.push((
                    p,
                    Some(Path {
                        next_hop: *nh,
                        attrs: Arc::clone(&shared),
                        stale: false,
                    }),
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests;
