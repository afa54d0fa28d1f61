//! The R4 `TestScript.setup.action.assert` kinds and operators.
//!
//! An assert judges one source: `sourceId` (a fixture or a recorded response), else the last
//! response; `direction: request` judges the last request instead. Its actual value comes from the
//! one check element it carries (`contentType`, `expression`, `headerField`, `minimumId`,
//! `navigationLinks`, `path`, `requestMethod`, `requestURL`, `resource`, `response`,
//! `responseCode`, `validateProfileId`); the expected value is `value`, or what
//! `compareToSourceExpression`/`compareToSourcePath` give on `compareToSourceId`. Operators
//! default to `equals`; `expression` without a value or operator must be true (`eval`).
//!
//! `path` is read as the simple XPath the R4 examples use (`fhir:Bundle/fhir:type/@value`,
//! translated to FHIRPath) on a FHIR JSON body, as an HL7 v2 field address (`MSA-1`, `MSH-9.2`,
//! `ERR-3.1`) on an ER7 body (an acknowledgement), and as the XPath subset of
//! [`crate::xml::path`] (`//acknowledgement/@typeCode`, `count(//subject)`) on any other XML
//! body (HL7 v3 answers, SOAP envelopes, CDA).

use super::run::{Source, State, media_type, response_code_status};
use crate::fhirpath::{self, Environment, Value as FpValue};
use rust_decimal::Decimal;
use serde_json::Value;
use std::str::FromStr;

/// The finding of one assert.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Pass(String),
    Fail(String),
    /// The assert could not be evaluated (unknown kind, bad expression, missing source).
    Error(String),
}

/// Evaluates one assert.
pub(crate) fn check(st: &State<'_>, a: &Value) -> Verdict {
    match evaluate(st, a) {
        Ok(v) => v,
        Err(e) => Verdict::Error(e),
    }
}

fn s<'a>(a: &'a Value, k: &str) -> Option<&'a str> {
    a.get(k).and_then(Value::as_str)
}

