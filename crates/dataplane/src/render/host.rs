//! Host endpoints: policy on the host's own interfaces (Calico's host
//! endpoint policy), rendered beside the workloads' chains.
//!
//! Each kind of policy runs where Calico runs it:
//!
//! ```text
//! prerouting (raw)     untracked ingress  hui-<if>: failsafe (both ways), walk; allowed: notrack, accept
//! output (raw)         untracked egress   huo-<if>: the same, outwards
//! prerouting (mangle)  preDNAT ingress    hp-<if>:  failsafe, walk; allowed: skip normal policy
//! input (filter)       normal ingress     hi-<if>:  failsafe, walk, profiles, drop
//! output (filter)      normal egress      ho-<if>:  the same, outwards
//! forward (filter)     applyOnForward     hfi-<if> in, hfo-<if> out: walk, profiles, drop
//! ```
//!
//! A named host endpoint's interface goes through maps by interface name;
//! the `*` endpoint's chains (`<kind>_all`) take every other interface but
//! `lo` and the workloads' (`cali*`). untracked and preDNAT walks have no
//! default deny: undecided, a packet goes on to normal policy. Nothing
//! here is rendered on a node without host endpoints.

use super::*;
use calico_api::ProtoPort;
use calico_calc::{HostEndpointIntent, ALL_INTERFACES};

use crate::{MARK_PREDNAT, MARK_UNTRACKED};

/// The rules host endpoints add to the table's base chains, by place.
#[derive(Debug, Default)]
pub(super) struct HostHooks {
    /// After the input chain's workload part.
    pub input: Vec<String>,
    /// Right after the forward chain's fast path.
    pub forward_in: Vec<String>,
    /// At the end of the forward chain.
    pub forward_out: Vec<String>,
    /// At the end of the raw prerouting chain.
    pub prerouting_raw: Vec<String>,
}

/// Whether an interface can be a host endpoint's (the calculation graph
/// has already refused the others; this is the last check before the
/// kernel).
fn host_interface(iface: &str) -> bool {
    calico_api::interface_name(iface).is_ok() && !iface.starts_with(WORKLOAD_INTERFACE_PREFIX)
}

/// The interfaces each host endpoint stands for: `*`, its named one, or
/// (no name) each interface holding one of its expectedIPs that no named
/// endpoint has (the first endpoint by name takes an interface two match).
fn bind<'a>(state: &'a DesiredState, node: &NodeRules) -> Vec<(String, &'a HostEndpointIntent)> {
    let mut bound: Vec<(String, &HostEndpointIntent)> = state
        .host_endpoints
        .values()
        .filter(|h| h.interface == ALL_INTERFACES || host_interface(&h.interface))
        .map(|h| (h.interface.clone(), h))
        .collect();
    let mut addresses = node.interface_addresses.clone();
    addresses.sort();
    for h in state
        .host_endpoints
        .values()
        .filter(|h| h.interface.is_empty())
    {
        for (iface, ip) in &addresses {
            if h.expected_ips.contains(ip)
                && host_interface(iface)
                && !bound.iter().any(|(b, _)| b == iface)
            {
                bound.push((iface.clone(), h));
            }
        }
    }
    bound
}

/// A chain name for one kind of chain of an interface: `<kind>-<if>`, or
/// `<kind>_all` for `*` (`_` right after the kind: no interface's chain).
fn name(kind: &str, iface: &str) -> String {
    if iface == ALL_INTERFACES {
        format!("{kind}_all")
    } else {
        format!("{kind}-{iface}")
    }
}

/// One failsafe rule: `port` of `protocol` towards (`dport`) or from
/// (`sport`: replies) the port, limited to `net` as the peer's address.
fn failsafe_rule(p: &ProtoPort, port_side: &str, peer_side: &str) -> String {
    let peer = p.net.map_or(String::new(), |net| {
        format!(
            "{} {peer_side} {} ",
            Family::of(&net).addr(),
            net_text(&net)
        )
    });
    format!(
        "{peer}meta l4proto {} th {port_side} {} accept",
        p.protocol, p.port
    )
}

