//! calico-lab: a calico-rs cluster on one machine.
//!
//! A fabric namespace holds a bridge; each node is a namespace attached to
//! it, running the real `calico-node felix` and `calico-node bgp`. Pods are
//! namespaces wired by the real CNI plugin, exactly as a container runtime
//! calls it, each running an echo server on its ports. Everything the lab
//! makes is named `cl-<lab>-…` and recorded in its state directory, so
//! `down` removes it all, even after a crash. Traffic only ever flows
//! inside those namespaces.

#![allow(clippy::print_stdout)]
// A binary: it owns the clock.
#![allow(clippy::disallowed_methods)]

mod echo;
mod state;

use anyhow::{anyhow, bail, Context, Result};
use calico_api::{Kind, Resource};
use calico_client::{open_store, Client, DatastoreConfig, SystemClock};
use clap::{Parser, Subcommand};
use serde_json::json;
use state::{Lab, Node, Pod, Port};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Parser, Debug)]
#[command(
    name = "calico-lab",
    version,
    about = "A calico-rs cluster inside network namespaces"
)]
struct Cli {
    /// The lab's name (labs with different names can run side by side).
    #[arg(
        long = "lab",
        env = "CALICO_LAB_NAME",
        default_value = "lab",
        global = true
    )]
    lab_name: String,
    /// Where the lab keeps its state, logs and datastore.
    #[arg(long, env = "CALICO_LAB_STATE", global = true)]
    state: Option<PathBuf>,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Build the cluster: fabric, nodes, agents.
    Up {
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        #[arg(long, default_value = "embedded", value_parser = ["embedded", "etcd"])]
        datastore: String,
        /// How pods on different nodes reach each other: BGP-routed
        /// (`none`), VXLAN always, or VXLAN only across subnets.
        #[arg(long, default_value = "none", value_parser = ["none", "vxlan", "vxlan-crosssubnet"])]
        encap: String,
        /// Underlay subnets (10.250.S.0/24) the nodes are spread over, in
        /// order; the fabric routes between them but not pod addresses.
        #[arg(long, default_value_t = 1)]
        subnets: usize,
    },
    /// Remove every namespace, link, process and file the lab made.
    Down,
    /// Namespaces (Kubernetes-style, stored as Calico does: profile kns.NAME).
    #[command(subcommand)]
    Ns(NsCmd),
    /// Pods, wired by the CNI plugin.
    #[command(subcommand)]
    Pod(PodCmd),
    /// Whether pod A reaches pod B: prints `allowed`, `refused` (nothing
    /// listens: a reset or port unreachable came back) or `denied`
    /// (dropped: nothing came back).
    Probe {
        from: String,
        to: String,
        #[arg(long)]
        port: u16,
        #[arg(long, default_value = "TCP", value_parser = ["TCP", "UDP"])]
        protocol: String,
        /// How long to wait for an answer before calling it denied.
        #[arg(long, default_value_t = 1000)]
        timeout_ms: u64,
    },
    /// Nodes: restart their agents.
    #[command(subcommand)]
    Node(NodeCmd),
    /// Probe every ordered pair of pods.
    Matrix {
        #[arg(long)]
        port: u16,
        #[arg(long, default_value = "TCP", value_parser = ["TCP", "UDP"])]
        protocol: String,
        #[arg(long)]
        json: bool,
    },
    /// The datastore: `restart` stops and starts the lab's etcd.
    #[command(subcommand)]
    Datastore(DatastoreCmd),
    /// Wait until every node's dataplane has applied the latest datastore revision.
    Sync {
        #[arg(long, default_value_t = 60)]
        timeout: u64,
    },
    /// Run a command inside a pod (`ns/name`) or a node (`node-N`).
    Exec {
        pod: String,
        #[arg(last = true, required = true)]
        cmd: Vec<String>,
    },
    /// Print the environment for calicoctl (datastore; BGP status of a node).
    Env {
        #[arg(long)]
        node: Option<String>,
    },
    /// The lab's nodes and pods.
    Show {
        #[arg(long)]
        json: bool,
    },
    /// (inside a pod) serve TCP and UDP echo.
    #[command(hide = true)]
    Serve {
        #[arg(long, value_delimiter = ',')]
        tcp: Vec<u16>,
        #[arg(long, value_delimiter = ',')]
        udp: Vec<u16>,
    },
    /// (internal) forward connections into a namespace.
    #[command(hide = true)]
    Proxy {
        #[arg(long)]
        netns: String,
        #[arg(long)]
        to: String,
        #[arg(long)]
        listen: String,
    },
    /// (inside a pod) connect and expect `ok`.
    #[command(hide = true)]
    Connect {
        addr: String,
        protocol: String,
        #[arg(long, default_value_t = 1000)]
        timeout_ms: u64,
    },
}

#[derive(Subcommand, Debug)]
enum NsCmd {
    Create {
        name: String,
        #[arg(long, default_value = "")]
        labels: String,
    },
    /// Replace the namespace's labels.
    Label { name: String, labels: String },
}

#[derive(Subcommand, Debug)]
enum DatastoreCmd {
    /// Stop the lab's etcd and start it again on the same data.
    Restart,
}

#[derive(Subcommand, Debug)]
enum NodeCmd {
    /// Restart a node's calico-node agents as a crash or an upgrade would:
    /// the policy agent stops (its rules stay), the BGP speaker is killed
    /// (peers keep its routes: graceful restart); then both start again.
    Restart { node: String },
}

#[derive(Subcommand, Debug)]
enum PodCmd {
    Create {
        /// NAMESPACE/NAME
        pod: String,
        #[arg(long)]
        node: Option<String>,
        #[arg(long, default_value = "")]
        labels: String,
        /// NAME:PORT/PROTO, repeatable (default: 80/TCP and 80/UDP).
        #[arg(long = "port")]
        ports: Vec<String>,
    },
    /// Replace the pod's labels.
    Label {
        pod: String,
        labels: String,
    },
    Delete {
        pod: String,
    },
}

