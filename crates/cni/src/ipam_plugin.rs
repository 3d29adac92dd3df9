//! `calico-ipam`: addresses from Calico's block IPAM, one handle per
//! attachment (`<network>.<container id>`). Also used in-process by `calico`.

use crate::conf::NetConf;
use crate::env::{Command, Env};
use crate::error::{code, CniError};
use crate::names::Workload;
use crate::result::CniResult;
use calico_backend::open_store;
use calico_client::Client;
use calico_ipam::{AutoAssign, Ipam};
use calico_net::IpNet;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// The error with its causes, for a CNI error's details.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    calico_datastore::Chain(e).to_string()
}

pub(crate) fn datastore_err(e: impl std::error::Error + 'static) -> CniError {
    CniError::new(code::DATASTORE, "datastore error", chain(&e))
}

fn ipam_err(e: calico_ipam::IpamError) -> CniError {
    match e {
        calico_ipam::IpamError::Store(s) => datastore_err(s),
        other => CniError::new(code::IPAM, "address management failed", chain(&other)),
    }
}

/// Client and IPAM for the configured datastore.
pub(crate) fn open(
    conf: &NetConf,
    get: &dyn Fn(&str) -> Option<String>,
) -> Result<(Client, Ipam), CniError> {
    let cfg = conf.datastore(get)?;
    let store = open_store(&cfg).map_err(|e| {
        CniError::new(
            code::TRY_AGAIN_LATER,
            format!("cannot reach the {}", cfg.describe()),
            chain(&e),
        )
    })?;
    let clock = Arc::new(calico_client::SystemClock);
    Ok((
        Client::new(Arc::clone(&store), clock.clone()),
        Ipam::new(store, clock),
    ))
}

pub(crate) fn handle(conf: &NetConf, container_id: &str) -> String {
    format!("{}.{}", conf.name, container_id)
}

/// Addresses for this attachment: the ones it already holds (a retried ADD), or new ones.
pub(crate) fn assign(
    ipam: &Ipam,
    conf: &NetConf,
    env: &Env,
    node: &str,
) -> Result<Vec<IpNet>, CniError> {
    let handle = handle(conf, &env.container_id);
    let held = ipam.ips_by_handle(&handle).map_err(ipam_err)?;
    if !held.is_empty() {
        return Ok(held.into_iter().map(IpNet::from).collect());
    }
    let ic = conf.ipam();
    let w = Workload::from_args(&env.args, &env.container_id, &env.ifname);
    let mut attrs = BTreeMap::from([
        ("node".to_string(), node.to_string()),
        (
            "timestamp".to_string(),
            calico_client::Clock::now_rfc3339(&calico_client::SystemClock),
        ),
    ]);
    if w.orchestrator == "k8s" {
        attrs.insert("namespace".into(), w.namespace.clone());
        attrs.insert("pod".into(), w.name.clone());
    }
    let req = AutoAssign {
        handle,
        node: node.to_string(),
        num_v4: usize::from(ic.assign_ipv4.0.unwrap_or(true)),
        num_v6: usize::from(ic.assign_ipv6.0.unwrap_or(false)),
        attrs,
        pools_v4: ic.ipv4_pools.clone(),
        pools_v6: ic.ipv6_pools.clone(),
        tunnel: false,
    };
    if req.num_v4 + req.num_v6 == 0 {
        return Err(CniError::new(
            code::INVALID_CONFIG,
            "invalid IPAM configuration",
            "assign_ipv4 and assign_ipv6 are both false",
        ));
    }
    let got = ipam.auto_assign(&req).map_err(ipam_err)?;
    Ok(got.v4.into_iter().chain(got.v6).collect())
}

pub(crate) fn release(ipam: &Ipam, conf: &NetConf, container_id: &str) -> Result<(), CniError> {
    ipam.release_handle(&handle(conf, container_id))
        .map(|_| ())
        .map_err(ipam_err)
}

/// STATUS: the datastore answers and some enabled pool exists.
pub(crate) fn status(client: &Client) -> Result<(), CniError> {
    let pools = client.list(calico_api::Kind::IPPool, None).map_err(|e| {
        CniError::new(
            code::NOT_AVAILABLE,
            "the datastore is not available",
            chain(&e),
        )
    })?;
    let enabled = pools
        .items
        .iter()
        .any(|r| matches!(r, calico_api::Resource::IPPool(p) if !p.spec.disabled));
    if !enabled {
        return Err(CniError::new(
            code::NOT_AVAILABLE,
            "no enabled IP pool exists",
            "create an IPPool",
        ));
    }
    Ok(())
}

/// GC: releases this network's handles on `node` whose container is not a
/// valid attachment. Without `cni.dev/valid-attachments` nothing is
/// released (a runtime that sends none has not said what is valid), and a
/// handle any of whose addresses belongs to another node is never touched.
pub(crate) fn gc(ipam: &Ipam, conf: &NetConf, node: &str) -> Result<Vec<String>, CniError> {
    let Some(attachments) = &conf.valid_attachments else {
        return Ok(Vec::new());
    };
    let valid: BTreeSet<&str> = attachments
        .iter()
        .map(|a| a.container_id.as_str())
        .collect();
    let prefix = format!("{}{}.", calico_ipam::model::HANDLE_PREFIX, conf.name);
    let handles = ipam.store().list(&prefix).map_err(datastore_err)?;
    let mut released = Vec::new();
    for kv in handles.items {
        let container = kv.key.trim_start_matches(&prefix).to_string();
        if valid.contains(container.as_str()) {
            continue;
        }
        let nodes = ipam
            .handle_nodes(&handle(conf, &container))
            .map_err(ipam_err)?;
        if nodes.len() == 1 && nodes.contains(node) {
            release(ipam, conf, &container)?;
            released.push(container);
        }
    }
    Ok(released)
}

pub(crate) fn run(
    env: &Env,
    conf: &NetConf,
    get: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<Value>, CniError> {
    let (client, ipam) = open(conf, get)?;
    match env.command {
        Command::Add => {
            let node = conf.node(get);
            let ips = assign(&ipam, conf, env, &node)?;
            let result = CniResult {
                ips: ips.into_iter().map(|n| (n, None)).collect(),
                ..Default::default()
            };
            Ok(Some(result.to_json(&conf.cni_version)))
        }
        Command::Del => release(&ipam, conf, &env.container_id).map(|()| None),
        Command::Check => {
            let want: BTreeSet<std::net::IpAddr> = conf
                .prev_result
                .as_ref()
                .map(CniResult::ips_of)
                .unwrap_or_default()
                .iter()
                .map(IpNet::addr)
                .collect();
            let held: BTreeSet<std::net::IpAddr> = ipam
                .ips_by_handle(&handle(conf, &env.container_id))
                .map_err(ipam_err)?
                .into_iter()
                .collect();
            if want != held {
                return Err(CniError::new(
                    code::CHECK_FAILED,
                    "addresses differ from the previous result",
                    format!("expected {want:?}, IPAM holds {held:?}"),
                ));
            }
            Ok(None)
        }
        Command::Status => status(&client).map(|()| None),
        Command::Gc => gc(&ipam, conf, &conf.node(get)).map(|_| None),
        Command::Version => Ok(None),
    }
}
