//! `calico`: wires a workload into the host's routed network and records
//! its WorkloadEndpoint.
//!
//! ADD: addresses (calico-ipam in-process, or a delegated IPAM plugin) →
//! veth pair, addresses, routes, proxy ARP → WorkloadEndpoint. Each step
//! that fails undoes the ones before it. A retried ADD for the same
//! container reuses its addresses. DEL removes whatever is left and
//! succeeds when everything is already gone.

use crate::conf::NetConf;
use crate::env::{Command, Env};
use crate::error::{code, CniError};
use crate::ipam_plugin::{self, datastore_err};
use crate::names::Workload;
use crate::result::{CniResult, Interface};
use calico_api::{Cidr, EndpointPort, Kind, Object, ObjectMeta, Resource, WorkloadEndpointSpec};
use calico_client::{Client, ClientError};
use calico_ipam::Ipam;
use calico_kernel::workload::{GATEWAY_V4, GATEWAY_V6};
use calico_kernel::Workloads;
use calico_net::{IpNet, Protocol};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;

fn kernel_err(e: calico_kernel::workload::WiringError) -> CniError {
    let details = calico_datastore::Chain(&e).to_string();
    CniError::new(code::KERNEL, "cannot wire the workload", details)
}

/// Address management: Calico's in-process, or another plugin's.
enum Addresses<'a> {
    Calico(&'a Ipam),
    Delegate(String),
}

/// A plugin `type` as libcni accepts one: a plain file name, looked up
/// only in the CNI_PATH directories (a path, `..` or an empty name would
/// run some other file as root).
pub fn plugin_name(kind: &str) -> Result<&str, CniError> {
    if kind.is_empty() || kind == "." || kind == ".." || kind.contains('/') || kind.contains('\0') {
        return Err(CniError::new(
            code::INVALID_CONFIG,
            format!(
                "invalid plugin type {:?}: a plugin is named by its file name, found on CNI_PATH",
                calico_api::truncated(kind)
            ),
            "",
        ));
    }
    Ok(kind)
}

/// Runs a delegated IPAM plugin found on CNI_PATH.
fn delegate(
    kind: &str,
    env: &Env,
    conf: &NetConf,
    command: &str,
) -> Result<Option<Value>, CniError> {
    let kind = plugin_name(kind)?;
    let bin = env
        .path
        .iter()
        .map(|d| Path::new(d).join(kind))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            CniError::new(
                code::INVALID_CONFIG,
                format!("IPAM plugin {kind:?} not found on CNI_PATH"),
                env.path.join(":"),
            )
        })?;
    let mut child = std::process::Command::new(&bin)
        .env("CNI_COMMAND", command)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| {
            CniError::new(
                code::IO_FAILURE,
                format!("cannot run {}", bin.display()),
                e.to_string(),
            )
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        use std::io::Write;
        let _ = stdin.write_all(conf.raw.to_string().as_bytes());
    }
    let out = child
        .wait_with_output()
        .map_err(|e| CniError::new(code::IO_FAILURE, "IPAM plugin failed", e.to_string()))?;
    let parsed: Option<Value> = serde_json::from_slice(&out.stdout).ok();
    if !out.status.success() {
        let msg = parsed
            .as_ref()
            .and_then(|v| v.get("msg")?.as_str().map(String::from))
            .unwrap_or_else(|| "IPAM plugin failed".into());
        return Err(CniError::new(
            code::IPAM,
            format!("{kind}: {msg}"),
            String::from_utf8_lossy(&out.stdout).to_string(),
        ));
    }
    Ok(parsed)
}

impl Addresses<'_> {
    fn assign(&self, conf: &NetConf, env: &Env, node: &str) -> Result<Vec<IpNet>, CniError> {
        match self {
            Addresses::Calico(ipam) => ipam_plugin::assign(ipam, conf, env, node),
            Addresses::Delegate(kind) => {
                let result = delegate(kind, env, conf, "ADD")?.unwrap_or_default();
                let ips = CniResult::ips_of(&result);
                if ips.is_empty() {
                    return Err(CniError::new(
                        code::IPAM,
                        format!("{kind} returned no addresses"),
                        result.to_string(),
                    ));
                }
                Ok(ips.into_iter().map(|n| IpNet::from(n.addr())).collect())
            }
        }
    }

    fn release(&self, conf: &NetConf, env: &Env) -> Result<(), CniError> {
        match self {
            Addresses::Calico(ipam) => ipam_plugin::release(ipam, conf, &env.container_id),
            Addresses::Delegate(kind) => delegate(kind, env, conf, "DEL").map(|_| ()),
        }
    }
}