fn exe(name: &str) -> Result<PathBuf> {
    let me = std::env::current_exe().context("finding calico-lab's own path")?;
    let p = me.with_file_name(name);
    if p.exists() {
        Ok(p)
    } else {
        bail!(
            "{} not found next to calico-lab (build the workspace)",
            p.display()
        )
    }
}

fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn ip(args: &[&str]) -> Result<String> {
    run(Command::new("ip").args(args))
}

fn in_ns(ns: &str, args: &[&str]) -> Result<String> {
    run(Command::new("ip").args(["netns", "exec", ns]).args(args))
}

fn labels_of(text: &str) -> Result<BTreeMap<String, String>> {
    text.split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|kv| {
            let (k, v) = kv
                .split_once('=')
                .ok_or_else(|| anyhow!("label {kv:?}: expected key=value"))?;
            calico_api::label_key(k.trim()).map_err(|e| anyhow!("label key {k:?}: {e}"))?;
            calico_api::label_value(v.trim()).map_err(|e| anyhow!("label value {v:?}: {e}"))?;
            Ok((k.trim().to_string(), v.trim().to_string()))
        })
        .collect()
}

/// Starts a background process that outlives this command; returns its pid.
fn daemon(cmd: &mut Command, log: &Path) -> Result<u32> {
    use std::os::unix::process::CommandExt;
    let out = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let child = cmd
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .process_group(0)
        .spawn()
        .with_context(|| format!("starting {cmd:?}"))?;
    Ok(child.id())
}

struct Ctx {
    name: String,
    dir: PathBuf,
}

impl Ctx {
    fn prefix(&self) -> String {
        format!("cl-{}-", self.name)
    }
    fn client(&self, lab: &Lab) -> Result<Client> {
        let cfg = DatastoreConfig::resolve(None, &|k| lab.datastore_env.get(k).cloned())?;
        let store = open_store(&cfg).with_context(|| format!("opening the {}", cfg.describe()))?;
        Ok(Client::new(store, Arc::new(SystemClock)))
    }
}

/// The pool's `vxlanMode` for `--encap`.
fn vxlan_mode(encap: &str) -> &'static str {
    match encap {
        "vxlan" => "Always",
        "vxlan-crosssubnet" => "CrossSubnet",
        _ => "Never",
    }
}

/// The fabric's router address on subnet `s` (with several subnets).
fn router(s: usize) -> String {
    format!("10.250.{s}.253")
}

