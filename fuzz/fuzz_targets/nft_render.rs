//! Records as a datastore may hold them (manifests decoded, and workload
//! endpoints whose interface name is any string) through the calculation
//! graph to the nft renderer: never a panic, never a broken ordering
//! contract, and no interface that is not a valid name in the table.
#![no_main]

use calico_api::Resource;
use calico_calc::{CalcGraph, DesiredState, Update};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    // First line: an interface name given to every endpoint (past
    // validation, as a buggy writer would); the rest: a manifest.
    let (iface, manifest) = text.split_once('\n').unwrap_or(("", text));
    let Ok(resources) = calico_api::decode_manifest(manifest) else { return };
    let mut g = CalcGraph::new("node-1");
    let mut state = DesiredState::default();
    let updates: Vec<Update> = resources
        .into_iter()
        .map(|r| match r {
            Resource::WorkloadEndpoint(mut w) if !iface.is_empty() => {
                w.spec.interface_name = iface.to_string();
                w.spec.node = "node-1".into();
                Update::Put(Resource::WorkloadEndpoint(w))
            }
            r => Update::Put(r),
        })
        .collect();
    state.apply(&g.apply_all(updates)).expect("ordering contract");
    let text = calico_dataplane::render(&state);
    if calico_api::interface_name(iface).is_err() && !iface.is_empty() {
        assert!(!text.contains(&format!("\"{iface}\"")), "{iface:?} reached the table");
    }
});
