//! The FHIRPath parser must reject, never panic on, any input.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    huitong::fhirpath::fuzzing::parse_bytes(data);
});
