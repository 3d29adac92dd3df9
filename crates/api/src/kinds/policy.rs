//! Policy kinds: NetworkPolicy, GlobalNetworkPolicy, Tier, Profile, and rules.

use crate::types::{Cidr, Selector};
use crate::validate::Errors;
use calico_net::{Port, Protocol};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Action {
    Allow,
    Deny,
    Log,
    Pass,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum PolicyType {
    Ingress,
    Egress,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Icmp {
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<i64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceAccountMatch {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub names: Vec<String>,
    #[serde(default, skip_serializing_if = "Selector::is_empty")]
    pub selector: Selector,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceMatch {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpMatch {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<BTreeMap<String, String>>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RuleMetadata {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// One side of a rule: where traffic comes from or goes to.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EntityRule {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nets: Vec<Cidr>,
    #[serde(default, skip_serializing_if = "Selector::is_empty")]
    pub selector: Selector,
    #[serde(default, skip_serializing_if = "Selector::is_empty")]
    pub namespace_selector: Selector,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub services: Option<ServiceMatch>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<Port>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_nets: Vec<Cidr>,
    #[serde(default, skip_serializing_if = "Selector::is_empty")]
    pub not_selector: Selector,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_ports: Vec<Port>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_accounts: Option<ServiceAccountMatch>,
}

impl EntityRule {
    pub fn is_empty(&self) -> bool {
        *self == EntityRule::default()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rule {
    pub action: Action,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<Protocol>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_protocol: Option<Protocol>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icmp: Option<Icmp>,
    #[serde(default, rename = "notICMP", skip_serializing_if = "Option::is_none")]
    pub not_icmp: Option<Icmp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_version: Option<u8>,
    #[serde(default, skip_serializing_if = "EntityRule::is_empty")]
    pub source: EntityRule,
    #[serde(default, skip_serializing_if = "EntityRule::is_empty")]
    pub destination: EntityRule,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpMatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<RuleMetadata>,
}

impl Rule {
    pub fn allow() -> Self {
        Rule {
            action: Action::Allow,
            protocol: None,
            not_protocol: None,
            icmp: None,
            not_icmp: None,
            ip_version: None,
            source: EntityRule::default(),
            destination: EntityRule::default(),
            http: None,
            metadata: None,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NetworkPolicySpec {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub tier: String,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "crate::number::float"
    )]
    pub order: Option<f64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ingress: Vec<Rule>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress: Vec<Rule>,
    #[serde(default, skip_serializing_if = "Selector::is_empty")]
    pub selector: Selector,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub types: Vec<PolicyType>,
    #[serde(default, skip_serializing_if = "Selector::is_empty")]
    pub service_account_selector: Selector,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub performance_hints: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GlobalNetworkPolicySpec {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub tier: String,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "crate::number::float"
    )]
    pub order: Option<f64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ingress: Vec<Rule>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress: Vec<Rule>,
    #[serde(default, skip_serializing_if = "Selector::is_empty")]
    pub selector: Selector,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub types: Vec<PolicyType>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub do_not_track: bool,
    #[serde(
        default,
        rename = "preDNAT",
        skip_serializing_if = "std::ops::Not::not"
    )]
    pub pre_dnat: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub apply_on_forward: bool,
    #[serde(default, skip_serializing_if = "Selector::is_empty")]
    pub service_account_selector: Selector,
    #[serde(default, skip_serializing_if = "Selector::is_empty")]
    pub namespace_selector: Selector,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub performance_hints: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TierDefaultAction {
    Deny,
    Pass,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TierSpec {
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "crate::number::float"
    )]
    pub order: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_action: Option<TierDefaultAction>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProfileSpec {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ingress: Vec<Rule>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress: Vec<Rule>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels_to_apply: BTreeMap<String, String>,
}

/// The default `types`: Ingress, plus Egress when there are egress rules.
pub(crate) fn default_types(types: &mut Vec<PolicyType>, has_egress: bool) {
    if types.is_empty() {
        types.push(PolicyType::Ingress);
        if has_egress {
            types.push(PolicyType::Egress);
        }
    }
}

pub(crate) fn default_tier(tier: &mut String) {
    if tier.is_empty() {
        *tier = "default".into();
    }
}

pub(crate) fn check_rules(e: &mut Errors, path: &str, rules: &[Rule]) {
    for (i, rule) in rules.iter().enumerate() {
        check_rule(e, &format!("{path}[{i}]"), rule);
    }
}

fn check_icmp(e: &mut Errors, path: &str, icmp: &Icmp, protocol: Option<&Protocol>) {
    if !protocol.is_some_and(Protocol::is_icmp) {
        e.add(path, "ICMP type/code needs protocol ICMP or ICMPv6");
    }
    match icmp.kind {
        Some(t) if !(0..=254).contains(&t) => e.add(
            format!("{path}.type"),
            format!("ICMP type {t} is out of range 0-254"),
        ),
        None if icmp.code.is_some() => {
            e.add(format!("{path}.code"), "ICMP code needs an ICMP type")
        }
        _ => {}
    }
    if let Some(c) = icmp.code {
        if !(0..=255).contains(&c) {
            e.add(
                format!("{path}.code"),
                format!("ICMP code {c} is out of range 0-255"),
            );
        }
    }
}

fn check_rule(e: &mut Errors, path: &str, rule: &Rule) {
    if let Some(v) = rule.ip_version {
        if v != 4 && v != 6 {
            e.add(format!("{path}.ipVersion"), format!("{v} is not 4 or 6"));
        }
    }
    if let Some(icmp) = &rule.icmp {
        check_icmp(e, &format!("{path}.icmp"), icmp, rule.protocol.as_ref());
    }
    if let Some(icmp) = &rule.not_icmp {
        check_icmp(e, &format!("{path}.notICMP"), icmp, rule.protocol.as_ref());
    }
    if let (Some(p), Some(np)) = (&rule.protocol, &rule.not_protocol) {
        if p.number() == np.number() {
            e.add(
                format!("{path}.notProtocol"),
                format!("protocol and notProtocol are both {p}"),
            );
        }
    }
    for (side, ent) in [("source", &rule.source), ("destination", &rule.destination)] {
        let sp = format!("{path}.{side}");
        check_entity(e, &sp, ent, rule);
    }
    if rule.http.is_some()
        && rule.action != crate::Action::Allow
        && rule.action != crate::Action::Deny
    {
        e.add(
            format!("{path}.http"),
            "HTTP match is only valid on Allow or Deny rules",
        );
    }
}

fn check_entity(e: &mut Errors, path: &str, ent: &EntityRule, rule: &Rule) {
    if let Some(v) = rule.ip_version {
        for (field, list) in [("nets", &ent.nets), ("notNets", &ent.not_nets)] {
            for (i, n) in list.iter().map(Cidr::net).enumerate() {
                let family = if n.addr().is_ipv4() { 4 } else { 6 };
                if family != v {
                    e.add(
                        format!("{path}.{field}[{i}]"),
                        format!("{n} is IPv{family} but the rule has ipVersion {v}"),
                    );
                }
            }
        }
    }
    e.no_global(&format!("{path}.selector"), &ent.selector);
    e.no_global(&format!("{path}.notSelector"), &ent.not_selector);
    if let Some(sa) = &ent.service_accounts {
        e.no_global(&format!("{path}.serviceAccounts.selector"), &sa.selector);
    }
    let ports_ok = rule.protocol.as_ref().is_some_and(Protocol::supports_ports);
    for (field, ports) in [("ports", &ent.ports), ("notPorts", &ent.not_ports)] {
        if !ports.is_empty() && !ports_ok {
            e.add(
                format!("{path}.{field}"),
                "rules that match ports must set protocol to TCP, UDP, SCTP or UDPLite",
            );
        }
    }
    // Calico matches a service's endpoints and ports from Kubernetes
    // Services and EndpointSlices, which this datastore does not hold: a
    // rule we cannot enforce exactly is refused, never stored and ignored.
    if ent.services.is_some() {
        e.add(
            format!("{path}.services"),
            "service matches are not supported: calico-rs holds no Kubernetes Services or \
             EndpointSlices to resolve them; match the service's pods with a selector and ports",
        );
    }
}

pub(crate) fn check_order(e: &mut Errors, path: &str, order: Option<f64>) {
    if order.is_some_and(|o| !o.is_finite()) {
        e.add(path, "order must be a finite number");
    }
}

/// Types may not repeat. Rules for a direction the policy does not apply to
/// are accepted and ignored, as Calico does (Kubernetes policies without
/// `policyTypes` convert to exactly that).
pub(crate) fn check_types(e: &mut Errors, path: &str, types: &[PolicyType]) {
    let mut seen = std::collections::BTreeSet::new();
    for (i, t) in types.iter().enumerate() {
        if !seen.insert(*t) {
            e.add(format!("{path}[{i}]"), format!("{t:?} is listed twice"));
        }
    }
}
