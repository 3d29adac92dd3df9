//! A hostile pod across nodes, on a three-node VXLAN lab: a forged source
//! address (raw socket) aimed at a pod on another node, and a VXLAN packet
//! a pod builds itself, with another node's address as the outer source,
//! aimed at a third node so that it would decapsulate it and deliver a
//! packet "from" a trusted pod. Both die at the sender's node; the
//! trusted pod's real packets, to the same receiver, arrive. And a local
//! container that is not a workload, tunnelling with a peer node's address,
//! is dropped by the receiving node.

use calico_test_support::{output_text as text, KillOnDrop, LabCli as Lab};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

const RECEIVER: &str = "
import socket, sys
log = open(sys.argv[1], 'a', buffering=1)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(('0.0.0.0', 9999))
while True:
    data, peer = s.recvfrom(2048); log.write('%s %s\\n' % (peer[0], data.decode(errors='replace')))
";

/// A forged IPv4/UDP packet; with `vxlan`, wrapped as VXLAN (VNI 4096)
/// in an outer IPv4/UDP packet from `vxlan.0` to `vxlan.1` for the inner
/// destination MAC `vxlan.2`. Sent through a raw socket.
const FORGE: &str = "
import socket, struct, sys
def csum(b):
    if len(b) % 2: b += b'\\0'
    s = sum(struct.unpack('!%dH' % (len(b) // 2), b)); s = (s >> 16) + (s & 0xffff); s += s >> 16
    return ~s & 0xffff
def ip(src, dst, proto, payload):
    h = struct.pack('!BBHHHBBH4s4s', 0x45, 0, 20 + len(payload), 7, 0, 64, proto, 0, socket.inet_aton(src), socket.inet_aton(dst))
    return h[:10] + struct.pack('!H', csum(h)) + h[12:] + payload
def udp(sport, dport, payload):
    return struct.pack('!HHHH', sport, dport, 8 + len(payload), 0) + payload
src, dst, tag = sys.argv[1], sys.argv[2], sys.argv[3].encode()
inner = ip(src, dst, 17, udp(40000, 9999, tag))
if len(sys.argv) > 4:
    outer_src, outer_dst, mac = sys.argv[4], sys.argv[5], bytes.fromhex(sys.argv[6].replace(':', ''))
    frame = mac + bytes.fromhex('020000000001') + b'\\x08\\x00' + inner
    vx = struct.pack('!BBHI', 0x08, 0, 0, 4096 << 8) + frame
    pkt, to = ip(outer_src, outer_dst, 17, udp(40001, 4789, vx)), outer_dst
else:
    pkt, to = inner, dst
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
s.sendto(pkt, (to, 0))
";

fn seen(log: &Path) -> Vec<(String, String)> {
    std::thread::sleep(Duration::from_millis(500));
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (src, tag) = l.split_once(' ')?;
            Some((tag.to_string(), src.to_string()))
        })
        .collect()
}

#[test]
fn forged_sources_and_pod_made_vxlan_die_at_the_sender() {
    let lab = Lab::new(
        format!("sp{}", std::process::id() % 100_000),
        Path::new(env!("CARGO_BIN_EXE_calico-lab")),
    );
    lab.ok(&["up", "--nodes", "3", "--encap", "vxlan"]);
    lab.ok(&["ns", "create", "x"]);
    for (pod, node, labels) in [
        ("x/attacker", "node-1", "role=attacker"),
        ("x/trusted", "node-2", "role=trusted"),
        ("x/db", "node-3", "app=db"),
    ] {
        lab.ok(&["pod", "create", pod, "--node", node, "--labels", labels]);
    }
    lab.apply("apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {name: db-from-trusted, namespace: x}\n\
        spec: {selector: app == 'db', types: [Ingress], ingress: [{action: Allow, source: {selector: role == 'trusted'}}]}\n");
    lab.ok(&["sync"]);
    let state = lab.state();
    let pod = |p: &str, f: &str| state["pods"][p][f].as_str().expect("field").to_string();
    let node_addr = |n: usize| {
        state["nodes"][n]["addr"]
            .as_str()
            .expect("addr")
            .to_string()
    };
    let (db_ip, trusted_ip) = (pod("x/db", "ip"), pod("x/trusted", "ip"));
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("db.log");
    let _receiver = KillOnDrop(
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &pod("x/db", "netns"),
                "python3",
                "-c",
                RECEIVER,
            ])
            .arg(&log)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("receiver"),
    );
    calico_test_support::wait_listening(&pod("x/db", "netns"), "udp", 9999);
    let run = |p: &str, args: &[&str]| {
        let out = Command::new("ip")
            .args(["netns", "exec", &pod(p, "netns"), "python3", "-c"])
            .args(args)
            .output()
            .expect("python");
        assert!(out.status.success(), "{}", text(&out));
    };
    let send = |p: &str, tag: &str| {
        run(p, &[&format!("import socket\ns=socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\ns.sendto(b'{tag}', ('{db_ip}', 9999))")]);
    };
    send("x/trusted", "control");
    send("x/attacker", "plain");
    let got = seen(&log);
    assert!(
        got.contains(&("control".into(), trusted_ip.clone())),
        "the receiver is up: {got:?}"
    );
    assert!(
        !got.iter().any(|(t, _)| t == "plain"),
        "policy denies the attacker: {got:?}"
    );

    // A forged source, across nodes.
    run("x/attacker", &[FORGE, &trusted_ip, &db_ip, "forged"]);
    // VXLAN built by the pod: outer source node-2 (a peer node-3 trusts),
    // outer destination node-3, inner source the trusted pod.
    let node3 = lab.ctl_ok(&["get", "node", "node-3", "-o", "yaml"]);
    let mac = node3
        .lines()
        .find_map(|l| l.trim().strip_prefix("vxlanTunnelMACAddr: "))
        .expect("node-3's VTEP MAC")
        .to_string();
    run(
        "x/attacker",
        &[
            FORGE,
            &trusted_ip,
            &db_ip,
            "tunnelled",
            &node_addr(1),
            &node_addr(2),
            &mac,
        ],
    );
    // And VXLAN from the pod's own address (the peer check would stop it
    // at node-3; it must not leave node-1 at all).
    run(
        "x/attacker",
        &[
            FORGE,
            &trusted_ip,
            &db_ip,
            "tunnelled-own",
            &pod("x/attacker", "ip"),
            &node_addr(2),
            &mac,
        ],
    );
    send("x/trusted", "control-2");
    let got = seen(&log);
    assert!(
        got.iter().any(|(t, _)| t == "control-2"),
        "still up: {got:?}"
    );
    for tag in ["forged", "tunnelled", "tunnelled-own"] {
        assert!(
            !got.iter().any(|(t, _)| t == tag),
            "{tag} got through: {got:?}"
        );
    }
    // They were dropped at node-1, by the attacker's source check.
    let chains = text(&lab.in_netns("node-1", &["nft", "list", "table", "inet", "calico"]));
    let drops: u64 = chains
        .split("chain sp-")
        .skip(1)
        .flat_map(|c| {
            c.lines()
                .take_while(|l| !l.trim().starts_with('}'))
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .filter_map(|l| {
            l.split("counter packets ")
                .nth(1)?
                .split(' ')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum();
    assert!(
        drops >= 3,
        "node-1's source checks dropped {drops}:\n{chains}"
    );
    // A local container on node-1 that is not a workload (a veth of its
    // own) sends VXLAN to node-1 with node-2's address as outer source: a
    // peer's address, but not from where node-1 reaches node-2, so it is
    // dropped before decapsulation (strict reverse path for tunnel packets).
    let rogue = calico_test_support::Netns::new("sp-rogue");
    let node1 = lab.netns("node-1");
    let sh = |ns: &str, cmd: &str| {
        let out = Command::new("ip")
            .args(["netns", "exec", ns, "sh", "-c", cmd])
            .output()
            .expect("sh");
        assert!(out.status.success(), "{cmd}: {}", text(&out));
    };
    sh(&node1, &format!("ip link add rgh type veth peer name rgc && ip link set rgc netns {} && ip addr add 192.168.254.1/30 dev rgh && ip link set rgh up", rogue.name));
    rogue.ok(&["ip", "addr", "add", "192.168.254.2/30", "dev", "rgc"]);
    rogue.ok(&["ip", "link", "set", "rgc", "up"]);
    rogue.ok(&["ip", "route", "add", "default", "via", "192.168.254.1"]);
    let node1_yaml = lab.ctl_ok(&["get", "node", "node-1", "-o", "yaml"]);
    let mac1 = node1_yaml
        .lines()
        .find_map(|l| l.trim().strip_prefix("vxlanTunnelMACAddr: "))
        .expect("node-1's VTEP MAC")
        .to_string();
    let forged = rogue.exec(&[
        "python3",
        "-c",
        FORGE,
        &trusted_ip,
        &db_ip,
        "local-container",
        &node_addr(1),
        &node_addr(0),
        &mac1,
    ]);
    assert!(forged.status.success(), "{}", text(&forged));
    send("x/trusted", "control-3");
    let got = seen(&log);
    assert!(
        got.iter().any(|(t, _)| t == "control-3"),
        "still up: {got:?}"
    );
    assert!(
        !got.iter().any(|(t, _)| t == "local-container"),
        "a local container's forged tunnel got through: {got:?}"
    );
    let input = text(&lab.in_netns(
        "node-1",
        &["nft", "list", "chain", "inet", "calico", "input"],
    ));
    let fib_drops: u64 = input
        .lines()
        .find(|l| l.contains("fib saddr . iif oif missing"))
        .and_then(|l| {
            l.split("counter packets ")
                .nth(1)?
                .split(' ')
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or(0);
    assert!(
        fib_drops >= 1,
        "dropped by the reverse-path check:\n{input}"
    );
    let _ = Command::new("ip")
        .args(["netns", "exec", &node1, "ip", "link", "del", "rgh"])
        .output();
}
