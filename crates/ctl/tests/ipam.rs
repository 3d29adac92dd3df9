//! calicoctl ipam against allocations made through the IPAM library.

use calico_client::Clock;
use calico_datastore_sqlite::SqliteStore;
use calico_ipam::{AutoAssign, Ipam};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;

struct FixedClock;
impl Clock for FixedClock {
    fn now_rfc3339(&self) -> String {
        "2026-01-01T00:00:00Z".into()
    }
}

fn ctl(db: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_calicoctl"))
        .args(["--config", "/nonexistent"])
        .args(args)
        .env_remove("DATASTORE_TYPE")
        .env("CALICO_DATASTORE_PATH", db)
        .output()
        .expect("run calicoctl")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn show_check_release_configure() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("calico.db");
    let pool = dir.path().join("pool.yaml");
    std::fs::write(&pool, "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: p}\nspec: {cidr: 10.5.0.0/24, blockSize: 28}\n").expect("write");
    assert!(ctl(&db, &["apply", "-f", pool.to_str().expect("path")])
        .status
        .success());

    let ipam = Ipam::new(
        Arc::new(SqliteStore::open(&db).expect("open")),
        Arc::new(FixedClock),
    );
    let attrs = BTreeMap::from([
        ("pod".to_string(), "web-1".to_string()),
        ("namespace".to_string(), "shop".to_string()),
        ("timestamp".to_string(), "2026-01-01T00:00:00Z".to_string()),
    ]);
    let got = ipam
        .auto_assign(&AutoAssign {
            handle: "k8s-pod-network.c1".into(),
            node: "n1".into(),
            num_v4: 3,
            attrs,
            ..Default::default()
        })
        .expect("assign");
    let ip = got.v4[0].addr().to_string();

    let show = ctl(&db, &["ipam", "show", "--show-blocks"]);
    assert!(show.status.success());
    let out = text(&show);
    assert!(out.contains("| IP Pool  | 10.5.0.0/24"), "{out}");
    assert!(out.contains("| 256       | 3 (1%)"), "{out}");
    assert!(out.contains("(n1)"), "{out}");

    let who = text(&ctl(&db, &["ipam", "show", "--ip", &ip]));
    assert!(
        who.contains(&format!("IP {ip} is in use"))
            && who.contains("pod: web-1")
            && who.contains("Handle: k8s-pod-network.c1"),
        "{who}"
    );

    // No workload endpoint exists for these addresses: they are leaks.
    let check = ctl(&db, &["ipam", "check"]);
    assert_eq!(check.status.code(), Some(1), "{}", text(&check));
    assert!(
        text(&check).contains("Found 3 leaked IPs"),
        "{}",
        text(&check)
    );

    let rel = ctl(&db, &["ipam", "release", "--ip", &ip]);
    assert!(rel.status.success(), "{}", text(&rel));
    assert!(text(&ctl(&db, &["ipam", "show", "--ip", &ip])).contains("is not assigned"));
    let again = ctl(&db, &["ipam", "release", "--ip", &ip]);
    assert_eq!(
        again.status.code(),
        Some(1),
        "releasing a free address is reported"
    );

    let gc = ctl(&db, &["ipam", "gc", "--grace", "1m"]);
    assert!(text(&gc).contains("Released 2 leaked IPs"), "{}", text(&gc));
    let clean = ctl(&db, &["ipam", "check"]);
    assert!(clean.status.success(), "{}", text(&clean));

    let conf = ctl(&db, &["ipam", "configure", "--strictaffinity=true"]);
    assert!(
        text(&conf).contains("Successfully set StrictAffinity to: true"),
        "{}",
        text(&conf)
    );
    assert!(ipam.config().expect("config").strict_affinity);
}

