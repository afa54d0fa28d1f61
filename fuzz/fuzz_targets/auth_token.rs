//! See `huitong::fuzzing::auth_token`: arbitrary tokens, scopes and JWKS are refused, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    huitong::fuzzing::auth_token(data);
});
