//! End-to-end, driving only the commands a user runs: `calico-lab` and
//! `calicoctl`. Three nodes with BGP and the policy agent, namespaces and
//! pods spread over the nodes: policy conformance across nodes (Kubernetes
//! and Calico policies, pod and namespace label changes), agent restart
//! without losing established connectivity, pod churn without leaks, and a
//! `down` that leaves nothing behind.

// A test against real processes: it waits on the clock.
#![allow(clippy::disallowed_methods)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use calico_test_support::LabCli as Lab;

fn bin(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_calico-lab")).with_file_name(name)
}

fn new_lab(tag: &str) -> Lab {
    Lab::new(
        calico_test_support::unique(tag),
        Path::new(env!("CARGO_BIN_EXE_calico-lab")),
    )
}

const PODS: [&str; 6] = ["x/a", "x/b", "y/a", "y/b", "z/a", "z/b"];

fn all_pairs(except: impl Fn(&str, &str) -> bool) -> BTreeSet<(String, String)> {
    let mut s = BTreeSet::new();
    for a in PODS {
        for b in PODS {
            if a != b && !except(a, b) {
                s.insert((a.to_string(), b.to_string()));
            }
        }
    }
    s
}

fn netns_with(prefix: &str) -> Vec<String> {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(prefix))
        .map(str::to_string)
        .collect()
}

/// The pairs `calicoctl policy explain` allows (TCP 80), enforced or
/// pending (`which`: the JSON field holding the verdict).
fn explained_as(lab: &Lab, which: &str) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for a in PODS {
        for b in PODS {
            if a == b {
                continue;
            }
            let text = lab.ctl_ok(&[
                "policy",
                "explain",
                "--from",
                a,
                "--to",
                b,
                "--port",
                "80",
                "--protocol",
                "TCP",
                "-o",
                "json",
            ]);
            let v: serde_json::Value = serde_json::from_str(&text).expect("json");
            let verdict = if which == "pending" {
                &v["pending"]["verdict"]
            } else {
                &v["verdict"]
            };
            if verdict == "allowed" {
                out.insert((a.to_string(), b.to_string()));
            }
        }
    }
    out
}

fn explained(lab: &Lab) -> BTreeSet<(String, String)> {
    explained_as(lab, "verdict")
}

/// Real probes see `expected`, and `calicoctl policy explain`, working
/// it out offline from the datastore, says the same of every pair.
fn check(lab: &Lab, expected: BTreeSet<(String, String)>) {
    let seen = lab.allowed();
    assert_eq!(seen, expected, "probes");
    assert_eq!(explained(lab), seen, "policy explain against the probes");
}

