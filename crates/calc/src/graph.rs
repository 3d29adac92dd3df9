//! The calculation graph for one node.
//!
//! Holds the cluster's policy-relevant resources, a label index of which
//! selectors match which endpoints and network sets, and what it last told
//! the dataplane. Each update marks what it touches dirty (the policies,
//! sets and local endpoints it can affect) and `apply` returns the intents
//! that bring the dataplane from the old to the new desired state: work
//! proportional to what changed, not to the cluster.

mod output;
mod update;

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
    /// A host endpoint, by name.
    Host(String),
    NetSet(Option<String>, String),
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum User {
    Policy(PolicyId),
    Profile(String),
}

#[derive(Debug, Clone)]
/// One per workload of the cluster (remote ones too, for rule sets), so
/// kept small: the node name a shared copy, lists as boxed slices.
struct Endpoint {
    node: calico_selector::Str,
    interface: Box<str>,
    ips: Box<[IpNet]>,
    /// allowSpoofedSourcePrefixes: other sources it may send from.
    spoof: Box<[IpNet]>,
    profiles: Vec<String>,
    /// (name, protocol, port)
    ports: Vec<(String, u8, u16)>,
}

/// A host endpoint (any node's: its addresses join selector sets).
#[derive(Debug, Clone)]
struct HostEp {
    node: String,
    interface: String,
    /// expectedIPs, as host networks.
    ips: Vec<IpNet>,
    profiles: Vec<String>,
    /// (name, protocol, port)
    ports: Vec<(String, u8, u16)>,
}

/// How a GlobalNetworkPolicy applies to host endpoints.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct HostMode {
    apply_on_forward: bool,
    pre_dnat: bool,
    do_not_track: bool,
}

