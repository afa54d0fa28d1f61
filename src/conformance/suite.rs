//! Suites: the folders of `conformance/`, the expected-failures file, and a run of them.
//!
//! A suite is a folder holding TestScript JSON files (fixtures in `fixtures/` beside them), or a
//! `suite.toml` naming folders of scripts to read in place from `$HUITONG_CORPORA` (the R4
//! specification's own TestScripts are never copied into the project) and a FHIR package to
//! resolve `Type/id` fixtures from.

use super::run::{ScriptRun, Target, run_script};
use super::script::{FixtureLibrary, LoadedScript, PackageLibrary};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// `suite.toml`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SuiteFile {
    /// What the suite checks.
    #[serde(default)]
    pub description: String,
    /// Folders (relative to `$HUITONG_CORPORA`) whose top-level `*.json` TestScripts run in place.
    #[serde(default)]
    pub scripts_in_corpora: Vec<String>,
    /// A FHIR package (relative to `$HUITONG_CORPORA`) resolving `Type/id` fixture references.
    #[serde(default)]
    pub library_in_corpora: Option<String>,
    /// A Huitong configuration file (relative to the suite folder) the embedded server runs this
    /// suite with, on a store of its own (the security suite's senders and scopes). Against
    /// `--target` the suite is skipped: the target must be configured likewise by its operator.
    #[serde(default)]
    pub server_config: Option<String>,
}

/// The suite's `suite.toml`, when it has one.
pub fn suite_file(dir: &Path, name: &str) -> Result<Option<SuiteFile>, String> {
    let p = dir.join(name).join("suite.toml");
    if !p.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&p).map_err(|e| format!("{}: {e}", p.display()))?;
    toml::from_str(&text)
        .map(Some)
        .map_err(|e| format!("{}: {e}", p.display()))
}

/// The configuration file a suite's embedded server needs, when it names one.
pub fn server_config(dir: &Path, name: &str) -> Result<Option<PathBuf>, String> {
    Ok(suite_file(dir, name)?
        .and_then(|f| f.server_config)
        .map(|c| dir.join(name).join(c)))
}

/// The suite names `which` selects (`all`, one name, or several separated by commas), each
/// checked to exist.
pub fn selected(dir: &Path, which: &str) -> Result<Vec<String>, String> {
    let names: Vec<String> = if which == "all" {
        suite_names(dir)
    } else {
        which.split(',').map(|s| s.trim().to_string()).collect()
    };
    for name in &names {
        if !dir.join(name).is_dir() {
            return Err(format!(
                "no suite '{name}' in {} (suites: {})",
                dir.display(),
                suite_names(dir).join(", ")
            ));
        }
    }
    Ok(names)
}

/// A suite ready to run.
pub struct Suite {
    pub name: String,
    pub scripts: Vec<LoadedScript>,
    /// Scripts that could not be read (a broken file is a failure, not a silent skip).
    pub broken: Vec<(String, String)>,
    /// Why the suite has nothing to run, when its corpus is missing.
    pub skipped: Option<String>,
    /// (script id, why) for scripts whose `corpora:` fixtures are missing.
    pub skipped_scripts: Vec<(String, String)>,
}

/// The corpora folder: `$HUITONG_CORPORA`, default `../shared/corpora`.
pub fn corpora_dir() -> PathBuf {
    std::env::var_os("HUITONG_CORPORA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("../shared/corpora"))
}

/// The suite names under `dir` (folders with TestScripts or a `suite.toml`), sorted.
pub fn suite_names(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let p = e.path();
        if !p.is_dir() {
            continue;
        }
        let has_scripts = p.join("suite.toml").is_file() || !json_files(&p).is_empty();
        if has_scripts && let Some(n) = p.file_name() {
            out.push(n.to_string_lossy().into_owned());
        }
    }
    out.sort();
    out
}

fn json_files(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "json"))
        .collect();
    out.sort();
    out
}