#[test]
fn a_three_node_lab_end_to_end() {
    let lab = new_lab("e2e");
    lab.ok(&["up", "--nodes", "3"]);
    for ns in ["x", "y", "z"] {
        lab.ok(&["ns", "create", ns, "--labels", &format!("ns={ns}")]);
    }
    for p in PODS {
        let app = p.split('/').nth(1).unwrap_or("a");
        lab.ok(&["pod", "create", p, "--labels", &format!("app={app}")]);
    }
    let show = lab.ok(&["show"]);
    for n in ["node-1", "node-2", "node-3"] {
        assert!(
            show.contains(&format!("on {n}")),
            "pods are spread over the nodes: {show}"
        );
    }

    // No policy: everything reaches everything, across nodes.
    check(&lab, all_pairs(|_, _| false));

    // The external host (outside every pool, not a node): each pod
    // reaches it as its own node (the lab's pool has natOutgoing, as
    // Calico's default pool).
    let state: serde_json::Value =
        serde_json::from_str(&lab.ok(&["show", "--json"])).expect("lab state");
    for p in PODS {
        let node = state["pods"][p]["node"].as_str().expect("the pod's node");
        let addr = state["nodes"]
            .as_array()
            .expect("nodes")
            .iter()
            .find(|n| n["name"] == node)
            .and_then(|n| n["addr"].as_str())
            .expect("the node's address");
        assert_eq!(
            lab.ok(&["probe", p, "external", "--port", "80"]).trim(),
            format!("allowed (seen as {addr})"),
            "{p} on {node}"
        );
    }
    // Nodes as ends: a node reaches the external host as itself, and the
    // external host the node; a node reaches its pods (host to workload
    // is allowed, as Calico); a pod does not reach its own host
    // (defaultEndpointToHostAction Drop) but reaches another node, as its
    // own node (the other node's address is outside every pool).
    assert_eq!(
        lab.ok(&["probe", "node-2", "external", "--port", "80"])
            .trim(),
        "allowed (seen as 10.250.0.2)"
    );
    assert_eq!(
        lab.ok(&["probe", "external", "node-1", "--port", "80"])
            .trim(),
        "allowed (seen as 10.250.0.250)"
    );
    let x_a_node = state["pods"]["x/a"]["node"].as_str().expect("x/a's node");
    assert_eq!(
        lab.ok(&["probe", x_a_node, "x/a", "--port", "80"]).trim(),
        "allowed"
    );
    assert_eq!(
        lab.ok(&["probe", "x/a", x_a_node, "--port", "80"]).trim(),
        "denied"
    );
    let other = if x_a_node == "node-1" {
        "node-2"
    } else {
        "node-1"
    };
    let x_a_addr = format!("10.250.0.{}", &x_a_node["node-".len()..]);
    assert_eq!(
        lab.ok(&["probe", "x/a", other, "--port", "80"]).trim(),
        format!("allowed (seen as {x_a_addr})")
    );
    // natOutgoing off: the pods' addresses are not routed to the external
    // host, so its answers never come back: denied (dropped), not refused.
    let pool = |nat: bool| {
        format!("apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {{name: default-ipv4-ippool}}\n\
                 spec: {{cidr: 10.244.0.0/16, blockSize: 26, natOutgoing: {nat}, vxlanMode: Never}}\n")
    };
    lab.apply(&pool(false));
    lab.ok(&["sync"]);
    assert_eq!(
        lab.ok(&["probe", "x/a", "external", "--port", "80"]).trim(),
        "denied"
    );
    lab.apply(&pool(true));
    lab.ok(&["sync"]);
    assert!(lab
        .ok(&["probe", "x/a", "external", "--port", "80"])
        .starts_with("allowed (seen as 10.250.0."));

    // Kubernetes default deny in x.
    lab.apply("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: deny, namespace: x}\nspec: {podSelector: {}, policyTypes: [Ingress]}\n");
    check(&lab, all_pairs(|_, b| b.starts_with("x/")));

    // x/a takes TCP 80 from namespaces labelled ns=y.
    lab.apply("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: a-from-y, namespace: x}\n\
               spec: {podSelector: {matchLabels: {app: a}}, ingress: [{from: [{namespaceSelector: {matchLabels: {ns: y}}}], ports: [{port: 80}]}]}\n");
    let into_x = |a: &str, b: &str| b.starts_with("x/") && !(b == "x/a" && a.starts_with("y/"));
    check(&lab, all_pairs(into_x));

    // A Calico GlobalNetworkPolicy: nothing leaves z.
    lab.apply("apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: z-no-egress}\n\
               spec: {selector: \"projectcalico.org/namespace == 'z'\", types: [Egress], egress: [{action: Deny}]}\n");
    check(&lab, all_pairs(|a, b| into_x(a, b) || a.starts_with("z/")));

    // Pod label: x/b becomes app=a and is selected too.
    lab.ok(&["pod", "label", "x/b", "app=a"]);
    lab.ok(&["sync"]);
    let into_x2 = |a: &str, b: &str| b.starts_with("x/") && !a.starts_with("y/");
    check(&lab, all_pairs(|a, b| into_x2(a, b) || a.starts_with("z/")));

    // Namespace label: y is no longer ns=y.
    lab.ok(&["ns", "label", "y", "ns=w"]);
    lab.ok(&["sync"]);
    check(
        &lab,
        all_pairs(|a, b| b.starts_with("x/") || a.starts_with("z/")),
    );

    // Agents restart on node-2 while y/b (node-1) pings z/a (node-2):
    // established connectivity holds (graceful restart keeps the routes,
    // the rules stay in the kernel).
    let mut ping = Command::new(bin("calico-lab"))
        .args([
            "exec", "y/b", "--", "ping", "-i", "0.02", "-c", "250", "-W", "1",
        ])
        .arg(lab_ip(&lab, "z/a"))
        .env("CALICO_LAB_NAME", &lab.name)
        .env("CALICO_LAB_STATE", lab.dir.path())
        .stdout(Stdio::piped())
        .spawn()
        .expect("ping");
    // The restart starts once replies are coming back.
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(
        ping.stdout.take().expect("ping's output"),
    ));
    for line in lines.by_ref() {
        if line.expect("ping's output").contains("bytes from") {
            break;
        }
    }
    lab.ok(&["node", "restart", "node-2"]);
    let text: String = lines.map_while(Result::ok).collect::<Vec<_>>().join("\n");
    assert!(ping.wait().expect("ping").success(), "{text}");
    assert!(
        text.contains(" 0% packet loss"),
        "lost packets during the restart: {text}"
    );
    // The restarted agents enforce new changes.
    lab.apply("apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: z-no-egress}\n\
               spec: {selector: \"projectcalico.org/namespace == 'z'\", types: [Egress], egress: [{action: Allow}]}\n");
    check(&lab, all_pairs(|_, b| b.starts_with("x/")));

    // A staged policy is never enforced: the same pairs connect, and
    // explain's pending verdict shows what it would do (nothing leaves).
    lab.apply("apiVersion: projectcalico.org/v3\nkind: StagedGlobalNetworkPolicy\nmetadata: {name: deny-all-egress}\n\
               spec: {selector: all(), types: [Egress], egress: [{action: Deny}]}\n");
    check(&lab, all_pairs(|_, b| b.starts_with("x/")));
    assert!(explained_as(&lab, "pending").is_empty());

    // Pod churn: create, probe, delete; no address is leaked.
    for i in 0..8 {
        let name = format!("y/churn-{i}");
        lab.ok(&["pod", "create", &name, "--labels", "app=churn"]);
        assert_eq!(
            lab.ok(&["probe", "z/b", &name, "--port", "80"]).trim(),
            "allowed"
        );
        lab.ok(&["pod", "delete", &name]);
    }
    // A namespace deleted takes its pods (addresses, endpoints,
    // interfaces) and its profile with it.
    lab.ok(&["ns", "create", "gone"]);
    for p in ["gone/p1", "gone/p2"] {
        lab.ok(&["pod", "create", p]);
    }
    let netns_before = netns_with(&format!("cl-{}-", lab.name)).len();
    lab.ok(&["ns", "delete", "gone"]);
    assert_eq!(
        netns_with(&format!("cl-{}-", lab.name)).len(),
        netns_before - 2
    );
    let show = lab.ok(&["show"]);
    assert!(!show.contains("gone/"), "{show}");
    let profile = lab.calicoctl(&["get", "profile", "kns.gone"], "");
    assert!(!profile.status.success(), "the namespace's profile is gone");
    let weps = lab.calicoctl(&["get", "workloadendpoints", "-n", "gone"], "");
    assert!(
        !String::from_utf8_lossy(&weps.stdout).contains("gone"),
        "{}",
        String::from_utf8_lossy(&weps.stdout)
    );
    let check = lab.calicoctl(&["ipam", "check"], "");
    assert!(
        check.status.success(),
        "ipam check: {}",
        String::from_utf8_lossy(&check.stdout)
    );

    // calicoctl node status through the lab's environment.
    let env = lab.ok(&["env", "--node", "node-3"]);
    let sock = env
        .lines()
        .find_map(|l| l.strip_prefix("export CALICO_BGP_STATUS_SOCKET="))
        .expect("socket");
    let status = Command::new(bin("calicoctl"))
        .args(["node", "status"])
        .env("CALICO_BGP_STATUS_SOCKET", sock)
        .output()
        .expect("calicoctl");
    let text = String::from_utf8_lossy(&status.stdout);
    assert_eq!(text.matches("| up ").count(), 2, "{text}");

    // Automatic host endpoints (the lab runs `calico-node controllers`):
    // one `*` endpoint per node, allow-all until a policy selects them.
    lab.apply("apiVersion: projectcalico.org/v3\nkind: KubeControllersConfiguration\nmetadata: {name: default}\n\
               spec: {controllers: {node: {hostEndpoint: {autoCreate: Enabled}}}}\n");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let heps = lab.ctl_ok(&["get", "hostendpoints"]);
        if (1..=3).all(|i| heps.contains(&format!("node-{i}-auto-hep"))) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{heps}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    lab.ok(&["sync"]);
    assert_eq!(
        lab.ok(&["probe", "external", "node-1", "--port", "80"])
            .trim(),
        "allowed (seen as 10.250.0.250)"
    );
    lab.apply("apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: nodes}\n\
               spec: {selector: \"projectcalico.org/created-by == 'calico-kube-controllers'\", types: [Ingress, Egress],\
               ingress: [{action: Deny, source: {nets: [10.250.0.250/32]}}, {action: Allow}], egress: [{action: Allow}]}\n");
    lab.ok(&["sync"]);
    assert_eq!(
        lab.ok(&["probe", "external", "node-1", "--port", "80"])
            .trim(),
        "denied"
    );
    assert!(lab
        .ok(&["probe", "node-2", "node-1", "--port", "80"])
        .starts_with("allowed"));

    // Down leaves nothing.
    let prefix = format!("cl-{}-", lab.name);
    assert!(!netns_with(&prefix).is_empty());
    lab.ok(&["down"]);
    assert!(netns_with(&prefix).is_empty(), "{:?}", netns_with(&prefix));
    assert!(!Path::new(&lab.dir.path().join("lab.json")).exists());
}

