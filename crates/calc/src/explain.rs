//! What policy does to one packet, worked out offline from the desired
//! state the calculation graph computes for a node: the same compiled
//! rules, sets, tier order and profiles the agent programs, walked in the
//! order the nftables dataplane walks them (`dataplane::render`): each
//! tier's policies in order, a rule's Allow accepts, Deny drops, Pass
//! leaves the tier, Log goes on; a tier nobody decided ends as it says;
//! past the last tier (or with no policy at all) the profiles decide, and
//! nothing allowing means a drop.

use crate::intent::*;
use crate::state::{policy_key, DesiredState};
use calico_api::Action;
use calico_net::IpNet;
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::IpAddr;

/// The packet: the first of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Packet {
    pub src: IpAddr,
    pub dst: IpAddr,
    /// IP protocol number (6 TCP, 17 UDP, 132 SCTP, 1 ICMP, 58 ICMPv6).
    pub protocol: u8,
    pub dst_port: Option<u16>,
    /// Unknown (an ephemeral port) unless given.
    pub src_port: Option<u16>,
    /// ICMP type and code.
    pub icmp: Option<(u8, u8)>,
}

/// One thing the evaluation went through.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "step", rename_all = "camelCase")]
pub enum Step {
    /// A policy's rule matched (rule index from 0, as Calico counts).
    Rule {
        tier: String,
        policy: PolicyId,
        index: usize,
        action: Action,
    },
    /// None of a policy's rules matched.
    NoMatch {
        tier: String,
        policy: PolicyId,
    },
    /// Nobody in the tier decided: its end action applies.
    TierEnd {
        tier: String,
        end: TierEnd,
    },
    /// A profile's rule matched.
    ProfileRule {
        profile: String,
        index: usize,
        action: Action,
    },
    ProfileNoMatch {
        profile: String,
    },
    /// No profile allowed it.
    NoProfileAllowed,
}

/// The outcome in one direction at one endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    pub allowed: bool,
    /// What decided, in words.
    pub by: String,
    pub steps: Vec<Step>,
    /// Some rule on the way matched on the source port, which was not
    /// given: the outcome may differ for other source ports.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub depends_on_source_port: bool,
}

fn policy_name(p: &PolicyId) -> String {
    match &p.namespace {
        Some(ns) => format!("NetworkPolicy {ns}/{}", p.name),
        None => format!("GlobalNetworkPolicy {}", p.name),
    }
}

/// Evaluates `ep`'s policy for `packet`: ingress (to it) or egress (from
/// it), with the sets, policies and profiles of `state`.
pub fn evaluate(
    state: &DesiredState,
    ep: &EndpointIntent,
    ingress: bool,
    packet: &Packet,
) -> Decision {
    let mut steps = Vec::new();
    let mut ctx = Matcher {
        sets: &state.sets,
        packet,
        uncertain: false,
    };
    let tiers = if ingress { &ep.ingress } else { &ep.egress };
    let rules_of = |r: &CompiledRules| -> Vec<CompiledRule> {
        if ingress {
            r.ingress.clone()
        } else {
            r.egress.clone()
        }
    };
    let done = |allowed: bool, by: String, steps: Vec<Step>, ctx: &Matcher<'_>| Decision {
        allowed,
        by,
        steps,
        depends_on_source_port: ctx.uncertain,
    };
    'tiers: for tier in tiers {
        for pid in &tier.policies {
            let rules = state
                .policies
                .get(&policy_key(pid))
                .map(rules_of)
                .unwrap_or_default();
            let mut decided = false;
            for (index, r) in rules.iter().enumerate() {
                if !ctx.rule(r) {
                    continue;
                }
                steps.push(Step::Rule {
                    tier: tier.tier.clone(),
                    policy: pid.clone(),
                    index,
                    action: r.action,
                });
                let by = format!(
                    "{} rule {index} ({:?}) in tier {}",
                    policy_name(pid),
                    r.action,
                    tier.tier
                );
                match r.action {
                    Action::Allow => return done(true, by, steps, &ctx),
                    Action::Deny => return done(false, by, steps, &ctx),
                    Action::Pass => {
                        decided = true;
                        break;
                    }
                    Action::Log => {}
                }
            }
            if decided {
                continue 'tiers;
            }
            steps.push(Step::NoMatch {
                tier: tier.tier.clone(),
                policy: pid.clone(),
            });
        }
        steps.push(Step::TierEnd {
            tier: tier.tier.clone(),
            end: tier.end,
        });
        if tier.end == TierEnd::Deny {
            let by = format!(
                "the end of tier {}: no policy in it allowed or passed the packet",
                tier.tier
            );
            return done(false, by, steps, &ctx);
        }
    }
    for name in &ep.profiles {
        let rules = state.profiles.get(name).map(rules_of).unwrap_or_default();
        let mut matched = false;
        for (index, r) in rules.iter().enumerate() {
            if !ctx.rule(r) {
                continue;
            }
            steps.push(Step::ProfileRule {
                profile: name.clone(),
                index,
                action: r.action,
            });
            let by = format!("profile {name} rule {index} ({:?})", r.action);
            match r.action {
                Action::Allow => return done(true, by, steps, &ctx),
                Action::Deny => return done(false, by, steps, &ctx),
                // A profile's Pass ends the profile, as a policy's ends a tier.
                Action::Pass => {
                    matched = true;
                    break;
                }
                Action::Log => {}
            }
        }
        if !matched {
            steps.push(Step::ProfileNoMatch {
                profile: name.clone(),
            });
        }
    }
    steps.push(Step::NoProfileAllowed);
    let by = if tiers.is_empty() {
        "no policy applies and no profile allows it".to_string()
    } else {
        "every tier passed and no profile allows it".to_string()
    };
    done(false, by, steps, &ctx)
}