/// The failsafe chains: `failsafe-in` / `failsafe-out` (the ports
/// themselves), and for the raw hooks, where there is no connection
/// tracking yet, `failsafe-in-raw` / `failsafe-out-raw`, which also let
/// through the replies of the other direction's failsafe connections.
fn failsafe_chains(node: &NodeRules, chains: &mut Vec<Chain>) {
    let inbound: Vec<String> = node
        .failsafe_in
        .iter()
        .map(|p| failsafe_rule(p, "dport", "saddr"))
        .collect();
    let outbound: Vec<String> = node
        .failsafe_out
        .iter()
        .map(|p| failsafe_rule(p, "dport", "daddr"))
        .collect();
    let replies_in: Vec<String> = node
        .failsafe_out
        .iter()
        .map(|p| failsafe_rule(p, "sport", "saddr"))
        .collect();
    let replies_out: Vec<String> = node
        .failsafe_in
        .iter()
        .map(|p| failsafe_rule(p, "sport", "daddr"))
        .collect();
    chains.push(chain("failsafe-in".into(), inbound.clone()));
    chains.push(chain("failsafe-out".into(), outbound.clone()));
    chains.push(chain(
        "failsafe-in-raw".into(),
        inbound.into_iter().chain(replies_in).collect(),
    ));
    chains.push(chain(
        "failsafe-out-raw".into(),
        outbound.into_iter().chain(replies_out).collect(),
    ));
}

/// Neighbour discovery and multicast listeners on the host's interfaces
/// work whatever host endpoint policy says (IPv6 needs them to work at all).
const NDP: &str = "icmpv6 type { mld-listener-query, mld-listener-report, mld-listener-done, \
     nd-router-solicit, nd-router-advert, nd-neighbor-solicit, nd-neighbor-advert, \
     mld2-listener-report } accept";

/// A wrapper around a walk: clear the marks, `first` (failsafe), the walk
/// `<wrapper>/p`, then `allowed` when it allowed. With `flow`, the walk's
/// verdicts log to that NFLOG group; with `quiet`, its policies' copies
/// that log nothing are walked.
#[allow(clippy::too_many_arguments)]
fn wrapped(
    quiet: bool,
    flow: Option<u16>,
    wrapper: String,
    first: Option<&str>,
    tiers: &[TierPolicies],
    profiles: &[String],
    ingress: bool,
    unmatched: Unmatched,
    allowed: String,
    chains: &mut Vec<Chain>,
) {
    let inner = walk_chain(&wrapper);
    walk(
        &inner, tiers, profiles, ingress, flow, unmatched, quiet, chains,
    );
    // An egress walk that logs may leave an Allow's identity in the mark
    // instead (`deferred`): it starts with none, and logs it right after.
    let deferring = flow.is_some() && !ingress;
    let mut rules = vec![if deferring {
        super::deferred::clear_all()
    } else {
        format!("meta mark set meta mark & {CLEAR:#x}")
    }];
    rules.extend(first.map(|f| format!("jump {f}")));
    rules.push(format!("jump {inner}"));
    if deferring {
        rules.push(super::deferred::log_deferred(false));
    }
    rules.push(format!("meta mark & {MARK_ACCEPT:#x} != 0 {allowed}"));
    if unmatched == Unmatched::Deny {
        rules.push("drop".into());
    }
    chains.push(chain(wrapper, rules));
}

/// The chain of the walk a host endpoint chain wraps (the name its
/// flow-log prefixes carry).
fn walk_chain(wrapper: &str) -> String {
    format!("{wrapper}/p")
}

/// One kind of host endpoint chain.
struct Kind {
    /// The map from a named endpoint's interface to its chain.
    map: &'static str,
    /// The chain's name before the interface.
    prefix: &'static str,
    tiers: fn(&HostEndpointIntent) -> &[TierPolicies],
    ingress: bool,
    failsafe: Option<&'static str>,
    unmatched: Unmatched,
    /// What the chain does with a packet the walk allowed.
    allowed: String,
    /// Every endpoint gets one, policy or not (default deny).
    always: bool,
}

impl Kind {
    fn new(
        map: &'static str,
        prefix: &'static str,
        tiers: fn(&HostEndpointIntent) -> &[TierPolicies],
        ingress: bool,
    ) -> Kind {
        Kind {
            map,
            prefix,
            tiers,
            ingress,
            failsafe: None,
            unmatched: Unmatched::Deny,
            allowed: "accept".into(),
            always: false,
        }
    }
    fn failsafe(mut self, chain: &'static str) -> Kind {
        self.failsafe = Some(chain);
        self
    }
    fn always(mut self) -> Kind {
        self.always = true;
        self
    }
    fn undecided_goes_on(mut self) -> Kind {
        self.unmatched = Unmatched::Continue;
        self
    }
    /// Whether the walk's verdicts are flow records: those of normal
    /// policy (which ends in a default deny).
    fn logs(&self) -> bool {
        self.unmatched == Unmatched::Deny
    }
    fn allowed(mut self, verdict: &str) -> Kind {
        self.allowed = verdict.to_string();
        self
    }
}

