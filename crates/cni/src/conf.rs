//! The network configuration on stdin, shaped like Calico's CNI config.
//!
//! ```json
//! { "cniVersion": "1.0.0", "name": "k8s-pod-network", "type": "calico",
//!   "mtu": 1450, "nodename": "node-1",
//!   "datastore_type": "etcdv3", "etcd_endpoints": "http://10.0.0.1:2379",
//!   "ipam": { "type": "calico-ipam", "assign_ipv4": "true", "assign_ipv6": "false",
//!             "ipv4_pools": ["default-ipv4-ippool"] },
//!   "args": { "cni": { "labels": [{"key": "app", "value": "web"}],
//!                      "ports": [{"name": "http", "protocol": "TCP", "port": 80}] } } }
//! ```
//! `datastore_path` selects the embedded datastore file. Labels follow the
//! CNI conventions (`args.cni.labels`); named ports are passed the same way
//! (`args.cni.ports`).

use crate::error::{code, CniError};
use calico_backend::DatastoreConfig;
use serde::Deserialize;
use serde_json::Value;
use std::path::PathBuf;

/// `"true"`, `"false"`, `true` or `false`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Flag(pub Option<bool>);

impl<'de> Deserialize<'de> for Flag {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::Bool(b) => Ok(Flag(Some(b))),
            Value::String(s) if s == "true" => Ok(Flag(Some(true))),
            Value::String(s) if s == "false" => Ok(Flag(Some(false))),
            Value::Null => Ok(Flag(None)),
            other => Err(serde::de::Error::custom(format!(
                "expected true or false, got {other}"
            ))),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct IpamConf {
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default)]
    pub assign_ipv4: Flag,
    #[serde(default)]
    pub assign_ipv6: Flag,
    #[serde(default)]
    pub ipv4_pools: Vec<String>,
    #[serde(default)]
    pub ipv6_pools: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Label {
    pub key: String,
    pub value: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct NamedPort {
    pub name: String,
    #[serde(default = "tcp")]
    pub protocol: String,
    pub port: u16,
}

fn tcp() -> String {
    "TCP".into()
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct CniArgs {
    #[serde(default)]
    pub labels: Vec<Label>,
    #[serde(default)]
    pub ports: Vec<NamedPort>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Args {
    #[serde(default)]
    pub cni: CniArgs,
}

#[derive(Debug, Clone, Deserialize)]
pub struct NetConf {
    #[serde(rename = "cniVersion", default)]
    pub cni_version: String,
    #[serde(default)]
    pub name: String,
    #[serde(rename = "type", default)]
    pub kind: String,
    /// The workloads' MTU; absent or 0: what the node agent detected
    /// (`mtu_file`), else 1500.
    #[serde(default)]
    pub mtu: Option<u32>,
    /// Where the node agent writes the MTU it detected (a calico-rs
    /// addition; Calico's fixed path by default).
    #[serde(default)]
    pub mtu_file: Option<PathBuf>,
    #[serde(default)]
    pub nodename: Option<String>,
    #[serde(default)]
    pub datastore_type: Option<String>,
    #[serde(default)]
    pub etcd_endpoints: Option<String>,
    #[serde(default)]
    pub etcd_ca_cert_file: Option<String>,
    #[serde(default)]
    pub etcd_cert_file: Option<String>,
    #[serde(default)]
    pub etcd_key_file: Option<String>,
    #[serde(default)]
    pub datastore_path: Option<String>,
    #[serde(default)]
    pub ipam: Option<IpamConf>,
    #[serde(default)]
    pub args: Args,
    #[serde(rename = "prevResult", default)]
    pub prev_result: Option<Value>,
    #[serde(rename = "cni.dev/valid-attachments", default)]
    pub valid_attachments: Option<Vec<Attachment>>,
    /// The whole document, for delegating to another IPAM plugin.
    #[serde(skip)]
    pub raw: Value,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Attachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    #[serde(default)]
    pub ifname: String,
}

pub const DEFAULT_MTU: u32 = 1500;
/// Where calico-node writes the MTU workloads should use.
pub const DEFAULT_MTU_FILE: &str = "/var/lib/calico/mtu";

impl NetConf {
    pub fn parse(stdin: &[u8]) -> Result<NetConf, CniError> {
        let raw: Value = serde_json::from_slice(stdin).map_err(|e| {
            CniError::new(
                code::DECODE_FAILURE,
                "cannot decode the network configuration",
                e.to_string(),
            )
        })?;
        let mut conf: NetConf = serde_json::from_value(raw.clone()).map_err(|e| {
            CniError::new(
                code::INVALID_CONFIG,
                "invalid network configuration",
                e.to_string(),
            )
        })?;
        conf.raw = raw;
        if conf.name.is_empty() {
            return Err(CniError::new(
                code::INVALID_CONFIG,
                "invalid network configuration",
                "\"name\" is required",
            ));
        }
        if conf
            .mtu
            .is_some_and(|m| m != 0 && !(68..=65535).contains(&m))
        {
            return Err(CniError::new(
                code::INVALID_CONFIG,
                "invalid network configuration",
                "\"mtu\" must be 68-65535 (or 0: as the node agent detected)",
            ));
        }
        Ok(conf)
    }

    /// The MTU to give the workload: configured, else the node agent's
    /// (from its MTU file), else 1500.
    pub fn mtu(&self) -> u32 {
        if let Some(m) = self.mtu.filter(|m| *m != 0) {
            return m;
        }
        let path = self
            .mtu_file
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_MTU_FILE));
        std::fs::read_to_string(path)
            .ok()
            .and_then(|t| t.trim().parse::<u32>().ok())
            .filter(|m| (68..=65535).contains(m))
            .unwrap_or(DEFAULT_MTU)
    }

    /// The node this host is: config, then NODENAME, then /var/lib/calico/nodename, then the hostname.
    pub fn node(&self, env: &dyn Fn(&str) -> Option<String>) -> String {
        self.nodename
            .clone()
            .filter(|n| !n.is_empty())
            .or_else(|| env("NODENAME").filter(|n| !n.is_empty()))
            .or_else(|| {
                std::fs::read_to_string("/var/lib/calico/nodename")
                    .ok()
                    .map(|s| s.trim().to_string())
                    .filter(|n| !n.is_empty())
            })
            .or_else(|| {
                std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .ok()
                    .map(|s| s.trim().to_string())
            })
            .unwrap_or_else(|| "localhost".into())
    }

    /// The datastore: settings in the config override the environment.
    pub fn datastore(
        &self,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<DatastoreConfig, CniError> {
        let lookup = |name: &str| -> Option<String> {
            let from_conf = match name {
                "DATASTORE_TYPE" => self.datastore_type.clone(),
                "ETCD_ENDPOINTS" => self.etcd_endpoints.clone(),
                "ETCD_CA_CERT_FILE" => self.etcd_ca_cert_file.clone(),
                "ETCD_CERT_FILE" => self.etcd_cert_file.clone(),
                "ETCD_KEY_FILE" => self.etcd_key_file.clone(),
                "CALICO_DATASTORE_PATH" => self.datastore_path.clone(),
                _ => None,
            };
            from_conf.filter(|v| !v.is_empty()).or_else(|| env(name))
        };
        DatastoreConfig::resolve(None, &lookup).map_err(|e| {
            CniError::new(
                code::INVALID_CONFIG,
                "invalid datastore settings",
                e.to_string(),
            )
        })
    }

    pub fn ipam(&self) -> IpamConf {
        self.ipam.clone().unwrap_or(IpamConf {
            kind: "calico-ipam".into(),
            ..Default::default()
        })
    }

    pub fn embedded_path(&self) -> Option<PathBuf> {
        self.datastore_path.as_ref().map(PathBuf::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(json: &str) -> NetConf {
        NetConf::parse(json.as_bytes()).expect("conf")
    }

    #[test]
    fn mtu_is_configured_else_detected_else_1500() {
        let dir = tempfile::tempdir().expect("tmp");
        let file = dir.path().join("mtu");
        let path = file.display().to_string();
        let with = |mtu: &str| {
            conf(&format!(
                r#"{{"name": "n", "type": "calico", {mtu} "mtu_file": "{path}"}}"#
            ))
        };
        assert_eq!(with(r#""mtu": 1400,"#).mtu(), 1400);
        assert_eq!(with("").mtu(), DEFAULT_MTU, "no file yet");
        std::fs::write(&file, "1450\n").expect("write");
        assert_eq!(with("").mtu(), 1450);
        assert_eq!(with(r#""mtu": 0,"#).mtu(), 1450);
        assert_eq!(with(r#""mtu": 9000,"#).mtu(), 9000);
        std::fs::write(&file, "garbage").expect("write");
        assert_eq!(with("").mtu(), DEFAULT_MTU);
        let bad = NetConf::parse(br#"{"name": "n", "mtu": 20}"#).expect_err("too small");
        assert!(bad.to_string().contains("mtu"), "{bad}");
    }
}
