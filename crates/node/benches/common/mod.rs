//! What the node benchmarks share: a node namespace with two pods wired by
//! the real CNI plugin against an embedded datastore, and iperf3 between
//! them.

use calico_api::decode_manifest;
use calico_client::{Client, Clock};
use calico_datastore_sqlite::SqliteStore;
use calico_test_support::{cni_add, CniCall, KillOnDrop, Netns};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;

struct FixedClock;
impl Clock for FixedClock {
    fn now_rfc3339(&self) -> String {
        "2026-11-22T00:00:00Z".into()
    }
}

/// An embedded datastore in a temporary directory (gone with the guard)
/// holding pool `cidr` and an allow-all namespace profile `kns.bench`;
/// returns the guard, the file's path and a client for it.
pub fn seeded_datastore(cidr: &str) -> (tempfile::TempDir, String, Client) {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("calico.db").display().to_string();
    let client = Client::new(
        Arc::new(SqliteStore::open(&db).expect("db")),
        Arc::new(FixedClock),
    );
    let seed = format!("apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {{name: p}}\nspec: {{cidr: {cidr}}}\n---\n\
                apiVersion: projectcalico.org/v3\nkind: Profile\nmetadata: {{name: kns.bench}}\nspec: {{ingress: [{{action: Allow}}], egress: [{{action: Allow}}]}}\n");
    for r in decode_manifest(&seed).expect("seed") {
        client.create(r).expect("seed");
    }
    (dir, db, client)
}

pub fn bin(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_calico-node")).with_file_name(name)
}

/// A node (`tag`, at `addr`) with pods `client` and `server` (labels
/// `app: client|server`) wired through the calico CNI plugin with the
/// datastore at `db`, which must hold a pool already; iperf3 serves in the
/// server pod until the returned guard drops.
pub struct TwoPods {
    pub node: Netns,
    pub client: Netns,
    #[allow(dead_code)] // not every benchmark serves from it
    pub server: Netns,
    #[allow(dead_code)] // not every benchmark talks to the server pod
    pub server_ip: String,
    _iperf: KillOnDrop,
}

