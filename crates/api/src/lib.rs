//! Calico's `projectcalico.org/v3` resources.
//!
//! Pure data: types shaped exactly like Calico's manifests, the defaults
//! Calico fills in, validation that names the field and the reason, and the
//! conversion of Kubernetes NetworkPolicy into a Calico policy. No I/O.

mod decode;
pub mod k8s;
pub mod kinds;
mod meta;
mod number;
mod resource;
pub mod strict;
pub mod types;
mod validate;

pub use decode::{
    decode_manifest, decode_resource, documents, to_yaml, DecodeError, ManifestError, Problem,
};
pub use kinds::endpoint::{EndpointPort, HostEndpointSpec, IpNat, WorkloadEndpointSpec};
pub use kinds::felix::{failsafe_defaults, port_range, FelixConfigurationSpec, ProtoPort};
pub use kinds::ippool::{AssignmentMode, EncapMode, IpPoolSpec, IpPoolUse, IpReservationSpec};
pub use kinds::kubecontrollers::KubeControllersConfigurationSpec;
pub use kinds::netset::NetworkSetSpec;
pub use kinds::node::{
    AsNumber, BgpConfigurationSpec, BgpPassword, BgpPeerSpec, BindMode, ClusterInformationSpec,
    NextHopMode, NodeBgpSpec, NodeSpec, SecretKeyRef, SourceAddress,
};
pub use kinds::policy::{
    Action, EntityRule, GlobalNetworkPolicySpec, Icmp, NetworkPolicySpec, PolicyType, ProfileSpec,
    Rule, ServiceAccountMatch, TierDefaultAction, TierSpec,
};
pub use kinds::staged::{pending, StagedAction};
pub use meta::ObjectMeta;
pub use resource::{Kind, Object, Resource, API_VERSION, DEFAULT_ALLOW_PROFILE};
pub use types::{Cidr, GoDuration, InterfaceAddress, Mac, Network, PeerAddress, Selector};
pub use validate::{
    dns_label, dns_subdomain, interface_name, label_key, label_value, truncated, FieldError,
    Invalid, ValidationError,
};