/// The kinds of host endpoint chain: normal policy in, out and forwarded
/// both ways, then preDNAT and doNotTrack policy.
fn kinds() -> [Kind; 7] {
    let untracked_allowed = format!("meta mark set meta mark | {MARK_UNTRACKED:#x} notrack accept");
    let prednat_allowed = format!("meta mark set meta mark | {MARK_PREDNAT:#x} accept");
    [
        Kind::new("hep-in", "hi", |h| &h.ingress, true)
            .failsafe("failsafe-in")
            .always(),
        Kind::new("hep-out", "ho", |h| &h.egress, false)
            .failsafe("failsafe-out")
            .always(),
        Kind::new("hep-fwd-in", "hfi", |h| &h.forward_ingress, true).allowed("return"),
        Kind::new("hep-fwd-out", "hfo", |h| &h.forward_egress, false).allowed("return"),
        Kind::new("hep-prednat", "hp", |h| &h.pre_dnat, true)
            .failsafe("failsafe-in")
            .undecided_goes_on()
            .allowed(&prednat_allowed),
        Kind::new("hep-untracked-in", "hui", |h| &h.untracked_ingress, true)
            .failsafe("failsafe-in-raw")
            .undecided_goes_on()
            .allowed(&untracked_allowed),
        Kind::new("hep-untracked-out", "huo", |h| &h.untracked_egress, false)
            .failsafe("failsafe-out-raw")
            .undecided_goes_on()
            .allowed(&untracked_allowed),
    ]
}

/// The walks of this node's host endpoints whose verdicts are flow
/// records (with flow logs on): normal policy, in, out and forwarded.
/// preDNAT and doNotTrack walks log nothing: an untracked packet would
/// log every time, and neither decides a connection by itself. Each walk
/// as its chain (the name in its `DT<n>|…`/`DN|…` prefixes), its
/// direction, tiers and profiles.
pub fn host_endpoint_walks<'a>(
    state: &'a DesiredState,
    node: &NodeRules,
) -> Vec<(String, bool, &'a [TierPolicies], &'a [String])> {
    let mut out = Vec::new();
    let kinds = kinds();
    for (iface, h) in bind(state, node) {
        for k in kinds.iter().filter(|k| k.logs()) {
            let tiers = (k.tiers)(h);
            if tiers.is_empty() && !k.always {
                continue;
            }
            out.push((
                walk_chain(&name(k.prefix, &iface)),
                k.ingress,
                tiers,
                h.profiles.as_slice(),
            ));
        }
    }
    out
}

