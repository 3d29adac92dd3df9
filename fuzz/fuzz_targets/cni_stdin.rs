//! Whatever a runtime (or anyone who can write a CNI config) puts on the
//! plugin's stdin or in CNI_ARGS: parsing and every derived setting must
//! never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(conf) = calico_cni::conf::NetConf::parse(data) {
        let _ = conf.mtu();
        let _ = conf.node(&|_| None);
        let _ = conf.datastore(&|_| None);
        let _ = conf.ipam();
        let _ = conf.embedded_path();
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = calico_cni::env::parse_args(text);
    }
});
