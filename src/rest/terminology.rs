//! Terminology operations over REST: `$expand`, `$validate-code`, `$lookup`, `$subsumes` and
//! `$translate`, at system, type and instance level.
//!
//! Handlers only read parameters and shape the output; the answers come from
//! [`crate::terminology`]. A request may carry its own CodeSystems, ValueSets and ConceptMaps in
//! `tx-resource` parameters (as the FHIR terminology ecosystem's clients do); they are visible to
//! that request only. Unknown parameters are refused (400), unknown value sets and code systems are
//! 404, a value set that cannot be expanded (cycle, too costly, broken filter, a code system that is
//! not available) is 422.

use super::AppState;
use super::http::ApiResult;
use super::operations::{self, Invocation, Level};
use crate::model::{FhirError, Issue};
use crate::terminology::expand::{self, ExpandError, ExpandOptions, Expansion, OpenReason};
use crate::terminology::translate::{self, TranslateRequest};
use crate::terminology::{
    CodeIssue, CodeRequest, Scope, Severity, TermError, Terminology, Verdict,
};
use serde_json::{Map, Value, json};
use std::collections::HashMap;
use std::sync::Arc;

pub async fn invoke(st: &AppState, inv: Invocation) -> ApiResult {
    let ty = inv.resource_type().map(str::to_string);
    let result = match (inv.name.as_str(), ty.as_deref()) {
        ("expand", None | Some("ValueSet")) => expand_op(st, &inv).await,
        ("validate-code", Some("CodeSystem")) => validate_code_cs(st, &inv).await,
        ("validate-code", None | Some("ValueSet")) => validate_code_op(st, &inv).await,
        ("lookup", None | Some("CodeSystem")) => lookup_op(st, &inv).await,
        ("subsumes", None | Some("CodeSystem")) => subsumes_op(st, &inv).await,
        ("translate", None | Some("ConceptMap")) => translate_op(st, &inv).await,
        (name, Some(t)) => Err(FhirError::new(
            404,
            "not-supported",
            format!("operation ${name} is not defined on {t}"),
        )),
        (name, None) => Err(FhirError::new(
            404,
            "not-supported",
            format!("operation ${name} is not supported"),
        )),
    };
    match result {
        Ok(v) => operations::output(200, &v, inv.format),
        Err(e) => Err(e.into()),
    }
}

/// The error answered for a terminology failure.
fn term_error(e: TermError) -> FhirError {
    match e {
        TermError::NotFound(m) => FhirError::new(404, "not-found", m),
        TermError::Invalid(m) => FhirError::new(400, "invalid", m),
        TermError::Expand(e @ ExpandError::TooCostly(_)) => {
            FhirError::new(422, "too-costly", e.to_string())
        }
        TermError::Expand(e) => FhirError::new(422, "processing", e.to_string()),
    }
}

fn bad(msg: impl Into<String>) -> FhirError {
    FhirError::new(400, "invalid", msg)
}

fn flag(inv: &Invocation, name: &str) -> Result<bool, FhirError> {
    match inv.text(name).as_deref() {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(other) => Err(bad(format!(
            "parameter '{name}' must be true or false, not '{other}'"
        ))),
    }
}

fn number(inv: &Invocation, name: &str) -> Result<Option<usize>, FhirError> {
    match inv.text(name) {
        None => Ok(None),
        Some(t) => t.parse::<usize>().map(Some).map_err(|_| {
            bad(format!(
                "parameter '{name}' must be a non-negative integer, not '{t}'"
            ))
        }),
    }
}

/// The request's scope: the registry plus its `tx-resource` parameters.
fn scope_of(st: &AppState, inv: &Invocation) -> Result<Scope, FhirError> {
    let mut scope = st.terminology.scope();
    for p in inv.params("tx-resource") {
        let Some(r) = p.get("resource") else {
            return Err(bad("parameter 'tx-resource' must carry a resource"));
        };
        match r.get("resourceType").and_then(Value::as_str) {
            Some("CodeSystem" | "ValueSet" | "ConceptMap") => scope = scope.with(r.clone()),
            other => {
                return Err(bad(format!(
                    "tx-resource must be a CodeSystem, ValueSet or ConceptMap, not {}",
                    other.unwrap_or("a resource without resourceType")
                )));
            }
        }
    }
    Ok(scope)
}

