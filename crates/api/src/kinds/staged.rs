//! Staged policies (Calico 3.30): StagedNetworkPolicy,
//! StagedGlobalNetworkPolicy and StagedKubernetesNetworkPolicy. Each is
//! its enforced kind's spec plus `stagedAction` (Set, the default, or
//! Delete): stored, validated and shown, never enforced. What they would
//! do is the *pending* policy set: the enforced policies with each staged
//! Set put in place of (or beside) its enforced namesake and each staged
//! Delete taking its namesake away ([`pending`]).

use crate::k8s::{K8sNetworkPolicy, K8sNetworkPolicySpec};
use crate::resource::{Kind, Object, Resource};
use crate::validate::Errors;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// What a staged policy would do to its enforced namesake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum StagedAction {
    /// Create it, or replace it with this one.
    #[default]
    Set,
    /// Delete it.
    Delete,
}

/// An enforced kind's spec, staged: the same fields plus `stagedAction`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Staged<S> {
    pub action: StagedAction,
    pub spec: S,
}

impl<S: Serialize> Serialize for Staged<S> {
    fn serialize<Z: Serializer>(&self, s: Z) -> Result<Z::Ok, Z::Error> {
        use serde::ser::Error as _;
        let mut v = serde_json::to_value(&self.spec).map_err(Z::Error::custom)?;
        if let serde_json::Value::Object(m) = &mut v {
            let action = serde_json::to_value(self.action).map_err(Z::Error::custom)?;
            m.insert("stagedAction".into(), action);
        }
        v.serialize(s)
    }
}

impl<'de, S: serde::de::DeserializeOwned> Deserialize<'de> for Staged<S> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut v = serde_json::Value::deserialize(d)?;
        let action = match v.as_object_mut().and_then(|m| m.remove("stagedAction")) {
            None => StagedAction::Set,
            Some(a) => serde_json::from_value(a)
                .map_err(|_| D::Error::custom("stagedAction must be Set or Delete"))?,
        };
        // The rest is the enforced kind's spec, unknown fields refused; an
        // error names the field inside it.
        let spec = serde_path_to_error::deserialize(v)
            .map_err(|e| D::Error::custom(format!("{}: {}", e.path(), e.inner())))?;
        Ok(Staged { action, spec })
    }
}

/// The enforced resource a staged one stands for (a StagedKubernetesNetworkPolicy
/// as the Calico policy Calico converts its Kubernetes namesake to), with
/// what it would do to it; None for every other kind.
pub fn enforced(r: &Resource) -> Option<(StagedAction, Resource)> {
    match r {
        Resource::StagedNetworkPolicy(p) => Some((
            p.spec.action,
            Resource::NetworkPolicy(Object::new(p.metadata.clone(), p.spec.spec.clone())),
        )),
        Resource::StagedGlobalNetworkPolicy(p) => Some((
            p.spec.action,
            Resource::GlobalNetworkPolicy(Object::new(p.metadata.clone(), p.spec.spec.clone())),
        )),
        Resource::StagedKubernetesNetworkPolicy(p) => {
            let knp = K8sNetworkPolicy {
                api_version: crate::k8s::API_VERSION.into(),
                kind: "NetworkPolicy".into(),
                metadata: p.metadata.clone(),
                spec: p.spec.spec.clone(),
                status: None,
            };
            let mut converted = knp.to_calico().ok()?;
            converted.apply_defaults();
            Some((p.spec.action, converted))
        }
        _ => None,
    }
}

/// The policy set that would be in force if every staged policy were
/// applied: `resources` without the staged kinds, each staged Set put in
/// place of its namesake (or added), each staged Delete taking it away.
pub fn pending(resources: &[Resource]) -> Vec<Resource> {
    let key = |r: &Resource| (r.kind(), r.meta().namespace.clone(), r.meta().name.clone());
    let mut out: std::collections::BTreeMap<(Kind, Option<String>, String), Resource> = resources
        .iter()
        .filter(|r| enforced(r).is_none())
        .map(|r| (key(r), r.clone()))
        .collect();
    for r in resources {
        if let Some((action, e)) = enforced(r) {
            match action {
                StagedAction::Set => {
                    out.insert(key(&e), e);
                }
                StagedAction::Delete => {
                    out.remove(&key(&e));
                }
            }
        }
    }
    out.into_values().collect()
}

/// Checks a staged Kubernetes policy as its enforced namesake is checked.
pub(crate) fn check_k8s(spec: &K8sNetworkPolicySpec, e: &mut Errors) {
    crate::k8s::check_spec(e, spec);
}
