//! Desired state to nft text. Pure: the same state always renders the
//! same text, byte for byte.

use crate::table::{Chain, Collection, Table};
use crate::{MARK_ACCEPT, MARK_PASS};
use calico_api::Action;
use calico_calc::{
    policy_key, CompiledRule, CompiledRules, DesiredState, EndpointIntent, PortRange, SetMembers,
    SideMatch, TierEnd, WORKLOAD_INTERFACE_PREFIX,
};
use calico_net::IpNet;
use sha1::{Digest, Sha1};
use std::collections::BTreeSet;

const CLEAR: u32 = !(MARK_ACCEPT | MARK_PASS);

fn short_hash(text: &str) -> String {
    Sha1::digest(text.as_bytes())
        .iter()
        .take(6)
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn policy_chain(key: &str, ingress: bool) -> String {
    format!(
        "p-{}-{}",
        short_hash(key),
        if ingress { "in" } else { "out" }
    )
}

fn profile_chain(name: &str, ingress: bool) -> String {
    format!(
        "r-{}-{}",
        short_hash(name),
        if ingress { "in" } else { "out" }
    )
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Family {
    V4,
    V6,
}

impl Family {
    fn addr(self) -> &'static str {
        match self {
            Family::V4 => "ip",
            Family::V6 => "ip6",
        }
    }
    fn suffix(self) -> &'static str {
        match self {
            Family::V4 => "v4",
            Family::V6 => "v6",
        }
    }
    fn of(net: &IpNet) -> Family {
        if net.addr().is_ipv4() {
            Family::V4
        } else {
            Family::V6
        }
    }
}

fn net_text(net: &IpNet) -> String {
    if net.prefix_len() == net.max_prefix_len() {
        net.addr().to_string()
    } else {
        net.to_string()
    }
}

fn net_list(nets: &[IpNet], f: Family) -> Option<String> {
    let list: Vec<String> = nets
        .iter()
        .filter(|n| Family::of(n) == f)
        .map(net_text)
        .collect();
    (!list.is_empty()).then(|| format!("{{ {} }}", list.join(", ")))
}

fn port_list(ports: &[PortRange]) -> String {
    let items: Vec<String> = ports
        .iter()
        .map(|p| {
            if p.min == p.max {
                p.min.to_string()
            } else {
                format!("{}-{}", p.min, p.max)
            }
        })
        .collect();
    format!("{{ {} }}", items.join(", "))
}

fn addressed(m: &SideMatch) -> bool {
    !(m.nets.is_empty()
        && m.not_nets.is_empty()
        && m.sets.is_empty()
        && m.not_sets.is_empty()
        && m.named_port_sets.is_empty()
        && m.not_named_port_sets.is_empty())
}

/// The families a rule is rendered for: its ipVersion, or the family its
/// ICMP or nets imply, or both when it matches address sets; `None` (one
/// family-agnostic rule) when nothing in it is about addresses.
fn families(r: &CompiledRule) -> Vec<Option<Family>> {
    match r.ip_version {
        Some(4) => return vec![Some(Family::V4)],
        Some(6) => return vec![Some(Family::V6)],
        _ => {}
    }
    if r.protocol == Some(1) || r.icmp.is_some() && r.protocol != Some(58) {
        return vec![Some(Family::V4)];
    }
    if r.protocol == Some(58) {
        return vec![Some(Family::V6)];
    }
    if !addressed(&r.src) && !addressed(&r.dst) {
        return vec![None];
    }
    let nets: Vec<&IpNet> = [&r.src, &r.dst]
        .iter()
        .flat_map(|s| s.nets.iter())
        .collect();
    if nets.is_empty() {
        return vec![Some(Family::V4), Some(Family::V6)];
    }
    [Family::V4, Family::V6]
        .into_iter()
        .filter(|f| nets.iter().any(|n| Family::of(n) == *f))
        .map(Some)
        .collect()
}

