//! Data-driven tests: each `tests/golden/*.yaml` manifest is decoded
//! (defaults, validation, Kubernetes conversion) and the result, resources
//! as YAML or the error text, is compared with the `.out` file beside it.
//! Run with `BLESS=1` to rewrite the expected files.

use std::fs;
use std::path::{Path, PathBuf};

fn render(input: &str) -> String {
    match calico_api::decode_manifest(input) {
        Ok(resources) => resources
            .iter()
            .map(|r| calico_api::to_yaml(r).expect("a resource prints as YAML"))
            .collect::<Vec<_>>()
            .join("---\n"),
        Err(e) => format!("ERROR\n{e}\n"),
    }
}

fn cases(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .expect("golden dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

#[test]
fn golden_manifests() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let bless = std::env::var_os("BLESS").is_some();
    let mut failures = Vec::new();
    let files = cases(&dir);
    assert!(
        files.len() >= 5,
        "golden cases missing in {}",
        dir.display()
    );
    for input_path in files {
        let input = fs::read_to_string(&input_path).expect("read input");
        let got = render(&input);
        let out_path = input_path.with_extension("out");
        if bless {
            fs::write(&out_path, &got).expect("bless");
            continue;
        }
        let want = fs::read_to_string(&out_path).unwrap_or_default();
        if got != want {
            failures.push(format!(
                "--- {}\nwant:\n{want}\ngot:\n{got}",
                out_path.display()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "golden mismatches (BLESS=1 to accept):\n{}",
        failures.join("\n")
    );
}

/// The example manifest is written the way it reads back: decoding and
/// re-encoding it changes nothing.
#[test]
fn example_manifest_is_a_fixed_point() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/manifests/cluster.yaml");
    let text = fs::read_to_string(path).expect("example manifest");
    let decoded = calico_api::decode_manifest(&text).expect("example manifest is valid");
    let kinds: std::collections::BTreeSet<_> = decoded.iter().map(|r| r.kind()).collect();
    assert_eq!(
        kinds.len(),
        calico_api::Kind::ALL.len(),
        "every kind appears in the example"
    );
    let originals = calico_api::documents(&text).expect("yaml");
    assert_eq!(originals.len(), decoded.len());
    for (orig, res) in originals.iter().zip(&decoded) {
        let round = serde_json::to_value(res).expect("json");
        assert_eq!(
            &round,
            orig,
            "{} does not read back as written",
            res.display_name()
        );
    }
}