impl HostMode {
    /// Normal (tracked, after DNAT) policy: the only kind that applies to
    /// workload endpoints too.
    fn normal(self) -> bool {
        !self.pre_dnat && !self.do_not_track
    }
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
    /// Shared copies of the endpoints' node names.
    strings: calico_selector::Interner,
    endpoints: BTreeMap<EndpointId, Endpoint>,
    netsets: BTreeMap<(Option<String>, String), Vec<IpNet>>,
    policies: BTreeMap<PolicyId, Policy>,
    /// (namespace, name) -> the tier its policy is in now (one at a time).
    policy_tiers: BTreeMap<(Option<String>, String), String>,
    profiles: BTreeMap<String, Profile>,
    tiers: BTreeMap<String, Tier>,
    /// Set (rule) selectors over every endpoint, host endpoint and
    /// network set: what the sets hold.
    index: LabelIndex<SelKey, ItemKey>,
    /// Policy selectors over this node's endpoints and host endpoints
    /// only: which policies apply here. Remote endpoints are never
    /// matched against policy selectors (at 10,000 policies and 100,000
    /// endpoints that was most of the graph's time and memory).
    pindex: LabelIndex<SelKey, ItemKey>,
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
    /// How each GlobalNetworkPolicy applies to host endpoints (absent: normal).
    host_modes: BTreeMap<PolicyId, HostMode>,
    /// Every host endpoint, by name.
    hosts: BTreeMap<String, HostEp>,
    /// Local host endpoint -> the (global) policies selecting it.
    host_policies: BTreeMap<String, BTreeSet<PolicyId>>,
    /// Policy -> the local host endpoints it selects.
    policy_hosts: BTreeMap<PolicyId, BTreeSet<String>>,
    /// Profile -> the local host endpoints using it.
    host_profiles: BTreeMap<String, BTreeSet<String>>,
    sent_hosts: BTreeMap<String, HostEndpointIntent>,
    dirty_hosts: BTreeSet<String>,
    /// Local host endpoints left out of the dataplane, with the reason.
    rejected_hosts: BTreeMap<String, String>,
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
        let allow = || CompiledRule {
            action: calico_api::Action::Allow,
            ip_version: None,
            protocol: None,
            not_protocol: None,
            icmp: None,
            not_icmp: None,
            src: SideMatch::default(),
            dst: SideMatch::default(),
        };
        // Calico's built-in allow-all profile (never stored; the API
        // refuses to write one by that name).
        let profiles = BTreeMap::from([(
            calico_api::DEFAULT_ALLOW_PROFILE.to_string(),
            Profile {
                rules: CompiledRules {
                    ingress: vec![allow()],
                    egress: vec![allow()],
                },
                sets: BTreeSet::new(),
            },
        )]);
        CalcGraph {
            strings: calico_selector::Interner::new(),
            node: node.to_string(),
            endpoints: BTreeMap::new(),
            netsets: BTreeMap::new(),
            policies: BTreeMap::new(),
            policy_tiers: BTreeMap::new(),
            profiles,
            tiers: BTreeMap::new(),
            index: LabelIndex::new(),
            pindex: LabelIndex::new(),
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
            host_modes: BTreeMap::new(),
            hosts: BTreeMap::new(),
            host_policies: BTreeMap::new(),
            policy_hosts: BTreeMap::new(),
            host_profiles: BTreeMap::new(),
            sent_hosts: BTreeMap::new(),
            dirty_hosts: BTreeSet::new(),
            rejected_hosts: BTreeMap::new(),
        }
    }

    /// This node's host endpoints the dataplane does not get, with the
    /// reason (a workload interface, or an interface another host
    /// endpoint of the node already stands for).
    pub fn rejected_hosts(&self) -> &BTreeMap<String, String> {
        &self.rejected_hosts
    }

    fn is_local_host(&self, name: &str) -> bool {
        self.hosts.get(name).is_some_and(|h| h.node == self.node)
    }

    /// Why a local host endpoint cannot be programmed, if it cannot. Two
    /// naming one interface: the first by name keeps it (as Felix picks
    /// one), the other is reported; the interface is never left without.
    fn host_rejection(&self, name: &str, h: &HostEp) -> Option<String> {
        if h.interface.is_empty() {
            // Bound to the interfaces holding its addresses when rendered.
            return None;
        }
        if h.interface != ALL_INTERFACES {
            if let Err(why) = calico_api::interface_name(&h.interface) {
                return Some(why.to_string());
            }
            if h.interface.starts_with(WORKLOAD_INTERFACE_PREFIX) {
                return Some(format!(
                    "interface {:?} is a workload interface ({WORKLOAD_INTERFACE_PREFIX}…), not the host's",
                    h.interface
                ));
            }
        }
        let first = self
            .hosts
            .iter()
            .filter(|(_, o)| o.node == self.node && o.interface == h.interface)
            .map(|(n, _)| n)
            .next();
        match first {
            Some(first) if first != name => Some(format!(
                "interface {} already has host endpoint {first}",
                h.interface
            )),
            _ => None,
        }
    }

    /// Local endpoints the dataplane does not get, with the reason: a bad
    /// interface name, or an interface another local endpoint names too
    /// (then neither gets it: its traffic is dropped, never given the other
    /// workload's policy). Each affects only itself.
    pub fn rejected(&self) -> &BTreeMap<EndpointId, String> {
        &self.rejected
    }

    /// Each set in use, by id, with the (scoped, canonical) selector it
    /// holds the members of: for telling people which selector a rule's
    /// set stands for.
    pub fn set_selectors(&self) -> BTreeMap<SetId, String> {
        self.selector_specs
            .iter()
            .flat_map(|(sel, specs)| specs.iter().map(move |s| (s.id(), sel.clone())))
            .collect()
    }

    /// Why a local endpoint cannot be programmed, if it cannot.
    fn rejection(&self, id: &EndpointId, ep: &Endpoint) -> Option<String> {
        if let Err(why) = calico_api::interface_name(&ep.interface) {
            return Some(why.to_string());
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
            .get(&*ep.interface)
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
        self.endpoints
            .get(id)
            .is_some_and(|e| *e.node == *self.node)
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
                // Namespaced policy never applies to host endpoints.
                (SelKey::Policy(p), ItemKey::Host(_)) if p.namespace.is_some() => {}
                (SelKey::Policy(p), ItemKey::Host(h)) => {
                    if !self.is_local_host(&h) && started {
                        continue;
                    }
                    let (hp, ph) = (
                        self.host_policies.entry(h.clone()).or_default(),
                        self.policy_hosts.entry(p.clone()).or_default(),
                    );
                    if started {
                        hp.insert(p.clone());
                        ph.insert(h.clone());
                    } else {
                        hp.remove(&p);
                        ph.remove(&h);
                    }
                    self.dirty_hosts.insert(h);
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

    /// Indexes an item's labels: for sets always, for policies only while
    /// it is local (leaving the policy index when it stops being local).
    fn index_item(
        &mut self,
        item: &ItemKey,
        labels: BTreeMap<String, String>,
        parents: Vec<String>,
        local: bool,
    ) {
        let events = if local {
            self.pindex
                .update_item(item.clone(), labels.clone(), parents.clone())
        } else {
            self.pindex.delete_item(item)
        };
        self.events(events);
        let events = self.index.update_item(item.clone(), labels, parents);
        self.events(events);
    }

    /// Removes an item from both indexes.
    fn unindex_item(&mut self, item: &ItemKey) {
        let events = self.pindex.delete_item(item);
        self.events(events);
        let events = self.index.delete_item(item);
        self.events(events);
    }

    /// A profile's labels (inherited by its endpoints), in both indexes.
    fn index_parent(&mut self, name: &str, labels: Option<BTreeMap<String, String>>) {
        for which in [true, false] {
            let index = if which {
                &mut self.pindex
            } else {
                &mut self.index
            };
            let events = match &labels {
                Some(l) => index.update_parent(name, l.clone()),
                None => index.delete_parent(name),
            };
            self.events(events);
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
}

fn tier_of(tier: &str) -> String {
    if tier.is_empty() {
        "default".into()
    } else {
        tier.to_string()
    }
}