/// Dual stack: the same Kubernetes NetworkPolicy conformance steps hold
/// over IPv6 as over IPv4 (BGP carries both families' blocks across the
/// nodes), an `ipBlock` of one family matches that family only, and pods
/// reach beyond the pools over IPv6 as their node (natOutgoing).
#[test]
fn a_dual_stack_lab_enforces_policy_over_both_families() {
    let lab = new_lab("dual");
    lab.ok(&["up", "--nodes", "3", "--ip-family", "dual"]);
    for ns in ["x", "y", "z"] {
        lab.ok(&["ns", "create", ns, "--labels", &format!("ns={ns}")]);
    }
    for p in PODS {
        let app = p.split('/').nth(1).unwrap_or("a");
        lab.ok(&["pod", "create", p, "--labels", &format!("app={app}")]);
    }
    let both = |expected: BTreeSet<(String, String)>, what: &str| {
        assert_eq!(lab.allowed_over(false), expected, "{what}: IPv4");
        assert_eq!(lab.allowed_over(true), expected, "{what}: IPv6");
    };
    both(all_pairs(|_, _| false), "no policy");
    let state: serde_json::Value =
        serde_json::from_str(&lab.ok(&["show", "--json"])).expect("lab state");
    let ip6 = |p: &str| state["pods"][p]["ip6"].as_str().expect("ip6").to_string();
    assert!(ip6("x/a").starts_with("fd00:244:"), "{state}");
    let node = state["pods"]["x/a"]["node"].as_str().expect("node");
    let n = &node["node-".len()..];
    assert_eq!(
        lab.ok(&["probe", "x/a", "external", "--port", "80", "--ipv6"])
            .trim(),
        format!("allowed (seen as fd00:250::{n})")
    );

    lab.apply("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: deny, namespace: x}\nspec: {podSelector: {}, policyTypes: [Ingress]}\n");
    both(all_pairs(|_, b| b.starts_with("x/")), "default deny in x");
    lab.apply("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: a-from-y, namespace: x}\n\
               spec: {podSelector: {matchLabels: {app: a}}, ingress: [{from: [{namespaceSelector: {matchLabels: {ns: y}}}], ports: [{port: 80}]}]}\n");
    let into_x = |a: &str, b: &str| b.starts_with("x/") && !(b == "x/a" && a.starts_with("y/"));
    both(all_pairs(into_x), "x/a from namespace y");
    // A Calico GlobalNetworkPolicy (nothing leaves z), a pod label and a
    // namespace label change, as in the IPv4 walk-through.
    lab.apply("apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: z-no-egress}\n\
               spec: {selector: \"projectcalico.org/namespace == 'z'\", types: [Egress], egress: [{action: Deny}]}\n");
    both(
        all_pairs(|a, b| into_x(a, b) || a.starts_with("z/")),
        "nothing leaves z",
    );
    lab.ok(&["pod", "label", "x/b", "app=a"]);
    lab.ok(&["sync"]);
    let into_x2 = |a: &str, b: &str| b.starts_with("x/") && !a.starts_with("y/");
    both(
        all_pairs(|a, b| into_x2(a, b) || a.starts_with("z/")),
        "x/b relabelled",
    );
    lab.ok(&["ns", "label", "y", "ns=w"]);
    lab.ok(&["sync"]);
    both(
        all_pairs(|a, b| b.starts_with("x/") || a.starts_with("z/")),
        "y relabelled",
    );
    lab.apply("apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: z-no-egress}\n\
               spec: {selector: \"projectcalico.org/namespace == 'z'\", types: [Egress], egress: [{action: Allow}]}\n");
    lab.ok(&["ns", "label", "y", "ns=y"]);
    lab.ok(&["pod", "label", "x/b", "app=b"]);
    lab.ok(&["sync"]);
    both(all_pairs(into_x), "back to x/a from namespace y");

    // z takes only y/a's IPv6 address (an ipBlock): over IPv6 y/a gets
    // in; over IPv4 nobody does.
    lab.apply(&format!(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: z-from-block, namespace: z}}\n\
         spec: {{podSelector: {{}}, ingress: [{{from: [{{ipBlock: {{cidr: '{}/128'}}}}]}}]}}\n",
        ip6("y/a")
    ));
    let into_z = |a: &str, b: &str| into_x(a, b) || b.starts_with("z/");
    assert_eq!(
        lab.allowed_over(false),
        all_pairs(into_z),
        "ipBlock v6: IPv4"
    );
    assert_eq!(
        lab.allowed_over(true),
        all_pairs(|a, b| into_x(a, b) || (b.starts_with("z/") && a != "y/a")),
        "ipBlock v6: IPv6"
    );
    let prefix = format!("cl-{}-", lab.name);
    lab.ok(&["down"]);
    assert!(netns_with(&prefix).is_empty(), "{:?}", netns_with(&prefix));
}

