//! The one write path: apply a list of FHIR write entries atomically.
//!
//! Every inbound path (REST create/update/patch/delete, batch and transaction Bundles, and the
//! ingest pipelines that follow) ends in [`apply`]. It runs as a single unit of work on the store's
//! writer, so conditions (`If-None-Exist`, `If-Match`, conditional URLs and references) are evaluated
//! against exactly the state the writes land on, and a failure anywhere leaves nothing behind.
//!
//! Processing order follows the R4 transaction rules: DELETE, then POST, then PUT/PATCH (GETs are
//! answered by the caller after the commit). In a Bundle, `urn:uuid:` and other `fullUrl`s are
//! rewritten to the assigned `Type/id` in every `reference`, and conditional references
//! (`Patient?identifier=s|v`) are resolved to exactly one match; single interactions store
//! references as sent.

use crate::definitions::Definitions;
use crate::model::{self, FhirError, ParseLimits};
use crate::search::{self, Catalogue};
use crate::store::{
    Head, IndexRows, NewVersion, Store, StoredVersion, TxAbort, TxContext, WriteMethod,
};
use bytes::Bytes;
use serde_json::{Map, Value};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// The `if_match` of a write that expects the resource not to exist (versions start at 1): an
/// ingest that found no stored record creates one this way, so that a record another message
/// created meanwhile is merged into on the retry, not overwritten.
pub const ABSENT: u64 = 0;

/// What an entry asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Post,
    Put,
    Patch,
    Delete,
}

impl Method {
    /// R4 processing order: DELETE, POST, PUT/PATCH.
    fn rank(self) -> u8 {
        match self {
            Method::Delete => 0,
            Method::Post => 1,
            Method::Put | Method::Patch => 2,
        }
    }
}

/// Which resource an entry addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A server-assigned id (POST).
    New,
    /// A literal id.
    Id(String),
    /// A conditional URL's query part (`identifier=s|v`).
    Condition(String),
}

/// One write.
#[derive(Debug, Clone)]
pub struct Entry {
    pub method: Method,
    pub resource_type: String,
    pub target: Target,
    /// `Bundle.entry.fullUrl`, rewritten to `Type/id` in references.
    pub full_url: Option<String>,
    /// The resource for POST/PUT, already structurally checked.
    pub resource: Option<Value>,
    /// The JSON Patch document for PATCH.
    pub patch: Option<json_patch::Patch>,
    /// `If-Match` version; [`ABSENT`] asks that there be no current version.
    pub if_match: Option<u64>,
    /// `If-None-Exist` query for a conditional create.
    pub if_none_exist: Option<String>,
    /// The version the store held when it was found to say exactly what this entry's resource
    /// says (see [`skip_unchanged`]): if that is still the current version when the entry is
    /// applied, nothing is written.
    pub stored_same: Option<u64>,
    /// The current version as the caller read it while preparing the entry (`Some(None)`:
    /// nothing stored), so that the checks before [`apply`] ([`skip_unchanged`], the ingest
    /// ownership rule) do not read it again. The unit of work does not trust it: `if_match` and
    /// `stored_same` are checked against the store there.
    pub read_before: Option<Option<Arc<StoredVersion>>>,
}

impl Entry {
    /// A plain entry with no conditions.
    pub fn new(
        method: Method,
        resource_type: &str,
        target: Target,
        resource: Option<Value>,
    ) -> Entry {
        Entry {
            method,
            resource_type: resource_type.to_string(),
            target,
            full_url: None,
            resource,
            patch: None,
            if_match: None,
            if_none_exist: None,
            stored_same: None,
            read_before: None,
        }
    }
}

/// What an entry did.
#[derive(Debug, Clone)]
pub enum Effect {
    /// A new resource (POST, or PUT on an absent id).
    Created(Arc<StoredVersion>),
    /// A new version of an existing resource.
    Updated(Arc<StoredVersion>),
    /// A delete tombstone.
    Deleted(Arc<StoredVersion>),
    /// A conditional create that matched an existing resource, or a write of what the resource
    /// already says (see [`skip_unchanged`]): nothing written.
    Existing { resource_type: String, id: String },
    /// A delete of something absent or already deleted: nothing written.
    Nothing,
}

