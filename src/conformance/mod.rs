//! Conformance testing: a FHIR R4 `TestScript` runner, the suites under `conformance/`, and the
//! reports a hospital IT team reads before the interconnectivity maturity assessment.
//!
//! - [`script`]: loading TestScripts and their fixtures (contained, files beside the script, or a
//!   library such as the R4 examples package read in place).
//! - [`exchange`]: one HTTP request and its response, recorded as evidence.
//! - [`run`]: executes one TestScript (fixtures, variables, setup/test/teardown, operations) and
//!   returns its `TestReport` with the evidence of every failure.
//! - [`assert`]: the `assert` kinds and operators.
//! - [`suite`]: suites (folders of TestScripts), the expected-failures file, the run of them all.
//! - [`report`]: the TestReport Bundle, JUnit XML and the static HTML page.
//! - [`maturity`]: `conformance/maturity.toml`, the service families and what is known of the
//!   levels they count towards.
//!
//! Invariants: the runner never reports a pass it did not check (an assert kind it cannot
//! evaluate is `error`, never `pass`); every failed or errored assert carries the request and
//! response it judged; a script's result is `pass` only when every assert passed or was a
//! warning.

pub mod assert;
pub mod cli;
pub mod exchange;
pub mod maturity;
pub mod report;
pub mod run;
pub mod script;
pub mod suite;

pub use exchange::Exchange;
pub use run::{ScriptRun, Target, run_script};
pub use script::{FixtureLibrary, LoadedScript};
