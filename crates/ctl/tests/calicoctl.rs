//! calicoctl end to end: the binary against the embedded store and a real etcd.

use calico_test_support::EtcdServer;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Where a calicoctl invocation points.
enum Backend {
    Embedded(tempfile::TempDir),
    Etcd(Box<EtcdServer>),
}

impl Backend {
    fn embedded() -> Self {
        Backend::Embedded(tempfile::tempdir().expect("tempdir"))
    }

    fn ctl(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_calicoctl"));
        cmd.args(["--config", "/nonexistent/calicoctl.cfg"])
            .args(args);
        cmd.env_remove("DATASTORE_TYPE")
            .env_remove("ETCD_ENDPOINTS")
            .env_remove("CALICO_DATASTORE_PATH");
        match self {
            Backend::Embedded(dir) => {
                cmd.env("CALICO_DATASTORE_PATH", dir.path().join("calico.db"))
            }
            Backend::Etcd(etcd) => cmd
                .env("DATASTORE_TYPE", "etcdv3")
                .env("ETCD_ENDPOINTS", &etcd.endpoint),
        };
        cmd.output().expect("run calicoctl")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.ctl(args);
        assert!(
            out.status.success(),
            "calicoctl {args:?} failed: {}{}",
            stdout(&out),
            stderr(&out)
        );
        stdout(&out)
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn strip_server_fields(mut v: Value) -> Value {
    if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        for f in ["resourceVersion", "uid", "creationTimestamp"] {
            meta.remove(f);
        }
    }
    v
}

fn manifest_round_trip(b: &Backend) {
    let path = repo().join("examples/manifests/cluster.yaml");
    let file = path.to_str().expect("utf-8 path");
    let out = b.ok(&["apply", "-f", file]);
    assert!(out.contains("Successfully applied 25 resource(s)"), "{out}");

    let text = std::fs::read_to_string(&path).expect("manifest");
    let docs = calico_api::documents(&text).expect("yaml");
    for doc in &docs {
        let kind = doc["kind"].as_str().expect("kind");
        let name = doc["metadata"]["name"].as_str().expect("name");
        let mut args = vec!["get", kind, name, "-o", "yaml"];
        if let Some(ns) = doc["metadata"]["namespace"].as_str() {
            args.extend(["-n", ns]);
        }
        let yaml = b.ok(&args);
        let got: Value = serde_norway::from_str(&yaml).expect("get prints YAML");
        assert!(
            got["metadata"]["resourceVersion"]
                .as_str()
                .is_some_and(|v| !v.is_empty()),
            "{kind}/{name} has a resourceVersion"
        );
        assert!(
            got["metadata"]["uid"].is_string() && got["metadata"]["creationTimestamp"].is_string()
        );
        assert_eq!(
            &strip_server_fields(got),
            doc,
            "{kind}/{name} reads back differently"
        );
    }

    // Lists come back as <Kind>List with every item.
    let list: Value =
        serde_norway::from_str(&b.ok(&["get", "globalnetworkpolicies", "-o", "yaml"]))
            .expect("yaml");
    assert_eq!(list["kind"], "GlobalNetworkPolicyList");
    assert_eq!(list["items"].as_array().map(Vec::len), Some(4));
    let all_ns: Value =
        serde_norway::from_str(&b.ok(&["get", "networkpolicy", "-A", "-o", "json"])).expect("json");
    assert_eq!(all_ns["items"].as_array().map(Vec::len), Some(2));

    let out = b.ok(&["delete", "-f", file]);
    assert!(out.contains("Successfully deleted 25 resource(s)"), "{out}");
    for doc in &docs {
        let kind = doc["kind"].as_str().expect("kind");
        let name = doc["metadata"]["name"].as_str().expect("name");
        let mut args = vec!["get", kind, name];
        if let Some(ns) = doc["metadata"]["namespace"].as_str() {
            args.extend(["-n", ns]);
        }
        let out = b.ctl(&args);
        assert_eq!(out.status.code(), Some(1), "{kind}/{name} still there");
        assert!(
            stderr(&out).contains("resource does not exist"),
            "{}",
            stderr(&out)
        );
    }
}

#[test]
fn manifest_applies_reads_back_and_deletes_embedded() {
    manifest_round_trip(&Backend::embedded());
}

#[test]
fn manifest_applies_reads_back_and_deletes_etcd() {
    manifest_round_trip(&Backend::Etcd(Box::new(EtcdServer::start())));
}

#[test]
fn kubernetes_policies_are_stored_converted() {
    let b = Backend::Etcd(Box::new(EtcdServer::start()));
    let file = repo().join("examples/manifests/k8s-policies.yaml");
    b.ok(&["apply", "-f", file.to_str().expect("path")]);
    let got: Value = serde_norway::from_str(&b.ok(&[
        "get",
        "networkpolicy",
        "knp.default.api-allow",
        "-n",
        "shop",
        "-o",
        "yaml",
    ]))
    .expect("yaml");
    assert_eq!(got["spec"]["order"], 1000);
    assert_eq!(got["spec"]["selector"], "projectcalico.org/orchestrator == 'k8s' && app == 'api' && tier in { 'backend', 'internal' }");
    let table = b.ok(&["get", "networkpolicy", "-n", "shop"]);
    assert!(table.contains("knp.default.default-deny"), "{table}");
}

#[test]
fn an_invalid_manifest_writes_nothing() {
    let b = Backend::embedded();
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("bad.yaml");
    std::fs::write(
        &file,
        "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: good}\nspec: {cidr: 10.1.0.0/16}\n---\n\
         apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: bad}\nspec:\n  ingress:\n  - action: Allow\n    protocol: TCP\n    destination: {ports: ['90:80']}\n",
    )
    .expect("write");
    let out = b.ctl(&["apply", "-f", file.to_str().expect("path")]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("nothing was written"), "{err}");
    assert!(err.contains("document 2 (GlobalNetworkPolicy(bad)): spec.ingress[0].destination.ports[0]: port range 90:80 is reversed"), "{err}");
    // Not even the datastore was created.
    let get = b.ctl(&["get", "ippools"]);
    assert!(
        !get.status.success(),
        "nothing was written: {}",
        stdout(&get)
    );
    assert!(
        stderr(&get).contains("no embedded datastore"),
        "{}",
        stderr(&get)
    );
}

#[test]
fn create_replace_delete_by_name_and_exit_codes() {
    let b = Backend::embedded();
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("pool.yaml");
    std::fs::write(&file, "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: p}\nspec: {cidr: 10.9.0.0/16}\n").expect("write");
    let f = file.to_str().expect("path");
    b.ok(&["create", "-f", f]);
    let again = b.ctl(&["create", "-f", f]);
    assert_eq!(again.status.code(), Some(1));
    assert!(
        stderr(&again).contains("resource already exists: IPPool(p)"),
        "{}",
        stderr(&again)
    );
    b.ok(&["create", "--skip-exists", "-f", f]);
    b.ok(&["replace", "-f", f]);
    b.ok(&["label", "ippool", "p", "zone=a"]);
    let relabel = b.ctl(&["label", "ippool", "p", "zone=b"]);
    assert_eq!(
        relabel.status.code(),
        Some(1),
        "changing a label needs --overwrite"
    );
    b.ok(&["label", "ippool", "p", "zone=b", "--overwrite"]);
    assert!(b
        .ok(&["get", "ippool", "-l", "zone == 'b'"])
        .contains("10.9.0.0/16"));
    assert!(!b
        .ok(&["get", "ippool", "-l", "zone == 'a'"])
        .contains("10.9.0.0/16"));
    b.ok(&[
        "patch",
        "ippool",
        "p",
        "-p",
        r#"{"spec":{"disabled":true}}"#,
    ]);
    assert!(b
        .ok(&["get", "ippool", "p", "-o", "yaml"])
        .contains("disabled: true"));
    let bad_patch = b.ctl(&[
        "patch",
        "ippool",
        "p",
        "-p",
        r#"{"spec":{"cidr":"nonsense"}}"#,
    ]);
    assert_eq!(bad_patch.status.code(), Some(1));
    assert!(
        stderr(&bad_patch).contains("spec.cidr"),
        "{}",
        stderr(&bad_patch)
    );
    b.ok(&["delete", "ippool", "p"]);
    let gone = b.ctl(&["delete", "ippool", "p"]);
    assert_eq!(gone.status.code(), Some(1));
    b.ok(&["delete", "ippool", "p", "--skip-not-exists"]);
    let unknown = b.ctl(&["get", "widgets"]);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(stderr(&unknown).contains("unknown resource kind \"widgets\""));
}

#[test]
fn selector_subcommands() {
    let b = Backend::embedded();
    assert_eq!(
        b.ok(&[
            "selector",
            "match",
            "app == 'web' && !has(x)",
            "--labels",
            r#"{"app":"web"}"#
        ])
        .trim(),
        "true"
    );
    assert_eq!(
        b.ok(&["selector", "match", "app in {'a','b'}", "--labels", "app=c"])
            .trim(),
        "false"
    );
    assert_eq!(
        b.ok(&["selector", "canonical", "a=='b'&&has(c)"]).trim(),
        r#"(a == "b" && has(c))"#
    );
    assert_eq!(b.ok(&["selector", "validate", "all()"]).trim(), "valid");
    let bad = b.ctl(&["selector", "match", "app == ", "--labels", "{}"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(stderr(&bad).contains("column 8"), "{}", stderr(&bad));
    let bad_labels = b.ctl(&["selector", "match", "all()", "--labels", "{nope"]);
    assert_eq!(bad_labels.status.code(), Some(2));
}

/// The embedded datastore is private (a 0600 file in 0700 directories,
/// whatever the umask), and a read at a wrong path is an error that
/// creates nothing.
#[test]
fn embedded_datastore_is_private_and_never_made_by_a_read() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("a/b/calico.db");
    let run = |args: &[&str], stdin: &str| {
        let mut child = Command::new("sh")
            .args([
                "-c",
                "umask 000; exec \"$@\"",
                "sh",
                env!("CARGO_BIN_EXE_calicoctl"),
            ])
            .args(["--config", "/nonexistent/calicoctl.cfg"])
            .args(args)
            .env_remove("DATASTORE_TYPE")
            .env("CALICO_DATASTORE_PATH", &db)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("calicoctl");
        std::io::Write::write_all(&mut child.stdin.take().expect("stdin"), stdin.as_bytes())
            .expect("stdin");
        child.wait_with_output().expect("calicoctl")
    };
    for args in [
        &["get", "ippools"][..],
        &["ipam", "show"],
        &["delete", "ippool", "p"],
        &["ipam", "check"],
    ] {
        let out = run(args, "");
        assert!(
            !out.status.success(),
            "{args:?} on a missing datastore succeeded"
        );
        assert!(
            stderr(&out).contains("no embedded datastore at"),
            "{args:?}: {}",
            stderr(&out)
        );
        assert!(
            !db.exists() && !dir.path().join("a").exists(),
            "{args:?} created it"
        );
    }
    let pool = "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: p}\nspec: {cidr: 10.9.0.0/24}\n";
    let out = run(&["apply", "-f", "-"], pool);
    assert!(out.status.success(), "{}", stderr(&out));
    let mode = |p: &Path| std::fs::metadata(p).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode(&db), 0o600);
    assert_eq!(mode(&dir.path().join("a/b")), 0o700);
    assert_eq!(mode(&dir.path().join("a")), 0o700);
    for side in ["calico.db-wal", "calico.db-shm"] {
        let p = dir.path().join("a/b").join(side);
        if p.exists() {
            assert_eq!(mode(&p) & 0o077, 0, "{side} is readable by others");
        }
    }
    assert!(stdout(&run(&["get", "ippools"], "")).contains("10.9.0.0/24"));
}

/// A 10 MB, 100,000-rule policy on standard input is refused before it
/// is parsed, in little memory, and the error does not echo it.
#[test]
fn huge_manifest_is_refused_cheaply() {
    let b = Backend::embedded();
    let rule = "  - action: Allow\n    source: {nets: [10.0.0.0/8]}\n    destination: {ports: [80]}\n    protocol: TCP\n";
    let manifest = format!(
        "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {{name: g}}\nspec:\n  ingress:\n{}",
        rule.repeat(100_000)
    );
    let Backend::Embedded(dir) = &b else {
        unreachable!()
    };
    let mut child = Command::new(env!("CARGO_BIN_EXE_calicoctl"))
        .args(["--config", "/nonexistent/calicoctl.cfg", "apply", "-f", "-"])
        .env_remove("DATASTORE_TYPE")
        .env("CALICO_DATASTORE_PATH", dir.path().join("calico.db"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("calicoctl");
    let mut stdin = child.stdin.take().expect("stdin");
    let writer = std::thread::spawn(move || {
        let _ = std::io::Write::write_all(&mut stdin, manifest.as_bytes());
    });
    let pid = child.id();
    let mut peak = 0u64;
    while child.try_wait().expect("wait").is_none() {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        if let Some(kib) = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        {
            peak = peak.max(kib);
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let _ = writer.join();
    let out = child.wait_with_output().expect("calicoctl");
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("a resource may be at most"),
        "{}",
        &err[..err.len().min(2000)]
    );
    assert!(err.len() < 4096, "{} bytes of error", err.len());
    assert!(peak < 100 * 1024, "calicoctl peaked at {peak} KiB");
}

/// A real etcd serving TLS with client certificates (made for the test):
/// calicoctl with Calico's settings (environment, or a CalicoAPIConfig)
/// writes and reads; without a client certificate, with one another CA
/// signed, or trusting another CA, it gets nothing. Then etcd auth on the
/// same server: the right password works, a wrong one does not.
#[test]
fn etcd_over_tls_with_client_certificates_and_auth() {
    let etcd = EtcdServer::start_tls();
    let t = etcd.tls.clone().expect("tls");
    let run = |env: &[(&str, &std::path::Path)], user: Option<(&str, &str)>, args: &[&str]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_calicoctl"));
        cmd.args(["--config", "/nonexistent/calicoctl.cfg"])
            .args(args)
            .env("DATASTORE_TYPE", "etcdv3")
            .env("ETCD_ENDPOINTS", &etcd.endpoint)
            .env_remove("ETCD_CA_CERT_FILE")
            .env_remove("ETCD_CERT_FILE")
            .env_remove("ETCD_KEY_FILE")
            .env_remove("ETCD_USERNAME")
            .env_remove("ETCD_PASSWORD");
        for (k, v) in env {
            cmd.env(k, v);
        }
        if let Some((u, p)) = user {
            cmd.env("ETCD_USERNAME", u).env("ETCD_PASSWORD", p);
        }
        cmd.output().expect("calicoctl")
    };
    let good: Vec<(&str, &std::path::Path)> = vec![
        ("ETCD_CA_CERT_FILE", &t.ca),
        ("ETCD_CERT_FILE", &t.client_cert),
        ("ETCD_KEY_FILE", &t.client_key),
    ];
    let dir = tempfile::tempdir().expect("tempdir");
    let pool = dir.path().join("pool.yaml");
    std::fs::write(&pool, "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: tls}\nspec: {cidr: 10.77.0.0/16}\n").expect("write");
    let out = run(&good, None, &["apply", "-f", pool.to_str().expect("path")]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&run(&good, None, &["get", "ippools"])).contains("10.77.0.0/16"));

    // The same through a CalicoAPIConfig file.
    let cfg = dir.path().join("calicoctl.cfg");
    std::fs::write(&cfg, format!("apiVersion: projectcalico.org/v3\nkind: CalicoAPIConfig\nmetadata: {{}}\nspec:\n  datastoreType: etcdv3\n  etcdEndpoints: {}\n  etcdCACertFile: {}\n  etcdCertFile: {}\n  etcdKeyFile: {}\n",
        etcd.endpoint, t.ca.display(), t.client_cert.display(), t.client_key.display())).expect("cfg");
    let out = Command::new(env!("CARGO_BIN_EXE_calicoctl"))
        .arg("--config")
        .arg(&cfg)
        .args(["get", "ippools"])
        .env_remove("DATASTORE_TYPE")
        .env_remove("ETCD_ENDPOINTS")
        .output()
        .expect("calicoctl");
    assert!(stdout(&out).contains("10.77.0.0/16"), "{}", stderr(&out));

    let refused = |env: &[(&str, &std::path::Path)], why: &str| {
        let out = run(env, None, &["get", "ippools"]);
        assert!(!out.status.success(), "{why}: {}", stdout(&out));
        assert!(!stdout(&out).contains("10.77.0.0/16"), "{why}");
    };
    refused(&[("ETCD_CA_CERT_FILE", &t.ca)], "no client certificate");
    refused(
        &[
            ("ETCD_CA_CERT_FILE", &t.ca),
            ("ETCD_CERT_FILE", &t.other_cert),
            ("ETCD_KEY_FILE", &t.other_key),
        ],
        "a client certificate from another CA",
    );
    refused(
        &[
            ("ETCD_CA_CERT_FILE", &t.other_ca),
            ("ETCD_CERT_FILE", &t.client_cert),
            ("ETCD_KEY_FILE", &t.client_key),
        ],
        "a server its CA did not sign",
    );
    // Plain http to a TLS-only server.
    let plain = Command::new(env!("CARGO_BIN_EXE_calicoctl"))
        .args(["--config", "/nonexistent/calicoctl.cfg", "get", "ippools"])
        .env("DATASTORE_TYPE", "etcdv3")
        .env("ETCD_ENDPOINTS", etcd.endpoint.replace("https", "http"))
        .output()
        .expect("calicoctl");
    assert!(!plain.status.success());

    // etcd auth: a root user, then auth on.
    let etcdctl = |args: &[&str]| {
        let out = Command::new("etcdctl")
            .arg(format!("--endpoints={}", etcd.endpoint))
            .arg(format!("--cacert={}", t.ca.display()))
            .arg(format!("--cert={}", t.client_cert.display()))
            .arg(format!("--key={}", t.client_key.display()))
            .args(args)
            .output()
            .expect("etcdctl");
        assert!(out.status.success(), "etcdctl {args:?}: {}", stderr(&out));
    };
    etcdctl(&["user", "add", "root:r00t-pw"]);
    etcdctl(&["auth", "enable"]);
    let out = run(&good, Some(("root", "r00t-pw")), &["get", "ippools"]);
    assert!(stdout(&out).contains("10.77.0.0/16"), "{}", stderr(&out));
    let out = run(&good, Some(("root", "wrong")), &["get", "ippools"]);
    assert!(!out.status.success() && !stdout(&out).contains("10.77.0.0/16"));
}

/// `policy explain` in words: each step at the source and the destination,
/// what decided, the verdict; and its refusals.
#[test]
fn policy_explain_says_what_decided() {
    let b = Backend::embedded();
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("m.yaml");
    std::fs::write(
        &file,
        "apiVersion: projectcalico.org/v3
kind: Profile
metadata: {name: kns.shop}
spec: {ingress: [{action: Allow}], egress: [{action: Allow}]}
---
apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata: {name: node--1-k8s-web-eth0, namespace: shop, labels: {app: web, projectcalico.org/orchestrator: k8s}}
spec: {node: node-1, pod: web, endpoint: eth0, orchestrator: k8s, interfaceName: cali0000000web, ipNetworks: [10.0.0.1/32], profiles: [kns.shop]}
---
apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata: {name: node--2-k8s-db-eth0, namespace: shop, labels: {app: db, projectcalico.org/orchestrator: k8s}}
spec: {node: node-2, pod: db, endpoint: eth0, orchestrator: k8s, interfaceName: cali00000000db, ipNetworks: [10.0.0.2/32], profiles: [kns.shop]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db, namespace: shop}
spec: {podSelector: {matchLabels: {app: db}}, ingress: [{ports: [{port: 5432}]}]}
",
    )
    .expect("write");
    b.ok(&["apply", "-f", file.to_str().expect("path")]);
    let explain = |port: &str| {
        b.ok(&[
            "policy", "explain", "--from", "shop/web", "--to", "shop/db", "--port", port,
        ])
    };
    let text = explain("5432");
    assert!(
        text.contains(
            "shop/web (10.0.0.1, on node-1) -> shop/db (10.0.0.2, on node-2), TCP port 5432"
        ),
        "{text}"
    );
    assert!(
        text.contains("profile kns.shop rule 0 matches: Allow"),
        "{text}"
    );
    assert!(
        text.contains("NetworkPolicy shop/knp.default.db rule 0 matches: Allow"),
        "{text}"
    );
    assert!(text.ends_with("verdict: allowed\n"), "{text}");
    let text = explain("80");
    assert!(
        text.contains("NetworkPolicy shop/knp.default.db: no rule matches"),
        "{text}"
    );
    assert!(text.contains("denied by the end of tier default"), "{text}");
    assert!(
        text.contains("rule 0: destination port 80 is not 5432"),
        "says why the rule does not match: {text}"
    );
    assert!(text.ends_with("verdict: denied\n"), "{text}");
    // To an address outside the cluster: only the source's egress applies.
    let v: Value = serde_json::from_str(&b.ok(&[
        "policy",
        "explain",
        "--from",
        "shop/db",
        "--to",
        "192.0.2.1",
        "--port",
        "443",
        "-o",
        "json",
    ]))
    .expect("json");
    assert_eq!(v["verdict"], "allowed");
    assert!(v["ingress"].is_null());
    // Staged: deleting the Kubernetes policy would let port 80 in; enforced
    // nothing changes.
    let staged = dir.path().join("staged.yaml");
    std::fs::write(
        &staged,
        "apiVersion: projectcalico.org/v3\nkind: StagedKubernetesNetworkPolicy\n\
         metadata: {name: db, namespace: shop}\nspec: {stagedAction: Delete, podSelector: {}}\n",
    )
    .expect("write");
    b.ok(&["apply", "-f", staged.to_str().expect("path")]);
    let table = b.ok(&["get", "stagedkubernetesnetworkpolicies", "-n", "shop"]);
    assert!(
        table.contains("ACTION") && table.contains("Delete"),
        "{table}"
    );
    let text = explain("80");
    let (enforced, pending) = text
        .split_once("pending, with the staged policies applied:")
        .expect("a pending part");
    assert!(enforced.contains("verdict: denied"), "{text}");
    assert!(
        pending.contains("profile kns.shop rule 0 matches: Allow"),
        "{text}"
    );
    assert!(pending.ends_with("verdict: allowed\n"), "{text}");
    for (args, why) in [
        (
            vec!["--from", "shop/nope", "--to", "shop/db"],
            "no workload endpoint for pod shop/nope",
        ),
        (
            vec!["--from", "shop/web", "--to", "fd00::1"],
            "different address families",
        ),
        (
            vec!["--from", "web", "--to", "shop/db"],
            "neither NAMESPACE/POD nor an IP address",
        ),
    ] {
        let mut all = vec!["policy", "explain"];
        all.extend(args);
        let out = b.ctl(&all);
        assert!(!out.status.success());
        assert!(stderr(&out).contains(why), "{}", stderr(&out));
    }
}
