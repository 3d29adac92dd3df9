//! CNI results, written in the version the configuration asked for.

use calico_net::IpNet;
use serde_json::{json, Value};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub mac: String,
    pub sandbox: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CniResult {
    pub interfaces: Vec<Interface>,
    /// Addresses with the index of their interface.
    pub ips: Vec<(IpNet, Option<usize>)>,
    pub routes: Vec<(IpNet, Option<std::net::IpAddr>)>,
}

impl CniResult {
    /// The JSON for `version` (0.3.x and 0.4.0 carry `version` on each IP).
    pub fn to_json(&self, version: &str) -> Value {
        let old = version.starts_with("0.");
        let ips: Vec<Value> = self
            .ips
            .iter()
            .map(|(net, iface)| {
                let mut ip = json!({ "address": net.to_string() });
                if let Some(i) = iface {
                    ip["interface"] = json!(i);
                }
                if old {
                    ip["version"] = json!(if net.addr().is_ipv4() { "4" } else { "6" });
                }
                ip
            })
            .collect();
        let interfaces: Vec<Value> = self
            .interfaces
            .iter()
            .map(|i| {
                let mut v = json!({ "name": i.name, "mac": i.mac });
                if let Some(s) = &i.sandbox {
                    v["sandbox"] = json!(s);
                }
                v
            })
            .collect();
        let routes: Vec<Value> = self
            .routes
            .iter()
            .map(|(dst, gw)| match gw {
                Some(gw) => json!({ "dst": dst.to_string(), "gw": gw.to_string() }),
                None => json!({ "dst": dst.to_string() }),
            })
            .collect();
        let mut out = json!({ "cniVersion": version, "ips": ips, "dns": {} });
        if !interfaces.is_empty() {
            out["interfaces"] = json!(interfaces);
        }
        if !routes.is_empty() {
            out["routes"] = json!(routes);
        }
        out
    }

    /// Addresses from a previous result (any version).
    pub fn ips_of(prev: &Value) -> Vec<IpNet> {
        prev.get("ips")
            .and_then(Value::as_array)
            .map(|ips| {
                ips.iter()
                    .filter_map(|ip| ip.get("address")?.as_str()?.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    }
}
