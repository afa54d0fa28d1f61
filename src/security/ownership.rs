//! "分域负责" on the ingest paths: what an authenticated sender ingests (`POST /hl7v2`, MLLP,
//! `/cda`, `/hl7v3`, `/feeds`) is owned by its domain, exactly as its REST writes are, and it may
//! not overwrite what another domain owns.
//!
//! The sender rides in [`AppState::writer`]: [`IngestState`] sets it from the principal the
//! security layer authenticated (every ingest route takes its state through it), MLLP sets it from
//! [`super::Security::mllp_sender`], and the state goes wherever the pipeline goes (spawned feed
//! workers included). Each pipeline passes the writes it is about to commit through [`claim`] (or,
//! where it compares a write with the stored version first, [`admit`]), the one place the rule
//! lives. Without a writer (the CLI, the gateway's own work) and for the platform operator
//! nothing changes.

use super::Principal;
use super::policy::{domain_of, set_domain};
use crate::model::FhirError;
use crate::rest::AppState;
use crate::store::StoredVersion;
use crate::transaction::{Entry, Method, Target};
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use serde_json::Value;
use std::sync::Arc;

/// The gateway state of an ingest request, carrying the sender the security layer authenticated.
pub struct IngestState(pub AppState);

impl FromRequestParts<AppState> for IngestState {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let writer = parts.extensions.get::<Principal>().cloned();
        Ok(IngestState(state.clone().writing_as(writer)))
    }
}

impl AppState {
    /// This state with `writer` as the sender of what is ingested through it.
    pub fn writing_as(mut self, writer: Option<Principal>) -> AppState {
        self.writer = writer.map(Arc::new);
        self
    }
}

/// The ownership rule for one ingested write of `resource` (absent for a PATCH) over `stored`
/// (the current version, if any; a tombstone owns nothing): another domain's resource is refused, as is a domain tag the
/// resource carries that is not the sender's own; otherwise the resource is tagged with the
/// sender's domain. A sender without a domain writes only what no domain owns.
pub fn admit(
    st: &AppState,
    what: &str,
    resource: Option<&mut Value>,
    stored: Option<&StoredVersion>,
) -> Result<(), FhirError> {
    let Some(who) = st.writer.as_deref() else {
        return Ok(());
    };
    if who.is_operator() {
        return Ok(());
    }
    let stored: Option<Value> = stored
        .and_then(|v| v.body.as_ref())
        .and_then(|b| serde_json::from_slice(b).ok());
    let own = who.domain.as_deref();
    let refuse = |owner: &str| {
        let msg = match own {
            Some(own) => format!(
                "{what} belongs to domain '{owner}'; sender '{}' of domain '{own}' may not overwrite it",
                who.id
            ),
            None => format!(
                "{what} belongs to domain '{owner}'; sender '{}' has no domain and may not overwrite it",
                who.id
            ),
        };
        FhirError::new(403, "forbidden", msg)
    };
    if let Some(owner) = stored.as_ref().and_then(domain_of)
        && Some(owner) != own
    {
        return Err(refuse(owner));
    }
    let Some(resource) = resource else {
        return Ok(());
    };
    if let Some(stated) = domain_of(resource)
        && Some(stated) != own
    {
        return Err(refuse(stated));
    }
    if let Some(own) = own {
        set_domain(resource, own);
    }
    Ok(())
}

/// The domain that owns `stored` when it is not the sender's own (and the sender is not the
/// platform operator): a record the sender may name but not write. A message that only names it
/// (a document's patient registered by another hospital) leaves it as stored.
pub fn foreign_owner(st: &AppState, stored: &Value) -> Option<String> {
    let who = st.writer.as_deref()?;
    if who.is_operator() {
        return None;
    }
    domain_of(stored)
        .filter(|owner| Some(*owner) != who.domain.as_deref())
        .map(str::to_string)
}

/// [`admit`] for every write of an ingest about to be committed, over each one's stored
/// version (the one the pipeline read, [`Entry::read_before`], else read here and kept there);
/// the first refusal refuses the ingest (nothing of it is written).
pub async fn claim(st: &AppState, entries: &mut [Entry]) -> Result<(), FhirError> {
    if st.writer.as_deref().is_none_or(Principal::is_operator) {
        return Ok(());
    }
    for e in entries.iter_mut() {
        let stored = match (&e.target, &e.read_before) {
            (Target::Id(_), Some(read)) if e.method != Method::Post => read.clone(),
            (Target::Id(id), None) if e.method != Method::Post => {
                let read = st
                    .store
                    .read(&e.resource_type, id)
                    .await
                    .map_err(crate::transaction::store_error)?;
                e.read_before = Some(read.clone());
                read
            }
            _ => None,
        };
        let what = match &e.target {
            Target::Id(id) => format!("{}/{id}", e.resource_type),
            _ => e.resource_type.clone(),
        };
        let resource = match e.method {
            Method::Post | Method::Put => e.resource.as_mut(),
            Method::Patch | Method::Delete => None,
        };
        admit(st, &what, resource, stored.as_deref())?;
    }
    Ok(())
}
