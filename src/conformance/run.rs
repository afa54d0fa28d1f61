//! Running one TestScript: fixtures, variables, setup, tests, teardown, and the TestReport.
//!
//! Execution follows the R4 TestScript rules with these choices (written here because the
//! specification leaves them to the engine):
//! - A failed (non-warning) assert or an operation that got no response stops its test (or the
//!   setup); the remaining actions are reported `skip`. A failed setup skips every test;
//!   teardown always runs.
//! - `${name}` is replaced in operation `url`/`params`/headers, assert values and expressions,
//!   and in fixture bodies sent as text (so a body can name an id a previous response assigned).
//!   Variables are evaluated when used, against the current state of their source.
//!   `${serverRoot}` (scheme and authority of the target) and `${baseUrl}` (the FHIR base) are
//!   always defined, so a script can POST to `/hl7v2` or any other path of the target.
//! - An operation type the R4 code list names as a FHIR interaction is sent as that interaction;
//!   any other code is the operation `$code` (`validate` -> `$validate`), at instance level with
//!   `targetId`, type level with `resource`, else system level. `url` overrides all of that.

use super::assert::{self, Verdict};
use super::exchange::{self, Exchange};
use super::script::{Fixture, LoadedScript};
use crate::validation::Validator;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;

/// The server a script runs against.
#[derive(Clone)]
pub struct Target {
    /// The FHIR base (`http://127.0.0.1:8080/fhir`), without a trailing slash.
    pub base: String,
    pub client: reqwest::Client,
    /// Checks `validateProfileId` asserts (locally: the runner does not ask the server).
    pub validator: Arc<Validator>,
}

impl Target {
    /// A target at `base` with a validator over the core definitions and `profiles_dir`.
    pub fn new(base: &str, validator: Arc<Validator>) -> Target {
        Target {
            base: base.trim_end_matches('/').to_string(),
            client: exchange::client(),
            validator,
        }
    }

    /// Scheme and authority of the base (`http://127.0.0.1:8080`).
    pub fn server_root(&self) -> String {
        match self.base.find("://") {
            Some(i) => {
                let rest = &self.base[i + 3..];
                let end = rest.find('/').map(|j| i + 3 + j).unwrap_or(self.base.len());
                self.base[..end].to_string()
            }
            None => self.base.clone(),
        }
    }
}

/// A validator over the core definitions and the conformance resources under `profiles_dir`
/// (when it exists): what `validateProfileId` checks with.
pub fn local_validator(profiles_dir: &std::path::Path) -> Arc<Validator> {
    let registry = Arc::new(crate::registry::Registry::with_core(
        crate::definitions::Definitions::core(),
    ));
    if profiles_dir.is_dir() {
        for p in crate::validation::load_profiles(&registry, profiles_dir) {
            tracing::debug!(problem = %p, "conformance: profile load problem");
        }
    }
    let terminology = Arc::new(crate::terminology::Terminology::new(registry.clone()));
    Arc::new(Validator::new(registry, terminology))
}

/// What one failed (or errored) assert or operation judged.
#[derive(Debug, Clone)]
pub struct Evidence {
    /// `setup`, the test's name, or `teardown`.
    pub section: String,
    /// The assert's label or description, or the operation's.
    pub action: String,
    pub result: String,
    pub message: String,
    pub exchange: Option<Exchange>,
}

/// The outcome of one script.
#[derive(Debug, Clone)]
pub struct ScriptRun {
    pub suite: String,
    pub id: String,
    pub title: String,
    pub family: String,
    pub path: String,
    /// The FHIR `TestReport`.
    pub report: Value,
    pub failures: Vec<Evidence>,
    /// Asserts that passed / all asserts evaluated.
    pub asserts_passed: usize,
    pub asserts_total: usize,
    /// Interactions sent (operation codes with their HTTP status), for the per-family table.
    pub interactions: Vec<(String, String, bool)>,
}

impl ScriptRun {
    /// True when the TestReport's result is `pass`.
    pub fn passed(&self) -> bool {
        self.report.get("result").and_then(Value::as_str) == Some("pass")
    }
}

