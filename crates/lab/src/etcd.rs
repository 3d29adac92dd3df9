//! The optional etcd datastore: its server in the fabric, restarts, and
//! the loopback proxy that tools on the host use.

use super::*;

/// The etcd server's address on the fabric.
pub(crate) const ETCD_ADDR: &str = "10.250.0.254";

/// `--datastore etcd`: etcd in a namespace of its own on the fabric (the
/// nodes reach it there), and a proxy on this host's loopback into that
/// namespace for calicoctl and the lab itself.
pub(crate) fn start_etcd_server(ctx: &Ctx, lab: &mut Lab, subnets: usize) -> Result<()> {
    let netns = service_netns(ctx, lab, "etcd", "p0", ETCD_ADDR, subnets)?;
    let data_dir = ctx.dir.join("etcd").display().to_string();
    let pid = spawn_etcd(ctx, &netns, &data_dir)?;
    lab.etcd = Some(state::Etcd {
        netns: netns.clone(),
        pid,
        data_dir,
    });
    lab.save(&ctx.dir)?;
    wait_etcd(&netns)?;
    let port = free_local_port()?;
    start_proxy(ctx, lab, &netns, "127.0.0.1:2379", port, "proxy.log")?;
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

pub(crate) fn spawn_etcd(ctx: &Ctx, netns: &str, data_dir: &str) -> Result<u32> {
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

pub(crate) fn wait_etcd(netns: &str) -> Result<()> {
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
pub(crate) fn restart_datastore(ctx: &Ctx) -> Result<()> {
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
pub(crate) fn proxy(netns: &str, to: &str, listen: &str) -> Result<()> {
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
            // Small writes go out at once: with Nagle, a request written
            // in two pieces waits for the peer's delayed ACK (40 ms).
            client.set_nodelay(true)?;
            server.set_nodelay(true)?;
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
