//! The resource parser on arbitrary bytes: it may reject, never panic or hang.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    huitong::fuzzing::resource_parse(data);
});