impl TwoPods {
    #[allow(dead_code)] // not every benchmark has pods
    pub fn new(tag: &str, addr: &str, db: &str) -> TwoPods {
        let node = Netns::new(&format!("{tag}-node"));
        node.make_node(addr);
        let mut pods = Vec::new();
        for name in ["client", "server"] {
            let pod = Netns::new(&format!("{tag}-{name}"));
            let conf = serde_json::json!({"cniVersion": "1.0.0", "name": "k8s-pod-network", "type": "calico", "nodename": "node-1",
                "datastore_path": db, "ipam": {"type": "calico-ipam"}, "args": {"cni": {"labels": [{"key": "app", "value": name}]}}});
            let mut program = Command::new("ip");
            program.args([
                "netns",
                "exec",
                &node.name,
                bin("calico").to_str().expect("path"),
            ]);
            let args = format!("K8S_POD_NAMESPACE=bench;K8S_POD_NAME={name}");
            let call = CniCall {
                command: "ADD",
                container: name,
                netns: &pod.path(),
                ifname: "eth0",
                args: &args,
            };
            let ip = cni_add(program, &call, &conf.to_string());
            pods.push((pod, ip));
        }
        let (server, server_ip) = pods.pop().expect("server");
        let (client, _) = pods.pop().expect("client");
        let iperf = KillOnDrop(
            Command::new("ip")
                .args(["netns", "exec", &server.name, "iperf3", "-s"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("iperf3 server"),
        );
        std::thread::sleep(std::time::Duration::from_millis(300));
        TwoPods {
            node,
            client,
            server,
            server_ip,
            _iperf: iperf,
        }
    }

    /// The agent, once, in the node.
    #[allow(dead_code)] // not every benchmark runs it once
    pub fn felix(&self, db: &str) {
        calico_test_support::felix_once(&bin("calico-node"), &self.node.path(), "node-1", db);
    }

    /// TCP bits/s, or (`udp`) 64-byte UDP packets/s, client to server.
    #[allow(dead_code)] // not every benchmark measures pod to pod
    pub fn iperf(&self, secs: u32, udp: bool) -> f64 {
        calico_test_support::iperf3(&self.client.name, &self.server_ip, secs, udp)
    }
}

/// Runs `f` on a thread inside network namespace `path`.
#[allow(dead_code)] // not every benchmark runs code in a namespace
pub fn in_netns<T: Send + 'static>(
    path: String,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    std::thread::spawn(move || {
        let ns = std::fs::File::open(&path).expect("netns");
        nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        f()
    })
}

/// New TCP connections per second from namespace `from` to `to`
/// (`IP:PORT`): connect, then reset (the server accepts and closes), one
/// after another, on two client threads.
#[allow(dead_code)] // not every benchmark counts connections
#[allow(clippy::disallowed_methods)] // a benchmark owns the clock
pub fn connection_rate(from: &Netns, to: &str, secs: u32) -> f64 {
    use std::time::{Duration, Instant};
    let to: std::net::SocketAddr = to.parse().expect("addr");
    let until = Instant::now() + Duration::from_secs(secs.into());
    let clients: Vec<_> = (0..2)
        .map(|_| {
            in_netns(from.path(), move || {
                let mut n = 0u64;
                while Instant::now() < until {
                    if let Ok(s) = std::net::TcpStream::connect_timeout(&to, Duration::from_secs(1))
                    {
                        // Closed with a reset: no TIME_WAIT, so the client's
                        // ports never run out (what would be measured then).
                        let _ = nix::sys::socket::setsockopt(
                            &s,
                            nix::sys::socket::sockopt::Linger,
                            &nix::libc::linger {
                                l_onoff: 1,
                                l_linger: 0,
                            },
                        );
                        n += 1;
                    }
                }
                n
            })
        })
        .collect();
    let total: u64 = clients.into_iter().map(|c| c.join().expect("client")).sum();
    total as f64 / f64::from(secs)
}

/// A benchmark's setting from the environment (`SECS`, `ROUNDS`): `full`
/// under `cargo bench`, `quick` when run as a test.
#[allow(dead_code)] // not every benchmark has settings
pub fn knob(name: &str, quick: u32, full: u32) -> u32 {
    let benching = std::env::args().any(|a| a == "--bench");
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if benching { full } else { quick })
}

/// A TCP listener on `port` inside the namespace at `netns` (a path), with
/// a deep accept queue: a full one drops SYNs, and a dropped SYN costs the
/// client a second, which would be measured instead.
#[allow(dead_code)] // not every benchmark serves TCP itself
pub fn listener(netns: String, port: u16) -> std::net::TcpListener {
    in_netns(netns, move || {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .expect("socket");
        s.set_reuse_address(true).expect("reuse");
        s.bind(&std::net::SocketAddr::from(([0, 0, 0, 0], port)).into())
            .expect("bind");
        s.listen(4096).expect("listen");
        std::net::TcpListener::from(s)
    })
    .join()
    .expect("listener")
}

/// An external host: namespace `<tag>-ext` beyond the node's second
/// interface (`ext0` at `node_addr`/24; its `ext1` at `ext_addr`/24).
#[allow(dead_code)] // not every benchmark reaches beyond the node
pub fn external_host(node: &Netns, tag: &str, node_addr: &str, ext_addr: &str) -> Netns {
    let ext = Netns::new(&format!("{tag}-ext"));
    node.ok(&[
        "ip", "link", "add", "ext0", "type", "veth", "peer", "name", "ext1",
    ]);
    node.ok(&["ip", "link", "set", "ext1", "netns", &ext.name]);
    node.ok(&[
        "ip",
        "addr",
        "add",
        &format!("{node_addr}/24"),
        "dev",
        "ext0",
    ]);
    node.ok(&["ip", "link", "set", "ext0", "up"]);
    ext.ok(&[
        "ip",
        "addr",
        "add",
        &format!("{ext_addr}/24"),
        "dev",
        "ext1",
    ]);
    ext.ok(&["ip", "link", "set", "ext1", "up"]);
    ext.ok(&["ip", "link", "set", "lo", "up"]);
    ext
}