fn lab_ip(lab: &Lab, pod: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(&lab.ok(&["show", "--json"])).expect("json");
    v["pods"][pod]["ip"].as_str().expect("ip").to_string()
}

/// `down` cleans up after a lab whose processes were killed and whose
/// state file is gone.
#[test]
fn down_after_a_crash() {
    let lab = new_lab("crash");
    lab.ok(&["up", "--nodes", "2"]);
    lab.ok(&["ns", "create", "x"]);
    lab.ok(&["pod", "create", "x/a"]);
    std::fs::remove_file(lab.dir.path().join("lab.json")).expect("remove state");
    let prefix = format!("cl-{}-", lab.name);
    assert!(!netns_with(&prefix).is_empty());
    lab.ok(&["down"]);
    assert!(netns_with(&prefix).is_empty());
    // The BGP agents were started with the state directory in their
    // command line (their status socket).
    let left = Command::new("pgrep")
        .args(["-f", &lab.dir.path().display().to_string()])
        .output()
        .expect("pgrep");
    assert!(
        left.stdout.is_empty(),
        "processes left: {}",
        String::from_utf8_lossy(&left.stdout)
    );
    // Nor the loopback proxies into its namespaces (the flow service's),
    // which run in this host's namespace.
    let proxies = Command::new("pgrep")
        .args(["-f", &format!("proxy --netns {prefix}")])
        .output()
        .expect("pgrep");
    assert!(
        proxies.stdout.is_empty(),
        "proxies left: {}",
        String::from_utf8_lossy(&proxies.stdout)
    );
    // Nor anything else started for it: every lab process carries the
    // lab's datastore path in its environment (the controllers did not,
    // in their command line, and outlived such a `down`).
    let dir = lab.dir.path().display().to_string();
    let mut left = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let pid = entry.file_name().to_string_lossy().to_string();
        if pid.parse::<u32>().is_err() || pid == std::process::id().to_string() {
            continue;
        }
        let env = std::fs::read(entry.path().join("environ")).unwrap_or_default();
        let cmd = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&env).contains(&format!("CALICO_DATASTORE_PATH={dir}")) {
            left.push(format!(
                "{pid}: {}",
                String::from_utf8_lossy(&cmd).replace('\0', " ")
            ));
        }
    }
    assert!(left.is_empty(), "processes of the lab left: {left:?}");
}

