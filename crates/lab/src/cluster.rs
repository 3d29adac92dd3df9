//! The cluster: fabric, subnets, nodes and their agents; up, down,
//! restarts, and the waits for BGP and tunnels.

use super::*;

pub(crate) struct Ctx {
    pub(crate) name: String,
    pub(crate) dir: PathBuf,
}

impl Ctx {
    pub(crate) fn prefix(&self) -> String {
        format!("cl-{}-", self.name)
    }
    pub(crate) fn client(&self, lab: &Lab) -> Result<Client> {
        let cfg = DatastoreConfig::resolve(None, &|k| lab.datastore_env.get(k).cloned())?;
        let store = open_store(&cfg).with_context(|| format!("opening the {}", cfg.describe()))?;
        Ok(Client::new(store, Arc::new(SystemClock)))
    }
}

/// The pool's `vxlanMode` for `--encap`.
pub(crate) fn vxlan_mode(encap: &str) -> &'static str {
    match encap {
        "vxlan" => "Always",
        "vxlan-crosssubnet" => "CrossSubnet",
        _ => "Never",
    }
}

/// The fabric's router address on subnet `s` (with several subnets).
pub(crate) fn router(s: usize) -> String {
    format!("10.250.{s}.253")
}

/// What `calico-lab up` is asked for.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Shape<'a> {
    pub nodes: usize,
    pub datastore: &'a str,
    pub encap: &'a str,
    pub subnets: usize,
    pub flow_flush: u64,
    pub dual: bool,
    /// The agents read through a fan-out (`calico-node typha`).
    pub typha: bool,
}

/// The fan-out's address on the fabric (`--typha`).
pub(crate) const TYPHA_ADDR: &str = "10.250.0.251";

