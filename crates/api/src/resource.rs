//! The closed set of resource kinds, and the `Resource` value that holds any one of them.

use crate::k8s::K8sNetworkPolicySpec;
use crate::kinds::{
    endpoint::*, felix::*, ippool::*, kubecontrollers::*, netset::*, node::*, policy::*, staged::*,
};
use crate::meta::ObjectMeta;
use crate::validate::{dns_label, dns_subdomain, Errors, ValidationError};
use serde::{Deserialize, Serialize};

pub const API_VERSION: &str = "projectcalico.org/v3";

/// A resource of one kind: metadata plus its spec.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Object<S> {
    pub metadata: ObjectMeta,
    pub spec: S,
}

impl<S> Object<S> {
    pub fn new(metadata: ObjectMeta, spec: S) -> Self {
        Object { metadata, spec }
    }
}

/// How a kind's object is named.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Naming {
    /// A DNS subdomain.
    Subdomain,
    /// `default` or `node.<node name>`.
    DefaultOrNode,
    /// Only `default`.
    DefaultOnly,
}

macro_rules! kinds {
    ($( $kind:ident : $spec:ty, $plural:literal, namespaced = $ns:literal, naming = $naming:ident, aliases = [$($alias:literal),*] ;)*) => {
        /// Every resource kind calico-rs stores.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[allow(clippy::upper_case_acronyms)]
        pub enum Kind { $($kind),* }

        impl Kind {
            pub const ALL: &'static [Kind] = &[$(Kind::$kind),*];

            /// The kind as manifests spell it (`IPPool`).
            pub fn name(self) -> &'static str {
                match self { $(Kind::$kind => stringify!($kind)),* }
            }

            /// The lower-case plural used in datastore keys (`ippools`).
            pub fn plural(self) -> &'static str {
                match self { $(Kind::$kind => $plural),* }
            }

            pub fn namespaced(self) -> bool {
                match self { $(Kind::$kind => $ns),* }
            }

            pub fn naming(self) -> Naming {
                match self { $(Kind::$kind => Naming::$naming),* }
            }

            /// Resolves what a user types on the command line: `ippool`, `ippools`, `IPPool`, `ipp`...
            pub fn from_alias(text: &str) -> Option<Kind> {
                let lower = text.to_ascii_lowercase();
                Kind::ALL.iter().copied().find(|k| {
                    k.name().eq_ignore_ascii_case(&lower)
                        || k.plural() == lower
                        || match k { $(Kind::$kind => [$($alias),*].contains(&lower.as_str())),* }
                })
            }

            pub fn from_plural(plural: &str) -> Option<Kind> {
                Kind::ALL.iter().copied().find(|k| k.plural() == plural)
            }
        }

        impl std::fmt::Display for Kind {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.name())
            }
        }

        /// Any resource.
        #[derive(Debug, Clone, PartialEq)]
        #[allow(clippy::upper_case_acronyms, clippy::large_enum_variant)]
        pub enum Resource { $($kind(Object<$spec>)),* }

        impl Resource {
            pub fn kind(&self) -> Kind {
                match self { $(Resource::$kind(_) => Kind::$kind),* }
            }

            pub fn meta(&self) -> &ObjectMeta {
                match self { $(Resource::$kind(o) => &o.metadata),* }
            }

            pub fn meta_mut(&mut self) -> &mut ObjectMeta {
                match self { $(Resource::$kind(o) => &mut o.metadata),* }
            }

            fn serialize_with<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                match self {
                    $(Resource::$kind(o) => EnvelopeOut {
                        api_version: API_VERSION,
                        kind: self.kind().name(),
                        metadata: &o.metadata,
                        spec: &o.spec,
                    }.serialize(s)),*
                }
            }

            /// Builds a resource from its parts; the error has the field's path.
            /// A missing `spec` reads as `{}`, so required fields are named.
            pub(crate) fn from_parts(kind: Kind, mut value: serde_json::Value) -> Result<Resource, PathError> {
                if let serde_json::Value::Object(map) = &mut value {
                    map.entry("spec").or_insert_with(|| serde_json::json!({}));
                }
                match kind {
                    $(Kind::$kind => {
                        let env: Envelope<$spec> = serde_path_to_error::deserialize(value)?;
                        Ok(Resource::$kind(Object::new(env.metadata, env.spec)))
                    }),*
                }
            }

            fn spec_defaults(&mut self) {
                match self { $(Resource::$kind(o) => o.spec.default_fields()),* }
            }

            fn spec_check(&self, e: &mut Errors) {
                match self { $(Resource::$kind(o) => o.spec.check(e)),* }
            }
        }
    };
}