/// The mutable state of one script's execution.
pub(crate) struct State<'s> {
    pub target: &'s Target,
    pub script: &'s LoadedScript,
    pub fixtures: HashMap<String, Fixture>,
    pub responses: HashMap<String, Exchange>,
    pub last: Option<Exchange>,
    pub profiles: HashMap<String, String>,
}

/// A source an assert or a variable reads: a fixture or a recorded exchange.
pub(crate) enum Source<'a> {
    Fixture(&'a Fixture),
    Exchange(&'a Exchange),
}

impl<'a> Source<'a> {
    pub fn json(&self) -> Option<&'a Value> {
        match self {
            Source::Fixture(f) => f.json.as_ref(),
            Source::Exchange(e) => e.response_json.as_ref(),
        }
    }

    pub fn body(&self) -> &'a [u8] {
        match self {
            Source::Fixture(f) => &f.body,
            Source::Exchange(e) => &e.response_body,
        }
    }

    pub fn header(&self, name: &str) -> Option<&'a str> {
        match self {
            Source::Fixture(_) => None,
            Source::Exchange(e) => e.response_header(name),
        }
    }

    pub fn exchange(&self) -> Option<&'a Exchange> {
        match self {
            Source::Exchange(e) => Some(e),
            Source::Fixture(_) => None,
        }
    }
}

impl<'s> State<'s> {
    /// A fixture or response by id (responses win: they are the newer state).
    pub fn source(&self, id: &str) -> Option<Source<'_>> {
        if let Some(e) = self.responses.get(id) {
            return Some(Source::Exchange(e));
        }
        self.fixtures.get(id).map(Source::Fixture)
    }

    /// The source named, or the last response.
    pub fn source_or_last(&self, id: Option<&str>) -> Option<Source<'_>> {
        match id {
            Some(id) => self.source(id),
            None => self.last.as_ref().map(Source::Exchange),
        }
    }

    /// The value of variable `name` now; `None` when it has none.
    pub fn variable(&self, name: &str) -> Option<String> {
        let def = self
            .script
            .json
            .get("variable")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find(|v| v.get("name").and_then(Value::as_str) == Some(name));
        let Some(def) = def else {
            return match name {
                "serverRoot" => Some(self.target.server_root()),
                "baseUrl" => Some(self.target.base.clone()),
                _ => None,
            };
        };
        let s = |k: &str| def.get(k).and_then(Value::as_str);
        let source = self.source_or_last(s("sourceId"));
        let computed = match (&source, s("headerField"), s("expression"), s("path")) {
            (Some(src), Some(h), _, _) => src.header(h).map(str::to_string),
            (Some(src), None, Some(e), _) => {
                let e = self.substitute(e);
                src.json()
                    .and_then(|j| assert::fhirpath_strings(self, &e, j).ok())
                    .and_then(|v| v.into_iter().next())
            }
            (Some(src), None, None, Some(p)) => {
                let p = self.substitute(p);
                assert::path_strings(self, src, &p)
                    .ok()
                    .and_then(|v| v.into_iter().next())
            }
            _ => None,
        };
        computed.or_else(|| s("defaultValue").map(str::to_string))
    }

    /// Replaces each `${name}` with the variable's value (an unknown name is left as written,
    /// so the request or comparison that uses it shows it).
    pub fn substitute(&self, text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            match after.find('}') {
                Some(end) => {
                    let name = &after[..end];
                    match self.variable(name) {
                        Some(v) => out.push_str(&v),
                        None => out.push_str(&rest[start..start + 3 + end]),
                    }
                    rest = &after[end + 1..];
                }
                None => {
                    out.push_str(&rest[start..]);
                    rest = "";
                }
            }
        }
        out.push_str(rest);
        out
    }
}

/// The HTTP status an R4 `assert.response` code means.
pub fn response_code_status(code: &str) -> Option<u16> {
    Some(match code {
        "okay" => 200,
        "created" => 201,
        "noContent" => 204,
        "notModified" => 304,
        "bad" => 400,
        "forbidden" => 403,
        "notFound" => 404,
        "methodNotAllowed" => 405,
        "conflict" => 409,
        "gone" => 410,
        "preconditionFailed" => 412,
        "unprocessable" => 422,
        _ => return None,
    })
}

