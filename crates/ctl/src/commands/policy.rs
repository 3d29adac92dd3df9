//! `calicoctl policy explain`: what the datastore's policy does to one
//! connection, worked out offline with the code the node agent compiles
//! policy with (`calico_calc`), walked as the dataplane walks it: egress at
//! the source's endpoint, then ingress at the destination's. Enforced, and
//! pending: as it would be with every staged policy applied.

use crate::input::existing_client;
use anyhow::{anyhow, bail, Context, Result};
use calico_api::{Kind, Resource};
use calico_calc::explain::{evaluate, Decision, Packet};
use calico_calc::{CalcGraph, DesiredState, SetId, Update};
use calico_net::Protocol;
use clap::{Args, Subcommand};
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;
use std::process::ExitCode;

#[derive(Subcommand, Debug)]
pub enum PolicyCommand {
    /// Why a connection is allowed or denied: every tier, policy and rule
    /// on the way, at the source (egress) and at the destination (ingress).
    Explain(ExplainArgs),
}

#[derive(Args, Debug)]
pub struct ExplainArgs {
    /// The source: a workload as NAMESPACE/POD, or an IP address.
    #[arg(long)]
    from: String,
    /// The destination: NAMESPACE/POD or an IP address.
    #[arg(long)]
    to: String,
    /// Destination port (for TCP, UDP and SCTP).
    #[arg(long)]
    port: Option<u16>,
    /// Source port (an ephemeral one when not given: rules on source ports
    /// then do not match, and the answer says it depends on it).
    #[arg(long)]
    source_port: Option<u16>,
    /// TCP, UDP, SCTP, ICMP, ICMPv6 or a number.
    #[arg(long, default_value = "TCP")]
    protocol: String,
    /// ICMP type and code, as TYPE or TYPE/CODE.
    #[arg(long)]
    icmp: Option<String>,
    /// table or json.
    #[arg(short = 'o', long, default_value = "table")]
    output: String,
}

pub fn run(config: &Path, cmd: &PolicyCommand) -> Result<ExitCode> {
    match cmd {
        PolicyCommand::Explain(a) => explain(config, a),
    }
}

/// One end of the connection.
#[derive(Debug, Clone, Serialize)]
struct End {
    /// NAMESPACE/POD for a workload.
    #[serde(skip_serializing_if = "Option::is_none")]
    workload: Option<String>,
    /// Its WorkloadEndpoint (namespace/name) and node.
    #[serde(skip_serializing_if = "Option::is_none")]
    endpoint: Option<(String, String)>,
    #[serde(skip_serializing_if = "Option::is_none")]
    node: Option<String>,
    ip: IpAddr,
}

/// Both directions' decisions and what they add up to.
#[derive(Debug, Serialize)]
struct Verdict {
    /// At the source's endpoint (None: not a workload of this cluster).
    egress: Option<Decision>,
    /// At the destination's endpoint.
    ingress: Option<Decision>,
    verdict: &'static str,
}

#[derive(Debug, Serialize)]
struct Explanation {
    from: End,
    to: End,
    packet: Packet,
    #[serde(flatten)]
    enforced: Verdict,
    /// With every staged policy applied (Set in place of its namesake,
    /// Delete removing it); present when there are staged policies.
    #[serde(skip_serializing_if = "Option::is_none")]
    pending: Option<Verdict>,
}