/// One side's match text in one family; None when it cannot match there
/// (nets of the other family only). `alt` picks which port alternative.
fn side(m: &SideMatch, f: Option<Family>, dir: &str, port_alt: Option<&PortAlt>) -> Option<String> {
    let Some(f) = f else {
        // Family-agnostic: only ports can be matched.
        let mut parts = Vec::new();
        if let Some(PortAlt::Numbers(p)) = port_alt {
            parts.push(format!("th {dir}port {}", port_list(p)));
        }
        if !m.not_ports.is_empty() {
            parts.push(format!("th {dir}port != {}", port_list(&m.not_ports)));
        }
        return Some(parts.join(" "));
    };
    let a = f.addr();
    let mut parts = Vec::new();
    if !m.nets.is_empty() {
        parts.push(format!("{a} {dir}addr {}", net_list(&m.nets, f)?));
    }
    if let Some(l) = net_list(&m.not_nets, f) {
        parts.push(format!("{a} {dir}addr != {l}"));
    }
    for s in &m.sets {
        parts.push(format!("{a} {dir}addr @{s}_{}", f.suffix()));
    }
    for s in &m.not_sets {
        parts.push(format!("{a} {dir}addr != @{s}_{}", f.suffix()));
    }
    match port_alt {
        Some(PortAlt::Numbers(p)) => parts.push(format!("th {dir}port {}", port_list(p))),
        Some(PortAlt::Named(s)) => parts.push(format!(
            "{a} {dir}addr . meta l4proto . th {dir}port @{s}_{}",
            f.suffix()
        )),
        None => {}
    }
    if !m.not_ports.is_empty() {
        parts.push(format!("th {dir}port != {}", port_list(&m.not_ports)));
    }
    for s in &m.not_named_port_sets {
        parts.push(format!(
            "{a} {dir}addr . meta l4proto . th {dir}port != @{s}_{}",
            f.suffix()
        ));
    }
    Some(parts.join(" "))
}

/// Ports in a side are alternatives: the numbers, or any named-port set.
enum PortAlt {
    Numbers(Vec<PortRange>),
    Named(String),
}

fn port_alts(m: &SideMatch) -> Vec<Option<PortAlt>> {
    let mut alts: Vec<Option<PortAlt>> = Vec::new();
    if !m.ports.is_empty() {
        alts.push(Some(PortAlt::Numbers(m.ports.clone())));
    }
    alts.extend(
        m.named_port_sets
            .iter()
            .map(|s| Some(PortAlt::Named(s.clone()))),
    );
    if alts.is_empty() {
        alts.push(None);
    }
    alts
}

fn verdict(action: Action) -> String {
    match action {
        Action::Allow => format!("meta mark set meta mark | {MARK_ACCEPT:#x} return"),
        Action::Pass => format!("meta mark set meta mark | {MARK_PASS:#x} return"),
        Action::Deny => "drop".into(),
        Action::Log => "log prefix \"calico-packet: \" level info".into(),
    }
}

fn rule_lines(r: &CompiledRule, out: &mut Vec<String>) {
    let fams = families(r);
    for f in fams.iter().copied() {
        let mut common = Vec::new();
        if let Some(p) = r.protocol {
            common.push(format!("meta l4proto {p}"));
        }
        if let Some(p) = r.not_protocol {
            common.push(format!("meta l4proto != {p}"));
        }
        let icmp = |(t, c): (u8, Option<u8>), neg: bool| {
            let kw = if f == Some(Family::V6) {
                "icmpv6"
            } else {
                "icmp"
            };
            let op = if neg { "!= " } else { "" };
            match c {
                Some(c) => format!("{kw} type {op}{t} {kw} code {op}{c}"),
                None => format!("{kw} type {op}{t}"),
            }
        };
        if let Some(i) = r.icmp {
            common.push(icmp(i, false));
        }
        if let Some(i) = r.not_icmp {
            common.push(icmp(i, true));
        }
        if let Some(f) = f.filter(|_| r.ip_version.is_some() || fams.len() == 1) {
            common.push(format!(
                "meta nfproto {}",
                if f == Family::V4 { "ipv4" } else { "ipv6" }
            ));
        }
        for sp in port_alts(&r.src) {
            for dp in port_alts(&r.dst) {
                let (Some(s), Some(d)) = (
                    side(&r.src, f, "s", sp.as_ref()),
                    side(&r.dst, f, "d", dp.as_ref()),
                ) else {
                    continue;
                };
                let parts: Vec<&str> = common
                    .iter()
                    .map(String::as_str)
                    .chain([s.as_str(), d.as_str()])
                    .filter(|p| !p.is_empty())
                    .collect();
                let matches = parts.join(" ");
                let v = verdict(r.action);
                out.push(if matches.is_empty() {
                    v
                } else {
                    format!("{matches} {v}")
                });
            }
        }
    }
}

