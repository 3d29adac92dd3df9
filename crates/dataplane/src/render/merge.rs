//! Rule lists that cost O(1): a run of consecutive rules that decide
//! alike (Allow, Deny or Pass) and differ only in one list of addresses or
//! ports, any of which matches, is one rule with the lists joined, so the
//! kernel looks the packet up in one set instead of walking the rules one
//! by one. First-match order is kept: a packet matches some rule of the
//! run exactly when it matches the joined one, and they all decide the
//! same. A Log rule (which does not end the walk) is never joined, nor
//! are lists where one side is empty (that matches anything), nor negated
//! lists (none-of does not join by union). Only where flow logs are off:
//! a flow record names the rule that decided by its index.

use calico_api::Action;
use calico_calc::{CompiledRule, PortRange};

/// What a policy's rule list is rendered from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Compiled {
    Rule(CompiledRule),
    /// Consecutive rules alike but for their actions and destination
    /// ports: one lookup in a verdict map, port → action. A port two of
    /// them list belongs to the earlier (first match); `base` is the rule
    /// without action and ports.
    PortMap {
        base: CompiledRule,
        map: Vec<(PortRange, Action)>,
    },
}

/// Rules a run needs at least to become a verdict map.
const MIN_MAP: usize = 3;

/// The rules joined (`merge_runs`), then each run alike but for actions
/// and destination ports as a verdict map.
pub(crate) fn compile(rules: &[CompiledRule]) -> Vec<Compiled> {
    let joined = merge_runs(rules);
    let mut out = Vec::new();
    let mut i = 0;
    while i < joined.len() {
        let base = map_base(&joined[i]);
        let mut end = i + 1;
        if let Some(b) = &base {
            while end < joined.len() && map_base(&joined[end]).as_ref() == Some(b) {
                end += 1;
            }
        }
        match base {
            Some(base) if end - i >= MIN_MAP => {
                out.push(Compiled::PortMap {
                    base,
                    map: port_map(&joined[i..end]),
                });
                i = end;
            }
            _ => {
                out.push(Compiled::Rule(joined[i].clone()));
                i += 1;
            }
        }
    }
    out
}

/// The rule without its action and destination ports, if it can be an
/// entry of a port map: it decides (not Log), lists destination port
/// numbers (not named ports) and a protocol with ports.
fn map_base(r: &CompiledRule) -> Option<CompiledRule> {
    if r.action == Action::Log
        || r.dst.ports.is_empty()
        || !r.dst.named_port_sets.is_empty()
        || !matches!(r.protocol, Some(6 | 17 | 132 | 136))
    {
        return None;
    }
    let mut b = r.clone();
    b.action = Action::Allow;
    b.dst.ports.clear();
    Some(b)
}

/// Disjoint port intervals and their actions, each port to the first rule
/// that lists it; neighbours with one action joined.
fn port_map(run: &[CompiledRule]) -> Vec<(PortRange, Action)> {
    let mut taken: Vec<(u16, u16, Action)> = Vec::new();
    for r in run {
        for p in &r.dst.ports {
            for (lo, hi) in subtract((p.min, p.max), &taken) {
                taken.push((lo, hi, r.action));
            }
        }
    }
    taken.sort_by_key(|t| t.0);
    let mut out: Vec<(PortRange, Action)> = Vec::new();
    for (lo, hi, a) in taken {
        match out.last_mut() {
            Some((last, action)) if *action == a && u32::from(last.max) + 1 == u32::from(lo) => {
                last.max = hi;
            }
            _ => out.push((PortRange { min: lo, max: hi }, a)),
        }
    }
    out
}

/// What of `range` no interval of `taken` covers.
fn subtract(range: (u16, u16), taken: &[(u16, u16, Action)]) -> Vec<(u16, u16)> {
    let mut pieces = vec![range];
    for &(lo, hi, _) in taken {
        let mut rest = Vec::new();
        for (a, b) in pieces {
            if hi < a || lo > b {
                rest.push((a, b));
                continue;
            }
            if lo > a {
                rest.push((a, lo - 1));
            }
            if hi < b {
                rest.push((hi + 1, b));
            }
        }
        pieces = rest;
    }
    pieces
}

/// The rules with each joinable run joined.
pub(crate) fn merge_runs(rules: &[CompiledRule]) -> Vec<CompiledRule> {
    let mut out: Vec<CompiledRule> = Vec::new();
    for r in rules {
        if let Some(joined) = out.last().and_then(|last| join(last, r)) {
            if let Some(last) = out.last_mut() {
                *last = joined;
            }
            continue;
        }
        out.push(r.clone());
    }
    out
}

/// The lists rules may differ in: source and destination addresses and ports.
const LISTS: usize = 4;

