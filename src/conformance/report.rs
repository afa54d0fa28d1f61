//! The three reports of a run: the TestReports as one FHIR Bundle (`testreports.json`), JUnit XML
//! for CI systems (`junit.xml`), and a static HTML page for a hospital IT team (`index.html`):
//! per service family which interactions passed, the request/response evidence of every failure,
//! and the maturity estimate with what it rests on.

use super::maturity::Maturity;
use super::suite::{Expected, SuitesRun};
use crate::xml::escape;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::Path;

/// The TestReports as a `collection` Bundle.
pub fn bundle(run: &SuitesRun) -> Value {
    let entries: Vec<Value> = run
        .runs
        .iter()
        .map(|r| {
            json!({
                "fullUrl": format!("urn:huitong:conformance:{}:{}", r.suite, r.report.get("id").and_then(Value::as_str).unwrap_or("")),
                "resource": r.report
            })
        })
        .collect();
    json!({
        "resourceType": "Bundle",
        "type": "collection",
        "total": entries.len(),
        "entry": entries
    })
}

/// JUnit XML: one `testsuite` per suite, one `testcase` per script; an expected failure is
/// `skipped` with its reason, any other failure a `failure` with its evidence.
pub fn junit(run: &SuitesRun, expected: &Expected) -> String {
    let mut by_suite: BTreeMap<&str, Vec<&super::ScriptRun>> = BTreeMap::new();
    for r in &run.runs {
        by_suite.entry(r.suite.as_str()).or_default().push(r);
    }
    let total = run.runs.len();
    let failed = run
        .runs
        .iter()
        .filter(|r| !r.passed() && expected.reason(&r.suite, &r.id).is_none())
        .count();
    let mut x = String::new();
    let _ = writeln!(x, r#"<?xml version="1.0" encoding="UTF-8"?>"#);
    let _ = writeln!(
        x,
        r#"<testsuites name="huitong conformance" tests="{total}" failures="{failed}">"#
    );
    for (suite, runs) in by_suite {
        let f = runs
            .iter()
            .filter(|r| !r.passed() && expected.reason(&r.suite, &r.id).is_none())
            .count();
        let sk = runs
            .iter()
            .filter(|r| !r.passed() && expected.reason(&r.suite, &r.id).is_some())
            .count();
        let _ = writeln!(
            x,
            r#"  <testsuite name="{}" tests="{}" failures="{f}" skipped="{sk}">"#,
            escape(suite),
            runs.len()
        );
        for r in runs {
            let _ = write!(
                x,
                r#"    <testcase classname="{}" name="{}">"#,
                escape(&r.suite),
                escape(&format!("{}: {}", r.id, r.title))
            );
            if !r.passed() {
                if let Some(reason) = expected.reason(&r.suite, &r.id) {
                    let _ = write!(
                        x,
                        r#"<skipped message="expected failure: {}"/>"#,
                        escape(reason)
                    );
                } else {
                    let first = r
                        .failures
                        .first()
                        .map(|e| format!("{}: {}: {}", e.section, e.action, e.message))
                        .unwrap_or_else(|| "failed".into());
                    let mut detail = String::new();
                    for e in &r.failures {
                        let _ = writeln!(detail, "[{}] {}: {}", e.section, e.action, e.message);
                        if let Some(ex) = &e.exchange {
                            let _ = writeln!(
                                detail,
                                "{}",
                                serde_json::to_string_pretty(&ex.evidence()).unwrap_or_default()
                            );
                        }
                    }
                    let _ = write!(
                        x,
                        r#"<failure message="{}">{}</failure>"#,
                        escape(&first),
                        escape(&detail)
                    );
                }
            }
            let _ = writeln!(x, "</testcase>");
        }
        let _ = writeln!(x, "  </testsuite>");
    }
    let _ = writeln!(x, "</testsuites>");
    x
}

/// The HTML page.
pub fn html(run: &SuitesRun, expected: &Expected, maturity: Option<&Maturity>) -> String {
    let e = escape;
    let mut h = String::new();
    let passed = run.runs.iter().filter(|r| r.passed()).count();
    let _ = writeln!(
        h,
        r#"<!DOCTYPE html><html lang="zh-CN"><head><meta charset="utf-8"><title>Huitong conformance report</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:72em}}table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #bbb;padding:.25em .5em;text-align:left;vertical-align:top}}.pass{{color:#070}}.fail{{color:#b00}}.exp{{color:#a60}}pre{{background:#f4f4f4;padding:.5em;overflow-x:auto;max-height:30em}}</style></head><body>"#
    );
    let _ = writeln!(h, "<h1>Conformance report 互联互通测试报告</h1>");
    let _ = writeln!(
        h,
        "<p>Target: <code>{}</code>. {} scripts: <span class=pass>{passed} passed</span>, <span class=fail>{} failed</span> ({} of them expected, with a reason).</p>",
        e(&run.target),
        run.runs.len(),
        run.runs.len() - passed,
        run.runs
            .iter()
            .filter(|r| !r.passed() && expected.reason(&r.suite, &r.id).is_some())
            .count()
    );
    for (s, why) in &run.skipped {
        let _ = writeln!(h, "<p class=exp>Suite {}: {}</p>", e(s), e(why));
    }
    for (s, f, why) in &run.broken {
        let _ = writeln!(
            h,
            "<p class=fail>Suite {}: {} is not a runnable TestScript: {}</p>",
            e(s),
            e(f),
            e(why)
        );
    }
    if let Some(m) = maturity {
        let est = m.estimate(run);
        let _ = writeln!(
            h,
            "<h2>Maturity estimate 成熟度估计</h2><p>{}</p>",
            e(&m.scope)
        );
        let _ = writeln!(
            h,
            "<p><b>Level reached (estimate): {}</b></p><ul>",
            e(est.reached.as_deref().unwrap_or("none can be estimated"))
        );
        for line in &est.explanation {
            let _ = writeln!(h, "<li>{}</li>", e(line));
        }
        let _ = writeln!(h, "</ul>");
        let _ = writeln!(
            h,
            "<table><tr><th>family</th><th>standard</th><th>assessed</th><th>scripts passed</th><th>source</th></tr>"
        );
        for f in &m.family {
            let r = est.families.get(&f.code).cloned().unwrap_or_default();
            let status = if r.scripts == 0 {
                "<span class=exp>not tested</span>".to_string()
            } else {
                let cls = if r.passed == r.scripts {
                    "pass"
                } else {
                    "fail"
                };
                format!("<span class={cls}>{} / {}</span>", r.passed, r.scripts)
            };
            let _ = writeln!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{status}</td><td>{}</td></tr>",
                e(&f.name),
                e(&f.standard),
                if f.assessed { "yes" } else { "no" },
                e(&f.source)
            );
        }
        let _ = writeln!(h, "</table>");
    }
    // Per family: scripts and the interactions they sent.
    let mut families: BTreeMap<String, Vec<&super::ScriptRun>> = BTreeMap::new();
    for r in &run.runs {
        let name = maturity
            .and_then(|m| m.family_of(&r.family, &r.suite))
            .map(|f| f.name.clone())
            .unwrap_or_else(|| r.family.clone());
        families.entry(name).or_default().push(r);
    }
    let _ = writeln!(h, "<h2>Service families 服务</h2>");
    for (fam, runs) in &families {
        let ok = runs.iter().filter(|r| r.passed()).count();
        let _ = writeln!(
            h,
            "<h3>{} — {ok} / {} scripts pass</h3>",
            e(fam),
            runs.len()
        );
        let mut inter: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
        for r in runs {
            for (code, _, good) in &r.interactions {
                let x = inter.entry(code.as_str()).or_default();
                if *good {
                    x.0 += 1;
                } else {
                    x.1 += 1;
                }
            }
        }
        let _ = write!(
            h,
            "<p>Interactions sent (2xx/3xx vs 4xx/5xx, whichever the script expected): "
        );
        for (code, (g, b)) in &inter {
            let _ = write!(h, "<code>{}</code> {g}/{b} · ", e(code));
        }
        let _ = writeln!(
            h,
            "</p><table><tr><th>script</th><th>result</th><th>asserts</th></tr>"
        );
        for r in runs {
            let result = if r.passed() {
                "<span class=pass>pass</span>".to_string()
            } else if let Some(reason) = expected.reason(&r.suite, &r.id) {
                format!("<span class=exp>expected failure: {}</span>", e(reason))
            } else {
                "<span class=fail>FAIL</span>".to_string()
            };
            let _ = writeln!(
                h,
                "<tr><td><a href=\"#{}-{}\">{}</a> {}</td><td>{result}</td><td>{} / {}</td></tr>",
                e(&r.suite),
                e(&r.id),
                e(&r.id),
                e(&r.title),
                r.asserts_passed,
                r.asserts_total
            );
        }
        let _ = writeln!(h, "</table>");
    }
    let _ = writeln!(h, "<h2>Failures with evidence 失败与证据</h2>");
    for r in run.runs.iter().filter(|r| !r.passed()) {
        let _ = writeln!(
            h,
            "<h3 id=\"{}-{}\">{} / {} <small>{}</small></h3>",
            e(&r.suite),
            e(&r.id),
            e(&r.suite),
            e(&r.id),
            e(&r.path)
        );
        for f in &r.failures {
            let _ = writeln!(
                h,
                "<p><b>{}</b> [{}] {}: {}</p>",
                e(&f.result),
                e(&f.section),
                e(&f.action),
                e(&f.message)
            );
            if let Some(ex) = &f.exchange {
                let _ = writeln!(
                    h,
                    "<pre>{}</pre>",
                    e(&serde_json::to_string_pretty(&ex.evidence()).unwrap_or_default())
                );
            }
        }
    }
    let _ = writeln!(h, "</body></html>");
    h
}

/// Writes `testreports.json`, `junit.xml` and `index.html` into `dir`.
pub fn write_all(
    dir: &Path,
    run: &SuitesRun,
    expected: &Expected,
    maturity: Option<&Maturity>,
) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(
        dir.join("testreports.json"),
        serde_json::to_vec_pretty(&bundle(run)).unwrap_or_default(),
    )?;
    std::fs::write(dir.join("junit.xml"), junit(run, expected))?;
    std::fs::write(dir.join("index.html"), html(run, expected, maturity))?;
    Ok(())
}
