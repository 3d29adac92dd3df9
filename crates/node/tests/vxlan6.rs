//! IPv6 VXLAN: two nodes on one fabric running `calico-node felix` against
//! one embedded datastore, an IPv6 pool with vxlanMode Always and nothing
//! else routing the pod network. Each agent takes a tunnel address from
//! IPAM, records it on its Node, builds `vxlan-v6.calico`, and routes the
//! other node's block through it; IPv6-only pods wired by the CNI plugin
//! (at the MTU the agent detected) ping each other across the tunnel.

use calico_test_support::{add_pod, Fabric, KillOnDrop, Netns};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

fn bin(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_calico-node")).with_file_name(name)
}

fn wait(dir: &Path, what: &str, ok: impl FnMut() -> bool) {
    calico_test_support::wait_logged(dir, what, Duration::from_secs(30), ok);
}

fn calicoctl(db: &str, args: &[&str], stdin: &str) -> String {
    let out = calico_test_support::calicoctl(&bin("calicoctl"), Path::new(db), args, stdin);
    assert!(
        out.status.success(),
        "calicoctl {args:?}: {}",
        calico_test_support::output_text(&out)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn ipv6_pods_on_two_nodes_reach_each_other_through_vxlan() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("calico.db").display().to_string();
    let fabric = Fabric::new("vx6-fab");
    let mut manifest = String::from(
        "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: v6}\nspec: {cidr: 'fd00:88::/48', vxlanMode: Always}\n---\n\
         apiVersion: projectcalico.org/v3\nkind: Profile\nmetadata: {name: kns.default}\nspec: {ingress: [{action: Allow}], egress: [{action: Allow}]}\n",
    );
    let nodes: Vec<(Netns, String)> = (1..=2)
        .map(|i| {
            let ns = Netns::new(&format!("vx6-n{i}"));
            fabric.attach(&ns, &format!("10.250.41.{i}/24"));
            let v6 = format!("fd00:250:41::{i}/64");
            ns.ok(&["ip", "-6", "addr", "add", &v6, "dev", "eth0", "nodad"]);
            ns.ok(&["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"]);
            let name = format!("n{i}");
            manifest.push_str(&format!(
                "---\napiVersion: projectcalico.org/v3\nkind: Node\nmetadata: {{name: {name}}}\nspec: {{bgp: {{ipv4Address: 10.250.41.{i}/24, ipv6Address: '{v6}'}}}}\n"
            ));
            (ns, name)
        })
        .collect();
    calicoctl(&db, &["apply", "-f", "-"], &manifest);
    let mtu_file = |name: &str| dir.path().join(format!("{name}-mtu"));
    let _agents: Vec<KillOnDrop> = nodes
        .iter()
        .map(|(ns, name)| {
            let log =
                std::fs::File::create(dir.path().join(format!("{name}-felix.log"))).expect("log");
            KillOnDrop(
                Command::new("nsenter")
                    .arg(format!("--net={}", ns.path()))
                    .arg(bin("calico-node"))
                    .args(["felix", "--node", name, "--health-port", "0"])
                    .env("CALICO_DATASTORE_PATH", &db)
                    .env("CALICO_MTU_FILE", mtu_file(name))
                    .env_remove("DATASTORE_TYPE")
                    .stdout(Stdio::null())
                    .stderr(log)
                    .spawn()
                    .expect("calico-node"),
            )
        })
        .collect();
    for (ns, name) in &nodes {
        wait(dir.path(), &format!("{name}'s tunnel"), || {
            ns.exec(&["ip", "-6", "addr", "show", "dev", "vxlan-v6.calico"])
                .status
                .success()
                && std::fs::read_to_string(mtu_file(name)).is_ok_and(|m| m.trim() == "1430")
        });
        let node = calicoctl(&db, &["get", "node", name, "-o", "yaml"], "");
        assert!(
            node.contains("ipv6VXLANTunnelAddr: fd00:88:")
                && node.contains("vxlanTunnelMACAddrV6: 66:"),
            "{node}"
        );
        let link = ns.ok(&["ip", "-d", "link", "show", "vxlan-v6.calico"]);
        assert!(
            link.contains("vxlan id 4096") && link.contains("mtu 1430"),
            "{link}"
        );
        assert!(
            link.contains(&format!("local fd00:250:41::{}", &name[1..])),
            "{link}"
        );
    }

    let pods: Vec<(Netns, String)> = nodes
        .iter()
        .map(|(ns, name)| {
            let pod = Netns::new(&format!("vx6-pod-{name}"));
            let conf = json!({"cniVersion": "1.0.0", "name": "k8s-pod-network", "type": "calico",
                "nodename": name, "datastore_path": db, "mtu_file": mtu_file(name),
                "ipam": {"type": "calico-ipam", "assign_ipv4": "false", "assign_ipv6": "true"}});
            let ip = add_pod(
                &bin("calico"),
                &ns.name,
                &pod,
                &conf.to_string(),
                "default",
                &format!("pod-{name}"),
            );
            (pod, ip)
        })
        .collect();
    assert!(pods[0]
        .0
        .ok(&["ip", "link", "show", "eth0"])
        .contains("mtu 1430"));
    let (n1, _) = &nodes[0];
    let peer = pods[1].1.clone();
    wait(
        dir.path(),
        "n1 to route n2's pods through the tunnel",
        || {
            n1.exec(&["ip", "-6", "route", "get", &peer])
                .status
                .success()
                && String::from_utf8_lossy(&n1.exec(&["ip", "-6", "route", "get", &peer]).stdout)
                    .contains("dev vxlan-v6.calico")
        },
    );
    pods[0].0.ok(&["ping", "-6", "-c2", "-W3", &pods[1].1]);
    pods[1].0.ok(&["ping", "-6", "-c2", "-W3", &pods[0].1]);

    // FelixConfiguration overrides the detected MTU (the agents restart
    // with the new settings, as Felix does).
    calicoctl(
        &db,
        &["apply", "-f", "-"],
        "apiVersion: projectcalico.org/v3\nkind: FelixConfiguration\nmetadata: {name: default}\nspec: {vxlanMTUV6: 1400}\n",
    );
    for (ns, name) in &nodes {
        wait(dir.path(), &format!("{name}'s tunnel at MTU 1400"), || {
            String::from_utf8_lossy(&ns.exec(&["ip", "link", "show", "vxlan-v6.calico"]).stdout)
                .contains("mtu 1400")
                && std::fs::read_to_string(mtu_file(name)).is_ok_and(|m| m.trim() == "1400")
        });
    }
    pods[0].0.ok(&["ping", "-6", "-c1", "-W3", &pods[1].1]);
}
