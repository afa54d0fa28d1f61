//! Any expression that parses evaluates over a fixed resource without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    huitong::fhirpath::fuzzing::evaluate_bytes(data);
});