/// With `--datastore etcd` the nodes reach a real etcd over the fabric and
/// calicoctl reaches it through the environment `calico-lab env` prints;
/// the agents ride out an etcd restart and enforce what is written after.
#[test]
fn etcd_lab_survives_a_datastore_restart() {
    // The agents read through a fan-out (calico-node typha), which is what
    // sees etcd restart: the agents keep enforcing and catch up through it.
    let lab = new_lab("etcd");
    lab.ok(&["up", "--nodes", "2", "--datastore", "etcd", "--typha"]);
    lab.ok(&["ns", "create", "x"]);
    lab.ok(&["pod", "create", "x/a", "--labels", "app=a"]);
    lab.ok(&["pod", "create", "x/b", "--labels", "app=b"]);
    let env: Vec<(String, String)> = lab
        .ok(&["env"])
        .lines()
        .filter_map(|l| l.strip_prefix("export "))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert!(
        env.iter()
            .any(|(k, v)| k == "DATASTORE_TYPE" && v == "etcdv3"),
        "{env:?}"
    );
    let ctl = |yaml: &str| {
        let mut child = Command::new(bin("calicoctl"))
            .args(["--config", "/nonexistent", "apply", "-f", "-"])
            .env_remove("CALICO_DATASTORE_PATH")
            .envs(env.iter().cloned())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("calicoctl");
        std::io::Write::write_all(&mut child.stdin.take().expect("stdin"), yaml.as_bytes())
            .expect("write");
        assert!(child.wait().expect("calicoctl").success());
    };
    assert_eq!(
        lab.ok(&["probe", "x/b", "x/a", "--port", "80"]).trim(),
        "allowed"
    );
    lab.ok(&["datastore", "restart"]);
    ctl("apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: deny-a}\nspec: {selector: \"app == 'a'\", ingress: [{action: Deny}]}\n");
    lab.ok(&["sync", "--timeout", "60"]);
    assert_eq!(
        lab.ok(&["probe", "x/b", "x/a", "--port", "80"]).trim(),
        "denied"
    );
    assert_eq!(
        lab.ok(&["probe", "x/a", "x/b", "--port", "80"]).trim(),
        "allowed"
    );
    // A port nothing listens on is "refused" (a reset or port unreachable
    // came back), never taken for "denied"; behind the deny it is denied.
    for protocol in ["TCP", "UDP"] {
        assert_eq!(
            lab.ok(&[
                "probe",
                "x/a",
                "x/b",
                "--port",
                "81",
                "--protocol",
                protocol
            ])
            .trim(),
            "refused",
            "{protocol}"
        );
        assert_eq!(
            lab.ok(&[
                "probe",
                "x/b",
                "x/a",
                "--port",
                "81",
                "--protocol",
                protocol
            ])
            .trim(),
            "denied",
            "{protocol}"
        );
    }
}
