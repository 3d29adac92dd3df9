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
    /// None of a policy's rules matched; why not, rule by rule.
    NoMatch {
        tier: String,
        policy: PolicyId,
        why: Vec<String>,
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
        why: Vec<String>,
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
///
/// `selectors` names the selector each set stands for (see
/// `CalcGraph::set_selectors`), for the reasons a rule does not match.
pub fn evaluate(
    state: &DesiredState,
    ep: &EndpointIntent,
    ingress: bool,
    packet: &Packet,
    selectors: &BTreeMap<SetId, String>,
) -> Decision {
    let mut steps = Vec::new();
    let mut ctx = Matcher {
        sets: &state.sets,
        selectors,
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
            let mut why = Vec::new();
            for (index, r) in rules.iter().enumerate() {
                if let Err(reason) = ctx.rule(r) {
                    why.push(format!("rule {index}: {reason}"));
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
            if rules.is_empty() {
                why.push("it has no rules in this direction".into());
            }
            steps.push(Step::NoMatch {
                tier: tier.tier.clone(),
                policy: pid.clone(),
                why,
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
        let mut why = Vec::new();
        for (index, r) in rules.iter().enumerate() {
            if let Err(reason) = ctx.rule(r) {
                why.push(format!("rule {index}: {reason}"));
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
                why,
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
    selectors: &'a BTreeMap<SetId, String>,
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

    /// The selector a set stands for, as people read it.
    fn sel(&self, id: &SetId) -> String {
        self.selectors
            .get(id)
            .map_or_else(|| format!("set {id}"), |s| format!("selector {s}"))
    }

    /// Whether `r` matches; if not, the first reason why.
    fn rule(&mut self, r: &CompiledRule) -> Result<(), String> {
        let p = *self.packet;
        let v6 = p.dst.is_ipv6();
        if let Some(v) = r.ip_version.filter(|v| (*v == 6) != v6) {
            return Err(format!("ipVersion {v}"));
        }
        if let Some(x) = r.protocol.filter(|x| *x != p.protocol) {
            return Err(format!(
                "protocol {}, not {}",
                protocol_name(x),
                protocol_name(p.protocol)
            ));
        }
        if let Some(x) = r.not_protocol.filter(|x| *x == p.protocol) {
            return Err(format!("notProtocol {}", protocol_name(x)));
        }
        let icmp_proto = if v6 { 58 } else { 1 };
        if let Some((t, c)) = r.icmp {
            let ok = p.protocol == icmp_proto
                && p.icmp
                    .is_some_and(|(pt, pc)| pt == t && c.is_none_or(|c| c == pc));
            if !ok {
                let code = c.map(|c| format!(" code {c}")).unwrap_or_default();
                return Err(format!("ICMP type {t}{code}"));
            }
        }
        if let Some((t, c)) = r.not_icmp {
            let ok = p.protocol == icmp_proto
                && p.icmp
                    .is_some_and(|(pt, pc)| pt != t && c.is_none_or(|c| c != pc));
            if !ok {
                return Err(format!("notICMP type {t}"));
            }
        }
        self.side(&r.src, p.src, p.src_port, true)?;
        self.side(&r.dst, p.dst, p.dst_port, false)
    }

    fn side(
        &mut self,
        m: &SideMatch,
        ip: IpAddr,
        port: Option<u16>,
        source: bool,
    ) -> Result<(), String> {
        let which = if source { "source" } else { "destination" };
        let family = |n: &&IpNet| n.addr().is_ipv6() == ip.is_ipv6();
        if !m.nets.is_empty() {
            let same: Vec<IpNet> = m.nets.iter().filter(family).copied().collect();
            if !contains(&same, ip) {
                return Err(format!("{which} {ip} is not in nets {}", list(&m.nets)));
            }
        }
        if contains(&m.not_nets, ip) {
            return Err(format!("{which} {ip} is in notNets {}", list(&m.not_nets)));
        }
        if let Some(s) = m.sets.iter().find(|s| !self.in_set(s, ip)) {
            return Err(format!("{which} {ip} is not selected by {}", self.sel(s)));
        }
        if let Some(s) = m.not_sets.iter().find(|s| self.in_set(s, ip)) {
            return Err(format!(
                "{which} {ip} is selected by the negated {}",
                self.sel(s)
            ));
        }
        let wants_ports = !m.ports.is_empty() || !m.named_port_sets.is_empty();
        let avoids_ports = !m.not_ports.is_empty() || !m.not_named_port_sets.is_empty();
        if !(wants_ports || avoids_ports) {
            return Ok(());
        }
        if !self.has_ports() {
            return Err(format!(
                "{which} ports, and {} has none",
                protocol_name(self.packet.protocol)
            ));
        }
        let Some(port) = port else {
            // A source port was not given: a rule on source ports is taken
            // as not matching, and the outcome flagged.
            if source {
                self.uncertain = true;
            }
            return Err(format!("{which} port not given"));
        };
        if wants_ports
            && !(in_ranges(&m.ports, port)
                || m.named_port_sets
                    .iter()
                    .any(|s| self.in_port_set(s, ip, port)))
        {
            return Err(format!("{which} port {port} is not {}", ports(m)));
        }
        if in_ranges(&m.not_ports, port)
            || m.not_named_port_sets
                .iter()
                .any(|s| self.in_port_set(s, ip, port))
        {
            return Err(format!("{which} port {port} is excluded (notPorts)"));
        }
        Ok(())
    }
}

/// A protocol number as Calico writes it (`TCP`), or the number.
pub fn protocol_name(p: u8) -> String {
    match p {
        1 => "ICMP".into(),
        6 => "TCP".into(),
        17 => "UDP".into(),
        58 => "ICMPv6".into(),
        132 => "SCTP".into(),
        136 => "UDPLite".into(),
        n => n.to_string(),
    }
}

fn list(nets: &[IpNet]) -> String {
    let v: Vec<String> = nets.iter().map(ToString::to_string).collect();
    format!("[{}]", v.join(", "))
}

/// The ports a side wants, as people read them.
fn ports(m: &SideMatch) -> String {
    let mut v: Vec<String> = m
        .ports
        .iter()
        .map(|r| {
            if r.min == r.max {
                r.min.to_string()
            } else {
                format!("{}:{}", r.min, r.max)
            }
        })
        .collect();
    if !m.named_port_sets.is_empty() {
        v.push("a named port".into());
    }
    v.join(" or ")
}