fn evaluate(st: &State<'_>, a: &Value) -> Result<Verdict, String> {
    let operator = s(a, "operator").unwrap_or("equals");
    let request_side = s(a, "direction") == Some("request");
    let source = st
        .source_or_last(s(a, "sourceId"))
        .ok_or_else(|| match s(a, "sourceId") {
            Some(id) => format!("sourceId '{id}' names no fixture or response"),
            None => "no response to judge: no operation ran before this assert".to_string(),
        })?;
    let expected = expected_value(st, a)?;

    if let Some(ct) = s(a, "contentType") {
        let ex = exchange_of(&source)?;
        let actual = if request_side {
            ex.request_header("content-type").map(|v| {
                v.split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase()
            })
        } else {
            ex.response_media_type()
        };
        let want = media_type(ct).unwrap_or_default();
        // `json`/`xml` accept both the FHIR and the generic media type.
        let matches = |got: &str| {
            got == want
                || (ct == "json" && got == "application/json")
                || (ct == "xml" && got == "application/xml")
        };
        let ok = match (operator, actual.as_deref()) {
            ("notEquals", Some(got)) => !matches(got),
            ("notEquals", None) => true,
            ("contains", Some(got)) => got.contains(&want),
            (_, Some(got)) => matches(got),
            (_, None) => false,
        };
        return Ok(verdict(
            ok,
            format!(
                "content type {} {operator} {want}",
                actual.as_deref().unwrap_or("(none)")
            ),
        ));
    }
    if let Some(h) = s(a, "headerField") {
        let actual = if request_side {
            exchange_of(&source)?.request_header(h).map(str::to_string)
        } else {
            source.header(h).map(str::to_string)
        };
        let actual: Vec<String> = actual.into_iter().collect();
        return compare(
            operator,
            &actual,
            expected.as_deref(),
            &format!("header {h}"),
        );
    }
    // An assert with only `compareToSourceExpression` (as the R4 example script writes one)
    // compares that expression on the source with the same expression on the subject.
    let own_expression = own_check(a, "expression", "compareToSourceExpression");
    if let Some(expr) = own_expression {
        let expr = st.substitute(expr);
        let json = source
            .json()
            .ok_or("the body judged is not JSON (a FHIRPath expression needs a resource)")?;
        if expected.is_none() && matches!(operator, "equals" | "eval") {
            let result = fhirpath_bool(st, &expr, json)?;
            return Ok(verdict(
                result == Some(true),
                format!(
                    "{expr} is {}",
                    match result {
                        Some(b) => b.to_string(),
                        None => "empty".into(),
                    }
                ),
            ));
        }
        let actual = fhirpath_strings(st, &expr, json)?;
        return compare(operator, &actual, expected.as_deref(), &expr);
    }
    if let Some(min) = s(a, "minimumId") {
        // The fixture as sent: with its `${name}` variables replaced.
        let want: Value = st
            .source(min)
            .and_then(|m| serde_json::from_slice(&st.substitute_body(m.body())).ok())
            .ok_or_else(|| format!("minimumId '{min}' names no JSON fixture"))?;
        let got = source.json().ok_or("the body judged is not JSON")?;
        return Ok(match missing_from(&want, got, "") {
            None => Verdict::Pass(format!("contains every element of {min}")),
            Some(path) => Verdict::Fail(format!("{path} of {min} is missing or differs")),
        });
    }
    if a.get("navigationLinks").and_then(Value::as_bool) == Some(true) {
        let got = source.json().ok_or("the body judged is not JSON")?;
        return Ok(navigation_links(got));
    }
    let own_path = own_check(a, "path", "compareToSourcePath");
    if let Some(p) = own_path {
        let p = st.substitute(p);
        let actual = path_strings(st, &source, &p)?;
        return compare(operator, &actual, expected.as_deref(), &p);
    }
    if let Some(m) = s(a, "requestMethod") {
        let ex = exchange_of(&source)?;
        let ok = ex.method.eq_ignore_ascii_case(m) != (operator == "notEquals");
        return Ok(verdict(
            ok,
            format!("request method {} {operator} {m}", ex.method),
        ));
    }
    if let Some(u) = s(a, "requestURL") {
        let ex = exchange_of(&source)?;
        let u = st.substitute(u);
        return compare(
            operator,
            std::slice::from_ref(&ex.url),
            Some(&u),
            "request URL",
        );
    }
    if let Some(r) = s(a, "resource") {
        let got = source
            .json()
            .and_then(|j| j.get("resourceType"))
            .and_then(Value::as_str)
            .unwrap_or("(no resource)");
        let ok = (got == r) != (operator == "notEquals");
        return Ok(verdict(ok, format!("resource type {got} {operator} {r}")));
    }
    if let Some(code) = s(a, "response") {
        let want = response_code_status(code)
            .ok_or_else(|| format!("'{code}' is not an assert response code"))?;
        let ex = exchange_of(&source)?;
        let ok = (ex.status == want) != (operator == "notEquals");
        return Ok(verdict(
            ok,
            format!("status {} {operator} {want} ({code})", ex.status),
        ));
    }
    if let Some(code) = s(a, "responseCode") {
        let ex = exchange_of(&source)?;
        let want = st.substitute(code);
        return compare(
            operator,
            &[ex.status.to_string()],
            Some(&want),
            "response code",
        );
    }
    if let Some(pid) = s(a, "validateProfileId") {
        let url = st
            .profiles
            .get(pid)
            .ok_or_else(|| format!("validateProfileId '{pid}' is not a profile of the script"))?;
        let got = source.json().ok_or("the body judged is not JSON")?;
        let core = format!(
            "http://hl7.org/fhir/StructureDefinition/{}",
            got.get("resourceType")
                .and_then(Value::as_str)
                .unwrap_or("")
        );
        let profiles: Vec<String> = if *url == core {
            Vec::new()
        } else {
            vec![url.clone()]
        };
        let report = st.target.validator.validate(got, &profiles, false);
        if report.has_errors() {
            let first: Vec<String> = report
                .issues
                .iter()
                .filter(|i| {
                    matches!(
                        i.severity,
                        crate::model::Severity::Error | crate::model::Severity::Fatal
                    )
                })
                .take(3)
                .map(|i| match &i.expression {
                    Some(e) => format!("{e}: {}", i.diagnostics),
                    None => i.diagnostics.clone(),
                })
                .collect();
            return Ok(Verdict::Fail(format!(
                "{} errors against {url}: {}",
                report.error_count(),
                first.join("; ")
            )));
        }
        return Ok(Verdict::Pass(format!("conforms to {url}")));
    }
    Err("the assert names no check this runner knows (contentType, expression, headerField, minimumId, navigationLinks, path, requestMethod, requestURL, resource, response, responseCode, validateProfileId)".into())
}