impl Effect {
    /// The HTTP status of the entry's response.
    pub fn status(&self) -> u16 {
        match self {
            Effect::Created(_) => 201,
            Effect::Updated(_) | Effect::Existing { .. } => 200,
            Effect::Deleted(_) | Effect::Nothing => 204,
        }
    }
}

/// Where errors are reported: a single interaction locates issues in the resource; a Bundle
/// locates them in `Bundle.entry[i]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Single,
    Bundle,
}

/// Applies entries atomically; returns one effect per entry, in the entries' order.
///
/// Search index rows of every resource sent are extracted here, on the caller's thread, before
/// the unit of work is queued: the single writer only rewrites the references a Bundle renames.
pub async fn apply(
    store: &dyn Store,
    catalogue: &Arc<Catalogue>,
    entries: Vec<Entry>,
    scope: Scope,
    limits: ParseLimits,
) -> Result<Vec<Effect>, FhirError> {
    let aliases: HashMap<String, String> = entries
        .iter()
        .filter_map(|e| Some((e.full_url.clone()?, e.resource_type.clone())))
        .collect();
    let pre: Vec<Option<IndexRows>> = entries
        .iter()
        .map(|e| {
            e.resource
                .as_ref()
                .filter(|_| matches!(e.method, Method::Post | Method::Put))
                .map(|r| search::index_rows(catalogue, &e.resource_type, r, &aliases))
        })
        .collect();
    let catalogue = catalogue.clone();
    let work = Box::new(move |tx: &mut dyn TxContext| {
        let mut run = Run {
            tx,
            scope,
            limits,
            defs: Definitions::core(),
            catalogue,
            urls: HashMap::new(),
            rewritten: HashMap::new(),
            written: HashSet::new(),
            pre,
        };
        run.all(entries)
            .map(|effects| Box::new(effects) as Box<dyn std::any::Any + Send>)
            .map_err(|e| match e {
                Failure::Fhir(f) => TxAbort::Caller(Box::new(f)),
                Failure::Store(s) => TxAbort::Store(s),
            })
    });
    match store.transact(work).await {
        Ok(outcome) => outcome
            .value
            .downcast::<Vec<Effect>>()
            .map(|b| *b)
            .map_err(|_| {
                FhirError::new(500, "exception", "transaction returned an unexpected value")
            }),
        Err(TxAbort::Caller(b)) => Err(b
            .downcast::<FhirError>()
            .map(|b| *b)
            .unwrap_or_else(|_| FhirError::new(500, "exception", "transaction failed"))),
        Err(TxAbort::Store(e)) => Err(store_error(e)),
    }
}

/// Marks every PUT by id whose resource the store already holds exactly (unconditional, or
/// conditional on the version that holds it), so that applying it writes no new version.
///
/// The ingest paths send the same content again and again: an ADT update re-sends the whole
/// patient, every insurance record names the same payer, a sender retries a message. A new
/// version per re-send would grow the history and the index without recording anything new (a
/// PUT may leave an unchanged resource as it is: FHIR R4 http.html#update). The reads run here, on
/// the caller's task; the writer only checks that the version read is still the current one.
/// Not for REST: a client that PUTs expects its version.
pub async fn skip_unchanged(store: &dyn Store, entries: &mut [Entry]) {
    for e in entries.iter_mut().filter(|e| e.method == Method::Put) {
        let (Target::Id(id), Some(resource)) = (&e.target, &e.resource) else {
            continue;
        };
        // A failed read only means the entry is written as sent. A conditional entry is
        // skipped only if the version it is conditional on holds it (a merge that changed
        // nothing). A version the caller read is as good as a fresh read: the writer writes
        // nothing only if it is still the current one.
        let read = match &e.read_before {
            Some(read) => read.clone(),
            None => store.read(&e.resource_type, id).await.ok().flatten(),
        };
        if let Some(v) = read
            && e.if_match.is_none_or(|m| m == v.version)
            && holds(&v, resource)
        {
            e.stored_same = Some(v.version);
        }
    }
}

