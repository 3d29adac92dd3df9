//! Any bytes: framing and decoding answer (a message or the NOTIFICATION
//! to send) and never panic; what decodes re-encodes to the same message.
#![no_main]
use calico_bgp_codec::{decode, encode, frame, Context};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for four in [false, true] {
        let ctx = Context { four_octet_as: four };
        if let Ok(Some(len)) = frame(data) {
            if let Ok(m) = decode(&data[..len], &ctx) {
                assert_eq!(decode(&encode(&m, &ctx), &ctx), Ok(m));
            }
        }
    }
});