fn explain(config: &Path, a: &ExplainArgs) -> Result<ExitCode> {
    let client = existing_client(config)?;
    let resources: Vec<Resource> = Kind::ALL
        .iter()
        .map(|k| client.list(*k, None).map(|l| l.items))
        .collect::<Result<Vec<_>, _>>()
        .context("reading the datastore")?
        .into_iter()
        .flatten()
        .collect();
    let from = resolve(&resources, &a.from).context("--from")?;
    let to = resolve(&resources, &a.to).context("--to")?;
    if from.ip.is_ipv4() != to.ip.is_ipv4() {
        bail!(
            "--from {} and --to {} are of different address families",
            from.ip,
            to.ip
        );
    }
    let protocol = Protocol::parse(&a.protocol)
        .map_err(|e| anyhow!("--protocol: {e}"))?
        .number();
    let icmp = a.icmp.as_deref().map(parse_icmp).transpose()?;
    let packet = Packet {
        src: from.ip,
        dst: to.ip,
        protocol,
        dst_port: a.port,
        src_port: a.source_port,
        icmp,
    };
    let verdict = |resources: &[Resource]| {
        let decide = |end: &End, ingress: bool| -> Option<Decision> {
            let ((ns, name), node) = (end.endpoint.clone()?, end.node.clone()?);
            let (state, selectors) = state_of(&node, resources);
            let ep = state.endpoints.get(&format!("{ns}/{name}"))?;
            Some(evaluate(&state, ep, ingress, &packet, &selectors))
        };
        let egress = decide(&from, false);
        let ingress = decide(&to, true);
        let allowed =
            egress.as_ref().is_none_or(|d| d.allowed) && ingress.as_ref().is_none_or(|d| d.allowed);
        Verdict {
            egress,
            ingress,
            verdict: if allowed { "allowed" } else { "denied" },
        }
    };
    let enforced = verdict(&resources);
    let staged = resources
        .iter()
        .any(|r| calico_api::kinds::staged::enforced(r).is_some());
    let pending = staged.then(|| verdict(&calico_api::pending(&resources)));
    let e = Explanation {
        from,
        to,
        packet,
        enforced,
        pending,
    };
    if a.output == "json" {
        println!("{}", serde_json::to_string_pretty(&e)?);
    } else {
        print!("{}", text(&e));
    }
    Ok(ExitCode::SUCCESS)
}

fn parse_icmp(text: &str) -> Result<(u8, u8)> {
    let (t, c) = text.split_once('/').unwrap_or((text, "0"));
    Ok((
        t.parse()
            .map_err(|_| anyhow!("--icmp: {text:?}: a type is 0-255"))?,
        c.parse()
            .map_err(|_| anyhow!("--icmp: {text:?}: a code is 0-255"))?,
    ))
}

/// NAMESPACE/POD (a workload endpoint of that pod) or an IP address (a
/// workload's, or anything else).
fn resolve(resources: &[Resource], text: &str) -> Result<End> {
    let weps = resources.iter().filter_map(|r| match r {
        Resource::WorkloadEndpoint(w) => Some(w),
        _ => None,
    });
    if let Ok(ip) = text.parse::<IpAddr>() {
        let found = weps
            .clone()
            .find(|w| w.spec.ip_networks.iter().any(|n| n.net().contains(&ip)));
        return Ok(match found {
            Some(w) => End {
                workload: Some(format!(
                    "{}/{}",
                    w.metadata.namespace.as_deref().unwrap_or("default"),
                    pod_of(w)
                )),
                endpoint: Some((
                    w.metadata.namespace.clone().unwrap_or_default(),
                    w.metadata.name.clone(),
                )),
                node: Some(w.spec.node.clone()),
                ip,
            },
            None => End {
                workload: None,
                endpoint: None,
                node: None,
                ip,
            },
        });
    }
    let (ns, pod) = text
        .split_once('/')
        .ok_or_else(|| anyhow!("{text:?} is neither NAMESPACE/POD nor an IP address"))?;
    let w = weps
        .clone()
        .find(|w| w.metadata.namespace.as_deref() == Some(ns) && pod_of(w) == pod)
        .ok_or_else(|| anyhow!("no workload endpoint for pod {ns}/{pod}"))?;
    let ip = w
        .spec
        .ip_networks
        .first()
        .map(|n| n.net().addr())
        .ok_or_else(|| anyhow!("{ns}/{pod} has no address"))?;
    Ok(End {
        workload: Some(text.to_string()),
        endpoint: Some((ns.to_string(), w.metadata.name.clone())),
        node: Some(w.spec.node.clone()),
        ip,
    })
}

