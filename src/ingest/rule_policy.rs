//! The sender's policy for profile rules on ingest (`[ingest-rules]`, `[ingest-rules-by-sender]`).
//!
//! A translated resource that breaks a profile rule is an error, as `$validate` says. Real feeds,
//! though, carry real mistakes (a 身份证号 with a wrong check character): refusing the whole message
//! loses the record, accepting it silently hides the mistake. So the policy names rules
//! (invariant keys) a sender's data may break: such an error is downgraded to a warning that the
//! answer, the Provenance of the ingest and `/metrics` record. Any other error still refuses.
//!
//! Invariants: only errors that report a failed invariant the policy lists as `warn` are let
//! through; a refusal caused by a rule the policy lists as `reject` says so.

use crate::config::{RuleAction, Settings};
use crate::model::{Issue, Severity};
use crate::validation::failed_invariant;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

/// The sender label of data whose sender the message does not name.
pub const UNIDENTIFIED: &str = "unidentified";

/// One rule a sender's data broke and the policy let through.
#[derive(Debug, Clone, PartialEq)]
pub struct LetThrough {
    pub sender: String,
    /// The invariant key, e.g. `cn-id-3`.
    pub rule: String,
    /// `Patient/abc`: the resource that breaks it.
    pub resource: String,
    /// The validator's error, downgraded to a warning that says why it was accepted.
    pub issue: Issue,
}

/// Judges the issues of one resource (`Type/id`) that failed validation: `Ok` with the errors
/// the sender's policy lets through (as warnings), or `Err` with the issues that refuse it,
/// errors first.
pub fn judge(
    settings: &Settings,
    sender: &str,
    resource: &str,
    issues: Vec<Issue>,
) -> Result<Vec<LetThrough>, Vec<Issue>> {
    let mut let_through = Vec::new();
    let mut refusing = Vec::new();
    for mut issue in issues {
        if !matches!(issue.severity, Severity::Error | Severity::Fatal) {
            continue;
        }
        let rule = failed_invariant(&issue).map(str::to_string);
        match rule {
            Some(rule) if settings.ingest_rule_action(sender, &rule) == RuleAction::Warn => {
                issue.severity = Severity::Warning;
                issue.diagnostics = format!(
                    "{resource} accepted although it breaks {rule} (the policy of sender '{sender}' lets {rule} through with a warning): {}",
                    issue.diagnostics
                );
                let_through.push(LetThrough {
                    sender: sender.to_string(),
                    rule,
                    resource: resource.to_string(),
                    issue,
                });
            }
            Some(rule) if listed(settings, sender, &rule) => {
                let _ = write!(
                    issue.diagnostics,
                    "; the policy of sender '{sender}' rejects {rule} ([ingest-rules-by-sender] or [ingest-rules])"
                );
                refusing.push(issue);
            }
            _ => refusing.push(issue),
        }
    }
    if refusing.is_empty() {
        Ok(let_through)
    } else {
        Err(refusing)
    }
}

/// True when the policy names the rule for this sender (as opposed to any error refusing).
fn listed(settings: &Settings, sender: &str, rule: &str) -> bool {
    settings
        .ingest_rules_by_sender
        .get(sender)
        .is_some_and(|m| m.contains_key(rule))
        || settings.ingest_rules.contains_key(rule)
}

/// `huitong_ingest_rule_violations_accepted_total{sender, rule}`: profile rule violations let
/// through on ingest, counted once the data is committed.
#[derive(Debug, Default)]
pub struct AcceptedViolations {
    counts: Mutex<BTreeMap<(String, String), u64>>,
}

impl AcceptedViolations {
    /// Counts what a committed ingest let through.
    pub fn record(&self, accepted: &[LetThrough]) {
        let mut c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        for a in accepted {
            *c.entry((a.sender.clone(), a.rule.clone())).or_default() += 1;
        }
    }

    /// The `/metrics` lines.
    pub fn render(&self) -> String {
        let c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = String::from(
            "# HELP huitong_ingest_rule_violations_accepted_total Profile rule violations accepted with a warning on ingest (the sender's policy lets the rule through), by sender and rule.\n# TYPE huitong_ingest_rule_violations_accepted_total counter\n",
        );
        for ((sender, rule), n) in c.iter() {
            let _ = writeln!(
                out,
                "huitong_ingest_rule_violations_accepted_total{{sender=\"{}\",rule=\"{}\"}} {n}",
                label(sender),
                label(rule)
            );
        }
        out
    }
}

/// A Prometheus label value: backslash, quote and newline escaped (senders name themselves).
fn label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed(key: &str) -> Issue {
        Issue::error(
            "invariant",
            format!("constraint {key} failed on Patient.identifier:residentId: x (from http://p)"),
        )
        .at("Patient.identifier[0]")
    }

    #[test]
    fn listed_rules_pass_as_warnings_and_the_rest_refuses() {
        let mut s = Settings::default();
        let ok = judge(&s, "HIS-7", "Patient/1", vec![failed("cn-id-3")]).unwrap();
        assert_eq!(ok.len(), 1);
        assert_eq!(ok[0].rule, "cn-id-3");
        assert_eq!(ok[0].issue.severity, Severity::Warning);
        assert!(ok[0].issue.diagnostics.starts_with("Patient/1 accepted"));
        let no = judge(
            &s,
            "HIS-7",
            "Patient/1",
            vec![failed("cn-id-3"), failed("cn-pat-sex")],
        )
        .unwrap_err();
        assert_eq!(no.len(), 1);
        assert!(no[0].diagnostics.contains("cn-pat-sex"));
        s.ingest_rules_by_sender.insert(
            "HIS-7".into(),
            [("cn-id-3".to_string(), RuleAction::Reject)].into(),
        );
        let no = judge(&s, "HIS-7", "Patient/1", vec![failed("cn-id-3")]).unwrap_err();
        assert!(
            no[0]
                .diagnostics
                .ends_with("the policy of sender 'HIS-7' rejects cn-id-3 ([ingest-rules-by-sender] or [ingest-rules])"),
            "{}",
            no[0].diagnostics
        );
        assert!(judge(&s, "HIS-8", "Patient/1", vec![failed("cn-id-3")]).is_ok());
        // Not an invariant: a cardinality error is never let through.
        let card = Issue::error("required", "Patient.name: minimum 1");
        assert!(judge(&s, "HIS-8", "Patient/1", vec![card]).is_err());
    }

    #[test]
    fn counts_by_sender_and_rule() {
        let c = AcceptedViolations::default();
        let s = Settings::default();
        let lt = judge(&s, "HIS\"7", "Patient/1", vec![failed("cn-id-3")]).unwrap();
        c.record(&lt);
        c.record(&lt);
        assert!(c.render().contains(
            "huitong_ingest_rule_violations_accepted_total{sender=\"HIS\\\"7\",rule=\"cn-id-3\"} 2"
        ));
    }
}
