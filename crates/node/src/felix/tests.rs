//! The agent's orchestration against in-memory kernels: what it asks of
//! the kernel, in what order, what it retries, and that it fails closed.
//! (The real kernel implementations have their own netns tests in
//! calico-kernel; the agent end to end, in tests/.)

use super::agent::{Agent, KernelAccess};
use crate::config::{Config, Overrides};
use crate::status::{Metrics, Status};
use calico_api::decode_manifest;
use calico_client::{Client, Clock};
use calico_datastore::{MemoryStore, Store};
use calico_routes::Target;
use calico_test_support::{FakeFirewall, FakeRoutes, FakeSysctl, FakeTunnels, Journal};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const NODE: &str = "node-1";
const WEB: &str = "cali0000000web";
const DB: &str = "cali00000000db";

struct FixedClock;
impl Clock for FixedClock {
    fn now_rfc3339(&self) -> String {
        "2026-12-02T00:00:00Z".into()
    }
}

fn endpoint(name: &str, iface: &str, ip: &str) -> String {
    format!(
        "apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata:
  name: {NODE}-k8s-{name}-eth0
  namespace: shop
  labels: {{app: {name}, projectcalico.org/namespace: shop, projectcalico.org/orchestrator: k8s}}
spec:
  node: {NODE}
  orchestrator: k8s
  pod: {name}
  endpoint: eth0
  interfaceName: {iface}
  ipNetworks: [{ip}/32]
---
"
    )
}

const POLICY: &str = "apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: db-from-web, namespace: shop}
spec:
  selector: app == 'db'
  ingress:
  - action: Allow
    protocol: TCP
    source: {selector: app == 'web'}
    destination: {ports: [5432]}
";

/// An agent over fakes, a store, and handles on both.
struct Harness {
    store: Arc<MemoryStore>,
    client: Client,
    agent: Agent,
    journal: Journal,
    firewall: FakeFirewall,
    routes: FakeRoutes,
    tunnels: FakeTunnels,
    sysctl: FakeSysctl,
    status: Arc<Mutex<Status>>,
    metrics: Arc<Metrics>,
    mtu: tempfile::TempDir,
}

impl Harness {
    fn new(route_sync: bool) -> Self {
        let journal = Journal::default();
        let firewall = FakeFirewall::new(&journal);
        let routes = FakeRoutes::new(&journal);
        let tunnels = FakeTunnels::new(&journal, &[("eth0", 1500)]);
        let sysctl = FakeSysctl::new(&journal);
        let kernel = KernelAccess {
            firewall: Box::new(firewall.clone()),
            routes: route_sync.then(|| Box::new(routes.clone()) as _),
            tunnels: route_sync.then(|| Box::new(tunnels.clone()) as _),
            sysctl: Box::new(sysctl.clone()),
        };
        let status = Arc::new(Mutex::new(Status::default()));
        let metrics = Arc::new(Metrics::new());
        let store = Arc::new(MemoryStore::new());
        let client = Client::new(store.clone(), Arc::new(FixedClock));
        let agent = Agent::new(NODE, kernel, Arc::clone(&status), Arc::clone(&metrics));
        Harness {
            store,
            client,
            agent,
            journal,
            firewall,
            routes,
            tunnels,
            sysctl,
            status,
            metrics,
            mtu: tempfile::tempdir().expect("tempdir"),
        }
    }

    fn apply(&self, manifest: &str) {
        for r in decode_manifest(manifest).expect("manifest") {
            self.client.apply(r).expect("apply");
        }
    }

    /// Lists the store into a fresh view of the agent, as a resend of
    /// the syncer does (every key again).
    fn resync(&mut self) {
        let listing = self.store.list("/calico/").expect("list");
        self.agent.reset();
        self.agent.datastore_in_sync = true;
        self.agent.revision = listing.revision;
        let updates: Vec<calico_calc::Update> = listing
            .items
            .into_iter()
            .filter_map(|kv| self.agent.take(&calico_datastore::Event::Put(kv)))
            .collect();
        self.agent.feed(updates).expect("feed");
    }

    /// One sync with `cfg`.
    fn sync(&mut self, cfg: &Config) -> anyhow::Result<()> {
        let file = self.mtu.path().join("mtu");
        self.agent.sync(cfg, &file)
    }

    fn in_sync(&self) -> bool {
        self.status.lock().expect("status").in_sync
    }

    fn position(&self, entry: &str) -> Option<usize> {
        self.journal
            .entries()
            .iter()
            .position(|e| e.starts_with(entry))
    }
}