/// The media type an R4 `accept`/`contentType` code means (a full media type passes through).
pub fn media_type(code: &str) -> Option<String> {
    match code {
        "json" => Some("application/fhir+json".into()),
        "xml" => Some("application/fhir+xml".into()),
        "ttl" => Some("text/turtle".into()),
        "none" => None,
        other => Some(other.to_string()),
    }
}

/// R4 operation codes that are FHIR interactions (the rest are `$operations`).
fn interaction_method(code: &str) -> Option<&'static str> {
    Some(match code {
        "read" | "vread" | "search" | "searchType" | "searchSystem" | "history"
        | "historyInstance" | "historyType" | "historySystem" | "capabilities" => "GET",
        "create" | "transaction" | "batch" => "POST",
        "update" | "updateCreate" => "PUT",
        "patch" => "PATCH",
        "delete" | "deleteCondSingle" | "deleteCondMultiple" => "DELETE",
        _ => return None,
    })
}

/// Runs one script against the target.
pub async fn run_script(target: &Target, script: &LoadedScript) -> ScriptRun {
    let mut run = ScriptRun {
        suite: script.suite.clone(),
        id: script.id(),
        title: script.title(),
        family: script.family(),
        path: script.path.display().to_string(),
        report: Value::Null,
        failures: Vec::new(),
        asserts_passed: 0,
        asserts_total: 0,
        interactions: Vec::new(),
    };
    let mut report = json!({
        "resourceType": "TestReport",
        "id": report_id(&run.id),
        "name": run.title,
        "status": "completed",
        "testScript": {"reference": format!("TestScript/{}", run.id), "display": script.path.display().to_string()},
        "result": "pending",
        "tester": "huitong conformance",
        "issued": now_instant(),
        "participant": [
            {"type": "test-engine", "uri": "urn:huitong:conformance", "display": format!("huitong {}", env!("CARGO_PKG_VERSION"))},
            {"type": "server", "uri": target.base}
        ]
    });
    let fixtures = match script.fixtures() {
        Ok(f) => f,
        Err(e) => {
            run.failures.push(Evidence {
                section: "setup".into(),
                action: "fixtures".into(),
                result: "error".into(),
                message: e.clone(),
                exchange: None,
            });
            report["result"] = json!("fail");
            report["setup"] = json!({"action": [{"operation": {"result": "error", "message": e}}]});
            run.report = report;
            return run;
        }
    };
    let profiles = script
        .json
        .get("profile")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|p| {
            Some((
                p.get("id")?.as_str()?.to_string(),
                p.get("reference")?.as_str()?.to_string(),
            ))
        })
        .collect();
    let mut st = State {
        target,
        script,
        fixtures,
        responses: HashMap::new(),
        last: None,
        profiles,
    };
    let mut setup_actions = Vec::new();
    let mut setup_ok = autocreate(&mut st, &mut run, &mut setup_actions).await;
    if setup_ok && let Some(setup) = script.json.get("setup") {
        let (actions, ok) = run_actions(&mut st, &mut run, "setup", setup, false).await;
        setup_actions.extend(actions);
        setup_ok = ok;
    }
    if !setup_actions.is_empty() {
        report["setup"] = json!({ "action": setup_actions });
    }
    let mut tests = Vec::new();
    for t in script
        .json
        .get("test")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let name = t
            .get("name")
            .or_else(|| t.get("id"))
            .and_then(Value::as_str)
            .unwrap_or("test")
            .to_string();
        let (actions, _) = if setup_ok {
            run_actions(&mut st, &mut run, &name, t, false).await
        } else {
            (skip_all(t, "setup failed"), false)
        };
        let mut entry = json!({ "name": name, "action": actions });
        if let Some(d) = t.get("description") {
            entry["description"] = d.clone();
        }
        tests.push(entry);
    }
    if !tests.is_empty() {
        report["test"] = json!(tests);
    }
    let mut teardown_actions = Vec::new();
    if let Some(td) = script.json.get("teardown") {
        let (actions, _) = run_actions(&mut st, &mut run, "teardown", td, true).await;
        teardown_actions.extend(actions);
    }
    autodelete(&mut st, &mut run, &mut teardown_actions).await;
    if !teardown_actions.is_empty() {
        // TestReport.teardown.action holds operations only.
        let ops: Vec<Value> = teardown_actions
            .into_iter()
            .filter(|a| a.get("operation").is_some())
            .collect();
        if !ops.is_empty() {
            report["teardown"] = json!({ "action": ops });
        }
    }
    let failed = run
        .failures
        .iter()
        .any(|f| f.result == "fail" || f.result == "error");
    report["result"] = json!(if failed { "fail" } else { "pass" });
    if run.asserts_total > 0 {
        let score = (run.asserts_passed as f64) * 100.0 / (run.asserts_total as f64);
        report["score"] = serde_json::Number::from_f64((score * 10.0).round() / 10.0)
            .map(Value::Number)
            .unwrap_or(Value::Null);
    }
    run.report = report;
    run
}

