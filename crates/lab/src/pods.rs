//! Namespaces and pods: profiles, labels, ports, and the CNI plugin
//! wiring each pod.

use super::*;

pub(crate) fn labels_of(text: &str) -> Result<BTreeMap<String, String>> {
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

pub(crate) fn decode(yaml: &str) -> Result<Resource> {
    calico_api::decode_manifest(yaml)
        .map_err(|e| anyhow!("{e}"))?
        .into_iter()
        .next()
        .ok_or_else(|| anyhow!("empty manifest"))
}

pub(crate) fn namespace_profile(name: &str, labels: &BTreeMap<String, String>) -> Result<Resource> {
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

pub(crate) fn ns_cmd(ctx: &Ctx, cmd: &NsCmd) -> Result<()> {
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
        NsCmd::Delete { name } => {
            if !lab.namespaces.contains_key(name) {
                bail!("no namespace {name:?}");
            }
            let pods: Vec<String> = lab
                .pods
                .values()
                .filter(|p| &p.namespace == name)
                .map(|p| format!("{}/{}", p.namespace, p.name))
                .collect();
            for pod in &pods {
                pod_cmd(ctx, &PodCmd::Delete { pod: pod.clone() })?;
            }
            let profile = format!("kns.{name}");
            match client.delete(Kind::Profile, None, &profile, None) {
                Ok(_) | Err(calico_client::ClientError::NotFound { .. }) => {}
                Err(e) => return Err(e).context(format!("deleting profile {profile}")),
            }
            // Reloaded: the pods' deletions saved it meanwhile.
            lab = Lab::load(&ctx.dir)?;
            lab.namespaces.remove(name);
            println!("namespace {name} deleted with {} pod(s)", pods.len());
        }
    }
    lab.save(&ctx.dir)
}

pub(crate) fn split_pod(key: &str) -> Result<(String, String)> {
    let (ns, name) = key
        .split_once('/')
        .ok_or_else(|| anyhow!("pod {key:?}: expected NAMESPACE/NAME"))?;
    calico_api::dns_label(name).map_err(|e| anyhow!("pod name {name:?}: {e}"))?;
    Ok((ns.to_string(), name.to_string()))
}

pub(crate) fn parse_port(text: &str) -> Result<Port> {
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

pub(crate) fn cni(
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
        "ipam": {"type": "calico-ipam", "assign_ipv4": "true", "assign_ipv6": if lab.ipv6 { "true" } else { "false" }},
        "args": {"cni": {"labels": labels, "ports": ports}}});
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

pub(crate) fn pod_cmd(ctx: &Ctx, cmd: &PodCmd) -> Result<()> {
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
                ip6: String::new(),
                ports,
                server_pid: None,
            };
            ip(&["netns", "add", &p.netns])?;
            lab.pods.insert(pod.clone(), p.clone());
            lab.save(&ctx.dir)?;
            in_ns(&p.netns, &["ip", "link", "set", "lo", "up"])?;
            let result = cni(ctx, &lab, &node, &p, "ADD", &labels)?;
            let v: serde_json::Value = serde_json::from_str(&result).context("the CNI result")?;
            for a in v["ips"].as_array().into_iter().flatten() {
                let addr = a["address"].as_str().unwrap_or_default();
                let bare = addr.split('/').next().unwrap_or_default().to_string();
                if bare.contains(':') {
                    p.ip6 = bare;
                } else if p.ip.is_empty() {
                    p.ip = bare;
                }
            }
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