/// `a` and `b` as one rule, if they decide alike and differ only in one
/// joinable list.
fn join(a: &CompiledRule, b: &CompiledRule) -> Option<CompiledRule> {
    if a.action == Action::Log || a.action != b.action {
        return None;
    }
    if a == b {
        return Some(a.clone());
    }
    for which in 0..LISTS {
        // `a` with `b`'s list: equal to `b` when that list is all they differ in.
        let mut probe = a.clone();
        take_list(&mut probe, b, which);
        if probe != *b {
            continue;
        }
        let mut joined = a.clone();
        return extend_list(&mut joined, b, which).then_some(joined);
    }
    None
}

fn take_list(into: &mut CompiledRule, from: &CompiledRule, which: usize) {
    match which {
        0 => into.src.nets.clone_from(&from.src.nets),
        1 => into.dst.nets.clone_from(&from.dst.nets),
        2 => into.src.ports.clone_from(&from.src.ports),
        _ => into.dst.ports.clone_from(&from.dst.ports),
    }
}

/// Appends `from`'s list to `into`'s (new members only); false when either
/// is empty (matches anything: not a list to join).
fn extend_list(into: &mut CompiledRule, from: &CompiledRule, which: usize) -> bool {
    fn extend<T: Clone + PartialEq>(a: &mut Vec<T>, b: &[T]) -> bool {
        if a.is_empty() || b.is_empty() {
            return false;
        }
        for x in b {
            if !a.contains(x) {
                a.push(x.clone());
            }
        }
        true
    }
    match which {
        0 => extend(&mut into.src.nets, &from.src.nets),
        1 => extend(&mut into.dst.nets, &from.dst.nets),
        2 => extend(&mut into.src.ports, &from.src.ports),
        _ => extend(&mut into.dst.ports, &from.dst.ports),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use calico_calc::SideMatch;
    use calico_net::IpNet;
    use proptest::prelude::*;

    /// A packet: source and destination address, protocol, destination port.
    type Packet = (std::net::Ipv4Addr, std::net::Ipv4Addr, u8, u16);

    fn in_nets(nets: &[IpNet], a: std::net::Ipv4Addr) -> bool {
        nets.is_empty() || nets.iter().any(|n| n.contains(&std::net::IpAddr::V4(a)))
    }

    fn in_ports(ports: &[PortRange], p: u16) -> bool {
        ports.is_empty() || ports.iter().any(|r| (r.min..=r.max).contains(&p))
    }

    /// What the rules decide for a packet, first match wins; Log rules
    /// are counted (they do not decide).
    fn decide(rules: &[CompiledRule], p: Packet) -> (Option<Action>, usize) {
        let mut logged = 0;
        for r in rules {
            let hit = r.protocol.is_none_or(|x| x == p.2)
                && in_nets(&r.src.nets, p.0)
                && in_nets(&r.dst.nets, p.1)
                && in_ports(&r.dst.ports, p.3)
                && in_ports(&r.src.ports, 40000);
            if hit {
                if r.action == Action::Log {
                    logged += 1;
                    continue;
                }
                return (Some(r.action), logged);
            }
        }
        (None, logged)
    }

    /// The same over what the rules compile to.
    fn decide_compiled(rules: &[Compiled], p: Packet) -> (Option<Action>, usize) {
        let mut logged = 0;
        for c in rules {
            match c {
                Compiled::Rule(r) => match decide(std::slice::from_ref(r), p) {
                    (Some(a), n) => return (Some(a), logged + n),
                    (None, n) => logged += n,
                },
                Compiled::PortMap { base, map } => {
                    if decide(std::slice::from_ref(base), p).0.is_some() {
                        if let Some((_, a)) =
                            map.iter().find(|(r, _)| (r.min..=r.max).contains(&p.3))
                        {
                            return (Some(*a), logged);
                        }
                    }
                }
            }
        }
        (None, logged)
    }

    fn rule() -> impl Strategy<Value = CompiledRule> {
        let nets = proptest::collection::vec((0u8..4, 22u8..=32), 0..3).prop_map(|v| {
            v.into_iter()
                .map(|(b, len)| {
                    format!("10.0.{b}.0/{len}")
                        .parse::<IpNet>()
                        .map(|n| n.trunc())
                        .expect("net")
                })
                .collect::<Vec<_>>()
        });
        let ports = proptest::collection::vec((75u16..85, 0u16..4), 0..3).prop_map(|v| {
            v.into_iter()
                .map(|(min, span)| PortRange {
                    min,
                    max: min + span,
                })
                .collect::<Vec<_>>()
        });
        (
            prop_oneof![
                Just(Action::Allow),
                Just(Action::Deny),
                Just(Action::Pass),
                Just(Action::Log)
            ],
            prop_oneof![Just(None), Just(Some(6u8)), Just(Some(17u8))],
            nets.clone(),
            nets,
            ports,
        )
            .prop_map(|(action, protocol, src, dst, ports)| CompiledRule {
                action,
                ip_version: None,
                protocol,
                not_protocol: None,
                icmp: None,
                not_icmp: None,
                src: SideMatch {
                    nets: src,
                    ..SideMatch::default()
                },
                dst: SideMatch {
                    nets: dst,
                    ports,
                    ..SideMatch::default()
                },
            })
    }

    proptest! {
        /// Joined or not, every packet meets the same decision (and as
        /// many Log rules on the way).
        #[test]
        fn joined_rules_decide_as_the_rules_did(
            // Few distinct shapes, so that runs occur.
            rules in proptest::collection::vec(rule(), 0..12),
            packets in proptest::collection::vec((0u8..4, 0u8..255, 0u8..4, prop_oneof![Just(6u8), Just(17u8)], 73u16..92), 64),
        ) {
            let merged = merge_runs(&rules);
            prop_assert!(merged.len() <= rules.len());
            let compiled = compile(&rules);
            prop_assert!(compiled.len() <= rules.len());
            for (sb, sh, db, proto, port) in packets {
                let p = (
                    std::net::Ipv4Addr::new(10, 0, sb, sh),
                    std::net::Ipv4Addr::new(10, 0, db, 7),
                    proto,
                    port,
                );
                prop_assert_eq!(decide(&merged, p), decide(&rules, p), "{:?}", p);
                prop_assert_eq!(decide_compiled(&compiled, p), decide(&rules, p), "{:?} {:?}", p, compiled);
            }
        }
    }

    proptest! {
        /// Runs alike but for actions and ports (which become verdict
        /// maps, overlapping ports included) decide as the rules did.
        #[test]
        fn port_maps_decide_as_the_rules_did(
            run in proptest::collection::vec(
                (
                    prop_oneof![Just(Action::Allow), Just(Action::Deny), Just(Action::Pass), Just(Action::Log)],
                    0usize..2,
                    proptest::collection::vec((75u16..90, 0u16..3), 1..3),
                ),
                0..16,
            ),
            packets in proptest::collection::vec((0u8..2, prop_oneof![Just(6u8), Just(17u8)], 73u16..94), 64),
        ) {
            let rules: Vec<CompiledRule> = run
                .into_iter()
                .map(|(action, base, ports)| CompiledRule {
                    action,
                    ip_version: None,
                    protocol: Some(6),
                    not_protocol: None,
                    icmp: None,
                    not_icmp: None,
                    src: SideMatch {
                        nets: vec![format!("10.0.{base}.0/24").parse().expect("net")],
                        ..SideMatch::default()
                    },
                    dst: SideMatch {
                        ports: ports
                            .into_iter()
                            .map(|(min, span)| PortRange { min, max: min + span })
                            .collect(),
                        ..SideMatch::default()
                    },
                })
                .collect();
            let compiled = compile(&rules);
            for (sb, proto, port) in packets {
                let p = (
                    std::net::Ipv4Addr::new(10, 0, sb, 9),
                    std::net::Ipv4Addr::new(10, 0, 0, 7),
                    proto,
                    port,
                );
                prop_assert_eq!(decide_compiled(&compiled, p), decide(&rules, p), "{:?} {:?}", p, compiled);
            }
        }
    }

    #[test]
    fn a_thousand_port_rules_are_one() {
        let rules: Vec<CompiledRule> = (0..1000u16)
            .map(|i| CompiledRule {
                action: Action::Allow,
                ip_version: None,
                protocol: Some(6),
                not_protocol: None,
                icmp: None,
                not_icmp: None,
                src: SideMatch::default(),
                dst: SideMatch {
                    ports: vec![PortRange {
                        min: 10_000 + i,
                        max: 10_000 + i,
                    }],
                    ..SideMatch::default()
                },
            })
            .collect();
        let merged = merge_runs(&rules);
        assert_eq!(merged.len(), 1);
        assert_eq!(merged[0].dst.ports.len(), 1000);
        // A different action in between splits the run.
        let mut split = rules.clone();
        split[500].action = Action::Deny;
        assert_eq!(merge_runs(&split).len(), 3);
        // Log rules are never joined: a packet two of them match is
        // logged twice.
        let mut logs = rules[..2].to_vec();
        for r in &mut logs {
            r.action = Action::Log;
            r.dst.ports[0].max = 10_001;
        }
        assert_eq!(merge_runs(&logs).len(), 2);
        let p = (
            std::net::Ipv4Addr::new(10, 0, 0, 1),
            std::net::Ipv4Addr::new(10, 0, 0, 2),
            6,
            10_001,
        );
        assert_eq!(decide(&logs, p), (None, 2));
        // Alternating actions: one verdict map, each port its own rule's.
        let mut alternating = rules.clone();
        for (i, r) in alternating.iter_mut().enumerate() {
            if i % 2 == 1 {
                r.action = Action::Deny;
            }
        }
        match compile(&alternating).as_slice() {
            [Compiled::PortMap { map, .. }] => {
                assert_eq!(map.len(), 1000);
                assert_eq!(
                    map[1],
                    (
                        PortRange {
                            min: 10_001,
                            max: 10_001
                        },
                        Action::Deny
                    )
                );
            }
            other => panic!("{other:?}"),
        }
        // An empty list matches anything: not joined with a list.
        let mut any = rules[..2].to_vec();
        any[1].dst.ports.clear();
        assert_eq!(merge_runs(&any).len(), 2);
    }
}