/// The resource an instance-level call names: from the store, or else a registered resource with
/// that id (so `ValueSet/administrative-gender/$expand` works on the core value sets).
async fn instance(st: &AppState, ty: &str, id: &str) -> Result<Value, FhirError> {
    match super::read::fetch(st, ty, id, None).await {
        Ok(v) => v
            .body
            .as_ref()
            .and_then(|b| serde_json::from_slice(b).ok())
            .ok_or_else(|| {
                FhirError::new(500, "exception", format!("{ty}/{id} could not be read"))
            }),
        Err(e) if e.status == 404 => st
            .registry
            .catalogue()
            .all(ty)
            .find(|r| match r.resource.get("id").and_then(Value::as_str) {
                Some(rid) => rid == id,
                // The compact core artefact drops ids; the canonical URL ends with `{type}/{id}`.
                None => r
                    .resource
                    .get("url")
                    .and_then(Value::as_str)
                    .is_some_and(|u| u.ends_with(&format!("/{ty}/{id}"))),
            })
            .map(|r| (*r.resource).clone())
            .ok_or(e),
        Err(e) => Err(e),
    }
}

/// `system-version` / `force-system-version` parameters (`url|version`) by URL.
fn system_versions(inv: &Invocation, name: &str) -> HashMap<String, String> {
    inv.params(name)
        .filter_map(|p| {
            p.as_object()?
                .iter()
                .find(|(k, _)| k.starts_with("value"))
                .and_then(|(_, v)| v.as_str())
        })
        .filter_map(|c| c.split_once('|'))
        .map(|(u, v)| (u.to_string(), v.to_string()))
        .collect()
}

/// The value set a `$expand`/`$validate-code` is about, as a resource and a label for messages.
async fn target_value_set(
    st: &AppState,
    inv: &Invocation,
    scope: &Scope,
) -> Result<(Arc<Value>, String), FhirError> {
    if let Level::Instance(_, id) = &inv.level {
        let vs = instance(st, "ValueSet", id).await?;
        let label = expand::canonical_of(&vs);
        return Ok((Arc::new(vs), label));
    }
    if let Some(vs) = inv.resource("valueSet") {
        if vs.get("resourceType").and_then(Value::as_str) != Some("ValueSet") {
            return Err(bad("parameter 'valueSet' must be a ValueSet"));
        }
        return Ok((Arc::new(vs.clone()), expand::canonical_of(vs)));
    }
    let Some(url) = inv.text("url") else {
        return Err(bad(format!(
            "${} needs a value set: 'url' or 'valueSet'",
            inv.name
        )));
    };
    let canonical = match (url.contains('|'), inv.text("valueSetVersion")) {
        (false, Some(v)) => format!("{url}|{v}"),
        _ => url,
    };
    if let Some(system) = canonical.strip_suffix("?fhir_vs") {
        let vs = json!({"resourceType": "ValueSet", "url": canonical.clone(), "status": "active",
            "compose": {"include": [{"system": system}]}});
        return Ok((Arc::new(vs), canonical));
    }
    let vs = scope.value_set(&canonical).ok_or_else(|| {
        FhirError::new(
            404,
            "not-found",
            format!("value set {canonical} is not known"),
        )
    })?;
    let label = expand::canonical_of(&vs);
    Ok((vs, label))
}

fn expand_value_set(
    t: &Terminology,
    scope: &Scope,
    vs: &Value,
    options: &ExpandOptions,
) -> Result<Arc<Expansion>, FhirError> {
    let canonical = expand::canonical_of(vs);
    // A registered value set is expanded through the cache.
    let registered = scope.is_shared()
        && !canonical.starts_with('#')
        && scope.value_set(&canonical).is_some_and(|r| *r == *vs);
    let result = if registered {
        t.expand_canonical(scope, &canonical, options)
    } else {
        t.expand_resource(scope, vs, options)
    };
    result.map_err(term_error)
}

