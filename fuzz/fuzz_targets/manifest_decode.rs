//! Manifests from anyone who can run calicoctl: decoding never panics, and
//! what it accepts is stored as JSON that decodes again (what the agents
//! read back).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(resources) = calico_api::decode_manifest(text) {
        for r in resources {
            let stored = serde_json::to_value(&r).expect("a resource encodes");
            calico_api::decode_resource(stored).expect("what was accepted decodes again");
        }
    }
});