fn endpoint(
    conf: &NetConf,
    env: &Env,
    w: &Workload,
    node: &str,
    ips: &[IpNet],
    host_if: &str,
    mac: &str,
) -> Result<Resource, CniError> {
    let mut labels: BTreeMap<String, String> = conf
        .args
        .cni
        .labels
        .iter()
        .map(|l| (l.key.clone(), l.value.clone()))
        .collect();
    labels.insert("projectcalico.org/namespace".into(), w.namespace.clone());
    labels.insert(
        "projectcalico.org/orchestrator".into(),
        w.orchestrator.into(),
    );
    let mut profiles = vec![if w.orchestrator == "k8s" {
        format!("kns.{}", w.namespace)
    } else {
        conf.name.clone()
    }];
    let service_account = labels
        .get("projectcalico.org/serviceaccount")
        .cloned()
        .unwrap_or_default();
    if !service_account.is_empty() {
        profiles.push(format!("ksa.{}.{service_account}", w.namespace));
    }
    let mut ports = Vec::new();
    for p in &conf.args.cni.ports {
        let protocol = Protocol::parse(&p.protocol).map_err(|e| {
            CniError::new(
                code::INVALID_CONFIG,
                "invalid args.cni.ports",
                e.to_string(),
            )
        })?;
        ports.push(EndpointPort {
            name: p.name.clone(),
            protocol,
            port: p.port,
            host_port: None,
            host_ip: None,
        });
    }
    let spec = WorkloadEndpointSpec {
        orchestrator: w.orchestrator.into(),
        workload: if w.orchestrator == "k8s" {
            String::new()
        } else {
            w.name.clone()
        },
        node: node.into(),
        container_id: env.container_id.clone(),
        pod: if w.orchestrator == "k8s" {
            w.name.clone()
        } else {
            String::new()
        },
        endpoint: w.endpoint.clone(),
        service_account_name: service_account,
        ip_networks: ips
            .iter()
            .map(|n| Cidr::from(IpNet::from(n.addr())))
            .collect(),
        profiles,
        interface_name: host_if.into(),
        mac: Some(mac.parse().map_err(|e: calico_api::types::MacError| {
            CniError::new(code::KERNEL, "the container's MAC address", e.to_string())
        })?),
        ports,
        ..Default::default()
    };
    let meta = ObjectMeta {
        name: w.endpoint_name(node),
        namespace: Some(w.namespace.clone()),
        labels,
        ..Default::default()
    };
    let r = Resource::WorkloadEndpoint(Object::new(meta, spec));
    r.validate().map_err(|e| {
        CniError::new(
            code::INVALID_CONFIG,
            "the workload endpoint would be invalid",
            e.to_string(),
        )
    })?;
    Ok(r)
}

fn result(
    env: &Env,
    host_if: &str,
    host_mac: &str,
    container_mac: &str,
    ips: &[IpNet],
) -> CniResult {
    let mut routes = Vec::new();
    if ips.iter().any(|n| n.addr().is_ipv4()) {
        routes.push((
            IpNet::V4(calico_net::Ipv4Net::default()),
            Some(GATEWAY_V4.into()),
        ));
    }
    if ips.iter().any(|n| n.addr().is_ipv6()) {
        routes.push((
            IpNet::V6(calico_net::Ipv6Net::default()),
            Some(GATEWAY_V6.into()),
        ));
    }
    CniResult {
        interfaces: vec![
            Interface {
                name: host_if.into(),
                mac: host_mac.into(),
                sandbox: None,
            },
            Interface {
                name: env.ifname.clone(),
                mac: container_mac.into(),
                sandbox: Some(env.netns.clone()),
            },
        ],
        ips: ips
            .iter()
            .map(|n| {
                (
                    IpNet::new(n.addr(), n.max_prefix_len()).unwrap_or(*n),
                    Some(1),
                )
            })
            .collect(),
        routes,
    }
}

fn existing_endpoint(client: &Client, ns: &str, name: &str) -> Result<Option<Resource>, CniError> {
    match client.get(Kind::WorkloadEndpoint, Some(ns), name) {
        Ok(r) => Ok(Some(r)),
        Err(ClientError::NotFound(_)) => Ok(None),
        Err(e) => Err(datastore_err(e)),
    }
}