fn pod_of(w: &calico_api::Object<calico_api::WorkloadEndpointSpec>) -> &str {
    if w.spec.pod.is_empty() {
        &w.spec.workload
    } else {
        &w.spec.pod
    }
}

/// The desired state `node`'s agent computes from these resources, and
/// the selector behind each of its sets.
fn state_of(node: &str, resources: &[Resource]) -> (DesiredState, BTreeMap<SetId, String>) {
    let mut graph = CalcGraph::new(node);
    let intents = graph.apply_all(resources.iter().cloned().map(Update::Put));
    let mut state = DesiredState::default();
    // The graph's own output: its ordering contract always holds.
    let _ = state.apply(&intents);
    (state, graph.set_selectors())
}

fn describe(end: &End) -> String {
    match (&end.workload, &end.node) {
        (Some(w), Some(n)) => format!("{w} ({}, on {n})", end.ip),
        _ => format!("{} (not a workload of this cluster)", end.ip),
    }
}

fn text(e: &Explanation) -> String {
    let mut out = String::new();
    let port = e
        .packet
        .dst_port
        .map(|p| format!(" port {p}"))
        .unwrap_or_default();
    out.push_str(&format!(
        "{} -> {}, {}{port}\n",
        describe(&e.from),
        describe(&e.to),
        calico_calc::explain::protocol_name(e.packet.protocol)
    ));
    verdict_text(&mut out, e, &e.enforced);
    if let Some(p) = &e.pending {
        out.push_str("\npending, with the staged policies applied:\n");
        verdict_text(&mut out, e, p);
    }
    out
}

fn verdict_text(out: &mut String, e: &Explanation, v: &Verdict) {
    use calico_calc::explain::Step;
    for (what, end, d) in [
        ("egress from", &e.from, &v.egress),
        ("ingress to", &e.to, &v.ingress),
    ] {
        let Some(d) = d else {
            out.push_str(&format!("\n{what} {}: no policy here\n", end.ip));
            continue;
        };
        out.push_str(&format!(
            "\n{what} {}:\n",
            end.workload.as_deref().unwrap_or("?")
        ));
        for s in &d.steps {
            let line = match s {
                Step::Rule {
                    tier,
                    policy,
                    index,
                    action,
                } => format!(
                    "  tier {tier}: {} rule {index} matches: {action:?}",
                    name(policy)
                ),
                Step::NoMatch { tier, policy, why } => format!(
                    "  tier {tier}: {}: no rule matches{}",
                    name(policy),
                    reasons(why)
                ),
                Step::TierEnd { tier, end } => format!("  tier {tier}: end of tier: {end:?}"),
                Step::ProfileRule {
                    profile,
                    index,
                    action,
                } => format!("  profile {profile} rule {index} matches: {action:?}"),
                Step::ProfileNoMatch { profile, why } => {
                    format!("  profile {profile}: no rule matches{}", reasons(why))
                }
                Step::NoProfileAllowed => "  no profile allows it".to_string(),
            };
            out.push_str(&line);
            out.push('\n');
        }
        out.push_str(&format!(
            "  => {} by {}{}\n",
            if d.allowed { "allowed" } else { "denied" },
            d.by,
            if d.depends_on_source_port {
                " (a rule on the way matches source ports; give --source-port)"
            } else {
                ""
            }
        ));
    }
    out.push_str(&format!("\nverdict: {}\n", v.verdict));
}

/// Why each rule did not match, one per line under the step.
fn reasons(why: &[String]) -> String {
    why.iter().map(|w| format!("\n      {w}")).collect()
}

fn name(p: &calico_calc::PolicyId) -> String {
    match &p.namespace {
        Some(ns) => format!("NetworkPolicy {ns}/{}", p.name),
        None => format!("GlobalNetworkPolicy {}", p.name),
    }
}