/// The host endpoints' chains, maps and base chains; None (nothing at
/// all) on a node without any.
pub(super) fn host_endpoints(
    state: &DesiredState,
    node: &NodeRules,
    t: &mut Table,
) -> Option<HostHooks> {
    let heps = bind(state, node);
    if heps.is_empty() {
        return None;
    }
    failsafe_chains(node, &mut t.chains);
    t.collections.push(Collection {
        kind: "set",
        name: "hep-ifaces".into(),
        decl: "type ifname; ".into(),
        elements: heps
            .iter()
            .filter(|(iface, _)| iface != ALL_INTERFACES)
            .map(|(iface, _)| format!("\"{iface}\""))
            .collect(),
    });
    let kinds = kinds();
    // Which of the `*` endpoint's chains exist, by kind.
    let mut any = std::collections::BTreeSet::new();
    for k in kinds {
        let mut elements = Vec::new();
        for (iface, h) in &heps {
            let tiers = (k.tiers)(h);
            if tiers.is_empty() && !k.always {
                continue;
            }
            let chain_name = name(k.prefix, iface);
            let logs = node.flow_logs && k.logs();
            wrapped(
                node.flow_logs && !logs,
                logs.then(|| super::flow_group(k.ingress)),
                chain_name.clone(),
                k.failsafe,
                tiers,
                &h.profiles,
                k.ingress,
                k.unmatched,
                k.allowed.clone(),
                &mut t.chains,
            );
            if iface == ALL_INTERFACES {
                any.insert(k.prefix);
            } else {
                elements.push(format!("\"{iface}\" : jump {chain_name}"));
            }
        }
        t.collections.push(Collection {
            kind: "map",
            name: k.map.into(),
            decl: "type ifname : verdict; ".into(),
            elements,
        });
    }
    // The `*` endpoint takes what no named one and no workload does.
    let rest = |dir: &str, kind: &str, lead: &str| -> Option<String> {
        any.contains(kind).then(|| {
            format!(
                "{lead}{dir}name != @hep-ifaces {dir}name != \"lo\" {dir}name != \"{WORKLOAD_INTERFACE_PREFIX}*\" jump {}",
                name(kind, ALL_INTERFACES)
            )
        })
    };
    let skip_untracked = format!("meta mark & {MARK_UNTRACKED:#x} == 0 ");
    let skip_host_allowed = format!("meta mark & {:#x} == 0 ", MARK_UNTRACKED | MARK_PREDNAT);
    let clear = format!("meta mark set meta mark & {CLEAR:#x}");
    // Tunnels from the other nodes pass (they passed the input chain's
    // peer checks already) and go out to them: a host endpoint with no
    // policy for them must not cut the overlay.
    let vxlan_peers: Vec<(&str, &str)> = [
        ("vxlan-peers-v4", "ip", node.vxlan.v4.is_some()),
        ("vxlan-peers-v6", "ip6", node.vxlan.v6.is_some()),
    ]
    .into_iter()
    .filter(|(_, _, on)| *on)
    .map(|(set, f, _)| (set, f))
    .collect();
    let mut hooks = HostHooks::default();
    hooks.input.extend(
        vxlan_peers
            .iter()
            .map(|_| format!("udp dport {} accept", node.vxlan.port))
            .take(1),
    );
    hooks.input.extend([
        format!("iifname \"{WORKLOAD_INTERFACE_PREFIX}*\" return"),
        format!("meta mark & {MARK_UNTRACKED:#x} != 0 accept"),
        format!("meta mark & {MARK_PREDNAT:#x} != 0 accept"),
        NDP.to_string(),
        clear.clone(),
        "iifname vmap @hep-in".into(),
    ]);
    hooks.input.extend(rest("iif", "hi", ""));
    hooks.forward_in.push(clear.clone());
    hooks
        .forward_in
        .push(format!("{skip_host_allowed}iifname vmap @hep-fwd-in"));
    hooks
        .forward_in
        .extend(rest("iif", "hfi", &skip_host_allowed));
    hooks.forward_out.push(clear.clone());
    hooks
        .forward_out
        .push(format!("{skip_untracked}oifname vmap @hep-fwd-out"));
    hooks
        .forward_out
        .extend(rest("oif", "hfo", &skip_untracked));
    hooks
        .prerouting_raw
        .push("iifname vmap @hep-untracked-in".into());
    hooks.prerouting_raw.extend(rest("iif", "hui", ""));
    let mut output = vec![
        format!("meta mark & {MARK_UNTRACKED:#x} != 0 accept"),
        "ct state established,related accept".into(),
        format!("oifname \"{WORKLOAD_INTERFACE_PREFIX}*\" accept"),
    ];
    output.extend(
        vxlan_peers
            .iter()
            .map(|(set, f)| format!("{f} daddr @{set} udp dport {} accept", node.vxlan.port)),
    );
    output.extend([NDP.to_string(), clear, "oifname vmap @hep-out".into()]);
    output.extend(rest("oif", "ho", ""));
    t.chains.push(Chain {
        name: "output".into(),
        hook: Some("type filter hook output priority filter; policy accept;".into()),
        rules: output,
    });
    let mut output_raw = vec!["oifname vmap @hep-untracked-out".to_string()];
    output_raw.extend(rest("oif", "huo", ""));
    t.chains.push(Chain {
        name: "output-raw".into(),
        hook: Some("type filter hook output priority raw; policy accept;".into()),
        rules: output_raw,
    });
    let mut mangle = vec![
        "ct state established,related accept".to_string(),
        format!("meta mark & {MARK_UNTRACKED:#x} != 0 accept"),
        "iifname vmap @hep-prednat".into(),
    ];
    mangle.extend(rest("iif", "hp", ""));
    t.chains.push(Chain {
        name: "prerouting-mangle".into(),
        hook: Some("type filter hook prerouting priority mangle; policy accept;".into()),
        rules: mangle,
    });
    Some(hooks)
}
