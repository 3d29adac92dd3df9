//! Taking datastore updates: each one changes the graph's resources and
//! the label index, and marks dirty what it can affect.

use super::*;

impl CalcGraph {
    pub(super) fn put(&mut self, r: Resource) {
        match r {
            Resource::HostEndpoint(h) => {
                let name = h.metadata.name.clone();
                let mut labels = h.metadata.labels.clone();
                // A host endpoint is in no namespace, whatever it claims.
                labels.remove(NAMESPACE_LABEL);
                let ep = HostEp {
                    node: h.spec.node.clone(),
                    interface: h.spec.interface_name.clone(),
                    ips: h
                        .spec
                        .expected_ips
                        .iter()
                        .map(|ip| IpNet::from(*ip))
                        .collect(),
                    profiles: h.spec.profiles.clone(),
                    ports: h
                        .spec
                        .ports
                        .iter()
                        .map(|p| (p.name.clone(), p.protocol.number(), p.port))
                        .collect(),
                };
                self.put_host(name, labels, ep);
            }
            Resource::WorkloadEndpoint(w) => {
                let ns = w
                    .metadata
                    .namespace
                    .clone()
                    .unwrap_or_else(|| "default".into());
                let id = EndpointId {
                    namespace: ns.clone(),
                    name: w.metadata.name.clone(),
                };
                let mut labels = w.metadata.labels.clone();
                labels.insert(NAMESPACE_LABEL.into(), ns);
                let ports = w
                    .spec
                    .ports
                    .iter()
                    .map(|p| (p.name.clone(), p.protocol.number(), p.port))
                    .collect();
                let was_local = self.is_local(&id);
                let old_iface = self
                    .endpoints
                    .get(&id)
                    .filter(|_| was_local)
                    .map(|e| e.interface.clone());
                let ep = Endpoint {
                    node: self.strings.intern(&w.spec.node),
                    interface: w.spec.interface_name.as_str().into(),
                    ips: host_nets(&w.spec.ip_networks).into(),
                    spoof: host_nets(&w.spec.allow_spoofed_source_prefixes).into(),
                    profiles: w.spec.profiles.clone(),
                    ports,
                };
                let now_local = *ep.node == *self.node;
                let old_profiles = self
                    .endpoints
                    .get(&id)
                    .map(|e| e.profiles.clone())
                    .unwrap_or_default();
                self.set_local_profiles(
                    &id,
                    if was_local { &old_profiles } else { &[] },
                    if now_local { &ep.profiles } else { &[] },
                );
                let new_iface = now_local.then(|| ep.interface.clone());
                self.endpoints.insert(id.clone(), ep);
                self.claim_interface(&id, old_iface.as_deref(), new_iface.as_deref());
                let item = ItemKey::Endpoint(id.clone());
                self.touch_item_sets(&item);
                // A newly local endpoint joins the policy index (its
                // policies start matching); one no longer local leaves it.
                self.index_item(&item, labels, w.spec.profiles.clone(), now_local);
                if was_local && !now_local {
                    self.forget_local(&id);
                }
                self.touch_item_sets(&item);
                if now_local || was_local {
                    self.dirty_endpoints.insert(id.clone());
                    for p in old_profiles
                        .iter()
                        .chain(&self.endpoints[&id].profiles.clone())
                    {
                        self.dirty_users.insert(User::Profile(p.clone()));
                    }
                }
            }
            Resource::NetworkSet(s) => {
                let ns = s
                    .metadata
                    .namespace
                    .clone()
                    .unwrap_or_else(|| "default".into());
                let mut labels = s.metadata.labels.clone();
                labels.insert(NAMESPACE_LABEL.into(), ns.clone());
                self.put_netset(
                    Some(ns),
                    s.metadata.name.clone(),
                    labels,
                    host_nets(&s.spec.nets),
                );
            }
            Resource::GlobalNetworkSet(s) => {
                self.put_netset(
                    None,
                    s.metadata.name.clone(),
                    s.metadata.labels.clone(),
                    host_nets(&s.spec.nets),
                );
            }
            Resource::Profile(p) if p.metadata.name == calico_api::DEFAULT_ALLOW_PROFILE => {}
            Resource::Profile(p) => {
                let name = p.metadata.name.clone();
                let (rules, sets) = compile::rules(&p.spec.ingress, &p.spec.egress, None);
                self.profiles.insert(name.clone(), Profile { rules, sets });
                self.index_parent(&name, Some(p.spec.labels_to_apply.clone()));
                self.dirty_users.insert(User::Profile(name));
            }
            Resource::NetworkPolicy(p) => {
                let ns = p
                    .metadata
                    .namespace
                    .clone()
                    .unwrap_or_else(|| "default".into());
                let id = PolicyId {
                    tier: tier_of(&p.spec.tier),
                    namespace: Some(ns.clone()),
                    name: p.metadata.name.clone(),
                };
                let sel = compile::policy_selector(
                    &p.spec.selector,
                    Some(&ns),
                    None,
                    &p.spec.service_account_selector,
                );
                let (rules, sets) = compile::rules(&p.spec.ingress, &p.spec.egress, Some(&ns));
                self.put_policy(id, sel, p.spec.order, &p.spec.types, rules, sets);
            }
            Resource::GlobalNetworkPolicy(p) => {
                let id = PolicyId {
                    tier: tier_of(&p.spec.tier),
                    namespace: None,
                    name: p.metadata.name.clone(),
                };
                let sel = compile::policy_selector(
                    &p.spec.selector,
                    None,
                    Some(&p.spec.namespace_selector),
                    &p.spec.service_account_selector,
                );
                self.host_modes.insert(
                    id.clone(),
                    HostMode {
                        apply_on_forward: p.spec.apply_on_forward,
                        pre_dnat: p.spec.pre_dnat,
                        do_not_track: p.spec.do_not_track,
                    },
                );
                let (rules, sets) = compile::rules(&p.spec.ingress, &p.spec.egress, None);
                self.put_policy(id, sel, p.spec.order, &p.spec.types, rules, sets);
            }
            Resource::Tier(t) => {
                let end = match t.spec.default_action {
                    Some(TierDefaultAction::Pass) => TierEnd::Pass,
                    _ => TierEnd::Deny,
                };
                self.tiers.insert(
                    t.metadata.name.clone(),
                    Tier {
                        order: t.spec.order,
                        end,
                    },
                );
                self.touch_tier(&t.metadata.name);
            }
            _ => {}
        }
    }