/// TestReport ids: the script id, kept within the FHIR id rules.
fn report_id(script_id: &str) -> String {
    let mut id: String = script_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect();
    id.truncate(64);
    if id.is_empty() { "report".into() } else { id }
}

fn now_instant() -> String {
    time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".into())
}

fn skip_all(section: &Value, why: &str) -> Vec<Value> {
    section
        .get("action")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|a| {
            let kind = if a.get("operation").is_some() {
                "operation"
            } else {
                "assert"
            };
            json!({ kind: {"result": "skip", "message": why} })
        })
        .collect()
}

/// Fixtures with `autocreate`: created before the setup (the server's id is kept for
/// `targetId` and `autodelete`).
async fn autocreate(st: &mut State<'_>, run: &mut ScriptRun, actions: &mut Vec<Value>) -> bool {
    let ids: Vec<String> = fixture_flags(st.script, "autocreate");
    for id in ids {
        let Some(f) = st.fixtures.get(&id).cloned() else {
            continue;
        };
        let ty = f
            .json
            .as_ref()
            .and_then(|j| j.get("resourceType"))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let url = format!("{}/{ty}", st.target.base);
        let ex = exchange::send(
            &st.target.client,
            "POST",
            &url,
            vec![
                ("Content-Type".into(), "application/fhir+json".into()),
                ("Accept".into(), "application/fhir+json".into()),
                ("Prefer".into(), "return=representation".into()),
            ],
            Some(st.substitute_body(&f.body)),
        )
        .await;
        let ok = ex.error.is_none() && (200..300).contains(&ex.status);
        run.interactions
            .push(("create".into(), ex.status.to_string(), ok));
        if ok {
            let server_id = ex
                .response_json
                .as_ref()
                .and_then(|j| j.get("id"))
                .and_then(Value::as_str)
                .map(str::to_string)
                .or_else(|| location_id(&ex));
            if let (Some(sid), Some(fx)) = (server_id, st.fixtures.get_mut(&id))
                && let Some(j) = fx.json.as_mut()
            {
                j["id"] = json!(sid);
            }
            actions.push(json!({"operation": {"result": "pass", "message": format!("autocreate {id}: {}", ex.summary())}}));
        } else {
            let msg = format!("autocreate {id}: {}", ex.summary());
            actions.push(json!({"operation": {"result": "error", "message": msg}}));
            run.failures.push(Evidence {
                section: "setup".into(),
                action: format!("autocreate {id}"),
                result: "error".into(),
                message: msg,
                exchange: Some(ex),
            });
            return false;
        }
    }
    true
}

async fn autodelete(st: &mut State<'_>, run: &mut ScriptRun, actions: &mut Vec<Value>) {
    for id in fixture_flags(st.script, "autodelete") {
        let Some((ty, rid)) = st.fixtures.get(&id).and_then(|f| {
            let j = f.json.as_ref()?;
            Some((
                j.get("resourceType")?.as_str()?.to_string(),
                j.get("id")?.as_str()?.to_string(),
            ))
        }) else {
            continue;
        };
        let url = format!("{}/{ty}/{rid}", st.target.base);
        let ex = exchange::send(&st.target.client, "DELETE", &url, Vec::new(), None).await;
        let ok = ex.error.is_none() && (200..300).contains(&ex.status);
        run.interactions
            .push(("delete".into(), ex.status.to_string(), ok));
        let result = if ok { "pass" } else { "error" };
        actions.push(json!({"operation": {"result": result, "message": format!("autodelete {id}: {}", ex.summary())}}));
    }
}

