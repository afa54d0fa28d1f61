//! Validation at the REST boundary: `$validate`, and the validate-on-write policy every write
//! (single interactions and Bundle entries) passes before it reaches the store.

use super::AppState;
use super::http::ApiResult;
use super::operations::{self, Invocation, Level};
use crate::config::ValidationPolicy;
use crate::model::{FhirError, Issue, Severity};
use crate::registry;
use serde_json::Value;

/// `[type]/$validate` and `[type]/[id]/$validate` with `resource`, `mode` and `profile`.
pub async fn validate(st: &AppState, inv: Invocation) -> ApiResult {
    inv.only(&["resource", "mode", "profile"])?;
    let ty = inv.resource_type().unwrap_or_default().to_string();
    let mode = inv.text("mode").unwrap_or_else(|| "general".to_string());
    let profile = inv.text("profile");
    let stored = match &inv.level {
        Level::Instance(t, id) => Some(super::read::fetch_json(st, t, id).await?),
        _ => None,
    };
    let resource = match (&mode[..], inv.resource("resource"), stored.as_ref()) {
        ("delete", _, Some(_)) => {
            // Deleting is always allowed here: no referential integrity rules are enforced yet.
            return operations::output(
                200,
                &crate::model::operation_outcome(&[Issue::information(
                    "informational",
                    "the resource may be deleted",
                )]),
                inv.format,
            );
        }
        ("delete", _, None) => {
            return Err(FhirError::new(400, "required", "mode=delete needs an instance").into());
        }
        ("general" | "create" | "update", Some(r), _) => r.clone(),
        ("general", None, Some(s)) => s.clone(),
        ("general" | "create" | "update", None, _) => {
            return Err(FhirError::new(
                400,
                "required",
                "$validate needs the resource: the request body, or a 'resource' parameter",
            )
            .into());
        }
        (other, _, _) => {
            return Err(FhirError::new(
                400,
                "value",
                format!("mode '{other}' is not one of create, update, delete"),
            )
            .into());
        }
    };
    if let Some(actual) = resource.get("resourceType").and_then(Value::as_str)
        && actual != ty
    {
        return Err(FhirError::new(
            400,
            "invalid",
            format!("resourceType '{actual}' does not match the type '{ty}' in the URL"),
        )
        .at("resourceType")
        .into());
    }
    let mut issues = Vec::new();
    if mode == "update" {
        let (body_id, url_id) = (
            resource.get("id").and_then(Value::as_str),
            match &inv.level {
                Level::Instance(_, id) => Some(id.as_str()),
                _ => None,
            },
        );
        match (body_id, url_id) {
            (None, _) => issues.push(
                Issue::error("required", "an update needs the resource id").at(format!("{ty}.id")),
            ),
            (Some(b), Some(u)) if b != u => issues.push(
                Issue::error("invalid", format!("id '{b}' differs from '{u}' in the URL"))
                    .at(format!("{ty}.id")),
            ),
            _ => {}
        }
    }
    let validator = st.validator.clone();
    let profiles: Vec<String> = profile.into_iter().collect();
    let report =
        tokio::task::spawn_blocking(move || validator.validate(&resource, &profiles, true))
            .await
            .map_err(|e| FhirError::new(500, "exception", format!("validation failed: {e}")))?;
    issues.extend(report.issues);
    let outcome = crate::validation::Report { issues }.outcome();
    operations::output(200, &outcome, inv.format)
}

/// Applies the configured validation policy to a resource about to be written. Errors refuse the
/// write with 422; warnings and information are returned for the caller to pass on.
pub fn check_write(st: &AppState, resource: &Value) -> Result<Vec<Issue>, FhirError> {
    check(st, resource, false)
}

/// [`check_write`] for a resource an ingest pipeline translated: the profiles its translation
/// claims in `meta.profile` are checked whatever the policy (the claim is ours, so it must hold),
/// unless validation is off for the type.
pub fn check_ingest(st: &AppState, resource: &Value) -> Result<Vec<Issue>, FhirError> {
    check(st, resource, true)
}