    pub(super) fn delete(&mut self, kind: Kind, namespace: Option<String>, name: String) {
        match kind {
            Kind::HostEndpoint => self.delete_host(&name),
            Kind::WorkloadEndpoint => {
                let id = EndpointId {
                    namespace: namespace.unwrap_or_else(|| "default".into()),
                    name,
                };
                let item = ItemKey::Endpoint(id.clone());
                self.touch_item_sets(&item);
                let was_local = self.is_local(&id);
                let profiles = self
                    .endpoints
                    .get(&id)
                    .map(|e| e.profiles.clone())
                    .unwrap_or_default();
                self.unindex_item(&item);
                if let Some(old) = self.endpoints.remove(&id).filter(|_| was_local) {
                    self.claim_interface(&id, Some(&old.interface), None);
                }
                self.strings.sweep();
                self.set_local_profiles(&id, if was_local { &profiles } else { &[] }, &[]);
                if was_local {
                    self.forget_local(&id);
                    self.dirty_endpoints.insert(id);
                    self.dirty_users
                        .extend(profiles.into_iter().map(User::Profile));
                }
            }
            Kind::NetworkSet | Kind::GlobalNetworkSet => {
                let ns = if kind == Kind::NetworkSet {
                    Some(namespace.unwrap_or_else(|| "default".into()))
                } else {
                    None
                };
                let item = ItemKey::NetSet(ns.clone(), name.clone());
                self.touch_item_sets(&item);
                let events = self.index.delete_item(&item);
                self.events(events);
                self.netsets.remove(&(ns, name));
            }
            Kind::Profile if name == calico_api::DEFAULT_ALLOW_PROFILE => {}
            Kind::Profile => {
                self.profiles.remove(&name);
                self.index_parent(&name, None);
                self.dirty_users.insert(User::Profile(name));
            }
            Kind::NetworkPolicy | Kind::GlobalNetworkPolicy => {
                let ns = if kind == Kind::NetworkPolicy {
                    Some(namespace.unwrap_or_else(|| "default".into()))
                } else {
                    None
                };
                let ids: Vec<PolicyId> = self
                    .policy_tiers
                    .remove(&(ns.clone(), name.clone()))
                    .map(|tier| PolicyId {
                        tier,
                        namespace: ns,
                        name,
                    })
                    .into_iter()
                    .collect();
                for id in ids {
                    self.policies.remove(&id);
                    self.host_modes.remove(&id);
                    let events = self.pindex.delete_selector(&SelKey::Policy(id.clone()));
                    self.events(events);
                    self.dirty_users.insert(User::Policy(id));
                }
            }
            Kind::Tier => {
                self.tiers.remove(&name);
                self.touch_tier(&name);
            }
            _ => {}
        }
    }