fn up(ctx: &Ctx, nodes: usize, datastore: &str, encap: &str, subnets: usize) -> Result<()> {
    if !(1..=20).contains(&nodes) {
        bail!("--nodes {nodes}: between 1 and 20");
    }
    if !(1..=nodes.min(8)).contains(&subnets) {
        bail!("--subnets {subnets}: between 1 and the number of nodes (at most 8)");
    }
    if subnets > 1 && encap == "none" {
        bail!("--subnets {subnets} with --encap none: the fabric does not route pod addresses, so pods on different subnets could not reach each other; use --encap vxlan or vxlan-crosssubnet");
    }
    if Lab::path(&ctx.dir).exists() {
        bail!(
            "lab {:?} is already up (state in {}); run `calico-lab down` first",
            ctx.name,
            ctx.dir.display()
        );
    }
    std::fs::create_dir_all(&ctx.dir).with_context(|| format!("creating {}", ctx.dir.display()))?;
    let db = ctx.dir.join("calico.db").display().to_string();
    let mut lab = Lab {
        name: ctx.name.clone(),
        datastore: datastore.into(),
        datastore_env: BTreeMap::from([("CALICO_DATASTORE_PATH".to_string(), db)]),
        fabric: format!("{}fabric", ctx.prefix()),
        nodes: Vec::new(),
        namespaces: BTreeMap::new(),
        pods: BTreeMap::new(),
        extra_pids: Vec::new(),
        node_datastore_env: BTreeMap::new(),
        etcd: None,
        encap: encap.into(),
    };
    lab.node_datastore_env = lab.datastore_env.clone();
    // Saved before anything is made, so `down` can undo a partial `up`.
    lab.save(&ctx.dir)?;
    ip(&["netns", "add", &lab.fabric])?;
    in_ns(&lab.fabric, &["ip", "link", "set", "lo", "up"])?;
    for s in 0..subnets {
        let br = format!("br{s}");
        in_ns(&lab.fabric, &["ip", "link", "add", &br, "type", "bridge"])?;
        in_ns(&lab.fabric, &["ip", "link", "set", &br, "up"])?;
        if subnets > 1 {
            // The fabric routes between the subnets, as an underlay router.
            let addr = format!("{}/24", router(s));
            in_ns(&lab.fabric, &["ip", "addr", "add", &addr, "dev", &br])?;
        }
    }
    if subnets > 1 {
        in_ns(&lab.fabric, &["sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
    }
    if datastore == "etcd" {
        start_etcd_server(ctx, &mut lab)?;
    }
    let client = ctx.client(&lab)?;
    client
        .apply(decode(&format!(
            "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {{name: default-ipv4-ippool}}\nspec: {{cidr: 10.244.0.0/16, blockSize: 26, vxlanMode: {}}}\n",
            vxlan_mode(encap)
        ))?)
        .context("creating the IP pool")?;
    for i in 1..=nodes {
        let name = format!("node-{i}");
        let netns = format!("{}{name}", ctx.prefix());
        // Nodes fill the subnets in order.
        let subnet = (i - 1) * subnets / nodes;
        let addr = format!("10.250.{subnet}.{i}");
        ip(&["netns", "add", &netns])?;
        lab.nodes.push(Node {
            name: name.clone(),
            netns: netns.clone(),
            addr: addr.clone(),
            pids: Vec::new(),
        });
        lab.save(&ctx.dir)?;
        let port = format!("p{i}");
        in_ns(&netns, &["ip", "link", "set", "lo", "up"])?;
        in_ns(
            &lab.fabric,
            &[
                "ip", "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &netns,
            ],
        )?;
        in_ns(
            &lab.fabric,
            &[
                "ip",
                "link",
                "set",
                &port,
                "master",
                &format!("br{subnet}"),
                "up",
            ],
        )?;
        in_ns(
            &netns,
            &["ip", "addr", "add", &format!("{addr}/24"), "dev", "eth0"],
        )?;
        in_ns(&netns, &["ip", "link", "set", "eth0", "up"])?;
        // Proxy ARP for the pods' gateway needs a route; nodes have one.
        if subnets > 1 {
            in_ns(
                &netns,
                &["ip", "route", "add", "default", "via", &router(subnet)],
            )?;
        } else {
            in_ns(&netns, &["ip", "route", "add", "default", "dev", "eth0"])?;
        }
        in_ns(&netns, &["sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
        let pids = start_agents(ctx, &lab, &name, &netns, &addr)?;
        if let Some(n) = lab.nodes.last_mut() {
            n.pids = pids;
        }
        lab.save(&ctx.dir)?;
    }
    wait_mesh(ctx, &lab, Duration::from_secs(60))?;
    if encap != "none" {
        wait_tunnels(ctx, &lab, Duration::from_secs(60))?;
    }
    let nets: Vec<String> = (0..subnets).map(|s| format!("10.250.{s}.0/24")).collect();
    println!(
        "lab {:?} is up: {} nodes on {}, pods from 10.244.0.0/16 (vxlanMode {}), BGP mesh established",
        lab.name,
        lab.nodes.len(),
        nets.join(" and "),
        vxlan_mode(encap)
    );
    Ok(())
}

/// Where a node's policy agent writes the workloads' MTU (per node: the
/// nodes share this host's filesystem).
fn mtu_file(ctx: &Ctx, node: &str) -> PathBuf {
    ctx.dir.join(format!("{node}-mtu"))
}

/// Waits until every node has its tunnel device with its VTEP address and
/// has written the workloads' MTU (the tunnel's).
fn wait_tunnels(ctx: &Ctx, lab: &Lab, timeout: Duration) -> Result<()> {
    wait_nodes(ctx, lab, "the VXLAN tunnels", timeout, |n| {
        let dev = |what: &str| {
            in_ns(&n.netns, &["ip", "-o", what, "show", "dev", "vxlan.calico"]).unwrap_or_default()
        };
        let mtu = dev("link")
            .split_whitespace()
            .skip_while(|w| *w != "mtu")
            .nth(1)
            .map(str::to_string);
        let written = std::fs::read_to_string(mtu_file(ctx, &n.name)).unwrap_or_default();
        dev("addr").contains("inet ") && mtu.is_some_and(|m| m == written.trim())
    })
}

/// Waits until `ready` holds for every node; on timeout the error says
/// `what` did not come up, and where the logs are.
fn wait_nodes(
    ctx: &Ctx,
    lab: &Lab,
    what: &str,
    timeout: Duration,
    ready: impl Fn(&Node) -> bool,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while !lab.nodes.iter().all(&ready) {
        if Instant::now() > deadline {
            bail!(
                "{what} did not come up within {timeout:?} (logs in {})",
                ctx.dir.display()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// Starts `calico-node felix` and `calico-node bgp` in a node; their pids.
fn start_agents(ctx: &Ctx, lab: &Lab, name: &str, netns: &str, addr: &str) -> Result<Vec<u32>> {
    let node_bin = exe("calico-node")?;
    let mut pids = Vec::new();
    let sock = ctx
        .dir
        .join(format!("{name}-bgp.sock"))
        .display()
        .to_string();
    let ip_arg = format!("{addr}/24");
    let agents: [(&str, Vec<&str>); 2] = [
        ("felix", vec!["felix"]),
        (
            "bgp",
            vec![
                "bgp",
                "--ip",
                &ip_arg,
                "--status-socket",
                &sock,
                "--connect-retry",
                "1",
            ],
        ),
    ];
    let mtu = mtu_file(ctx, name);
    for (what, args) in agents {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", netns])
            .arg(&node_bin)
            .args(&args)
            .args(["--node", name])
            .env("CALICO_MTU_FILE", &mtu)
            .env_remove("DATASTORE_TYPE")
            .envs(&lab.node_datastore_env);
        pids.push(daemon(
            &mut cmd,
            &ctx.dir.join(format!("{name}-{what}.log")),
        )?);
    }
    Ok(pids)
}

fn node_cmd(ctx: &Ctx, cmd: &NodeCmd) -> Result<()> {
    let NodeCmd::Restart { node } = cmd;
    let mut lab = Lab::load(&ctx.dir)?;
    let n = lab.node(node)?.clone();
    // felix stopped (SIGTERM: its rules stay), bgp killed outright (no
    // Cease: peers keep forwarding to this node while it comes back).
    if let Some(felix) = n.pids.first() {
        kill(*felix);
    }
    if let Some(bgp) = n.pids.get(1) {
        signal_and_wait(*bgp, nix::sys::signal::Signal::SIGKILL);
    }
    let pids = start_agents(ctx, &lab, &n.name, &n.netns, &n.addr)?;
    for m in lab.nodes.iter_mut().filter(|m| m.name == n.name) {
        m.pids.clone_from(&pids);
    }
    lab.save(&ctx.dir)?;
    wait_mesh(ctx, &lab, Duration::from_secs(60))?;
    println!("{node}: agents restarted");
    Ok(())
}

/// The etcd server's address on the fabric.
const ETCD_ADDR: &str = "10.250.0.254";

/// `--datastore etcd`: etcd in a namespace of its own on the fabric (the
/// nodes reach it there), and a proxy on this host's loopback into that
/// namespace for calicoctl and the lab itself.
fn start_etcd_server(ctx: &Ctx, lab: &mut Lab) -> Result<()> {
    let netns = format!("{}etcd", ctx.prefix());
    ip(&["netns", "add", &netns])?;
    in_ns(&netns, &["ip", "link", "set", "lo", "up"])?;
    in_ns(
        &lab.fabric,
        &[
            "ip", "link", "add", "p0", "type", "veth", "peer", "name", "eth0", "netns", &netns,
        ],
    )?;
    in_ns(
        &lab.fabric,
        &["ip", "link", "set", "p0", "master", "br0", "up"],
    )?;
    in_ns(
        &netns,
        &[
            "ip",
            "addr",
            "add",
            &format!("{ETCD_ADDR}/24"),
            "dev",
            "eth0",
        ],
    )?;
    in_ns(&netns, &["ip", "link", "set", "eth0", "up"])?;
    let data_dir = ctx.dir.join("etcd").display().to_string();
    let pid = spawn_etcd(ctx, &netns, &data_dir)?;
    lab.etcd = Some(state::Etcd {
        netns: netns.clone(),
        pid,
        data_dir,
    });
    lab.save(&ctx.dir)?;
    wait_etcd(&netns)?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut proxy = Command::new(std::env::current_exe()?);
    proxy.args([
        "proxy",
        "--netns",
        &netns,
        "--to",
        "127.0.0.1:2379",
        "--listen",
        &format!("127.0.0.1:{port}"),
    ]);
    lab.extra_pids
        .push(daemon(&mut proxy, &ctx.dir.join("proxy.log"))?);
    lab.datastore_env = BTreeMap::from([
        ("DATASTORE_TYPE".to_string(), "etcdv3".to_string()),
        (
            "ETCD_ENDPOINTS".to_string(),
            format!("http://127.0.0.1:{port}"),
        ),
    ]);
    lab.node_datastore_env = BTreeMap::from([
        ("DATASTORE_TYPE".to_string(), "etcdv3".to_string()),
        (
            "ETCD_ENDPOINTS".to_string(),
            format!("http://{ETCD_ADDR}:2379"),
        ),
    ]);
    lab.save(&ctx.dir)?;
    // The proxy is up once it answers.
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            bail!(
                "the etcd proxy did not start (log in {})",
                ctx.dir.display()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

fn spawn_etcd(ctx: &Ctx, netns: &str, data_dir: &str) -> Result<u32> {
    let mut etcd = Command::new("ip");
    etcd.args([
        "netns",
        "exec",
        netns,
        "etcd",
        "--name",
        "lab",
        "--data-dir",
        data_dir,
    ])
    .args([
        "--listen-client-urls",
        &format!("http://{ETCD_ADDR}:2379,http://127.0.0.1:2379"),
    ])
    .args([
        "--advertise-client-urls",
        &format!("http://{ETCD_ADDR}:2379"),
    ])
    .args(["--listen-peer-urls", "http://127.0.0.1:2380"])
    .args(["--initial-advertise-peer-urls", "http://127.0.0.1:2380"])
    .args([
        "--initial-cluster",
        "lab=http://127.0.0.1:2380",
        "--log-level",
        "error",
    ])
    .env("ETCD_UNSUPPORTED_ARCH", "");
    daemon(&mut etcd, &ctx.dir.join("etcd.log"))
}

fn wait_etcd(netns: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ok = Command::new("ip")
            .args([
                "netns",
                "exec",
                netns,
                "curl",
                "-sf",
                "-m",
                "1",
                "http://127.0.0.1:2379/health",
            ])
            .output()
            .is_ok_and(|o| o.status.success());
        if ok {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "etcd did not become healthy (is etcd-server installed? `make demo` installs it)"
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Restarts the lab's etcd on the same data: what the agents see when the
/// datastore goes away and comes back.
fn restart_datastore(ctx: &Ctx) -> Result<()> {
    let mut lab = Lab::load(&ctx.dir)?;
    let Some(mut etcd) = lab.etcd.clone() else {
        bail!("this lab's datastore is the embedded file: there is no server to restart (use `up --datastore etcd`)");
    };
    kill(etcd.pid);
    etcd.pid = spawn_etcd(ctx, &etcd.netns, &etcd.data_dir)?;
    lab.etcd = Some(etcd.clone());
    lab.save(&ctx.dir)?;
    wait_etcd(&etcd.netns)?;
    println!("etcd restarted");
    Ok(())
}

/// Forwards connections from this namespace's `listen` to `to` inside
/// namespace `netns` (each connection's socket is opened in there).
fn proxy(netns: &str, to: &str, listen: &str) -> Result<()> {
    let listener =
        std::net::TcpListener::bind(listen).with_context(|| format!("listening on {listen}"))?;
    let path = format!("/run/netns/{netns}");
    for conn in listener.incoming() {
        let Ok(client) = conn else { continue };
        let (path, to) = (path.clone(), to.to_string());
        std::thread::spawn(move || -> Result<()> {
            let ns = std::fs::File::open(&path)?;
            nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)?;
            let server = std::net::TcpStream::connect(&to)?;
            let (mut c2, mut s2) = (client.try_clone()?, server.try_clone()?);
            let up = std::thread::spawn(move || {
                let _ = std::io::copy(&mut c2, &mut s2);
                let _ = s2.shutdown(std::net::Shutdown::Write);
            });
            let (mut c, mut s) = (client, server);
            let _ = std::io::copy(&mut s, &mut c);
            let _ = c.shutdown(std::net::Shutdown::Write);
            let _ = up.join();
            Ok(())
        });
    }
    Ok(())
}

fn decode(yaml: &str) -> Result<Resource> {
    calico_api::decode_manifest(yaml)
        .map_err(|e| anyhow!("{e}"))?
        .into_iter()
        .next()
        .ok_or_else(|| anyhow!("empty manifest"))
}

fn bgp_status(ctx: &Ctx, node: &str) -> Option<serde_json::Value> {
    let mut s =
        std::os::unix::net::UnixStream::connect(ctx.dir.join(format!("{node}-bgp.sock"))).ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    serde_json::from_str(&text).ok()
}

fn wait_mesh(ctx: &Ctx, lab: &Lab, timeout: Duration) -> Result<()> {
    let want = lab.nodes.len() - 1;
    wait_nodes(ctx, lab, "the BGP mesh", timeout, |n| {
        bgp_status(ctx, &n.name).is_some_and(|v| {
            let peers = v["status"]["peers"].as_array().cloned().unwrap_or_default();
            peers.len() == want && peers.iter().all(|p| p["state"] == "Established")
        })
    })
}

/// Stops a process: SIGTERM, then SIGKILL after a second.
fn kill(pid: u32) {
    signal_and_wait(pid, nix::sys::signal::Signal::SIGTERM);
}

/// Sends `first` and waits up to a second for the process to go; then
/// SIGKILL if `first` was something gentler. (A process left a zombie by a
/// parent that does not reap still counts as there: the wait is bounded.)
fn signal_and_wait(pid: u32, first: nix::sys::signal::Signal) {
    use nix::sys::signal::{kill, Signal};
    let p = nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap_or(i32::MAX));
    let gone = |tries: u32| {
        (0..tries).any(|_| {
            let g = kill(p, None).is_err();
            if !g {
                std::thread::sleep(Duration::from_millis(20));
            }
            g
        })
    };
    let _ = kill(p, first);
    if !gone(50) && first != Signal::SIGKILL {
        let _ = kill(p, Signal::SIGKILL);
    }
}

fn down(ctx: &Ctx) -> Result<()> {
    if let Ok(lab) = Lab::load(&ctx.dir) {
        for pod in lab.pods.values() {
            if let Some(p) = pod.server_pid {
                kill(p);
            }
        }
        for n in &lab.nodes {
            for p in &n.pids {
                kill(*p);
            }
        }
        for p in &lab.extra_pids {
            kill(*p);
        }
        if let Some(e) = &lab.etcd {
            kill(e.pid);
        }
    }
    // Every namespace of this lab, recorded or not; processes still in one
    // (a crash left them) are killed first.
    let prefix = ctx.prefix();
    let listed = ip(&["netns", "list"]).unwrap_or_default();
    let mut removed = 0;
    for line in listed.lines() {
        let Some(ns) = line.split_whitespace().next() else {
            continue;
        };
        if !ns.starts_with(&prefix) {
            continue;
        }
        if let Ok(pids) = ip(&["netns", "pids", ns]) {
            for p in pids.split_whitespace().filter_map(|p| p.parse().ok()) {
                kill(p);
            }
        }
        ip(&["netns", "del", ns])?;
        removed += 1;
    }
    if ctx.dir.exists() {
        std::fs::remove_dir_all(&ctx.dir)
            .with_context(|| format!("removing {}", ctx.dir.display()))?;
    }
    println!("lab {:?} is down ({removed} namespaces removed)", ctx.name);
    Ok(())
}

fn namespace_profile(name: &str, labels: &BTreeMap<String, String>) -> Result<Resource> {
    let mut apply: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| (format!("pcns.{k}"), v.clone()))
        .collect();
    apply.insert("pcns.kubernetes.io/metadata.name".into(), name.into());
    let doc = json!({
        "apiVersion": "projectcalico.org/v3", "kind": "Profile",
        "metadata": {"name": format!("kns.{name}")},
        "spec": {"ingress": [{"action": "Allow"}], "egress": [{"action": "Allow"}], "labelsToApply": apply}
    });
    calico_api::decode_resource(doc).map_err(|e| anyhow!("namespace {name:?}: {e}"))
}

fn ns_cmd(ctx: &Ctx, cmd: &NsCmd) -> Result<()> {
    let mut lab = Lab::load(&ctx.dir)?;
    let client = ctx.client(&lab)?;
    match cmd {
        NsCmd::Create { name, labels } => {
            calico_api::dns_label(name).map_err(|e| anyhow!("namespace {name:?}: {e}"))?;
            if lab.namespaces.contains_key(name) {
                bail!("namespace {name:?} already exists");
            }
            let mut l = labels_of(labels)?;
            l.insert("kubernetes.io/metadata.name".into(), name.clone());
            client.apply(namespace_profile(name, &l)?)?;
            lab.namespaces.insert(name.clone(), l);
        }
        NsCmd::Label { name, labels } => {
            if !lab.namespaces.contains_key(name) {
                bail!("no namespace {name:?}");
            }
            let mut l = labels_of(labels)?;
            l.insert("kubernetes.io/metadata.name".into(), name.clone());
            client.apply(namespace_profile(name, &l)?)?;
            lab.namespaces.insert(name.clone(), l);
        }
    }
    lab.save(&ctx.dir)
}

fn split_pod(key: &str) -> Result<(String, String)> {
    let (ns, name) = key
        .split_once('/')
        .ok_or_else(|| anyhow!("pod {key:?}: expected NAMESPACE/NAME"))?;
    calico_api::dns_label(name).map_err(|e| anyhow!("pod name {name:?}: {e}"))?;
    Ok((ns.to_string(), name.to_string()))
}

fn parse_port(text: &str) -> Result<Port> {
    let bad = || anyhow!("--port {text:?}: expected NAME:PORT/PROTO (e.g. http:80/TCP)");
    let (name, rest) = text.split_once(':').ok_or_else(bad)?;
    let (port, proto) = rest.split_once('/').ok_or_else(bad)?;
    let protocol = proto.to_uppercase();
    if protocol != "TCP" && protocol != "UDP" {
        return Err(bad());
    }
    Ok(Port {
        name: name.into(),
        port: port.parse().map_err(|_| bad())?,
        protocol,
    })
}

fn cni(
    ctx: &Ctx,
    lab: &Lab,
    node: &Node,
    pod: &Pod,
    command: &str,
    labels: &BTreeMap<String, String>,
) -> Result<String> {
    let labels: Vec<serde_json::Value> = labels
        .iter()
        .map(|(k, v)| json!({"key": k, "value": v}))
        .collect();
    let ports: Vec<serde_json::Value> = pod
        .ports
        .iter()
        .map(|p| json!({"name": p.name, "protocol": p.protocol, "port": p.port}))
        .collect();
    let conf = json!({"cniVersion": "1.0.0", "name": "k8s-pod-network", "type": "calico",
        "nodename": node.name, "datastore_path": lab.node_datastore_env.get("CALICO_DATASTORE_PATH"),
        "datastore_type": lab.node_datastore_env.get("DATASTORE_TYPE"),
        "etcd_endpoints": lab.node_datastore_env.get("ETCD_ENDPOINTS"),
        "mtu_file": mtu_file(ctx, &node.name),
        "ipam": {"type": "calico-ipam"}, "args": {"cni": {"labels": labels, "ports": ports}}});
    let mut child = Command::new("ip")
        .args(["netns", "exec", &node.netns])
        .arg(exe("calico")?)
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", &pod.container)
        .env("CNI_NETNS", format!("/run/netns/{}", pod.netns))
        .env("CNI_IFNAME", "eth0")
        .env(
            "CNI_ARGS",
            format!(
                "K8S_POD_NAMESPACE={};K8S_POD_NAME={}",
                pod.namespace, pod.name
            ),
        )
        .env("CNI_PATH", "/usr/lib/cni")
        .env_remove("DATASTORE_TYPE")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running the CNI plugin")?;
    child
        .stdin
        .take()
        .context("plugin stdin")?
        .write_all(conf.to_string().as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "CNI {command} for {}/{}: {}",
            pod.namespace,
            pod.name,
            String::from_utf8_lossy(&out.stdout)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn pod_cmd(ctx: &Ctx, cmd: &PodCmd) -> Result<()> {
    let mut lab = Lab::load(&ctx.dir)?;
    match cmd {
        PodCmd::Create {
            pod,
            node,
            labels,
            ports,
        } => {
            let (ns, name) = split_pod(pod)?;
            if !lab.namespaces.contains_key(&ns) {
                bail!("namespace {ns:?} does not exist (calico-lab ns create {ns})");
            }
            if lab.pods.contains_key(pod) {
                bail!("pod {pod:?} already exists");
            }
            let node = match node {
                Some(n) => lab.node(n)?.clone(),
                None => lab.nodes[lab.pods.len() % lab.nodes.len()].clone(),
            };
            let mut ports: Vec<Port> =
                ports.iter().map(|p| parse_port(p)).collect::<Result<_>>()?;
            if ports.is_empty() {
                ports = vec![
                    parse_port("serve-80-tcp:80/TCP")?,
                    parse_port("serve-80-udp:80/UDP")?,
                ];
            }
            let labels = labels_of(labels)?;
            let digest = sha1::Sha1::digest_hex(&format!("{}/{pod}", lab.name));
            let mut p = Pod {
                namespace: ns.clone(),
                name: name.clone(),
                node: node.name.clone(),
                netns: format!("{}pod-{}", ctx.prefix(), &digest[..10]),
                container: digest.clone(),
                ip: String::new(),
                ports,
                server_pid: None,
            };
            ip(&["netns", "add", &p.netns])?;
            lab.pods.insert(pod.clone(), p.clone());
            lab.save(&ctx.dir)?;
            in_ns(&p.netns, &["ip", "link", "set", "lo", "up"])?;
            let result = cni(ctx, &lab, &node, &p, "ADD", &labels)?;
            let v: serde_json::Value = serde_json::from_str(&result).context("the CNI result")?;
            let addr = v["ips"][0]["address"].as_str().unwrap_or_default();
            p.ip = addr.split('/').next().unwrap_or_default().to_string();
            let list = |proto: &str| -> String {
                p.ports
                    .iter()
                    .filter(|x| x.protocol == proto)
                    .map(|x| x.port.to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            };
            let mut serve = Command::new("ip");
            serve
                .args(["netns", "exec", &p.netns])
                .arg(std::env::current_exe()?)
                .arg("serve");
            let (tcp, udp) = (list("TCP"), list("UDP"));
            if !tcp.is_empty() {
                serve.args(["--tcp", &tcp]);
            }
            if !udp.is_empty() {
                serve.args(["--udp", &udp]);
            }
            p.server_pid = Some(daemon(
                &mut serve,
                &ctx.dir.join(format!("pod-{}.log", &digest[..10])),
            )?);
            // Ready as a workload is: its server listens and its node's
            // dataplane has programmed it.
            wait_ready(ctx, &lab, &node, &p)?;
            println!("{pod} on {} at {}", node.name, p.ip);
            lab.pods.insert(pod.clone(), p);
        }
        PodCmd::Label { pod, labels } => {
            let p = lab.pod(pod)?.clone();
            let client = ctx.client(&lab)?;
            let weps = client.list(Kind::WorkloadEndpoint, Some(&p.namespace))?;
            let wep = weps
                .items
                .into_iter()
                .find(|r| matches!(r, Resource::WorkloadEndpoint(w) if w.spec.pod == p.name))
                .ok_or_else(|| anyhow!("no WorkloadEndpoint for pod {pod}"))?;
            let Resource::WorkloadEndpoint(mut w) = wep else {
                bail!("not a WorkloadEndpoint");
            };
            let mut l: BTreeMap<String, String> = w
                .metadata
                .labels
                .iter()
                .filter(|(k, _)| k.starts_with("projectcalico.org/"))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            l.extend(labels_of(labels)?);
            w.metadata.labels = l;
            client.replace(Resource::WorkloadEndpoint(w))?;
        }
        PodCmd::Delete { pod } => {
            let p = lab.pod(pod)?.clone();
            let node = lab.node(&p.node)?.clone();
            cni(ctx, &lab, &node, &p, "DEL", &BTreeMap::new())?;
            if let Some(pid) = p.server_pid {
                kill(pid);
            }
            ip(&["netns", "del", &p.netns])?;
            lab.pods.remove(pod);
        }
    }
    lab.save(&ctx.dir)
}

/// Probes `to` from inside `from`'s namespace.
fn probe(
    lab: &Lab,
    from: &Pod,
    to: &Pod,
    port: u16,
    protocol: &str,
    timeout_ms: u64,
) -> Result<echo::Outcome> {
    let out = Command::new("ip")
        .args(["netns", "exec", &from.netns])
        .arg(std::env::current_exe()?)
        .args(["connect", &format!("{}:{port}", to.ip), protocol])
        .args(["--timeout-ms", &timeout_ms.to_string()])
        .output()
        .context("running the probe")?;
    let _ = lab;
    match out.status.code().and_then(echo::Outcome::from_code) {
        Some(o) => Ok(o),
        None => bail!("probe failed: {}", String::from_utf8_lossy(&out.stderr)),
    }
}

fn matrix(lab: &Lab, port: u16, protocol: &str, as_json: bool) -> Result<()> {
    let keys: Vec<&String> = lab.pods.keys().collect();
    let mut results: BTreeMap<(String, String), echo::Outcome> = BTreeMap::new();
    std::thread::scope(|s| -> Result<()> {
        let mut handles = Vec::new();
        for a in &keys {
            for b in &keys {
                if a == b {
                    continue;
                }
                let (pa, pb) = (&lab.pods[*a], &lab.pods[*b]);
                handles.push((
                    (*a).clone(),
                    (*b).clone(),
                    s.spawn(move || probe(lab, pa, pb, port, protocol, 1000)),
                ));
            }
        }
        for (a, b, h) in handles {
            let r = h.join().map_err(|_| anyhow!("probe thread panicked"))??;
            results.insert((a, b), r);
        }
        Ok(())
    })?;
    if as_json {
        let v: Vec<serde_json::Value> = results
            .iter()
            .map(|((a, b), o)| json!({"from": a, "to": b, "port": port, "protocol": protocol, "result": o.word()}))
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let w = keys.iter().map(|k| k.len()).max().unwrap_or(4).max(9);
    print!("{:<w$}", format!("{protocol}/{port}"));
    for b in &keys {
        print!(" {b:>w$}");
    }
    println!();
    for a in &keys {
        print!("{a:<w$}");
        for b in &keys {
            let cell = if a == b {
                "-"
            } else {
                results[&((*a).clone(), (*b).clone())].word()
            };
            print!(" {cell:>w$}");
        }
        println!();
    }
    Ok(())
}

/// Reads a node agent's /status (inside the node's namespace).
fn felix_status(node: &Node) -> Option<serde_json::Value> {
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &node.netns,
            "curl",
            "-s",
            "-m",
            "1",
            "http://127.0.0.1:9099/status",
        ])
        .output()
        .ok()?;
    serde_json::from_slice(&out.stdout).ok()
}

/// Waits until the pod's server answers on its first port (from inside the
/// pod), its node's policy agent has applied the datastore's revision, and
/// every other node routes to it (BGP carried its block, or the overlay
/// routes it through the tunnel).
fn wait_ready(ctx: &Ctx, lab: &Lab, node: &Node, pod: &Pod) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    if let Some(port) = pod.ports.first() {
        loop {
            let up = Command::new("ip")
                .args(["netns", "exec", &pod.netns])
                .arg(std::env::current_exe()?)
                .args([
                    "connect",
                    &format!("127.0.0.1:{}", port.port),
                    &port.protocol,
                ])
                .args(["--timeout-ms", "200"])
                .status()
                .is_ok_and(|s| s.success());
            if up {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "the server in pod {}/{} did not start",
                    pod.namespace,
                    pod.name
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let target = ctx.client(lab)?.store().revision()?;
    loop {
        let synced = felix_status(node).is_some_and(|v| {
            v["in_sync"] == true && v["applied_revision"].as_i64().unwrap_or(0) >= target
        });
        let routed = lab.nodes.iter().filter(|n| n.name != node.name).all(|n| {
            Command::new("ip")
                .args(["-n", &n.netns, "route", "get", &pod.ip])
                .output()
                .is_ok_and(|o| {
                    let route = String::from_utf8_lossy(&o.stdout);
                    o.status.success()
                        && (route.contains(&format!("via {} ", node.addr))
                            || route.contains("dev vxlan.calico"))
                })
        });
        if synced && routed {
            return Ok(());
        }
        if Instant::now() > deadline {
            let why = if synced {
                "the other nodes have no route to it"
            } else {
                "its node's dataplane did not pick it up"
            };
            bail!("pod {}/{} not ready: {why}", pod.namespace, pod.name);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn sync(ctx: &Ctx, lab: &Lab, timeout: Duration) -> Result<()> {
    let client = ctx.client(lab)?;
    let target = client.store().revision()?;
    let start = Instant::now();
    // Every node is watched at once; the answer comes with the slowest.
    let behind: Vec<&str> = std::thread::scope(|s| {
        let watchers: Vec<_> = lab
            .nodes
            .iter()
            .map(|n| {
                s.spawn(move || loop {
                    let done = felix_status(n).is_some_and(|v| {
                        v["in_sync"] == true
                            && v["applied_revision"].as_i64().unwrap_or(0) >= target
                    });
                    if done {
                        return None;
                    }
                    if start.elapsed() > timeout {
                        return Some(n.name.as_str());
                    }
                    std::thread::sleep(Duration::from_millis(10));
                })
            })
            .collect();
        watchers
            .into_iter()
            .filter_map(|w| w.join().unwrap_or(Some("?")))
            .collect()
    });
    if !behind.is_empty() {
        bail!(
            "not in sync at revision {target} after {timeout:?}: {}",
            behind.join(", ")
        );
    }
    println!(
        "in sync at revision {target} on {} nodes ({:.0?})",
        lab.nodes.len(),
        start.elapsed()
    );
    Ok(())
}

trait DigestHex {
    fn digest_hex(text: &str) -> String;
}

impl DigestHex for sha1::Sha1 {
    fn digest_hex(text: &str) -> String {
        use sha1::Digest;
        sha1::Sha1::digest(text.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let dir = cli
        .state
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("/run/calico-lab/{}", cli.lab_name)));
    let ctx = Ctx {
        name: cli.lab_name.clone(),
        dir,
    };
    let outcome: Result<ExitCode> = (|| match &cli.command {
        Cmd::Up {
            nodes,
            datastore,
            encap,
            subnets,
        } => up(&ctx, *nodes, datastore, encap, *subnets).map(|()| ExitCode::SUCCESS),
        Cmd::Down => down(&ctx).map(|()| ExitCode::SUCCESS),
        Cmd::Ns(c) => ns_cmd(&ctx, c).map(|()| ExitCode::SUCCESS),
        Cmd::Pod(c) => pod_cmd(&ctx, c).map(|()| ExitCode::SUCCESS),
        Cmd::Node(c) => node_cmd(&ctx, c).map(|()| ExitCode::SUCCESS),
        Cmd::Datastore(DatastoreCmd::Restart) => {
            restart_datastore(&ctx).map(|()| ExitCode::SUCCESS)
        }
        Cmd::Proxy { netns, to, listen } => proxy(netns, to, listen).map(|()| ExitCode::SUCCESS),
        Cmd::Probe {
            from,
            to,
            port,
            protocol,
            timeout_ms,
        } => {
            let lab = Lab::load(&ctx.dir)?;
            let outcome = probe(
                &lab,
                lab.pod(from)?,
                lab.pod(to)?,
                *port,
                protocol,
                *timeout_ms,
            )?;
            println!("{}", outcome.word());
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Matrix {
            port,
            protocol,
            json,
        } => {
            let lab = Lab::load(&ctx.dir)?;
            matrix(&lab, *port, protocol, *json).map(|()| ExitCode::SUCCESS)
        }
        Cmd::Sync { timeout } => {
            let lab = Lab::load(&ctx.dir)?;
            sync(&ctx, &lab, Duration::from_secs(*timeout)).map(|()| ExitCode::SUCCESS)
        }
        Cmd::Exec { pod, cmd } => {
            let lab = Lab::load(&ctx.dir)?;
            let netns = if pod.contains('/') {
                lab.pod(pod)?.netns.clone()
            } else {
                lab.node(pod)?.netns.clone()
            };
            let status = Command::new("ip")
                .args(["netns", "exec", &netns])
                .args(cmd)
                .status()
                .with_context(|| format!("running {cmd:?}"))?;
            Ok(ExitCode::from(
                u8::try_from(status.code().unwrap_or(1)).unwrap_or(1),
            ))
        }
        Cmd::Env { node } => {
            let lab = Lab::load(&ctx.dir)?;
            if !lab.datastore_env.contains_key("DATASTORE_TYPE") {
                println!("unset DATASTORE_TYPE ETCD_ENDPOINTS");
            }
            for (k, v) in &lab.datastore_env {
                println!("export {k}={v}");
            }
            let n = match node {
                Some(n) => lab.node(n)?.name.clone(),
                None => lab
                    .nodes
                    .first()
                    .map(|n| n.name.clone())
                    .unwrap_or_default(),
            };
            println!(
                "export CALICO_BGP_STATUS_SOCKET={}",
                ctx.dir.join(format!("{n}-bgp.sock")).display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Show { json } => {
            let lab = Lab::load(&ctx.dir)?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&lab)?);
            } else {
                // What the datastore says now (the pool's mode may have
                // been changed since `up`).
                let client = ctx.client(&lab)?;
                for r in client.list(calico_api::Kind::IPPool, None)?.items {
                    if let Resource::IPPool(p) = r {
                        let mode = p.spec.vxlan_mode.unwrap_or_default();
                        println!(
                            "pool {} {} vxlanMode {mode:?}",
                            p.metadata.name, p.spec.cidr
                        );
                    }
                }
                let mut vteps = BTreeMap::new();
                for r in client.list(calico_api::Kind::Node, None)?.items {
                    if let Resource::Node(n) = r {
                        if !n.spec.ipv4_vxlan_tunnel_addr.is_empty() {
                            vteps.insert(n.metadata.name, n.spec.ipv4_vxlan_tunnel_addr);
                        }
                    }
                }
                for n in &lab.nodes {
                    match vteps.get(&n.name) {
                        Some(v) => println!("node {} {} vtep {v}", n.name, n.addr),
                        None => println!("node {} {}", n.name, n.addr),
                    }
                }
                for (k, p) in &lab.pods {
                    println!("pod {k} on {} at {}", p.node, p.ip);
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Serve { tcp, udp } => echo::serve(tcp, udp).map(|()| ExitCode::SUCCESS),
        Cmd::Connect {
            addr,
            protocol,
            timeout_ms,
        } => {
            let a = addr
                .parse()
                .map_err(|_| anyhow!("address {addr:?}: expected IP:PORT"))?;
            let outcome = echo::connect(a, protocol, Duration::from_millis(*timeout_ms))?;
            Ok(ExitCode::from(outcome.code()))
        }
    })();
    match outcome {
        Ok(code) => code,
        Err(e) => {
            eprintln!("calico-lab: {e:#}");
            ExitCode::from(2)
        }
    }
}
