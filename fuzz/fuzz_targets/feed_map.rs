//! See `huitong::fuzzing::feed_map`: arbitrary bytes may be refused, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    huitong::fuzzing::feed_map(data);
});
