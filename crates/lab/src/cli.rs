//! The command line: subcommands and their arguments.

use super::*;

#[derive(Parser, Debug)]
#[command(
    name = "calico-lab",
    version,
    about = "A calico-rs cluster inside network namespaces"
)]
pub(crate) struct Cli {
    /// The lab's name (labs with different names can run side by side).
    #[arg(
        long = "lab",
        env = "CALICO_LAB_NAME",
        default_value = "lab",
        global = true
    )]
    pub(crate) lab_name: String,
    /// Where the lab keeps its state, logs and datastore.
    #[arg(long, env = "CALICO_LAB_STATE", global = true)]
    pub(crate) state: Option<PathBuf>,
    #[command(subcommand)]
    pub(crate) command: Cmd,
}

#[derive(Subcommand, Debug)]
pub(crate) enum Cmd {
    /// Build the cluster: fabric, nodes, agents.
    Up {
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        #[arg(long, default_value = "embedded", value_parser = ["embedded", "etcd"])]
        datastore: String,
        /// How pods on different nodes reach each other: BGP-routed
        /// (`none`), VXLAN always, or VXLAN only across subnets.
        #[arg(long, default_value = "none", value_parser = ["none", "vxlan", "vxlan-crosssubnet"])]
        encap: String,
        /// Underlay subnets (10.250.S.0/24) the nodes are spread over, in
        /// order; the fabric routes between them but not pod addresses.
        #[arg(long, default_value_t = 1)]
        subnets: usize,
        /// Seconds between the nodes' flushes of their flow records to the
        /// flow service (Calico's `flowLogsFlushInterval`).
        #[arg(long, default_value_t = 15)]
        flow_flush: u64,
        /// `dual`: IPv6 beside IPv4 (node addresses, an IPv6 pool, pods
        /// with both, BGP for both families). One subnet, `--encap none`.
        #[arg(long, default_value = "ipv4", value_parser = ["ipv4", "dual"])]
        ip_family: String,
        /// Run a fan-out (`calico-node typha`, 10.250.0.251:5473) and have
        /// every node's agents read the datastore through it.
        #[arg(long)]
        typha: bool,
    },
    /// Remove every namespace, link, process and file the lab made.
    Down,
    /// Namespaces (Kubernetes-style, stored as Calico does: profile kns.NAME).
    #[command(subcommand)]
    Ns(NsCmd),
    /// Pods, wired by the CNI plugin.
    #[command(subcommand)]
    Pod(PodCmd),
    /// Whether A reaches B (pods as NAMESPACE/NAME, nodes as node-N, or
    /// `external`, the lab's host outside the cluster; nodes and the
    /// external host serve TCP and UDP 80): prints `allowed`, `refused`
    /// (nothing listens: a reset or port unreachable came back) or
    /// `denied` (dropped: nothing came back); to a node or `external`,
    /// also the address it saw the connection come from (NAT shows there).
    Probe {
        from: String,
        to: String,
        #[arg(long)]
        port: u16,
        #[arg(long, default_value = "TCP", value_parser = ["TCP", "UDP"])]
        protocol: String,
        /// How long to wait for an answer before calling it denied.
        #[arg(long, default_value_t = 1000)]
        timeout_ms: u64,
        /// Over IPv6 (a dual-stack lab).
        #[arg(long)]
        ipv6: bool,
    },
    /// Nodes: restart their agents.
    #[command(subcommand)]
    Node(NodeCmd),
    /// Probe every ordered pair of pods.
    Matrix {
        #[arg(long)]
        port: u16,
        #[arg(long, default_value = "TCP", value_parser = ["TCP", "UDP"])]
        protocol: String,
        #[arg(long)]
        json: bool,
        /// Over IPv6 (a dual-stack lab).
        #[arg(long)]
        ipv6: bool,
    },
    /// The datastore: `restart` stops and starts the lab's etcd.
    #[command(subcommand)]
    Datastore(DatastoreCmd),
    /// Flow records from the lab's flow service: `calicoctl flows` with
    /// these arguments (e.g. `-- --action deny`); `--url` prints the
    /// address of its API and web UI.
    Flows {
        #[arg(long)]
        url: bool,
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// The flow service: stop it (the nodes buffer), start it again.
    #[command(subcommand)]
    FlowService(FlowServiceCmd),
    /// Wait until every node's dataplane has applied the latest datastore revision.
    Sync {
        #[arg(long, default_value_t = 60)]
        timeout: u64,
    },
    /// Run a command inside a pod (`ns/name`) or a node (`node-N`).
    Exec {
        pod: String,
        #[arg(last = true, required = true)]
        cmd: Vec<String>,
    },
    /// Print the environment for calicoctl (datastore; BGP status of a node).
    Env {
        #[arg(long)]
        node: Option<String>,
    },
    /// The lab's nodes and pods.
    Show {
        #[arg(long)]
        json: bool,
    },
    /// (inside a pod) serve TCP and UDP echo.
    #[command(hide = true)]
    Serve {
        #[arg(long, value_delimiter = ',')]
        tcp: Vec<u16>,
        #[arg(long, value_delimiter = ',')]
        udp: Vec<u16>,
        /// Answer `ok <the address the connection came from>`.
        #[arg(long)]
        tell_peer: bool,
    },
    /// (internal) forward connections into a namespace.
    #[command(hide = true)]
    Proxy {
        #[arg(long)]
        netns: String,
        #[arg(long)]
        to: String,
        #[arg(long)]
        listen: String,
    },
    /// (inside a pod) connect and expect `ok`.
    #[command(hide = true)]
    Connect {
        addr: String,
        protocol: String,
        #[arg(long, default_value_t = 1000)]
        timeout_ms: u64,
    },
}

#[derive(Subcommand, Debug)]
pub(crate) enum NsCmd {
    Create {
        name: String,
        #[arg(long, default_value = "")]
        labels: String,
    },
    /// Replace the namespace's labels.
    Label { name: String, labels: String },
    /// Delete the namespace with its pods (their addresses released, their
    /// endpoints and interfaces gone) and its profile, as Kubernetes does.
    Delete { name: String },
}

#[derive(Subcommand, Debug)]
pub(crate) enum DatastoreCmd {
    /// Stop the lab's etcd and start it again on the same data.
    Restart,
}

#[derive(Subcommand, Debug)]
pub(crate) enum FlowServiceCmd {
    Stop,
    Start,
}

#[derive(Subcommand, Debug)]
pub(crate) enum NodeCmd {
    /// Restart a node's calico-node agents as a crash or an upgrade would:
    /// the policy agent stops (its rules stay), the BGP speaker is killed
    /// (peers keep its routes: graceful restart); then both start again.
    Restart { node: String },
}

#[derive(Subcommand, Debug)]
pub(crate) enum PodCmd {
    Create {
        /// NAMESPACE/NAME
        pod: String,
        #[arg(long)]
        node: Option<String>,
        #[arg(long, default_value = "")]
        labels: String,
        /// NAME:PORT/PROTO, repeatable (default: 80/TCP and 80/UDP).
        #[arg(long = "port")]
        ports: Vec<String>,
    },
    /// Replace the pod's labels.
    Label {
        pod: String,
        labels: String,
    },
    Delete {
        pod: String,
    },
}