fn add(
    env: &Env,
    conf: &NetConf,
    client: &Client,
    addrs: &Addresses<'_>,
    node: &str,
    kernel: &OpenKernel<'_>,
) -> Result<Value, CniError> {
    let w = Workload::from_args(&env.args, &env.container_id, &env.ifname);
    let host_if = w.host_veth();
    let kernel = kernel().map_err(kernel_err)?;
    let netns = Path::new(&env.netns);

    // A retried ADD for the same container: same addresses, interfaces as they are.
    if let Some(Resource::WorkloadEndpoint(wep)) =
        existing_endpoint(client, &w.namespace, &w.endpoint_name(node))?
    {
        if wep.spec.container_id == env.container_id {
            if let (Some(host_mac), Some((cmac, _))) = (
                kernel.host_link(&host_if).map_err(kernel_err)?,
                kernel
                    .container_link(netns, &env.ifname)
                    .map_err(kernel_err)?,
            ) {
                let ips: Vec<IpNet> = wep.spec.ip_networks.iter().map(Cidr::net).collect();
                return Ok(result(env, &host_if, &host_mac, &cmac, &ips).to_json(&conf.cni_version));
            }
        }
    }

    let ips = addrs.assign(conf, env, node)?;
    let undo_ips = |err: CniError| -> CniError {
        let _ = addrs.release(conf, env);
        err
    };
    // Anything left by an interrupted attempt goes first.
    kernel
        .unwire(&host_if)
        .map_err(kernel_err)
        .map_err(undo_ips)?;
    let link = match kernel.wire(netns, &host_if, &env.ifname, conf.mtu(), &ips) {
        Ok(link) => link,
        Err(e) => {
            let _ = kernel.unwire(&host_if);
            return Err(undo_ips(kernel_err(e)));
        }
    };
    let undo_all = |err: CniError| -> CniError {
        let _ = kernel.unwire(&host_if);
        undo_ips(err)
    };
    let wep =
        endpoint(conf, env, &w, node, &ips, &host_if, &link.container_mac).map_err(undo_all)?;
    client.apply(wep).map_err(datastore_err).map_err(undo_all)?;
    Ok(result(env, &host_if, &link.host_mac, &link.container_mac, &ips).to_json(&conf.cni_version))
}

fn del(
    env: &Env,
    conf: &NetConf,
    client: &Client,
    addrs: &Addresses<'_>,
    node: &str,
    kernel: &OpenKernel<'_>,
) -> Result<(), CniError> {
    let w = Workload::from_args(&env.args, &env.container_id, &env.ifname);
    let kernel = kernel().map_err(kernel_err)?;
    // Only this container's endpoint: a newer sandbox of the same pod keeps its own.
    let wep = existing_endpoint(client, &w.namespace, &w.endpoint_name(node))?;
    let ours = match &wep {
        Some(Resource::WorkloadEndpoint(e)) => {
            e.spec.container_id == env.container_id || e.spec.container_id.is_empty()
        }
        _ => false,
    };
    if ours || wep.is_none() {
        kernel.unwire(&w.host_veth()).map_err(kernel_err)?;
    }
    addrs.release(conf, env)?;
    if ours {
        match client.delete(
            Kind::WorkloadEndpoint,
            Some(&w.namespace),
            &w.endpoint_name(node),
            None,
        ) {
            Ok(_) | Err(ClientError::NotFound(_)) => {}
            Err(e) => return Err(datastore_err(e)),
        }
    }
    Ok(())
}

fn check(
    env: &Env,
    conf: &NetConf,
    client: &Client,
    node: &str,
    kernel: &OpenKernel<'_>,
) -> Result<(), CniError> {
    let fail = |what: String| {
        CniError::new(
            code::CHECK_FAILED,
            "the workload is not wired as recorded",
            what,
        )
    };
    let prev = conf
        .prev_result
        .as_ref()
        .ok_or_else(|| CniError::new(code::INVALID_CONFIG, "CHECK needs prevResult", ""))?;
    let w = Workload::from_args(&env.args, &env.container_id, &env.ifname);
    let kernel = kernel().map_err(kernel_err)?;
    let Some(Resource::WorkloadEndpoint(wep)) =
        existing_endpoint(client, &w.namespace, &w.endpoint_name(node))?
    else {
        return Err(fail(format!(
            "no WorkloadEndpoint {}",
            w.endpoint_name(node)
        )));
    };
    if wep.spec.container_id != env.container_id {
        return Err(fail(format!(
            "the WorkloadEndpoint belongs to container {}",
            wep.spec.container_id
        )));
    }
    if kernel
        .host_link(&w.host_veth())
        .map_err(kernel_err)?
        .is_none()
    {
        return Err(fail(format!("host interface {} is missing", w.host_veth())));
    }
    let Some((_, have)) = kernel
        .container_link(Path::new(&env.netns), &env.ifname)
        .map_err(kernel_err)?
    else {
        return Err(fail(format!("{} is missing in {}", env.ifname, env.netns)));
    };
    for want in CniResult::ips_of(prev) {
        if !have.contains(&want.addr()) {
            return Err(fail(format!("{} lacks {}", env.ifname, want.addr())));
        }
    }
    Ok(())
}

