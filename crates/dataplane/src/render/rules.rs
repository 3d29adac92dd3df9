//! One compiled rule as nft rule lines: address families, nets and sets,
//! ports and named ports, ICMP, and the verdict.

use super::*;

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Family {
    V4,
    V6,
}

impl Family {
    pub(super) fn addr(self) -> &'static str {
        match self {
            Family::V4 => "ip",
            Family::V6 => "ip6",
        }
    }
    pub(super) fn suffix(self) -> &'static str {
        match self {
            Family::V4 => "v4",
            Family::V6 => "v6",
        }
    }
    pub(super) fn of(net: &IpNet) -> Family {
        if net.addr().is_ipv4() {
            Family::V4
        } else {
            Family::V6
        }
    }
}

pub(super) fn net_text(net: &IpNet) -> String {
    if net.prefix_len() == net.max_prefix_len() {
        net.addr().to_string()
    } else {
        net.to_string()
    }
}

pub(super) fn net_list(nets: &[IpNet], f: Family) -> Option<String> {
    let list: Vec<String> = nets
        .iter()
        .filter(|n| Family::of(n) == f)
        .map(net_text)
        .collect();
    (!list.is_empty()).then(|| format!("{{ {} }}", list.join(", ")))
}

pub(super) fn port_list(ports: &[PortRange]) -> String {
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

pub(super) fn addressed(m: &SideMatch) -> bool {
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
pub(super) fn families(r: &CompiledRule) -> Vec<Option<Family>> {
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
pub(super) fn side(
    m: &SideMatch,
    f: Option<Family>,
    dir: &str,
    port_alt: Option<&PortAlt>,
) -> Option<String> {
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
pub(super) enum PortAlt {
    Numbers(Vec<PortRange>),
    Named(String),
}

pub(super) fn port_alts(m: &SideMatch) -> Vec<Option<PortAlt>> {
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

/// The verdict of a rule; with `flow`, a deciding verdict first logs the
/// packet to that NFLOG group with the rule's identity.
pub(super) fn verdict(action: Action, flow: Option<&Flow<'_>>) -> String {
    let v = match action {
        Action::Allow => format!("meta mark set meta mark | {MARK_ACCEPT:#x} return"),
        Action::Pass => format!("meta mark set meta mark | {MARK_PASS:#x} return"),
        Action::Deny => "drop".into(),
        Action::Log => return "log prefix \"calico-packet: \" level info".into(),
    };
    match flow {
        // Its log deferred to the packet's next one (`deferred`).
        Some(Flow { id: Some(id), .. }) if action == Action::Allow => {
            super::deferred::deferred_allow(*id)
        }
        Some(f) => format!("{} {v}", f.log(action_letter(action), f.index)),
        None => v,
    }
}

fn action_letter(a: Action) -> char {
    match a {
        Action::Allow => 'A',
        Action::Deny => 'D',
        Action::Pass => 'P',
        Action::Log => 'L',
    }
}

/// Where a deciding rule logs for flow records: its chain, its index in
/// the policy (or profile), and the NFLOG group of its direction.
pub(super) struct Flow<'a> {
    pub(super) chain: &'a str,
    pub(super) index: usize,
    pub(super) group: u16,
    /// An egress Allow's identity: set in the mark instead of logging.
    pub(super) id: Option<u16>,
}

impl Flow<'_> {
    /// `log prefix "<letter><index>|<chain>" group <group>`: what the flow
    /// collector reads back (the chain names the policy, the index its rule).
    pub(super) fn log(&self, letter: char, index: impl std::fmt::Display) -> String {
        format!(
            "log prefix \"{letter}{index}|{}\" group {}",
            self.chain, self.group
        )
    }
}

pub(super) fn rule_lines(r: &CompiledRule, flow: Option<&Flow<'_>>, out: &mut Vec<String>) {
    rule_lines_ending(r, flow, None, out);
}

/// The chains a port map's Allow and Pass go to: they set the verdict's
/// mark and return to whoever jumped to the policy (a `goto` keeps no
/// place to come back to in the policy's chain).
pub const VERDICT_ALLOW: &str = "verdict-allow";
pub const VERDICT_PASS: &str = "verdict-pass";

/// A port map as one verdict-map match: `th dport vmap { 80 : goto
/// verdict-allow, 81-89 : drop }`.
fn port_vmap(map: &[(calico_calc::PortRange, Action)]) -> String {
    let entries: Vec<String> = map
        .iter()
        .map(|(p, a)| {
            let key = if p.min == p.max {
                p.min.to_string()
            } else {
                format!("{}-{}", p.min, p.max)
            };
            let verdict = match a {
                Action::Allow => format!("goto {VERDICT_ALLOW}"),
                Action::Pass => format!("goto {VERDICT_PASS}"),
                _ => "drop".to_string(),
            };
            format!("{key} : {verdict}")
        })
        .collect();
    format!("th dport vmap {{ {} }}", entries.join(", "))
}

/// `rule_lines` with `ending` (a verdict-map match) in place of the verdict.
fn rule_lines_ending(
    r: &CompiledRule,
    flow: Option<&Flow<'_>>,
    ending: Option<&str>,
    out: &mut Vec<String>,
) {
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
                let v = ending.map_or_else(|| verdict(r.action, flow), str::to_string);
                out.push(if matches.is_empty() {
                    v
                } else {
                    format!("{matches} {v}")
                });
            }
        }
    }
}

/// A policy's or profile's rules as one chain; `group`: log deciding
/// verdicts there for flow records (`ids`: the egress Allows that set
/// their identity in the mark instead).
pub(super) fn rules_chain(
    name: &str,
    rules: &[CompiledRule],
    group: Option<u16>,
    ids: Option<&std::collections::BTreeMap<usize, u16>>,
) -> Chain {
    // Without flow logs nothing names a rule by its index: runs that
    // decide alike are joined, runs alike but for actions and ports become
    // verdict maps (`merge`).
    if group.is_none() {
        let mut lines = Vec::new();
        for c in super::merge::compile(rules) {
            match c {
                super::merge::Compiled::Rule(r) => rule_lines(&r, None, &mut lines),
                super::merge::Compiled::PortMap { base, map } => {
                    rule_lines_ending(&base, None, Some(&port_vmap(&map)), &mut lines);
                }
            }
        }
        return chain(name.to_string(), lines);
    }
    let mut lines = Vec::new();
    for (index, r) in rules.iter().enumerate() {
        let flow = group.map(|group| Flow {
            chain: name,
            index,
            group,
            id: ids.and_then(|ids| ids.get(&index).copied()),
        });
        rule_lines(r, flow.as_ref(), &mut lines);
    }
    Chain {
        name: name.to_string(),
        hook: None,
        rules: lines,
    }
}

pub(super) fn chain(name: String, rules: Vec<String>) -> Chain {
    Chain {
        name,
        hook: None,
        rules,
    }
}
