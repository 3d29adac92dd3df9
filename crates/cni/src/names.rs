//! Names Calico derives for a workload.

use sha1::{Digest, Sha1};

/// Who the workload is, from CNI_ARGS: a Kubernetes pod when K8S_POD_NAME
/// is given (namespace from K8S_POD_NAMESPACE, else `default`), otherwise a
/// plain CNI container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workload {
    pub orchestrator: &'static str,
    pub namespace: String,
    /// Pod name, or the container ID for plain CNI.
    pub name: String,
    pub endpoint: String,
}

/// `cali` + the first 11 hex digits of SHA-1(`<namespace>.<workload>`)
/// (15 characters).
pub fn host_veth(namespace: &str, workload: &str) -> String {
    let digest = Sha1::digest(format!("{namespace}.{workload}").as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("cali{}", &hex[..11])
}

impl Workload {
    pub fn from_args(
        args: &std::collections::BTreeMap<String, String>,
        container_id: &str,
        ifname: &str,
    ) -> Self {
        let namespace = args
            .get("K8S_POD_NAMESPACE")
            .filter(|n| !n.is_empty())
            .cloned()
            .unwrap_or_else(|| "default".into());
        // Runtimes such as podman pass container names that are not valid
        // Kubernetes names (`bold_moore`); those workloads are plain CNI ones.
        let pod = args.get("K8S_POD_NAME").filter(|n| {
            calico_api::dns_subdomain(n).is_ok() && calico_api::dns_label(&namespace).is_ok()
        });
        match pod {
            Some(pod) => Workload {
                orchestrator: "k8s",
                namespace,
                name: pod.clone(),
                endpoint: ifname.to_string(),
            },
            None => Workload {
                orchestrator: "cni",
                namespace: "default".into(),
                name: container_id.to_string(),
                endpoint: ifname.to_string(),
            },
        }
    }

    /// The host-side veth name (see [`host_veth`]).
    pub fn host_veth(&self) -> String {
        host_veth(&self.namespace, &self.name)
    }

    /// `<node>-<orchestrator>-<workload>-<endpoint>`, dashes in each part doubled.
    pub fn endpoint_name(&self, node: &str) -> String {
        [node, self.orchestrator, &self.name, &self.endpoint]
            .iter()
            .map(|p| p.replace('-', "--"))
            .collect::<Vec<_>>()
            .join("-")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn calico_names() {
        let args = BTreeMap::from([
            ("K8S_POD_NAME".to_string(), "web-7d9c8b".to_string()),
            ("K8S_POD_NAMESPACE".to_string(), "shop".to_string()),
        ]);
        let w = Workload::from_args(&args, "abc", "eth0");
        assert_eq!(w.endpoint_name("node-1"), "node--1-k8s-web--7d9c8b-eth0");
        // SHA-1("shop.web-7d9c8b") = 3c6e8d0c16b...
        let v = w.host_veth();
        assert_eq!(v.len(), 15);
        assert!(v.starts_with("cali"));
        let digest = Sha1::digest(b"shop.web-7d9c8b");
        assert_eq!(
            &v[4..],
            &format!(
                "{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
                digest[0], digest[1], digest[2], digest[3], digest[4], digest[5]
            )[..11]
        );
        let plain = Workload::from_args(&BTreeMap::new(), "c0ffee", "eth1");
        assert_eq!(
            (plain.orchestrator, plain.endpoint_name("n")),
            ("cni", "n-cni-c0ffee-eth1".to_string())
        );
    }
}