/// The elements that make an assert check something.
const CHECKS: [&str; 12] = [
    "contentType",
    "expression",
    "headerField",
    "minimumId",
    "navigationLinks",
    "path",
    "requestMethod",
    "requestURL",
    "resource",
    "response",
    "responseCode",
    "validateProfileId",
];

/// The assert's `key` (`expression`, `path`), or, when the assert names no check at all, its
/// compareTo counterpart: the same expression is then evaluated on both sides.
fn own_check<'a>(a: &'a Value, key: &str, compare_key: &str) -> Option<&'a str> {
    s(a, key).or_else(|| {
        if CHECKS.iter().any(|k| a.get(*k).is_some()) {
            None
        } else {
            s(a, compare_key)
        }
    })
}

fn verdict(ok: bool, message: String) -> Verdict {
    if ok {
        Verdict::Pass(message)
    } else {
        Verdict::Fail(message)
    }
}

fn exchange_of<'a>(source: &Source<'a>) -> Result<&'a super::Exchange, String> {
    source
        .exchange()
        .ok_or_else(|| "the source is a fixture, not a request/response".to_string())
}

/// `value`, or the compareTo source's value.
fn expected_value(st: &State<'_>, a: &Value) -> Result<Option<String>, String> {
    if let Some(cid) = s(a, "compareToSourceId") {
        let src = st
            .source(cid)
            .ok_or_else(|| format!("compareToSourceId '{cid}' names no fixture or response"))?;
        let values = if let Some(e) = s(a, "compareToSourceExpression") {
            let e = st.substitute(e);
            let json = src.json().ok_or("the compareTo source is not JSON")?;
            fhirpath_strings(st, &e, json)?
        } else if let Some(p) = s(a, "compareToSourcePath") {
            path_strings(st, &src, &st.substitute(p))?
        } else {
            return Err(
                "compareToSourceId without compareToSourceExpression or compareToSourcePath".into(),
            );
        };
        return Ok(Some(values.join(",")));
    }
    Ok(s(a, "value").map(|v| st.substitute(v)))
}

fn decimal(s: &str) -> Option<Decimal> {
    Decimal::from_str(s.trim()).ok()
}

/// Applies an operator to the actual values (a collection; empty = absent).
fn compare(
    operator: &str,
    actual: &[String],
    expected: Option<&str>,
    what: &str,
) -> Result<Verdict, String> {
    let joined = actual.join(",");
    let shown = if actual.is_empty() {
        "(empty)".to_string()
    } else {
        joined.clone()
    };
    let need = || {
        expected
            .ok_or_else(|| format!("operator {operator} on {what} needs a value to compare with"))
    };
    let equal = |a: &str, b: &str| match (decimal(a), decimal(b)) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    };
    let ok = match operator {
        "equals" => {
            let e = need()?;
            !actual.is_empty() && (equal(&joined, e) || (actual.len() == 1 && equal(&actual[0], e)))
        }
        "notEquals" => {
            let e = need()?;
            actual.is_empty() || !equal(&joined, e)
        }
        "in" => {
            let list: Vec<&str> = need()?.split(',').map(str::trim).collect();
            !actual.is_empty() && actual.iter().all(|v| list.iter().any(|l| equal(v, l)))
        }
        "notIn" => {
            let list: Vec<&str> = need()?.split(',').map(str::trim).collect();
            actual.iter().all(|v| !list.iter().any(|l| equal(v, l)))
        }
        "greaterThan" | "lessThan" => {
            let e = need()?;
            let Some(first) = actual.first() else {
                return Ok(Verdict::Fail(format!(
                    "{what} is empty, not {operator} {e}"
                )));
            };
            let ord = match (decimal(first), decimal(e)) {
                (Some(x), Some(y)) => x.cmp(&y),
                _ => first.as_str().cmp(e),
            };
            if operator == "greaterThan" {
                ord == std::cmp::Ordering::Greater
            } else {
                ord == std::cmp::Ordering::Less
            }
        }
        "empty" => actual.is_empty() || actual.iter().all(String::is_empty),
        "notEmpty" => actual.iter().any(|v| !v.is_empty()),
        "contains" => {
            let e = need()?;
            joined.contains(e)
        }
        "notContains" => {
            let e = need()?;
            !joined.contains(e)
        }
        "eval" => {
            return Err(format!(
                "operator eval applies to an expression, not to {what}"
            ));
        }
        other => return Err(format!("'{other}' is not an assert operator")),
    };
    let msg = match expected {
        Some(e) => format!("{what} = {shown}; {operator} {e}"),
        None => format!("{what} = {shown}; {operator}"),
    };
    Ok(verdict(ok, msg))
}

