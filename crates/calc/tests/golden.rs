//! Datastore state in, dataplane intents out: each `tests/golden/*.yaml`
//! (resources as manifests; this node is `node-1`) is fed to the graph one
//! resource at a time, and the state its intents describe is compared with
//! the `.out` file. `BLESS=1` rewrites the expected files.

use calico_api::{decode_manifest, Resource};
use calico_calc::{CalcGraph, DesiredState, Update};
use std::fs;
use std::path::Path;

fn run(resources: &[Resource]) -> DesiredState {
    let mut g = CalcGraph::new("node-1");
    let mut state = DesiredState::default();
    for r in resources {
        let intents = g.apply(Update::Put(r.clone()));
        state
            .apply(&intents)
            .expect("intents respect their ordering contract");
    }
    state
}

#[test]
fn golden_states() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let bless = std::env::var_os("BLESS").is_some();
    let mut files: Vec<_> = fs::read_dir(&dir)
        .expect("dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(!files.is_empty());
    let mut failures = Vec::new();
    for f in files {
        let resources =
            decode_manifest(&fs::read_to_string(&f).expect("read")).expect("valid manifest");
        let state = run(&resources);
        let got =
            serde_norway::to_string(&serde_json::to_value(&state).expect("json")).expect("yaml");
        // The same resources in reverse order end in the same state.
        let mut reversed = resources.clone();
        reversed.reverse();
        assert_eq!(
            run(&reversed),
            state,
            "{}: order of arrival changed the outcome",
            f.display()
        );
        let out = f.with_extension("out");
        if bless {
            fs::write(&out, &got).expect("bless");
        } else if fs::read_to_string(&out).unwrap_or_default() != got {
            failures.push(format!("--- {}\n{got}", out.display()));
        }
    }
    assert!(
        failures.is_empty(),
        "golden mismatches (BLESS=1 to accept):\n{}",
        failures.join("\n")
    );
}

/// Deleting everything again leaves nothing in the dataplane.
#[test]
fn deleting_everything_empties_the_dataplane() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    for entry in fs::read_dir(&dir).expect("dir") {
        let f = entry.expect("entry").path();
        if f.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let resources = decode_manifest(&fs::read_to_string(&f).expect("read")).expect("valid");
        let mut g = CalcGraph::new("node-1");
        let mut state = DesiredState::default();
        for r in &resources {
            state
                .apply(&g.apply(Update::Put(r.clone())))
                .expect("ordering");
        }
        for r in &resources {
            let m = r.meta();
            let intents = g.apply(Update::Delete {
                kind: r.kind(),
                namespace: m.namespace.clone(),
                name: m.name.clone(),
            });
            state.apply(&intents).expect("ordering");
        }
        assert_eq!(
            state,
            DesiredState::default(),
            "{} left state behind",
            f.display()
        );
    }
}
