//! What the calculation graph tells the dataplane: the one internal API
//! between them. Plain data; no kernel or datastore types.

use calico_api::Action;
use calico_net::IpNet;
use serde::Serialize;
use std::collections::BTreeSet;

/// Identifies an IP set by what it selects (a hash of the canonical selector).
pub type SetId = String;

/// A policy, by tier, kind and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct PolicyId {
    pub tier: String,
    /// Namespace for NetworkPolicy; None for GlobalNetworkPolicy.
    pub namespace: Option<String>,
    pub name: String,
}

/// A workload endpoint, by namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct EndpointId {
    pub namespace: String,
    pub name: String,
}

/// A port match: a range, always resolved to numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct PortRange {
    pub min: u16,
    pub max: u16,
}

/// Match criteria for one side (source or destination) of a rule.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SideMatch {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub nets: Vec<IpNet>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_nets: Vec<IpNet>,
    /// Address sets (from selectors), all must match.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sets: Vec<SetId>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_sets: Vec<SetId>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PortRange>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_ports: Vec<PortRange>,
    /// Address+port sets for named ports; any may match.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub named_port_sets: Vec<SetId>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_named_port_sets: Vec<SetId>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CompiledRule {
    pub action: Action,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip_version: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_protocol: Option<u8>,
    /// (type, code)
    #[serde(skip_serializing_if = "Option::is_none")]
    pub icmp: Option<(u8, Option<u8>)>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_icmp: Option<(u8, Option<u8>)>,
    pub src: SideMatch,
    pub dst: SideMatch,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CompiledRules {
    pub ingress: Vec<CompiledRule>,
    pub egress: Vec<CompiledRule>,
}

/// What happens when no policy of a tier decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum TierEnd {
    Deny,
    Pass,
}

/// The policies of one tier that apply to an endpoint in one direction, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TierPolicies {
    pub tier: String,
    pub end: TierEnd,
    pub policies: Vec<PolicyId>,
}

/// A local workload endpoint and what applies to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EndpointIntent {
    pub interface: String,
    pub ips: Vec<IpNet>,
    /// allowSpoofedSourcePrefixes: sources it may also send from, where the
    /// node allows workload source spoofing (`workloadSourceSpoofing: Any`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub spoof: Vec<IpNet>,
    /// Ingress (to the workload). Empty: the profiles decide.
    pub ingress: Vec<TierPolicies>,
    /// Egress (from the workload). Empty: the profiles decide.
    pub egress: Vec<TierPolicies>,
    pub profiles: Vec<String>,
}

/// The interface name a host endpoint gives for all of the host's
/// interfaces.
pub const ALL_INTERFACES: &str = "*";

/// A host endpoint of this node and what applies to it, by kind of
/// policy (Calico's host endpoint policy). Each list is empty where no
/// policy of that kind selects the endpoint in that direction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostEndpointIntent {
    /// The interface it stands for, or `*` (every interface of the host
    /// but workload ones and `lo`; a named host endpoint wins on its own),
    /// or empty: the interfaces holding one of `expected_ips`.
    pub interface: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub expected_ips: Vec<std::net::IpAddr>,
    /// Normal policy (neither preDNAT nor doNotTrack), on traffic to the
    /// host's own processes. No policy: the profiles decide.
    pub ingress: Vec<TierPolicies>,
    /// ... and on traffic from them.
    pub egress: Vec<TierPolicies>,
    /// applyOnForward normal policy on traffic forwarded in through the
    /// interface. None at all: forwarded traffic is allowed.
    pub forward_ingress: Vec<TierPolicies>,
    /// ... and forwarded out through it.
    pub forward_egress: Vec<TierPolicies>,
    /// preDNAT policy (ingress only), before any DNAT; no default deny.
    pub pre_dnat: Vec<TierPolicies>,
    /// doNotTrack policy, before conntrack; no default deny.
    pub untracked_ingress: Vec<TierPolicies>,
    pub untracked_egress: Vec<TierPolicies>,
    pub profiles: Vec<String>,
}

impl HostEndpointIntent {
    /// Every (tiers, ingress?) list, for walking all the policies it uses.
    pub fn all_tiers(&self) -> [(&[TierPolicies], bool); 7] {
        [
            (&self.ingress, true),
            (&self.egress, false),
            (&self.forward_ingress, true),
            (&self.forward_egress, false),
            (&self.pre_dnat, true),
            (&self.untracked_ingress, true),
            (&self.untracked_egress, false),
        ]
    }
}

/// One member of an address+port set.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct AddrPort {
    pub net: IpNet,
    pub protocol: u8,
    pub port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum SetMembers {
    Nets(BTreeSet<IpNet>),
    NamedPorts(BTreeSet<AddrPort>),
}

/// A change the dataplane must make. Sets come before the policies that
/// use them, policies before the endpoints that use them; removals in
/// the reverse order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Intent {
    SetUpdate {
        id: SetId,
        members: SetMembers,
    },
    SetRemove {
        id: SetId,
    },
    PolicyUpdate {
        id: PolicyId,
        rules: CompiledRules,
    },
    PolicyRemove {
        id: PolicyId,
    },
    ProfileUpdate {
        name: String,
        rules: CompiledRules,
    },
    ProfileRemove {
        name: String,
    },
    EndpointUpdate {
        id: EndpointId,
        endpoint: EndpointIntent,
    },
    EndpointRemove {
        id: EndpointId,
    },
    HostEndpointUpdate {
        name: String,
        endpoint: HostEndpointIntent,
    },
    HostEndpointRemove {
        name: String,
    },
}