fn environment<'a>(st: &State<'_>, expr: &str, json: &'a Value) -> Environment<'a> {
    let mut env = Environment::for_resource(json);
    // Script variables are also `%name` in expressions.
    for name in percent_names(expr) {
        if let Some(v) = st.variable(&name) {
            env.set_variable(&name, vec![FpValue::String(v.into())]);
        }
    }
    env
}

fn percent_names(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let b = expr.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let start = i + 1;
            let mut j = start;
            while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'_') {
                j += 1;
            }
            if j > start {
                out.push(expr[start..j].to_string());
            }
            i = j;
        } else {
            i += 1;
        }
    }
    out
}

/// Evaluates a FHIRPath expression; each item's string form (complex items as JSON).
pub(crate) fn fhirpath_strings(
    st: &State<'_>,
    expr: &str,
    json: &Value,
) -> Result<Vec<String>, String> {
    let parsed = fhirpath::parse_cached(expr).map_err(|e| format!("{expr}: {e}"))?;
    let env = environment(st, expr, json);
    let result = parsed.evaluate(&env).map_err(|e| format!("{expr}: {e}"))?;
    Ok(result
        .iter()
        .map(|v| match v.to_json() {
            Value::String(s) => s,
            other => other.to_string(),
        })
        .collect())
}

fn fhirpath_bool(st: &State<'_>, expr: &str, json: &Value) -> Result<Option<bool>, String> {
    let parsed = fhirpath::parse_cached(expr).map_err(|e| format!("{expr}: {e}"))?;
    let env = environment(st, expr, json);
    parsed
        .evaluate_boolean(&env)
        .map_err(|e| format!("{expr}: {e}"))
}

/// `path` on a source: an HL7 v2 field address on an ER7 body, else simple XPath on a FHIR body.
pub(crate) fn path_strings(
    st: &State<'_>,
    source: &Source<'_>,
    path: &str,
) -> Result<Vec<String>, String> {
    let body = source.body();
    if body.starts_with(b"MSH") {
        return v2_field(body, path).map(|v| v.into_iter().collect());
    }
    if source.json().is_none() && is_xml(body) {
        return xml_path(body, path);
    }
    let json = source
        .json()
        .ok_or("the body judged is neither JSON, XML nor HL7 v2")?;
    let expr = xpath_to_fhirpath(path)?;
    fhirpath_strings(st, &expr, json)
}

/// True when the body looks like an XML document (after a BOM and white space).
fn is_xml(body: &[u8]) -> bool {
    let b = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    b.iter().find(|c| !c.is_ascii_whitespace()) == Some(&b'<')
}

/// A path (or `count(path)`) of [`crate::xml::path`] on an XML body, the root element as the
/// context node; the body is read as the gateway reads its input (no DTD, bounded).
pub fn xml_path(body: &[u8], path: &str) -> Result<Vec<String>, String> {
    let query = crate::xml::path::Query::parse(path)?;
    crate::xml::with_document(body, &crate::xml::Limits::default(), |doc, _| {
        query.strings(doc.root_element())
    })
    .map_err(|e| format!("the body is not readable XML: {e}"))
}