/// Loads one suite.
pub fn load_suite(dir: &Path, name: &str, corpora: &Path) -> Result<Suite, String> {
    let folder = dir.join(name);
    let mut suite = Suite {
        name: name.to_string(),
        scripts: Vec::new(),
        broken: Vec::new(),
        skipped: None,
        skipped_scripts: Vec::new(),
    };
    let mut files = json_files(&folder);
    let mut library: Option<Arc<dyn FixtureLibrary>> = None;
    if let Some(spec) = suite_file(dir, name)? {
        for rel in &spec.scripts_in_corpora {
            let d = corpora.join(rel);
            if !d.is_dir() {
                suite.skipped = Some(format!("corpus folder {} not found", d.display()));
                continue;
            }
            files.extend(json_files(&d));
        }
        if let Some(rel) = &spec.library_in_corpora {
            let p = corpora.join(rel);
            match PackageLibrary::open(&p) {
                Ok(l) => library = Some(Arc::new(l)),
                Err(e) => suite.skipped = Some(format!("fixture package {}: {e}", p.display())),
            }
        }
    }
    // Without the corpora a script sending a corpus sample cannot run: it is listed as skipped
    // with the reason, unless the corpora are required (CI), where it is a failure.
    let required = std::env::var("HUITONG_REQUIRE_CORPORA").as_deref() == Ok("1");
    for f in files {
        match LoadedScript::load(name, &f) {
            Ok(mut s) => {
                s.library = library.clone();
                s.corpora = corpora.to_path_buf();
                let missing = s.missing_corpus_files();
                if missing.is_empty() {
                    suite.scripts.push(s);
                } else if required {
                    suite.broken.push((
                        f.display().to_string(),
                        format!("HUITONG_REQUIRE_CORPORA=1: {}", missing.join("; ")),
                    ));
                } else {
                    suite.skipped_scripts.push((s.id(), missing.join("; ")));
                }
            }
            Err(e) => suite.broken.push((f.display().to_string(), e)),
        }
    }
    Ok(suite)
}

/// One expected failure.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectedFailure {
    pub suite: String,
    pub script: String,
    pub reason: String,
}

/// `conformance/expected.toml`: the scripts known to fail against Huitong, each with its reason.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expected {
    #[serde(default)]
    pub failure: Vec<ExpectedFailure>,
}

impl Expected {
    /// Reads the file; a missing file expects nothing to fail.
    pub fn load(path: &Path) -> Result<Expected, String> {
        if !path.exists() {
            return Ok(Expected::default());
        }
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// The reason a script is expected to fail, when it is listed.
    pub fn reason(&self, suite: &str, script: &str) -> Option<&str> {
        self.failure
            .iter()
            .find(|f| f.suite == suite && f.script == script)
            .map(|f| f.reason.as_str())
    }
}

/// Every script of the suites run.
pub struct SuitesRun {
    pub target: String,
    pub runs: Vec<ScriptRun>,
    /// (suite, why) for suites with nothing to run.
    pub skipped: Vec<(String, String)>,
    /// (suite, file, why) for files that are not readable TestScripts.
    pub broken: Vec<(String, String, String)>,
}

impl SuitesRun {
    /// A run with nothing in it yet.
    pub fn new(target: &str) -> SuitesRun {
        SuitesRun {
            target: target.to_string(),
            runs: Vec::new(),
            skipped: Vec::new(),
            broken: Vec::new(),
        }
    }

    /// Adds another run's scripts (a suite run on a server of its own).
    pub fn extend(&mut self, other: SuitesRun) {
        if self.runs.is_empty() {
            self.target = other.target;
        }
        self.runs.extend(other.runs);
        self.skipped.extend(other.skipped);
        self.broken.extend(other.broken);
    }

    /// Scripts that failed and are not expected to (plus broken files).
    pub fn regressions(&self, expected: &Expected) -> Vec<String> {
        let mut out: Vec<String> = self
            .runs
            .iter()
            .filter(|r| !r.passed() && expected.reason(&r.suite, &r.id).is_none())
            .map(|r| format!("{}/{}", r.suite, r.id))
            .collect();
        out.extend(
            self.broken
                .iter()
                .map(|(s, f, e)| format!("{s}: {f} is not a runnable TestScript: {e}")),
        );
        out
    }

    /// Scripts listed as expected failures that now pass (the list can shrink).
    pub fn newly_passing(&self, expected: &Expected) -> Vec<String> {
        self.runs
            .iter()
            .filter(|r| r.passed() && expected.reason(&r.suite, &r.id).is_some())
            .map(|r| format!("{}/{}", r.suite, r.id))
            .collect()
    }

    /// (passed, failed) per suite.
    pub fn per_suite(&self) -> BTreeMap<String, (usize, usize)> {
        let mut m: BTreeMap<String, (usize, usize)> = BTreeMap::new();
        for r in &self.runs {
            let e = m.entry(r.suite.clone()).or_default();
            if r.passed() {
                e.0 += 1;
            } else {
                e.1 += 1;
            }
        }
        m
    }
}

/// Runs the named suites (`all`, or one name, or several separated by commas) in order.
pub async fn run_suites(
    target: &Target,
    dir: &Path,
    which: &str,
    corpora: &Path,
) -> Result<SuitesRun, String> {
    let mut out = SuitesRun::new(&target.base);
    for name in selected(dir, which)? {
        let suite = load_suite(dir, &name, corpora)?;
        if let Some(why) = &suite.skipped {
            out.skipped.push((name.clone(), why.clone()));
        }
        for (id, why) in &suite.skipped_scripts {
            out.skipped
                .push((name.clone(), format!("script {id}: {why}")));
        }
        for (f, e) in suite.broken {
            out.broken.push((name.clone(), f, e));
        }
        for script in &suite.scripts {
            out.runs.push(run_script(target, script).await);
        }
    }
    Ok(out)
}
