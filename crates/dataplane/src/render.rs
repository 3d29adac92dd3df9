//! Desired state to nft text. Pure: the same state always renders the
//! same text, byte for byte.

use crate::table::{Chain, Collection, Table};
use crate::{MARK_ACCEPT, MARK_PASS};
use calico_api::Action;
use calico_calc::{
    policy_key, CompiledRule, CompiledRules, DesiredState, EndpointIntent, PortRange, SetMembers,
    SideMatch, TierEnd, TierPolicies, WORKLOAD_INTERFACE_PREFIX,
};
use calico_net::IpNet;
use sha1::{Digest, Sha1};
use std::collections::BTreeSet;

mod deferred;
pub use deferred::{deferred_allows, flow_id, DEFERRED_PREFIX};
mod host;
pub use host::host_endpoint_walks;
mod merge;
mod rules;

use rules::*;

const CLEAR: u32 = !(MARK_ACCEPT | MARK_PASS);

fn short_hash(text: &str) -> String {
    Sha1::digest(text.as_bytes())
        .iter()
        .take(6)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The chain of a policy (by `policy_key`) in one direction.
pub fn policy_chain(key: &str, ingress: bool) -> String {
    format!(
        "p-{}-{}",
        short_hash(key),
        if ingress { "in" } else { "out" }
    )
}

/// The chain of a profile in one direction.
pub fn profile_chain(name: &str, ingress: bool) -> String {
    format!(
        "r-{}-{}",
        short_hash(name),
        if ingress { "in" } else { "out" }
    )
}

/// The NFLOG group a direction's decisions are logged to, as Calico's:
/// 1 for traffic into workloads, 2 for traffic out of them.
pub const fn flow_group(ingress: bool) -> u16 {
    if ingress {
        1
    } else {
        2
    }
}

/// The suffix of a policy or profile chain's copy that logs nothing.
const QUIET: &str = "-q";

/// What ends a walk through the tiers that no policy decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unmatched {
    /// Normal policy: each tier's end (drop or pass), then the profiles,
    /// then drop.
    Deny,
    /// preDNAT and doNotTrack policy: no default deny anywhere (a tier's
    /// end goes on to the next tier; the last one's returns undecided),
    /// so later policy decides.
    Continue,
}

/// The chain `name` that walks `tiers` (then, for `Unmatched::Deny`, the
/// profiles): it returns with the accept mark set when allowed and drops
/// when denied; with `Unmatched::Continue` it may also return undecided.
/// Each tier is a chain of its own, `<name>/t<n>` (`/` is in no interface
/// name, so no endpoint's chain can take a tier chain's name).
#[allow(clippy::too_many_arguments)]
fn walk(
    name: &str,
    tiers: &[TierPolicies],
    profiles: &[String],
    ingress: bool,
    flow: Option<u16>,
    unmatched: Unmatched,
    quiet: bool,
    chains: &mut Vec<Chain>,
) {
    // The policy and profile chains to jump to: with `quiet`, their copies
    // that log nothing (host endpoints' walks with flow logs on: their
    // verdicts must not reach the workloads' flow records).
    let q = if quiet { QUIET } else { "" };
    let flow = flow.map(|group| Flow {
        chain: name,
        index: 0,
        group,
        id: None,
    });
    // A drop nobody's rule decided: the end of tier `n` ("DT<n>") or
    // no profile allowing ("DN").
    let drop = |what: String| match &flow {
        Some(f) => format!("{} drop", f.log('D', what)),
        None => "drop".to_string(),
    };
    let mut body = Vec::new();
    for (n, tier) in tiers.iter().enumerate() {
        let tier_chain = format!("{name}/t{n}");
        let mut tl = Vec::new();
        for p in &tier.policies {
            tl.push(format!("jump {}{q}", policy_chain(&policy_key(p), ingress)));
            tl.push(format!(
                "meta mark & {:#x} != 0 return",
                MARK_ACCEPT | MARK_PASS
            ));
        }
        tl.push(match (unmatched, tier.end) {
            (Unmatched::Deny, TierEnd::Deny) => drop(format!("T{n}")),
            (Unmatched::Deny, TierEnd::Pass) => {
                format!("meta mark set meta mark | {MARK_PASS:#x} return")
            }
            (Unmatched::Continue, _) => "return".into(),
        });
        body.push(format!("jump {tier_chain}"));
        chains.push(chain(tier_chain, tl));
        body.push(format!("meta mark & {MARK_ACCEPT:#x} != 0 return"));
        body.push(format!("meta mark set meta mark & {CLEAR:#x}"));
    }
    if unmatched == Unmatched::Deny {
        // Reached only if every tier passed (or there were none): the profiles decide.
        for p in profiles {
            body.push(format!("jump {}{q}", profile_chain(p, ingress)));
            body.push(format!("meta mark & {MARK_ACCEPT:#x} != 0 return"));
        }
        body.push(drop("N".into()));
    }
    chains.push(chain(name.to_string(), body));
}

