//! The StructureDefinition loader and plan compiler on arbitrary bytes: a broken profile is reported, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    huitong::fuzzing::profile_load(data);
});