/// `fhir:Bundle/fhir:type/@value` -> `Bundle.type`; anything with predicates or axes is refused.
pub fn xpath_to_fhirpath(path: &str) -> Result<String, String> {
    let mut steps = Vec::new();
    for step in path.trim_start_matches('/').split('/') {
        if step == "@value" {
            continue;
        }
        let name = step.strip_prefix("fhir:").unwrap_or(step);
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!(
                "path '{path}': only plain fhir:a/fhir:b/@value XPath is supported (step '{step}')"
            ));
        }
        steps.push(name.to_string());
    }
    if steps.is_empty() {
        return Err(format!("path '{path}' names no element"));
    }
    Ok(steps.join("."))
}

/// `SEG-F[.C[.S]]` of an ER7 message (first segment with that id, first repetition).
pub fn v2_field(body: &[u8], path: &str) -> Result<Option<String>, String> {
    use crate::ingest::hl7v2::{Charset, er7};
    let (seg, rest) = path
        .split_once('-')
        .ok_or_else(|| format!("'{path}' is not an HL7 v2 field address (SEG-field.component)"))?;
    let mut nums = Vec::new();
    for n in rest.split('.') {
        nums.push(
            n.parse::<usize>()
                .map_err(|_| format!("'{path}': '{n}' is not a number"))?,
        );
    }
    let msg = er7::parse(body, Charset::Other(encoding_rs::UTF_8))
        .map_err(|e| format!("the response is not a parseable HL7 v2 message: {e}"))?;
    let Some(segment) = msg.first(seg) else {
        return Ok(None);
    };
    let field = segment.field(nums[0]);
    let piece = if nums.len() > 1 {
        field.at(&nums[1..])
    } else {
        field
    };
    let text = piece.text().map_err(|e| format!("{path}: {e}"))?;
    Ok(if text.is_empty() {
        None
    } else {
        Some(text.into_owned())
    })
}

/// The first path of `want` that `got` does not contain (arrays: each wanted item must match
/// some item); `id`, `meta` and `text` of the top level are the server's.
fn missing_from(want: &Value, got: &Value, at: &str) -> Option<String> {
    match (want, got) {
        (Value::Object(w), Value::Object(g)) => {
            for (k, v) in w {
                if at.is_empty() && matches!(k.as_str(), "id" | "meta" | "text") {
                    continue;
                }
                let here = if at.is_empty() {
                    k.clone()
                } else {
                    format!("{at}.{k}")
                };
                match g.get(k) {
                    None => return Some(here),
                    Some(gv) => {
                        if let Some(p) = missing_from(v, gv, &here) {
                            return Some(p);
                        }
                    }
                }
            }
            None
        }
        (Value::Array(w), Value::Array(g)) => {
            for (i, item) in w.iter().enumerate() {
                if !g.iter().any(|gi| missing_from(item, gi, "x").is_none()) {
                    return Some(format!("{at}[{i}]"));
                }
            }
            None
        }
        (w, g) => {
            let same = match (w, g) {
                (Value::Number(a), Value::Number(b)) => {
                    decimal(&a.to_string()) == decimal(&b.to_string())
                }
                _ => w == g,
            };
            if same { None } else { Some(at.to_string()) }
        }
    }
}

/// A Bundle's navigation links: `self` present, and `next` when a searchset's total exceeds
/// the entries of the page.
fn navigation_links(bundle: &Value) -> Verdict {
    if bundle.get("resourceType").and_then(Value::as_str) != Some("Bundle") {
        return Verdict::Fail("navigationLinks: the body is not a Bundle".into());
    }
    let links: Vec<&str> = bundle
        .get("link")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|l| l.get("relation").and_then(Value::as_str))
        .collect();
    if !links.contains(&"self") {
        return Verdict::Fail(format!("no self link (links: {links:?})"));
    }
    let total = bundle.get("total").and_then(Value::as_u64);
    let entries = bundle
        .get("entry")
        .and_then(Value::as_array)
        .map(|e| {
            e.iter()
                .filter(|x| x.pointer("/search/mode").and_then(Value::as_str) != Some("include"))
                .count()
        })
        .unwrap_or(0) as u64;
    if let Some(t) = total
        && t > entries
        && !links.contains(&"next")
    {
        return Verdict::Fail(format!(
            "total {t} > {entries} entries on the page, but no next link"
        ));
    }
    Verdict::Pass(format!("links {links:?}"))
}
