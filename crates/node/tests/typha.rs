//! The policy agent through the fan-out (`calico-node typha`): it enforces
//! what the fan-out serves; when the fan-out dies mid-stream it keeps
//! enforcing what it has (a change written meanwhile does not reach it,
//! so it is not reading the datastore behind the fan-out's back); when a
//! new fan-out comes up it reconnects and catches up with exactly what
//! changed, a deletion included.
// A test against real processes: it waits on the clock.
#![allow(clippy::disallowed_methods)]

use calico_test_support::{echo_connect as connect, KillOnDrop, Netns};
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
    calico_test_support::ctl_delete(&bin("calicoctl"), db, kind, namespace, name);
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
    let (node, dir, db) = calico_test_support::node_with_datastore(
        &bin("calicoctl"),
        "typha",
        "10.250.8.1/24",
        "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: p}\nspec: {cidr: 10.88.0.0/16}\n---\n\
         apiVersion: projectcalico.org/v3\nkind: Profile\nmetadata: {name: kns.x}\nspec: {ingress: [{action: Allow}], egress: [{action: Allow}]}\n",
    );
    let pod = |name: &str| {
        calico_test_support::echo_pod(&bin("calico"), &node.name, &db, "typha", "x", name)
    };
    let (_a, ip_a, _sa) = pod("a");
    let (b, _, _sb) = pod("b");
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
