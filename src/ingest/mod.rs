//! Inbound pipelines that turn non-FHIR input into FHIR transactions. Each decoder ends in
//! [`crate::transaction::apply`]; nothing here writes to the store any other way.

pub mod cda;
pub mod feed;
pub mod hl7v2;
pub mod hl7v3;
pub mod locks;
pub mod merge;
pub mod rule_policy;
pub mod stored;
