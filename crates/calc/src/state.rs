//! The dataplane state a stream of intents describes (what a dataplane
//! holds after applying them). Used by tests and golden files, and as the
//! reference for any real dataplane.

use crate::intent::*;
use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DesiredState {
    pub sets: BTreeMap<SetId, SetMembers>,
    pub policies: BTreeMap<String, CompiledRules>,
    pub profiles: BTreeMap<String, CompiledRules>,
    pub endpoints: BTreeMap<String, EndpointIntent>,
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
    pub fn apply(&mut self, intents: &[Intent]) -> Result<(), String> {
        for i in intents {
            match i {
                Intent::SetUpdate { id, members } => {
                    self.sets.insert(id.clone(), members.clone());
                }
                Intent::SetRemove { id } => {
                    self.sets
                        .remove(id)
                        .ok_or(format!("removed unknown set {id}"))?;
                }
                Intent::PolicyUpdate { id, rules } => {
                    self.check_sets(rules)?;
                    self.policies.insert(policy_key(id), rules.clone());
                }
                Intent::PolicyRemove { id } => {
                    self.policies
                        .remove(&policy_key(id))
                        .ok_or(format!("removed unknown policy {id:?}"))?;
                }
                Intent::ProfileUpdate { name, rules } => {
                    self.check_sets(rules)?;
                    self.profiles.insert(name.clone(), rules.clone());
                }
                Intent::ProfileRemove { name } => {
                    self.profiles
                        .remove(name)
                        .ok_or(format!("removed unknown profile {name}"))?;
                }
                Intent::EndpointUpdate { id, endpoint } => {
                    for t in endpoint.ingress.iter().chain(&endpoint.egress) {
                        for p in &t.policies {
                            if !self.policies.contains_key(&policy_key(p)) {
                                return Err(format!(
                                    "endpoint {id:?} uses policy {p:?} before it exists"
                                ));
                            }
                        }
                    }
                    self.endpoints
                        .insert(format!("{}/{}", id.namespace, id.name), endpoint.clone());
                }
                Intent::EndpointRemove { id } => {
                    self.endpoints
                        .remove(&format!("{}/{}", id.namespace, id.name))
                        .ok_or(format!("removed unknown endpoint {id:?}"))?;
                }
            }
        }
        Ok(())
    }

    fn check_sets(&self, rules: &CompiledRules) -> Result<(), String> {
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
                        return Err(format!("rule uses set {s} before it exists"));
                    }
                }
            }
        }
        Ok(())
    }
}
