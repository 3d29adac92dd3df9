//! The dataplane state a stream of intents describes (what a dataplane
//! holds after applying them). Used by tests and golden files, and as the
//! reference for any real dataplane.

use crate::intent::*;
use serde::Serialize;
use std::collections::BTreeMap;

/// An intent that breaks the ordering contract.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OrderError {
    #[error("removed unknown set {0}")]
    UnknownSet(SetId),
    #[error("removed unknown policy {0:?}")]
    UnknownPolicy(PolicyId),
    #[error("removed unknown profile {0}")]
    UnknownProfile(String),
    #[error("removed unknown endpoint {0:?}")]
    UnknownEndpoint(EndpointId),
    #[error("removed unknown host endpoint {0}")]
    UnknownHostEndpoint(String),
    #[error("endpoint {endpoint} uses policy {policy:?} before it exists")]
    PolicyBeforeItExists { endpoint: String, policy: PolicyId },
    #[error("rule uses set {0} before it exists")]
    SetBeforeItExists(SetId),
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DesiredState {
    pub sets: BTreeMap<SetId, SetMembers>,
    pub policies: BTreeMap<String, CompiledRules>,
    pub profiles: BTreeMap<String, CompiledRules>,
    pub endpoints: BTreeMap<String, EndpointIntent>,
    /// This node's host endpoints, by name.
    pub host_endpoints: BTreeMap<String, HostEndpointIntent>,
}

pub fn policy_key(id: &PolicyId) -> String {
    match &id.namespace {
        Some(ns) => format!("{}/{ns}/{}", id.tier, id.name),
        None => format!("{}/{}", id.tier, id.name),
    }
}

impl DesiredState {
    /// Applies intents in order, insisting on the ordering contract (no
    /// reference to a set, policy or profile that is not there).
    pub fn apply(&mut self, intents: &[Intent]) -> Result<(), OrderError> {
        for i in intents {
            match i {
                Intent::SetUpdate { id, members } => {
                    self.sets.insert(id.clone(), members.clone());
                }
                Intent::SetRemove { id } => {
                    self.sets
                        .remove(id)
                        .ok_or_else(|| OrderError::UnknownSet(id.clone()))?;
                }
                Intent::PolicyUpdate { id, rules } => {
                    self.check_sets(rules)?;
                    self.policies.insert(policy_key(id), rules.clone());
                }
                Intent::PolicyRemove { id } => {
                    self.policies
                        .remove(&policy_key(id))
                        .ok_or_else(|| OrderError::UnknownPolicy(id.clone()))?;
                }
                Intent::ProfileUpdate { name, rules } => {
                    self.check_sets(rules)?;
                    self.profiles.insert(name.clone(), rules.clone());
                }
                Intent::ProfileRemove { name } => {
                    self.profiles
                        .remove(name)
                        .ok_or_else(|| OrderError::UnknownProfile(name.clone()))?;
                }
                Intent::EndpointUpdate { id, endpoint } => {
                    let key = format!("{}/{}", id.namespace, id.name);
                    self.check_policies(&key, endpoint.ingress.iter().chain(&endpoint.egress))?;
                    self.endpoints.insert(key, endpoint.clone());
                }
                Intent::HostEndpointUpdate { name, endpoint } => {
                    self.check_policies(
                        name,
                        endpoint.all_tiers().into_iter().flat_map(|(t, _)| t),
                    )?;
                    self.host_endpoints.insert(name.clone(), endpoint.clone());
                }
                Intent::HostEndpointRemove { name } => {
                    self.host_endpoints
                        .remove(name)
                        .ok_or_else(|| OrderError::UnknownHostEndpoint(name.clone()))?;
                }
                Intent::EndpointRemove { id } => {
                    self.endpoints
                        .remove(&format!("{}/{}", id.namespace, id.name))
                        .ok_or_else(|| OrderError::UnknownEndpoint(id.clone()))?;
                }
            }
        }
        Ok(())
    }

    fn check_policies<'a>(
        &self,
        endpoint: &str,
        tiers: impl Iterator<Item = &'a TierPolicies>,
    ) -> Result<(), OrderError> {
        for t in tiers {
            for p in &t.policies {
                if !self.policies.contains_key(&policy_key(p)) {
                    return Err(OrderError::PolicyBeforeItExists {
                        endpoint: endpoint.to_string(),
                        policy: p.clone(),
                    });
                }
            }
        }
        Ok(())
    }

    fn check_sets(&self, rules: &CompiledRules) -> Result<(), OrderError> {
        for r in rules.ingress.iter().chain(&rules.egress) {
            for side in [&r.src, &r.dst] {
                for s in side
                    .sets
                    .iter()
                    .chain(&side.not_sets)
                    .chain(&side.named_port_sets)
                    .chain(&side.not_named_port_sets)
                {
                    if !self.sets.contains_key(s) {
                        return Err(OrderError::SetBeforeItExists(s.clone()));
                    }
                }
            }
        }
        Ok(())
    }
}
