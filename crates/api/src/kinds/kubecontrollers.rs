//! KubeControllersConfiguration: the settings of Calico's controllers.
//! calico-rs runs one of them, the node controller's automatic host
//! endpoints (`calico-node controllers`); the other fields are accepted
//! with Calico's spellings and checked, and change nothing here.

use crate::kinds::node::{check_duration, LOG_LEVELS};
use crate::validate::Errors;
use serde::{Deserialize, Serialize};

const ENABLED: &[&str] = &["Enabled", "Disabled"];

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KubeControllersConfigurationSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_severity_screen: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_checks: Option<String>,
    #[serde(
        default,
        rename = "etcdV3CompactionPeriod",
        skip_serializing_if = "Option::is_none"
    )]
    pub etcd_v3_compaction_period: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus_metrics_port: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub debug_profile_port: Option<u32>,
    #[serde(default)]
    pub controllers: Controllers,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Controllers {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<NodeControllerConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<ReconcilerConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_endpoint: Option<ReconcilerConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account: Option<ReconcilerConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<ReconcilerConfig>,
    #[serde(
        default,
        rename = "loadbalancer",
        skip_serializing_if = "Option::is_none"
    )]
    pub load_balancer: Option<LoadBalancerConfig>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReconcilerConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reconciler_period: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LoadBalancerConfig {
    #[serde(default, rename = "assignIPs", skip_serializing_if = "Option::is_none")]
    pub assign_ips: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeControllerConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reconciler_period: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_labels: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leak_grace_period: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_endpoint: Option<AutoHostEndpointConfig>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AutoHostEndpointConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_create: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create_default_host_endpoint: Option<String>,
    /// Kept only to refuse it with a reason (not supported).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub templates: Vec<serde_json::Value>,
}

impl KubeControllersConfigurationSpec {
    /// Whether the node controller keeps a `*` host endpoint per node
    /// (`controllers.node.hostEndpoint.autoCreate: Enabled`, and
    /// `createDefaultHostEndpoint` not Disabled).
    pub fn auto_host_endpoints(&self) -> bool {
        self.controllers
            .node
            .as_ref()
            .and_then(|n| n.host_endpoint.as_ref())
            .is_some_and(|h| {
                h.auto_create.as_deref() == Some("Enabled")
                    && h.create_default_host_endpoint.as_deref() != Some("Disabled")
            })
    }

    /// The node controller's reconciler period (Calico's default 5m).
    pub fn node_reconciler_period(&self) -> std::time::Duration {
        self.controllers
            .node
            .as_ref()
            .and_then(|n| n.reconciler_period.as_deref())
            .and_then(|t| t.parse::<crate::types::GoDuration>().ok())
            .map_or(std::time::Duration::from_secs(300), |d| d.value())
    }

