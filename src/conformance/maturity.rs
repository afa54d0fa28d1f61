//! `conformance/maturity.toml`: the service families the suites test, the levels of the
//! interconnectivity maturity assessment (互联互通标准化成熟度测评), and which families each level
//! needs, every threshold with its source. Where the official threshold is not known the file
//! says so, and the estimate stops there instead of guessing.

use super::suite::SuitesRun;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;

/// One service family.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Family {
    /// Matches a script's family tag, or a suite name.
    pub code: String,
    pub name: String,
    /// The standard the family's interactions come from.
    #[serde(default)]
    pub standard: String,
    /// True when the assessment's quantitative testing exercises this family.
    pub assessed: bool,
    pub source: String,
}

/// One level.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Level {
    pub name: String,
    /// Families every script of which must pass for this level (cumulative with the lower levels).
    #[serde(default)]
    pub requires: Vec<String>,
    /// False when the official requirement of this level is not known (then `requires` is not
    /// the official list and the estimate stops below this level).
    pub threshold_known: bool,
    pub source: String,
}

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Maturity {
    /// What the estimate covers and what it does not.
    pub scope: String,
    pub family: Vec<Family>,
    pub level: Vec<Level>,
}

/// How one family did.
#[derive(Debug, Clone, Default)]
pub struct FamilyResult {
    pub scripts: usize,
    pub passed: usize,
}

/// The estimate: the highest level whose (known) requirement is met, and why it stops there.
#[derive(Debug, Clone)]
pub struct Estimate {
    pub reached: Option<String>,
    pub explanation: Vec<String>,
    pub families: BTreeMap<String, FamilyResult>,
}

impl Maturity {
    /// Reads and checks the file (every required family must be defined).
    pub fn load(path: &Path) -> Result<Maturity, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let m: Maturity = toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        for l in &m.level {
            for r in &l.requires {
                if !m.family.iter().any(|f| &f.code == r) {
                    return Err(format!(
                        "{}: level {} requires unknown family '{r}'",
                        path.display(),
                        l.name
                    ));
                }
            }
        }
        Ok(m)
    }

    /// The family a script run belongs to: its tag, else its suite.
    pub fn family_of<'a>(&'a self, family: &str, suite: &str) -> Option<&'a Family> {
        self.family
            .iter()
            .find(|f| f.code == family)
            .or_else(|| self.family.iter().find(|f| f.code == suite))
    }

    /// Estimates the level reached from a run.
    pub fn estimate(&self, run: &SuitesRun) -> Estimate {
        let mut families: BTreeMap<String, FamilyResult> = BTreeMap::new();
        for r in &run.runs {
            let code = self
                .family_of(&r.family, &r.suite)
                .map(|f| f.code.clone())
                .unwrap_or_else(|| r.family.clone());
            let e = families.entry(code).or_default();
            e.scripts += 1;
            if r.passed() {
                e.passed += 1;
            }
        }
        let mut reached = None;
        let mut explanation = Vec::new();
        for l in &self.level {
            if !l.threshold_known {
                explanation.push(format!(
                    "{}: the official threshold is not known ({}), so no level from here up can be estimated",
                    l.name, l.source
                ));
                break;
            }
            let unmet: Vec<&String> = l
                .requires
                .iter()
                .filter(|f| {
                    families
                        .get(*f)
                        .is_none_or(|r| r.scripts == 0 || r.passed < r.scripts)
                })
                .collect();
            if unmet.is_empty() {
                reached = Some(l.name.clone());
                explanation.push(format!(
                    "{}: every required family passes ({})",
                    l.name, l.source
                ));
            } else {
                explanation.push(format!(
                    "{}: not reached; families not passing or not tested: {} ({})",
                    l.name,
                    unmet
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                    l.source
                ));
                break;
            }
        }
        Estimate {
            reached,
            explanation,
            families,
        }
    }
}
