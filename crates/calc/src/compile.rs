//! Rule compilation: Calico rules to match criteria over nets, ports and
//! named sets. Selectors become sets identified by their scoped, canonical
//! selector; the graph keeps their members.

use crate::intent::{CompiledRule, CompiledRules, PortRange, SideMatch};
use calico_api::{EntityRule, Rule, ServiceAccountMatch};
use calico_net::{parse_cidr_or_ip, Port};
use calico_selector::{Expr, Selector};
use sha1::{Digest, Sha1};
use std::collections::BTreeSet;

pub const NAMESPACE_LABEL: &str = "projectcalico.org/namespace";
pub const NAMESPACE_PREFIX: &str = "pcns.";
pub const SERVICE_ACCOUNT_LABEL: &str = "projectcalico.org/serviceaccount";
pub const SERVICE_ACCOUNT_PREFIX: &str = "pcsa.";

/// What a set holds: addresses of what a selector matches, or their
/// address+port pairs for a named port.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SetSpec {
    Selector(String),
    NamedPort {
        selector: String,
        protocol: u8,
        port: String,
    },
}

impl SetSpec {
    pub fn selector(&self) -> &str {
        match self {
            SetSpec::Selector(s) | SetSpec::NamedPort { selector: s, .. } => s,
        }
    }

    /// A short, stable name: `s` or `n` and 16 hex digits of a SHA-1.
    pub fn id(&self) -> String {
        let (tag, text) = match self {
            SetSpec::Selector(s) => ("s", s.clone()),
            SetSpec::NamedPort {
                selector,
                protocol,
                port,
            } => ("n", format!("{selector}|{protocol}|{port}")),
        };
        let digest = Sha1::digest(text.as_bytes());
        let hex: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
        format!("{tag}{hex}")
    }
}

/// Rewrites a selector over namespace (or service-account) labels into
/// one over the prefixed labels endpoints inherit from that profile
/// (`pcns.`, `pcsa.`); `all()` means "has one", `global()` "has none".
fn prefixed(e: &Expr, prefix: &str, marker: &str) -> Expr {
    let k = |key: &String| format!("{prefix}{key}");
    let rec = |inner: &Expr| prefixed(inner, prefix, marker);
    match e {
        Expr::All => Expr::Has(marker.into()),
        Expr::Global => Expr::Not(Box::new(Expr::Has(marker.into()))),
        Expr::Has(key) => Expr::Has(k(key)),
        Expr::Eq(key, v) => Expr::Eq(k(key), v.clone()),
        Expr::Ne(key, v) => Expr::Ne(k(key), v.clone()),
        Expr::In(key, v) => Expr::In(k(key), v.clone()),
        Expr::NotIn(key, v) => Expr::NotIn(k(key), v.clone()),
        Expr::Contains(key, v) => Expr::Contains(k(key), v.clone()),
        Expr::StartsWith(key, v) => Expr::StartsWith(k(key), v.clone()),
        Expr::EndsWith(key, v) => Expr::EndsWith(k(key), v.clone()),
        Expr::Not(inner) => Expr::Not(Box::new(rec(inner))),
        Expr::And(ops) => Expr::And(ops.iter().map(rec).collect()),
        Expr::Or(ops) => Expr::Or(ops.iter().map(rec).collect()),
    }
}

fn namespace_expr(e: &Expr) -> Expr {
    prefixed(e, NAMESPACE_PREFIX, NAMESPACE_LABEL)
}

/// A serviceAccountSelector, over `pcsa.` labels.
fn service_account_expr(e: &Expr) -> Expr {
    prefixed(e, SERVICE_ACCOUNT_PREFIX, SERVICE_ACCOUNT_LABEL)
}

/// A rule's `serviceAccounts` match: the account is one of `names` (when
/// given) and its labels match `selector` (when given).
fn service_accounts_expr(sa: &ServiceAccountMatch) -> Vec<Expr> {
    let mut parts = Vec::new();
    if !sa.names.is_empty() {
        parts.push(Expr::In(
            SERVICE_ACCOUNT_LABEL.into(),
            sa.names.iter().cloned().collect(),
        ));
    }
    if !sa.selector.is_empty() {
        parts.push(service_account_expr(&parse(&sa.selector)));
    }
    parts
}

fn and(parts: Vec<Expr>) -> Expr {
    let parts: Vec<Expr> = parts.into_iter().filter(|e| *e != Expr::All).collect();
    match parts.len() {
        0 => Expr::All,
        1 => parts.into_iter().next().unwrap_or(Expr::All),
        _ => Expr::And(parts),
    }
}

fn parse(text: &str) -> Expr {
    Selector::parse(text)
        .map(|s| s.expr().clone())
        .unwrap_or(Expr::Not(Box::new(Expr::All)))
}

/// The selector a policy applies to: its own, scoped to its namespace
/// (NetworkPolicy) or by its namespaceSelector (GlobalNetworkPolicy).
pub fn policy_selector(
    selector: &str,
    namespace: Option<&str>,
    namespace_selector: &str,
    service_account_selector: &str,
) -> Selector {
    let mut parts = Vec::new();
    if let Some(ns) = namespace {
        parts.push(Expr::Eq(NAMESPACE_LABEL.into(), ns.into()));
    } else if !namespace_selector.is_empty() {
        parts.push(namespace_expr(&parse(namespace_selector)));
    }
    if !service_account_selector.is_empty() {
        parts.push(service_account_expr(&parse(service_account_selector)));
    }
    parts.push(parse(selector));
    Selector::from_expr(and(parts))
}

