//! FHIR search: indexing on write and matching on read.
//!
//! - `params`: the search parameters in force per type (core + activated custom ones).
//! - `extract`: resource -> index rows, by evaluating each parameter's FHIRPath (pure CPU; runs on
//!   the request's worker thread, outside the single writer).
//! - `normalize`, `dates`: the normalised string form and date ranges both sides agree on.
//! - `fulltext`: the searchable text of `_text` (narrative) and `_content` (all string content).
//! - `plan` + `query`: the query string -> [`SearchPlan`], strict by default.
//! - `sql`: [`SearchPlan`] -> one SQL statement over the index tables, behind a [`sql::Dialect`].
//! - `run`: a page of matches with cursors, totals and includes over any [`crate::store::Store`].
//!
//! Invariant: the index rows of a resource are written in the same store transaction as the
//! version they describe (the writer replaces them wholesale), so a search never sees a version
//! without its rows or rows of a version that is gone.

pub mod dates;
pub mod extract;
pub mod fulltext;
pub mod normalize;
pub mod params;
pub mod plan;
pub mod query;
pub mod run;
pub mod sql;
pub mod units;

pub use params::Catalogue;
pub use plan::SearchPlan;
pub use query::{ParseOptions, parse};

use crate::model::FhirError;
use crate::store::{ContainedRows, IndexRows};
use serde_json::Value;

/// The index rows of a resource under the catalogue's parameters for its type, with those of its
/// contained resources under theirs; `aliases` maps the fullUrls of a Bundle's entries to their
/// types (empty outside Bundles).
pub fn index_rows(
    catalogue: &Catalogue,
    resource_type: &str,
    resource: &Value,
    aliases: &std::collections::HashMap<String, String>,
) -> IndexRows {
    let mut rows = extract::extract_in(&catalogue.for_type(resource_type), resource, aliases);
    let defs = crate::definitions::Definitions::core();
    for item in resource
        .get("contained")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        // A contained resource without a valid type and id cannot be referred to, nor found.
        let (Some(ty), Some(id)) = (
            item.get("resourceType").and_then(Value::as_str),
            item.get("id").and_then(Value::as_str),
        ) else {
            continue;
        };
        if !defs.is_resource_type(ty) || !crate::model::primitives::is_id(id) {
            continue;
        }
        rows.contained.push(ContainedRows {
            resource_type: ty.to_string(),
            id: id.to_string(),
            rows: extract::extract_in(&catalogue.for_type(ty), item, aliases),
        });
    }
    rows
}

/// The plan of a conditional operation's criteria (`identifier=s|v&name=x`): filters only, strict,
/// every match (no paging).
pub fn conditional_plan(
    catalogue: &Catalogue,
    resource_type: &str,
    criteria: &str,
) -> Result<SearchPlan, FhirError> {
    let params: Vec<(String, String)> = form_urlencoded::parse(criteria.as_bytes())
        .into_owned()
        .collect();
    if params.is_empty() {
        return Err(FhirError::new(
            400,
            "invalid",
            "conditional operation without criteria",
        ));
    }
    if let Some((k, _)) = params.iter().find(|(k, _)| {
        k.starts_with('_')
            && !matches!(
                k.as_str(),
                "_id"
                    | "_lastUpdated"
                    | "_tag"
                    | "_profile"
                    | "_security"
                    | "_source"
                    | "_has"
                    | "_text"
                    | "_content"
                    | "_list"
            )
            && !k.starts_with("_has:")
    }) {
        return Err(FhirError::new(
            400,
            "invalid",
            format!("'{k}' is not a criterion of a conditional operation"),
        ));
    }
    parse(
        &[resource_type.to_string()],
        &params,
        catalogue,
        &ParseOptions::default(),
    )
}
