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