const EXPAND_PARAMS: &[&str] = &[
    "url",
    "valueSet",
    "valueSetVersion",
    "filter",
    "count",
    "offset",
    "activeOnly",
    "includeDesignations",
    "includeDefinition",
    "excludeNested",
    "excludeNotForUI",
    "excludePostCoordinated",
    "displayLanguage",
    "system-version",
    "force-system-version",
    "tx-resource",
    "property",
];

async fn expand_op(st: &AppState, inv: &Invocation) -> Result<Value, FhirError> {
    inv.only(EXPAND_PARAMS)?;
    let scope = scope_of(st, inv)?;
    let (vs, _) = target_value_set(st, inv, &scope).await?;
    let options = ExpandOptions {
        active_only: flag(inv, "activeOnly")?,
        system_versions: system_versions(inv, "system-version"),
        force_versions: system_versions(inv, "force-system-version"),
    };
    let count = number(inv, "count")?;
    let offset = number(inv, "offset")?.unwrap_or(0);
    let designations = flag(inv, "includeDesignations")?;
    let language = inv.text("displayLanguage");
    let filter = inv.text("filter").map(|f| f.to_lowercase());
    let exp = expand_value_set(&st.terminology, &scope, &vs, &options)?;
    if let Some(open) = exp.open.first() {
        let (code, why) = match open.reason {
            OpenReason::Unknown => ("not-found", "is not known"),
            OpenReason::Ucum => (
                "too-costly",
                "is UCUM, an infinite grammar that cannot be listed",
            ),
            OpenReason::External => (
                "too-costly",
                "is too large to ship and no local fragment is loaded",
            ),
            OpenReason::NotPresent => ("not-supported", "is registered without its content"),
        };
        return Err(FhirError::new(
            422,
            code,
            format!(
                "value set {} cannot be expanded: code system {} {why}",
                expand::canonical_of(&vs),
                open.system
            ),
        ));
    }
    let matching: Vec<&expand::Entry> = exp
        .contains
        .iter()
        .filter(|e| match &filter {
            None => true,
            Some(f) => {
                e.code.to_lowercase().contains(f.as_str())
                    || e.display
                        .as_ref()
                        .is_some_and(|d| d.to_lowercase().contains(f.as_str()))
                    || e.designations
                        .iter()
                        .any(|d| d.value.to_lowercase().contains(f.as_str()))
            }
        })
        .collect();
    let total = matching.len();
    let page = matching
        .into_iter()
        .skip(offset)
        .take(count.unwrap_or(usize::MAX));
    let contains: Vec<Value> = page
        .map(|e| contains_entry(e, designations, language.as_deref()))
        .collect();

    let mut parameters: Vec<Value> = Vec::new();
    for u in &exp.used {
        parameters.push(json!({"name": "used-codesystem", "valueUri": u}));
    }
    for echoed in [
        "activeOnly",
        "includeDesignations",
        "excludeNested",
        "filter",
        "displayLanguage",
        "count",
        "offset",
    ] {
        if let Some(p) = inv.param(echoed) {
            parameters.push(p.clone());
        }
    }
    // Accepted but not applied: said in the expansion so a client is not misled.
    if inv.param("property").is_some() {
        parameters.push(json!({"name": "warning", "valueString": "the 'property' parameter is accepted but concept properties are not returned in expansions"}));
    }
    for w in &exp.warnings {
        parameters.push(json!({"name": "warning", "valueString": w}));
    }
    let mut expansion = Map::new();
    expansion.insert(
        "identifier".into(),
        json!(format!("urn:uuid:{}", uuid::Uuid::new_v4())),
    );
    expansion.insert("timestamp".into(), json!(now()));
    expansion.insert("total".into(), json!(total));
    expansion.insert("offset".into(), json!(offset));
    if !parameters.is_empty() {
        expansion.insert("parameter".into(), Value::Array(parameters));
    }
    if !contains.is_empty() {
        expansion.insert("contains".into(), Value::Array(contains));
    }
    let mut out = Map::new();
    if let Some(obj) = vs.as_object() {
        for (k, v) in obj {
            if !matches!(k.as_str(), "expansion" | "text" | "meta") {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    out.insert("resourceType".into(), json!("ValueSet"));
    out.insert("expansion".into(), Value::Object(expansion));
    Ok(Value::Object(out))
}

fn now() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

fn contains_entry(e: &expand::Entry, designations: bool, language: Option<&str>) -> Value {
    let mut c = Map::new();
    c.insert("system".into(), json!(e.system));
    if e.abstract_ {
        c.insert("abstract".into(), json!(true));
    }
    if e.inactive {
        c.insert("inactive".into(), json!(true));
    }
    if let Some(v) = &e.version {
        c.insert("version".into(), json!(v));
    }
    c.insert("code".into(), json!(e.code));
    // A designation in the requested language replaces the display.
    let localised = language.and_then(|l| {
        e.designations.iter().find(|d| {
            d.language
                .as_deref()
                .is_some_and(|dl| dl == l || dl.starts_with(&format!("{l}-")))
        })
    });
    match (localised, &e.display) {
        (Some(d), _) => {
            c.insert("display".into(), json!(d.value));
        }
        (None, Some(d)) => {
            c.insert("display".into(), json!(d));
        }
        _ => {}
    }
    if designations && !e.designations.is_empty() {
        let list: Vec<Value> = e
            .designations
            .iter()
            .map(|d| {
                let mut m = Map::new();
                if let Some(l) = &d.language {
                    m.insert("language".into(), json!(l));
                }
                if let Some(u) = &d.use_ {
                    m.insert("use".into(), u.clone());
                }
                m.insert("value".into(), json!(d.value));
                Value::Object(m)
            })
            .collect();
        c.insert("designation".into(), Value::Array(list));
    }
    Value::Object(c)
}

const VALIDATE_PARAMS: &[&str] = &[
    "url",
    "valueSet",
    "valueSetVersion",
    "code",
    "system",
    "systemVersion",
    "system-version",
    "force-system-version",
    "version",
    "display",
    "coding",
    "codeableConcept",
    "inferSystem",
    "activeOnly",
    "lenient-display-validation",
    "displayLanguage",
    "abstract",
    "default-to-latest-version",
    "valueset-membership-only",
    "diagnostics",
    "tx-resource",
];

/// The codings a `$validate-code` asks about, with the FHIRPath prefix its issues are located at.
fn codings_of(inv: &Invocation) -> Result<(Vec<Value>, &'static str), FhirError> {
    if let Some(cc) = inv.value("codeableConcept", "valueCodeableConcept") {
        let list: Vec<Value> = cc
            .get("coding")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if list.is_empty() {
            return Err(bad("the codeableConcept has no coding"));
        }
        return Ok((list, "CodeableConcept.coding"));
    }
    if let Some(c) = inv.value("coding", "valueCoding") {
        return Ok((vec![c.clone()], "Coding"));
    }
    let Some(code) = inv.text("code") else {
        return Err(bad(format!(
            "${} needs 'code', 'coding' or 'codeableConcept'",
            inv.name
        )));
    };
    let mut c = Map::new();
    if let Some(s) = inv.text("system") {
        c.insert("system".into(), json!(s));
    }
    if let Some(v) = inv.text("systemVersion").or_else(|| inv.text("version")) {
        c.insert("version".into(), json!(v));
    }
    c.insert("code".into(), json!(code));
    if let Some(d) = inv.text("display") {
        c.insert("display".into(), json!(d));
    }
    Ok((vec![Value::Object(c)], ""))
}

fn s<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

async fn validate_code_op(st: &AppState, inv: &Invocation) -> Result<Value, FhirError> {
    inv.only(VALIDATE_PARAMS)?;
    let scope = scope_of(st, inv)?;
    // At system level a `url` naming a code system (and no value set) asks the CodeSystem form.
    if inv.level == Level::System
        && inv.resource("valueSet").is_none()
        && let Some(url) = inv.text("url")
        && scope.value_set(&url).is_none()
        && scope.code_system(&url, None).is_some()
    {
        return validate_code_cs(st, inv).await;
    }
    let (vs, label) = target_value_set(st, inv, &scope).await?;
    let options = ExpandOptions {
        active_only: flag(inv, "activeOnly")?,
        system_versions: system_versions(inv, "system-version"),
        force_versions: system_versions(inv, "force-system-version"),
    };
    let exp = expand_value_set(&st.terminology, &scope, &vs, &options)?;
    let (codings, at) = codings_of(inv)?;
    let infer = flag(inv, "inferSystem")?;
    let mut verdicts: Vec<Verdict> = Vec::new();
    for c in &codings {
        let req = CodeRequest {
            system: s(c, "system"),
            version: s(c, "version"),
            code: s(c, "code").unwrap_or(""),
            display: s(c, "display"),
            infer_system: infer,
        };
        // A coding that names its code system version is checked against the value set expanded
        // with that version, wherever the value set leaves the version open.
        let versioned = match (req.system, req.version) {
            (Some(sys), Some(ver)) if !options.system_versions.contains_key(sys) => {
                let mut o = options.clone();
                o.system_versions.insert(sys.to_string(), ver.to_string());
                Some(expand_value_set(&st.terminology, &scope, &vs, &o)?)
            }
            _ => None,
        };
        let exp = versioned.as_ref().unwrap_or(&exp);
        verdicts.push(st.terminology.check_in(&scope, exp, &label, &req));
    }
    verdict_parameters(inv, verdicts, at)
}

async fn validate_code_cs(st: &AppState, inv: &Invocation) -> Result<Value, FhirError> {
    inv.only(VALIDATE_PARAMS)?;
    let scope = scope_of(st, inv)?;
    let (codings, at) = codings_of(inv)?;
    let url = match &inv.level {
        Level::Instance(_, id) => {
            let cs = instance(st, "CodeSystem", id).await?;
            match s(&cs, "url") {
                Some(u) => u.to_string(),
                None => {
                    return Err(FhirError::new(
                        422,
                        "processing",
                        format!("CodeSystem/{id} has no url"),
                    ));
                }
            }
        }
        _ => match inv.text("url") {
            Some(u) => u,
            None => match codings.first().and_then(|c| s(c, "system")) {
                Some(sys) => sys.to_string(),
                None => {
                    return Err(bad(
                        "CodeSystem/$validate-code needs 'url' or a coding with a system",
                    ));
                }
            },
        },
    };
    let cs_version = inv.text("version");
    let mut verdicts = Vec::new();
    for c in &codings {
        if let Some(sys) = s(c, "system")
            && sys != url
        {
            let v = Verdict {
                check: crate::terminology::CodeCheck::Invalid(format!(
                    "the coding's system {sys} is not {url}"
                )),
                result: false,
                system: Some(sys.to_string()),
                version: None,
                code: s(c, "code").unwrap_or("").to_string(),
                display: None,
                inactive: false,
                display_problem: None,
                unknown_code: false,
                issues: vec![CodeIssue {
                    severity: Severity::Error,
                    code: "invalid",
                    message: format!("the coding's system {sys} is not the code system {url}"),
                    about: "system",
                }],
            };
            verdicts.push(v);
            continue;
        }
        let req = CodeRequest {
            system: Some(&url),
            version: s(c, "version").or(cs_version.as_deref()),
            code: s(c, "code").unwrap_or(""),
            display: s(c, "display"),
            infer_system: false,
        };
        verdicts.push(
            st.terminology
                .check_in_code_system(&scope, &url, &req)
                .map_err(term_error)?,
        );
    }
    verdict_parameters(inv, verdicts, at)
}

/// The `$validate-code` output: the first valid coding's verdict, else the first one's, with the
/// issues of every coding.
fn verdict_parameters(
    inv: &Invocation,
    verdicts: Vec<Verdict>,
    at: &str,
) -> Result<Value, FhirError> {
    let lenient = flag(inv, "lenient-display-validation")?;
    let membership_only = flag(inv, "valueset-membership-only")?;
    let mut verdicts: Vec<Verdict> = verdicts
        .into_iter()
        .map(|mut v| {
            if (lenient || membership_only)
                && v.display_problem.is_some()
                && v.issues
                    .iter()
                    .filter(|i| i.severity == Severity::Error)
                    .all(|i| i.about == "display")
            {
                v.result = true;
                v.check = crate::terminology::CodeCheck::Valid;
                for i in &mut v.issues {
                    if i.about == "display" {
                        i.severity = Severity::Warning;
                    }
                }
                if membership_only {
                    v.issues.retain(|i| i.about != "display");
                }
            }
            v
        })
        .collect();
    let chosen = verdicts.iter().position(|v| v.result).unwrap_or(0);
    // A coding whose code does not exist in its code system makes the whole concept wrong, even
    // when another coding is fine (as the ecosystem's reference servers answer).
    let result = verdicts.iter().any(|v| v.result) && !verdicts.iter().any(|v| v.unknown_code);
    let mut issues: Vec<Value> = Vec::new();
    for (i, v) in verdicts.iter().enumerate() {
        // When one coding of a CodeableConcept is valid, the others' "not in value set" errors are
        // not errors of the concept.
        let prefix = match at {
            "CodeableConcept.coding" => format!("CodeableConcept.coding[{i}]"),
            "Coding" => "Coding".to_string(),
            _ => String::new(),
        };
        for issue in &v.issues {
            let severity = match issue.severity {
                Severity::Error if result && !v.result => "information",
                Severity::Error => "error",
                Severity::Warning => "warning",
                Severity::Information => "information",
            };
            let expression = if prefix.is_empty() {
                issue.about.to_string()
            } else {
                format!("{prefix}.{}", issue.about)
            };
            let mut issue_json =
                crate::model::operation_outcome(&[
                    Issue::error(issue.code, issue.message.clone()).at(expression)
                ])["issue"][0]
                    .take();
            issue_json["severity"] = json!(severity);
            issue_json["details"] = json!({"text": issue.message});
            issues.push(issue_json);
        }
    }
    let v = verdicts.swap_remove(chosen);
    let mut params: Vec<Value> = vec![json!({"name": "result", "valueBoolean": result})];
    let message = if result {
        v.message()
            .filter(|_| v.issues.iter().any(|i| i.severity != Severity::Information))
    } else {
        let all: Vec<String> = verdicts
            .iter()
            .chain(std::iter::once(&v))
            .filter_map(Verdict::message)
            .collect();
        (!all.is_empty()).then(|| all.join("; "))
    };
    if let Some(m) = message {
        params.push(json!({"name": "message", "valueString": m}));
    }
    if let Some(d) = &v.display {
        params.push(json!({"name": "display", "valueString": d}));
    }
    if !v.code.is_empty() {
        params.push(json!({"name": "code", "valueCode": v.code}));
    }
    if let Some(sys) = &v.system {
        params.push(json!({"name": "system", "valueUri": sys}));
    }
    if let Some(ver) = &v.version {
        params.push(json!({"name": "version", "valueString": ver}));
    }
    if v.inactive {
        params.push(json!({"name": "inactive", "valueBoolean": true}));
    }
    if !issues.is_empty() {
        params.push(json!({"name": "issues", "resource": {"resourceType": "OperationOutcome", "issue": issues}}));
    }
    Ok(json!({"resourceType": "Parameters", "parameter": params}))
}

const LOOKUP_PARAMS: &[&str] = &[
    "system",
    "code",
    "version",
    "coding",
    "property",
    "displayLanguage",
    "date",
    "tx-resource",
];

async fn lookup_op(st: &AppState, inv: &Invocation) -> Result<Value, FhirError> {
    inv.only(LOOKUP_PARAMS)?;
    let scope = scope_of(st, inv)?;
    let coding = inv.value("coding", "valueCoding");
    let instance_url = match &inv.level {
        Level::Instance(_, id) => {
            s(&instance(st, "CodeSystem", id).await?, "url").map(str::to_string)
        }
        _ => None,
    };
    let system = instance_url
        .or_else(|| inv.text("system"))
        .or_else(|| coding.and_then(|c| s(c, "system")).map(str::to_string))
        .ok_or_else(|| bad("$lookup needs 'system' and 'code', or 'coding'"))?;
    let code = inv
        .text("code")
        .or_else(|| coding.and_then(|c| s(c, "code")).map(str::to_string))
        .ok_or_else(|| bad("$lookup needs 'code' or 'coding'"))?;
    let version = inv
        .text("version")
        .or_else(|| coding.and_then(|c| s(c, "version")).map(str::to_string));
    let l = st
        .terminology
        .lookup(&scope, &system, version.as_deref(), &code)
        .map_err(term_error)?;
    // Without `property`, the standard set; with it, the properties asked for (`*` = all).
    let wanted: Vec<String> = inv
        .params("property")
        .filter_map(|p| {
            p.as_object()?
                .iter()
                .find(|(k, _)| k.starts_with("value"))
                .and_then(|(_, v)| v.as_str().map(str::to_string))
        })
        .collect();
    let show = |name: &str| wanted.is_empty() || wanted.iter().any(|w| w == "*" || w == name);
    let mut params: Vec<Value> = Vec::new();
    if let Some(n) = &l.name {
        params.push(json!({"name": "name", "valueString": n}));
    }
    if let Some(v) = &l.version {
        params.push(json!({"name": "version", "valueString": v}));
    }
    if let Some(d) = &l.display {
        params.push(json!({"name": "display", "valueString": d}));
    }
    if let Some(d) = &l.definition {
        params.push(json!({"name": "definition", "valueString": d}));
    }
    params.push(json!({"name": "abstract", "valueBoolean": l.abstract_}));
    if show("designation") {
        for d in &l.designations {
            let mut parts: Vec<Value> = Vec::new();
            if let Some(lang) = &d.language {
                parts.push(json!({"name": "language", "valueCode": lang}));
            }
            if let Some(u) = &d.use_ {
                parts.push(json!({"name": "use", "valueCoding": u}));
            }
            parts.push(json!({"name": "value", "valueString": d.value}));
            params.push(json!({"name": "designation", "part": parts}));
        }
    }
    for (code, value) in &l.properties {
        if !show(code) {
            continue;
        }
        let mut parts = vec![json!({"name": "code", "valueCode": code})];
        if let Some((k, v)) = value.as_object().and_then(|o| o.iter().next()) {
            let mut part = Map::new();
            part.insert("name".into(), json!("value"));
            part.insert(k.clone(), v.clone());
            parts.push(Value::Object(part));
        }
        params.push(json!({"name": "property", "part": parts}));
    }
    Ok(json!({"resourceType": "Parameters", "parameter": params}))
}

const SUBSUMES_PARAMS: &[&str] = &[
    "codeA",
    "codeB",
    "system",
    "version",
    "codingA",
    "codingB",
    "tx-resource",
];

async fn subsumes_op(st: &AppState, inv: &Invocation) -> Result<Value, FhirError> {
    inv.only(SUBSUMES_PARAMS)?;
    let scope = scope_of(st, inv)?;
    let a_coding = inv.value("codingA", "valueCoding");
    let b_coding = inv.value("codingB", "valueCoding");
    let instance_url = match &inv.level {
        Level::Instance(_, id) => {
            s(&instance(st, "CodeSystem", id).await?, "url").map(str::to_string)
        }
        _ => None,
    };
    let system = instance_url
        .or_else(|| inv.text("system"))
        .or_else(|| a_coding.and_then(|c| s(c, "system")).map(str::to_string))
        .ok_or_else(|| bad("$subsumes needs 'system' (or codings with a system)"))?;
    for c in [a_coding, b_coding].into_iter().flatten() {
        if let Some(sys) = s(c, "system")
            && sys != system
        {
            return Err(bad(format!(
                "the codings must both be from {system}; one is from {sys}"
            )));
        }
    }
    let a = inv
        .text("codeA")
        .or_else(|| a_coding.and_then(|c| s(c, "code")).map(str::to_string))
        .ok_or_else(|| bad("$subsumes needs 'codeA' or 'codingA'"))?;
    let b = inv
        .text("codeB")
        .or_else(|| b_coding.and_then(|c| s(c, "code")).map(str::to_string))
        .ok_or_else(|| bad("$subsumes needs 'codeB' or 'codingB'"))?;
    let version = inv.text("version");
    let outcome = st
        .terminology
        .subsumes(&scope, &system, version.as_deref(), &a, &b)
        .map_err(term_error)?;
    Ok(
        json!({"resourceType": "Parameters", "parameter": [{"name": "outcome", "valueCode": outcome.code()}]}),
    )
}

const TRANSLATE_PARAMS: &[&str] = &[
    "url",
    "conceptMap",
    "conceptMapVersion",
    "code",
    "system",
    "version",
    "source",
    "coding",
    "codeableConcept",
    "target",
    "targetsystem",
    "reverse",
    "tx-resource",
    // R5 names, which R4 clients of the terminology ecosystem also send.
    "sourceCode",
    "sourceSystem",
    "sourceCoding",
    "sourceCodeableConcept",
    "sourceScope",
    "targetCode",
    "targetSystem",
    "targetCoding",
    "targetScope",
];

async fn translate_op(st: &AppState, inv: &Invocation) -> Result<Value, FhirError> {
    inv.only(TRANSLATE_PARAMS)?;
    let scope = scope_of(st, inv)?;
    let instance_map = match &inv.level {
        Level::Instance(_, id) => Some(instance(st, "ConceptMap", id).await?),
        _ => None,
    };
    let given_map = instance_map.as_ref().or_else(|| inv.resource("conceptMap"));
    // R5 `targetCode`/`targetCoding` ask the reverse question.
    let reverse_r5 = inv.param("targetCode").is_some() || inv.param("targetCoding").is_some();
    let reverse = flag(inv, "reverse")? || reverse_r5;
    let coding = inv
        .value("coding", "valueCoding")
        .or_else(|| inv.value("sourceCoding", "valueCoding"))
        .or_else(|| inv.value("targetCoding", "valueCoding"))
        .cloned()
        .or_else(|| {
            inv.value("codeableConcept", "valueCodeableConcept")
                .or_else(|| inv.value("sourceCodeableConcept", "valueCodeableConcept"))
                .and_then(|cc| cc.get("coding")?.as_array()?.first().cloned())
        });
    let code = inv
        .text("code")
        .or_else(|| inv.text("sourceCode"))
        .or_else(|| inv.text("targetCode"))
        .or_else(|| {
            coding
                .as_ref()
                .and_then(|c| s(c, "code"))
                .map(str::to_string)
        })
        .ok_or_else(|| bad("$translate needs a code: 'code', 'coding' or 'codeableConcept'"))?;
    let (system, target_system) = if reverse_r5 {
        // In R5 terms the code is in the target system and the answer in the source system.
        (inv.text("targetSystem"), inv.text("sourceSystem"))
    } else {
        (
            inv.text("system").or_else(|| inv.text("sourceSystem")),
            inv.text("targetsystem")
                .or_else(|| inv.text("targetSystem")),
        )
    };
    let system = system.or_else(|| {
        coding
            .as_ref()
            .and_then(|c| s(c, "system"))
            .map(str::to_string)
    });
    let url = match (inv.text("url"), inv.text("conceptMapVersion")) {
        (Some(u), Some(v)) if !u.contains('|') => Some(format!("{u}|{v}")),
        (u, _) => u,
    };
    let source_scope = inv.text("source").or_else(|| inv.text("sourceScope"));
    let target_scope = inv.text("target").or_else(|| inv.text("targetScope"));
    let req = TranslateRequest {
        url: url.as_deref(),
        concept_map: given_map,
        system: system.as_deref(),
        code: &code,
        source_scope: source_scope.as_deref(),
        target_scope: target_scope.as_deref(),
        target_system: target_system.as_deref(),
        reverse,
    };
    let matches =
        translate::translate(&scope, &req).map_err(|m| FhirError::new(404, "not-found", m))?;
    let result = matches.iter().any(translate::Match::is_match);
    let mut params = vec![json!({"name": "result", "valueBoolean": result})];
    if !result {
        params.push(json!({"name": "message", "valueString": format!(
            "no translation found for {}{code}",
            system.as_deref().map(|s| format!("{s}#")).unwrap_or_default()
        )}));
    }
    for m in matches {
        params.push(json!({"name": "match", "part": [
            {"name": "equivalence", "valueCode": m.equivalence},
            {"name": "concept", "valueCoding": m.concept},
            {"name": "source", "valueUri": m.source}
        ]}));
    }
    Ok(json!({"resourceType": "Parameters", "parameter": params}))
}
