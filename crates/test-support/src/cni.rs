//! Calling a CNI plugin exactly as a container runtime does.

use std::io::Write;
use std::process::{Command, Output, Stdio};

/// The CNI_* environment of one invocation.
#[derive(Debug, Clone, Copy)]
pub struct CniCall<'a> {
    pub command: &'a str,
    pub container: &'a str,
    /// Path of the container's network namespace ("" for none).
    pub netns: &'a str,
    pub ifname: &'a str,
    pub args: &'a str,
}

/// Runs `program` (the plugin, possibly wrapped in `ip netns exec`) with the
/// call's environment and `conf` on stdin; returns what it printed.
pub fn run_cni(mut program: Command, call: &CniCall<'_>, conf: &str) -> Output {
    let mut child = program
        .env("CNI_COMMAND", call.command)
        .env("CNI_CONTAINERID", call.container)
        .env("CNI_NETNS", call.netns)
        .env("CNI_IFNAME", call.ifname)
        .env("CNI_ARGS", call.args)
        .env("CNI_PATH", "/usr/lib/cni")
        .env_remove("DATASTORE_TYPE")
        .env_remove("CALICO_DATASTORE_PATH")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the CNI plugin");
    child
        .stdin
        .take()
        .expect("plugin stdin")
        .write_all(conf.as_bytes())
        .expect("write the network configuration");
    child.wait_with_output().expect("wait for the CNI plugin")
}

/// Runs an ADD that must succeed and returns the first address of its
/// result, without the prefix length (`10.0.0.5`).
pub fn cni_add(program: Command, call: &CniCall<'_>, conf: &str) -> String {
    let out = run_cni(program, call, conf);
    assert!(
        out.status.success(),
        "ADD failed: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let result: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("the ADD result is JSON");
    let address = result["ips"][0]["address"]
        .as_str()
        .expect("the result has an address");
    address.split('/').next().unwrap_or(address).to_string()
}

/// Wires `pod` as a container runtime does for Kubernetes pod
/// `k8s_namespace/name`: `plugin` (the calico CNI binary) runs inside the
/// node's namespace `node` with `conf`; returns the pod's address.
pub fn add_pod(
    plugin: &std::path::Path,
    node: &str,
    pod: &crate::Netns,
    conf: &str,
    k8s_namespace: &str,
    name: &str,
) -> String {
    let mut program = Command::new("ip");
    program.args(["netns", "exec", node]).arg(plugin);
    let container = crate::unique("c").replace('-', "");
    let args = format!("K8S_POD_NAMESPACE={k8s_namespace};K8S_POD_NAME={name}");
    let call = CniCall {
        command: "ADD",
        container: &container,
        netns: &pod.path(),
        ifname: "eth0",
        args: &args,
    };
    cni_add(program, &call, conf)
}

/// A TCP server for pods: on ports 80 and 81 it answers every connection
/// with `ok` and closes it.
pub const ECHO_SERVER: &str = "
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

/// A pod of Kubernetes namespace `k8s_namespace` wired by the `calico`
/// plugin (`plugin`) on node namespace `node` against the embedded
/// datastore `db`, labelled `app=<name>`, running [`ECHO_SERVER`] (ready
/// when this returns). Its namespace is called `<tag>-<name>`. Returns the
/// pod, its address and the server (stopped when dropped).
pub fn echo_pod(
    plugin: &std::path::Path,
    node: &str,
    db: &str,
    tag: &str,
    k8s_namespace: &str,
    name: &str,
) -> (crate::Netns, String, crate::KillOnDrop) {
    let ns = crate::Netns::new(&format!("{tag}-{name}"));
    let ipam = serde_json::json!({"type": "calico-ipam"});
    let ip = labelled_pod(plugin, node, db, &ns, (k8s_namespace, name), ipam);
    let server = Command::new("ip")
        .args(["netns", "exec", &ns.name, "python3", "-c", ECHO_SERVER])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("server");
    let server = crate::KillOnDrop(server);
    for port in [80, 81] {
        crate::wait_listening(&ns.name, "tcp", port);
    }
    (ns, ip, server)
}

/// Pod `k8s_namespace/name` wired by the `calico` plugin on node
/// namespace `node` (node `node-1`) against the embedded datastore `db`
/// with `ipam` (the IPAM section of the network configuration), labelled
/// `app=<name>`, in namespace `ns`. Returns its (first) address.
pub fn labelled_pod(
    plugin: &std::path::Path,
    node: &str,
    db: &str,
    ns: &crate::Netns,
    (k8s_namespace, name): (&str, &str),
    ipam: serde_json::Value,
) -> String {
    let conf = serde_json::json!({"cniVersion": "1.0.0", "name": "k8s-pod-network", "type": "calico",
        "nodename": "node-1", "datastore_path": db, "ipam": ipam,
        "args": {"cni": {"labels": [{"key": "app", "value": name}]}}});
    add_pod(plugin, node, ns, &conf.to_string(), k8s_namespace, name)
}

/// Connects from a pod to `ip:port` (TCP, 0.5 s): true when [`ECHO_SERVER`]
/// answered, false when the connection was dropped (timed out). A refusal
/// means a server is down, never a policy: it fails the test.
pub fn echo_connect(from: &crate::Netns, ip: &str, port: u16) -> bool {
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
