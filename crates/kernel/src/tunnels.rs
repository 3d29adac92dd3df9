//! The kernel's tunnel devices through rtnetlink. rtnetlink is async; a
//! current-thread runtime private to [`Tunnels`] drives it, so callers see
//! plain blocking calls.

use calico_calc::overlay::{Mac, Tunnel, DEVICE_V4, DEVICE_V6};
use calico_tunnel::{device_action, diff, DeviceAction, Observed};
use futures_util::TryStreamExt;
use netlink_packet_route::address::{AddressAttribute, AddressHeaderFlags, AddressMessage};
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVxlan, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::AddressFamily;
use rtnetlink::{Handle, LinkUnspec, LinkVxlan};
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use tracing::info;

#[derive(Debug, thiserror::Error)]
pub enum TunnelError {
    #[error("cannot start the netlink runtime")]
    Runtime(#[source] std::io::Error),
    #[error("{device}: {what}")]
    Netlink {
        device: String,
        what: String,
        #[source]
        cause: crate::Cause,
    },
    #[error("{device}: not there after creating it")]
    Vanished { device: String },
    #[error("{device}: no interface holds the node's address {local} (Node spec.bgp address), so there is no parent device to send tunnelled packets from")]
    NoParent { device: String, local: IpAddr },
}

/// The kernel's tunnel devices.
pub struct Tunnels {
    rt: tokio::runtime::Runtime,
    handle: Handle,
}

impl std::fmt::Debug for Tunnels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tunnels")
    }
}

fn nl<'a>(device: &'a str, what: &'a str) -> impl FnOnce(rtnetlink::Error) -> TunnelError + 'a {
    move |e| TunnelError::Netlink {
        device: device.to_string(),
        what: what.to_string(),
        cause: std::sync::Arc::new(e),
    }
}

fn is_enodev(e: &rtnetlink::Error) -> bool {
    matches!(e, rtnetlink::Error::NetlinkError(m) if m.raw_code() == -nix::libc::ENODEV)
}

fn mac_of(bytes: &[u8]) -> Option<Mac> {
    bytes.try_into().ok()
}

