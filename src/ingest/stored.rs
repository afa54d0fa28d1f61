//! The stored side of [`crate::ingest::merge`], shared by every ingest that names records (HL7
//! v2, HL7 v3, CDA): find the stored record a stated one is (by any of its identifiers, so one
//! person is one Patient whichever format registered it), read its current version, merge the
//! statement onto it, and record in the ingest's Provenance what the store kept.
//!
//! The merge rules themselves are pure and live in [`crate::ingest::merge`]; retrying on a
//! concurrent write is the caller's (each pipeline writes `If-Match` [`Onto::if_match`]).

use crate::ingest::locks::{Access, Guard};
use crate::ingest::merge::{self, Conflict, Standing, Statement};
use crate::model::FhirError;
use crate::rest::AppState;
use crate::security::ownership;
use crate::store::StoredVersion;
use crate::transaction;
use serde_json::{Value, json};
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

/// A stated resource merged onto the version stored under its id.
pub struct Onto {
    pub resource: Value,
    /// The version it was merged onto, or [`transaction::ABSENT`]: the write's `If-Match`, so
    /// that a concurrent write makes the caller merge again rather than overwrite it.
    pub if_match: u64,
    pub conflicts: Vec<Conflict>,
    /// The record belongs to another domain than the sender's and the message only names it:
    /// it is not written (the conflict records what the message said of it).
    pub foreign: bool,
    /// The current version as read (`None`: nothing stored), for the checks before the commit
    /// ([`transaction::Entry::read_before`]).
    pub read: Option<Arc<StoredVersion>>,
    /// Whether writing `resource` changes the record (false: the merge found everything the
    /// statement says already stored, or the record is foreign and not written).
    pub changed: bool,
}

/// `stated` (a named or subject resource, never an owned one) merged by [`merge::merge`] onto
/// what the store holds under its type and id, or as stated when nothing is stored.
pub async fn onto_stored(
    st: &AppState,
    stated: &Value,
    statement: &Statement,
) -> Result<Onto, FhirError> {
    let ty = stated["resourceType"].as_str().unwrap_or_default();
    let id = stated["id"].as_str().unwrap_or_default();
    let read = st
        .store
        .read(ty, id)
        .await
        .map_err(transaction::store_error)?;
    let body = read.as_ref().and_then(|v| {
        let b: Value = serde_json::from_slice(v.body.as_ref()?).ok()?;
        Some((v.version, b))
    });
    let (resource, if_match, conflicts, foreign, changed) = match body {
        Some((version, old))
            if statement.standing == Standing::Named
                && let Some(owner) = ownership::foreign_owner(st, &old) =>
        {
            let conflict = Conflict::foreign(type_and_id(stated), &owner, stated);
            (old, version, vec![conflict], true, false)
        }
        Some((version, old)) => {
            let single = single_systems(st, ty, [&old, stated]);
            let (resource, conflicts) = merge::merge(&old, stated, statement, &single);
            let changed = resource != old;
            (resource, version, conflicts, false, changed)
        }
        // Created only if still absent: a concurrent message creating the same record makes
        // this one merge into it on the next attempt.
        None => (stated.clone(), transaction::ABSENT, Vec::new(), false, true),
    };
    Ok(Onto {
        resource,
        if_match,
        conflicts,
        foreign,
        read,
        changed,
    })
}

/// The merges of an ingest's stated records onto what is stored, and the locks
/// ([`crate::ingest::locks`]) of the records it changes.
#[derive(Default)]
pub struct Merges {
    /// By stated record: its first merge, until used (`None` for an owned one).
    first: Vec<Option<Onto>>,
    _held: Vec<Guard>,
}

impl Merges {
    /// Merges each stated record onto what is stored and then locks those the merges change
    /// and the owned ones (written as stated), so that ingests changing one record apply one
    /// after the other, in the order they locked it. A record the merge finds unchanged (the
    /// sending facility, a ward, a patient the message only names again) is not locked, so
    /// ingests naming it go on together: it is not written, or, if it changes before the
    /// commit, its `If-Match` refuses the commit and the caller merges again.
    pub async fn lock<'a>(
        st: &AppState,
        stated: impl IntoIterator<Item = (&'a Value, &'a Statement)>,
    ) -> Result<Merges, FhirError> {
        // Collected before the first await: the future then holds no caller's closure.
        let stated: Vec<(&Value, &Statement)> = stated.into_iter().collect();
        let mut first = Vec::with_capacity(stated.len());
        let mut keys = Vec::new();
        for (r, s) in stated {
            let onto = if s.standing == Standing::Owned {
                None
            } else {
                Some(onto_stored(st, r, s).await?)
            };
            if onto.as_ref().is_none_or(|o| o.changed) {
                keys.push((type_and_id(r), Access::Exclusive));
            }
            first.push(onto);
        }
        let held = st.record_locks.lock(keys).await;
        Ok(Merges { first, _held: held })
    }

    /// The merge of stated record `i` onto the record's current version: the first merge while
    /// the version it read is still the current one, else a new merge.
    pub async fn onto(
        &mut self,
        st: &AppState,
        i: usize,
        stated: &Value,
        statement: &Statement,
    ) -> Result<Onto, FhirError> {
        if let Some(first) = self.first.get_mut(i).and_then(Option::take) {
            let (ty, id) = (
                stated["resourceType"].as_str().unwrap_or_default(),
                stated["id"].as_str().unwrap_or_default(),
            );
            let now = st
                .store
                .read(ty, id)
                .await
                .map_err(transaction::store_error)?;
            if now.map(|v| v.version) == first.read.as_ref().map(|v| v.version) {
                return Ok(first);
            }
        }
        onto_stored(st, stated, statement).await
    }
}