    pub(super) fn set_local_profiles(&mut self, id: &EndpointId, old: &[String], new: &[String]) {
        for p in old {
            if let Some(set) = self.local_profiles.get_mut(p) {
                set.remove(id);
                if set.is_empty() {
                    self.local_profiles.remove(p);
                }
            }
        }
        for p in new {
            self.local_profiles
                .entry(p.clone())
                .or_default()
                .insert(id.clone());
        }
    }

    pub(super) fn forget_local(&mut self, id: &EndpointId) {
        for p in self.local_policies.remove(id).unwrap_or_default() {
            if let Some(set) = self.policy_locals.get_mut(&p) {
                set.remove(id);
            }
            self.dirty_users.insert(User::Policy(p));
        }
    }

    pub(super) fn touch_tier(&mut self, tier: &str) {
        let eps: Vec<EndpointId> = self
            .policy_locals
            .iter()
            .filter(|(p, _)| p.tier == tier)
            .flat_map(|(_, eps)| eps.iter().cloned())
            .collect();
        self.dirty_endpoints.extend(eps);
        let hosts: Vec<String> = self
            .policy_hosts
            .iter()
            .filter(|(p, _)| p.tier == tier)
            .flat_map(|(_, hs)| hs.iter().cloned())
            .collect();
        self.dirty_hosts.extend(hosts);
    }

    /// Marks dirty every local host endpoint on `iface` (which of them
    /// holds the interface may change).
    fn touch_host_interface(&mut self, iface: &str) {
        let names: Vec<String> = self
            .hosts
            .iter()
            .filter(|(_, h)| h.node == self.node && h.interface == iface)
            .map(|(n, _)| n.clone())
            .collect();
        self.dirty_hosts.extend(names);
    }

    fn set_host_profiles(&mut self, name: &str, old: &[String], new: &[String]) {
        for p in old {
            if let Some(set) = self.host_profiles.get_mut(p) {
                set.remove(name);
                if set.is_empty() {
                    self.host_profiles.remove(p);
                }
            }
            self.dirty_users.insert(User::Profile(p.clone()));
        }
        for p in new {
            self.host_profiles
                .entry(p.clone())
                .or_default()
                .insert(name.to_string());
            self.dirty_users.insert(User::Profile(p.clone()));
        }
    }

    fn forget_local_host(&mut self, name: &str) {
        for p in self.host_policies.remove(name).unwrap_or_default() {
            if let Some(set) = self.policy_hosts.get_mut(&p) {
                set.remove(name);
            }
            self.dirty_users.insert(User::Policy(p));
        }
    }