/// Whether a stored version already holds `resource`, its `meta.versionId` and
/// `meta.lastUpdated` aside (JSON objects compare regardless of key order).
pub fn holds(stored: &StoredVersion, resource: &Value) -> bool {
    let Some(Ok(mut old)) = stored
        .body
        .as_ref()
        .map(|b| serde_json::from_slice::<Value>(b))
    else {
        return false;
    };
    let bare_meta = match old.get_mut("meta").and_then(Value::as_object_mut) {
        Some(meta) => {
            meta.remove("versionId");
            meta.remove("lastUpdated");
            meta.is_empty()
        }
        None => false,
    };
    if bare_meta && let Some(o) = old.as_object_mut() {
        o.remove("meta");
    }
    &old == resource
}

/// Maps a storage failure to the client-facing error.
pub fn store_error(e: crate::store::StoreError) -> FhirError {
    use crate::store::StoreError;
    match e {
        StoreError::Conflict(what, v) => FhirError::new(
            409,
            "conflict",
            format!("{what} was changed concurrently (expected version {v}); retry"),
        ),
        StoreError::Closed => FhirError::new(503, "transient", "the server is shutting down"),
        StoreError::TooCostly(max) => FhirError::new(
            413,
            "too-costly",
            format!(
                "this search would take more than the configured cost bound ({max} steps, [limits] max-search-cost); narrow it with more selective parameters, a smaller _count, or _total=none"
            ),
        ),
        StoreError::Backend(msg) => {
            tracing::error!(error = %msg, "storage failure");
            FhirError::new(
                500,
                "exception",
                "storage failure; the request was not applied",
            )
        }
    }
}

enum Failure {
    Fhir(FhirError),
    Store(crate::store::StoreError),
}

impl From<FhirError> for Failure {
    fn from(e: FhirError) -> Self {
        Failure::Fhir(e)
    }
}
impl From<crate::store::StoreError> for Failure {
    fn from(e: crate::store::StoreError) -> Self {
        Failure::Store(e)
    }
}

struct Run<'t> {
    tx: &'t mut dyn TxContext,
    scope: Scope,
    limits: ParseLimits,
    defs: &'static Definitions,
    catalogue: Arc<Catalogue>,
    /// fullUrl -> `Type/id` of the entries resolved so far.
    urls: HashMap<String, String>,
    /// Every reference rewritten so far (as sent -> as stored), to fix the pre-extracted index rows.
    rewritten: HashMap<String, String>,
    /// Index rows extracted before the unit of work, by entry position (taken when written).
    pre: Vec<Option<IndexRows>>,
    /// Resources written so far: a second write to one of them in the same transaction is a conflict.
    written: HashSet<(String, String)>,
}

/// An entry after its identity is known.
struct Resolved {
    entry: Entry,
    /// `None` when a conditional delete matched nothing.
    id: Option<String>,
    head: Option<Head>,
    /// A conditional create matched: nothing to write.
    existing: bool,
    /// Index rows extracted from the resource as sent.
    index: Option<IndexRows>,
}