/// The identifier systems the profiles claimed by `versions` allow once per record.
fn single_systems<'a>(
    st: &AppState,
    resource_type: &str,
    versions: impl IntoIterator<Item = &'a Value>,
) -> BTreeSet<String> {
    let catalogue = st.registry.catalogue();
    let mut out = BTreeSet::new();
    for v in versions {
        for url in v
            .pointer("/meta/profile")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            if let Some(sd) = catalogue.resource("StructureDefinition", url) {
                out.extend(merge::one_per_system(sd, resource_type));
            }
        }
    }
    out
}

/// `Type/id` -> `Type/stored-id` for every stated (not owned) resource stored under one of its
/// identifiers with another id: a patient a CDA document, an HL7 v3 message, a feed or a REST
/// client registered is the one an HL7 v2 message with the same identifier names, whatever id
/// each format derives. The first identifier found decides.
pub async fn resolve<'a>(
    st: &AppState,
    stated: impl IntoIterator<Item = (&'a Value, &'a Statement)>,
) -> Result<HashMap<String, String>, FhirError> {
    let stated: Vec<(&Value, &Statement)> = stated.into_iter().collect();
    let mut renames = HashMap::new();
    for (r, s) in stated {
        if s.standing == Standing::Owned {
            continue;
        }
        let ty = r["resourceType"].as_str().unwrap_or_default();
        let id = r["id"].as_str().unwrap_or_default();
        // Already stored under its own id (the usual case: a sender naming its record again),
        // it stays there, as when its id is among those found; one read instead of a search
        // per identifier.
        let own = st
            .store
            .read(ty, id)
            .await
            .map_err(transaction::store_error)?;
        if own.is_some_and(|v| !v.is_deleted()) {
            continue;
        }
        let ids = r
            .get("identifier")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|i| Some((i["system"].as_str()?, i["value"].as_str()?)));
        for (system, value) in ids {
            let found = crate::ingest::hl7v3::search(
                st,
                ty,
                &[("identifier".into(), format!("{system}|{value}"))],
                2,
            )
            .await?;
            // Its own id among those found (a record stored twice before it was resolved)
            // keeps it where it is.
            let ids: Vec<&str> = found.iter().filter_map(|e| e["id"].as_str()).collect();
            if let Some(eid) = ids.first() {
                if !ids.contains(&id) {
                    renames.insert(format!("{ty}/{id}"), format!("{ty}/{eid}"));
                }
                break;
            }
        }
    }
    Ok(renames)
}

/// Applies [`resolve`]'s renames to one resource: its own id, and every `reference` to a
/// renamed resource.
pub fn rename(r: &mut Value, renames: &HashMap<String, String>) {
    if renames.is_empty() {
        return;
    }
    if let Some(id) = renames
        .get(&type_and_id(r))
        .and_then(|n| n.split('/').nth(1))
    {
        r["id"] = json!(id);
    }
    rename_references(r, renames);
}

fn rename_references(v: &mut Value, renames: &HashMap<String, String>) {
    match v {
        Value::Object(o) => {
            for (k, x) in o.iter_mut() {
                if k == "reference"
                    && let Value::String(s) = x
                    && let Some(n) = renames.get(s.as_str())
                {
                    *s = n.clone();
                    continue;
                }
                rename_references(x, renames);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|x| rename_references(x, renames)),
        _ => {}
    }
}

/// The conflicts in the Provenance: a contained OperationOutcome of their own (`#kept`).
pub fn record_conflicts(provenance: &mut Value, conflicts: &[Conflict]) {
    if conflicts.is_empty() {
        return;
    }
    let Some(p) = provenance.as_object_mut() else {
        return;
    };
    let oo = json!({"resourceType": "OperationOutcome", "id": "kept",
        "issue": conflicts.iter().map(Conflict::issue).collect::<Vec<_>>()});
    match p.entry("contained").or_insert_with(|| json!([])) {
        Value::Array(c) => c.push(oo),
        _ => return,
    }
    if let Some(entity) = p.get_mut("entity").and_then(Value::as_array_mut) {
        entity.push(json!({"role": "derivation", "what": {"reference": "#kept",
            "display": "values of named records the store kept over the message's"}}));
    }
}

/// `Type/id` of a resource.
pub fn type_and_id(r: &Value) -> String {
    format!(
        "{}/{}",
        r["resourceType"].as_str().unwrap_or_default(),
        r["id"].as_str().unwrap_or_default()
    )
}
