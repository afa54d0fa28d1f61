//! The suites under `conformance/` against an embedded Huitong (real server, real SQLite file in a
//! temporary directory): no script fails that `conformance/expected.toml` does not list with a
//! reason, and every listed failure still fails for a reason of its own (a listed script that now
//! passes is printed, so the list can shrink).
//!
//! Prints `conformance <suite>: N passed, M failed` per suite and `conformance total: ...`.

mod common;

use huitong::conformance::cli::{RunArgs, run};
use std::path::PathBuf;

fn args(suite: &str, report: Option<PathBuf>) -> RunArgs {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    RunArgs {
        target: None,
        suite: suite.to_string(),
        report,
        dir: root.join("conformance"),
        expected: None,
        profiles: root.join("profiles"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_suite_passes_against_huitong_except_the_listed_failures() {
    // The spec-testscripts suite reads the corpora in place; without them it reports itself skipped.
    let _ = common::corpora("fhir-testscripts");
    // The cn-hie samples are sent by the sample-* scripts of cn-hospital-platform and
    // cn-documents; without them those scripts are reported skipped (a failure when required).
    let _ = common::corpora("cn-hie");
    let report = tempfile::tempdir().unwrap();
    let out = run(&args("all", Some(report.path().to_path_buf())))
        .await
        .expect("the suites run");
    for line in &out.summary {
        println!("{line}");
    }
    let per_suite = out.run.per_suite();
    for (suite, min) in [
        ("fhir-core", 60),
        ("fhir-search", 60),
        ("validation", 30),
        ("hl7v2", 6),
        ("cn-hospital-platform", 30),
        ("cn-documents", 8),
        ("feeds", 7),
    ] {
        let (p, f) = per_suite.get(suite).copied().unwrap_or_default();
        assert!(
            p + f >= min,
            "{suite}: {} scripts, want at least {min}",
            p + f
        );
    }
    let regressions = out.run.regressions(&out.expected);
    assert!(
        regressions.is_empty(),
        "scripts failing that conformance/expected.toml does not list:\n{}",
        regressions.join("\n")
    );
    // Every listed failure names a script that exists (a stale entry hides nothing, but misleads).
    for f in &out.expected.failure {
        let found = out
            .run
            .runs
            .iter()
            .any(|r| r.suite == f.suite && r.id == f.script)
            || out.run.skipped.iter().any(|(s, _)| s == &f.suite);
        assert!(
            found,
            "expected.toml lists {}/{}, which did not run",
            f.suite, f.script
        );
    }
    // The reports are written and name every script.
    let bundle: serde_json::Value = serde_json::from_slice(
        &std::fs::read(report.path().join("testreports.json")).expect("testreports.json"),
    )
    .expect("JSON");
    assert_eq!(
        bundle["entry"].as_array().map(|e| e.len()),
        Some(out.run.runs.len())
    );
    let junit = std::fs::read_to_string(report.path().join("junit.xml")).expect("junit.xml");
    roxmltree::Document::parse(&junit).expect("well-formed JUnit XML");
    let html = std::fs::read_to_string(report.path().join("index.html")).expect("index.html");
    assert!(html.contains("Maturity estimate"));
    assert_eq!(out.code, 0);
}
