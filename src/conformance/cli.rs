//! `huitong conformance run [--target URL] [--suite NAME|all] [--report DIR]`.
//!
//! Without `--target` an embedded Huitong is started on an ephemeral port over a fresh store in a
//! temporary directory (removed afterwards), with `./profiles` and `./mappings`. The exit status
//! is 0 when every script passed or is listed in the expected-failures file, 1 otherwise (a
//! script listed there that now passes is reported, not an error), 2 when the run could not
//! happen.

use super::maturity::Maturity;
use super::run::{Target, local_validator};
use super::suite::{Expected, SuitesRun, corpora_dir, run_suites, selected, server_config};
use std::path::PathBuf;

/// The flags of `conformance run`.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// FHIR base URL of the server under test [default: an embedded Huitong]
    #[arg(long)]
    pub target: Option<String>,
    /// Suite name, several separated by commas, or `all`.
    #[arg(long, default_value = "all")]
    pub suite: String,
    /// Folder to write testreports.json, junit.xml and index.html into.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Folder of the suites.
    #[arg(long, default_value = "conformance")]
    pub dir: PathBuf,
    /// Expected failures [default: DIR/expected.toml]
    #[arg(long)]
    pub expected: Option<PathBuf>,
    /// Conformance resources for `validateProfileId` (and the embedded server).
    #[arg(long, env = "HUITONG_PROFILES", default_value = "profiles")]
    pub profiles: PathBuf,
}

/// The outcome of the command: the run, the expected-failures list, and the exit code.
pub struct Outcome {
    pub run: SuitesRun,
    pub expected: Expected,
    pub code: u8,
    /// Lines printed to stdout.
    pub summary: Vec<String>,
}

/// Runs suites on an embedded Huitong over a fresh store in a temporary directory (removed
/// afterwards), configured by `config` layered over the defaults when given.
async fn embedded(
    args: &RunArgs,
    config: Option<&std::path::Path>,
    which: &str,
    validator: &std::sync::Arc<crate::validation::Validator>,
    corpora: &std::path::Path,
) -> Result<SuitesRun, String> {
    let data = std::env::temp_dir().join(format!(
        "huitong-conformance-{}",
        uuid::Uuid::new_v4().simple()
    ));
    let mut settings = match config {
        Some(path) => {
            let layer = crate::config::Overrides::from_file(path).map_err(|e| e.to_string())?;
            crate::config::Settings::resolve(&[&layer])
                .map_err(|e| format!("{}: {e}", path.display()))?
        }
        None => crate::config::Settings::default(),
    };
    settings.addr = "127.0.0.1:0".parse().map_err(|e| format!("{e}"))?;
    settings.data_dir = data.clone();
    settings.profiles_dir = args.profiles.clone();
    let server = crate::server::RunningServer::start(settings)
        .await
        .map_err(|e| format!("embedded server: {e}"))?;
    let target = Target {
        base: format!("http://{}/fhir", server.addr),
        client: super::exchange::client(),
        validator: validator.clone(),
    };
    let result = run_suites(&target, &args.dir, which, corpora).await;
    let _ = server.shutdown().await;
    let _ = std::fs::remove_dir_all(&data);
    result
}

/// Runs the suites as the command does (also used by the tests).
pub async fn run(args: &RunArgs) -> Result<Outcome, String> {
    let expected_path = args
        .expected
        .clone()
        .unwrap_or_else(|| args.dir.join("expected.toml"));
    let expected = Expected::load(&expected_path)?;
    let validator = local_validator(&args.profiles);
    let corpora = corpora_dir();
    // Suites whose suite.toml names a server configuration run on an embedded server of their
    // own; the others share one.
    let mut shared = Vec::new();
    let mut own = Vec::new();
    for name in selected(&args.dir, &args.suite)? {
        match server_config(&args.dir, &name)? {
            Some(cfg) => own.push((name, cfg)),
            None => shared.push(name),
        }
    }
    let run = match &args.target {
        Some(url) => {
            let target = Target::new(url, validator);
            let mut run = SuitesRun::new(&target.base);
            if !shared.is_empty() {
                run = run_suites(&target, &args.dir, &shared.join(","), &corpora).await?;
            }
            for (name, cfg) in own {
                run.skipped.push((
                    name,
                    format!(
                        "not run against --target: it needs the embedded server configured by {}",
                        cfg.display()
                    ),
                ));
            }
            run
        }
        None => {
            let mut run = SuitesRun::new("embedded");
            if !shared.is_empty() {
                run.extend(embedded(args, None, &shared.join(","), &validator, &corpora).await?);
            }
            for (name, cfg) in own {
                run.extend(embedded(args, Some(&cfg), &name, &validator, &corpora).await?);
            }
            run
        }
    };
    let regressions = run.regressions(&expected);
    let newly = run.newly_passing(&expected);
    let mut summary = Vec::new();
    for (suite, (p, f)) in run.per_suite() {
        summary.push(format!("conformance {suite}: {p} passed, {f} failed"));
    }
    for (s, why) in &run.skipped {
        summary.push(format!("conformance {s}: skipped ({why})"));
    }
    let total_pass = run.runs.iter().filter(|r| r.passed()).count();
    let failed = run.runs.len() - total_pass;
    summary.push(format!(
        "conformance total: {total_pass} passed, {failed} failed, {} of them unexpected",
        regressions.len()
    ));
    for n in &newly {
        summary.push(format!(
            "now passing (remove from the expected failures): {n}"
        ));
    }
    for r in &regressions {
        summary.push(format!("UNEXPECTED FAILURE: {r}"));
    }
    if let Some(dir) = &args.report {
        let maturity = match Maturity::load(&args.dir.join("maturity.toml")) {
            Ok(m) => Some(m),
            Err(e) => {
                summary.push(format!("maturity estimate left out: {e}"));
                None
            }
        };
        super::report::write_all(dir, &run, &expected, maturity.as_ref())
            .map_err(|e| format!("{}: {e}", dir.display()))?;
        summary.push(format!("reports written to {}", dir.display()));
    }
    let code = if regressions.is_empty() { 0 } else { 1 };
    Ok(Outcome {
        run,
        expected,
        code,
        summary,
    })
}