fn rules_chain(name: &str, rules: &[CompiledRule]) -> Chain {
    let mut lines = Vec::new();
    for r in rules {
        rule_lines(r, &mut lines);
    }
    Chain {
        name: name.to_string(),
        hook: None,
        rules: lines,
    }
}

fn chain(name: String, rules: Vec<String>) -> Chain {
    Chain {
        name,
        hook: None,
        rules,
    }
}

fn endpoint_chains(ep: &EndpointIntent, chains: &mut Vec<Chain>) {
    for (ingress, prefix, tiers) in [(true, "tw", &ep.ingress), (false, "fw", &ep.egress)] {
        let name = format!("{prefix}-{}", ep.interface);
        let mut body = Vec::new();
        for (n, tier) in tiers.iter().enumerate() {
            let tier_chain = format!("{name}-t{n}");
            let mut tl = Vec::new();
            for p in &tier.policies {
                tl.push(format!("jump {}", policy_chain(&policy_key(p), ingress)));
                tl.push(format!(
                    "meta mark & {:#x} != 0 return",
                    MARK_ACCEPT | MARK_PASS
                ));
            }
            tl.push(match tier.end {
                TierEnd::Deny => "drop".into(),
                TierEnd::Pass => format!("meta mark set meta mark | {MARK_PASS:#x} return"),
            });
            body.push(format!("jump {tier_chain}"));
            chains.push(chain(tier_chain, tl));
            body.push(format!("meta mark & {MARK_ACCEPT:#x} != 0 return"));
            body.push(format!("meta mark set meta mark & {CLEAR:#x}"));
        }
        // Reached only if every tier passed (or there were none): the profiles decide.
        for p in &ep.profiles {
            body.push(format!("jump {}", profile_chain(p, ingress)));
            body.push(format!("meta mark & {MARK_ACCEPT:#x} != 0 return"));
        }
        body.push("drop".into());
        chains.push(chain(name, body));
    }
}

/// Nets with every net inside another one left out, so that an interval
/// set holds them without merging (and each can later be deleted alone).
fn outermost(nets: &BTreeSet<IpNet>, f: Family) -> Vec<String> {
    let mut sorted: Vec<&IpNet> = nets.iter().filter(|n| Family::of(n) == f).collect();
    sorted.sort_by_key(|n| (n.network(), n.prefix_len()));
    let mut kept: Vec<&IpNet> = Vec::new();
    for n in sorted {
        if kept.last().is_none_or(|k| !k.contains(n)) {
            kept.push(n);
        }
    }
    kept.iter().map(|n| n.to_string()).collect()
}

fn set_defs(state: &DesiredState, out: &mut Vec<Collection>) {
    for (id, members) in &state.sets {
        for f in [Family::V4, Family::V6] {
            let (ty, flags, elements): (&str, &str, Vec<String>) = match members {
                SetMembers::Nets(nets) => (
                    if f == Family::V4 {
                        "ipv4_addr"
                    } else {
                        "ipv6_addr"
                    },
                    "flags interval; ",
                    outermost(nets, f),
                ),
                SetMembers::NamedPorts(ps) => (
                    if f == Family::V4 {
                        "ipv4_addr . inet_proto . inet_service"
                    } else {
                        "ipv6_addr . inet_proto . inet_service"
                    },
                    "",
                    ps.iter()
                        .filter(|p| Family::of(&p.net) == f)
                        .map(|p| format!("{} . {} . {}", p.net.addr(), p.protocol, p.port))
                        .collect(),
                ),
            };
            out.push(Collection {
                kind: "set",
                name: format!("{id}_{}", f.suffix()),
                decl: format!("type {ty}; {flags}"),
                elements,
            });
        }
    }
}

fn rules_of(rules: &CompiledRules, ingress: bool) -> &[CompiledRule] {
    if ingress {
        &rules.ingress
    } else {
        &rules.egress
    }
}

/// The whole `inet calico` table as text.
pub fn render(state: &DesiredState) -> String {
    build(state).to_text()
}

/// The hosts allowed to send VXLAN to this node, per family: `None` where
/// this node has no tunnel of that family (the port is then left alone).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VxlanSources {
    pub port: u16,
    pub v4: Option<BTreeSet<std::net::IpAddr>>,
    pub v6: Option<BTreeSet<std::net::IpAddr>>,
}

