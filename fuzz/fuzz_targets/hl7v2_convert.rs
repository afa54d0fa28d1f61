//! See `huitong::fuzzing::hl7v2_convert`: arbitrary bytes may be rejected, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    huitong::fuzzing::hl7v2_convert(data);
});