/// Felix's defaults, with refreshes far off (a test says when one is due).
fn config() -> Config {
    let (mut cfg, _) = Config::resolve(&Overrides::default(), None, None);
    cfg.nftables_refresh = Duration::from_secs(3600);
    cfg.route_refresh = Duration::from_secs(3600);
    cfg
}

#[test]
fn policy_reaches_the_kernel_before_the_route_that_makes_an_endpoint_reachable() {
    let mut h = Harness::new(true);
    h.routes.add_link(WEB);
    h.apply(&endpoint("web", WEB, "10.244.1.2"));
    h.resync();
    h.sync(&config()).expect("sync");
    let nft = h.position("nft full").expect("table loaded");
    let route = h.position("route 10.244.1.2/32").expect("route installed");
    assert!(nft < route, "{:?}", h.journal.entries());
    assert_eq!(
        h.routes
            .routes()
            .get(&"10.244.1.2/32".parse().expect("net")),
        Some(&Target::Device(WEB.into()))
    );
    assert!(h.in_sync());
    // Strict reverse-path filtering on the workload's interface.
    assert_eq!(
        h.sysctl
            .values()
            .get(&format!("net/ipv4/conf/{WEB}/rp_filter"))
            .map(String::as_str),
        Some("1")
    );
}

#[test]
fn a_refused_ruleset_programs_no_route_and_the_next_sync_loads_the_whole_table() {
    let mut h = Harness::new(true);
    h.routes.add_link(WEB);
    h.routes.add_link(DB);
    h.apply(&endpoint("web", WEB, "10.244.1.2"));
    h.resync();
    h.sync(&config()).expect("sync");
    // A new endpoint and a policy arrive; nft refuses the delta and the
    // fallback full table.
    h.apply(&format!("{}{POLICY}", endpoint("db", DB, "10.244.1.3")));
    h.resync();
    h.journal.clear();
    h.firewall.refuse_next(2);
    assert!(h.sync(&config()).is_err());
    assert!(!h.in_sync(), "not ready while the kernel lags");
    assert_eq!(
        h.journal.entries(),
        vec!["nft delta refused", "nft full refused"],
        "nothing else is touched: no route to an endpoint whose policy is not in place"
    );
    assert!(!h
        .routes
        .routes()
        .contains_key(&"10.244.1.3/32".parse().expect("net")));
    // Recovered: the whole table (the kernel's state is unknown), then the route.
    h.journal.clear();
    h.sync(&config()).expect("sync");
    let entries = h.journal.entries();
    assert_eq!(entries.first().map(String::as_str), Some("nft full"));
    assert!(h.position("route 10.244.1.3/32").is_some(), "{entries:?}");
    assert!(h.in_sync());
    assert_eq!(h.metrics.apply_errors.get(), 1);
}

#[test]
fn an_interface_not_there_yet_is_retried_at_the_next_route_refresh() {
    let mut h = Harness::new(true);
    h.apply(&endpoint("web", WEB, "10.244.1.2"));
    h.resync();
    let mut cfg = config();
    h.sync(&cfg).expect("a missing interface is not an error");
    assert!(h.routes.routes().is_empty());
    assert!(
        h.in_sync(),
        "policy is in place; the route follows the interface"
    );
    h.routes.add_link(WEB);
    h.sync(&cfg).expect("sync");
    assert!(
        h.routes.routes().is_empty(),
        "nothing changed: no retry yet"
    );
    cfg.route_refresh = Duration::ZERO;
    h.sync(&cfg).expect("sync");
    assert_eq!(h.routes.routes().len(), 1);
}

#[test]
fn routes_removed_behind_the_agents_back_come_back_at_the_refresh() {
    let mut h = Harness::new(true);
    h.routes.add_link(WEB);
    h.apply(&endpoint("web", WEB, "10.244.1.2"));
    h.resync();
    let mut cfg = config();
    h.sync(&cfg).expect("sync");
    let dst = "10.244.1.2/32".parse().expect("net");
    h.routes.remove(&dst);
    cfg.route_refresh = Duration::ZERO;
    h.sync(&cfg).expect("sync");
    assert!(h.routes.routes().contains_key(&dst));
    // A routes listing that fails is reported and retried, never fatal.
    h.routes.remove(&dst);
    h.routes.fail_next_list();
    h.sync(&cfg).expect("sync goes on");
    assert!(!h.routes.routes().contains_key(&dst));
    h.sync(&cfg).expect("sync");
    assert!(h.routes.routes().contains_key(&dst));
}