    pub(super) fn put_host(&mut self, name: String, labels: BTreeMap<String, String>, ep: HostEp) {
        let item = ItemKey::Host(name.clone());
        let old = self.hosts.get(&name).cloned();
        let was_local = old.as_ref().is_some_and(|o| *o.node == *self.node);
        let now_local = *ep.node == *self.node;
        let old_profiles = old
            .as_ref()
            .filter(|_| was_local)
            .map(|o| o.profiles.clone())
            .unwrap_or_default();
        let new_profiles = if now_local {
            ep.profiles.clone()
        } else {
            Vec::new()
        };
        self.set_host_profiles(&name, &old_profiles, &new_profiles);
        if let Some(o) = old.as_ref().filter(|_| was_local) {
            self.touch_host_interface(&o.interface.clone());
        }
        self.touch_item_sets(&item);
        let iface = ep.interface.clone();
        let profiles = ep.profiles.clone();
        self.hosts.insert(name.clone(), ep);
        self.index_item(&item, labels, profiles, now_local);
        if was_local && !now_local {
            self.forget_local_host(&name);
        }
        self.touch_item_sets(&item);
        if now_local {
            self.touch_host_interface(&iface);
        }
        if now_local || was_local {
            self.dirty_hosts.insert(name);
        }
    }

    pub(super) fn delete_host(&mut self, name: &str) {
        let item = ItemKey::Host(name.to_string());
        self.touch_item_sets(&item);
        let was_local = self.is_local_host(name);
        self.unindex_item(&item);
        if let Some(old) = self.hosts.remove(name) {
            if was_local {
                self.set_host_profiles(name, &old.profiles, &[]);
                self.forget_local_host(name);
                self.touch_host_interface(&old.interface);
                self.dirty_hosts.insert(name.to_string());
            }
        }
    }

    pub(super) fn put_netset(
        &mut self,
        ns: Option<String>,
        name: String,
        labels: BTreeMap<String, String>,
        nets: Vec<IpNet>,
    ) {
        let item = ItemKey::NetSet(ns.clone(), name.clone());
        self.touch_item_sets(&item);
        self.netsets.insert((ns, name), nets);
        let events = self.index.update_item(item.clone(), labels, Vec::new());
        self.events(events);
        self.touch_item_sets(&item);
    }

    pub(super) fn put_policy(
        &mut self,
        id: PolicyId,
        sel: Selector,
        order: Option<f64>,
        types: &[PolicyType],
        rules: CompiledRules,
        sets: BTreeSet<SetSpec>,
    ) {
        // A policy renamed into another tier is a different id: drop the old one.
        let stale: Vec<PolicyId> = self
            .policy_tiers
            .insert((id.namespace.clone(), id.name.clone()), id.tier.clone())
            .filter(|tier| *tier != id.tier)
            .map(|tier| PolicyId {
                tier,
                namespace: id.namespace.clone(),
                name: id.name.clone(),
            })
            .into_iter()
            .collect();
        for old in stale {
            self.policies.remove(&old);
            self.host_modes.remove(&old);
            let events = self.pindex.delete_selector(&SelKey::Policy(old.clone()));
            self.events(events);
            self.dirty_users.insert(User::Policy(old));
        }
        let ingress = types.is_empty() || types.contains(&PolicyType::Ingress);
        let egress = types.contains(&PolicyType::Egress);
        self.policies.insert(
            id.clone(),
            Policy {
                order,
                ingress,
                egress,
                rules,
                sets,
            },
        );
        let events = self.pindex.update_selector(SelKey::Policy(id.clone()), sel);
        self.events(events);
        // Order, types or rules may have changed for every endpoint it selects.
        self.dirty_endpoints
            .extend(self.policy_locals.get(&id).into_iter().flatten().cloned());
        self.dirty_hosts
            .extend(self.policy_hosts.get(&id).into_iter().flatten().cloned());
        self.dirty_users.insert(User::Policy(id));
    }
}