pub(crate) fn up(ctx: &Ctx, shape: Shape<'_>) -> Result<()> {
    let Shape {
        nodes,
        datastore,
        encap,
        subnets,
        flow_flush,
        dual,
        typha,
    } = shape;
    if dual && (subnets > 1 || encap != "none") {
        bail!("--ip-family dual: one subnet and --encap none for now (IPv6 is BGP-routed on one fabric)");
    }
    if !(1..=3600).contains(&flow_flush) {
        bail!("--flow-flush {flow_flush}: between 1 and 3600 seconds");
    }
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
        flows: None,
        felix_env: flowsvc::felix_env(flow_flush),
        external: None,
        ipv6: dual,
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
        start_etcd_server(ctx, &mut lab, subnets)?;
    }
    start_flow_service(ctx, &mut lab, subnets)?;
    start_external(ctx, &mut lab, subnets)?;
    if typha {
        start_typha(ctx, &mut lab, subnets)?;
    }
    let client = ctx.client(&lab)?;
    // As calico-node makes the default pool: pods reach beyond the pools
    // as their node (natOutgoing).
    client
        .apply(decode(&format!(
            "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {{name: default-ipv4-ippool}}\nspec: {{cidr: 10.244.0.0/16, blockSize: 26, natOutgoing: true, vxlanMode: {}}}\n",
            vxlan_mode(encap)
        ))?)
        .context("creating the IP pool")?;
    if dual {
        client
            .apply(decode(&format!(
                "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {{name: default-ipv6-ippool}}\nspec: {{cidr: '{POOL6}', blockSize: 122, natOutgoing: true, vxlanMode: Never}}\n"
            ))?)
            .context("creating the IPv6 pool")?;
    }
    for i in 1..=nodes {
        let name = format!("node-{i}");
        let netns = format!("{}{name}", ctx.prefix());
        // Nodes fill the subnets in order.
        let subnet = (i - 1) * subnets / nodes;
        let addr = format!("10.250.{subnet}.{i}");
        ip(&["netns", "add", &netns])?;
        let addr6 = if dual { fabric6(i) } else { String::new() };
        lab.nodes.push(Node {
            name: name.clone(),
            netns: netns.clone(),
            addr: addr.clone(),
            addr6: addr6.clone(),
            pids: Vec::new(),
            server_pid: None,
        });
        lab.save(&ctx.dir)?;
        plug(&lab, &netns, &format!("p{i}"), subnet, &addr)?;
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
        if dual {
            plug6(&netns, &addr6)?;
            in_ns(
                &netns,
                &["ip", "-6", "route", "add", "default", "dev", "eth0"],
            )?;
            in_ns(&netns, &["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"])?;
        }
        let pids = start_agents(ctx, &lab, &name, &netns, &addr, &addr6)?;
        let server = serve_echo(ctx, &netns, &format!("{name}-server.log"))?;
        if let Some(n) = lab.nodes.last_mut() {
            n.pids = pids;
            n.server_pid = Some(server);
        }
        lab.save(&ctx.dir)?;
    }
    // The cluster's controllers (one per cluster, as calico-kube-controllers):
    // automatic host endpoints once KubeControllersConfiguration asks.
    // They run on node-1 (as calico-kube-controllers runs as a pod), inside
    // a lab namespace, so `down` finds them even after a crash.
    let first = lab
        .nodes
        .first()
        .map(|n| n.netns.clone())
        .unwrap_or_default();
    let mut controllers = Command::new("ip");
    controllers
        .args(["netns", "exec", &first])
        .arg(exe("calico-node")?)
        .arg("controllers")
        .env_remove("DATASTORE_TYPE")
        .envs(&lab.node_datastore_env);
    lab.extra_pids
        .push(daemon(&mut controllers, &ctx.dir.join("controllers.log"))?);
    lab.save(&ctx.dir)?;
    wait_mesh(ctx, &lab, Duration::from_secs(60))?;
    if encap != "none" {
        wait_tunnels(ctx, &lab, Duration::from_secs(60))?;
    }
    let mut nets: Vec<String> = (0..subnets).map(|s| format!("10.250.{s}.0/24")).collect();
    let mut pools = "10.244.0.0/16".to_string();
    if dual {
        nets.push(format!("{FABRIC6}/64"));
        pools.push_str(&format!(" and {POOL6}"));
    }
    println!(
        "lab {:?} is up: {} nodes on {}, pods from {pools} (vxlanMode {}), BGP mesh established",
        lab.name,
        lab.nodes.len(),
        nets.join(" and "),
        vxlan_mode(encap)
    );
    if let Some(f) = &lab.flows {
        println!(
            "flow records: `calico-lab flows` (calicoctl flows), web UI at {}/",
            f.url
        );
    }
    println!(
        "external host {EXTERNAL_ADDR} (outside the cluster): `calico-lab probe NS/POD external --port 80`"
    );
    Ok(())
}

/// A dual-stack lab's IPv6 pool and fabric (nodes at `::N`, the external
/// host at `::fa`).
pub(crate) const POOL6: &str = "fd00:244::/48";
pub(crate) const FABRIC6: &str = "fd00:250::";

/// Node `i`'s IPv6 address on the fabric.
pub(crate) fn fabric6(i: usize) -> String {
    format!("{FABRIC6}{i:x}")
}

/// Gives `netns`'s `eth0` its IPv6 fabric address (no duplicate address
/// detection: the lab hands out unique ones).
fn plug6(netns: &str, addr6: &str) -> Result<()> {
    in_ns(
        netns,
        &[
            "ip",
            "-6",
            "addr",
            "add",
            &format!("{addr6}/64"),
            "dev",
            "eth0",
            "nodad",
        ],
    )?;
    Ok(())
}

/// The external host's address on the fabric: neither a node's nor in a
/// pool (the pods' addresses are not routed to it: it answers them only
/// through NAT).
pub(crate) const EXTERNAL_ADDR: &str = "10.250.0.250";

