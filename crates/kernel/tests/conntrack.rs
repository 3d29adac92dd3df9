//! The connection tracker's table read over ctnetlink: a real TCP
//! connection in a fresh namespace is listed with its tuple, its id and
//! both directions' counters, the same as conntrack-tools list it.

use calico_kernel::conntrack;
use calico_test_support::{inside_netns, Netns};
use std::io::{Read, Write};

#[test]
fn a_connection_is_listed_with_its_counters_both_ways() {
    let ns = Netns::new("ctlist");
    ns.ok(&["ip", "link", "set", "lo", "up"]);
    ns.ok(&["sysctl", "-qw", "net.netfilter.nf_conntrack_acct=1"]);
    // A ruleset that uses the tracker, so it follows this namespace.
    let rules = "table inet t {\n chain out {\n  type filter hook output priority 0;\n  \
                 ct state established accept\n }\n}\n";
    let file = std::env::temp_dir().join(format!("{}.nft", ns.name));
    std::fs::write(&file, rules).expect("write");
    ns.ok(&["nft", "-f", file.to_str().expect("path")]);
    let _ = std::fs::remove_file(&file);
    let (table, port) = inside_netns(&ns.path(), || {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
        let port = l.local_addr().expect("addr").port();
        let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
        let (mut s, _) = l.accept().expect("accept");
        c.write_all(&[7; 1000]).expect("write");
        let mut got = [0u8; 1000];
        s.read_exact(&mut got).expect("read");
        s.write_all(b"ok").expect("reply");
        let mut two = [0u8; 2];
        c.read_exact(&mut two).expect("read reply");
        let table = conntrack::list().expect("list");
        (table, port)
    });
    assert_eq!(table.unreadable, 0, "{table:?}");
    let c = table
        .conns
        .iter()
        .find(|c| c.tuple.proto == 6 && c.tuple.dport == Some(port))
        .unwrap_or_else(|| panic!("the connection to {port} in {table:?}"));
    assert_eq!(c.tuple.src, std::net::IpAddr::from([127, 0, 0, 1]));
    // SYN, ACK, 1000 bytes (maybe more segments), and the ACK of "ok".
    assert!(c.orig_packets >= 4, "{c:?}");
    assert!(c.orig_bytes >= 1000 + 3 * 40, "{c:?}");
    // SYN-ACK, ACK of the data, "ok".
    assert!(c.reply_packets >= 3 && c.reply_bytes >= 2 + 2 * 40, "{c:?}");
    // conntrack-tools agree on the id.
    let cli = ns.ok(&[
        "conntrack",
        "-L",
        "-p",
        "tcp",
        "--dport",
        &port.to_string(),
        "-o",
        "id",
    ]);
    assert!(
        cli.contains(&format!("id={}", c.id)),
        "id {} not in: {cli}",
        c.id
    );
}