struct Matcher<'a> {
    sets: &'a BTreeMap<SetId, SetMembers>,
    packet: &'a Packet,
    uncertain: bool,
}

fn contains(nets: &[IpNet], ip: IpAddr) -> bool {
    nets.iter().any(|n| n.contains(&ip))
}

fn in_ranges(ranges: &[PortRange], port: u16) -> bool {
    ranges.iter().any(|r| (r.min..=r.max).contains(&port))
}

impl Matcher<'_> {
    fn in_set(&self, id: &SetId, ip: IpAddr) -> bool {
        match self.sets.get(id) {
            Some(SetMembers::Nets(nets)) => nets.iter().any(|n| n.contains(&ip)),
            _ => false,
        }
    }

    fn in_port_set(&self, id: &SetId, ip: IpAddr, port: u16) -> bool {
        match self.sets.get(id) {
            Some(SetMembers::NamedPorts(members)) => members.iter().any(|m| {
                m.net.contains(&ip) && m.protocol == self.packet.protocol && m.port == port
            }),
            _ => false,
        }
    }

    /// Whether the protocol carries ports (`th sport`/`th dport` match).
    fn has_ports(&self) -> bool {
        matches!(self.packet.protocol, 6 | 17 | 132 | 136)
    }

    fn rule(&mut self, r: &CompiledRule) -> bool {
        let p = *self.packet;
        let v6 = p.dst.is_ipv6();
        if r.ip_version.is_some_and(|v| (v == 6) != v6) {
            return false;
        }
        if r.protocol.is_some_and(|x| x != p.protocol)
            || r.not_protocol.is_some_and(|x| x == p.protocol)
        {
            return false;
        }
        let icmp_proto = if v6 { 58 } else { 1 };
        if let Some((t, c)) = r.icmp {
            let ok = p.protocol == icmp_proto
                && p.icmp
                    .is_some_and(|(pt, pc)| pt == t && c.is_none_or(|c| c == pc));
            if !ok {
                return false;
            }
        }
        if let Some((t, c)) = r.not_icmp {
            let ok = p.protocol == icmp_proto
                && p.icmp
                    .is_some_and(|(pt, pc)| pt != t && c.is_none_or(|c| c != pc));
            if !ok {
                return false;
            }
        }
        self.side(&r.src, p.src, p.src_port, true) && self.side(&r.dst, p.dst, p.dst_port, false)
    }

    fn side(&mut self, m: &SideMatch, ip: IpAddr, port: Option<u16>, source: bool) -> bool {
        let family = |n: &&IpNet| n.addr().is_ipv6() == ip.is_ipv6();
        if !m.nets.is_empty() {
            let same: Vec<IpNet> = m.nets.iter().filter(family).copied().collect();
            if !contains(&same, ip) {
                return false;
            }
        }
        if contains(&m.not_nets, ip) {
            return false;
        }
        if !m.sets.iter().all(|s| self.in_set(s, ip)) {
            return false;
        }
        if m.not_sets.iter().any(|s| self.in_set(s, ip)) {
            return false;
        }
        let wants_ports = !m.ports.is_empty() || !m.named_port_sets.is_empty();
        let avoids_ports = !m.not_ports.is_empty() || !m.not_named_port_sets.is_empty();
        if !(wants_ports || avoids_ports) {
            return true;
        }
        if !self.has_ports() {
            return false;
        }
        let Some(port) = port else {
            // A source port was not given: a rule on source ports is taken
            // as not matching, and the outcome flagged.
            if source {
                self.uncertain = true;
            }
            return false;
        };
        if wants_ports
            && !(in_ranges(&m.ports, port)
                || m.named_port_sets
                    .iter()
                    .any(|s| self.in_port_set(s, ip, port)))
        {
            return false;
        }
        if in_ranges(&m.not_ports, port)
            || m.not_named_port_sets
                .iter()
                .any(|s| self.in_port_set(s, ip, port))
        {
            return false;
        }
        true
    }
}