kinds! {
    IPPool: IpPoolSpec, "ippools", namespaced = false, naming = Subdomain, aliases = ["ippool", "ipp", "ipps", "pool", "pools"];
    IPReservation: IpReservationSpec, "ipreservations", namespaced = false, naming = Subdomain, aliases = ["ipreservation", "ipr", "iprs"];
    NetworkPolicy: NetworkPolicySpec, "networkpolicies", namespaced = true, naming = Subdomain, aliases = ["networkpolicy", "policy", "policies", "netpol", "netpols", "np", "nps", "pol", "pols"];
    GlobalNetworkPolicy: GlobalNetworkPolicySpec, "globalnetworkpolicies", namespaced = false, naming = Subdomain, aliases = ["globalnetworkpolicy", "gnp", "gnps", "globalpolicy", "globalpolicies"];
    Tier: TierSpec, "tiers", namespaced = false, naming = Subdomain, aliases = ["tier"];
    NetworkSet: NetworkSetSpec, "networksets", namespaced = true, naming = Subdomain, aliases = ["networkset", "netset", "netsets"];
    GlobalNetworkSet: NetworkSetSpec, "globalnetworksets", namespaced = false, naming = Subdomain, aliases = ["globalnetworkset", "gns", "globalnetset", "globalnetsets"];
    Profile: ProfileSpec, "profiles", namespaced = false, naming = Subdomain, aliases = ["profile", "pro", "pros"];
    WorkloadEndpoint: WorkloadEndpointSpec, "workloadendpoints", namespaced = true, naming = Subdomain, aliases = ["workloadendpoint", "wep", "weps"];
    HostEndpoint: HostEndpointSpec, "hostendpoints", namespaced = false, naming = Subdomain, aliases = ["hostendpoint", "hep", "heps"];
    Node: NodeSpec, "nodes", namespaced = false, naming = Subdomain, aliases = ["node", "no", "nos"];
    BGPPeer: BgpPeerSpec, "bgppeers", namespaced = false, naming = Subdomain, aliases = ["bgppeer", "bgpp", "bgpps", "bp", "bps"];
    BGPConfiguration: BgpConfigurationSpec, "bgpconfigurations", namespaced = false, naming = DefaultOrNode, aliases = ["bgpconfiguration", "bgpconfig", "bgpconfigs", "bgpc"];
    FelixConfiguration: FelixConfigurationSpec, "felixconfigurations", namespaced = false, naming = DefaultOrNode, aliases = ["felixconfiguration", "felixconfig", "felixconfigs", "fc"];
    ClusterInformation: ClusterInformationSpec, "clusterinformations", namespaced = false, naming = DefaultOnly, aliases = ["clusterinformation", "clusterinfo", "clusterinfos", "ci"];
    KubeControllersConfiguration: KubeControllersConfigurationSpec, "kubecontrollersconfigurations", namespaced = false, naming = DefaultOnly, aliases = ["kubecontrollersconfiguration", "kubecontrollersconfig", "kcc"];
    StagedNetworkPolicy: Staged<NetworkPolicySpec>, "stagednetworkpolicies", namespaced = true, naming = Subdomain, aliases = ["stagednetworkpolicy", "snp", "snps"];
    StagedGlobalNetworkPolicy: Staged<GlobalNetworkPolicySpec>, "stagedglobalnetworkpolicies", namespaced = false, naming = Subdomain, aliases = ["stagedglobalnetworkpolicy", "sgnp", "sgnps"];
    StagedKubernetesNetworkPolicy: Staged<K8sNetworkPolicySpec>, "stagedkubernetesnetworkpolicies", namespaced = true, naming = Subdomain, aliases = ["stagedkubernetesnetworkpolicy", "sknp", "sknps"];
}

