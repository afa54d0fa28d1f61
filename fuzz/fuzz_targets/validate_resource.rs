//! The validator on arbitrary bytes (core definition plus a fixed profile): it may report, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    huitong::fuzzing::validate_resource(data);
});
