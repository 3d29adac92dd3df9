//! The flow record every part agrees on: what a node writes to
//! `flows.log`, streams to the service, and what the service stores and
//! serves.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::IpAddr;

/// One aggregated flow: an endpoint pair, protocol, destination port,
/// action and policy trace over one flush interval of one reporter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Flow {
    /// Unix seconds of the first and last packet counted.
    pub start_time: u64,
    pub end_time: u64,
    /// The node that reported it.
    #[serde(default)]
    pub node: String,
    /// `src` (the source's egress decided) or `dst` (the destination's ingress).
    pub reporter: String,
    /// `allow`, `deny` or `pass`.
    pub action: String,
    pub proto: String,
    pub source_ip: Option<IpAddr>,
    /// Kept only where the node is configured not to aggregate
    /// (`flowLogsFileAggregationKindFor…: 0`); absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_port: Option<u16>,
    pub source_namespace: String,
    pub source_name: String,
    /// `wep` (a workload of this cluster), `hep`, `ns` or `net`.
    pub source_type: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub source_labels: BTreeMap<String, String>,
    pub dest_ip: Option<IpAddr>,
    pub dest_namespace: String,
    pub dest_name: String,
    pub dest_type: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub dest_labels: BTreeMap<String, String>,
    pub dest_port: Option<u16>,
    /// Calico's trace: `<index>|<tier>|<namespace>/<name>|<action>|<rule>`.
    pub policies: Vec<String>,
    /// The trace if the staged policies were enforced.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending_policies: Vec<String>,
    /// Packets and bytes both ways (`*_in` + `*_out`).
    pub packets: u64,
    #[serde(default)]
    pub bytes: u64,
    /// Into and out of the reporting endpoint: for the destination's
    /// ingress (`dst`) in is source to destination; for the source's egress
    /// (`src`) out is. Allowed flows count from the connection tracker
    /// (every packet, both ways); denied ones count the dropped packets.
    #[serde(default)]
    pub packets_in: u64,
    #[serde(default)]
    pub packets_out: u64,
    #[serde(default)]
    pub bytes_in: u64,
    #[serde(default)]
    pub bytes_out: u64,
    /// Connections seen in the interval (attempts, for denied flows).
    pub num_flows: u64,
    /// Of those, started in it, ended in it, and still open at its end.
    #[serde(default)]
    pub num_flows_started: u64,
    #[serde(default)]
    pub num_flows_completed: u64,
    #[serde(default)]
    pub num_flows_live: u64,
}

/// One entry of a trace, read back.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct TraceEntry {
    pub index: i64,
    pub tier: String,
    pub policy: String,
    pub action: String,
    pub rule: i64,
}

impl TraceEntry {
    /// `<index>|<tier>|<policy>|<action>|<rule>`; None if it is not one.
    pub fn parse(entry: &str) -> Option<TraceEntry> {
        let mut p = entry.splitn(5, '|');
        let index = p.next()?.parse().ok()?;
        let tier = p.next()?.to_string();
        let policy = p.next()?.to_string();
        let action = p.next()?.to_string();
        let rule = p.next()?.parse().ok()?;
        Some(TraceEntry {
            index,
            tier,
            policy,
            action,
            rule,
        })
    }

    /// How people read it: `tier/policy rule N → action` (a profile's
    /// `profile kns.shop rule 0 → allow`; a tier's end `default.end-of-tier → deny`).
    pub fn readable(&self) -> String {
        if self.rule < 0 {
            format!("{} → {}", self.policy, self.action)
        } else if self.tier == "__PROFILE__" {
            format!(
                "profile {} rule {} → {}",
                self.policy.trim_start_matches("__PROFILE__."),
                self.rule,
                self.action
            )
        } else {
            format!(
                "{}/{} rule {} → {}",
                self.tier, self.policy, self.rule, self.action
            )
        }
    }
}

impl Flow {
    /// The entry of the trace that decided (the last one).
    pub fn decided_by(&self) -> Option<TraceEntry> {
        self.policies.last().and_then(|e| TraceEntry::parse(e))
    }
}
