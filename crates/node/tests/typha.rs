//! The policy agent through the fan-out (`calico-node typha`): it enforces
//! what the fan-out serves; when the fan-out dies mid-stream it keeps
//! enforcing what it has (a change written meanwhile does not reach it,
//! so it is not reading the datastore behind the fan-out's back); when a
//! new fan-out comes up it reconnects and catches up with exactly what
//! changed, a deletion included.
// A test against real processes: it waits on the clock.
#![allow(clippy::disallowed_methods)]

use calico_test_support::{add_pod, KillOnDrop, Netns};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn bin(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_calico-node")).with_file_name(name)
}

fn apply(db: &str, dir: &Path, yaml: &str) {
    calico_test_support::ctl_apply(&bin("calicoctl"), db, dir, yaml);
}

fn delete(db: &str, kind: &str, namespace: &str, name: &str) {
    let out = Command::new(bin("calicoctl"))
        .args([
            "--config",
            "/nonexistent",
            "delete",
            kind,
            name,
            "-n",
            namespace,
        ])
        .env("CALICO_DATASTORE_PATH", db)
        .env_remove("DATASTORE_TYPE")
        .output()
        .expect("calicoctl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

const SERVER: &str = "
import socket, threading
def tcp(port):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(('0.0.0.0', port)); s.listen(64)
    while True:
        c, _ = s.accept(); c.sendall(b'ok'); c.close()
for p in (80, 81):
    t = threading.Thread(target=tcp, args=(p,)); t.daemon = True; t.start()
threading.Event().wait()
";

/// true: answered; false: dropped (timed out). A refusal (nothing
/// listening) fails the test.
fn connect(from: &Netns, ip: &str, port: u16) -> bool {
    let code = format!(
        "import socket, sys\ntry:\n    s=socket.create_connection(('{ip}', {port}), timeout=0.5); sys.exit(0 if s.recv(2) == b'ok' else 1)\n\
except (ConnectionRefusedError, ConnectionResetError):\n    sys.exit(2)\nexcept OSError:\n    sys.exit(1)"
    );
    match from.exec(&["python3", "-c", &code]).status.code() {
        Some(0) => true,
        Some(2) => panic!("{ip}:{port} refused: a server is down"),
        _ => false,
    }
}

/// Waits until ports 80 and 81 answer as `want` says.
fn until(b: &Netns, ip: &str, want: (bool, bool), what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while (connect(b, ip, 80), connect(b, ip, 81)) != want {
        assert!(Instant::now() < deadline, "never {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn typha(node: &Netns, db: &str) -> KillOnDrop {
    let child = Command::new("nsenter")
        .arg(format!("--net={}", node.path()))
        .arg(bin("calico-node"))
        .args(["typha", "--listen", "127.0.0.1:5473"])
        .env("CALICO_DATASTORE_PATH", db)
        .env_remove("DATASTORE_TYPE")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("calico-node typha");
    calico_test_support::wait_listening(&node.name, "tcp", 5473);
    KillOnDrop(child)
}

const ALLOW_80: &str = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: a-80, namespace: x}\n\
    spec: {podSelector: {matchLabels: {app: a}}, ingress: [{from: [{podSelector: {matchLabels: {app: b}}}], ports: [{port: 80}]}]}\n";
const ALLOW_81: &str = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: a-81, namespace: x}\n\
    spec: {podSelector: {matchLabels: {app: a}}, ingress: [{from: [{podSelector: {matchLabels: {app: b}}}], ports: [{port: 81}]}]}\n";

#[test]
fn the_agent_follows_the_fan_out_and_survives_its_death() {
    let node = Netns::new("typha-node");
    node.make_node("10.250.8.1/24");
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("calico.db").display().to_string();
    apply(
        &db,
        dir.path(),
        "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: p}\nspec: {cidr: 10.88.0.0/16}\n---\n\
         apiVersion: projectcalico.org/v3\nkind: Profile\nmetadata: {name: kns.x}\nspec: {ingress: [{action: Allow}], egress: [{action: Allow}]}\n",
    );
    let mut servers = Vec::new();
    let mut pod = |name: &str| {
        let ns = Netns::new(&format!("typha-{name}"));
        let conf = json!({"cniVersion": "1.0.0", "name": "k8s-pod-network", "type": "calico", "nodename": "node-1",
            "datastore_path": db, "ipam": {"type": "calico-ipam"},
            "args": {"cni": {"labels": [{"key": "app", "value": name}]}}});
        let ip = add_pod(
            &bin("calico"),
            &node.name,
            &ns,
            &conf.to_string(),
            "x",
            name,
        );
        let server = Command::new("ip")
            .args(["netns", "exec", &ns.name, "python3", "-c", SERVER])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("server");
        servers.push(KillOnDrop(server));
        for port in [80, 81] {
            calico_test_support::wait_listening(&ns.name, "tcp", port);
        }
        (ns, ip)
    };
    let (_a, ip_a) = pod("a");
    let (b, _) = pod("b");
    apply(&db, dir.path(), ALLOW_80);

    let fan_out = typha(&node, &db);
    let _agent = calico_test_support::felix_daemon(
        &bin("calico-node"),
        &node.path(),
        &db,
        &[("FELIX_TYPHAADDR", "127.0.0.1:5473")],
    );
    until(
        &b,
        &ip_a,
        (true, false),
        "enforced the policy served by the fan-out",
    );

    // The fan-out dies; the agent keeps enforcing. A change written now
    // does not reach it: it reads through the fan-out only.
    drop(fan_out);
    apply(&db, dir.path(), ALLOW_81);
    delete(&db, "networkpolicy", "x", "knp.default.a-80");
    let quiet = Instant::now() + Duration::from_secs(3);
    while Instant::now() < quiet {
        assert_eq!(
            (connect(&b, &ip_a, 80), connect(&b, &ip_a, 81)),
            (true, false),
            "the agent changed its policy without its fan-out"
        );
    }

    // A new fan-out: the agent reconnects and takes what changed, the
    // deletion included.
    let _fan_out = typha(&node, &db);
    until(
        &b,
        &ip_a,
        (false, true),
        "caught up after the fan-out came back",
    );
}