/// Calico's built-in profile that allows everything both ways (host
/// endpoints name it to be allow-all rather than deny-all without policy).
pub const DEFAULT_ALLOW_PROFILE: &str = "projectcalico-default-allow";

/// The wire shape of every resource.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Envelope<S> {
    #[serde(default)]
    api_version: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    metadata: ObjectMeta,
    spec: S,
    /// Accepted and ignored: status is never written by users.
    #[allow(dead_code)]
    #[serde(default, skip_serializing)]
    status: Option<serde_json::Value>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct EnvelopeOut<'a, S> {
    api_version: &'static str,
    kind: &'static str,
    metadata: &'a ObjectMeta,
    spec: &'a S,
}

impl Serialize for Resource {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.serialize_with(s)
    }
}

/// A decoding failure and the path of the field that caused it.
pub(crate) type PathError = serde_path_to_error::Error<serde_json::Error>;

/// Defaults and checks every spec provides.
trait Spec {
    fn default_fields(&mut self) {}
    fn check(&self, _e: &mut Errors) {}
}

impl Spec for IpPoolSpec {
    fn default_fields(&mut self) {
        IpPoolSpec::default_fields(self);
    }
    fn check(&self, e: &mut Errors) {
        IpPoolSpec::check(self, e);
    }
}

/// What NetworkPolicy and GlobalNetworkPolicy check alike.
#[allow(clippy::too_many_arguments)]
fn check_policy(
    e: &mut Errors,
    order: Option<f64>,
    selector: &crate::types::Selector,
    service_account_selector: &crate::types::Selector,
    ingress: &[Rule],
    egress: &[Rule],
    types: &[crate::PolicyType],
) {
    check_order(e, "spec.order", order);
    e.no_global("spec.selector", selector);
    e.no_global("spec.serviceAccountSelector", service_account_selector);
    check_rules(e, "spec.ingress", ingress);
    check_rules(e, "spec.egress", egress);
    check_types(e, "spec.types", types);
}

impl Spec for NetworkPolicySpec {
    fn default_fields(&mut self) {
        default_tier(&mut self.tier);
        default_types(&mut self.types, !self.egress.is_empty());
    }
    fn check(&self, e: &mut Errors) {
        let s = self;
        check_policy(
            e,
            s.order,
            &s.selector,
            &s.service_account_selector,
            &s.ingress,
            &s.egress,
            &s.types,
        );
    }
}

impl Spec for GlobalNetworkPolicySpec {
    fn default_fields(&mut self) {
        default_tier(&mut self.tier);
        default_types(&mut self.types, !self.egress.is_empty());
    }
    fn check(&self, e: &mut Errors) {
        let s = self;
        check_policy(
            e,
            s.order,
            &s.selector,
            &s.service_account_selector,
            &s.ingress,
            &s.egress,
            &s.types,
        );
        if self.do_not_track && self.pre_dnat {
            e.add("spec.preDNAT", "preDNAT and doNotTrack cannot both be true");
        }
        if (self.do_not_track || self.pre_dnat) && !self.apply_on_forward {
            e.add(
                "spec.applyOnForward",
                "must be true when doNotTrack or preDNAT is true",
            );
        }
        if self.pre_dnat && !self.egress.is_empty() {
            e.add("spec.egress", "a preDNAT policy cannot have egress rules");
        }
    }
}

/// A staged policy is defaulted and checked as its enforced kind is (a
/// staged Delete names the policy to delete; its other fields are kept as
/// written and checked all the same).
impl<S: Spec> Spec for Staged<S> {
    fn default_fields(&mut self) {
        self.spec.default_fields();
    }
    fn check(&self, e: &mut Errors) {
        self.spec.check(e);
    }
}