/// A workload's two walks: its chain (`tw-<iface>` into it, `fw-<iface>`
/// out of it; the name its flow-log prefixes carry), direction and tiers.
pub fn endpoint_walks(ep: &EndpointIntent) -> [(String, bool, &[TierPolicies]); 2] {
    [
        (format!("tw-{}", ep.interface), true, &ep.ingress),
        (format!("fw-{}", ep.interface), false, &ep.egress),
    ]
}

fn endpoint_chains(ep: &EndpointIntent, flow_logs: bool, chains: &mut Vec<Chain>) {
    for (name, ingress, tiers) in endpoint_walks(ep) {
        walk(
            &name,
            tiers,
            &ep.profiles,
            ingress,
            flow_logs.then(|| flow_group(ingress)),
            Unmatched::Deny,
            false,
            chains,
        );
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

/// Outgoing NAT (IPPool `natOutgoing`), as Felix does it: traffic from a
/// `natOutgoing` pool to a destination outside every pool leaves with the
/// node's address (masquerade: the outgoing interface's) or
/// `natOutgoingAddress` (`to`); replies are translated back by conntrack.
/// Traffic between pods, to pods of any pool (disabled ones included) and
/// from pools without `natOutgoing` is left alone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NatOutgoing {
    /// The CIDRs of the pools with `natOutgoing: true`.
    pub masquerade: BTreeSet<IpNet>,
    /// The CIDRs of every pool.
    pub pools: BTreeSet<IpNet>,
    pub to: Option<std::net::IpAddr>,
    /// `natPortRange`: the source ports translated connections get.
    pub ports: Option<(u16, u16)>,
}

/// The node's settings that shape the table beside the workloads' policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRules {
    pub vxlan: VxlanSources,
    pub nat: NatOutgoing,
    /// UDP port whose packets workloads may not send (VXLAN:
    /// `allowVXLANPacketsFromWorkloads` false); None: allowed.
    pub workload_vxlan_drop: Option<u16>,
    /// Drop IP-in-IP from workloads (`allowIPIPPacketsFromWorkloads` false).
    pub workload_ipip_drop: bool,
    /// Workloads may send from their allowSpoofedSourcePrefixes
    /// (`workloadSourceSpoofing: Any`); otherwise only from their own addresses.
    pub source_spoofing: bool,
    pub endpoint_to_host: EndpointToHost,
    /// Log each deciding verdict of a new connection to NFLOG (groups 1
    /// and 2) for flow records (FelixConfiguration `flowLogsFileEnabled`).
    pub flow_logs: bool,
    /// Traffic to the host through a host endpoint that policy never
    /// blocks (`failsafeInboundHostPorts`: destination port, source net).
    pub failsafe_in: Vec<calico_api::ProtoPort>,
    /// ... and from it (`failsafeOutboundHostPorts`: destination port and net).
    pub failsafe_out: Vec<calico_api::ProtoPort>,
    /// The host's interface addresses, for host endpoints known by their
    /// expectedIPs alone (empty unless one is).
    pub interface_addresses: Vec<(String, std::net::IpAddr)>,
}