/// Deleting a pool as Calico does: refused while in use (unless forced),
/// its empty blocks and affinities released; a re-created pool of another
/// block size never overlaps the blocks left behind; `ipam check` sees an
/// address held twice.
#[test]
fn pool_delete_and_recreate_never_duplicate_an_address() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("calico.db");
    let apply = |yaml: &str| {
        let f = dir.path().join("m.yaml");
        std::fs::write(&f, yaml).expect("write");
        ctl(&db, &["apply", "-f", f.to_str().expect("path")])
    };
    let pool = |size: u8| {
        format!("apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {{name: p}}\nspec: {{cidr: 10.6.0.0/24, blockSize: {size}}}\n")
    };
    assert!(apply(&pool(26)).status.success());
    let ipam = Ipam::new(
        Arc::new(SqliteStore::open(&db).expect("open")),
        Arc::new(FixedClock),
    );
    let assign = |handle: &str, node: &str| {
        ipam.auto_assign(&AutoAssign {
            handle: handle.into(),
            node: node.into(),
            num_v4: 1,
            ..Default::default()
        })
    };
    let held = assign("h1", "n1").expect("assign").v4[0].addr();
    assign("h2", "n2").expect("assign");
    ipam.release_handle("h2").expect("release");

    // In use: refused, nothing changed.
    let del = ctl(&db, &["delete", "ippool", "p"]);
    assert!(!del.status.success());
    assert!(text(&del).contains("in use"), "{}", text(&del));
    assert!(text(&ctl(&db, &["get", "ippool", "p", "-o", "yaml"])).contains("10.6.0.0/24"));
    // Forced: the pool goes, n2's empty block and affinity with it; n1's
    // in-use block stays (and is reported outside any pool).
    let del = ctl(&db, &["delete", "ippool", "p", "--force"]);
    assert!(del.status.success(), "{}", text(&del));
    assert_eq!(ipam.node_blocks("n2", 4).expect("blocks").len(), 0);
    assert_eq!(ipam.blocks(4).expect("blocks").len(), 1);
    let check = text(&ctl(&db, &["ipam", "check"]));
    assert!(check.contains("is in no IP pool"), "{check}");
    assert!(!check.contains("affinity"), "{check}");

    // Re-created with another block size over the left block: refused.
    let again = apply(&pool(28));
    assert!(!again.status.success());
    assert!(
        text(&again).contains("left by a deleted pool"),
        "{}",
        text(&again)
    );
    // With the same size it may come back, and never hands out `held`.
    assert!(apply(&pool(26)).status.success());
    for i in 0..250 {
        match assign(&format!("x{i}"), &format!("m{}", i % 3)) {
            Ok(got) => assert_ne!(got.v4[0].addr(), held, "{held} handed out twice"),
            Err(_) => break,
        }
    }
    let check = ctl(&db, &["ipam", "check"]);
    assert!(
        !text(&check).contains("overlap") && !text(&check).contains("allocated 2 times"),
        "{}",
        text(&check)
    );

    // An empty pool deletes without force, and leaves nothing behind.
    let dir2 = tempfile::tempdir().expect("tempdir");
    let db2 = dir2.path().join("calico.db");
    let f = dir2.path().join("m.yaml");
    std::fs::write(&f, pool(26)).expect("write");
    assert!(ctl(&db2, &["apply", "-f", f.to_str().expect("path")])
        .status
        .success());
    let ipam2 = Ipam::new(
        Arc::new(SqliteStore::open(&db2).expect("open")),
        Arc::new(FixedClock),
    );
    ipam2
        .auto_assign(&AutoAssign {
            handle: "h".into(),
            node: "n1".into(),
            num_v4: 1,
            ..Default::default()
        })
        .expect("assign");
    ipam2.release_handle("h").expect("release");
    let del = ctl(&db2, &["delete", "ippool", "p"]);
    assert!(del.status.success(), "{}", text(&del));
    assert_eq!(ipam2.blocks(4).expect("blocks").len(), 0);
    let check = ctl(&db2, &["ipam", "check"]);
    assert!(check.status.success(), "{}", text(&check));
}

/// Overlapping blocks and an address allocated twice are reported.
#[test]
fn check_reports_overlapping_blocks_and_double_allocations() {
    use calico_datastore::Store;
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("calico.db");
    let f = dir.path().join("m.yaml");
    std::fs::write(&f, "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: p}\nspec: {cidr: 10.7.0.0/24, blockSize: 26}\n").expect("write");
    assert!(ctl(&db, &["apply", "-f", f.to_str().expect("path")])
        .status
        .success());
    let store = Arc::new(SqliteStore::open(&db).expect("open"));
    let ipam = Ipam::new(store.clone(), Arc::new(FixedClock));
    let ip = ipam
        .auto_assign(&AutoAssign {
            handle: "a".into(),
            node: "n1".into(),
            num_v4: 1,
            ..Default::default()
        })
        .expect("assign")
        .v4[0];
    // A /28 over the same address, written as an old bug would have.
    let net: calico_net::IpNet = format!("{}/28", ip.addr())
        .parse::<calico_net::IpNet>()
        .expect("net")
        .trunc();
    let mut block = calico_ipam::Block::new(net, Some("host:n2".into()));
    let attr = calico_ipam::Attribute {
        handle: Some("b".into()),
        secondary: None,
    };
    block.allocate_ip(ip.addr(), &attr).expect("allocate");
    store
        .create(
            &calico_ipam::model::block_key(&net),
            &serde_json::to_vec(&block).expect("json"),
        )
        .expect("create");
    let check = text(&ctl(&db, &["ipam", "check"]));
    assert!(check.contains("overlap"), "{check}");
    assert!(
        check.contains(&format!("address {} is allocated 2 times", ip.addr())),
        "{check}"
    );
}