    pub(crate) fn check(&self, e: &mut Errors) {
        if let Some(l) = &self.log_severity_screen {
            e.one_of("spec.logSeverityScreen", l, LOG_LEVELS);
        }
        if let Some(h) = &self.health_checks {
            e.one_of("spec.healthChecks", h, ENABLED);
        }
        if let Some(d) = &self.etcd_v3_compaction_period {
            check_duration(e, "spec.etcdV3CompactionPeriod", d);
        }
        for (path, port) in [
            ("spec.prometheusMetricsPort", self.prometheus_metrics_port),
            ("spec.debugProfilePort", self.debug_profile_port),
        ] {
            if port.is_some_and(|p| p > 65535) {
                e.add(path, "must be 0-65535");
            }
        }
        let c = &self.controllers;
        for (name, r) in [
            ("policy", &c.policy),
            ("workloadEndpoint", &c.workload_endpoint),
            ("serviceAccount", &c.service_account),
            ("namespace", &c.namespace),
        ] {
            if let Some(p) = r.as_ref().and_then(|r| r.reconciler_period.as_deref()) {
                check_duration(e, &format!("spec.controllers.{name}.reconcilerPeriod"), p);
            }
        }
        if let Some(a) = c
            .load_balancer
            .as_ref()
            .and_then(|l| l.assign_ips.as_deref())
        {
            e.one_of(
                "spec.controllers.loadbalancer.assignIPs",
                a,
                &["AllServices", "RequestedServicesOnly"],
            );
        }
        let Some(n) = &c.node else { return };
        for (field, v) in [
            ("reconcilerPeriod", &n.reconciler_period),
            ("leakGracePeriod", &n.leak_grace_period),
        ] {
            if let Some(d) = v {
                check_duration(e, &format!("spec.controllers.node.{field}"), d);
            }
        }
        if let Some(s) = &n.sync_labels {
            e.one_of("spec.controllers.node.syncLabels", s, ENABLED);
        }
        let Some(h) = &n.host_endpoint else { return };
        for (field, v) in [
            ("autoCreate", &h.auto_create),
            ("createDefaultHostEndpoint", &h.create_default_host_endpoint),
        ] {
            if let Some(v) = v {
                e.one_of(
                    &format!("spec.controllers.node.hostEndpoint.{field}"),
                    v,
                    ENABLED,
                );
            }
        }
        if !h.templates.is_empty() {
            e.add(
                "spec.controllers.node.hostEndpoint.templates",
                "host endpoint templates are not supported (only the default `*` host endpoint per node)",
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::decode_manifest;

    fn problems(yaml: &str) -> String {
        match decode_manifest(yaml) {
            Ok(_) => String::new(),
            Err(e) => format!("{e:?}"),
        }
    }

    #[test]
    fn only_what_is_enforced_or_inert_is_accepted() {
        let kcc = |spec: &str| {
            format!("apiVersion: projectcalico.org/v3\nkind: KubeControllersConfiguration\nmetadata: {{name: default}}\nspec: {spec}\n")
        };
        assert_eq!(
            problems(&kcc(
                "{controllers: {node: {hostEndpoint: {autoCreate: Enabled}}}}"
            )),
            ""
        );
        let templates = problems(&kcc(
            "{controllers: {node: {hostEndpoint: {autoCreate: Enabled, templates: [{generateName: x, nodeSelector: all()}]}}}}",
        ));
        assert!(
            templates.contains("templates are not supported"),
            "{templates}"
        );
        let bad = problems(&kcc(
            "{healthChecks: Maybe, controllers: {node: {reconcilerPeriod: soon, hostEndpoint: {autoCreate: yes}}}}",
        ));
        for field in ["healthChecks", "reconcilerPeriod", "autoCreate"] {
            assert!(bad.contains(field), "{field}: {bad}");
        }
        let named = problems(&kcc("{}").replace("name: default", "name: other"));
        assert!(named.contains("must be \\\"default\\\""), "{named}");
        let builtin = problems("apiVersion: projectcalico.org/v3\nkind: Profile\nmetadata: {name: projectcalico-default-allow}\nspec: {}\n");
        assert!(builtin.contains("is built in"), "{builtin}");
    }

    #[test]
    fn auto_host_endpoints_need_auto_create_and_not_default_disabled() {
        let spec = |h: &str| -> super::KubeControllersConfigurationSpec {
            serde_json::from_str(&format!(
                "{{\"controllers\": {{\"node\": {{\"hostEndpoint\": {h}}}}}}}"
            ))
            .expect("spec")
        };
        assert!(spec("{\"autoCreate\": \"Enabled\"}").auto_host_endpoints());
        assert!(!spec("{\"autoCreate\": \"Disabled\"}").auto_host_endpoints());
        assert!(!spec(
            "{\"autoCreate\": \"Enabled\", \"createDefaultHostEndpoint\": \"Disabled\"}"
        )
        .auto_host_endpoints());
        assert!(!super::KubeControllersConfigurationSpec::default().auto_host_endpoints());
    }
}
