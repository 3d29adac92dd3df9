//! Any body behind a valid UPDATE header: decoded or refused with a
//! NOTIFICATION, never a panic; what decodes round-trips.
#![no_main]
use calico_bgp_codec::{decode, encode, Context};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() > 4096 - 19 {
        return;
    }
    let mut msg = vec![0xff; 16];
    msg.extend_from_slice(&((19 + data.len()) as u16).to_be_bytes());
    msg.push(2);
    msg.extend_from_slice(data);
    for four in [false, true] {
        let ctx = Context { four_octet_as: four };
        if let Ok(m) = decode(&msg, &ctx) {
            assert_eq!(decode(&encode(&m, &ctx), &ctx), Ok(m));
        }
    }
});