impl Spec for K8sNetworkPolicySpec {
    fn check(&self, e: &mut Errors) {
        crate::kinds::staged::check_k8s(self, e);
    }
}

impl Spec for TierSpec {
    fn check(&self, e: &mut Errors) {
        check_order(e, "spec.order", self.order);
    }
}

/// Kinds whose checks live with their types, in the kinds modules.
macro_rules! checked_in_module {
    ($($spec:ty),*) => {$(
        impl Spec for $spec {
            fn check(&self, e: &mut Errors) {
                <$spec>::check(self, e);
            }
        }
    )*};
}

checked_in_module!(
    IpReservationSpec,
    NetworkSetSpec,
    WorkloadEndpointSpec,
    HostEndpointSpec,
    NodeSpec,
    BgpPeerSpec,
    BgpConfigurationSpec,
    FelixConfigurationSpec,
    KubeControllersConfigurationSpec
);

impl Spec for ProfileSpec {
    fn check(&self, e: &mut Errors) {
        check_rules(e, "spec.ingress", &self.ingress);
        check_rules(e, "spec.egress", &self.egress);
        e.label_map("spec.labelsToApply", &self.labels_to_apply);
    }
}

impl Spec for ClusterInformationSpec {}

impl Resource {
    /// `Kind(name)` or `Kind(namespace/name)`, as errors name resources.
    pub fn display_name(&self) -> String {
        let m = self.meta();
        match &m.namespace {
            Some(ns) if self.kind().namespaced() => format!("{}({ns}/{})", self.kind(), m.name),
            _ => format!("{}({})", self.kind(), m.name),
        }
    }

    /// Fills what Calico fills on write: defaults, and the `default`
    /// namespace for namespaced kinds when none is given.
    pub fn apply_defaults(&mut self) {
        if self.kind().namespaced() && self.meta().namespace.as_deref().unwrap_or("").is_empty() {
            self.meta_mut().namespace = Some("default".into());
        }
        self.spec_defaults();
    }

    /// Checks metadata and spec, returning every problem at once.
    pub fn validate(&self) -> Result<(), ValidationError> {
        let mut e = Errors::default();
        let kind = self.kind();
        let m = self.meta();
        if m.name.is_empty() {
            e.add("metadata.name", "is required");
        } else {
            match kind.naming() {
                Naming::Subdomain => {
                    if let Err(why) = dns_subdomain(&m.name) {
                        e.add("metadata.name", format!("{:?} {why}", m.name));
                    }
                }
                Naming::DefaultOrNode => {
                    let ok = m.name == "default"
                        || m.name
                            .strip_prefix("node.")
                            .is_some_and(|n| dns_subdomain(n).is_ok());
                    if !ok {
                        e.add(
                            "metadata.name",
                            format!("{:?} must be \"default\" or \"node.<node name>\"", m.name),
                        );
                    }
                }
                Naming::DefaultOnly if m.name != "default" => {
                    e.add("metadata.name", format!("{:?} must be \"default\"", m.name));
                }
                Naming::DefaultOnly => {}
            }
        }
        if kind == Kind::Profile && m.name == DEFAULT_ALLOW_PROFILE {
            e.add(
                "metadata.name",
                format!("{DEFAULT_ALLOW_PROFILE} is built in (allow all, both ways) and cannot be written"),
            );
        }
        match (&m.namespace, kind.namespaced()) {
            (Some(ns), true) => {
                if let Err(why) = dns_label(ns) {
                    e.add("metadata.namespace", format!("{ns:?} {why}"));
                }
            }
            (Some(ns), false) if !ns.is_empty() => {
                e.add(
                    "metadata.namespace",
                    format!("{kind} is not namespaced, but namespace {ns:?} was given"),
                );
            }
            _ => {}
        }
        e.label_map("metadata.labels", &m.labels);
        self.spec_check(&mut e);
        e.into_result(self.display_name())
    }
}
