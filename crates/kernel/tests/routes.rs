//! The route owner against a real kernel, inside a namespace of its own.

use calico_kernel::{NetlinkRoutes, RouteTable};
use calico_net::IpNet;
use calico_routes::{Target, PROTO_AGENT};
use calico_test_support::Netns;
use std::collections::BTreeMap;

/// Runs `f` on a thread that entered `ns` (the netlink socket opens there).
fn inside<T: Send + 'static>(ns: &Netns, f: impl FnOnce() -> T + Send + 'static) -> T {
    calico_test_support::inside_netns(&ns.path(), f)
}

fn net(s: &str) -> IpNet {
    s.parse().expect("net")
}

fn routes(ns: &Netns, family: &str) -> String {
    ns.ok(&["ip", family, "route", "show", "table", "main"])
}

#[test]
fn owns_only_its_protocol_and_converges() {
    let ns = Netns::new("routes");
    ns.ok(&[
        "ip", "link", "add", "cali1", "type", "veth", "peer", "name", "peer1",
    ]);
    ns.ok(&["ip", "link", "set", "cali1", "up"]);
    // Someone else's routes: a static blackhole and a boot-protocol /32 on
    // the veth (what the CNI plugin adds) that ours will take over.
    ns.ok(&[
        "ip",
        "route",
        "add",
        "blackhole",
        "10.99.0.0/24",
        "proto",
        "static",
    ]);
    ns.ok(&[
        "ip",
        "route",
        "add",
        "10.0.0.5/32",
        "dev",
        "cali1",
        "scope",
        "link",
    ]);

    let desired: BTreeMap<IpNet, Target> = [
        (net("10.0.0.0/26"), Target::Blackhole),
        (net("10.0.0.5/32"), Target::Device("cali1".into())),
        (net("fd00::/122"), Target::Blackhole),
        (net("10.0.0.9/32"), Target::Device("cali-missing".into())),
    ]
    .into();
    let d = desired.clone();
    let failed = inside(&ns, move || {
        NetlinkRoutes::new(PROTO_AGENT)
            .expect("kernel")
            .sync(&d)
            .expect("sync")
    });
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert!(
        failed[0].1.to_string().contains("cali-missing"),
        "{}",
        failed[0].1
    );

    let v4 = routes(&ns, "-4");
    assert!(v4.contains("blackhole 10.0.0.0/26 proto 80"), "{v4}");
    assert!(
        v4.contains("10.0.0.5 dev cali1 proto 80 scope link"),
        "{v4}"
    );
    assert!(v4.contains("blackhole 10.99.0.0/24 proto static"), "{v4}");
    assert!(
        routes(&ns, "-6").contains("blackhole fd00::/122"),
        "{}",
        routes(&ns, "-6")
    );

    // Listing sees exactly ours; a second sync changes nothing.
    let listed = inside(&ns, || {
        NetlinkRoutes::new(PROTO_AGENT)
            .expect("kernel")
            .list()
            .expect("list")
    });
    assert_eq!(listed.len(), 3, "{listed:?}");
    let again = desired.clone();
    let failed = inside(&ns, move || {
        NetlinkRoutes::new(PROTO_AGENT)
            .expect("kernel")
            .sync(&again)
            .expect("sync")
    });
    assert_eq!(failed.len(), 1);

    // Wanting nothing removes ours and leaves the static route alone.
    inside(&ns, || {
        NetlinkRoutes::new(PROTO_AGENT)
            .expect("kernel")
            .sync(&BTreeMap::new())
            .expect("sync")
    });
    let v4 = routes(&ns, "-4");
    assert!(!v4.contains("proto 80"), "{v4}");
    assert!(v4.contains("blackhole 10.99.0.0/24 proto static"), "{v4}");
    assert!(
        !routes(&ns, "-6").contains("fd00::"),
        "{}",
        routes(&ns, "-6")
    );
}
