//! Working out the intents: set members, compiled policies and
//! profiles, and endpoints, for whatever is dirty, in the order the
//! dataplane needs them (sets before the rules that use them, endpoints
//! after their policies; removals the other way round).

use super::*;

impl CalcGraph {
    pub(super) fn set_members(&self, spec: &SetSpec) -> SetMembers {
        let items = self
            .index
            .matches(&SelKey::Set(spec.selector().text().to_string()));
        match spec {
            SetSpec::Selector(_) => {
                let mut nets = BTreeSet::new();
                for item in items {
                    match item {
                        ItemKey::Endpoint(e) => nets.extend(
                            self.endpoints
                                .get(e)
                                .into_iter()
                                .flat_map(|e| e.ips.iter().copied()),
                        ),
                        ItemKey::Host(h) => nets.extend(
                            self.hosts
                                .get(h)
                                .into_iter()
                                .flat_map(|h| h.ips.iter().copied()),
                        ),
                        ItemKey::NetSet(ns, n) => nets.extend(
                            self.netsets
                                .get(&(ns.clone(), n.clone()))
                                .into_iter()
                                .flatten()
                                .copied(),
                        ),
                    }
                }
                SetMembers::Nets(nets)
            }
            SetSpec::NamedPort { protocol, port, .. } => {
                let mut out = BTreeSet::new();
                for item in items {
                    let (ports, ips) = match item {
                        ItemKey::Endpoint(e) => match self.endpoints.get(e) {
                            Some(ep) => (&ep.ports, &ep.ips[..]),
                            None => continue,
                        },
                        ItemKey::Host(h) => match self.hosts.get(h) {
                            Some(h) => (&h.ports, &h.ips[..]),
                            None => continue,
                        },
                        ItemKey::NetSet(..) => continue,
                    };
                    for (name, proto, number) in ports {
                        if name == port && proto == protocol {
                            out.extend(ips.iter().map(|net| AddrPort {
                                net: *net,
                                protocol: *proto,
                                port: *number,
                            }));
                        }
                    }
                }
                SetMembers::NamedPorts(out)
            }
        }
    }

    pub(super) fn user_active(&self, user: &User) -> Option<(CompiledRules, BTreeSet<SetSpec>)> {
        match user {
            User::Policy(p) => {
                let active = self.policy_locals.get(p).is_some_and(|s| !s.is_empty())
                    || self.policy_hosts.get(p).is_some_and(|s| !s.is_empty());
                self.policies
                    .get(p)
                    .filter(|_| active)
                    .map(|pol| (pol.rules.clone(), pol.sets.clone()))
            }
            User::Profile(name) => {
                let used = self.local_profiles.get(name).is_some_and(|s| !s.is_empty())
                    || self.host_profiles.get(name).is_some_and(|s| !s.is_empty());
                self.profiles
                    .get(name)
                    .filter(|_| used)
                    .map(|p| (p.rules.clone(), p.sets.clone()))
            }
        }
    }

    fn host_mode(&self, p: &PolicyId) -> HostMode {
        self.host_modes.get(p).copied().unwrap_or_default()
    }

