//! The calculation graph for one node.
//!
//! Holds the cluster's policy-relevant resources, a label index of which
//! selectors match which endpoints and network sets, and what it last told
//! the dataplane. Each update marks what it touches dirty (the policies,
//! sets and local endpoints it can affect) and `apply` returns the intents
//! that bring the dataplane from the old to the new desired state: work
//! proportional to what changed, not to the cluster.

use crate::compile::{self, SetSpec, NAMESPACE_LABEL};
use crate::intent::*;
use calico_api::{Kind, PolicyType, Resource, TierDefaultAction};
use calico_net::IpNet;
use calico_selector::{LabelIndex, MatchEvent, Selector};
use std::collections::{BTreeMap, BTreeSet};

/// A change from the datastore.
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)] // each update is moved once; boxing buys nothing
pub enum Update {
    Put(Resource),
    Delete {
        kind: Kind,
        namespace: Option<String>,
        name: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum SelKey {
    Policy(PolicyId),
    Set(String),
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum ItemKey {
    Endpoint(EndpointId),
    NetSet(Option<String>, String),
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum User {
    Policy(PolicyId),
    Profile(String),
}

#[derive(Debug, Clone)]
struct Endpoint {
    node: String,
    interface: String,
    ips: Vec<IpNet>,
    /// allowSpoofedSourcePrefixes: other sources it may send from.
    spoof: Vec<IpNet>,
    profiles: Vec<String>,
    /// (name, protocol, port)
    ports: Vec<(String, u8, u16)>,
}

#[derive(Debug, Clone)]
struct Policy {
    order: Option<f64>,
    ingress: bool,
    egress: bool,
    rules: CompiledRules,
    sets: BTreeSet<SetSpec>,
}

#[derive(Debug, Clone)]
struct Profile {
    rules: CompiledRules,
    sets: BTreeSet<SetSpec>,
}

#[derive(Debug, Clone, Copy)]
struct Tier {
    order: Option<f64>,
    end: TierEnd,
}

/// The graph. Feed it updates; it answers with intents.
#[derive(Debug)]
pub struct CalcGraph {
    node: String,
    endpoints: BTreeMap<EndpointId, Endpoint>,
    netsets: BTreeMap<(Option<String>, String), Vec<IpNet>>,
    policies: BTreeMap<PolicyId, Policy>,
    profiles: BTreeMap<String, Profile>,
    tiers: BTreeMap<String, Tier>,
    index: LabelIndex<SelKey, ItemKey>,
    /// Local endpoint -> the policies selecting it.
    local_policies: BTreeMap<EndpointId, BTreeSet<PolicyId>>,
    /// Policy -> the local endpoints it selects.
    policy_locals: BTreeMap<PolicyId, BTreeSet<EndpointId>>,
    /// Profile -> the local endpoints using it.
    local_profiles: BTreeMap<String, BTreeSet<EndpointId>>,
    /// Which sets each active policy or profile uses.
    user_sets: BTreeMap<User, BTreeSet<SetSpec>>,
    set_users: BTreeMap<SetSpec, BTreeSet<User>>,
    /// Selector -> set specs built on it.
    selector_specs: BTreeMap<String, BTreeSet<SetSpec>>,
    /// What the dataplane was last told.
    sent_sets: BTreeMap<SetSpec, SetMembers>,
    sent_policies: BTreeMap<PolicyId, CompiledRules>,
    sent_profiles: BTreeMap<String, CompiledRules>,
    sent_endpoints: BTreeMap<EndpointId, EndpointIntent>,
    dirty_sets: BTreeSet<SetSpec>,
    dirty_users: BTreeSet<User>,
    dirty_endpoints: BTreeSet<EndpointId>,
    /// Interface -> the local endpoints naming it (more than one: a conflict).
    local_ifaces: BTreeMap<String, BTreeSet<EndpointId>>,
    /// Local endpoints left out of the dataplane, with the reason.
    rejected: BTreeMap<EndpointId, String>,
}

/// The prefix every workload interface carries (Felix's `interfacePrefix`
/// default). An endpoint naming any other interface (the node's `eth0`,
/// say) would put that interface's traffic through workload policy.
pub const WORKLOAD_INTERFACE_PREFIX: &str = "cali";

fn host_nets(list: &[calico_api::Cidr]) -> Vec<IpNet> {
    list.iter().map(calico_api::Cidr::net).collect()
}

fn order_key(o: Option<f64>) -> (bool, OrdF64) {
    (o.is_none(), OrdF64(o.unwrap_or(0.0)))
}

/// f64 ordered totally (orders are validated finite).
#[derive(Debug, Clone, Copy)]
struct OrdF64(f64);
impl PartialEq for OrdF64 {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == std::cmp::Ordering::Equal
    }
}
impl Eq for OrdF64 {}
impl PartialOrd for OrdF64 {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for OrdF64 {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

impl CalcGraph {
    pub fn new(node: &str) -> Self {
        CalcGraph {
            node: node.to_string(),
            endpoints: BTreeMap::new(),
            netsets: BTreeMap::new(),
            policies: BTreeMap::new(),
            profiles: BTreeMap::new(),
            tiers: BTreeMap::new(),
            index: LabelIndex::new(),
            local_policies: BTreeMap::new(),
            policy_locals: BTreeMap::new(),
            local_profiles: BTreeMap::new(),
            user_sets: BTreeMap::new(),
            set_users: BTreeMap::new(),
            selector_specs: BTreeMap::new(),
            sent_sets: BTreeMap::new(),
            sent_policies: BTreeMap::new(),
            sent_profiles: BTreeMap::new(),
            sent_endpoints: BTreeMap::new(),
            dirty_sets: BTreeSet::new(),
            dirty_users: BTreeSet::new(),
            dirty_endpoints: BTreeSet::new(),
            local_ifaces: BTreeMap::new(),
            rejected: BTreeMap::new(),
        }
    }

    /// Local endpoints the dataplane does not get, with the reason: a bad
    /// interface name, or an interface another local endpoint names too
    /// (then neither gets it: its traffic is dropped, never given the other
    /// workload's policy). Each affects only itself.
    pub fn rejected(&self) -> &BTreeMap<EndpointId, String> {
        &self.rejected
    }

    /// Why a local endpoint cannot be programmed, if it cannot.
    fn rejection(&self, id: &EndpointId, ep: &Endpoint) -> Option<String> {
        if let Err(why) = calico_api::interface_name(&ep.interface) {
            return Some(why);
        }
        if !ep.interface.starts_with(WORKLOAD_INTERFACE_PREFIX)
            || ep.interface.len() == WORKLOAD_INTERFACE_PREFIX.len()
        {
            return Some(format!(
                "interface {:?} is not a workload interface ({WORKLOAD_INTERFACE_PREFIX}…)",
                ep.interface
            ));
        }
        let others: Vec<String> = self
            .local_ifaces
            .get(&ep.interface)
            .into_iter()
            .flatten()
            .filter(|o| *o != id)
            .map(|o| format!("{}/{}", o.namespace, o.name))
            .collect();
        (!others.is_empty()).then(|| {
            format!(
                "interface {} is also named by {}; neither endpoint is programmed",
                ep.interface,
                others.join(", ")
            )
        })
    }

    /// Moves a local endpoint's claim on an interface (None: no claim);
    /// every endpoint sharing either interface is looked at again.
    fn claim_interface(&mut self, id: &EndpointId, old: Option<&str>, new: Option<&str>) {
        if old == new {
            return;
        }
        if let Some(old) = old {
            if let Some(ids) = self.local_ifaces.get_mut(old) {
                ids.remove(id);
                self.dirty_endpoints.extend(ids.iter().cloned());
                if ids.is_empty() {
                    self.local_ifaces.remove(old);
                }
            }
        }
        if let Some(new) = new {
            let ids = self.local_ifaces.entry(new.to_string()).or_default();
            ids.insert(id.clone());
            self.dirty_endpoints.extend(ids.iter().cloned());
        }
    }

    fn is_local(&self, id: &EndpointId) -> bool {
        self.endpoints.get(id).is_some_and(|e| e.node == self.node)
    }

    /// Applies one update and returns the intents it causes.
    pub fn apply(&mut self, update: Update) -> Vec<Intent> {
        self.apply_all(std::iter::once(update))
    }

    /// Applies several updates and returns the intents for all of them at
    /// once: what each touches is computed once for the batch (a set many
    /// updates change is built once), so a full listing loads in time
    /// proportional to its size. The intents are those that take the
    /// dataplane from before the first update to after the last.
    pub fn apply_all(&mut self, updates: impl IntoIterator<Item = Update>) -> Vec<Intent> {
        for update in updates {
            match update {
                Update::Put(r) => self.put(r),
                Update::Delete {
                    kind,
                    namespace,
                    name,
                } => self.delete(kind, namespace, name),
            }
        }
        self.flush()
    }

    fn events(&mut self, events: Vec<MatchEvent<SelKey, ItemKey>>) {
        for ev in events {
            let (started, sel, item) = match ev {
                MatchEvent::Started(s, i) => (true, s, i),
                MatchEvent::Stopped(s, i) => (false, s, i),
            };
            match (sel, item) {
                (SelKey::Policy(p), ItemKey::Endpoint(e)) => {
                    if !self.is_local(&e) && started {
                        continue;
                    }
                    let (lp, pl) = (
                        self.local_policies.entry(e.clone()).or_default(),
                        self.policy_locals.entry(p.clone()).or_default(),
                    );
                    if started {
                        lp.insert(p.clone());
                        pl.insert(e.clone());
                    } else {
                        lp.remove(&p);
                        pl.remove(&e);
                    }
                    self.dirty_endpoints.insert(e);
                    self.dirty_users.insert(User::Policy(p));
                }
                (SelKey::Policy(_), ItemKey::NetSet(..)) => {}
                (SelKey::Set(sel), _) => {
                    self.dirty_sets
                        .extend(self.selector_specs.get(&sel).into_iter().flatten().cloned());
                }
            }
        }
    }

    /// Marks the sets that contain an item dirty (its addresses or ports changed).
    fn touch_item_sets(&mut self, item: &ItemKey) {
        let sels: Vec<String> = self
            .index
            .selectors_of(item)
            .filter_map(|s| match s {
                SelKey::Set(sel) => Some(sel.clone()),
                SelKey::Policy(_) => None,
            })
            .collect();
        for sel in sels {
            self.dirty_sets
                .extend(self.selector_specs.get(&sel).into_iter().flatten().cloned());
        }
    }

    fn put(&mut self, r: Resource) {
        match r {
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
                    node: w.spec.node.clone(),
                    interface: w.spec.interface_name.clone(),
                    ips: host_nets(&w.spec.ip_networks),
                    spoof: host_nets(&w.spec.allow_spoofed_source_prefixes),
                    profiles: w.spec.profiles.clone(),
                    ports,
                };
                let now_local = ep.node == self.node;
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
                if was_local && !now_local {
                    self.forget_local(&id);
                }
                let events = self
                    .index
                    .update_item(item.clone(), labels, w.spec.profiles.clone());
                self.events(events);
                if now_local && !was_local {
                    // Policies already matching a (formerly remote) endpoint now count.
                    let pols: Vec<PolicyId> = self
                        .index
                        .selectors_of(&item)
                        .filter_map(|s| {
                            if let SelKey::Policy(p) = s {
                                Some(p.clone())
                            } else {
                                None
                            }
                        })
                        .collect();
                    for p in pols {
                        self.local_policies
                            .entry(id.clone())
                            .or_default()
                            .insert(p.clone());
                        self.policy_locals
                            .entry(p.clone())
                            .or_default()
                            .insert(id.clone());
                        self.dirty_users.insert(User::Policy(p));
                    }
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
            Resource::Profile(p) => {
                let name = p.metadata.name.clone();
                let (rules, sets) = compile::rules(&p.spec.ingress, &p.spec.egress, None);
                self.profiles.insert(name.clone(), Profile { rules, sets });
                let events = self
                    .index
                    .update_parent(&name, p.spec.labels_to_apply.clone());
                self.events(events);
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
                // doNotTrack and preDNAT policies apply to host endpoints
                // only (as in Calico), never to workloads.
                let sel = if p.spec.do_not_track || p.spec.pre_dnat {
                    Selector::from_expr(calico_selector::Expr::Not(Box::new(
                        calico_selector::Expr::All,
                    )))
                } else {
                    compile::policy_selector(
                        &p.spec.selector,
                        None,
                        Some(&p.spec.namespace_selector),
                        &p.spec.service_account_selector,
                    )
                };
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

    fn delete(&mut self, kind: Kind, namespace: Option<String>, name: String) {
        match kind {
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
                let events = self.index.delete_item(&item);
                self.events(events);
                if let Some(old) = self.endpoints.remove(&id).filter(|_| was_local) {
                    self.claim_interface(&id, Some(&old.interface), None);
                }
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
            Kind::Profile => {
                self.profiles.remove(&name);
                let events = self.index.delete_parent(&name);
                self.events(events);
                self.dirty_users.insert(User::Profile(name));
            }
            Kind::NetworkPolicy | Kind::GlobalNetworkPolicy => {
                let ns = if kind == Kind::NetworkPolicy {
                    Some(namespace.unwrap_or_else(|| "default".into()))
                } else {
                    None
                };
                let ids: Vec<PolicyId> = self
                    .policies
                    .keys()
                    .filter(|p| p.namespace == ns && p.name == name)
                    .cloned()
                    .collect();
                for id in ids {
                    self.policies.remove(&id);
                    let events = self.index.delete_selector(&SelKey::Policy(id.clone()));
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

    fn set_local_profiles(&mut self, id: &EndpointId, old: &[String], new: &[String]) {
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

    fn forget_local(&mut self, id: &EndpointId) {
        for p in self.local_policies.remove(id).unwrap_or_default() {
            if let Some(set) = self.policy_locals.get_mut(&p) {
                set.remove(id);
            }
            self.dirty_users.insert(User::Policy(p));
        }
    }

    fn touch_tier(&mut self, tier: &str) {
        let eps: Vec<EndpointId> = self
            .policy_locals
            .iter()
            .filter(|(p, _)| p.tier == tier)
            .flat_map(|(_, eps)| eps.iter().cloned())
            .collect();
        self.dirty_endpoints.extend(eps);
    }

    fn put_netset(
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

    fn put_policy(
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
            .policies
            .keys()
            .filter(|p| p.namespace == id.namespace && p.name == id.name && p.tier != id.tier)
            .cloned()
            .collect();
        for old in stale {
            self.policies.remove(&old);
            let events = self.index.delete_selector(&SelKey::Policy(old.clone()));
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
        let events = self.index.update_selector(SelKey::Policy(id.clone()), sel);
        self.events(events);
        // Order, types or rules may have changed for every endpoint it selects.
        self.dirty_endpoints
            .extend(self.policy_locals.get(&id).into_iter().flatten().cloned());
        self.dirty_users.insert(User::Policy(id));
    }

    fn set_members(&self, spec: &SetSpec) -> SetMembers {
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
                    let ItemKey::Endpoint(e) = item else { continue };
                    let Some(ep) = self.endpoints.get(e) else {
                        continue;
                    };
                    for (name, proto, number) in &ep.ports {
                        if name == port && proto == protocol {
                            out.extend(ep.ips.iter().map(|net| AddrPort {
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

    fn user_active(&self, user: &User) -> Option<(CompiledRules, BTreeSet<SetSpec>)> {
        match user {
            User::Policy(p) => {
                let active = self.policy_locals.get(p).is_some_and(|s| !s.is_empty());
                self.policies
                    .get(p)
                    .filter(|_| active)
                    .map(|pol| (pol.rules.clone(), pol.sets.clone()))
            }
            User::Profile(name) => {
                let used = self.local_profiles.get(name).is_some_and(|s| !s.is_empty());
                self.profiles
                    .get(name)
                    .filter(|_| used)
                    .map(|p| (p.rules.clone(), p.sets.clone()))
            }
        }
    }

    /// What the dataplane gets for a local endpoint (the caller has checked
    /// that it is not rejected).
    fn endpoint_intent(&self, id: &EndpointId) -> Option<EndpointIntent> {
        let ep = self.endpoints.get(id).filter(|e| e.node == self.node)?;
        let pols = self.local_policies.get(id).cloned().unwrap_or_default();
        let tiers = |want_ingress: bool| -> Vec<TierPolicies> {
            let mut applicable: Vec<&PolicyId> = pols
                .iter()
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
        };
        Some(EndpointIntent {
            interface: ep.interface.clone(),
            ips: ep.ips.clone(),
            spoof: ep.spoof.clone(),
            ingress: tiers(true),
            egress: tiers(false),
            profiles: ep.profiles.clone(),
        })
    }

    /// Works through everything dirty and returns the intents, in dependency order.
    fn flush(&mut self) -> Vec<Intent> {
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
                .filter(|e| e.node == self.node)
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
        let mut out = set_up;
        out.extend(rule_up);
        out.extend(ep_up);
        out.extend(ep_rm);
        out.extend(rule_rm);
        out.extend(set_rm);
        out
    }

    /// A set's selector joins the index the first time a user needs it.
    fn register_set(&mut self, spec: &SetSpec) {
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

    fn unregister_set(&mut self, spec: &SetSpec) {
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

fn tier_of(tier: &str) -> String {
    if tier.is_empty() {
        "default".into()
    } else {
        tier.to_string()
    }
}
