//! Huitong (汇通): a FHIR R4 interoperability gateway.
//!
//! See `ARCHITECTURE.md` for the bird's-eye view and the code map.

pub mod config;
pub mod conformance;
pub mod definitions;
pub mod fhirpath;
pub mod fuzzing;
pub mod identity;
pub mod ingest;
pub mod mapping;
pub mod model;
pub mod registry;
pub mod rest;
pub mod search;
pub mod security;
pub mod server;
pub mod store;
pub mod subscription;
pub mod telemetry;
pub mod terminology;
pub mod transaction;
pub mod validation;
pub mod xml;