/// GC: removes this node's endpoints (and their veths) and addresses for
/// containers that are not valid attachments. Without
/// `cni.dev/valid-attachments` nothing is removed. A link is deleted only
/// when it is the veth this plugin made for that workload (its derived
/// `cali…` name): a stale record naming any other interface never takes a
/// host interface with it.
fn gc(
    env: &Env,
    conf: &NetConf,
    client: &Client,
    addrs: &Addresses<'_>,
    node: &str,
    kernel: &OpenKernel<'_>,
) -> Result<(), CniError> {
    let Some(attachments) = &conf.valid_attachments else {
        return Ok(());
    };
    let valid: std::collections::BTreeSet<(&str, &str)> = attachments
        .iter()
        .map(|a| (a.container_id.as_str(), a.ifname.as_str()))
        .collect();
    let kernel = kernel().map_err(kernel_err)?;
    for r in client
        .list(Kind::WorkloadEndpoint, None)
        .map_err(datastore_err)?
        .items
    {
        let Resource::WorkloadEndpoint(e) = &r else {
            continue;
        };
        if e.spec.node != node
            || valid.contains(&(e.spec.container_id.as_str(), e.spec.endpoint.as_str()))
        {
            continue;
        }
        if e.spec.interface_name == owned_veth(e) {
            kernel.unwire(&e.spec.interface_name).map_err(kernel_err)?;
        }
        match client.delete(
            Kind::WorkloadEndpoint,
            e.metadata.namespace.as_deref(),
            &e.metadata.name,
            None,
        ) {
            Ok(_) | Err(ClientError::NotFound(_)) => {}
            Err(err) => return Err(datastore_err(err)),
        }
    }
    match addrs {
        Addresses::Calico(ipam) => ipam_plugin::gc(ipam, conf, node).map(|_| ()),
        // The delegated plugin gets the same GC and decides for itself.
        Addresses::Delegate(kind) => delegate(kind, env, conf, "GC").map(|_| ()),
    }
}

/// The host-side veth this plugin names for an endpoint's workload (a
/// Kubernetes pod by namespace and name, else the container by its ID).
fn owned_veth(e: &calico_api::Object<WorkloadEndpointSpec>) -> String {
    if e.spec.orchestrator == "k8s" {
        crate::names::host_veth(
            e.metadata.namespace.as_deref().unwrap_or("default"),
            &e.spec.pod,
        )
    } else {
        crate::names::host_veth("default", &e.spec.container_id)
    }
}

/// Opens the kernel's workload side when a command needs it.
pub type OpenKernel<'a> =
    dyn Fn() -> Result<Box<dyn Workloads>, calico_kernel::workload::WiringError> + 'a;

pub(crate) fn run(
    env: &Env,
    conf: &NetConf,
    get: &dyn Fn(&str) -> Option<String>,
    kernel: &OpenKernel<'_>,
) -> Result<Option<Value>, CniError> {
    let (client, ipam) = ipam_plugin::open(conf, get)?;
    let node = conf.node(get);
    let kind = conf.ipam().kind;
    let addrs = if kind.is_empty() || kind == "calico-ipam" {
        Addresses::Calico(&ipam)
    } else {
        Addresses::Delegate(kind)
    };
    match env.command {
        Command::Add => add(env, conf, &client, &addrs, &node, kernel).map(Some),
        Command::Del => del(env, conf, &client, &addrs, &node, kernel).map(|()| None),
        Command::Check => check(env, conf, &client, &node, kernel).map(|()| None),
        Command::Status => ipam_plugin::status(&client).map(|()| None),
        Command::Gc => gc(env, conf, &client, &addrs, &node, kernel).map(|()| None),
        Command::Version => Ok(None),
    }
}
