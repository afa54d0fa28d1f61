//! OperationOutcome: the one shape every error takes on its way to a client.

use serde_json::{Value, json};

/// Severity of an issue (`OperationOutcome.issue.severity`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Fatal,
    Error,
    Warning,
    Information,
}

impl Severity {
    fn code(self) -> &'static str {
        match self {
            Severity::Fatal => "fatal",
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Information => "information",
        }
    }
}

/// One issue: what went wrong, where (a FHIRPath expression), and its IssueType code.
#[derive(Debug, Clone, PartialEq)]
pub struct Issue {
    pub severity: Severity,
    /// `OperationOutcome.issue.code` (IssueType): `structure`, `invalid`, `value`, `required`, `not-found`...
    pub code: &'static str,
    pub diagnostics: String,
    /// FHIRPath of the offending node, e.g. `Patient.name[0].given[1]`.
    pub expression: Option<String>,
}

impl Issue {
    /// An error issue.
    pub fn error(code: &'static str, diagnostics: impl Into<String>) -> Issue {
        Issue {
            severity: Severity::Error,
            code,
            diagnostics: diagnostics.into(),
            expression: None,
        }
    }
    /// An informational issue.
    pub fn information(code: &'static str, diagnostics: impl Into<String>) -> Issue {
        Issue {
            severity: Severity::Information,
            code,
            diagnostics: diagnostics.into(),
            expression: None,
        }
    }
    /// The same issue located at `expression`.
    pub fn at(mut self, expression: impl Into<String>) -> Issue {
        self.expression = Some(expression.into());
        self
    }
    /// Prefixes the location, for issues found inside a nested resource.
    pub fn within(mut self, prefix: &str) -> Issue {
        self.expression = Some(match self.expression.take() {
            Some(e) => format!("{prefix}.{e}"),
            None => prefix.to_string(),
        });
        self
    }
    fn to_json(&self) -> Value {
        let mut o = json!({ "severity": self.severity.code(), "code": self.code, "diagnostics": self.diagnostics });
        if let Some(e) = &self.expression {
            o["expression"] = json!([e]);
        }
        o
    }
}

/// An error with the HTTP status it maps to and the issues that explain it.
#[derive(Debug, Clone, PartialEq)]
pub struct FhirError {
    pub status: u16,
    pub issues: Vec<Issue>,
}

impl FhirError {
    /// An error with a single issue.
    pub fn new(status: u16, code: &'static str, diagnostics: impl Into<String>) -> FhirError {
        FhirError {
            status,
            issues: vec![Issue::error(code, diagnostics)],
        }
    }
    /// 400 with the given issues.
    pub fn invalid(issues: Vec<Issue>) -> FhirError {
        FhirError {
            status: 400,
            issues,
        }
    }
    /// Attaches a location to every issue that has none.
    pub fn at(mut self, expression: &str) -> FhirError {
        for i in &mut self.issues {
            if i.expression.is_none() {
                i.expression = Some(expression.to_string());
            }
        }
        self
    }
    /// The OperationOutcome resource.
    pub fn outcome(&self) -> Value {
        operation_outcome(&self.issues)
    }
}

impl std::fmt::Display for FhirError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let msgs: Vec<String> = self
            .issues
            .iter()
            .map(|i| match &i.expression {
                Some(e) => format!("{e}: {}", i.diagnostics),
                None => i.diagnostics.clone(),
            })
            .collect();
        write!(f, "HTTP {}: {}", self.status, msgs.join("; "))
    }
}

impl std::error::Error for FhirError {}

/// Builds an OperationOutcome resource from issues.
pub fn operation_outcome(issues: &[Issue]) -> Value {
    json!({
        "resourceType": "OperationOutcome",
        "issue": issues.iter().map(Issue::to_json).collect::<Vec<_>>()
    })
}
