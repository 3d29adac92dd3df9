//! A workload's wiring, as the CNI plugin does it: veth pairs, addresses,
//! routes and sysctls, through rtnetlink.
//!
//! rtnetlink is async; a current-thread runtime private to this module
//! drives it, so callers see plain blocking functions. Work inside the
//! container's network namespace goes through a netlink socket opened in
//! that namespace (by a short-lived thread that entered it).

use futures_util::TryStreamExt;
use netlink_packet_route::address::{AddressAttribute, AddressFlags};
use netlink_packet_route::link::LinkAttribute;
use netlink_packet_route::route::RouteScope;
use rtnetlink::{Handle, LinkMessageBuilder, LinkUnspec, LinkVeth, RouteMessageBuilder};
use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

/// The workload's IPv4 gateway, answered by proxy ARP on the host veth.
pub const GATEWAY_V4: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);
/// The host veth's MAC, as Calico sets it.
pub const HOST_MAC: [u8; 6] = [0xee; 6];
/// The IPv6 link-local address derived from `HOST_MAC` (the workload's IPv6 gateway).
pub const GATEWAY_V6: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0xecee, 0xeeff, 0xfeee, 0xeeee);

#[derive(Debug, thiserror::Error)]
pub enum WiringError {
    #[error("cannot open network namespace {path}")]
    Netns {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot enter network namespace {path}")]
    Setns {
        path: String,
        #[source]
        cause: crate::Cause,
    },
    #[error("netlink: {what}")]
    Netlink {
        what: String,
        #[source]
        cause: crate::Cause,
    },
    #[error("interface {0} does not exist")]
    NoLink(String),
    #[error("cannot set {path}")]
    Sysctl {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot start the netlink runtime")]
    Runtime(#[source] std::io::Error),
}

fn nl(what: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> WiringError {
    let what = what.into();
    move |e| WiringError::Netlink {
        what,
        cause: std::sync::Arc::new(e),
    }
}

/// What a workload interface looks like once wired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadLink {
    pub host_mac: String,
    pub container_mac: String,
}

pub struct Wiring {
    rt: tokio::runtime::Runtime,
    host: Handle,
}

impl std::fmt::Debug for Wiring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Wiring")
    }
}

fn mac_string(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn is_errno(e: &rtnetlink::Error, errno: i32) -> bool {
    matches!(e, rtnetlink::Error::NetlinkError(m) if m.code.map(|c| c.get()) == Some(-errno))
}

async fn link_index(h: &Handle, name: &str) -> Result<Option<(u32, String)>, WiringError> {
    let mut links = h.link().get().match_name(name.to_string()).execute();
    match links.try_next().await {
        Ok(Some(msg)) => {
            let mac = msg
                .attributes
                .iter()
                .find_map(|a| match a {
                    LinkAttribute::Address(m) => Some(mac_string(m)),
                    _ => None,
                })
                .unwrap_or_default();
            Ok(Some((msg.header.index, mac)))
        }
        Ok(None) => Ok(None),
        Err(e) if is_errno(&e, nix::libc::ENODEV) => Ok(None),
        Err(e) => Err(nl(format!("look up {name}"))(e)),
    }
}

fn sysctl(path: &str, value: &str) -> Result<(), WiringError> {
    std::fs::write(path, value).map_err(|source| WiringError::Sysctl {
        path: path.into(),
        source,
    })
}

impl Wiring {
    pub fn new() -> Result<Self, WiringError> {
        let (rt, host) = crate::routes::netlink().map_err(WiringError::Runtime)?;
        Ok(Wiring { rt, host })
    }

    /// A netlink handle whose socket lives in the namespace at `path`.
    fn handle_in(&self, path: &Path) -> Result<Handle, WiringError> {
        let shown = path.display().to_string();
        let ns = File::open(path).map_err(|source| WiringError::Netns {
            path: shown.clone(),
            source,
        })?;
        let rt = self.rt.handle().clone();
        let joined = std::thread::spawn(move || -> Result<_, crate::Cause> {
            nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(|e| std::sync::Arc::new(e) as crate::Cause)?;
            let _guard = rt.enter();
            rtnetlink::new_connection().map_err(|e| std::sync::Arc::new(e) as crate::Cause)
        })
        .join()
        .map_err(|_| WiringError::Setns {
            path: shown.clone(),
            cause: std::sync::Arc::new(std::io::Error::other("the thread entering it panicked")),
        })?;
        let (conn, handle, _) =
            joined.map_err(|cause| WiringError::Setns { path: shown, cause })?;
        self.rt.spawn(conn);
        Ok(handle)
    }

    /// Whether `name` exists in the host namespace; its MAC if so.
    pub fn host_link(&self, name: &str) -> Result<Option<String>, WiringError> {
        self.rt
            .block_on(async { Ok(link_index(&self.host, name).await?.map(|(_, mac)| mac)) })
    }

    /// Creates the veth pair (host side `host_if` here, `container_if` in the
    /// namespace), addresses and routes on both sides, proxy ARP on the host.
    pub fn wire(
        &self,
        netns: &Path,
        host_if: &str,
        container_if: &str,
        mtu: u32,
        ips: &[calico_net::IpNet],
    ) -> Result<WorkloadLink, WiringError> {
        let ns_file = File::open(netns).map_err(|source| WiringError::Netns {
            path: netns.display().to_string(),
            source,
        })?;
        let cont = self.handle_in(netns)?;
        let host = self.host.clone();
        use std::os::fd::AsRawFd;
        let fd = ns_file.as_raw_fd();
        self.rt.block_on(async {
            // veth: host side named host_if, peer created directly in the container namespace.
            let peer = LinkUnspec::new_with_name(container_if)
                .mtu(mtu)
                .setns_by_fd(fd)
                .build();
            let veth = LinkMessageBuilder::<LinkVeth>::new_with_info_kind(
                netlink_packet_route::link::InfoKind::Veth,
            )
            .name(host_if.to_string())
            .mtu(mtu)
            .address(HOST_MAC.to_vec())
            .set_info_data(netlink_packet_route::link::InfoData::Veth(
                netlink_packet_route::link::InfoVeth::Peer(peer),
            ))
            .build();
            host.link()
                .add(veth)
                .execute()
                .await
                .map_err(nl(format!("create veth {host_if}")))?;
            let (host_idx, host_mac) = link_index(&host, host_if)
                .await?
                .ok_or_else(|| WiringError::NoLink(host_if.into()))?;
            let v4 = ips.iter().any(|n| n.addr().is_ipv4());
            let v6 = ips.iter().any(|n| n.addr().is_ipv6());
            sysctl(&format!("/proc/sys/net/ipv4/conf/{host_if}/proxy_arp"), "1")?;
            sysctl(
                &format!("/proc/sys/net/ipv4/neigh/{host_if}/proxy_delay"),
                "0",
            )?;
            if v6 && Path::new(&format!("/proc/sys/net/ipv6/conf/{host_if}")).exists() {
                sysctl(&format!("/proc/sys/net/ipv6/conf/{host_if}/proxy_ndp"), "1")?;
                sysctl(&format!("/proc/sys/net/ipv6/conf/{host_if}/accept_ra"), "0")?;
            }
            host.link()
                .set(LinkUnspec::new_with_index(host_idx).up().build())
                .execute()
                .await
                .map_err(nl(format!("set {host_if} up")))?;

            let (cidx, cmac) = link_index(&cont, container_if)
                .await?
                .ok_or_else(|| WiringError::NoLink(container_if.into()))?;
            if let Some((lo, _)) = link_index(&cont, "lo").await? {
                cont.link()
                    .set(LinkUnspec::new_with_index(lo).up().build())
                    .execute()
                    .await
                    .map_err(nl("set lo up"))?;
            }
            cont.link()
                .set(LinkUnspec::new_with_index(cidx).up().build())
                .execute()
                .await
                .map_err(nl(format!("set {container_if} up")))?;
            for net in ips {
                let len = if net.addr().is_ipv4() { 32 } else { 128 };
                let mut req = cont.address().add(cidx, net.addr(), len).replace();
                if net.addr().is_ipv6() {
                    // No duplicate address detection: the address is ours (IPAM), and
                    // a tentative address would not be usable for a second or more.
                    req.message_mut()
                        .attributes
                        .push(AddressAttribute::Flags(AddressFlags::Nodad));
                }
                req.execute()
                    .await
                    .map_err(nl(format!("add {} to {container_if}", net.addr())))?;
            }
            if v4 {
                let gw = RouteMessageBuilder::<Ipv4Addr>::new()
                    .destination_prefix(GATEWAY_V4, 32)
                    .output_interface(cidx)
                    .scope(RouteScope::Link)
                    .build();
                cont.route()
                    .add(gw)
                    .replace()
                    .execute()
                    .await
                    .map_err(nl("add gateway route"))?;
                let default = RouteMessageBuilder::<Ipv4Addr>::new()
                    .destination_prefix(Ipv4Addr::UNSPECIFIED, 0)
                    .gateway(GATEWAY_V4)
                    .output_interface(cidx)
                    .build();
                cont.route()
                    .add(default)
                    .replace()
                    .execute()
                    .await
                    .map_err(nl("add default route"))?;
            }
            if v6 {
                let default = RouteMessageBuilder::<Ipv6Addr>::new()
                    .destination_prefix(Ipv6Addr::UNSPECIFIED, 0)
                    .gateway(GATEWAY_V6)
                    .output_interface(cidx)
                    .build();
                cont.route()
                    .add(default)
                    .replace()
                    .execute()
                    .await
                    .map_err(nl("add IPv6 default route"))?;
            }
            for net in ips {
                let route = match net.addr() {
                    IpAddr::V4(a) => RouteMessageBuilder::<Ipv4Addr>::new()
                        .destination_prefix(a, 32)
                        .output_interface(host_idx)
                        .scope(RouteScope::Link)
                        .build(),
                    IpAddr::V6(a) => RouteMessageBuilder::<Ipv6Addr>::new()
                        .destination_prefix(a, 128)
                        .output_interface(host_idx)
                        .build(),
                };
                host.route()
                    .add(route)
                    .replace()
                    .execute()
                    .await
                    .map_err(nl(format!("add host route to {}", net.addr())))?;
            }
            Ok(WorkloadLink {
                host_mac,
                container_mac: cmac,
            })
        })
    }

    /// Deletes the host side of a veth (its peer goes with it). Absent is fine.
    pub fn unwire(&self, host_if: &str) -> Result<bool, WiringError> {
        let host = self.host.clone();
        self.rt.block_on(async {
            let Some((idx, _)) = link_index(&host, host_if).await? else {
                return Ok(false);
            };
            match host.link().del(idx).execute().await {
                Ok(()) => Ok(true),
                Err(e) if is_errno(&e, nix::libc::ENODEV) => Ok(false),
                Err(e) => Err(nl(format!("delete {host_if}"))(e)),
            }
        })
    }

    /// The container interface's MAC and addresses, if it exists.
    pub fn container_link(
        &self,
        netns: &Path,
        container_if: &str,
    ) -> Result<Option<(String, Vec<IpAddr>)>, WiringError> {
        let cont = self.handle_in(netns)?;
        self.rt.block_on(async {
            let Some((idx, mac)) = link_index(&cont, container_if).await? else {
                return Ok(None);
            };
            let mut addrs = cont.address().get().set_link_index_filter(idx).execute();
            let mut ips = Vec::new();
            while let Some(msg) = addrs.try_next().await.map_err(nl("list addresses"))? {
                for a in &msg.attributes {
                    if let AddressAttribute::Address(ip) = a {
                        ips.push(*ip);
                    }
                }
            }
            Ok(Some((mac, ips)))
        })
    }
}

impl crate::Workloads for Wiring {
    fn host_link(&self, name: &str) -> Result<Option<String>, WiringError> {
        Wiring::host_link(self, name)
    }

    fn wire(
        &self,
        netns: &Path,
        host_if: &str,
        container_if: &str,
        mtu: u32,
        ips: &[calico_net::IpNet],
    ) -> Result<WorkloadLink, WiringError> {
        Wiring::wire(self, netns, host_if, container_if, mtu, ips)
    }

    fn unwire(&self, host_if: &str) -> Result<bool, WiringError> {
        Wiring::unwire(self, host_if)
    }

    fn container_link(
        &self,
        netns: &Path,
        container_if: &str,
    ) -> Result<Option<(String, Vec<IpAddr>)>, WiringError> {
        Wiring::container_link(self, netns, container_if)
    }
}