fn check(st: &AppState, resource: &Value, claims: bool) -> Result<Vec<Issue>, FhirError> {
    let Some(ty) = resource.get("resourceType").and_then(Value::as_str) else {
        return Ok(Vec::new());
    };
    let policy = st.settings.validation_for(ty);
    if policy == ValidationPolicy::Off {
        return Ok(Vec::new());
    }
    let (profiles, claimed): (&[String], bool) = match policy {
        ValidationPolicy::Profiles => (
            st.settings
                .type_profiles
                .get(ty)
                .map(Vec::as_slice)
                .unwrap_or(&[]),
            true,
        ),
        _ => (&[], claims),
    };
    let report = st.validator.validate_parsed(resource, profiles, claimed);
    if report.has_errors() {
        let mut issues = report.issues;
        // Errors first: a client reading the first issue sees why the write was refused.
        issues.sort_by_key(|i| !matches!(i.severity, Severity::Error | Severity::Fatal));
        return Err(FhirError {
            status: 422,
            issues,
        });
    }
    Ok(report
        .issues
        .into_iter()
        .filter(|i| i.severity == Severity::Warning)
        .collect())
}

/// After a conformance resource is stored, the registry takes it up, so a posted profile or value
/// set is in force for the next request.
pub fn register(st: &AppState, resource_type: &str, body: &[u8]) {
    if !registry::is_conformance_type(resource_type) {
        return;
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(v) => {
            if let Err(e) = st.registry.add(v, "server") {
                tracing::warn!(error = %e, "stored conformance resource not registered");
            }
        }
        Err(e) => tracing::error!(error = %e, "stored body is not JSON"),
    }
}

/// `StructureDefinition/$snapshot` (with `definition` (a resource) or `url`) and
/// `StructureDefinition/{id}/$snapshot`: the profile with its snapshot generated from its
/// differential against its base (profiles on profiles resolve through the registry).
pub async fn snapshot(st: &AppState, inv: Invocation) -> ApiResult {
    inv.only(&["definition", "url", "resource"])?;
    let sd = match (
        &inv.level,
        inv.resource("definition").or(inv.resource("resource")),
        inv.text("url"),
    ) {
        (Level::Instance(t, id), _, _) => super::read::fetch_json(st, t, id).await?,
        (_, Some(r), _) => r.clone(),
        (_, None, Some(url)) => st
            .registry
            .catalogue()
            .resource("StructureDefinition", &url)
            .map(|r| (**r).clone())
            .ok_or_else(|| {
                FhirError::new(
                    404,
                    "not-found",
                    format!("StructureDefinition {url} is not known"),
                )
            })?,
        _ => {
            return Err(FhirError::new(
                400,
                "required",
                "$snapshot needs a StructureDefinition: 'definition', 'url', or an instance",
            )
            .into());
        }
    };
    if sd.get("resourceType").and_then(Value::as_str) != Some("StructureDefinition") {
        return Err(FhirError::new(400, "invalid", "$snapshot takes a StructureDefinition").into());
    }
    let catalogue = st.registry.catalogue();
    let elements = crate::validation::snapshot::generate(
        crate::definitions::Definitions::core(),
        &catalogue,
        &sd,
    )?;
    let mut out = sd;
    out["snapshot"] = serde_json::json!({ "element": elements });
    operations::output(200, &out, inv.format)
}

/// At start: registers the conformance resources clients stored earlier (the registry itself is
/// in memory), so a profile posted yesterday is in force after a restart. Newest versions win;
/// deleted resources stay out.
pub async fn register_stored(st: &AppState) -> Result<usize, crate::store::StoreError> {
    use crate::store::{HistoryQuery, HistoryScope};
    let mut registered = 0;
    for ty in registry::CONFORMANCE_TYPES {
        let mut seen = std::collections::HashSet::new();
        let mut offset = 0;
        let mut at_seq = None;
        loop {
            let page = st
                .store
                .history(HistoryQuery {
                    scope: HistoryScope::Type(ty.to_string()),
                    since_ms: None,
                    at_seq,
                    count: 1000,
                    offset,
                })
                .await?;
            at_seq = Some(page.at_seq);
            let n = page.entries.len();
            for v in page.entries {
                // History is newest first: the first version seen of an id is its current one.
                if seen.insert(v.id.clone()) && !v.is_deleted() {
                    register(st, ty, v.body.as_deref().unwrap_or_default());
                    registered += 1;
                }
            }
            if n < 1000 {
                break;
            }
            offset += n;
        }
    }
    Ok(registered)
}