/// What happens to traffic from a workload to its own host once the
/// workload's egress policy allowed it (`defaultEndpointToHostAction`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum EndpointToHost {
    /// Felix's default.
    #[default]
    Drop,
    /// Leave it to the host's other rules.
    Return,
    Accept,
}

/// The node's settings that shape the table beside the workloads' policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRules {
    pub vxlan: VxlanSources,
    /// UDP port whose packets workloads may not send (VXLAN:
    /// `allowVXLANPacketsFromWorkloads` false); None: allowed.
    pub workload_vxlan_drop: Option<u16>,
    /// Drop IP-in-IP from workloads (`allowIPIPPacketsFromWorkloads` false).
    pub workload_ipip_drop: bool,
    /// Workloads may send from their allowSpoofedSourcePrefixes
    /// (`workloadSourceSpoofing: Any`); otherwise only from their own addresses.
    pub source_spoofing: bool,
    pub endpoint_to_host: EndpointToHost,
}

impl Default for NodeRules {
    /// Felix's defaults: no tunnel sent by a workload, no spoofing, and
    /// nothing from a workload to its host.
    fn default() -> Self {
        NodeRules {
            vxlan: VxlanSources::default(),
            workload_vxlan_drop: Some(4789),
            workload_ipip_drop: true,
            source_spoofing: false,
            endpoint_to_host: EndpointToHost::Drop,
        }
    }
}

/// The whole `inet calico` table, with Felix's defaults.
pub fn build(state: &DesiredState) -> Table {
    build_with(state, &NodeRules::default())
}

/// An endpoint whose interface name is not one: left out of every chain,
/// map and rule (the calculation graph already refuses it; this is the
/// last check before the kernel).
fn programmable(ep: &EndpointIntent) -> bool {
    calico_api::interface_name(&ep.interface).is_ok()
}

/// The source check of one workload, run before conntrack so that a
/// spoofed packet never creates a connection: tunnels the workload may not
/// send, then its own addresses (and allowed prefixes), IPv6 link-local
/// (neighbour discovery with its host) and the unspecified address for
/// ICMPv6 (duplicate address detection) are accepted (for this hook:
/// policy still runs in forward and input); anything else is dropped.
fn source_chain(ep: &EndpointIntent, node: &NodeRules) -> Chain {
    let mut rules = Vec::new();
    if let Some(port) = node.workload_vxlan_drop {
        rules.push(format!("udp dport {port} counter drop"));
    }
    if node.workload_ipip_drop {
        rules.push("meta l4proto 4 counter drop".into());
    }
    let mut own: Vec<IpNet> = ep.ips.clone();
    if node.source_spoofing {
        own.extend(ep.spoof.iter().copied());
    }
    for f in [Family::V4, Family::V6] {
        if let Some(list) = net_list(&own, f) {
            rules.push(format!("{} saddr {list} accept", f.addr()));
        }
    }
    rules.push("ip6 saddr fe80::/10 accept".into());
    rules.push("ip6 saddr :: meta l4proto ipv6-icmp accept".into());
    rules.push("counter drop".into());
    chain(format!("sp-{}", ep.interface), rules)
}