fn fixture_flags(script: &LoadedScript, flag: &str) -> Vec<String> {
    script
        .json
        .get("fixture")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|f| f.get(flag).and_then(Value::as_bool) == Some(true))
        .filter_map(|f| f.get("id").and_then(Value::as_str).map(str::to_string))
        .collect()
}

/// The id in a `Location` header (`.../Type/id/_history/n`).
fn location_id(ex: &Exchange) -> Option<String> {
    let loc = ex
        .response_header("location")
        .or_else(|| ex.response_header("content-location"))?;
    let path = loc.split('?').next()?;
    let parts: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    match parts.iter().position(|p| *p == "_history") {
        Some(h) if h >= 1 => Some(parts[h - 1].to_string()),
        _ => parts.last().map(|s| s.to_string()),
    }
}

impl State<'_> {
    /// A body with `${name}` replaced, when it is text.
    pub(crate) fn substitute_body(&self, body: &[u8]) -> Vec<u8> {
        match std::str::from_utf8(body) {
            Ok(text) if text.contains("${") => self.substitute(text).into_bytes(),
            _ => body.to_vec(),
        }
    }

    /// `(resourceType, id, versionId)` of the resource a fixture or response holds (a response
    /// without a body gives them from its `Location`).
    fn target_of(&self, id: &str) -> Option<(String, String, Option<String>)> {
        let src = self.source(id)?;
        if let Some(j) = src.json()
            && let (Some(t), Some(rid)) = (
                j.get("resourceType").and_then(Value::as_str),
                j.get("id").and_then(Value::as_str),
            )
            && t != "OperationOutcome"
        {
            let vid = j
                .pointer("/meta/versionId")
                .and_then(Value::as_str)
                .map(str::to_string);
            return Some((t.to_string(), rid.to_string(), vid));
        }
        let ex = src.exchange()?;
        let loc = ex.response_header("location")?;
        let path = loc.split('?').next()?;
        let parts: Vec<&str> = path.split('/').collect();
        let h = parts.iter().position(|p| *p == "_history");
        let (ty, rid, vid) = match h {
            Some(h) if h >= 2 => (parts[h - 2], parts[h - 1], parts.get(h + 1).copied()),
            _ if parts.len() >= 2 => (parts[parts.len() - 2], parts[parts.len() - 1], None),
            _ => return None,
        };
        Some((ty.to_string(), rid.to_string(), vid.map(str::to_string)))
    }
}

/// Runs the actions of a section; returns the TestReport actions and whether every one passed
/// (warnings count as passed). In teardown nothing stops the section.
async fn run_actions(
    st: &mut State<'_>,
    run: &mut ScriptRun,
    section: &str,
    def: &Value,
    teardown: bool,
) -> (Vec<Value>, bool) {
    let mut out = Vec::new();
    let mut ok = true;
    for action in def
        .get("action")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if !ok && !teardown {
            let kind = if action.get("operation").is_some() {
                "operation"
            } else {
                "assert"
            };
            out.push(json!({ kind: {"result": "skip", "message": "an earlier action failed"} }));
            continue;
        }
        if let Some(op) = action.get("operation") {
            let (result, message) = operation(st, run, section, op).await;
            if result != "pass" {
                ok = false;
            }
            out.push(json!({"operation": {"result": result, "message": message}}));
        } else if let Some(a) = action.get("assert") {
            let verdict = assert::check(st, a);
            let warning_only = a.get("warningOnly").and_then(Value::as_bool) == Some(true);
            let (result, message) = match verdict {
                Verdict::Pass(m) => {
                    run.asserts_passed += 1;
                    ("pass", m)
                }
                Verdict::Fail(m) if warning_only => {
                    run.asserts_passed += 1;
                    ("warning", m)
                }
                Verdict::Fail(m) => ("fail", m),
                Verdict::Error(m) => ("error", m),
            };
            run.asserts_total += 1;
            if result == "fail" || result == "error" {
                ok = false;
                run.failures.push(Evidence {
                    section: section.to_string(),
                    action: label(a),
                    result: result.to_string(),
                    message: message.clone(),
                    exchange: st.last.clone(),
                });
            }
            let mut entry = json!({"result": result, "message": message});
            if let Some(l) = a.get("label").or_else(|| a.get("description")) {
                entry["detail"] = json!(format!("assert: {}", l.as_str().unwrap_or("")));
            }
            // TestReport.*.assert.detail is a string; the label goes there, the finding in message.
            out.push(json!({ "assert": entry }));
        } else {
            out.push(json!({"operation": {"result": "error", "message": "an action that is neither an operation nor an assert"}}));
            ok = false;
        }
    }
    (out, ok)
}

