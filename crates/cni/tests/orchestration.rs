//! The calico plugin's orchestration against an in-memory kernel: what it
//! wires and unwires, in what order, and that a failure part-way leaves
//! nothing behind (no address held, no endpoint, no veth). The real
//! kernel side is tested in netns.rs and in calico-kernel.

use calico_api::{decode_manifest, Kind};
use calico_client::{Client, Clock};
use calico_cni::{run_with, CniError, Plugin};
use calico_datastore::Store;
use calico_datastore_sqlite::SqliteStore;
use calico_kernel::Workloads;
use calico_test_support::{FakeWorkloads, Journal};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;

struct FixedClock;
impl Clock for FixedClock {
    fn now_rfc3339(&self) -> String {
        "2026-12-02T00:00:00Z".into()
    }
}

struct Node {
    _dir: tempfile::TempDir,
    db: String,
    store: Arc<dyn Store>,
    client: Client,
    journal: Journal,
    kernel: FakeWorkloads,
}

impl Node {
    fn new() -> Node {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("calico.db").display().to_string();
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&db).expect("store"));
        let client = Client::new(store.clone(), Arc::new(FixedClock));
        let pool = "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: pool}\nspec: {cidr: 10.98.0.0/24}\n";
        client
            .create(decode_manifest(pool).expect("pool").remove(0))
            .expect("pool");
        let journal = Journal::default();
        let kernel = FakeWorkloads::new(&journal);
        Node {
            _dir: dir,
            db,
            store,
            client,
            journal,
            kernel,
        }
    }

    fn conf(&self) -> Value {
        json!({"cniVersion": "1.1.0", "name": "k8s-pod-network", "type": "calico",
            "nodename": "node-1", "datastore_path": self.db, "ipam": {"type": "calico-ipam"}})
    }

    /// One invocation for pod `pod` in container `container`.
    fn call(
        &self,
        command: &str,
        container: &str,
        pod: &str,
        conf: &Value,
    ) -> Result<Option<Value>, CniError> {
        let vars: BTreeMap<&str, String> = BTreeMap::from([
            ("CNI_COMMAND", command.to_string()),
            ("CNI_CONTAINERID", container.to_string()),
            ("CNI_NETNS", format!("/run/netns/{container}")),
            ("CNI_IFNAME", "eth0".to_string()),
            (
                "CNI_ARGS",
                format!("K8S_POD_NAMESPACE=shop;K8S_POD_NAME={pod}"),
            ),
            ("CNI_PATH", "/usr/lib/cni".to_string()),
        ]);
        let get = |k: &str| vars.get(k).cloned();
        let kernel = self.kernel.clone();
        let open = move || Ok(Box::new(kernel.clone()) as Box<dyn Workloads>);
        run_with(Plugin::Calico, &get, conf.to_string().as_bytes(), &open)
    }

    fn handles(&self) -> usize {
        self.store
            .list(calico_ipam::model::HANDLE_PREFIX)
            .expect("handles")
            .items
            .len()
    }

    fn endpoints(&self) -> Vec<String> {
        self.client
            .list(Kind::WorkloadEndpoint, None)
            .expect("endpoints")
            .items
            .iter()
            .map(|r| r.meta().name.clone())
            .collect()
    }
}

/// The pod's host veth, as Calico names it.
fn veth() -> String {
    calico_cni::names::host_veth("shop", "web")
}

fn address(result: &Value) -> String {
    result["ips"][0]["address"]
        .as_str()
        .expect("an address")
        .to_string()
}

#[test]
fn add_wires_and_records_and_del_undoes_it_all() {
    let n = Node::new();
    let name = veth();
    assert!(name.starts_with("cali") && name.len() == 15, "{name}");
    let added = n
        .call("ADD", "c1", "web", &n.conf())
        .expect("ADD")
        .expect("a result");
    assert!(address(&added).starts_with("10.98.0."), "{added}");
    assert_eq!(n.journal.entries(), vec![format!("wire {}", veth())]);
    assert_eq!(n.endpoints(), vec!["node--1-k8s-web-eth0"]);
    assert_eq!(n.handles(), 1);
    n.call("DEL", "c1", "web", &n.conf()).expect("DEL");
    assert_eq!(
        n.journal.entries(),
        vec![format!("wire {}", veth()), format!("unwire {}", veth())]
    );
    assert!(n.endpoints().is_empty());
    assert_eq!(n.handles(), 0, "the address is released");
    // DEL again (the runtime retries): nothing left, still fine.
    n.call("DEL", "c1", "web", &n.conf()).expect("DEL again");
}

#[test]
fn a_wiring_failure_leaves_no_address_endpoint_or_veth() {
    let n = Node::new();
    n.kernel.fail_next_wire();
    let err = n
        .call("ADD", "c1", "web", &n.conf())
        .expect_err("ADD fails");
    assert_eq!(err.code, 102, "{err:?}");
    assert_eq!(n.handles(), 0, "the address went back");
    assert!(n.endpoints().is_empty());
    assert!(n.kernel.links().is_empty());
    // The next attempt succeeds with a clean slate.
    n.call("ADD", "c1", "web", &n.conf()).expect("ADD");
    assert_eq!(n.handles(), 1);
}

#[test]
fn a_retried_add_answers_again_without_rewiring() {
    let n = Node::new();
    let first = n.call("ADD", "c1", "web", &n.conf()).expect("ADD");
    let again = n.call("ADD", "c1", "web", &n.conf()).expect("ADD again");
    assert_eq!(first, again);
    assert_eq!(n.journal.entries(), vec![format!("wire {}", veth())]);
    assert_eq!(n.handles(), 1, "no second address");
}

#[test]
fn deleting_an_older_sandbox_leaves_the_newer_one_alone() {
    let n = Node::new();
    n.call("ADD", "c1", "web", &n.conf()).expect("ADD c1");
    // The pod's sandbox is recreated: the new container takes the pod's veth.
    let newer = n
        .call("ADD", "c2", "web", &n.conf())
        .expect("ADD c2")
        .expect("a result");
    n.journal.clear();
    // The runtime cleans up the old sandbox afterwards.
    n.call("DEL", "c1", "web", &n.conf()).expect("DEL c1");
    assert!(
        n.journal.entries().iter().all(|e| !e.starts_with("unwire")),
        "{:?}",
        n.journal.entries()
    );
    assert_eq!(n.endpoints(), vec!["node--1-k8s-web-eth0"]);
    let link = n.kernel.links().get(&veth()).cloned().expect("still wired");
    assert_eq!(link.netns, std::path::Path::new("/run/netns/c2"));
    assert_eq!(
        link.ips
            .iter()
            .map(|i| i.addr().to_string())
            .collect::<Vec<_>>(),
        vec![address(&newer).split('/').next().unwrap_or("").to_string()]
    );
}

#[test]
fn check_finds_a_veth_that_went_missing() {
    let n = Node::new();
    let added = n
        .call("ADD", "c1", "web", &n.conf())
        .expect("ADD")
        .expect("a result");
    let mut conf = n.conf();
    conf["prevResult"] = added;
    n.call("CHECK", "c1", "web", &conf).expect("CHECK");
    n.kernel.unwire(&veth()).expect("someone deletes the veth");
    let err = n
        .call("CHECK", "c1", "web", &conf)
        .expect_err("CHECK fails");
    assert_eq!(err.code, 103, "{err:?}");
    assert!(err.msg.contains("not wired"), "{err:?}");
}