fn observe(msg: &LinkMessage) -> Observed {
    let mut o = Observed {
        index: msg.header.index,
        up: msg.header.flags.contains(LinkFlags::Up),
        ..Observed::default()
    };
    for a in &msg.attributes {
        match a {
            LinkAttribute::Address(m) => o.mac = mac_of(m),
            LinkAttribute::Mtu(m) => o.mtu = Some(*m),
            LinkAttribute::LinkInfo(infos) => {
                for i in infos {
                    match i {
                        LinkInfo::Kind(InfoKind::Vxlan) => o.vxlan = true,
                        LinkInfo::Data(InfoData::Vxlan(v)) => {
                            for x in v {
                                match x {
                                    InfoVxlan::Id(id) => o.vni = Some(*id),
                                    InfoVxlan::Port(p) => o.port = Some(*p),
                                    InfoVxlan::Local(a) => o.local = Some(IpAddr::V4(*a)),
                                    InfoVxlan::Local6(a) => o.local = Some(IpAddr::V6(*a)),
                                    InfoVxlan::Link(l) => o.parent = Some(*l),
                                    InfoVxlan::Learning(l) => o.learning = Some(*l),
                                    _ => {}
                                }
                            }
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    o
}

fn addr_of(msg: &AddressMessage) -> Option<IpAddr> {
    // IFA_LOCAL is the interface's own address on point-to-point links;
    // IFA_ADDRESS otherwise.
    msg.attributes
        .iter()
        .find_map(|a| match a {
            AddressAttribute::Local(ip) => Some(*ip),
            _ => None,
        })
        .or_else(|| {
            msg.attributes.iter().find_map(|a| match a {
                AddressAttribute::Address(ip) => Some(*ip),
                _ => None,
            })
        })
}

fn is_link_local(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V6(a) => (a.segments()[0] & 0xffc0) == 0xfe80,
        IpAddr::V4(_) => false,
    }
}

fn ip_of(a: &NeighbourAddress) -> Option<IpAddr> {
    match a {
        NeighbourAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        NeighbourAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        NeighbourAddress::Other(b) => match b.len() {
            4 => <[u8; 4]>::try_from(b.as_slice())
                .ok()
                .map(|o| IpAddr::V4(Ipv4Addr::from(o))),
            16 => <[u8; 16]>::try_from(b.as_slice())
                .ok()
                .map(|o| IpAddr::V6(Ipv6Addr::from(o))),
            _ => None,
        },
        _ => None,
    }
}

/// A neighbour or forwarding entry: (IP, MAC) with its message (to delete it by).
fn entry_of(msg: &NeighbourMessage) -> Option<(IpAddr, Mac)> {
    let mut ip = None;
    let mut mac = None;
    for a in &msg.attributes {
        match a {
            NeighbourAttribute::Destination(d) => ip = ip_of(d),
            NeighbourAttribute::LinkLayerAddress(l) => mac = mac_of(l),
            _ => {}
        }
    }
    Some((ip?, mac?))
}

impl Tunnels {
    pub fn new() -> Result<Self, TunnelError> {
        let (rt, handle) = crate::routes::netlink().map_err(TunnelError::Runtime)?;
        Ok(Tunnels { rt, handle })
    }

    /// Makes the kernel's tunnel devices exactly `want` (by name; Calico's
    /// two device names are owned): creates or fixes the wanted ones with
    /// their address, neighbour and forwarding entries, deletes the others.
    /// Each device is done on its own; the first error per device comes
    /// back and the rest still go ahead.
    pub fn sync(&self, want: &[Tunnel]) -> Vec<TunnelError> {
        let mut errors = Vec::new();
        for name in [DEVICE_V4, DEVICE_V6] {
            let outcome = match want.iter().find(|t| t.name == name) {
                Some(t) => self.rt.block_on(self.ensure(t)),
                None => self.rt.block_on(self.remove(name)),
            };
            if let Err(e) = outcome {
                errors.push(e);
            }
        }
        errors
    }

    /// Every interface's name, MTU and whether it is up (for finding the
    /// underlay's MTU).
    pub fn links(&self) -> Result<Vec<(String, u32, bool)>, TunnelError> {
        self.rt.block_on(async {
            let mut out = Vec::new();
            let mut links = self.handle.link().get().execute();
            while let Some(msg) = links
                .try_next()
                .await
                .map_err(nl("links", "listing interfaces"))?
            {
                let up = msg.header.flags.contains(LinkFlags::Up);
                let mut name = None;
                let mut mtu = None;
                for a in &msg.attributes {
                    match a {
                        LinkAttribute::IfName(n) => name = Some(n.clone()),
                        LinkAttribute::Mtu(m) => mtu = Some(*m),
                        _ => {}
                    }
                }
                if let (Some(n), Some(m)) = (name, mtu) {
                    out.push((n, m, up));
                }
            }
            Ok(out)
        })
    }

    /// Every interface address, by interface name.
    pub fn addresses(&self) -> Result<Vec<(String, IpAddr)>, TunnelError> {
        let names: std::collections::BTreeMap<u32, String> = self.rt.block_on(async {
            let mut out = std::collections::BTreeMap::new();
            let mut links = self.handle.link().get().execute();
            while let Some(msg) = links
                .try_next()
                .await
                .map_err(nl("links", "listing interfaces"))?
            {
                for a in &msg.attributes {
                    if let LinkAttribute::IfName(n) = a {
                        out.insert(msg.header.index, n.clone());
                    }
                }
            }
            Ok::<_, TunnelError>(out)
        })?;
        self.rt.block_on(async {
            let mut out = Vec::new();
            let mut addrs = self.handle.address().get().execute();
            while let Some(msg) = addrs
                .try_next()
                .await
                .map_err(nl("addresses", "listing addresses"))?
            {
                if let (Some(name), Some(ip)) = (names.get(&msg.header.index), addr_of(&msg)) {
                    out.push((name.clone(), ip));
                }
            }
            Ok(out)
        })
    }

    /// The device named `name`, if there is one.
    pub fn observe(&self, name: &str) -> Result<Option<Observed>, TunnelError> {
        self.rt.block_on(self.find(name))
    }

    async fn find(&self, name: &str) -> Result<Option<Observed>, TunnelError> {
        let mut links = self
            .handle
            .link()
            .get()
            .match_name(name.to_string())
            .execute();
        match links.try_next().await {
            Ok(Some(msg)) => Ok(Some(observe(&msg))),
            Ok(None) => Ok(None),
            Err(e) if is_enodev(&e) => Ok(None),
            Err(e) => Err(nl(name, "reading the device")(e)),
        }
    }

    async fn remove(&self, name: &str) -> Result<(), TunnelError> {
        if let Some(o) = self.find(name).await? {
            info!("{name}: no VXLAN pool needs it any more; deleting it");
            match self.handle.link().del(o.index).execute().await {
                Ok(()) => {}
                Err(e) if is_enodev(&e) => {}
                Err(e) => return Err(nl(name, "deleting the device")(e)),
            }
        }
        Ok(())
    }

    /// The index of the interface holding `local`.
    async fn parent_of(&self, name: &str, local: IpAddr) -> Result<u32, TunnelError> {
        let mut addrs = self.handle.address().get().execute();
        while let Some(msg) = addrs
            .try_next()
            .await
            .map_err(nl(name, "listing addresses"))?
        {
            if addr_of(&msg) == Some(local) {
                return Ok(msg.header.index);
            }
        }
        Err(TunnelError::NoParent {
            device: name.to_string(),
            local,
        })
    }

    async fn ensure(&self, t: &Tunnel) -> Result<(), TunnelError> {
        let name = t.name.as_str();
        let parent = self.parent_of(name, t.local).await?;
        let have = self.find(name).await?;
        let action = device_action(t, parent, have.as_ref());
        let index = match (action, have) {
            (DeviceAction::Keep, Some(h)) => h.index,
            (DeviceAction::Update { mac, mtu, up }, Some(h)) => {
                let mut b = LinkUnspec::new_with_index(h.index);
                if mac {
                    b = b.address(t.mac.to_vec());
                }
                if mtu {
                    b = b.mtu(t.mtu);
                }
                if up {
                    b = b.up();
                }
                self.handle
                    .link()
                    .set(b.build())
                    .execute()
                    .await
                    .map_err(nl(name, "changing MAC, MTU or state"))?;
                h.index
            }
            (DeviceAction::Recreate(why), Some(h)) => {
                info!("{name}: recreating it ({why})");
                self.handle
                    .link()
                    .del(h.index)
                    .execute()
                    .await
                    .map_err(nl(name, "deleting the device to recreate it"))?;
                self.create(t, parent).await?
            }
            _ => self.create(t, parent).await?,
        };
        self.ensure_address(t, index).await?;
        self.ensure_neighbours(t, index).await?;
        self.ensure_fdb(t, index).await
    }

    async fn create(&self, t: &Tunnel, parent: u32) -> Result<u32, TunnelError> {
        let name = t.name.as_str();
        let mut b = LinkVxlan::new(name, t.vni)
            .port(t.port)
            .learning(false)
            .dev(parent);
        b = match t.local {
            IpAddr::V4(a) => b.local(a),
            IpAddr::V6(a) => b.local6(a),
        };
        let msg = b.address(t.mac.to_vec()).mtu(t.mtu).up().build();
        self.handle.link().add(msg).execute().await.map_err(nl(
            name,
            &format!(
                "creating it (VNI {}, port {}, MTU {})",
                t.vni, t.port, t.mtu
            ),
        ))?;
        info!(
            "{name}: created (VNI {}, port {}, local {}, MTU {})",
            t.vni, t.port, t.local, t.mtu
        );
        self.find(name)
            .await?
            .map(|o| o.index)
            .ok_or_else(|| TunnelError::Vanished {
                device: name.to_string(),
            })
    }

    /// The node's VTEP address, and no other (IPv6 link-local aside).
    async fn ensure_address(&self, t: &Tunnel, index: u32) -> Result<(), TunnelError> {
        let name = t.name.as_str();
        let len = if t.address.is_ipv4() { 32 } else { 128 };
        let mut present: BTreeMap<(IpAddr, u8), AddressMessage> = BTreeMap::new();
        let mut addrs = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute();
        while let Some(msg) = addrs
            .try_next()
            .await
            .map_err(nl(name, "listing its addresses"))?
        {
            if let Some(ip) = addr_of(&msg).filter(|ip| !is_link_local(*ip)) {
                present.insert((ip, msg.header.prefix_len), msg);
            }
        }
        let mut have = false;
        for (key, msg) in present {
            if key == (t.address, len) {
                have = true;
                continue;
            }
            self.handle
                .address()
                .del(msg)
                .execute()
                .await
                .map_err(nl(name, &format!("removing address {}/{}", key.0, key.1)))?;
        }
        if have {
            return Ok(());
        }
        let mut req = self.handle.address().add(index, t.address, len);
        // An IPv6 VTEP address is usable at once (no duplicate detection).
        req.message_mut().header.flags |= AddressHeaderFlags::Nodad;
        req.execute()
            .await
            .map_err(nl(name, &format!("adding its address {}/{len}", t.address)))
    }

    async fn entries(
        &self,
        name: &str,
        index: u32,
        family: AddressFamily,
    ) -> Result<Vec<((IpAddr, Mac), NeighbourMessage)>, TunnelError> {
        let mut out = Vec::new();
        let mut req = self.handle.neighbours().get();
        req = req.set_address_family(family);
        let mut msgs = req.execute();
        while let Some(msg) = msgs
            .try_next()
            .await
            .map_err(nl(name, "listing its neighbours"))?
        {
            if msg.header.ifindex != index {
                continue;
            }
            if let Some(e) = entry_of(&msg) {
                out.push((e, msg));
            }
        }
        Ok(out)
    }

    /// One permanent neighbour entry per remote VTEP (address → MAC).
    async fn ensure_neighbours(&self, t: &Tunnel, index: u32) -> Result<(), TunnelError> {
        let name = t.name.as_str();
        let family = if t.address.is_ipv4() {
            AddressFamily::Inet
        } else {
            AddressFamily::Inet6
        };
        let listed = self.entries(name, index, family).await?;
        let want: BTreeSet<(IpAddr, Mac)> = t.peers.iter().map(|p| (p.addr, p.mac)).collect();
        let have: BTreeSet<(IpAddr, Mac)> = listed
            .iter()
            .filter(|(_, m)| m.header.state == NeighbourState::Permanent)
            .map(|(e, _)| *e)
            .collect();
        let (add, _) = diff(&want, &have);
        // Anything else on the device goes: stale VTEPs, and entries the
        // kernel made (nolearning devices should have none).
        for (e, msg) in listed {
            if !want.contains(&e) || msg.header.state != NeighbourState::Permanent {
                self.handle
                    .neighbours()
                    .del(msg)
                    .execute()
                    .await
                    .map_err(nl(name, &format!("removing neighbour {}", e.0)))?;
            }
        }
        for (ip, mac) in add {
            self.handle
                .neighbours()
                .add(index, ip)
                .link_layer_address(&mac)
                .state(NeighbourState::Permanent)
                .replace()
                .execute()
                .await
                .map_err(nl(name, &format!("adding neighbour {ip}")))?;
        }
        Ok(())
    }

    /// One permanent forwarding entry per remote VTEP (MAC → host).
    async fn ensure_fdb(&self, t: &Tunnel, index: u32) -> Result<(), TunnelError> {
        let name = t.name.as_str();
        let listed = self.entries(name, index, AddressFamily::Bridge).await?;
        let want: BTreeSet<(IpAddr, Mac)> = t.peers.iter().map(|p| (p.host, p.mac)).collect();
        let have: BTreeSet<(IpAddr, Mac)> = listed.iter().map(|(e, _)| *e).collect();
        let (add, _) = diff(&want, &have);
        for (e, msg) in listed {
            if !want.contains(&e) {
                self.handle
                    .neighbours()
                    .del(msg)
                    .execute()
                    .await
                    .map_err(nl(name, &format!("removing forwarding entry to {}", e.0)))?;
            }
        }
        for (host, mac) in add {
            self.handle
                .neighbours()
                .add_bridge(index, &mac)
                .flags(NeighbourFlags::Own)
                .state(NeighbourState::Permanent)
                .destination(host)
                .replace()
                .execute()
                .await
                .map_err(nl(name, &format!("adding forwarding entry to {host}")))?;
        }
        Ok(())
    }
}

impl crate::TunnelDevices for Tunnels {
    fn sync(&self, want: &[Tunnel]) -> Vec<TunnelError> {
        Tunnels::sync(self, want)
    }

    fn links(&self) -> Result<Vec<(String, u32, bool)>, TunnelError> {
        Tunnels::links(self)
    }

    fn addresses(&self) -> Result<Vec<(String, IpAddr)>, TunnelError> {
        Tunnels::addresses(self)
    }

    fn observe(&self, name: &str) -> Result<Option<Observed>, TunnelError> {
        Tunnels::observe(self, name)
    }
}
