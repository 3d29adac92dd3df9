//! The calico plugin called exactly as a container runtime calls it, in
//! network namespaces made for each test: a node namespace (where the
//! plugin runs) and pod namespaces.

use calico_test_support::{run_cni, CniCall, EtcdServer, Netns};
use serde_json::{json, Value};
use std::process::{Command, Output};

struct Cluster {
    // Field order matters: the etcd inside the node namespace stops before the namespace goes.
    etcd: Option<EtcdServer>,
    node: Netns,
    _dir: tempfile::TempDir,
    db: String,
}

/// calicoctl against the cluster's datastore: the embedded file, or the etcd
/// inside the node namespace (so calicoctl runs there too).
fn calicoctl(db: &str, etcd: Option<(&EtcdServer, &Netns)>, args: &[&str]) -> Output {
    let bin = env!("CARGO_BIN_EXE_calico").replace("/calico", "/calicoctl");
    let mut cmd = match etcd {
        Some((e, node)) => {
            let mut c = Command::new("nsenter");
            c.arg(format!("--net={}", node.path())).arg(&bin);
            c.env("DATASTORE_TYPE", "etcdv3")
                .env("ETCD_ENDPOINTS", &e.endpoint);
            c
        }
        None => {
            let mut c = Command::new(&bin);
            c.env("CALICO_DATASTORE_PATH", db)
                .env_remove("DATASTORE_TYPE");
            c
        }
    };
    cmd.args(["--config", "/nonexistent"])
        .args(args)
        .output()
        .expect("calicoctl (build the workspace first)")
}

impl Cluster {
    fn new(pool: &str) -> Cluster {
        Self::with(pool, false)
    }

