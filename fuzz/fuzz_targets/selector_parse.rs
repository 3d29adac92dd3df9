//! The selector parser must never panic; what it accepts must print to a
//! canonical form that parses back to the same tree.
#![no_main]

use calico_selector::Selector;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(sel) = Selector::parse(text) {
        let printed = sel.to_string();
        let again = Selector::parse(&printed).expect("canonical form parses");
        assert_eq!(again, sel, "round trip of {printed}");
    }
});
