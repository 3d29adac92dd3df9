//! Rule compilation: Calico rules to match criteria over nets, ports and
//! named sets. Selectors become sets identified by their scoped, canonical
//! selector; the graph keeps their members.

use crate::intent::{CompiledRule, CompiledRules, PortRange, SideMatch};
use calico_api::{Cidr, EntityRule, Rule, ServiceAccountMatch};
use calico_net::Port;
use calico_selector::{Expr, Selector};
use sha1::{Digest, Sha1};
use std::cmp::Ordering;
use std::collections::BTreeSet;
use std::hash::{Hash, Hasher};

pub const NAMESPACE_LABEL: &str = "projectcalico.org/namespace";
pub const NAMESPACE_PREFIX: &str = "pcns.";
pub const SERVICE_ACCOUNT_LABEL: &str = "projectcalico.org/serviceaccount";
pub const SERVICE_ACCOUNT_PREFIX: &str = "pcsa.";

/// A selector built by scoping a rule's: identified (ordered, hashed,
/// named) by its canonical text, and carried parsed, so that no one parses
/// it again.
#[derive(Debug, Clone)]
pub struct ScopedSelector {
    text: String,
    parsed: Selector,
}

impl ScopedSelector {
    pub fn new(parsed: Selector) -> Self {
        ScopedSelector {
            text: parsed.to_string(),
            parsed,
        }
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    pub fn parsed(&self) -> &Selector {
        &self.parsed
    }
}

impl PartialEq for ScopedSelector {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}
impl Eq for ScopedSelector {}
impl PartialOrd for ScopedSelector {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for ScopedSelector {
    fn cmp(&self, other: &Self) -> Ordering {
        self.text.cmp(&other.text)
    }
}
impl Hash for ScopedSelector {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.text.hash(state);
    }
}

/// What a set holds: addresses of what a selector matches, or their
/// address+port pairs for a named port.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SetSpec {
    Selector(ScopedSelector),
    NamedPort {
        selector: ScopedSelector,
        protocol: u8,
        port: String,
    },
}

impl SetSpec {
    pub fn selector(&self) -> &ScopedSelector {
        match self {
            SetSpec::Selector(s) | SetSpec::NamedPort { selector: s, .. } => s,
        }
    }

    /// A short, stable name: `s` or `n` and 16 hex digits of a SHA-1.
    pub fn id(&self) -> String {
        let (tag, text) = match self {
            SetSpec::Selector(s) => ("s", s.text.clone()),
            SetSpec::NamedPort {
                selector,
                protocol,
                port,
            } => ("n", format!("{}|{protocol}|{port}", selector.text)),
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
        parts.push(service_account_expr(sa.selector.parsed().expr()));
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

/// The selector a policy applies to: its own, scoped to its namespace
/// (NetworkPolicy) or by its namespaceSelector (GlobalNetworkPolicy).
pub fn policy_selector(
    selector: &calico_api::Selector,
    namespace: Option<&str>,
    namespace_selector: Option<&calico_api::Selector>,
    service_account_selector: &calico_api::Selector,
) -> Selector {
    let mut parts = Vec::new();
    if let Some(ns) = namespace {
        parts.push(Expr::Eq(NAMESPACE_LABEL.into(), ns.into()));
    } else if let Some(ns_sel) = namespace_selector.filter(|s| !s.is_empty()) {
        parts.push(namespace_expr(ns_sel.parsed().expr()));
    }
    if !service_account_selector.is_empty() {
        parts.push(service_account_expr(
            service_account_selector.parsed().expr(),
        ));
    }
    parts.push(selector.parsed().expr().clone());
    Selector::from_expr(and(parts))
}

/// A rule side's selector, scoped as Calico scopes it: by namespaceSelector
/// when given, else to the policy's namespace (NetworkPolicy), else global.
fn scoped(
    selector: &calico_api::Selector,
    namespace_selector: &calico_api::Selector,
    namespace: Option<&str>,
    service_accounts: Option<&ServiceAccountMatch>,
) -> ScopedSelector {
    let mut parts = service_accounts
        .map(service_accounts_expr)
        .unwrap_or_default();
    if !namespace_selector.is_empty() {
        parts.push(namespace_expr(namespace_selector.parsed().expr()));
    } else if let Some(ns) = namespace {
        parts.push(Expr::Eq(NAMESPACE_LABEL.into(), ns.into()));
    }
    parts.push(selector.parsed().expr().clone());
    ScopedSelector::new(Selector::from_expr(and(parts)))
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
    let nets = |list: &[Cidr]| list.iter().map(Cidr::net).collect();
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
    let named_selector = selector.unwrap_or_else(|| ScopedSelector::new(Selector::all()));
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
