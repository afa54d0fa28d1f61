//! Terminology operations over REST: `$expand`, `$validate-code`, `$lookup`, `$subsumes`,
//! `$translate` (placeholder until the terminology service lands).

use super::AppState;
use super::http::ApiResult;
use super::operations::Invocation;
use crate::model::FhirError;

pub async fn invoke(_st: &AppState, inv: Invocation) -> ApiResult {
    Err(FhirError::new(
        501,
        "not-supported",
        format!("${} is not implemented yet", inv.name),
    )
    .into())
}