impl Default for NodeRules {
    /// Felix's defaults: no tunnel sent by a workload, no spoofing, and
    /// nothing from a workload to its host.
    fn default() -> Self {
        NodeRules {
            vxlan: VxlanSources::default(),
            nat: NatOutgoing::default(),
            workload_vxlan_drop: Some(4789),
            workload_ipip_drop: true,
            source_spoofing: false,
            endpoint_to_host: EndpointToHost::Drop,
            flow_logs: false,
            failsafe_in: calico_api::failsafe_defaults(true),
            failsafe_out: calico_api::failsafe_defaults(false),
            interface_addresses: Vec::new(),
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
    let group = |ingress: bool| node.flow_logs.then_some(flow_group(ingress));
    let ids = if node.flow_logs {
        deferred::chain_ids(state)
    } else {
        deferred::ChainIds::new()
    };
    let named = |chain: String, rules: &CompiledRules, ingress: bool| {
        let ids = ids.get(&chain);
        rules_chain(&chain, rules_of(rules, ingress), group(ingress), ids)
    };
    for (key, rules) in &state.policies {
        for ingress in [true, false] {
            t.chains
                .push(named(policy_chain(key, ingress), rules, ingress));
        }
    }
    for (name, rules) in &state.profiles {
        for ingress in [true, false] {
            t.chains
                .push(named(profile_chain(name, ingress), rules, ingress));
        }
    }
    // With flow logs, host endpoints' preDNAT and doNotTrack walks go
    // through copies of their policies and profiles that log nothing
    // (their verdicts are not flow records; see `host_endpoint_walks`).
    if node.flow_logs {
        let mut pols = BTreeSet::new();
        let mut profs = BTreeSet::new();
        for h in state.host_endpoints.values() {
            for (tiers, _) in h.all_tiers() {
                for t in tiers {
                    pols.extend(t.policies.iter().map(policy_key));
                }
            }
            profs.extend(h.profiles.iter().cloned());
        }
        let none = CompiledRules::default();
        for key in &pols {
            let rules = state.policies.get(key).unwrap_or(&none);
            for ingress in [true, false] {
                t.chains.push(rules_chain(
                    &format!("{}{QUIET}", policy_chain(key, ingress)),
                    rules_of(rules, ingress),
                    None,
                    None,
                ));
            }
        }
        for name in &profs {
            let rules = state.profiles.get(name).unwrap_or(&none);
            for ingress in [true, false] {
                t.chains.push(rules_chain(
                    &format!("{}{QUIET}", profile_chain(name, ingress)),
                    rules_of(rules, ingress),
                    None,
                    None,
                ));
            }
        }
    }
    // Profiles an endpoint names but nobody defined: nothing allowed.
    let mut missing: Vec<&String> = endpoints
        .iter()
        .flat_map(|e| e.profiles.iter())
        .chain(
            state
                .host_endpoints
                .values()
                .flat_map(|h| h.profiles.iter()),
        )
        .filter(|p| !state.profiles.contains_key(*p))
        .collect();
    missing.sort();
    missing.dedup();
    for p in missing {
        for ingress in [true, false] {
            t.chains
                .push(rules_chain(&profile_chain(p, ingress), &[], None, None));
        }
    }
    for ep in &endpoints {
        endpoint_chains(ep, node.flow_logs, &mut t.chains);
        t.chains.push(source_chain(ep, node));
    }
    let clear = format!("meta mark set meta mark & {CLEAR:#x}");
    let undecided = format!("meta mark & {MARK_ACCEPT:#x} == 0");
    let fast_path = [
        "ct state established,related accept".to_string(),
        "ct state invalid drop".to_string(),
    ];
    // With flow logs, a workload's egress Allow is logged by the packet's
    // next log (`deferred`): from here on the mark's identity is this
    // walk's alone, and it is logged here unless a workload of this node
    // (whose ingress walk logs it) is where the packet goes.
    let from_wl: Vec<String> = [
        if node.flow_logs {
            deferred::clear_all()
        } else {
            clear.clone()
        },
        "iifname vmap @from-wl".to_string(),
        format!("iifname \"cali*\" {undecided} drop"),
    ]
    .into_iter()
    .chain(node.flow_logs.then(|| deferred::log_deferred(true)))
    .collect();
    // ... or to an interface with no workload (dropped here, unlogged).
    let to_wl: Vec<String> = [clear, "oifname vmap @to-wl".to_string()]
        .into_iter()
        .chain(node.flow_logs.then(|| {
            format!(
                "oifname \"cali*\" {undecided} {}",
                deferred::log_deferred(false)
            )
        }))
        .chain([format!("oifname \"cali*\" {undecided} drop")])
        .collect();
    let hosts = host::host_endpoints(state, node, &mut t).unwrap_or_default();
    t.chains.push(Chain {
        name: "forward".into(),
        hook: Some("type filter hook forward priority filter; policy accept;".into()),
        rules: fast_path
            .iter()
            .chain(&hosts.forward_in)
            .chain(&from_wl)
            .chain(&to_wl)
            .chain(&hosts.forward_out)
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
            .chain(hosts.input)
            .collect(),
    });
    // Before conntrack: a workload sends only from its own addresses, and
    // an interface with no programmed endpoint sends nothing.
    t.chains.push(Chain {
        name: "prerouting".into(),
        hook: Some("type filter hook prerouting priority raw; policy accept;".into()),
        rules: [
            "iifname vmap @wl-src".into(),
            format!("iifname \"{WORKLOAD_INTERFACE_PREFIX}*\" counter drop"),
        ]
        .into_iter()
        .chain(hosts.prerouting_raw)
        .collect(),
    });
    // The chains port maps go to, where a policy uses one.
    for (name, mark) in [(VERDICT_ALLOW, MARK_ACCEPT), (VERDICT_PASS, MARK_PASS)] {
        let target = format!("goto {name}");
        if t.chains
            .iter()
            .any(|c| c.rules.iter().any(|r| r.contains(&target)))
        {
            t.chains.push(chain(
                name.to_string(),
                vec![format!("meta mark set meta mark | {mark:#x} return")],
            ));
        }
    }
    nat_outgoing(&node.nat, &mut t);
    t
}

/// Outgoing NAT's sets and its `nat-postrouting` chain; nothing at all
/// when no pool asks for it.
fn nat_outgoing(nat: &NatOutgoing, t: &mut Table) {
    if nat.masquerade.is_empty() {
        return;
    }
    let mut rules = Vec::new();
    for f in [Family::V4, Family::V6] {
        let masquerade = outermost(&nat.masquerade, f);
        if masquerade.is_empty() {
            continue;
        }
        let ty = if f == Family::V4 {
            "ipv4_addr"
        } else {
            "ipv6_addr"
        };
        let (from, pools) = (
            format!("nat-masq-{}", f.suffix()),
            format!("nat-pools-{}", f.suffix()),
        );
        t.collections.push(Collection {
            kind: "set",
            name: from.clone(),
            decl: format!("type {ty}; flags interval; "),
            elements: masquerade,
        });
        t.collections.push(Collection {
            kind: "set",
            name: pools.clone(),
            decl: format!("type {ty}; flags interval; "),
            elements: outermost(&nat.pools, f),
        });
        let translate = |ports: Option<(u16, u16)>| {
            let ports = ports.map(|(lo, hi)| format!(":{lo}-{hi}"));
            match nat.to {
                Some(to) if to.is_ipv4() == (f == Family::V4) => {
                    let to = match (&ports, to) {
                        (None, _) => to.to_string(),
                        (Some(p), std::net::IpAddr::V4(a)) => format!("{a}{p}"),
                        (Some(p), std::net::IpAddr::V6(a)) => format!("[{a}]{p}"),
                    };
                    format!("snat {} to {to} fully-random", f.addr())
                }
                _ => match &ports {
                    Some(p) => format!("masquerade to {p} fully-random"),
                    None => "masquerade fully-random".to_string(),
                },
            }
        };
        let matched = format!("{a} saddr @{from} {a} daddr != @{pools}", a = f.addr());
        // natPortRange: ports exist for TCP, UDP and SCTP only (as Felix
        // maps them); anything else is translated without.
        if nat.ports.is_some() {
            rules.push(format!(
                "{matched} meta l4proto {{ tcp, udp, sctp }} {}",
                translate(nat.ports)
            ));
        }
        rules.push(format!("{matched} {}", translate(None)));
    }
    t.chains.push(Chain {
        name: "nat-postrouting".into(),
        hook: Some("type nat hook postrouting priority srcnat; policy accept;".into()),
        rules,
    });
}