impl Run<'_> {
    fn locate(&self, e: FhirError, index: usize) -> FhirError {
        match self.scope {
            Scope::Single => e,
            Scope::Bundle => FhirError {
                status: e.status,
                issues: e
                    .issues
                    .into_iter()
                    .map(|i| i.within(&format!("Bundle.entry[{index}]")))
                    .collect(),
            },
        }
    }

    fn all(&mut self, entries: Vec<Entry>) -> Result<Vec<Effect>, Failure> {
        let mut seen_urls = HashMap::new();
        for (i, e) in entries.iter().enumerate() {
            if let Some(u) = &e.full_url
                && let Some(first) = seen_urls.insert(u.clone(), i)
            {
                return Err(self
                    .locate(
                        FhirError::new(
                            400,
                            "invariant",
                            format!("fullUrl '{u}' is also used by entry {first}"),
                        )
                        .at("fullUrl"),
                        i,
                    )
                    .into());
            }
        }
        let mut order: Vec<usize> = (0..entries.len()).collect();
        order.sort_by_key(|&i| entries[i].method.rank());
        let mut slots: Vec<Option<Entry>> = entries.into_iter().map(Some).collect();
        let mut effects: Vec<Option<Effect>> = vec![None; slots.len()];
        let mut pending = Vec::new();
        // Identities first (deletes are applied here, so later conditions see them), then writes,
        // so every reference can be rewritten before anything is serialised.
        for &i in &order {
            let Some(entry) = slots[i].take() else {
                continue;
            };
            let mut resolved = self.resolve(entry).map_err(|e| self.locate_failure(e, i))?;
            resolved.index = self.pre.get_mut(i).and_then(Option::take);
            if resolved.entry.method == Method::Delete {
                effects[i] = Some(
                    self.delete(resolved)
                        .map_err(|e| self.locate_failure(e, i))?,
                );
            } else {
                pending.push((i, resolved));
            }
        }
        for (i, resolved) in pending {
            effects[i] = Some(
                self.write(resolved)
                    .map_err(|e| self.locate_failure(e, i))?,
            );
        }
        Ok(effects
            .into_iter()
            .map(|e| e.unwrap_or(Effect::Nothing))
            .collect())
    }

    fn locate_failure(&self, f: Failure, i: usize) -> Failure {
        match f {
            Failure::Fhir(e) => Failure::Fhir(self.locate(e, i)),
            other => other,
        }
    }

    /// Settles which resource an entry addresses and records its fullUrl.
    fn resolve(&mut self, entry: Entry) -> Result<Resolved, Failure> {
        let ty = entry.resource_type.clone();
        let (id, existing) = match (&entry.target, entry.method) {
            (Target::New, _) => match &entry.if_none_exist {
                Some(q) => match self.find(&ty, q, "request.ifNoneExist")?.as_slice() {
                    [] => (Some(new_id()), false),
                    [one] => (Some(one.clone()), true),
                    many => return Err(multiple_matches(&ty, q, many.len()).into()),
                },
                None => (Some(new_id()), false),
            },
            (Target::Id(id), _) => (Some(id.clone()), false),
            (Target::Condition(q), method) => match self.find(&ty, q, "request.url")?.as_slice() {
                [] if method == Method::Put => {
                    let body_id = entry
                        .resource
                        .as_ref()
                        .and_then(|r| r.get("id"))
                        .and_then(Value::as_str);
                    (
                        Some(body_id.map(str::to_string).unwrap_or_else(new_id)),
                        false,
                    )
                }
                [] if method == Method::Patch => {
                    return Err(
                        FhirError::new(404, "not-found", format!("no {ty} matches '{q}'")).into(),
                    );
                }
                [] => (None, false),
                [one] => {
                    let body_id = entry
                        .resource
                        .as_ref()
                        .and_then(|r| r.get("id"))
                        .and_then(Value::as_str);
                    if let Some(b) = body_id.filter(|b| *b != one) {
                        return Err(FhirError::new(
                            400,
                            "invalid",
                            format!("resource id '{b}' differs from the matched {ty}/{one}"),
                        )
                        .at("resource.id")
                        .into());
                    }
                    (Some(one.clone()), false)
                }
                many => return Err(multiple_matches(&ty, q, many.len()).into()),
            },
        };
        let head = match &id {
            Some(id) => self.tx.head(&ty, id)?,
            None => None,
        };
        if let Some(expected) = entry.if_match {
            let actual = head.filter(|h| !h.deleted).map(|h| h.version);
            if actual.unwrap_or(ABSENT) != expected {
                let found =
                    actual.map_or("no current version".to_string(), |v| format!("version {v}"));
                let wanted = if expected == ABSENT {
                    "no current version".to_string()
                } else {
                    format!("version {expected}")
                };
                return Err(FhirError::new(
                    412,
                    "conflict",
                    format!(
                        "If-Match expects {wanted} of {ty}/{} but found {found}",
                        id.as_deref().unwrap_or("?")
                    ),
                )
                .into());
            }
        }
        if let (Some(url), Some(id)) = (&entry.full_url, &id) {
            self.urls.insert(url.clone(), format!("{ty}/{id}"));
        }
        Ok(Resolved {
            entry,
            id,
            head,
            existing,
            index: None,
        })
    }

    /// Ids of live resources matching a conditional query, by the full search engine.
    fn find(&mut self, ty: &str, query: &str, location: &str) -> Result<Vec<String>, Failure> {
        let mut criteria = form_urlencoded::Serializer::new(String::new());
        for (name, value) in form_urlencoded::parse(query.as_bytes()) {
            let value = self.resolve_uuid_in_criterion(&name, &value, location)?;
            criteria.append_pair(&name, &value);
        }
        let plan = search::conditional_plan(&self.catalogue, ty, &criteria.finish())
            .map_err(|e| e.at(location))?;
        let q = search::sql::all(&plan, self.tx.dialect());
        Ok(self
            .tx
            .query_keys(&q)?
            .into_iter()
            .map(|(_, id)| id)
            .collect())
    }

    /// A criterion may name another entry by its fullUrl; that entry must already be resolved.
    fn resolve_uuid_in_criterion(
        &self,
        name: &str,
        value: &str,
        location: &str,
    ) -> Result<String, Failure> {
        if !value.contains("urn:uuid:") {
            return Ok(value.to_string());
        }
        match self.urls.get(value) {
            // `_id` takes the id; a reference criterion the whole `Type/id`.
            Some(target) if name == "_id" => {
                Ok(target.rsplit('/').next().unwrap_or(target).to_string())
            }
            Some(target) => Ok(target.clone()),
            None => Err(FhirError::new(
                400,
                "invalid",
                format!("criterion '{value}' refers to an entry that is not resolved yet (circular or unresolvable)"),
            )
            .at(location)
            .into()),
        }
    }

    fn delete(&mut self, r: Resolved) -> Result<Effect, Failure> {
        let (Some(id), Some(head)) = (r.id, r.head) else {
            return Ok(Effect::Nothing);
        };
        if head.deleted {
            return Ok(Effect::Nothing);
        }
        let v = self.put(NewVersion {
            resource_type: r.entry.resource_type,
            id,
            version: head.version + 1,
            method: WriteMethod::Delete,
            body: None,
            index: IndexRows::default(),
        })?;
        Ok(Effect::Deleted(v))
    }

    fn write(&mut self, r: Resolved) -> Result<Effect, Failure> {
        let ty = r.entry.resource_type.clone();
        let id = r.id.unwrap_or_else(new_id);
        let unchanged = matches!((r.entry.stored_same, r.head), (Some(same), Some(h)) if h.version == same && !h.deleted);
        if r.existing || unchanged {
            return Ok(Effect::Existing {
                resource_type: ty,
                id,
            });
        }
        let mut resource = match r.entry.method {
            Method::Patch => self.patched(&ty, &id, r.head, r.entry.patch.as_ref())?,
            _ => r.entry.resource.ok_or_else(|| {
                FhirError::new(400, "required", "entry has no resource").at("resource")
            })?,
        };
        // Only a Bundle's entries name each other by fullUrl; a single interaction stores references
        // as sent, and a Bundle stored as a resource (a document) keeps its own internal references.
        if self.scope == Scope::Bundle && ty != "Bundle" {
            self.rewrite_references(&mut resource)
                .map_err(|e| under(e, "resource"))?;
        }
        let live = r.head.filter(|h| !h.deleted);
        let version = r.head.map_or(1, |h| h.version + 1);
        let last_updated = model::format_instant(self.tx.now_ms());
        stamp(&mut resource, &id, version, &last_updated);
        let index = match r.index {
            Some(mut rows) => {
                self.fix_references(&mut rows);
                rows
            }
            // PATCH: the resource exists only now, on the writer.
            None => search::index_rows(&self.catalogue, &ty, &resource, &HashMap::new()),
        };
        let body = Bytes::from(
            serde_json::to_vec(&resource)
                .map_err(|e| FhirError::new(500, "exception", e.to_string()))?,
        );
        let method = if live.is_some() {
            WriteMethod::Update
        } else {
            WriteMethod::Create
        };
        let v = self.put(NewVersion {
            resource_type: ty,
            id,
            version,
            method,
            body: Some(body),
            index,
        })?;
        Ok(if live.is_some() {
            Effect::Updated(v)
        } else {
            Effect::Created(v)
        })
    }

    /// Points the reference rows of a rewritten resource at the rewritten targets.
    fn fix_references(&self, rows: &mut IndexRows) {
        if self.rewritten.is_empty() {
            return;
        }
        for r in &mut rows.references {
            if let Some(new) = self.rewritten.get(&r.url) {
                let target = search::extract::parse_reference(new);
                r.url = new.clone();
                r.target_type = target.as_ref().map(|t| t.0.clone());
                r.target_id = target.map(|t| t.1);
            }
        }
        for c in &mut rows.contained {
            self.fix_references(&mut c.rows);
        }
    }

    /// Writes one version, refusing a second write to the same resource in one transaction.
    fn put(&mut self, v: NewVersion) -> Result<Arc<StoredVersion>, Failure> {
        if !self.written.insert((v.resource_type.clone(), v.id.clone())) {
            return Err(FhirError::new(
                409,
                "conflict",
                format!(
                    "{}/{} is written by more than one entry of this transaction",
                    v.resource_type, v.id
                ),
            )
            .into());
        }
        Ok(self.tx.put(v)?)
    }

    fn patched(
        &mut self,
        ty: &str,
        id: &str,
        head: Option<Head>,
        patch: Option<&json_patch::Patch>,
    ) -> Result<Value, Failure> {
        if head.is_none_or(|h| h.deleted) {
            return Err(
                FhirError::new(404, "not-found", format!("{ty}/{id} does not exist")).into(),
            );
        }
        let body = self
            .tx
            .current_body(ty, id)?
            .ok_or_else(|| FhirError::new(404, "not-found", format!("{ty}/{id} does not exist")))?;
        let mut doc: Value = serde_json::from_slice(&body)
            .map_err(|e| FhirError::new(500, "exception", e.to_string()))?;
        let patch = patch
            .ok_or_else(|| FhirError::new(400, "required", "PATCH without a patch document"))?;
        json_patch::patch(&mut doc, patch)
            .map_err(|e| FhirError::new(422, "processing", format!("JSON Patch failed: {e}")))?;
        if doc.get("resourceType").and_then(Value::as_str) != Some(ty)
            || doc.get("id").and_then(Value::as_str) != Some(id)
        {
            return Err(FhirError::new(
                422,
                "processing",
                "a patch may not change resourceType or id",
            )
            .into());
        }
        let issues = model::check_resource(&doc, self.defs, self.limits);
        if !issues.is_empty() {
            return Err(FhirError {
                status: 422,
                issues,
            }
            .into());
        }
        Ok(doc)
    }

    /// Rewrites every `reference` naming a fullUrl or a conditional URL to the resolved `Type/id`.
    /// Locations are built only on failure, while the error travels back up the tree.
    fn rewrite_references(&mut self, value: &mut Value) -> Result<(), Failure> {
        match value {
            Value::Object(map) => {
                for (k, v) in map.iter_mut() {
                    let result = match v {
                        Value::String(s) if k == "reference" => {
                            self.resolve_reference(s, "").map(|new| {
                                if let Some(new) = new {
                                    self.rewritten.insert(std::mem::take(s), new.clone());
                                    *s = new;
                                }
                            })
                        }
                        _ => self.rewrite_references(v),
                    };
                    result.map_err(|e| under(e, k))?;
                }
            }
            Value::Array(items) => {
                for (i, v) in items.iter_mut().enumerate() {
                    self.rewrite_references(v)
                        .map_err(|e| under(e, &format!("[{i}]")))?;
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn resolve_reference(
        &mut self,
        reference: &str,
        location: &str,
    ) -> Result<Option<String>, Failure> {
        if let Some(target) = self.urls.get(reference) {
            return Ok(Some(target.clone()));
        }
        if reference.starts_with("urn:uuid:") || reference.starts_with("urn:oid:") {
            return Err(FhirError::new(
                400,
                "not-found",
                format!("reference '{reference}' names no entry of this transaction"),
            )
            .at(location)
            .into());
        }
        let Some((ty, query)) = reference.split_once('?') else {
            return Ok(None);
        };
        if !self.defs.is_resource_type(ty) {
            return Ok(None);
        }
        match self.find(ty, query, location)?.as_slice() {
            [one] => Ok(Some(format!("{ty}/{one}"))),
            [] => Err(FhirError::new(
                400,
                "not-found",
                format!("conditional reference '{reference}' matches nothing"),
            )
            .at(location)
            .into()),
            many => Err(multiple_matches(ty, query, many.len()).at(location).into()),
        }
    }
}

/// Places a failure's locations under `segment` (a key, or `[i]`).
fn under(f: Failure, segment: &str) -> Failure {
    let Failure::Fhir(mut e) = f else { return f };
    for issue in &mut e.issues {
        issue.expression = Some(match issue.expression.take() {
            None => segment.to_string(),
            Some(x) if x.is_empty() => segment.to_string(),
            Some(x) if x.starts_with('[') => format!("{segment}{x}"),
            Some(x) => format!("{segment}.{x}"),
        });
    }
    Failure::Fhir(e)
}

fn multiple_matches(ty: &str, q: &str, n: usize) -> FhirError {
    FhirError::new(
        412,
        "multiple-matches",
        format!("{n} {ty} resources match '{q}'; the condition must select one"),
    )
}

/// A new server-assigned id.
pub fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Sets `id` and `meta.versionId`/`meta.lastUpdated`, ordering `resourceType, id, meta` first.
fn stamp(resource: &mut Value, id: &str, version: u64, last_updated: &str) {
    let Value::Object(old) = std::mem::take(resource) else {
        return;
    };
    let mut out = Map::with_capacity(old.len() + 2);
    let mut rest = old;
    if let Some(rt) = rest.shift_remove("resourceType") {
        out.insert("resourceType".into(), rt);
    }
    rest.shift_remove("id");
    out.insert("id".into(), Value::String(id.to_string()));
    let mut meta = Map::new();
    meta.insert("versionId".into(), Value::String(version.to_string()));
    meta.insert(
        "lastUpdated".into(),
        Value::String(last_updated.to_string()),
    );
    if let Some(Value::Object(m)) = rest.shift_remove("meta") {
        for (k, v) in m {
            if k != "versionId" && k != "lastUpdated" {
                meta.insert(k, v);
            }
        }
    }
    out.insert("meta".into(), Value::Object(meta));
    out.extend(rest);
    *resource = Value::Object(out);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn stamp_orders_and_keeps_meta() {
        let mut r = json!({"name": [{"family": "Li"}], "resourceType": "Patient", "meta": {"profile": ["p"], "versionId": "9"}});
        stamp(&mut r, "a1", 3, "2026-01-01T00:00:00.000Z");
        let keys: Vec<&String> = r
            .as_object()
            .map(|o| o.keys().collect())
            .unwrap_or_default();
        assert_eq!(keys, ["resourceType", "id", "meta", "name"]);
        assert_eq!(
            r["meta"],
            json!({"versionId": "3", "lastUpdated": "2026-01-01T00:00:00.000Z", "profile": ["p"]})
        );
    }
}
