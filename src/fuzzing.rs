//! Entry points shared by the cargo-fuzz targets in `fuzz/` and the corpus replay in `cargo test`, so
//! both exercise exactly the same code.

use crate::model::{self, ParseLimits};

/// Parses bytes as a resource with the default limits, and re-checks what it accepts.
pub fn resource_parse(data: &[u8]) {
    if let Ok(v) = model::parse_resource(data, None, ParseLimits::default()) {
        // Whatever the parser accepts must stay acceptable after a serialise/parse round trip.
        let again = serde_json::to_vec(&v).unwrap_or_default();
        assert!(model::parse_resource(&again, None, ParseLimits::default()).is_ok());
    }
}
