//! Real packets through real nftables: pods wired by the calico CNI plugin
//! in a node namespace, policy applied by `calico-node felix`, probed with
//! ping and TCP. Everything runs in namespaces this test creates.

use calico_test_support::Netns;
use serde_json::json;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

fn bin(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_calico-node")).with_file_name(name)
}

struct Node {
    ns: Netns,
    dir: tempfile::TempDir,
    servers: Vec<Child>,
}

impl Drop for Node {
    fn drop(&mut self) {
        for s in &mut self.servers {
            let _ = s.kill();
            let _ = s.wait();
        }
    }
}

impl Node {
    fn db(&self) -> String {
        self.dir.path().join("calico.db").display().to_string()
    }

    fn ctl_apply(&self, yaml: &str) {
        let file = self
            .dir
            .path()
            .join(format!("{}.yaml", calico_test_support::unique("m")));
        std::fs::write(&file, yaml).expect("write");
        let out = Command::new(bin("calicoctl"))
            .args([
                "--config",
                "/nonexistent",
                "apply",
                "-f",
                file.to_str().expect("path"),
            ])
            .env("CALICO_DATASTORE_PATH", self.db())
            .env_remove("DATASTORE_TYPE")
            .output()
            .expect("calicoctl (build the workspace)");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn ctl_delete(&self, kind: &str, name: &str, ns: &str) {
        let out = Command::new(bin("calicoctl"))
            .args(["--config", "/nonexistent", "delete", kind, name, "-n", ns])
            .env("CALICO_DATASTORE_PATH", self.db())
            .env_remove("DATASTORE_TYPE")
            .output()
            .expect("calicoctl");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Runs the agent once inside the node namespace.
    fn felix(&self) {
        let out = Command::new("nsenter")
            .arg(format!("--net={}", self.ns.path()))
            .arg(bin("calico-node"))
            .args(["felix", "--once", "--node", "node-1"])
            .env("CALICO_DATASTORE_PATH", self.db())
            .env_remove("DATASTORE_TYPE")
            .output()
            .expect("calico-node");
        assert!(
            out.status.success(),
            "felix: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Creates a pod through the CNI plugin; returns its namespace and IP.
    fn pod(&mut self, ns: &str, name: &str, labels: &[(&str, &str)]) -> (Netns, String) {
        let pod = Netns::new(&format!("pol-{name}"));
        let labels: Vec<_> = labels
            .iter()
            .map(|(k, v)| json!({"key": k, "value": v}))
            .collect();
        let conf = json!({"cniVersion": "1.0.0", "name": "k8s-pod-network", "type": "calico", "nodename": "node-1",
            "datastore_path": self.db(), "ipam": {"type": "calico-ipam"}, "args": {"cni": {"labels": labels}}});
        let mut child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.ns.name,
                bin("calico").to_str().expect("path"),
            ])
            .env("CNI_COMMAND", "ADD")
            .env(
                "CNI_CONTAINERID",
                calico_test_support::unique("c").replace('-', ""),
            )
            .env("CNI_NETNS", pod.path())
            .env("CNI_IFNAME", "eth0")
            .env(
                "CNI_ARGS",
                format!("K8S_POD_NAMESPACE={ns};K8S_POD_NAME={name}"),
            )
            .env("CNI_PATH", "/usr/lib/cni")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("cni");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(conf.to_string().as_bytes())
            .expect("conf");
        let out = child.wait_with_output().expect("cni");
        assert!(
            out.status.success(),
            "ADD: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("result");
        let ip = v["ips"][0]["address"]
            .as_str()
            .expect("ip")
            .trim_end_matches("/32")
            .to_string();
        // A TCP server on port 80 in the pod.
        let server = Command::new("ip")
            .args(["netns", "exec", &pod.name, "python3", "-c", "import socket\ns=socket.socket()\ns.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\ns.bind(('0.0.0.0', 80))\ns.listen(16)\nwhile True:\n    c,_=s.accept(); c.sendall(b'ok'); c.close()"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("server");
        self.servers.push(server);
        (pod, ip)
    }
}

/// Whether `from` can open a TCP connection to `ip`:80 (1 s timeout, retried once).
fn tcp(from: &Netns, ip: &str) -> bool {
    let probe = format!("import socket\ns=socket.create_connection(('{ip}', 80), timeout=1)\nassert s.recv(2) == b'ok'");
    (0..2).any(|_| from.exec(&["python3", "-c", &probe]).status.success())
}

fn ping(from: &Netns, ip: &str) -> bool {
    from.exec(&["ping", "-c1", "-W1", ip]).status.success()
}

#[test]
fn kubernetes_policies_enforced_on_real_packets() {
    let ns = Netns::new("pol-node");
    ns.make_node("10.250.5.1/24");
    // Other tables are never touched.
    ns.ok(&["nft", "add", "table", "inet", "someone-else"]);
    let mut node = Node {
        ns,
        dir: tempfile::tempdir().expect("tempdir"),
        servers: Vec::new(),
    };
    node.ctl_apply(
        "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: p}\nspec: {cidr: 10.86.0.0/16}\n---\n\
         apiVersion: projectcalico.org/v3\nkind: Profile\nmetadata: {name: kns.x}\nspec: {ingress: [{action: Allow}], egress: [{action: Allow}], labelsToApply: {pcns.kubernetes.io/metadata.name: x}}\n",
    );
    let (a, ip_a) = node.pod("x", "a", &[("app", "a")]);
    let (b, ip_b) = node.pod("x", "b", &[("app", "b")]);
    let (c, ip_c) = node.pod("x", "c", &[("app", "c")]);
    std::thread::sleep(std::time::Duration::from_millis(300)); // servers start
    node.felix();
    assert!(
        tcp(&b, &ip_a) && ping(&b, &ip_a),
        "no policy: the namespace profile allows"
    );

    node.ctl_apply("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: deny, namespace: x}\nspec: {podSelector: {}, policyTypes: [Ingress]}\n");
    node.felix();
    assert!(!tcp(&b, &ip_a), "default deny blocks b -> a");
    assert!(!ping(&c, &ip_b), "default deny blocks c -> b");

    node.ctl_apply(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: a-from-b, namespace: x}\n\
         spec: {podSelector: {matchLabels: {app: a}}, ingress: [{from: [{podSelector: {matchLabels: {app: b}}}], ports: [{port: 80}]}]}\n",
    );
    node.felix();
    assert!(tcp(&b, &ip_a), "b may reach a on 80");
    assert!(!tcp(&c, &ip_a), "c may not");
    assert!(!ping(&b, &ip_a), "only TCP 80 is allowed");
    assert!(!tcp(&a, &ip_b), "a -> b is still denied");

    node.ctl_delete("networkpolicy", "knp.default.deny", "x");
    node.ctl_delete("networkpolicy", "knp.default.a-from-b", "x");
    node.felix();
    assert!(
        tcp(&c, &ip_a) && tcp(&a, &ip_b) && ping(&a, &ip_c),
        "all allowed again"
    );
    assert!(
        node.ns
            .ok(&["nft", "list", "tables"])
            .contains("someone-else"),
        "other tables untouched"
    );
}
