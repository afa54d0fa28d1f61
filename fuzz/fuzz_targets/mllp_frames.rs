//! See `huitong::fuzzing::mllp_frames`: arbitrary bytes may be rejected, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    huitong::fuzzing::mllp_frames(data);
});