#[test]
fn a_resync_keeps_the_loaded_table_as_the_base_of_the_next_delta() {
    let mut h = Harness::new(true);
    h.routes.add_link(WEB);
    h.apply(&endpoint("web", WEB, "10.244.1.2"));
    h.resync();
    h.sync(&config()).expect("sync");
    let scripts = h.firewall.scripts().len();
    h.resync();
    h.sync(&config()).expect("sync");
    assert_eq!(
        h.firewall.scripts().len(),
        scripts,
        "the same state: nothing sent to nft"
    );
    // The periodic refresh replaces the whole table (repairs drift).
    let mut cfg = config();
    cfg.nftables_refresh = Duration::ZERO;
    h.journal.clear();
    h.sync(&cfg).expect("sync");
    assert_eq!(h.position("nft full"), Some(0));
}

#[test]
fn an_unreadable_record_is_reported_and_affects_only_itself() {
    let mut h = Harness::new(true);
    h.routes.add_link(WEB);
    h.apply(&endpoint("web", WEB, "10.244.1.2"));
    let key = "/calico/resources/v3/projectcalico.org/networkpolicies/shop/broken";
    h.store
        .create(
            key,
            br#"{"kind":"NetworkPolicy","apiVersion":"projectcalico.org/v3","metadata":{"name":"broken","namespace":"shop"},"spec":{"selector":"app =="}}"#,
        )
        .expect("write past validation");
    h.resync();
    h.sync(&config()).expect("sync");
    assert!(h.in_sync());
    assert_eq!(h.routes.routes().len(), 1, "the endpoint is programmed");
    let rejected = h.status.lock().expect("status").rejected.clone();
    assert!(
        rejected
            .get(key)
            .is_some_and(|why| why.contains("spec.selector")),
        "{rejected:?}"
    );
}

#[test]
fn with_route_sync_off_only_nftables_is_touched() {
    let mut h = Harness::new(false);
    h.apply(&endpoint("web", WEB, "10.244.1.2"));
    h.resync();
    h.sync(&config()).expect("sync");
    assert_eq!(h.journal.entries(), vec!["nft full"]);
    assert!(h.tunnels.synced().is_empty());
}

#[test]
fn host_endpoints_with_expected_addresses_name_flow_ends() {
    let mut h = Harness::new(false);
    h.apply(
        "apiVersion: projectcalico.org/v3
kind: HostEndpoint
metadata: {name: node-2-eth0, labels: {role: node}}
spec: {node: node-2, interfaceName: eth0, expectedIPs: [10.250.0.2]}
---
apiVersion: projectcalico.org/v3
kind: HostEndpoint
metadata: {name: node-3-any}
spec: {node: node-3, interfaceName: eth0}
",
    );
    h.resync();
    let names = h
        .agent
        .flow_names_now(&calico_dataplane::NodeRules::default());
    let ip: std::net::IpAddr = "10.250.0.2".parse().expect("ip");
    let hep = names.host_endpoints.get(&ip).expect("named");
    assert_eq!(hep.name, "node-2-eth0");
    assert_eq!(hep.labels.get("role").map(String::as_str), Some("node"));
    assert_eq!(names.host_endpoints.len(), 1, "no addresses, no names");
    // Deleted (as the syncer hands the deletion on): the name goes with it.
    h.agent.take(&calico_datastore::Event::Delete {
        key: "/calico/resources/v3/projectcalico.org/hostendpoints/node-2-eth0".into(),
        mod_revision: 99,
    });
    assert!(h
        .agent
        .flow_names_now(&calico_dataplane::NodeRules::default())
        .host_endpoints
        .is_empty());
}

#[test]
fn staged_policies_start_the_pending_model_unless_evaluation_is_off() {
    for evaluate in [true, false] {
        let mut h = Harness::new(false);
        h.agent.flow_names = Some(Arc::new(Mutex::new(crate::flows::Names::default())));
        if !evaluate {
            // flowLogsPolicyEvaluationMode: None
            h.agent.no_pending_traces();
        }
        h.apply(
            "apiVersion: projectcalico.org/v3
kind: StagedGlobalNetworkPolicy
metadata: {name: lockdown}
spec: {selector: all(), stagedAction: Set, types: [Ingress], ingress: [{action: Deny}]}
",
        );
        h.resync();
        assert_eq!(
            h.agent.pending_model.is_some(),
            evaluate,
            "evaluate: {evaluate}, staged {:?}, keys {:?}",
            h.agent.staged,
            h.store.list("/calico/").map(|l| l
                .items
                .into_iter()
                .map(|i| i.key)
                .collect::<Vec<_>>())
        );
        assert_eq!(h.agent.want_resend, evaluate, "evaluate: {evaluate}");
        // What the collector is handed at the next sync.
        h.sync(&config()).expect("sync");
        let names = h.agent.flow_names.as_ref().expect("on");
        let pending = names.lock().expect("names").pending.is_some();
        assert_eq!(pending, evaluate, "evaluate: {evaluate}");
    }
}
