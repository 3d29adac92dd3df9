//! NFLOG: packets nftables logs to a group reach the reader with the
//! rule's prefix, the packet's mark and its headers; other groups' do not.
// Waits on real packets.
#![allow(clippy::disallowed_methods)]

use calico_kernel::Nflog;
use calico_test_support::{inside_netns, Netns};
use std::time::{Duration, Instant};

#[test]
fn logged_packets_arrive_with_their_prefix_and_headers() {
    let ns = Netns::new("nflog");
    ns.ok(&["ip", "link", "set", "lo", "up"]);
    let rules = "table inet t {\n chain out {\n  type filter hook output priority 0;\n  \
                 udp dport 9999 meta mark set 0x00510000 log prefix \"A0|p-abc-in\" group 7\n  \
                 udp dport 9998 log prefix \"other\" group 8\n }\n}\n";
    let file = std::env::temp_dir().join(format!("{}.nft", ns.name));
    std::fs::write(&file, rules).expect("write");
    ns.ok(&["nft", "-f", file.to_str().expect("path")]);
    let _ = std::fs::remove_file(&file);
    let path = ns.path();
    let got = inside_netns(&path, || {
        let mut log = Nflog::open(&[7]).expect("bind group 7");
        let s = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp");
        s.send_to(b"to 9998", "127.0.0.1:9998").expect("send");
        s.send_to(b"to 9999", "127.0.0.1:9999").expect("send");
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut got = Vec::new();
        while got.is_empty() && Instant::now() < deadline {
            got.extend(log.recv(Duration::from_millis(200)).expect("recv"));
        }
        // Nothing more (the 9998 packet went to group 8, not ours).
        got.extend(log.recv(Duration::from_millis(300)).expect("recv"));
        got
    });
    assert_eq!(got.len(), 1, "{got:?}");
    let p = &got[0];
    assert_eq!((p.group, p.prefix.as_str()), (7, "A0|p-abc-in"));
    assert_eq!(p.mark, 0x0051_0000, "the mark as the rule set it");
    assert_eq!(p.payload[0] >> 4, 4, "an IPv4 header");
    assert_eq!(&p.payload[16..20], &[127, 0, 0, 1], "to 127.0.0.1");
    let ihl = usize::from(p.payload[0] & 0x0f) * 4;
    assert_eq!(
        u16::from_be_bytes([p.payload[ihl + 2], p.payload[ihl + 3]]),
        9999
    );
}
