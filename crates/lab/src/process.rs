//! Running things: commands, namespaces, daemons, signals.

use super::*;

pub(crate) fn exe(name: &str) -> Result<PathBuf> {
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

pub(crate) fn run(cmd: &mut Command) -> Result<String> {
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

pub(crate) fn ip(args: &[&str]) -> Result<String> {
    run(Command::new("ip").args(args))
}

pub(crate) fn in_ns(ns: &str, args: &[&str]) -> Result<String> {
    run(Command::new("ip").args(["netns", "exec", ns]).args(args))
}

/// Starts a background process that outlives this command; returns its pid.
pub(crate) fn daemon(cmd: &mut Command, log: &Path) -> Result<u32> {
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

/// Stops a process: SIGTERM, then SIGKILL after a second.
pub(crate) fn kill(pid: u32) {
    signal_and_wait(pid, nix::sys::signal::Signal::SIGTERM);
}

/// Sends `first` and waits up to a second for the process to go; then
/// SIGKILL if `first` was something gentler. (A process left a zombie by a
/// parent that does not reap still counts as there: the wait is bounded.)
pub(crate) fn signal_and_wait(pid: u32, first: nix::sys::signal::Signal) {
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

/// A loopback port free now (for a proxy to listen on).
pub(crate) fn free_local_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// `calico-lab proxy`: connections to 127.0.0.1:`port` on this host are
/// forwarded to `to` inside namespace `netns`; recorded in the lab's
/// processes, logging to `log` in its state directory.
pub(crate) fn start_proxy(
    ctx: &Ctx,
    lab: &mut Lab,
    netns: &str,
    to: &str,
    port: u16,
    log: &str,
) -> Result<()> {
    let mut proxy = Command::new(std::env::current_exe()?);
    proxy.args([
        "proxy",
        "--netns",
        netns,
        "--to",
        to,
        "--listen",
        &format!("127.0.0.1:{port}"),
    ]);
    lab.extra_pids.push(daemon(&mut proxy, &ctx.dir.join(log))?);
    Ok(())
}

/// `calico-lab proxy` processes forwarding into namespaces named
/// `prefix…` (found by their command line, for a lab whose state is gone).
pub(crate) fn proxies_into(prefix: &str) -> Vec<u32> {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    procs
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
            args.get(1) == Some(&&b"proxy"[..])
                && args
                    .windows(2)
                    .any(|w| w[0] == b"--netns" && w[1].starts_with(prefix.as_bytes()))
        })
        .collect()
}
