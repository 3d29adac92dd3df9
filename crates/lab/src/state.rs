//! What a lab is made of, kept as JSON in its state directory so every
//! command (and `down`, even after a crash) knows what exists.

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Node {
    pub name: String,
    pub netns: String,
    /// Address on the fabric, without prefix length.
    pub addr: String,
    /// IPv6 address on the fabric (dual-stack labs), without prefix length.
    #[serde(default)]
    pub addr6: String,
    /// calico-node processes (felix, bgp).
    pub pids: Vec<u32>,
    /// The node's own server (TCP and UDP 80, answering with the address
    /// it saw), for probes to the host.
    #[serde(default)]
    pub server_pid: Option<u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Port {
    pub name: String,
    pub port: u16,
    /// `TCP` or `UDP`.
    pub protocol: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Pod {
    pub namespace: String,
    pub name: String,
    pub node: String,
    pub netns: String,
    pub container: String,
    pub ip: String,
    /// The pod's IPv6 address (dual-stack labs).
    #[serde(default)]
    pub ip6: String,
    pub ports: Vec<Port>,
    /// The echo server inside the pod.
    pub server_pid: Option<u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Lab {
    pub name: String,
    pub datastore: String,
    /// Environment the agents and calicoctl use to reach the datastore.
    pub datastore_env: BTreeMap<String, String>,
    pub fabric: String,
    pub nodes: Vec<Node>,
    /// Namespace name → its labels.
    pub namespaces: BTreeMap<String, BTreeMap<String, String>>,
    /// `ns/name` → pod.
    pub pods: BTreeMap<String, Pod>,
    /// Other processes (the etcd proxy).
    pub extra_pids: Vec<u32>,
    /// How the agents and the CNI plugin inside the nodes reach the
    /// datastore (differs from `datastore_env` for etcd, which tools on
    /// the host reach through the lab's proxy).
    #[serde(default)]
    pub node_datastore_env: BTreeMap<String, String>,
    /// `--encap`: none, vxlan or vxlan-crosssubnet.
    #[serde(default)]
    pub encap: String,
    /// The etcd server (`--datastore etcd`).
    #[serde(default)]
    pub etcd: Option<Etcd>,
    /// The flow service the nodes stream their flow records to.
    #[serde(default)]
    pub flows: Option<FlowService>,
    /// Environment for every node's felix (flow records).
    #[serde(default)]
    pub felix_env: BTreeMap<String, String>,
    /// The external host: outside every pool, not a node.
    #[serde(default)]
    pub external: Option<External>,
    /// `--ip-family dual`: IPv6 beside IPv4 (nodes, pool, pods, BGP).
    #[serde(default)]
    pub ipv6: bool,
}

/// "The internet" for the lab: a host on the fabric that is neither a
/// node nor in a pool, serving TCP and UDP 80 and answering with the
/// address it saw each connection come from.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct External {
    pub netns: String,
    pub addr: String,
    #[serde(default)]
    pub addr6: String,
    pub pid: u32,
}

/// Where a probe starts or ends: a pod, or the external host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub netns: String,
    pub ip: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FlowService {
    pub netns: String,
    pub pid: u32,
    /// Its HTTP API and web UI, through the lab's proxy on this host.
    pub url: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Etcd {
    pub netns: String,
    pub pid: u32,
    pub data_dir: String,
}

impl Lab {
    pub fn path(dir: &Path) -> PathBuf {
        dir.join("lab.json")
    }

    pub fn load(dir: &Path) -> Result<Lab> {
        let p = Self::path(dir);
        let text = std::fs::read_to_string(&p).with_context(|| {
            format!(
                "no lab at {} (start one with `calico-lab up`)",
                dir.display()
            )
        })?;
        serde_json::from_str(&text).with_context(|| format!("reading {}", p.display()))
    }

    /// Writes the state (to a temp file renamed into place: never half-written).
    pub fn save(&self, dir: &Path) -> Result<()> {
        let p = Self::path(dir);
        let tmp = p.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(self)?)
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &p).with_context(|| format!("writing {}", p.display()))
    }

    pub fn node(&self, name: &str) -> Result<&Node> {
        self.nodes.iter().find(|n| n.name == name).with_context(|| {
            let names: Vec<&str> = self.nodes.iter().map(|n| n.name.as_str()).collect();
            format!("no node {name:?} (nodes: {})", names.join(", "))
        })
    }

    pub fn pod(&self, key: &str) -> Result<&Pod> {
        self.pods
            .get(key)
            .with_context(|| format!("no pod {key:?} (pods are named NAMESPACE/NAME)"))
    }

    /// A pod (`NAMESPACE/NAME`), a node (`node-N`) or `external`; by
    /// its IPv6 address with `v6` (a dual-stack lab).
    pub fn endpoint_in(&self, key: &str, v6: bool) -> Result<Endpoint> {
        if v6 && !self.ipv6 {
            anyhow::bail!("this lab has no IPv6 (calico-lab up --ip-family dual)");
        }
        let pick = |v4: &String, v6addr: &String| if v6 { v6addr.clone() } else { v4.clone() };
        if let Some(n) = self.nodes.iter().find(|n| n.name == key) {
            return Ok(Endpoint {
                netns: n.netns.clone(),
                ip: pick(&n.addr, &n.addr6),
            });
        }
        if key == "external" {
            let e = self
                .external
                .as_ref()
                .context("this lab has no external host (made by an older calico-lab)")?;
            return Ok(Endpoint {
                netns: e.netns.clone(),
                ip: pick(&e.addr, &e.addr6),
            });
        }
        let p = self.pod(key).with_context(|| {
            format!("{key:?} is neither a pod (NAMESPACE/NAME), a node (node-N) nor `external`")
        })?;
        Ok(Endpoint {
            netns: p.netns.clone(),
            ip: pick(&p.ip, &p.ip6),
        })
    }
}