fn label(a: &Value) -> String {
    a.get("label")
        .or_else(|| a.get("description"))
        .and_then(Value::as_str)
        .unwrap_or("assert")
        .to_string()
}

/// Sends one operation; `(result, message)`.
async fn operation(
    st: &mut State<'_>,
    run: &mut ScriptRun,
    section: &str,
    op: &Value,
) -> (&'static str, String) {
    let req = match build_request(st, op) {
        Ok(r) => r,
        Err(e) => {
            run.failures.push(Evidence {
                section: section.to_string(),
                action: op_label(op),
                result: "error".into(),
                message: e.clone(),
                exchange: None,
            });
            return ("error", e);
        }
    };
    let ex = exchange::send(
        &st.target.client,
        &req.method,
        &req.url,
        req.headers,
        req.body,
    )
    .await;
    let code = op_code(op);
    run.interactions.push((
        code.clone(),
        ex.status.to_string(),
        ex.error.is_none() && ex.status < 400,
    ));
    let message = ex.summary();
    let result = if let Some(e) = &ex.error {
        run.failures.push(Evidence {
            section: section.to_string(),
            action: op_label(op),
            result: "error".into(),
            message: e.clone(),
            exchange: Some(ex.clone()),
        });
        "error"
    } else {
        "pass"
    };
    if let Some(rid) = op.get("responseId").and_then(Value::as_str) {
        st.responses.insert(rid.to_string(), ex.clone());
    }
    if let Some(rid) = op.get("requestId").and_then(Value::as_str) {
        st.responses.insert(rid.to_string(), ex.clone());
    }
    st.last = Some(ex);
    (result, message)
}

fn op_code(op: &Value) -> String {
    op.pointer("/type/code")
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| {
            op.get("method")
                .and_then(Value::as_str)
                .unwrap_or("request")
                .to_string()
        })
}

fn op_label(op: &Value) -> String {
    op.get("label")
        .or_else(|| op.get("description"))
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| op_code(op))
}

struct Request {
    method: String,
    url: String,
    headers: Vec<(String, String)>,
    body: Option<Vec<u8>>,
}