/// A rule side's selector, scoped as Calico scopes it: by namespaceSelector
/// when given, else to the policy's namespace (NetworkPolicy), else global.
fn scoped(
    selector: &str,
    namespace_selector: &str,
    namespace: Option<&str>,
    service_accounts: Option<&ServiceAccountMatch>,
) -> String {
    let mut parts = service_accounts
        .map(service_accounts_expr)
        .unwrap_or_default();
    if !namespace_selector.is_empty() {
        parts.push(namespace_expr(&parse(namespace_selector)));
    } else if let Some(ns) = namespace {
        parts.push(Expr::Eq(NAMESPACE_LABEL.into(), ns.into()));
    }
    parts.push(parse(selector));
    Selector::from_expr(and(parts)).to_string()
}

fn ranges(ports: &[Port]) -> Vec<PortRange> {
    ports
        .iter()
        .filter_map(|p| match p {
            Port::Range { min, max } => Some(PortRange {
                min: *min,
                max: *max,
            }),
            Port::Named(_) => None,
        })
        .collect()
}

fn names(ports: &[Port]) -> Vec<&str> {
    ports
        .iter()
        .filter_map(|p| match p {
            Port::Named(n) => Some(n.as_str()),
            Port::Range { .. } => None,
        })
        .collect()
}

/// Compiles one side; `sets` collects every set it needs.
fn side(
    e: &EntityRule,
    protocol: Option<u8>,
    namespace: Option<&str>,
    sets: &mut BTreeSet<SetSpec>,
) -> SideMatch {
    let nets = |list: &[String]| {
        list.iter()
            .filter_map(|n| parse_cidr_or_ip(n).ok())
            .collect()
    };
    let mut m = SideMatch {
        nets: nets(&e.nets),
        not_nets: nets(&e.not_nets),
        ports: ranges(&e.ports),
        not_ports: ranges(&e.not_ports),
        ..Default::default()
    };
    let sa = e
        .service_accounts
        .as_ref()
        .filter(|sa| !sa.names.is_empty() || !sa.selector.is_empty());
    let has_selector = !e.selector.is_empty() || !e.namespace_selector.is_empty() || sa.is_some();
    let selector = if has_selector {
        Some(scoped(&e.selector, &e.namespace_selector, namespace, sa))
    } else {
        None
    };
    if let Some(sel) = &selector {
        let spec = SetSpec::Selector(sel.clone());
        m.sets.push(spec.id());
        sets.insert(spec);
    }
    if !e.not_selector.is_empty() {
        let spec = SetSpec::Selector(scoped(
            &e.not_selector,
            &e.namespace_selector,
            namespace,
            None,
        ));
        m.not_sets.push(spec.id());
        sets.insert(spec);
    }
    // Named ports resolve against what the side selects (everything, without a selector).
    let named_selector = selector.unwrap_or_else(|| "all()".into());
    for (list, out) in [
        (&e.ports, &mut m.named_port_sets),
        (&e.not_ports, &mut m.not_named_port_sets),
    ] {
        for name in names(list) {
            let spec = SetSpec::NamedPort {
                selector: named_selector.clone(),
                protocol: protocol.unwrap_or(6),
                port: name.to_string(),
            };
            out.push(spec.id());
            sets.insert(spec);
        }
    }
    m
}

fn icmp(i: Option<&calico_api::Icmp>) -> Option<(u8, Option<u8>)> {
    let i = i?;
    let t = u8::try_from(i.kind?).ok()?;
    Some((t, i.code.and_then(|c| u8::try_from(c).ok())))
}

pub fn rule(r: &Rule, namespace: Option<&str>, sets: &mut BTreeSet<SetSpec>) -> CompiledRule {
    let protocol = r.protocol.as_ref().map(calico_net::Protocol::number);
    CompiledRule {
        action: r.action,
        ip_version: r.ip_version,
        protocol,
        not_protocol: r.not_protocol.as_ref().map(calico_net::Protocol::number),
        icmp: icmp(r.icmp.as_ref()),
        not_icmp: icmp(r.not_icmp.as_ref()),
        src: side(&r.source, protocol, namespace, sets),
        dst: side(&r.destination, protocol, namespace, sets),
    }
}

/// Whether a rule is compiled at all. An `http` match needs an
/// application-layer proxy, which calico-rs does not run: an Allow rule
/// with one matches nothing (it may never allow more than it says), while
/// a Deny rule with one denies at layer 4 whatever the request (more than
/// it says, never less). Validation admits `http` on nothing else.
pub fn enforceable(r: &Rule) -> bool {
    !(r.http.is_some() && r.action == calico_api::Action::Allow)
}

pub fn rules(
    ingress: &[Rule],
    egress: &[Rule],
    namespace: Option<&str>,
) -> (CompiledRules, BTreeSet<SetSpec>) {
    let mut sets = BTreeSet::new();
    let mut compile = |list: &[Rule]| -> Vec<CompiledRule> {
        list.iter()
            .filter(|r| enforceable(r))
            .map(|r| rule(r, namespace, &mut sets))
            .collect()
    };
    let compiled = CompiledRules {
        ingress: compile(ingress),
        egress: compile(egress),
    };
    (compiled, sets)
}