/// The whole `inet calico` table for a node's settings. VXLAN is accepted
/// only from `vxlan`'s hosts (Calico's other nodes): a packet tunnelled
/// from anywhere else could carry any inner source address, so it is
/// dropped before it is decapsulated.
pub fn build_with(state: &DesiredState, node: &NodeRules) -> Table {
    let vxlan = &node.vxlan;
    let endpoints: Vec<&EndpointIntent> = state
        .endpoints
        .values()
        .filter(|e| programmable(e))
        .collect();
    let mut t = Table::default();
    let mut host_input: Vec<String> = Vec::new();
    for (set, ty, match_, peers) in [
        ("vxlan-peers-v4", "ipv4_addr", "ip saddr", &vxlan.v4),
        ("vxlan-peers-v6", "ipv6_addr", "ip6 saddr", &vxlan.v6),
    ] {
        let Some(peers) = peers else { continue };
        t.collections.push(Collection {
            kind: "set",
            name: set.into(),
            decl: format!("type {ty}; "),
            elements: peers.iter().map(ToString::to_string).collect(),
        });
        host_input.push(format!(
            "{match_} != @{set} udp dport {} counter drop",
            vxlan.port
        ));
    }
    // ... and only through the interface this host reaches that node by
    // (a node's address arriving from a local container or a second
    // interface is forged): strict reverse-path for tunnel packets.
    if vxlan.v4.is_some() || vxlan.v6.is_some() {
        host_input.push(format!(
            "udp dport {} fib saddr . iif oif missing counter drop",
            vxlan.port
        ));
    }
    set_defs(state, &mut t.collections);
    for (name, prefix) in [("from-wl", "fw"), ("to-wl", "tw"), ("wl-src", "sp")] {
        t.collections.push(Collection {
            kind: "map",
            name: name.into(),
            decl: "type ifname : verdict; ".into(),
            elements: endpoints
                .iter()
                .map(|e| format!("\"{}\" : jump {prefix}-{}", e.interface, e.interface))
                .collect(),
        });
    }
    for (key, rules) in &state.policies {
        for ingress in [true, false] {
            t.chains.push(rules_chain(
                &policy_chain(key, ingress),
                rules_of(rules, ingress),
            ));
        }
    }
    for (name, rules) in &state.profiles {
        for ingress in [true, false] {
            t.chains.push(rules_chain(
                &profile_chain(name, ingress),
                rules_of(rules, ingress),
            ));
        }
    }
    // Profiles an endpoint names but nobody defined: nothing allowed.
    let mut missing: Vec<&String> = endpoints
        .iter()
        .flat_map(|e| e.profiles.iter())
        .filter(|p| !state.profiles.contains_key(*p))
        .collect();
    missing.sort();
    missing.dedup();
    for p in missing {
        for ingress in [true, false] {
            t.chains.push(rules_chain(&profile_chain(p, ingress), &[]));
        }
    }
    for ep in &endpoints {
        endpoint_chains(ep, &mut t.chains);
        t.chains.push(source_chain(ep, node));
    }
    let clear = format!("meta mark set meta mark & {CLEAR:#x}");
    let undecided = format!("meta mark & {MARK_ACCEPT:#x} == 0");
    let fast_path = [
        "ct state established,related accept".to_string(),
        "ct state invalid drop".to_string(),
    ];
    let from_wl = [
        clear.clone(),
        "iifname vmap @from-wl".to_string(),
        format!("iifname \"cali*\" {undecided} drop"),
    ];
    let to_wl = [
        clear,
        "oifname vmap @to-wl".to_string(),
        format!("oifname \"cali*\" {undecided} drop"),
    ];
    t.chains.push(Chain {
        name: "forward".into(),
        hook: Some("type filter hook forward priority filter; policy accept;".into()),
        rules: fast_path
            .iter()
            .chain(&from_wl)
            .chain(&to_wl)
            .cloned()
            .collect(),
    });
    let to_host = match node.endpoint_to_host {
        EndpointToHost::Drop => Some("iifname \"cali*\" counter drop"),
        EndpointToHost::Accept => Some("iifname \"cali*\" accept"),
        EndpointToHost::Return => None,
    };
    // Neighbour discovery and multicast listeners between a workload and
    // its host work whatever the policy or the endpoint-to-host action (as
    // Felix's workload-to-host chain allows them).
    let ndp = format!(
        "iifname \"{WORKLOAD_INTERFACE_PREFIX}*\" icmpv6 type {{ mld-listener-query, mld-listener-report, \
         mld-listener-done, nd-router-solicit, nd-neighbor-solicit, nd-neighbor-advert, mld2-listener-report }} accept"
    );
    t.chains.push(Chain {
        name: "input".into(),
        hook: Some("type filter hook input priority filter; policy accept;".into()),
        rules: host_input
            .iter()
            .chain(&fast_path)
            .chain(std::iter::once(&ndp))
            .chain(&from_wl)
            .cloned()
            .chain(to_host.map(String::from))
            .collect(),
    });
    // Before conntrack: a workload sends only from its own addresses, and
    // an interface with no programmed endpoint sends nothing.
    t.chains.push(Chain {
        name: "prerouting".into(),
        hook: Some("type filter hook prerouting priority raw; policy accept;".into()),
        rules: vec![
            "iifname vmap @wl-src".into(),
            format!("iifname \"{WORKLOAD_INTERFACE_PREFIX}*\" counter drop"),
        ],
    });
    t
}
