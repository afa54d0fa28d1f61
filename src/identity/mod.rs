//! Identity of things across senders: one canonical identifier system per kind of number.
//!
//! [`canonical`] turns the NamingSystems of the registry into an alias table (every accepted
//! system URI of an identifier -> its canonical URI) and applies it to writes before they are
//! validated and stored, so the same 身份证号 sent under the national OID or the HL7 China OID is
//! stored, indexed and matched under one system.

pub mod canonical;

pub use canonical::{Canonicaliser, IdentifierSystems};
