//! See `huitong::fuzzing::hl7v3_dispatch`: arbitrary bytes may be refused, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    huitong::fuzzing::hl7v3_dispatch(data);
});
