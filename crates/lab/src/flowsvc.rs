//! The lab's flow service: `calico-flows` in a namespace of its own on
//! the fabric (the nodes stream their flow records to it there), its
//! store in the lab's state directory, and a loopback proxy to its HTTP
//! API and web UI for people and tools on this host.

use super::*;

/// The flow service's address on the fabric.
pub(crate) const FLOWS_ADDR: &str = "10.250.0.252";

/// What felix on every node is told: stream flow records there, flushed
/// every `flush` seconds.
pub(crate) fn felix_env(flush: u64) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            "FELIX_FLOWLOGSGOLDMANESERVER".to_string(),
            format!("{FLOWS_ADDR}:{}", 7443),
        ),
        ("FELIX_FLOWLOGSFLUSHINTERVAL".to_string(), flush.to_string()),
    ])
}

/// Makes the namespace, starts the service and the proxy; records them.
pub(crate) fn start_flow_service(ctx: &Ctx, lab: &mut Lab, subnets: usize) -> Result<()> {
    let netns = service_netns(ctx, lab, "flows", "pf", FLOWS_ADDR, subnets)?;
    let port = free_local_port()?;
    lab.flows = Some(state::FlowService {
        netns: netns.clone(),
        pid: 0,
        url: format!("http://127.0.0.1:{port}"),
    });
    lab.save(&ctx.dir)?;
    spawn_service(ctx, lab)?;
    start_proxy(ctx, lab, &netns, "127.0.0.1:8081", port, "flows-proxy.log")?;
    lab.save(&ctx.dir)?;
    wait_service(ctx, lab)
}

fn spawn_service(ctx: &Ctx, lab: &mut Lab) -> Result<()> {
    let Some(f) = lab.flows.as_mut() else {
        bail!("this lab has no flow service");
    };
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &f.netns])
        .arg(exe("calico-flows")?)
        .args(["--grpc", &format!("{FLOWS_ADDR}:7443")])
        .args(["--http", "127.0.0.1:8081"])
        .arg("--db")
        .arg(ctx.dir.join("flows.db"));
    f.pid = daemon(&mut cmd, &ctx.dir.join("flows.log"))?;
    lab.save(&ctx.dir)
}

/// Waits until the service answers through the proxy.
fn wait_service(ctx: &Ctx, lab: &Lab) -> Result<()> {
    let Some(f) = &lab.flows else {
        return Ok(());
    };
    let addr = f.url.trim_start_matches("http://").to_string();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let ok = std::net::TcpStream::connect(&addr).is_ok_and(|mut s| {
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            let mut answer = String::new();
            s.write_all(b"GET /healthz HTTP/1.0\r\n\r\n").is_ok()
                && s.read_to_string(&mut answer).is_ok()
                && answer.starts_with("HTTP/1.0 200")
        });
        if ok {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "the flow service did not start (log in {})",
                ctx.dir.join("flows.log").display()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub(crate) fn flow_service_cmd(ctx: &Ctx, cmd: &FlowServiceCmd) -> Result<()> {
    let mut lab = Lab::load(&ctx.dir)?;
    let Some(f) = lab.flows.clone() else {
        bail!("this lab has no flow service");
    };
    match cmd {
        FlowServiceCmd::Stop => {
            kill(f.pid);
            println!("flow service stopped (the nodes buffer their records)");
        }
        FlowServiceCmd::Start => {
            kill(f.pid);
            spawn_service(ctx, &mut lab)?;
            wait_service(ctx, &lab)?;
            println!("flow service started: {}", f.url);
        }
    }
    Ok(())
}

/// `calico-lab flows [ARGS]`: `calicoctl flows ARGS` against the lab's
/// flow service; `--url` prints where its API and web UI are.
pub(crate) fn flows(ctx: &Ctx, url_only: bool, args: &[String]) -> Result<ExitCode> {
    let lab = Lab::load(&ctx.dir)?;
    let Some(f) = &lab.flows else {
        bail!("this lab has no flow service");
    };
    if url_only {
        println!("{}", f.url);
        return Ok(ExitCode::SUCCESS);
    }
    let status = Command::new(exe("calicoctl")?)
        .arg("flows")
        .args(["--server", &f.url])
        .args(args)
        .status()
        .context("running calicoctl flows")?;
    Ok(if status.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