    fn with(pool: &str, use_etcd: bool) -> Cluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("calico.db").display().to_string();
        let node = Netns::new("cni-node");
        node.make_node("10.250.9.1/24");
        let etcd = use_etcd.then(|| EtcdServer::start_in_netns(&node.path()));
        let c = Cluster {
            etcd,
            node,
            _dir: dir,
            db,
        };
        if !pool.is_empty() {
            let file = c._dir.path().join("pool.yaml");
            std::fs::write(&file, format!("apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {{name: pool}}\nspec: {{cidr: {pool}}}\n")).expect("write");
            c.ctl(&["apply", "-f", file.to_str().expect("path")]);
        }
        c
    }

    fn conf(&self, version: &str) -> Value {
        let mut conf = json!({
            "cniVersion": version, "name": "k8s-pod-network", "type": "calico",
            "nodename": "node-1", "datastore_path": self.db, "mtu": 1400,
            "ipam": {"type": "calico-ipam"},
            "args": {"cni": {"labels": [{"key": "app", "value": "web"}], "ports": [{"name": "http", "port": 8080}]}}
        });
        if let Some(e) = &self.etcd {
            conf["datastore_type"] = json!("etcdv3");
            conf["etcd_endpoints"] = json!(e.endpoint);
        }
        conf
    }

    /// Runs a plugin in the node namespace with CNI_* set as a runtime would.
    fn cni(
        &self,
        plugin: &str,
        command: &str,
        pod: Option<&Netns>,
        container: &str,
        args: &str,
        conf: &Value,
    ) -> (Output, Value) {
        let bin = if plugin.starts_with('/') {
            plugin.to_string()
        } else {
            env!("CARGO_BIN_EXE_calico").replace("/calico", &format!("/{plugin}"))
        };
        let mut program = Command::new("ip");
        program.args(["netns", "exec", &self.node.name, &bin]);
        let netns = pod.map(Netns::path).unwrap_or_default();
        let call = CniCall {
            command,
            container,
            netns: &netns,
            ifname: "eth0",
            args,
        };
        let out = run_cni(program, &call, &conf.to_string());
        let v = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        (out, v)
    }

    fn add(&self, pod: &Netns, container: &str, name: &str) -> Value {
        let (out, v) = self.cni(
            "calico",
            "ADD",
            Some(pod),
            container,
            &format!("IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME={name}"),
            &self.conf("1.0.0"),
        );
        assert!(
            out.status.success(),
            "ADD failed: {v} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        v
    }

    fn del(&self, pod: Option<&Netns>, container: &str, name: &str) {
        let (out, v) = self.cni(
            "calico",
            "DEL",
            pod,
            container,
            &format!("K8S_POD_NAMESPACE=shop;K8S_POD_NAME={name}"),
            &self.conf("1.0.0"),
        );
        assert!(out.status.success(), "DEL failed: {v}");
    }

    fn ctl(&self, args: &[&str]) -> String {
        let out = calicoctl(&self.db, self.etcd.as_ref().map(|e| (e, &self.node)), args);
        assert!(
            out.status.success(),
            "calicoctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn in_use(&self) -> usize {
        let out = self.ctl(&["ipam", "show"]);
        let line = out
            .lines()
            .find(|l| l.contains("IP Pool"))
            .expect("pool row");
        line.split('|')
            .nth(4)
            .and_then(|c| c.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .expect("in use")
    }
}

fn ip_of(result: &Value) -> String {
    result["ips"][0]["address"]
        .as_str()
        .expect("address")
        .trim_end_matches("/32")
        .to_string()
}

#[test]
fn two_pods_reach_each_other_and_everything_goes_on_del() {
    let c = Cluster::new("10.77.0.0/16");
    let (a, b) = (Netns::new("cni-pod-a"), Netns::new("cni-pod-b"));
    let ra = c.add(&a, "aaaa1", "web-a");
    let rb = c.add(&b, "bbbb2", "web-b");
    // The result as the spec wants it.
    assert_eq!(ra["cniVersion"], "1.0.0");
    assert_eq!(ra["interfaces"][1]["name"], "eth0");
    assert_eq!(ra["interfaces"][1]["sandbox"], a.path());
    assert_eq!(ra["ips"][0]["interface"], 1);
    assert_eq!(ra["routes"][0]["gw"], "169.254.1.1");
    let host_if = ra["interfaces"][0]["name"]
        .as_str()
        .expect("host if")
        .to_string();
    assert!(host_if.starts_with("cali") && host_if.len() == 15);
    // The kernel: /32 on eth0, routes via 169.254.1.1, MTU, host route, proxy ARP.
    let (ipa, ipb) = (ip_of(&ra), ip_of(&rb));
    assert!(a
        .ok(&["ip", "-4", "addr", "show", "eth0"])
        .contains(&format!("{ipa}/32")));
    assert!(a.ok(&["ip", "link", "show", "eth0"]).contains("mtu 1400"));
    let routes = a.ok(&["ip", "route"]);
    assert!(
        routes.contains("default via 169.254.1.1 dev eth0")
            && routes.contains("169.254.1.1 dev eth0"),
        "{routes}"
    );
    assert!(c
        .node
        .ok(&["ip", "route"])
        .contains(&format!("{ipa} dev {host_if} ")));
    assert_eq!(
        c.node
            .ok(&[
                "cat",
                &format!("/proc/sys/net/ipv4/conf/{host_if}/proxy_arp")
            ])
            .trim(),
        "1"
    );
    // Real packets: pod to pod through the node, node to pod.
    a.ok(&["ping", "-c1", "-W2", &ipb]);
    b.ok(&["ping", "-c1", "-W2", &ipa]);
    c.node.ok(&["ping", "-c1", "-W2", &ipa]);
    // The endpoint in the datastore.
    let wep: Value = serde_norway::from_str(&c.ctl(&[
        "get",
        "wep",
        "node--1-k8s-web--a-eth0",
        "-n",
        "shop",
        "-o",
        "yaml",
    ]))
    .expect("yaml");
    assert_eq!(wep["spec"]["containerID"], "aaaa1");
    assert_eq!(wep["spec"]["interfaceName"], host_if.as_str());
    assert_eq!(wep["spec"]["ipNetworks"][0], format!("{ipa}/32"));
    assert_eq!(wep["spec"]["profiles"][0], "kns.shop");
    assert_eq!(wep["spec"]["ports"][0]["name"], "http");
    assert_eq!(wep["metadata"]["labels"]["app"], "web");
    assert_eq!(
        wep["metadata"]["labels"]["projectcalico.org/orchestrator"],
        "k8s"
    );
    assert_eq!(c.in_use(), 2);

    c.del(Some(&a), "aaaa1", "web-a");
    assert!(
        !c.node.ok(&["ip", "link"]).contains(&host_if),
        "host veth removed"
    );
    assert_eq!(c.in_use(), 1);
    assert!(!c.ctl(&["get", "wep", "-n", "shop"]).contains("web-a"));
    // DEL again, and DEL with the namespace already gone: both succeed.
    c.del(Some(&a), "aaaa1", "web-a");
    drop(b);
    c.del(None, "bbbb2", "web-b");
    assert_eq!(c.in_use(), 0);
}

#[test]
fn a_retried_add_changes_nothing_and_leaks_nothing() {
    let c = Cluster::new("10.78.0.0/16");
    let p = Netns::new("cni-pod-r");
    let first = c.add(&p, "cccc3", "retry");
    let second = c.add(&p, "cccc3", "retry");
    assert_eq!(first, second);
    assert_eq!(c.in_use(), 1);
    c.del(Some(&p), "cccc3", "retry");
    assert_eq!(c.in_use(), 0);
}

#[test]
fn a_failed_add_leaves_nothing_behind() {
    let c = Cluster::new("10.79.0.0/16");
    let p = Netns::new("cni-pod-f");
    // eth0 already exists in the pod: creating the veth peer must fail.
    p.ok(&[
        "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth0p",
    ]);
    let (out, v) = c.cni(
        "calico",
        "ADD",
        Some(&p),
        "dddd4",
        "K8S_POD_NAMESPACE=shop;K8S_POD_NAME=fail",
        &c.conf("1.0.0"),
    );
    assert!(!out.status.success());
    assert_eq!(v["code"], 102, "{v}");
    assert!(
        v["msg"].as_str().is_some_and(|m| m.contains("cannot wire")),
        "{v}"
    );
    assert_eq!(c.in_use(), 0, "the address was released");
    assert!(!c.node.ok(&["ip", "link"]).contains("cali"), "no veth left");
    assert!(
        !c.ctl(&["get", "wep", "-A"]).contains("fail"),
        "no endpoint left"
    );
}

#[test]
fn versions_errors_status_and_check() {
    let c = Cluster::new("");
    let p = Netns::new("cni-pod-v");
    // VERSION
    let (out, v) = c.cni(
        "calico",
        "VERSION",
        None,
        "",
        "",
        &json!({"cniVersion": "1.1.0"}),
    );
    assert!(out.status.success());
    assert_eq!(
        v["supportedVersions"],
        json!(["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"])
    );
    // Bad environment: reserved code 4.
    let (out, v) = c.cni("calico", "ADD", None, "eeee5", "", &c.conf("1.0.0"));
    assert!(!out.status.success());
    assert_eq!(
        (v["code"].as_u64(), v["msg"].as_str()),
        (Some(4), Some("CNI_NETNS is required for this command"))
    );
    // Unsupported version: code 1.
    let (_, v) = c.cni("calico", "ADD", Some(&p), "eeee5", "", &c.conf("2.0.0"));
    assert_eq!(v["code"], 1);
    // STATUS without a pool: code 50; then with one.
    let (out, v) = c.cni("calico", "STATUS", None, "", "", &c.conf("1.1.0"));
    assert!(!out.status.success());
    assert_eq!(v["code"], 50);
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("pool.yaml");
    std::fs::write(&file, "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: pool}\nspec: {cidr: 10.80.0.0/16}\n").expect("write");
    c.ctl(&["apply", "-f", file.to_str().expect("path")]);
    assert!(c
        .cni("calico", "STATUS", None, "", "", &c.conf("1.1.0"))
        .0
        .status
        .success());
    // 0.4.0 results carry "version" on each address.
    let (out, v) = c.cni(
        "calico",
        "ADD",
        Some(&p),
        "eeee5",
        "K8S_POD_NAME=old",
        &c.conf("0.4.0"),
    );
    assert!(out.status.success(), "{v}");
    assert_eq!(v["ips"][0]["version"], "4");
    // CHECK passes, then fails once the veth is gone.
    let mut conf = c.conf("0.4.0");
    conf["prevResult"] = v.clone();
    assert!(c
        .cni(
            "calico",
            "CHECK",
            Some(&p),
            "eeee5",
            "K8S_POD_NAME=old",
            &conf
        )
        .0
        .status
        .success());
    let host_if = v["interfaces"][0]["name"].as_str().expect("name");
    c.node.ok(&["ip", "link", "del", host_if]);
    let (out, v) = c.cni(
        "calico",
        "CHECK",
        Some(&p),
        "eeee5",
        "K8S_POD_NAME=old",
        &conf,
    );
    assert!(!out.status.success());
    assert_eq!(v["code"], 103, "{v}");
}

#[test]
fn gc_removes_attachments_that_are_not_valid() {
    let c = Cluster::new("10.81.0.0/16");
    let (keep, gone) = (Netns::new("cni-pod-k"), Netns::new("cni-pod-g"));
    c.add(&keep, "keep1", "keep");
    let rg = c.add(&gone, "gone1", "gone");
    let mut conf = c.conf("1.1.0");
    conf["cni.dev/valid-attachments"] = json!([{"containerID": "keep1", "ifname": "eth0"}]);
    let (out, v) = c.cni("calico", "GC", None, "", "", &conf);
    assert!(out.status.success(), "{v}");
    assert_eq!(c.in_use(), 1);
    let links = c.node.ok(&["ip", "link"]);
    assert!(!links.contains(rg["interfaces"][0]["name"].as_str().expect("name")));
    let weps = c.ctl(&["get", "wep", "-A"]);
    assert!(weps.contains("keep") && !weps.contains("gone"), "{weps}");
}

#[test]
fn chained_with_the_stock_plugins() {
    if !std::path::Path::new("/usr/lib/cni/tuning").exists() {
        panic!("containernetworking-plugins are not installed: run scripts/setup");
    }
    let c = Cluster::new("10.82.0.0/16");
    let p = Netns::new("cni-pod-c");
    let args = "IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=chained";
    let prev = c.add(&p, "ffff6", "chained");
    let mut tuning = json!({"cniVersion": "1.0.0", "name": "k8s-pod-network", "type": "tuning", "sysctl": {"net.ipv4.conf.eth0.accept_local": "1"}});
    tuning["prevResult"] = prev.clone();
    let (out, after_tuning) = c.cni(
        "/usr/lib/cni/tuning",
        "ADD",
        Some(&p),
        "ffff6",
        args,
        &tuning,
    );
    assert!(
        out.status.success(),
        "tuning: {after_tuning} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        p.ok(&["cat", "/proc/sys/net/ipv4/conf/eth0/accept_local"])
            .trim(),
        "1"
    );
    let mut bandwidth = json!({"cniVersion": "1.0.0", "name": "k8s-pod-network", "type": "bandwidth",
        "runtimeConfig": {"bandwidth": {"ingressRate": 1_000_000, "ingressBurst": 100_000, "egressRate": 1_000_000, "egressBurst": 100_000}}});
    bandwidth["prevResult"] = after_tuning.clone();
    let (out, after_bw) = c.cni(
        "/usr/lib/cni/bandwidth",
        "ADD",
        Some(&p),
        "ffff6",
        args,
        &bandwidth,
    );
    assert!(
        out.status.success(),
        "bandwidth: {after_bw} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let host_if = prev["interfaces"][0]["name"].as_str().expect("name");
    assert!(
        c.node
            .ok(&["tc", "qdisc", "show", "dev", host_if])
            .contains("tbf"),
        "bandwidth shaped the host veth"
    );
    // Tear down in reverse, as a runtime does.
    for (bin, conf) in [
        ("/usr/lib/cni/bandwidth", &bandwidth),
        ("/usr/lib/cni/tuning", &tuning),
    ] {
        let mut conf = conf.clone();
        conf["prevResult"] = after_bw.clone();
        let (out, v) = c.cni(bin, "DEL", Some(&p), "ffff6", args, &conf);
        assert!(out.status.success(), "{bin} DEL: {v}");
    }
    c.del(Some(&p), "ffff6", "chained");
    assert_eq!(c.in_use(), 0);
}

#[test]
fn dual_stack_pods() {
    let c = Cluster::new("10.83.0.0/16");
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("v6.yaml");
    std::fs::write(&file, "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: v6}\nspec: {cidr: 'fd00:83::/112'}\n").expect("write");
    c.ctl(&["apply", "-f", file.to_str().expect("path")]);
    c.node
        .ok(&["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"]);
    let mut conf = c.conf("1.0.0");
    conf["ipam"]["assign_ipv6"] = json!("true");
    let (a, b) = (Netns::new("cni-pod-6a"), Netns::new("cni-pod-6b"));
    let (out, ra) = c.cni(
        "calico",
        "ADD",
        Some(&a),
        "six1",
        "K8S_POD_NAME=six-a",
        &conf,
    );
    assert!(out.status.success(), "{ra}");
    let (out, rb) = c.cni(
        "calico",
        "ADD",
        Some(&b),
        "six2",
        "K8S_POD_NAME=six-b",
        &conf,
    );
    assert!(out.status.success(), "{rb}");
    let v6 = |r: &Value| {
        r["ips"]
            .as_array()
            .expect("ips")
            .iter()
            .filter_map(|i| i["address"].as_str())
            .find(|a| a.contains(':'))
            .expect("v6")
            .trim_end_matches("/128")
            .to_string()
    };
    let (a6, b6) = (v6(&ra), v6(&rb));
    assert!(a
        .ok(&["ip", "-6", "addr", "show", "eth0"])
        .contains(&format!("{a6}/128")));
    assert!(a
        .ok(&["ip", "-6", "route"])
        .contains("default via fe80::ecee:eeff:feee:eeee dev eth0"));
    assert!(c
        .node
        .ok(&["ip", "-6", "route"])
        .contains(&format!("{a6} dev ")));
    assert!(ra["routes"]
        .as_array()
        .expect("routes")
        .iter()
        .any(|r| r["dst"] == "::/0" && r["gw"] == "fe80::ecee:eeff:feee:eeee"));
    a.ok(&["ping", "-6", "-c1", "-W3", &b6]);
    c.cni(
        "calico",
        "DEL",
        Some(&a),
        "six1",
        "K8S_POD_NAME=six-a",
        &conf,
    );
    c.cni(
        "calico",
        "DEL",
        Some(&b),
        "six2",
        "K8S_POD_NAME=six-b",
        &conf,
    );
    assert_eq!(c.in_use(), 0);
}

/// The same plugin against a real etcd (running inside the node namespace,
/// where the plugin and calicoctl reach it on loopback).
#[test]
fn pods_on_an_etcd_datastore() {
    let c = Cluster::with("10.84.0.0/16", true);
    let (a, b) = (Netns::new("cni-pod-ea"), Netns::new("cni-pod-eb"));
    let ra = c.add(&a, "etcd1", "web-a");
    let rb = c.add(&b, "etcd2", "web-b");
    a.ok(&["ping", "-c1", "-W2", &ip_of(&rb)]);
    assert_eq!(
        c.add(&a, "etcd1", "web-a"),
        ra,
        "a retried ADD is idempotent on etcd too"
    );
    assert_eq!(c.in_use(), 2);
    assert!(c.ctl(&["get", "wep", "-n", "shop"]).contains("web-b"));
    c.del(Some(&a), "etcd1", "web-a");
    c.del(Some(&b), "etcd2", "web-b");
    assert_eq!(c.in_use(), 0);
    assert!(!c.ctl(&["get", "wep", "-n", "shop"]).contains("web"));
}

/// GC on one node never touches another node's attachments, a missing
/// valid list releases nothing, and a stale record naming a host
/// interface never deletes it.
#[test]
fn gc_touches_only_this_nodes_own_attachments() {
    let c = Cluster::new("10.83.0.0/16");
    let node2 = Netns::new("cni-node2");
    node2.make_node("10.250.9.2/24");
    let (p1, p2) = (Netns::new("cni-gc-1"), Netns::new("cni-gc-2"));
    c.add(&p1, "one1", "one");
    // A pod on node-2, sharing the datastore.
    let mut conf2 = c.conf("1.1.0");
    conf2["nodename"] = json!("node-2");
    let mut program = Command::new("ip");
    program.args(["netns", "exec", &node2.name, env!("CARGO_BIN_EXE_calico")]);
    let call = CniCall {
        command: "ADD",
        container: "two1",
        netns: &p2.path(),
        ifname: "eth0",
        args: "K8S_POD_NAMESPACE=shop;K8S_POD_NAME=two",
    };
    let out = run_cni(program, &call, &conf2.to_string());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let r2: Value = serde_json::from_slice(&out.stdout).expect("result");
    let ip2 = ip_of(&r2);
    assert_eq!(c.in_use(), 2);

    // Without the key: nothing is released, by either plugin.
    for plugin in ["calico", "calico-ipam"] {
        let (out, v) = c.cni(plugin, "GC", None, "", "", &c.conf("1.1.0"));
        assert!(out.status.success(), "{v}");
        assert_eq!(c.in_use(), 2, "{plugin} GC without valid-attachments");
    }
    // node-1's list names only node-1's containers: node-2's stay.
    let mut conf = c.conf("1.1.0");
    conf["cni.dev/valid-attachments"] = json!([{"containerID": "one1", "ifname": "eth0"}]);
    for plugin in ["calico", "calico-ipam"] {
        let (out, v) = c.cni(plugin, "GC", None, "", "", &conf);
        assert!(out.status.success(), "{v}");
        assert_eq!(c.in_use(), 2, "{plugin} GC released another node's address");
    }
    let weps = c.ctl(&["get", "wep", "-A"]);
    assert!(weps.contains("two"), "{weps}");

    // A stale endpoint of node-1 naming the node's uplink.
    let file = c._dir.path().join("stale.yaml");
    std::fs::write(&file, "apiVersion: projectcalico.org/v3\nkind: WorkloadEndpoint\nmetadata: {name: node--1-k8s-stale-eth0, namespace: shop}\n\
        spec: {node: node-1, orchestrator: k8s, pod: stale, endpoint: eth0, containerID: stale1, interfaceName: uplink0, ipNetworks: [10.83.250.1/32]}\n").expect("write");
    c.ctl(&["apply", "-f", file.to_str().expect("path")]);
    // An empty list: every attachment of this node goes, no other.
    conf["cni.dev/valid-attachments"] = json!([]);
    let (out, v) = c.cni("calico", "GC", None, "", "", &conf);
    assert!(out.status.success(), "{v}");
    assert_eq!(c.in_use(), 1, "only node-1's pod is released");
    assert!(
        c.node
            .ok(&["ip", "link", "show", "uplink0"])
            .contains("uplink0"),
        "GC deleted the host's uplink"
    );
    let weps = c.ctl(&["get", "wep", "-A"]);
    assert!(
        weps.contains("two") && !weps.contains("stale") && !weps.contains("one"),
        "{weps}"
    );
    // node-2's pod still holds its address: a new pod never gets it.
    let p3 = Netns::new("cni-gc-3");
    let r3 = c.add(&p3, "three1", "three");
    assert_ne!(ip_of(&r3), ip2);
    let held = c.ctl(&["ipam", "show", "--ip", &ip2]);
    assert!(held.contains("in use"), "{held}");
}

/// A delegated IPAM `type` is a plain name on CNI_PATH, never a path.
#[test]
fn delegated_ipam_type_is_never_a_path() {
    let c = Cluster::new("10.84.0.0/16");
    let dir = tempfile::tempdir().expect("tempdir");
    let marker = dir.path().join("ran");
    let evil = dir.path().join("evil");
    std::fs::write(
        &evil,
        format!("#!/bin/sh\ntouch {}\necho '{{}}'\n", marker.display()),
    )
    .expect("write");
    std::fs::set_permissions(&evil, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    let pod = Netns::new("cni-evil");
    let traversal = format!("../../../../../../..{}", evil.display());
    for kind in [
        evil.display().to_string(),
        traversal,
        "..".into(),
        "evil/..".into(),
    ] {
        let mut conf = c.conf("1.0.0");
        conf["ipam"] = json!({"type": kind});
        let (out, v) = c.cni(
            "calico",
            "ADD",
            Some(&pod),
            "evil1",
            "K8S_POD_NAMESPACE=shop;K8S_POD_NAME=evil",
            &conf,
        );
        assert!(!out.status.success(), "{kind:?} was accepted: {v}");
        assert!(!marker.exists(), "{kind:?} ran a file outside CNI_PATH");
        let msg = v["msg"].as_str().unwrap_or_default();
        assert!(msg.contains("invalid plugin type"), "{v}");
    }
}
