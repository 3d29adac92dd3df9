//! Probes, the connectivity matrix, and the waits for a pod or the whole
//! lab to be in sync.

use super::*;

/// Probes `to` from inside `from`'s namespace; also the address the
/// server saw, when it says (the external host does).
pub(crate) fn probe(
    from: &state::Endpoint,
    to: &state::Endpoint,
    port: u16,
    protocol: &str,
    timeout_ms: u64,
) -> Result<(echo::Outcome, Option<String>)> {
    let out = Command::new("ip")
        .args(["netns", "exec", &from.netns])
        .arg(std::env::current_exe()?)
        .args(["connect", &sock_addr(&to.ip, port), protocol])
        .args(["--timeout-ms", &timeout_ms.to_string()])
        .output()
        .context("running the probe")?;
    let seen = String::from_utf8_lossy(&out.stdout).trim().to_string();
    match out.status.code().and_then(echo::Outcome::from_code) {
        Some(o) => Ok((o, (!seen.is_empty()).then_some(seen))),
        None => bail!("probe failed: {}", String::from_utf8_lossy(&out.stderr)),
    }
}

/// `ip:port`, with brackets around an IPv6 address.
pub(crate) fn sock_addr(ip: &str, port: u16) -> String {
    if ip.contains(':') {
        format!("[{ip}]:{port}")
    } else {
        format!("{ip}:{port}")
    }
}

pub(crate) fn matrix(lab: &Lab, port: u16, protocol: &str, as_json: bool, v6: bool) -> Result<()> {
    let keys: Vec<&String> = lab.pods.keys().collect();
    let mut results: BTreeMap<(String, String), echo::Outcome> = BTreeMap::new();
    std::thread::scope(|s| -> Result<()> {
        let mut handles = Vec::new();
        for a in &keys {
            for b in &keys {
                if a == b {
                    continue;
                }
                let (pa, pb) = (lab.endpoint_in(a, v6)?, lab.endpoint_in(b, v6)?);
                handles.push((
                    (*a).clone(),
                    (*b).clone(),
                    s.spawn(move || {
                        probe(&pa, &pb, port, protocol, 1000).map(|(outcome, _)| outcome)
                    }),
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
pub(crate) fn felix_status(node: &Node) -> Option<serde_json::Value> {
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
pub(crate) fn wait_ready(ctx: &Ctx, lab: &Lab, node: &Node, pod: &Pod) -> Result<()> {
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
    // IPv6: the pod's addresses, and its node's (the host side of its
    // veth answers for the gateway), through duplicate address detection:
    // a tentative link-local neither resolves nor answers for the gateway.
    let tentative = |netns: &str| {
        Command::new("ip")
            .args(["-n", netns, "-6", "addr", "show", "tentative"])
            .output()
            .map(|o| !String::from_utf8_lossy(&o.stdout).trim().is_empty())
            .unwrap_or(false)
    };
    while !pod.ip6.is_empty() {
        if !tentative(&pod.netns) && !tentative(&node.netns) {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "pod {}/{}: IPv6 addresses still tentative",
                pod.namespace,
                pod.name
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let client = ctx.client(lab)?;
    let target = relevant_revision(client.store().as_ref(), client.store().revision()?)?;
    loop {
        let synced = felix_status(node).is_some_and(|v| {
            v["in_sync"] == true && v["applied_revision"].as_i64().unwrap_or(0) >= target
        });
        let routed_to = |ip: &str, via: &str| {
            ip.is_empty()
                || lab.nodes.iter().filter(|n| n.name != node.name).all(|n| {
                    Command::new("ip")
                        .args(["-n", &n.netns, "route", "get", ip])
                        .output()
                        .is_ok_and(|o| {
                            let route = String::from_utf8_lossy(&o.stdout);
                            o.status.success()
                                && (route.contains(&format!("via {via} "))
                                    || route.contains("dev vxlan.calico"))
                        })
                })
        };
        let routed = routed_to(&pod.ip, &node.addr) && routed_to(&pod.ip6, &node.addr6);
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

/// The newest change at or below `now` that a policy agent is given (its
/// syncer skips IPAM blocks and handles and kinds it does not read, so a
/// store revision made by one of those never reaches it): the newest
/// revision among the keys it reads, or of a deletion of one of them
/// since (replayed from the store's history).
fn relevant_revision(store: &dyn calico_datastore::Store, now: i64) -> Result<i64> {
    use calico_syncer::SyncerType;
    let ty = SyncerType::Felix;
    let mut newest = 0;
    for prefix in ty.prefixes() {
        for kv in store.list(prefix)?.items {
            if ty.wants(&kv.key) {
                newest = newest.max(kv.mod_revision);
            }
        }
    }
    for prefix in ty.prefixes() {
        let Ok(watch) = store.watch(prefix, newest + 1) else {
            // History compacted: only the store's revision is sure.
            return Ok(now);
        };
        // The history up to `now` comes at once; a pause ends it.
        while let Ok(ev) = watch.recv_timeout(Duration::from_millis(50)) {
            if ev.revision() > now {
                break;
            }
            if ty.wants(ev.key()) {
                newest = newest.max(ev.revision());
            }
        }
    }
    Ok(newest)
}

pub(crate) fn sync(ctx: &Ctx, lab: &Lab, timeout: Duration) -> Result<()> {
    let client = ctx.client(lab)?;
    let now = client.store().revision()?;
    let target = relevant_revision(client.store().as_ref(), now)?;
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

pub(crate) trait DigestHex {
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
