//! Tunnel devices against a real kernel: two nodes on a fabric, each in a
//! namespace of its own, reach each other's VTEP address through the
//! tunnel; changes and removal are applied in place.

use calico_calc::overlay::{derived_mac, Tunnel, Vtep};
use calico_kernel::Tunnels;
use calico_test_support::{Fabric, Netns};
use std::collections::BTreeSet;
use std::net::IpAddr;

/// Runs `f` on a thread that entered `ns` (the netlink socket opens there).
fn inside<T: Send + 'static>(ns: &Netns, f: impl FnOnce() -> T + Send + 'static) -> T {
    calico_test_support::inside_netns(&ns.path(), f)
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

fn tunnel(me: &str, host: &str, vtep: &str, peers: &[(&str, &str, &str)]) -> Tunnel {
    Tunnel {
        name: "vxlan.calico".into(),
        vni: 4096,
        port: 4789,
        mtu: 1450,
        mac: derived_mac(me, false),
        local: ip(host),
        address: ip(vtep),
        peers: peers
            .iter()
            .map(|(node, host, vtep)| Vtep {
                addr: ip(vtep),
                mac: derived_mac(node, false),
                host: ip(host),
            })
            .collect::<BTreeSet<_>>(),
    }
}

fn sync(ns: &Netns, want: Vec<Tunnel>) {
    let errors = inside(ns, move || {
        let t = Tunnels::new().expect("netlink");
        t.sync(&want)
            .into_iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
    });
    assert!(errors.is_empty(), "sync in {}: {errors:?}", ns.name);
}

#[test]
fn two_nodes_reach_each_other_through_the_tunnel() {
    let fabric = Fabric::new("tun-fab");
    let a = Netns::new("tun-a");
    let b = Netns::new("tun-b");
    fabric.attach(&a, "10.251.0.1/24");
    fabric.attach(&b, "10.251.0.2/24");
    let ta = tunnel(
        "a",
        "10.251.0.1",
        "10.244.1.0",
        &[("b", "10.251.0.2", "10.244.2.0")],
    );
    let tb = tunnel(
        "b",
        "10.251.0.2",
        "10.244.2.0",
        &[("a", "10.251.0.1", "10.244.1.0")],
    );
    sync(&a, vec![ta.clone()]);
    sync(&b, vec![tb.clone()]);

    let link = a.ok(&["ip", "-d", "link", "show", "vxlan.calico"]);
    assert!(link.contains("vxlan id 4096"), "{link}");
    assert!(link.contains("local 10.251.0.1 dev eth0"), "{link}");
    assert!(link.contains("dstport 4789"), "{link}");
    assert!(link.contains("nolearning"), "{link}");
    assert!(link.contains("mtu 1450"), "{link}");
    assert!(
        link.contains("state UNKNOWN") || link.contains(",UP"),
        "{link}"
    );
    assert!(
        link.contains(&calico_calc::overlay::mac_string(&ta.mac)),
        "{link}"
    );
    let addr = a.ok(&["ip", "-4", "addr", "show", "dev", "vxlan.calico"]);
    assert!(addr.contains("10.244.1.0/32"), "{addr}");
    let neigh = a.ok(&["ip", "neigh", "show", "dev", "vxlan.calico"]);
    assert!(
        neigh.contains("10.244.2.0 lladdr 66:") && neigh.contains("PERMANENT"),
        "{neigh}"
    );
    let fdb = a.ok(&["bridge", "fdb", "show", "dev", "vxlan.calico"]);
    assert!(
        fdb.contains("dst 10.251.0.2") && fdb.contains("permanent"),
        "{fdb}"
    );

    // VTEP to VTEP: the kernel routes the peer's address on the device.
    a.ok(&["ip", "route", "add", "10.244.2.0/32", "dev", "vxlan.calico"]);
    b.ok(&["ip", "route", "add", "10.244.1.0/32", "dev", "vxlan.calico"]);
    a.ok(&["ping", "-c1", "-W2", "-I", "10.244.1.0", "10.244.2.0"]);

    // A second sync changes nothing; a new MTU is set in place (same index).
    let before = a.ok(&["ip", "-o", "link", "show", "vxlan.calico"]);
    sync(&a, vec![ta.clone()]);
    assert_eq!(before, a.ok(&["ip", "-o", "link", "show", "vxlan.calico"]));
    let mut smaller = ta.clone();
    smaller.mtu = 1400;
    sync(&a, vec![smaller.clone()]);
    let after = a.ok(&["ip", "-o", "link", "show", "vxlan.calico"]);
    assert!(after.contains("mtu 1400"), "{after}");
    assert_eq!(
        before.split(':').next(),
        after.split(':').next(),
        "same device"
    );

    // A stale peer goes, a new one comes; a stray address is removed.
    // (One sorts before the VTEP address, one after.)
    a.ok(&["ip", "addr", "add", "10.9.9.9/32", "dev", "vxlan.calico"]);
    a.ok(&["ip", "addr", "add", "10.250.9.9/32", "dev", "vxlan.calico"]);
    let mut moved = smaller.clone();
    moved.peers = [Vtep {
        addr: ip("10.244.3.0"),
        mac: derived_mac("c", false),
        host: ip("10.251.0.3"),
    }]
    .into();
    sync(&a, vec![moved.clone()]);
    let neigh = a.ok(&["ip", "neigh", "show", "dev", "vxlan.calico"]);
    assert!(
        !neigh.contains("10.244.2.0") && neigh.contains("10.244.3.0"),
        "{neigh}"
    );
    let fdb = a.ok(&["bridge", "fdb", "show", "dev", "vxlan.calico"]);
    assert!(
        !fdb.contains("10.251.0.2") && fdb.contains("dst 10.251.0.3"),
        "{fdb}"
    );
    let addr = a.ok(&["ip", "-4", "addr", "show", "dev", "vxlan.calico"]);
    assert!(
        !addr.contains("10.9.9.9")
            && !addr.contains("10.250.9.9")
            && addr.contains("10.244.1.0/32"),
        "{addr}"
    );

    // A new VNI cannot be changed in place: the device is recreated.
    let mut renumbered = moved.clone();
    renumbered.vni = 4097;
    sync(&a, vec![renumbered]);
    let link = a.ok(&["ip", "-d", "link", "show", "vxlan.calico"]);
    assert!(link.contains("vxlan id 4097"), "{link}");

    // Not wanted any more: gone, with everything on it.
    sync(&a, vec![]);
    assert!(!a
        .exec(&["ip", "link", "show", "vxlan.calico"])
        .status
        .success());
}

#[test]
fn no_parent_device_is_a_clear_error() {
    let a = Netns::new("tun-np");
    let t = tunnel("a", "10.251.9.1", "10.244.1.0", &[]);
    let errors = inside(&a, move || {
        let k = Tunnels::new().expect("netlink");
        k.sync(&[t])
            .into_iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
    });
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].contains("10.251.9.1") && errors[0].contains("vxlan.calico"),
        "{errors:?}"
    );
    assert!(!a
        .exec(&["ip", "link", "show", "vxlan.calico"])
        .status
        .success());
}

