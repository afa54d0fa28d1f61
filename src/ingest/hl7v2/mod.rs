//! HL7 v2 ingest: ER7 parsing (bytes to an indexed message), segment groups, charsets, and the
//! transports (MLLP, `POST /hl7v2`, files) that end in [`crate::transaction::apply`].
//!
//! Public surface: [`parse`] and [`Hl7v2Message`] (with [`Segment`] and [`Piece`] accessors),
//! [`Charset`], [`Grammar`] for segment groups, and the pipeline in [`pipeline`].

pub mod ack;
pub mod charset;
pub mod cli;
pub mod deadletter;
pub mod er7;
pub mod escape;
pub mod mllp;
pub mod pipeline;
pub mod structure;

pub use charset::Charset;
pub use er7::{
    Delimiters, Hl7v2Message, Location, ParseError, Piece, Segment, parse, split_messages,
};
pub use structure::{Grammar, Placement};
