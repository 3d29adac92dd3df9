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