#[test]
fn ipv6_device() {
    let fabric = Fabric::new("tun6-fab");
    let a = Netns::new("tun6-a");
    let b = Netns::new("tun6-b");
    fabric.attach(&a, "10.251.1.1/24");
    fabric.attach(&b, "10.251.1.2/24");
    for (ns, addr) in [(&a, "fd00:251::1/64"), (&b, "fd00:251::2/64")] {
        ns.ok(&["ip", "-6", "addr", "add", addr, "dev", "eth0", "nodad"]);
    }
    let mk = |me: &str, host: &str, vtep: &str, peer: &str, phost: &str, pvtep: &str| Tunnel {
        name: "vxlan-v6.calico".into(),
        vni: 4096,
        port: 4789,
        mtu: 1430,
        mac: derived_mac(me, true),
        local: ip(host),
        address: ip(vtep),
        peers: [Vtep {
            addr: ip(pvtep),
            mac: derived_mac(peer, true),
            host: ip(phost),
        }]
        .into(),
    };
    sync(
        &a,
        vec![mk(
            "a",
            "fd00:251::1",
            "fd00:244::1:0",
            "b",
            "fd00:251::2",
            "fd00:244::2:0",
        )],
    );
    sync(
        &b,
        vec![mk(
            "b",
            "fd00:251::2",
            "fd00:244::2:0",
            "a",
            "fd00:251::1",
            "fd00:244::1:0",
        )],
    );
    let link = a.ok(&["ip", "-d", "link", "show", "vxlan-v6.calico"]);
    assert!(link.contains("local fd00:251::1"), "{link}");
    a.ok(&[
        "ip",
        "-6",
        "route",
        "add",
        "fd00:244::2:0/128",
        "dev",
        "vxlan-v6.calico",
    ]);
    b.ok(&[
        "ip",
        "-6",
        "route",
        "add",
        "fd00:244::1:0/128",
        "dev",
        "vxlan-v6.calico",
    ]);
    a.ok(&[
        "ping",
        "-6",
        "-c1",
        "-W2",
        "-I",
        "fd00:244::1:0",
        "fd00:244::2:0",
    ]);
    // The IPv4 device is not wanted and not made.
    assert!(!a
        .exec(&["ip", "link", "show", "vxlan.calico"])
        .status
        .success());
}