    /// The tiers of the given policies that apply in one direction, in
    /// Calico's order: tiers by order, then policies by order and name.
    fn tiers<'a>(
        &self,
        pols: impl Iterator<Item = &'a PolicyId>,
        want_ingress: bool,
    ) -> Vec<TierPolicies> {
        let mut applicable: Vec<&PolicyId> = pols
            .filter(|p| {
                self.policies.get(*p).is_some_and(|pol| {
                    if want_ingress {
                        pol.ingress
                    } else {
                        pol.egress
                    }
                })
            })
            .collect();
        applicable.sort_by_key(|p| {
            let tier = self.tiers.get(&p.tier);
            let tier_order = if p.tier == "default" && tier.is_none() {
                Some(1_000_000.0)
            } else {
                tier.and_then(|t| t.order)
            };
            (
                order_key(tier_order),
                p.tier.clone(),
                order_key(self.policies.get(*p).and_then(|pol| pol.order)),
                p.name.clone(),
                p.namespace.clone(),
            )
        });
        let mut out: Vec<TierPolicies> = Vec::new();
        for p in applicable {
            match out.last_mut() {
                Some(t) if t.tier == p.tier => t.policies.push(p.clone()),
                _ => out.push(TierPolicies {
                    tier: p.tier.clone(),
                    end: self.tiers.get(&p.tier).map_or(TierEnd::Deny, |t| t.end),
                    policies: vec![p.clone()],
                }),
            }
        }
        out
    }

    /// What the dataplane gets for a local endpoint (the caller has checked
    /// that it is not rejected). preDNAT and doNotTrack policies apply to
    /// host endpoints only.
    pub(super) fn endpoint_intent(&self, id: &EndpointId) -> Option<EndpointIntent> {
        let ep = self.endpoints.get(id).filter(|e| *e.node == *self.node)?;
        let pols: Vec<&PolicyId> = self
            .local_policies
            .get(id)
            .into_iter()
            .flatten()
            .filter(|p| self.host_mode(p).normal())
            .collect();
        Some(EndpointIntent {
            interface: ep.interface.to_string(),
            ips: ep.ips.to_vec(),
            spoof: ep.spoof.to_vec(),
            ingress: self.tiers(pols.iter().copied(), true),
            egress: self.tiers(pols.iter().copied(), false),
            profiles: ep.profiles.clone(),
        })
    }

    /// What the dataplane gets for a local host endpoint, by kind of policy.
    pub(super) fn host_intent(&self, name: &str) -> Option<HostEndpointIntent> {
        let h = self.hosts.get(name).filter(|h| h.node == self.node)?;
        let pols: Vec<&PolicyId> = self.host_policies.get(name).into_iter().flatten().collect();
        let kind = |f: &dyn Fn(HostMode) -> bool| -> Vec<&PolicyId> {
            pols.iter()
                .copied()
                .filter(|p| f(self.host_mode(p)))
                .collect()
        };
        let normal = kind(&|m| m.normal());
        let forward = kind(&|m| m.normal() && m.apply_on_forward);
        let pre_dnat = kind(&|m| m.pre_dnat);
        let untracked = kind(&|m| m.do_not_track);
        Some(HostEndpointIntent {
            interface: h.interface.clone(),
            expected_ips: h.ips.iter().map(IpNet::addr).collect(),
            ingress: self.tiers(normal.iter().copied(), true),
            egress: self.tiers(normal.iter().copied(), false),
            forward_ingress: self.tiers(forward.iter().copied(), true),
            forward_egress: self.tiers(forward.iter().copied(), false),
            pre_dnat: self.tiers(pre_dnat.iter().copied(), true),
            untracked_ingress: self.tiers(untracked.iter().copied(), true),
            untracked_egress: self.tiers(untracked.iter().copied(), false),
            profiles: h.profiles.clone(),
        })
    }

    /// Works through everything dirty and returns the intents, in dependency order.
    pub(super) fn flush(&mut self) -> Vec<Intent> {
        let (mut set_up, mut set_rm, mut rule_up, mut rule_rm, mut ep_up, mut ep_rm) = (
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
        );
        for user in std::mem::take(&mut self.dirty_users) {
            let desired = self.user_active(&user);
            let new_sets = desired.as_ref().map(|(_, s)| s.clone()).unwrap_or_default();
            let old_sets = self.user_sets.remove(&user).unwrap_or_default();
            for spec in old_sets.difference(&new_sets) {
                if let Some(users) = self.set_users.get_mut(spec) {
                    users.remove(&user);
                    if users.is_empty() {
                        self.set_users.remove(spec);
                        self.unregister_set(spec);
                    }
                }
                self.dirty_sets.insert(spec.clone());
            }
            for spec in new_sets.difference(&old_sets) {
                let users = self.set_users.entry(spec.clone()).or_default();
                if users.is_empty() {
                    self.register_set(spec);
                }
                self.set_users
                    .entry(spec.clone())
                    .or_default()
                    .insert(user.clone());
                self.dirty_sets.insert(spec.clone());
            }
            if !new_sets.is_empty() {
                self.user_sets.insert(user.clone(), new_sets);
            }
            match (&user, desired) {
                (User::Policy(id), Some((rules, _))) => {
                    if self.sent_policies.get(id) != Some(&rules) {
                        self.sent_policies.insert(id.clone(), rules.clone());
                        rule_up.push(Intent::PolicyUpdate {
                            id: id.clone(),
                            rules,
                        });
                    }
                }
                (User::Policy(id), None) => {
                    if self.sent_policies.remove(id).is_some() {
                        rule_rm.push(Intent::PolicyRemove { id: id.clone() });
                    }
                }
                (User::Profile(name), Some((rules, _))) => {
                    if self.sent_profiles.get(name) != Some(&rules) {
                        self.sent_profiles.insert(name.clone(), rules.clone());
                        rule_up.push(Intent::ProfileUpdate {
                            name: name.clone(),
                            rules,
                        });
                    }
                }
                (User::Profile(name), None) => {
                    if self.sent_profiles.remove(name).is_some() {
                        rule_rm.push(Intent::ProfileRemove { name: name.clone() });
                    }
                }
            }
        }
        for spec in std::mem::take(&mut self.dirty_sets) {
            let wanted = self.set_users.contains_key(&spec);
            if wanted {
                let members = self.set_members(&spec);
                if self.sent_sets.get(&spec) != Some(&members) {
                    self.sent_sets.insert(spec.clone(), members.clone());
                    set_up.push(Intent::SetUpdate {
                        id: spec.id(),
                        members,
                    });
                }
            } else if self.sent_sets.remove(&spec).is_some() {
                set_rm.push(Intent::SetRemove { id: spec.id() });
            }
        }
        for id in std::mem::take(&mut self.dirty_endpoints) {
            let why = self
                .endpoints
                .get(&id)
                .filter(|e| *e.node == *self.node)
                .and_then(|e| self.rejection(&id, e));
            // A rejected endpoint gets no intent (its interface stays closed).
            let intent = match why {
                Some(why) => {
                    self.rejected.insert(id.clone(), why);
                    None
                }
                None => {
                    self.rejected.remove(&id);
                    self.endpoint_intent(&id)
                }
            };
            match intent {
                Some(intent) => {
                    if self.sent_endpoints.get(&id) != Some(&intent) {
                        self.sent_endpoints.insert(id.clone(), intent.clone());
                        ep_up.push(Intent::EndpointUpdate {
                            id,
                            endpoint: intent,
                        });
                    }
                }
                None => {
                    if self.sent_endpoints.remove(&id).is_some() {
                        ep_rm.push(Intent::EndpointRemove { id });
                    }
                }
            }
        }
        for name in std::mem::take(&mut self.dirty_hosts) {
            let why = self
                .hosts
                .get(&name)
                .filter(|h| h.node == self.node)
                .and_then(|h| self.host_rejection(&name, h));
            let intent = match why {
                Some(why) => {
                    self.rejected_hosts.insert(name.clone(), why);
                    None
                }
                None => {
                    self.rejected_hosts.remove(&name);
                    self.host_intent(&name)
                }
            };
            match intent {
                Some(intent) => {
                    if self.sent_hosts.get(&name) != Some(&intent) {
                        self.sent_hosts.insert(name.clone(), intent.clone());
                        ep_up.push(Intent::HostEndpointUpdate {
                            name,
                            endpoint: intent,
                        });
                    }
                }
                None => {
                    if self.sent_hosts.remove(&name).is_some() {
                        ep_rm.push(Intent::HostEndpointRemove { name });
                    }
                }
            }
        }
        let mut out = set_up;
        out.extend(rule_up);
        out.extend(ep_up);
        out.extend(ep_rm);
        out.extend(rule_rm);
        out.extend(set_rm);
        out
    }

    /// A set's selector joins the index the first time a user needs it.
    pub(super) fn register_set(&mut self, spec: &SetSpec) {
        let sel = spec.selector().text().to_string();
        let specs = self.selector_specs.entry(sel.clone()).or_default();
        let first = specs.is_empty();
        specs.insert(spec.clone());
        if first {
            let parsed = spec.selector().parsed().clone();
            let events = self.index.update_selector(SelKey::Set(sel), parsed);
            self.events(events);
        }
    }

    pub(super) fn unregister_set(&mut self, spec: &SetSpec) {
        let sel = spec.selector().text().to_string();
        if let Some(specs) = self.selector_specs.get_mut(&sel) {
            specs.remove(spec);
            if specs.is_empty() {
                self.selector_specs.remove(&sel);
                let events = self.index.delete_selector(&SelKey::Set(sel));
                self.events(events);
            }
        }
    }
}
