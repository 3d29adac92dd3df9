//! End to end with a real container runtime: podman (CNI backend, runc)
//! runs containers on a calico network whose plugins are the binaries
//! built here. podman runs inside a node namespace made by the test, so
//! every veth, route and packet stays inside namespaces the test owns.

use calico_api::decode_manifest;
use calico_client::{Client, Clock};
use calico_datastore::Store;
use calico_datastore_sqlite::SqliteStore;
use calico_test_support::{unique, Netns};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

const IMAGE: &str = "localhost/calico-rs-busybox:test";

struct FixedClock;
impl Clock for FixedClock {
    fn now_rfc3339(&self) -> String {
        "2026-11-22T00:00:00Z".into()
    }
}

/// podman, confined to the node namespace and to this test's configuration.
struct Podman {
    node: Netns,
    conf: PathBuf,
    containers: Vec<String>,
}

impl Podman {
    fn run(&self, args: &[&str]) -> Output {
        Command::new("nsenter")
            .arg(format!("--net={}", self.node.path()))
            .arg("podman")
            .args(args)
            .env("CONTAINERS_CONF", &self.conf)
            .output()
            .expect("run podman")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "podman {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        for c in &self.containers {
            let _ = self.run(&["rm", "-f", "-t", "0", c]);
        }
    }
}

fn require(tool: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "{tool} is not installed: run scripts/setup (make test does)"
    );
}

/// A busybox image with a web page, imported from the busybox-static binary.
fn image(dir: &Path) {
    let root = dir.join("rootfs");
    std::fs::create_dir_all(root.join("bin")).expect("rootfs");
    std::fs::create_dir_all(root.join("etc")).expect("rootfs");
    std::fs::create_dir_all(root.join("www")).expect("rootfs");
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).expect("busybox");
    for applet in ["sh", "httpd", "wget", "nc", "sleep", "ip"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).expect("symlink");
    }
    std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").expect("passwd");
    std::fs::write(root.join("etc/group"), "root:x:0:\n").expect("group");
    std::fs::write(root.join("www/index.html"), "hello-calico\n").expect("page");
    let tar = dir.join("rootfs.tar");
    let out = Command::new("tar")
        .arg("-C")
        .arg(&root)
        .arg("-cf")
        .arg(&tar)
        .arg(".")
        .output()
        .expect("tar");
    assert!(out.status.success());
    let out = Command::new("podman")
        .arg("import")
        .arg(&tar)
        .arg(IMAGE)
        .output()
        .expect("podman import");
    assert!(
        out.status.success(),
        "podman import: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn podman_containers_on_a_calico_network() {
    for tool in ["podman", "runc", "nsenter", "busybox"] {
        require(tool);
    }
    let dir = tempfile::tempdir().expect("tempdir");
    image(dir.path());
    let plugins = dir.path().join("plugins");
    let netd = dir.path().join("net.d");
    std::fs::create_dir_all(&plugins).expect("plugins dir");
    std::fs::create_dir_all(&netd).expect("net.d");
    for (bin, name) in [
        (env!("CARGO_BIN_EXE_calico"), "calico"),
        (env!("CARGO_BIN_EXE_calico-ipam"), "calico-ipam"),
    ] {
        std::fs::copy(bin, plugins.join(name)).expect("install plugin");
    }
    let db = dir.path().join("calico.db");
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&db).expect("datastore"));
    let client = Client::new(store.clone(), Arc::new(FixedClock));
    let pool = "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: podman}\nspec: {cidr: 10.93.0.0/16}\n";
    client
        .create(decode_manifest(pool).expect("pool").remove(0))
        .expect("create pool");

    let network = unique("calico-e2e");
    let conflist = serde_json::json!({
        "cniVersion": "1.0.0", "name": network,
        "plugins": [
            {"type": "calico", "nodename": "podman-node", "datastore_path": db, "mtu": 1450, "ipam": {"type": "calico-ipam"}},
            {"type": "portmap", "capabilities": {"portMappings": true}}
        ]
    });
    std::fs::write(
        netd.join(format!("{network}.conflist")),
        conflist.to_string(),
    )
    .expect("conflist");
    let conf = dir.path().join("containers.conf");
    std::fs::write(
        &conf,
        format!(
            "[containers]\ndefault_ulimits = [\"nofile=1024:1024\", \"nproc=1024:1024\"]\n[engine]\nruntime = \"runc\"\n[network]\nnetwork_backend = \"cni\"\ncni_plugin_dirs = [\"{}\", \"/usr/lib/cni\"]\nnetwork_config_dir = \"{}\"\n",
            plugins.display(),
            netd.display()
        ),
    )
    .expect("containers.conf");

    let node = Netns::new("podman-node");
    node.make_node("10.250.7.1/24");
    let web = unique("calico-web");
    let mut podman = Podman {
        node,
        conf,
        containers: vec![web.clone()],
    };
    podman.ok(&[
        "run",
        "-d",
        "--name",
        &web,
        "--network",
        &network,
        IMAGE,
        "httpd",
        "-f",
        "-p",
        "80",
        "-h",
        "/www",
    ]);
    let ip = podman.ok(&[
        "inspect",
        &web,
        "--format",
        &format!("{{{{(index .NetworkSettings.Networks \"{network}\").IPAddress}}}}"),
    ]);
    assert!(
        ip.starts_with("10.93."),
        "address from the calico pool: {ip}"
    );

    // A second container fetches the page from the first over the calico network.
    let client_name = unique("calico-client");
    podman.containers.push(client_name.clone());
    // The server may still be starting: retry for up to five seconds. (busybox-static's
    // wget crashes when given -T or a URL without a port, hence neither.)
    let fetch = format!("i=0; while [ $i -lt 50 ]; do wget -qO- http://{ip}:80/index.html && exit 0; i=$((i+1)); sleep 0.1; done; exit 1");
    let page = podman.ok(&[
        "run",
        "--rm",
        "--name",
        &client_name,
        "--network",
        &network,
        IMAGE,
        "sh",
        "-c",
        &fetch,
    ]);
    assert_eq!(page, "hello-calico");

    let weps = client
        .list(calico_api::Kind::WorkloadEndpoint, None)
        .expect("list")
        .items;
    assert_eq!(
        weps.len(),
        1,
        "the --rm container's endpoint is gone, the server's remains"
    );
    podman.ok(&["rm", "-f", "-t", "0", &web]);
    assert!(
        client
            .list(calico_api::Kind::WorkloadEndpoint, None)
            .expect("list")
            .items
            .is_empty(),
        "endpoints removed"
    );
    let handles = store
        .list(calico_ipam::model::HANDLE_PREFIX)
        .expect("handles");
    assert!(
        handles.items.is_empty(),
        "addresses released: {:?}",
        handles.items.iter().map(|k| &k.key).collect::<Vec<_>>()
    );
    assert!(
        !podman.node.ok(&["ip", "link"]).contains("cali"),
        "veths removed"
    );
}
