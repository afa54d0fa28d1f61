//! Errors of the FHIRPath engine: syntax errors carry a position and what was expected; evaluation
//! errors name the function or operator and the argument at fault.

use std::fmt;

/// A position in the expression text (1-based line and column, 0-based char offset).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pos {
    pub line: u32,
    pub column: u32,
    pub offset: usize,
}

/// The expression does not follow the FHIRPath grammar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    pub pos: Pos,
    /// What the parser expected at `pos`.
    pub expected: String,
    /// What it found instead, when known.
    pub found: Option<String>,
}

impl SyntaxError {
    pub(crate) fn new(pos: Pos, expected: &str) -> Self {
        SyntaxError {
            pos,
            expected: expected.to_string(),
            found: None,
        }
    }
    pub(crate) fn found(mut self, found: &str) -> Self {
        self.found = Some(found.to_string());
        self
    }
}

impl fmt::Display for SyntaxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "syntax error at line {}, column {}: expected {}",
            self.pos.line, self.pos.column, self.expected
        )?;
        if let Some(found) = &self.found {
            write!(f, ", found {found}")?;
        }
        Ok(())
    }
}

impl std::error::Error for SyntaxError {}

/// Evaluation failed: a singleton was required, an argument had the wrong type, a name is not
/// defined by the model, or a function is not implemented.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvalError {
    /// The function or operator (`substring`, `+`, `.given1`).
    pub context: String,
    pub message: String,
}

impl EvalError {
    pub(crate) fn new(context: impl Into<String>, message: impl Into<String>) -> Self {
        EvalError {
            context: context.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for EvalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "evaluation error in {}: {}", self.context, self.message)
    }
}

impl std::error::Error for EvalError {}

/// Any error of the engine.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FhirPathError {
    #[error("{0}")]
    Syntax(#[from] SyntaxError),
    #[error("{0}")]
    Eval(#[from] EvalError),
    #[error("cannot read input: {0}")]
    Input(String),
}
