//! The search query-string parser on arbitrary bytes: it may refuse (4xx), never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    huitong::fuzzing::search_query(data);
});
