//! Table output, one row per resource, columns per kind (as calicoctl shows them).

use calico_api::Resource;
use serde_json::Value;

/// Column headers for a kind, plain or wide, optionally with NAMESPACE first.
pub fn render(
    items: &[Resource],
    kind: calico_api::Kind,
    wide: bool,
    with_namespace: bool,
) -> String {
    let columns = columns(kind, wide);
    let mut rows: Vec<Vec<String>> = Vec::with_capacity(items.len() + 1);
    let mut header: Vec<String> = columns.iter().map(|(h, _)| (*h).to_string()).collect();
    if with_namespace {
        header.insert(0, "NAMESPACE".into());
    }
    rows.push(header);
    for r in items {
        // A resource is plain data: strings, numbers and maps with string keys.
        let v = serde_json::to_value(r).expect("a resource always serializes");
        let mut row: Vec<String> = columns.iter().map(|(_, f)| f(r, &v)).collect();
        if with_namespace {
            row.insert(0, r.meta().namespace.clone().unwrap_or_default());
        }
        rows.push(row);
    }
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(line.join("   ").trim_end());
        out.push('\n');
    }
    out
}

type Column = (&'static str, fn(&Resource, &Value) -> String);

fn at(v: &Value, path: &str) -> String {
    let mut cur = v;
    for part in path.split('.') {
        match cur.get(part) {
            Some(next) => cur = next,
            None => return String::new(),
        }
    }
    match cur {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        Value::Array(items) => items
            .iter()
            .map(|i| i.as_str().map_or_else(|| i.to_string(), String::from))
            .collect::<Vec<_>>()
            .join(","),
        other => other.to_string(),
    }
}

fn name(r: &Resource, _: &Value) -> String {
    r.meta().name.clone()
}

macro_rules! col {
    ($h:literal, $path:literal) => {
        ($h, |_: &Resource, v: &Value| at(v, $path))
    };
}

fn columns(kind: calico_api::Kind, wide: bool) -> Vec<Column> {
    use calico_api::Kind as K;
    let name_col: Column = ("NAME", name);
    match (kind, wide) {
        (K::IPPool, false) => vec![
            name_col,
            col!("CIDR", "spec.cidr"),
            col!("SELECTOR", "spec.nodeSelector"),
        ],
        (K::IPPool, true) => vec![
            name_col,
            col!("CIDR", "spec.cidr"),
            ("NAT", |_, v| {
                (at(v, "spec.natOutgoing") == "true").to_string()
            }),
            col!("IPIPMODE", "spec.ipipMode"),
            col!("VXLANMODE", "spec.vxlanMode"),
            ("DISABLED", |_, v| {
                (at(v, "spec.disabled") == "true").to_string()
            }),
            ("DISABLEBGPEXPORT", |_, v| {
                (at(v, "spec.disableBGPExport") == "true").to_string()
            }),
            col!("SELECTOR", "spec.nodeSelector"),
        ],
        (K::IPReservation, false) => vec![name_col],
        (K::IPReservation, true) => vec![name_col, col!("CIDRS", "spec.reservedCIDRs")],
        (K::NetworkPolicy | K::GlobalNetworkPolicy, false) => vec![name_col],
        (K::NetworkPolicy | K::GlobalNetworkPolicy, true) => {
            vec![
                name_col,
                col!("TIER", "spec.tier"),
                col!("ORDER", "spec.order"),
                col!("SELECTOR", "spec.selector"),
            ]
        }
        (K::StagedNetworkPolicy | K::StagedGlobalNetworkPolicy, false) => {
            vec![name_col, col!("ACTION", "spec.stagedAction")]
        }
        (K::StagedNetworkPolicy | K::StagedGlobalNetworkPolicy, true) => vec![
            name_col,
            col!("ACTION", "spec.stagedAction"),
            col!("TIER", "spec.tier"),
            col!("ORDER", "spec.order"),
            col!("SELECTOR", "spec.selector"),
        ],
        (K::StagedKubernetesNetworkPolicy, _) => {
            vec![name_col, col!("ACTION", "spec.stagedAction")]
        }
        (K::Tier, _) => vec![name_col, col!("ORDER", "spec.order")],
        (K::NetworkSet | K::GlobalNetworkSet, false) => vec![name_col],
        (K::NetworkSet | K::GlobalNetworkSet, true) => vec![name_col, col!("NETS", "spec.nets")],
        (K::Profile, false) => vec![name_col],
        (K::Profile, true) => vec![name_col, ("LABELS", |r, _| labels_of(r))],
        (K::WorkloadEndpoint, false) => vec![
            col!("WORKLOAD", "spec.pod"),
            col!("NODE", "spec.node"),
            col!("NETWORKS", "spec.ipNetworks"),
            col!("INTERFACE", "spec.interfaceName"),
        ],
        (K::WorkloadEndpoint, true) => vec![
            name_col,
            col!("WORKLOAD", "spec.pod"),
            col!("NODE", "spec.node"),
            col!("NETWORKS", "spec.ipNetworks"),
            col!("INTERFACE", "spec.interfaceName"),
            col!("PROFILES", "spec.profiles"),
        ],
        (K::HostEndpoint, false) => vec![name_col, col!("NODE", "spec.node")],
        (K::HostEndpoint, true) => vec![
            name_col,
            col!("NODE", "spec.node"),
            col!("INTERFACE", "spec.interfaceName"),
            col!("IPS", "spec.expectedIPs"),
            col!("PROFILES", "spec.profiles"),
        ],
        (K::Node, false) => vec![name_col],
        (K::Node, true) => vec![
            name_col,
            col!("ASN", "spec.bgp.asNumber"),
            col!("IPV4", "spec.bgp.ipv4Address"),
            col!("IPV6", "spec.bgp.ipv6Address"),
        ],
        (K::BGPPeer, _) => vec![
            name_col,
            col!("PEERIP", "spec.peerIP"),
            ("NODE", |_, v| {
                let node = at(v, "spec.node");
                if node.is_empty() {
                    let sel = at(v, "spec.nodeSelector");
                    if sel.is_empty() {
                        "(global)".into()
                    } else {
                        sel
                    }
                } else {
                    node
                }
            }),
            col!("ASN", "spec.asNumber"),
        ],
        (K::BGPConfiguration, _) => vec![
            name_col,
            col!("LOGSEVERITY", "spec.logSeverityScreen"),
            col!("MESHENABLED", "spec.nodeToNodeMeshEnabled"),
            col!("ASNUMBER", "spec.asNumber"),
        ],
        (K::FelixConfiguration, _) => vec![name_col],
        (K::KubeControllersConfiguration, _) => vec![
            name_col,
            col!("AUTOHEPS", "spec.controllers.node.hostEndpoint.autoCreate"),
        ],
        (K::ClusterInformation, _) => vec![
            name_col,
            col!("VERSION", "spec.calicoVersion"),
            col!("TYPE", "spec.clusterType"),
        ],
    }
}

fn labels_of(r: &Resource) -> String {
    match r {
        Resource::Profile(p) => p
            .spec
            .labels_to_apply
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(","),
        _ => String::new(),
    }
}