fn build_request(st: &State<'_>, op: &Value) -> Result<Request, String> {
    let s = |k: &str| op.get(k).and_then(Value::as_str);
    let code = op_code(op);
    let base = &st.target.base;
    let target = match s("targetId") {
        Some(t) => Some(st.target_of(t).ok_or_else(|| {
            format!("targetId '{t}' names no fixture or response with a resource id")
        })?),
        None => None,
    };
    let source_body = match s("sourceId") {
        Some(sid) => {
            let src = st
                .source(sid)
                .ok_or_else(|| format!("sourceId '{sid}' names no fixture or response"))?;
            Some((st.substitute_body(src.body()), src))
        }
        None => None,
    };
    let resource = s("resource")
        .map(str::to_string)
        .or_else(|| target.as_ref().map(|t| t.0.clone()))
        .or_else(|| {
            source_body
                .as_ref()
                .and_then(|(b, _)| serde_json::from_slice::<Value>(b).ok())
                .and_then(|j| j.get("resourceType")?.as_str().map(str::to_string))
                .filter(|t| t != "Bundle" || !matches!(code.as_str(), "transaction" | "batch"))
        });
    let params = s("params").map(|p| st.substitute(p)).unwrap_or_default();
    let ty = resource.clone().unwrap_or_default();
    let typed = |suffix: &str| -> String {
        if ty.is_empty() {
            format!("{base}{suffix}")
        } else {
            format!("{base}/{ty}{suffix}")
        }
    };
    let interaction = interaction_method(&code);
    let url = if let Some(u) = s("url") {
        let u = st.substitute(u);
        if u.starts_with("http://") || u.starts_with("https://") {
            u
        } else {
            format!("{base}/{}", u.trim_start_matches('/'))
        }
    } else {
        match code.as_str() {
            "capabilities" => format!("{base}/metadata{params}"),
            "transaction" | "batch" => format!("{base}{params}"),
            "searchSystem" => format!("{base}{params}"),
            "historySystem" => format!("{base}/_history{params}"),
            "historyType" => typed(&format!("/_history{params}")),
            "create" | "search" | "searchType" | "deleteCondSingle" | "deleteCondMultiple" => {
                typed(&params)
            }
            "vread" => match (&target, params.is_empty()) {
                (Some((t, id, Some(v))), true) => format!("{base}/{t}/{id}/_history/{v}"),
                (Some((_, _, None)), true) => {
                    return Err("vread: the target has no meta.versionId".into());
                }
                _ => typed(&params),
            },
            "history" | "historyInstance" => match (&target, params.is_empty()) {
                (Some((t, id, _)), true) => format!("{base}/{t}/{id}/_history"),
                (None, true) => typed("/_history"),
                _ => typed(&params),
            },
            "read" | "update" | "updateCreate" | "patch" | "delete" => {
                match (&target, params.is_empty()) {
                    (Some((t, id, _)), true) => format!("{base}/{t}/{id}"),
                    (None, true) if code.starts_with("update") => {
                        let id = source_body
                            .as_ref()
                            .and_then(|(b, _)| serde_json::from_slice::<Value>(b).ok())
                            .and_then(|j| j.get("id")?.as_str().map(str::to_string))
                            .ok_or("update: no targetId, params or id in the body")?;
                        typed(&format!("/{id}"))
                    }
                    _ => typed(&params),
                }
            }
            other => {
                let name = other.trim_start_matches('$');
                match &target {
                    Some((t, id, _)) => format!("{base}/{t}/{id}/${name}{params}"),
                    None => typed(&format!("/${name}{params}")),
                }
            }
        }
    };
    let method = match s("method") {
        Some(m) => m.to_ascii_uppercase(),
        None => match interaction {
            Some(m) => m.to_string(),
            None if source_body.is_some() => "POST".to_string(),
            None if s("url").is_some() && source_body.is_none() => "GET".to_string(),
            None => "GET".to_string(),
        },
    };
    let mut headers: Vec<(String, String)> = Vec::new();
    if let Some(a) = s("accept").and_then(media_type) {
        headers.push(("Accept".into(), a));
    }
    let body = source_body.map(|(b, src)| {
        let explicit = s("contentType");
        let ct = match explicit {
            Some(c) => media_type(c),
            None if code == "patch" && b.first() == Some(&b'[') => {
                Some("application/json-patch+json".to_string())
            }
            None => match src {
                Source::Fixture(f) => f.media_type.clone(),
                Source::Exchange(e) => e.response_header("content-type").map(str::to_string),
            },
        };
        let ct = match (ct.as_deref(), code.as_str()) {
            (Some("application/fhir+json"), "patch") if b.first() == Some(&b'[') => {
                Some("application/json-patch+json".to_string())
            }
            _ => ct,
        };
        if let Some(ct) = ct {
            headers.push(("Content-Type".into(), ct));
        }
        b
    });
    for h in op
        .get("requestHeader")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let (Some(f), Some(v)) = (
            h.get("field").and_then(Value::as_str),
            h.get("value").and_then(Value::as_str),
        ) {
            headers.retain(|(k, _)| !k.eq_ignore_ascii_case(f));
            headers.push((f.to_string(), st.substitute(v)));
        }
    }
    Ok(Request {
        method,
        url,
        headers,
        body,
    })
}
