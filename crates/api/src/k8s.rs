//! Kubernetes `networking.k8s.io/v1` NetworkPolicy, and its conversion to a
//! Calico NetworkPolicy exactly as Calico converts it: named
//! `knp.default.<name>`, order 1000, pod selectors prefixed with
//! `projectcalico.org/orchestrator == 'k8s'`, one rule per protocol and peer.

use crate::kinds::policy::{EntityRule, NetworkPolicySpec, PolicyType, Rule};
use crate::meta::ObjectMeta;
use crate::resource::{Object, Resource};
use crate::types::{Cidr, Selector};
use crate::validate::{label_key, label_value, Errors, ValidationError};
use calico_net::{Port, Protocol};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub const API_VERSION: &str = "networking.k8s.io/v1";
pub const NAME_PREFIX: &str = "knp.default.";
pub const ORDER: f64 = 1000.0;
const ORCHESTRATOR_SELECTOR: &str = "projectcalico.org/orchestrator == 'k8s'";

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelSelectorRequirement {
    pub key: String,
    pub operator: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelSelector {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_expressions: Vec<LabelSelectorRequirement>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IpBlock {
    pub cidr: Cidr,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub except: Vec<Cidr>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Peer {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_selector: Option<LabelSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_block: Option<IpBlock>,
}

/// A port as Kubernetes writes it: a number or a name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum IntOrString {
    Int(i64),
    Str(String),
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NetworkPolicyPort {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<IntOrString>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_port: Option<i64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IngressRule {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from: Vec<Peer>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<NetworkPolicyPort>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EgressRule {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub to: Vec<Peer>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<NetworkPolicyPort>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct K8sNetworkPolicySpec {
    #[serde(default)]
    pub pod_selector: LabelSelector,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policy_types: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ingress: Vec<IngressRule>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress: Vec<EgressRule>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct K8sNetworkPolicy {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: K8sNetworkPolicySpec,
    #[serde(default, skip_serializing)]
    pub status: Option<serde_json::Value>,
}

#[derive(Clone, Copy, PartialEq)]
enum SelectorType {
    Pod,
    Namespace,
}

fn check_selector(e: &mut Errors, path: &str, sel: &LabelSelector) {
    e.label_map(&format!("{path}.matchLabels"), &sel.match_labels);
    for (i, req) in sel.match_expressions.iter().enumerate() {
        let p = format!("{path}.matchExpressions[{i}]");
        if let Err(why) = label_key(&req.key) {
            e.add(format!("{p}.key"), format!("invalid label key: {why}"));
        }
        match req.operator.as_str() {
            "In" | "NotIn" => {
                if req.values.is_empty() {
                    e.add(
                        format!("{p}.values"),
                        format!("must be non-empty for operator {}", req.operator),
                    );
                }
                for (j, v) in req.values.iter().enumerate() {
                    if let Err(why) = label_value(v) {
                        e.add(
                            format!("{p}.values[{j}]"),
                            format!("invalid label value {v:?}: {why}"),
                        );
                    }
                }
            }
            "Exists" | "DoesNotExist" => {
                if !req.values.is_empty() {
                    e.add(
                        format!("{p}.values"),
                        format!("must be empty for operator {}", req.operator),
                    );
                }
            }
            other => e.add(
                format!("{p}.operator"),
                format!("{other:?} is not one of In, NotIn, Exists, DoesNotExist"),
            ),
        }
    }
}

fn check_peer(e: &mut Errors, path: &str, peer: &Peer) {
    let selectors = peer.pod_selector.is_some() || peer.namespace_selector.is_some();
    match (&peer.ip_block, selectors) {
        (Some(_), true) => e.add(
            path,
            "ipBlock cannot be combined with podSelector or namespaceSelector",
        ),
        (None, false) => e.add(
            path,
            "a peer needs podSelector, namespaceSelector or ipBlock",
        ),
        _ => {}
    }
    if let Some(sel) = &peer.pod_selector {
        check_selector(e, &format!("{path}.podSelector"), sel);
    }
    if let Some(sel) = &peer.namespace_selector {
        check_selector(e, &format!("{path}.namespaceSelector"), sel);
    }
    if let Some(block) = &peer.ip_block {
        let cidr = block.cidr.net();
        for (i, ex) in block.except.iter().enumerate() {
            let ex_net = ex.net();
            if !cidr.contains(&ex_net) || cidr == ex_net {
                let p = format!("{path}.ipBlock.except[{i}]");
                e.add(p, format!("{ex_net} must be strictly inside {cidr}"));
            }
        }
    }
}

fn check_port(e: &mut Errors, path: &str, port: &NetworkPolicyPort) {
    if let Some(proto) = &port.protocol {
        e.one_of(&format!("{path}.protocol"), proto, &["TCP", "UDP", "SCTP"]);
    }
    match (&port.port, port.end_port) {
        (Some(IntOrString::Int(p)), end) => {
            if !(1..=65535).contains(p) {
                e.add(
                    format!("{path}.port"),
                    format!("{p} is out of range 1-65535"),
                );
            }
            if let Some(end) = end {
                if end < *p || end > 65535 {
                    e.add(
                        format!("{path}.endPort"),
                        format!("{end} must be between port {p} and 65535"),
                    );
                }
            }
        }
        (Some(IntOrString::Str(name)), end) => {
            if Port::parse(name).map_or(true, |p| !p.is_named()) {
                e.add(
                    format!("{path}.port"),
                    format!("{name:?} is not a valid port name"),
                );
            }
            if end.is_some() {
                e.add(format!("{path}.endPort"), "endPort needs a numeric port");
            }
        }
        (None, Some(_)) => e.add(format!("{path}.endPort"), "endPort needs port"),
        (None, None) => {}
    }
}

impl K8sNetworkPolicy {
    fn display_name(&self) -> String {
        let ns = self.metadata.namespace.as_deref().unwrap_or("default");
        format!(
            "NetworkPolicy.networking.k8s.io({ns}/{})",
            self.metadata.name
        )
    }

    pub fn validate(&self) -> Result<(), ValidationError> {
        let mut e = Errors::default();
        if self.metadata.name.is_empty() {
            e.add("metadata.name", "is required");
        } else if let Err(why) = crate::validate::dns_subdomain(&self.metadata.name) {
            e.add("metadata.name", format!("{:?} {why}", self.metadata.name));
        }
        check_spec(&mut e, &self.spec);
        e.into_result(self.display_name())
    }

    /// The Calico policy Calico would store for this Kubernetes policy,
    /// once it validates.
    pub fn to_calico(&self) -> Result<Resource, ValidationError> {
        self.validate()?;
        let s = &self.spec;
        let ingress: Vec<Rule> = s
            .ingress
            .iter()
            .flat_map(|r| rules(&r.from, &r.ports, true))
            .collect();
        let egress: Vec<Rule> = s
            .egress
            .iter()
            .flat_map(|r| rules(&r.to, &r.ports, false))
            .collect();
        let mut types = Vec::new();
        if s.policy_types.iter().any(|t| t == "Ingress") {
            types.push(PolicyType::Ingress);
        }
        if s.policy_types.iter().any(|t| t == "Egress") {
            types.push(PolicyType::Egress);
        }
        if types.is_empty() {
            types.push(PolicyType::Ingress);
        }
        let metadata = ObjectMeta {
            name: format!("{NAME_PREFIX}{}", self.metadata.name),
            namespace: Some(
                self.metadata
                    .namespace
                    .clone()
                    .unwrap_or_else(|| "default".into()),
            ),
            labels: self.metadata.labels.clone(),
            annotations: self.metadata.annotations.clone(),
            ..Default::default()
        };
        Ok(Resource::NetworkPolicy(Object::new(
            metadata,
            NetworkPolicySpec {
                tier: "default".into(),
                order: Some(ORDER),
                selector: selector_to_calico(Some(&s.pod_selector), SelectorType::Pod),
                ingress,
                egress,
                types,
                ..Default::default()
            },
        )))
    }
}

/// Only called on a validated policy: its label keys and values are of the
/// characters a selector takes, so the text always parses.
fn selector_to_calico(sel: Option<&LabelSelector>, ty: SelectorType) -> Selector {
    Selector::parse(&selector_text(sel, ty))
        .expect("validated label keys and values always form a selector")
}

fn selector_text(sel: Option<&LabelSelector>, ty: SelectorType) -> String {
    let mut parts = Vec::new();
    if ty == SelectorType::Pod {
        parts.push(ORCHESTRATOR_SELECTOR.to_string());
    }
    let Some(sel) = sel else {
        return parts.join(" && ");
    };
    if ty == SelectorType::Namespace
        && sel.match_labels.is_empty()
        && sel.match_expressions.is_empty()
    {
        return "all()".into();
    }
    for (k, v) in &sel.match_labels {
        parts.push(format!("{k} == '{v}'"));
    }
    for req in &sel.match_expressions {
        let values = req.values.join("', '");
        match req.operator.as_str() {
            "In" => parts.push(format!("{} in {{ '{values}' }}", req.key)),
            "NotIn" => parts.push(format!("{} not in {{ '{values}' }}", req.key)),
            "Exists" => parts.push(format!("has({})", req.key)),
            "DoesNotExist" => parts.push(format!("! has({})", req.key)),
            _ => {}
        }
    }
    parts.join(" && ")
}

/// One Calico rule per (protocol group x peer).
fn rules(peers: &[Peer], ports: &[NetworkPolicyPort], ingress: bool) -> Vec<Rule> {
    // protocol ("" = any) -> ports (None = all ports of that protocol)
    let mut by_protocol: BTreeMap<String, Option<Vec<Port>>> = BTreeMap::new();
    for p in ports {
        let proto = p.protocol.clone().unwrap_or_else(|| "TCP".into());
        let port = match (&p.port, p.end_port) {
            (Some(IntOrString::Int(n)), Some(end)) => Port::range(clamp(*n), clamp(end)).ok(),
            (Some(IntOrString::Int(n)), None) => Some(Port::single(clamp(*n))),
            (Some(IntOrString::Str(name)), _) => Port::parse(name).ok(),
            (None, _) => None,
        };
        match (port, by_protocol.get_mut(&proto)) {
            (None, _) => {
                by_protocol.insert(proto, None);
            }
            (Some(port), Some(Some(list))) => list.push(port),
            (Some(_), Some(None)) => {}
            (Some(port), None) => {
                by_protocol.insert(proto, Some(vec![port]));
            }
        }
    }
    if by_protocol.is_empty() {
        by_protocol.insert(String::new(), None);
    }
    let none = [Peer::default()];
    let peers: &[Peer] = if peers.is_empty() { &none } else { peers };
    let mut out = Vec::new();
    for (proto, ports) in by_protocol {
        let ports = ports.map(simplify_ports).unwrap_or_default();
        let protocol = if proto.is_empty() {
            None
        } else {
            Protocol::parse(&proto).ok()
        };
        for peer in peers {
            let mut rule = Rule::allow();
            rule.protocol = protocol.clone();
            let entity = peer_to_entity(peer);
            if ingress {
                rule.source = entity;
                rule.destination.ports = ports.clone();
            } else {
                rule.destination = EntityRule {
                    ports: ports.clone(),
                    ..entity
                };
            }
            out.push(rule);
        }
    }
    out
}

fn clamp(n: i64) -> u16 {
    u16::try_from(n).unwrap_or(u16::MAX)
}

fn peer_to_entity(peer: &Peer) -> EntityRule {
    if *peer == Peer::default() {
        return EntityRule::default();
    }
    if let Some(block) = &peer.ip_block {
        return EntityRule {
            nets: vec![block.cidr],
            not_nets: block.except.clone(),
            ..Default::default()
        };
    }
    EntityRule {
        selector: selector_to_calico(peer.pod_selector.as_ref(), SelectorType::Pod),
        namespace_selector: selector_to_calico(
            peer.namespace_selector.as_ref(),
            SelectorType::Namespace,
        ),
        ..Default::default()
    }
}

/// Merges adjacent and overlapping numeric ports into ranges; names pass through first.
fn simplify_ports(ports: Vec<Port>) -> Vec<Port> {
    if ports.iter().filter(|p| !p.is_named()).count() <= 1 {
        return ports;
    }
    let mut out: Vec<Port> = ports.iter().filter(|p| p.is_named()).cloned().collect();
    let mut ranges: Vec<(u16, u16)> = ports
        .iter()
        .filter_map(|p| match p {
            Port::Range { min, max } => Some((*min, *max)),
            Port::Named(_) => None,
        })
        .collect();
    ranges.sort_unstable();
    let mut merged: Vec<(u16, u16)> = Vec::new();
    for (lo, hi) in ranges {
        match merged.last_mut() {
            Some(last) if u32::from(lo) <= u32::from(last.1) + 1 => last.1 = last.1.max(hi),
            _ => merged.push((lo, hi)),
        }
    }
    out.extend(
        merged
            .into_iter()
            .map(|(min, max)| Port::Range { min, max }),
    );
    out
}

/// The checks of a Kubernetes NetworkPolicy's spec (its staged form's too).
pub(crate) fn check_spec(e: &mut Errors, s: &K8sNetworkPolicySpec) {
    check_selector(e, "spec.podSelector", &s.pod_selector);
    for (i, t) in s.policy_types.iter().enumerate() {
        e.one_of(&format!("spec.policyTypes[{i}]"), t, &["Ingress", "Egress"]);
    }
    for (i, r) in s.ingress.iter().enumerate() {
        r.from
            .iter()
            .enumerate()
            .for_each(|(j, p)| check_peer(e, &format!("spec.ingress[{i}].from[{j}]"), p));
        r.ports
            .iter()
            .enumerate()
            .for_each(|(j, p)| check_port(e, &format!("spec.ingress[{i}].ports[{j}]"), p));
    }
    for (i, r) in s.egress.iter().enumerate() {
        r.to.iter()
            .enumerate()
            .for_each(|(j, p)| check_peer(e, &format!("spec.egress[{i}].to[{j}]"), p));
        r.ports
            .iter()
            .enumerate()
            .for_each(|(j, p)| check_port(e, &format!("spec.egress[{i}].ports[{j}]"), p));
    }
}