/// The external host (`probe ... external`): its namespace on the fabric
/// and its server (TCP and UDP 80, answering with the address it saw).
fn start_external(ctx: &Ctx, lab: &mut Lab, subnets: usize) -> Result<()> {
    let netns = service_netns(ctx, lab, "ext", "px", EXTERNAL_ADDR, subnets)?;
    let addr6 = if lab.ipv6 {
        let a = format!("{FABRIC6}fa");
        plug6(&netns, &a)?;
        a
    } else {
        String::new()
    };
    let pid = serve_echo(ctx, &netns, "external.log")?;
    lab.external = Some(state::External {
        netns: netns.clone(),
        addr: EXTERNAL_ADDR.into(),
        addr6,
        pid,
    });
    lab.save(&ctx.dir)?;
    let deadline = Instant::now() + Duration::from_secs(10);
    let me = state::Endpoint {
        netns,
        ip: "127.0.0.1".into(),
    };
    while probe(&me, &me, 80, "TCP", 200)?.0 != echo::Outcome::Allowed {
        if Instant::now() > deadline {
            bail!("the external host's server did not start");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// `calico-lab serve` on TCP and UDP 80 in `netns`, answering with the
/// address it saw (the external host's and the nodes' own servers).
fn serve_echo(ctx: &Ctx, netns: &str, log: &str) -> Result<u32> {
    let mut serve = Command::new("ip");
    serve
        .args(["netns", "exec", netns])
        .arg(std::env::current_exe()?)
        .args(["serve", "--tcp", "80", "--udp", "80", "--tell-peer"]);
    daemon(&mut serve, &ctx.dir.join(log))
}

/// Plugs namespace `netns` into the fabric's bridge `br<subnet>`: its
/// `eth0` at `addr`/24, the fabric's end named `port`; loopback up.
fn plug(lab: &Lab, netns: &str, port: &str, subnet: usize, addr: &str) -> Result<()> {
    in_ns(netns, &["ip", "link", "set", "lo", "up"])?;
    in_ns(
        &lab.fabric,
        &[
            "ip", "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", netns,
        ],
    )?;
    in_ns(
        &lab.fabric,
        &[
            "ip",
            "link",
            "set",
            port,
            "master",
            &format!("br{subnet}"),
            "up",
        ],
    )?;
    in_ns(
        netns,
        &["ip", "addr", "add", &format!("{addr}/24"), "dev", "eth0"],
    )?;
    in_ns(netns, &["ip", "link", "set", "eth0", "up"])?;
    Ok(())
}

/// A namespace `cl-<lab>-<what>` for a service on the fabric: its `eth0`
/// at `addr`/24 on br0 (the fabric's end named `port`); with several
/// subnets, a default route through the fabric's router. Returns its name.
pub(crate) fn service_netns(
    ctx: &Ctx,
    lab: &Lab,
    what: &str,
    port: &str,
    addr: &str,
    subnets: usize,
) -> Result<String> {
    let netns = format!("{}{what}", ctx.prefix());
    ip(&["netns", "add", &netns])?;
    plug(lab, &netns, port, 0, addr)?;
    if subnets > 1 {
        // Nodes on the other subnets are reached through the fabric's router.
        in_ns(
            &netns,
            &["ip", "route", "add", "default", "via", &router(0)],
        )?;
    }
    Ok(netns)
}

/// The fan-out in a namespace of its own on the fabric, reading the
/// datastore as the nodes do; every node's agents are told to read
/// through it (`FELIX_TYPHAADDR`).
fn start_typha(ctx: &Ctx, lab: &mut Lab, subnets: usize) -> Result<()> {
    let netns = service_netns(ctx, lab, "typha", "pt", TYPHA_ADDR, subnets)?;
    let listen = format!("{TYPHA_ADDR}:5473");
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &netns])
        .arg(exe("calico-node")?)
        .args(["typha", "--listen", &listen])
        .env_remove("DATASTORE_TYPE")
        .envs(&lab.node_datastore_env);
    lab.extra_pids
        .push(daemon(&mut cmd, &ctx.dir.join("typha.log"))?);
    lab.node_datastore_env
        .insert("FELIX_TYPHAADDR".into(), listen);
    lab.save(&ctx.dir)?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while !in_ns(&netns, &["ss", "-Htln", "sport = :5473"]).is_ok_and(|out| !out.trim().is_empty())
    {
        if Instant::now() > deadline {
            bail!(
                "the fan-out did not start (log in {})",
                ctx.dir.join("typha.log").display()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// Where a node's policy agent writes the workloads' MTU (per node: the
/// nodes share this host's filesystem).
pub(crate) fn mtu_file(ctx: &Ctx, node: &str) -> PathBuf {
    ctx.dir.join(format!("{node}-mtu"))
}

/// Waits until every node has its tunnel device with its VTEP address and
/// has written the workloads' MTU (the tunnel's).
pub(crate) fn wait_tunnels(ctx: &Ctx, lab: &Lab, timeout: Duration) -> Result<()> {
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
pub(crate) fn wait_nodes(
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
pub(crate) fn start_agents(
    ctx: &Ctx,
    lab: &Lab,
    name: &str,
    netns: &str,
    addr: &str,
    addr6: &str,
) -> Result<Vec<u32>> {
    let node_bin = exe("calico-node")?;
    let mut pids = Vec::new();
    let sock = ctx
        .dir
        .join(format!("{name}-bgp.sock"))
        .display()
        .to_string();
    let ip_arg = format!("{addr}/24");
    let ip6_arg = format!("{addr6}/64");
    let mut bgp = vec![
        "bgp",
        "--ip",
        &ip_arg,
        "--status-socket",
        &sock,
        "--connect-retry",
        "1",
    ];
    if !addr6.is_empty() {
        bgp.extend(["--ip6", &ip6_arg]);
    }
    let agents: [(&str, Vec<&str>); 2] = [("felix", vec!["felix"]), ("bgp", bgp)];
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
        if what == "felix" {
            cmd.envs(&lab.felix_env);
        }
        pids.push(daemon(
            &mut cmd,
            &ctx.dir.join(format!("{name}-{what}.log")),
        )?);
    }
    Ok(pids)
}

pub(crate) fn node_cmd(ctx: &Ctx, cmd: &NodeCmd) -> Result<()> {
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
    let pids = start_agents(ctx, &lab, &n.name, &n.netns, &n.addr, &n.addr6)?;
    for m in lab.nodes.iter_mut().filter(|m| m.name == n.name) {
        m.pids.clone_from(&pids);
    }
    lab.save(&ctx.dir)?;
    wait_mesh(ctx, &lab, Duration::from_secs(60))?;
    println!("{node}: agents restarted");
    Ok(())
}

pub(crate) fn bgp_status(ctx: &Ctx, node: &str) -> Option<serde_json::Value> {
    let mut s =
        std::os::unix::net::UnixStream::connect(ctx.dir.join(format!("{node}-bgp.sock"))).ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    serde_json::from_str(&text).ok()
}

pub(crate) fn wait_mesh(ctx: &Ctx, lab: &Lab, timeout: Duration) -> Result<()> {
    // Dual stack: a session per family with each other node.
    let want = (lab.nodes.len() - 1) * if lab.ipv6 { 2 } else { 1 };
    wait_nodes(ctx, lab, "the BGP mesh", timeout, |n| {
        bgp_status(ctx, &n.name).is_some_and(|v| {
            let peers = v["status"]["peers"].as_array().cloned().unwrap_or_default();
            peers.len() == want && peers.iter().all(|p| p["state"] == "Established")
        })
    })
}

pub(crate) fn down(ctx: &Ctx) -> Result<()> {
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
        if let Some(f) = &lab.flows {
            kill(f.pid);
        }
    }
    // Every namespace of this lab, recorded or not; processes still in one
    // (a crash left them) are killed first, and so are the loopback
    // proxies into them (they run in this host's namespace).
    let prefix = ctx.prefix();
    for p in proxies_into(&prefix) {
        kill(p);
    }
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
