//! Record feeds: JSON or CSV records (NHSA settlement data, notifiable-disease report cards,
//! immunisations, birth certificates...) into FHIR, one transaction per record.
//!
//! A feed is a folder `mappings/feeds/<name>/` (`schema.json`, `mapping.toml`, `examples/`),
//! loaded and checked at start ([`load`]). Every transport (`POST /feeds/{name}`, `huitong ingest
//! feed`) calls [`FeedService`]: map ([`map`]), validate against the core definitions and the
//! rule's profile, commit through [`crate::transaction::apply`] with the record's Provenance.
//!
//! Invariants: a record is acknowledged only after its commit; a bad record names the JSON
//! Pointer of the offending field and writes nothing; every value no rule consumed is listed in
//! the record's Provenance; records that write the same resource are committed in input order
//! (keyed locks, taken in order), so a correction card never lands before the card it corrects.

pub mod cli;
pub mod csv;
pub mod load;
pub mod map;
pub mod patch;
mod refuse;

use crate::ingest::locks::{Access, Guard, content_hash};
use crate::mapping::LoadError;
use crate::mapping::ids::resource_id;
use crate::model::{FhirError, Severity};
use crate::rest::AppState;
use crate::transaction::{self, Effect, Entry, Method, Scope, Target};
use load::{Feed, WriteMode};
use map::{MapOptions, Mapped, RecordError};
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};

/// What became of one record.
#[derive(Debug, Clone)]
pub struct RecordOutcome {
    /// 1-based position of the record (CSV: data row, the header not counted).
    pub row: usize,
    pub result: Result<Vec<Written>, Vec<RecordError>>,
}

/// One resource of a committed record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// `Type/id/_history/N`: the version the record wrote, or the stored one it left as it was.
    pub reference: String,
    pub change: Change,
}

/// What a committed record did to one of its resources.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Created,
    Updated,
    /// The stored resource already said exactly what the record maps to (a re-sent record, the
    /// payer every insurance record names): no new version is written.
    Unchanged,
}

impl RecordOutcome {
    /// The outcome as JSON: references, or an OperationOutcome whose issues carry the pointer.
    pub fn to_json(&self) -> Value {
        match &self.result {
            Ok(w) => json!({
                "row": self.row,
                "status": "accepted",
                "created": references(w, Change::Created),
                "updated": references(w, Change::Updated),
                "unchanged": references(w, Change::Unchanged),
            }),
            Err(errors) => json!({
                "row": self.row,
                "status": "rejected",
                "outcome": outcome_of(self.row, errors),
            }),
        }
    }
}

fn references(w: &[Written], change: Change) -> Vec<String> {
    w.iter()
        .filter(|x| x.change == change)
        .map(|x| x.reference.clone())
        .collect()
}

/// An OperationOutcome for a rejected record: `location` is the JSON Pointer in the record,
/// `expression` the FHIRPath in the mapped resource when validation found the problem.
pub fn outcome_of(row: usize, errors: &[RecordError]) -> Value {
    let issues: Vec<Value> = errors
        .iter()
        .map(|e| {
            let mut i = json!({
                "severity": "error",
                "code": "invalid",
                "diagnostics": format!("row {row}: {}{}", if e.pointer.is_empty() { String::new() } else { format!("{}: ", e.pointer) }, e.message),
                "location": [if e.pointer.is_empty() { "/".to_string() } else { e.pointer.clone() }],
            });
            if let Some(x) = &e.expression {
                i["expression"] = json!([x]);
            }
            i
        })
        .collect();
    json!({"resourceType": "OperationOutcome", "issue": issues})
}

#[derive(Default)]
struct Counters {
    /// feed -> (accepted, rejected).
    records: BTreeMap<String, (u64, u64)>,
}

/// The feeds of a running gateway.
pub struct FeedService {
    feeds: RwLock<Arc<BTreeMap<String, Arc<Feed>>>>,
    dir: PathBuf,
    counters: Mutex<Counters>,
    options: MapOptions,
    /// Records in flight at once in partial mode (their commits share group commits).
    pub concurrency: usize,
}

/// A record ready to commit: mapped, with its full resources.
pub struct Prepared {
    row: usize,
    feed: Arc<Feed>,
    mapped: Mapped,
    guards: Vec<Guard>,
}

/// Times a record is tried again when a resource it read changed before its commit.
const CONFLICT_ATTEMPTS: usize = 3;

impl FeedService {
    /// Loads every feed under `<mappings-dir>/feeds`.
    pub fn start(settings: &crate::config::Settings) -> Result<FeedService, Vec<LoadError>> {
        let dir = settings.mappings_dir.join("feeds");
        let feeds = load::load_all(&dir)?;
        if feeds.is_empty() {
            tracing::info!(dir = %dir.display(), "no record feeds there");
        }
        Ok(FeedService {
            feeds: RwLock::new(Arc::new(feeds)),
            dir,
            counters: Mutex::new(Counters::default()),
            options: MapOptions {
                default_offset: settings.hl7v2_timezone.clone(),
            },
            concurrency: 32,
        })
    }

    /// A service with no feeds (when `mappings/feeds` is broken the gateway does not start; this
    /// is for states built without a mappings folder).
    pub fn empty() -> FeedService {
        FeedService {
            feeds: RwLock::new(Arc::new(BTreeMap::new())),
            dir: PathBuf::new(),
            counters: Mutex::new(Counters::default()),
            options: MapOptions::default(),
            concurrency: 32,
        }
    }

    /// The feed of that name.
    pub fn feed(&self, name: &str) -> Option<Arc<Feed>> {
        self.feeds
            .read()
            .map(|f| f.get(name).cloned())
            .unwrap_or_else(|e| e.into_inner().get(name).cloned())
    }

    /// Names of the loaded feeds.
    pub fn names(&self) -> Vec<String> {
        self.feeds
            .read()
            .map(|f| f.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Reloads the feeds; on any error the old ones stay in force.
    pub fn reload(&self) -> Result<usize, Vec<LoadError>> {
        let fresh = load::load_all(&self.dir)?;
        let n = fresh.len();
        if let Ok(mut f) = self.feeds.write() {
            *f = Arc::new(fresh);
        }
        Ok(n)
    }

    /// Maps a record and takes the locks of the resources it writes (waiting for earlier
    /// records that write them). Call in input order.
    pub async fn prepare(
        &self,
        st: &AppState,
        feed: &Arc<Feed>,
        row: usize,
        record: Result<Value, RecordError>,
    ) -> Result<Prepared, RecordOutcome> {
        let p = self.map_only(st, feed, row, record)?;
        Ok(self.claim(st, p).await)
    }

    /// Takes the locks of the resources a mapped record writes, waiting for earlier records that
    /// change them. Call in input order: that order is the order the records apply in.
    ///
    /// Most records of a feed change resources only they write (a patient, a claim) and name some
    /// that many records share (the payer, the clinic), which they map exactly as the record before
    /// did and find unchanged (see [`FeedService::entries`]). Those are held shared, so that the
    /// records naming the same payer are not committed one at a time.
    async fn claim(&self, st: &AppState, mut p: Prepared) -> Prepared {
        let locks = &st.record_locks;
        let mut keys = Vec::new();
        for r in &p.mapped.resources {
            let key = format!("{}/{}", r.resource_type, r.id);
            let access = if r.mode == WriteMode::Put && r.select.is_none() {
                locks.foresee(&key, content_hash(&r.body, &()))
            } else {
                locks.forget(&key);
                Access::Exclusive
            };
            keys.push((key, access));
        }
        keys.push((provenance_id(&p.feed, &p.mapped.key), Access::Exclusive));
        keys.extend(
            p.mapped
                .locks
                .iter()
                .map(|k| (k.clone(), Access::Exclusive)),
        );
        p.guards = locks.lock(keys).await;
        p
    }

    /// Maps a record without taking locks (all-or-nothing takes them for the whole batch).
    fn map_only(
        &self,
        st: &AppState,
        feed: &Arc<Feed>,
        row: usize,
        record: Result<Value, RecordError>,
    ) -> Result<Prepared, RecordOutcome> {
        let record = record.map_err(|e| RecordOutcome {
            row,
            result: Err(vec![e]),
        })?;
        let lookup = TerminologyLookup {
            st,
            scope: st.terminology.scope(),
        };
        let mapped =
            map::map_record(feed, &record, &lookup, &self.options).map_err(|e| RecordOutcome {
                row,
                result: Err(e),
            })?;
        Ok(Prepared {
            row,
            feed: feed.clone(),
            mapped,
            guards: Vec::new(),
        })
    }

    /// Validates and commits a prepared record (one transaction with its Provenance).
    pub async fn commit(&self, st: &AppState, p: Prepared) -> RecordOutcome {
        let row = p.row;
        let mut attempt = 0;
        let out = loop {
            attempt += 1;
            let (entries, unchanged) = match self.entries(st, &p, true).await {
                Ok(e) => e,
                Err(e) => break Err(e),
            };
            let refs: Vec<(String, String)> = entries
                .iter()
                .map(|e| {
                    let id = match &e.target {
                        Target::Id(id) => id.clone(),
                        _ => String::new(),
                    };
                    (e.resource_type.clone(), id)
                })
                .collect();
            match transaction::apply(
                st.store.as_ref(),
                &st.search,
                entries,
                Scope::Bundle,
                Default::default(),
            )
            .await
            {
                Ok(effects) => {
                    let mut w = written(&effects, &refs);
                    w.extend(unchanged);
                    break Ok(w);
                }
                // Every write carries If-Match on the version read. Records holding a resource
                // shared (see `claim`) that find it changed by someone else both write it; the one
                // that loses reads it again, and most likely finds it unchanged now.
                Err(e) if e.status == 412 && attempt < CONFLICT_ATTEMPTS => continue,
                Err(e) => break Err(errors_of_store(&e, &p.mapped)),
            }
        };
        drop(p.guards);
        let outcome = RecordOutcome { row, result: out };
        self.count(&p.feed.name, &outcome);
        outcome
    }

    /// Prepares and commits one record.
    pub async fn ingest_one(
        &self,
        st: &AppState,
        feed: &Arc<Feed>,
        row: usize,
        record: Result<Value, RecordError>,
    ) -> RecordOutcome {
        match self.prepare(st, feed, row, record).await {
            Ok(p) => self.commit(st, p).await,
            Err(o) => {
                self.count(&feed.name, &o);
                o
            }
        }
    }

    /// All-or-nothing: every record is mapped and validated; if all pass they are committed in
    /// one transaction, otherwise nothing is and every record says why.
    pub async fn ingest_atomic(
        &self,
        st: &AppState,
        feed: &Arc<Feed>,
        records: Vec<(usize, Result<Value, RecordError>)>,
    ) -> Vec<RecordOutcome> {
        let mut prepared = Vec::new();
        let mut outcomes: Vec<RecordOutcome> = Vec::new();
        let mut mapped = Vec::new();
        for (row, r) in records {
            match self.map_only(st, feed, row, r) {
                Ok(p) => mapped.push(p),
                Err(o) => outcomes.push(o),
            }
        }
        // One set of locks for the batch: records of one batch may share resources.
        let keys: Vec<(String, Access)> = mapped
            .iter()
            .flat_map(|p| p.lock_keys(feed))
            .map(|k| (k, Access::Exclusive))
            .collect();
        let _guards = st.record_locks.lock(keys).await;
        for p in mapped {
            // Every resource is written: which record's version of a shared one is kept is decided
            // over the whole batch below, not by what is stored.
            match self.entries(st, &p, false).await {
                Ok((e, _)) => prepared.push((p, e)),
                Err(e) => outcomes.push(RecordOutcome {
                    row: p.row,
                    result: Err(e),
                }),
            }
        }
        let failed: Vec<usize> = outcomes.iter().map(|o| o.row).collect();
        let result = if failed.is_empty() {
            let mut all = Vec::new();
            let mut spans = Vec::new();
            // A resource several records of the batch write (the same clinic, the same payer) is
            // written once, as the last record maps it: a transaction writes a resource once.
            let mut last: HashMap<(String, String), usize> = HashMap::new();
            for (pi, (_, e)) in prepared.iter().enumerate() {
                for x in e.iter() {
                    if let Target::Id(id) = &x.target {
                        last.insert((x.resource_type.clone(), id.clone()), pi);
                    }
                }
            }
            for (pi, (p, e)) in prepared.iter_mut().enumerate() {
                e.retain(|x| match &x.target {
                    Target::Id(id) => last.get(&(x.resource_type.clone(), id.clone())) == Some(&pi),
                    _ => true,
                });
                let refs: Vec<(String, String)> = e
                    .iter()
                    .map(|x| {
                        (
                            x.resource_type.clone(),
                            match &x.target {
                                Target::Id(id) => id.clone(),
                                _ => String::new(),
                            },
                        )
                    })
                    .collect();
                spans.push((p.row, all.len(), refs));
                all.append(e);
            }
            transaction::apply(
                st.store.as_ref(),
                &st.search,
                all,
                Scope::Bundle,
                Default::default(),
            )
            .await
            .map(|effects| (effects, spans))
            .map_err(|e| describe(&e))
        } else {
            Err(format!(
                "not committed: the batch is all-or-nothing and row(s) {} failed",
                failed
                    .iter()
                    .map(|r| r.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        };
        match result {
            Ok((effects, spans)) => {
                for (row, start, refs) in spans {
                    let n = refs.len();
                    outcomes.push(RecordOutcome {
                        row,
                        result: Ok(written(&effects[start..start + n], &refs)),
                    });
                }
            }
            Err(message) => {
                for (p, _) in &prepared {
                    outcomes.push(RecordOutcome {
                        row: p.row,
                        result: Err(vec![RecordError {
                            pointer: String::new(),
                            message: message.clone(),
                            expression: None,
                        }]),
                    });
                }
            }
        }
        drop(prepared);
        outcomes.sort_by_key(|o| o.row);
        for o in &outcomes {
            self.count(&feed.name, o);
        }
        outcomes
    }

    /// The transaction entries of a record: its resources (validated) and its Provenance. With
    /// `skip_unchanged`, a resource the store already holds exactly as mapped is not written again
    /// but returned as [`Change::Unchanged`]; the Provenance still names it, at its stored version.
    async fn entries(
        &self,
        st: &AppState,
        p: &Prepared,
        skip_unchanged: bool,
    ) -> Result<(Vec<Entry>, Vec<Written>), Vec<RecordError>> {
        let feed = &p.feed;
        let mut entries = Vec::new();
        let mut unchanged = Vec::new();
        let mut errors = Vec::new();
        let mut targets = Vec::new();
        let mut revisions = Vec::new();
        let resources = self.selected(st, feed, &p.mapped.resources).await?;
        refuse::check(st, feed, &p.mapped).await?;
        for r in &resources {
            let stored = match st.store.read(&r.resource_type, &r.id).await {
                Ok(v) => v.filter(|v| !v.is_deleted()),
                Err(e) => {
                    errors.push(RecordError {
                        pointer: String::new(),
                        message: format!("store: {e}"),
                        expression: None,
                    });
                    continue;
                }
            };
            let head = stored.as_ref().map(|v| v.version);
            if head.is_none() && (r.must_exist.is_some() || r.mode == WriteMode::Patch) {
                errors.push(RecordError {
                    pointer: r.key_pointer.clone(),
                    message: format!(
                        "{}: no earlier {} with this key to {}",
                        feed.rules[r.rule].name,
                        r.resource_type,
                        if r.mode == WriteMode::Patch {
                            "change"
                        } else {
                            "correct"
                        }
                    ),
                    expression: None,
                });
                continue;
            }
            let profiles: Vec<String> = feed.rules[r.rule].profile.iter().cloned().collect();
            let what = format!("{}/{}", r.resource_type, r.id);
            let owned = |body: Option<&mut Value>| {
                crate::security::ownership::admit(st, &what, body, stored.as_deref()).map_err(|e| {
                    RecordError {
                        pointer: r.key_pointer.clone(),
                        message: describe(&e),
                        expression: None,
                    }
                })
            };
            let mut entry = match r.mode {
                WriteMode::Put => {
                    let mut body = r.body.clone();
                    body.insert("id".into(), json!(r.id));
                    let mut body = Value::Object(body);
                    st.identities.current().canonicalise_resource(&mut body);
                    // Owned by the sender's domain before it is compared with what is stored.
                    if let Err(e) = owned(Some(&mut body)) {
                        errors.push(e);
                        continue;
                    }
                    if skip_unchanged
                        && let Some(v) = &stored
                        && transaction::holds(v, &body)
                    {
                        let reference =
                            format!("{}/{}/_history/{}", r.resource_type, r.id, v.version);
                        targets.push(reference.clone());
                        unchanged.push(Written {
                            reference,
                            change: Change::Unchanged,
                        });
                        continue;
                    }
                    let bad = conformance_errors(st, &body, &profiles, false);
                    if !bad.is_empty() {
                        errors.extend(located(r, bad));
                        continue;
                    }
                    Entry::new(
                        Method::Put,
                        &r.resource_type,
                        Target::Id(r.id.clone()),
                        Some(body),
                    )
                }
                WriteMode::Patch => {
                    if let Err(e) = owned(None) {
                        errors.push(e);
                        continue;
                    }
                    let current: Value = match stored
                        .as_ref()
                        .and_then(|v| v.body.as_ref())
                        .map(|b| serde_json::from_slice(b))
                    {
                        Some(Ok(v)) => v,
                        _ => {
                            errors.push(RecordError {
                                pointer: r.key_pointer.clone(),
                                message: format!(
                                    "{}/{}: the stored resource is unreadable",
                                    r.resource_type, r.id
                                ),
                                expression: None,
                            });
                            continue;
                        }
                    };
                    let ops = patch::operations(&current, &r.body);
                    // The result is validated as the store will hold it: against the core
                    // definitions, the rule's profile and every profile the stored resource
                    // claims; If-Match below makes sure it is that result which is written.
                    let mut result = current;
                    let applied = serde_json::from_value::<json_patch::Patch>(Value::Array(ops))
                        .map_err(|e| e.to_string())
                        .and_then(|patch| {
                            json_patch::patch(&mut result, &patch)
                                .map(|_| patch)
                                .map_err(|e| e.to_string())
                        });
                    let patch = match applied {
                        Ok(patch) => patch,
                        Err(e) => {
                            errors.push(RecordError {
                                pointer: r.key_pointer.clone(),
                                message: format!("patch: {e}"),
                                expression: None,
                            });
                            continue;
                        }
                    };
                    let bad = conformance_errors(st, &result, &profiles, true);
                    if !bad.is_empty() {
                        errors.extend(located(r, bad).into_iter().map(|mut e| {
                            e.message = format!(
                                "{}/{} as changed by this record: {}",
                                r.resource_type, r.id, e.message
                            );
                            e
                        }));
                        continue;
                    }
                    let mut e = Entry::new(
                        Method::Patch,
                        &r.resource_type,
                        Target::Id(r.id.clone()),
                        None,
                    );
                    e.patch = Some(patch);
                    e
                }
            };
            let next = head.map(|v| v + 1).unwrap_or(1);
            targets.push(format!("{}/{}/_history/{next}", r.resource_type, r.id));
            if let Some(v) = head {
                revisions.push(format!("{}/{}/_history/{v}", r.resource_type, r.id));
            }
            // The versions in the Provenance hold only if nobody wrote in between.
            entry.if_match = head;
            entries.push(entry);
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let rewritten = !entries.is_empty();
        let prov = provenance(feed, &p.mapped, &targets, &revisions, rewritten);
        let id = prov["id"].as_str().unwrap_or_default().to_string();
        let mut prov = Entry::new(Method::Put, "Provenance", Target::Id(id), Some(prov));
        if let Err(e) = crate::security::ownership::claim(st, std::slice::from_mut(&mut prov)).await
        {
            return Err(vec![RecordError {
                pointer: String::new(),
                message: describe(&e),
                expression: None,
            }]);
        }
        entries.push(prov);
        Ok((entries, unchanged))
    }

    /// The mapped resources with every `select` rule replaced by the stored resources its
    /// criteria find (one copy each); a selection that finds nothing refuses the record.
    async fn selected(
        &self,
        st: &AppState,
        feed: &Feed,
        mapped: &[map::MappedResource],
    ) -> Result<Vec<map::MappedResource>, Vec<RecordError>> {
        let mut out = Vec::new();
        let mut errors = Vec::new();
        for r in mapped {
            let Some((criteria, shown)) = &r.select else {
                out.push(r.clone());
                continue;
            };
            let found =
                match crate::search::conditional_plan(&st.search, &r.resource_type, criteria) {
                    Ok(plan) => st
                        .store
                        .query_keys(crate::search::sql::all(&plan, st.store.dialect()))
                        .await
                        .map_err(|e| format!("store: {e}")),
                    Err(e) => Err(describe(&e)),
                };
            match found {
                Ok(keys) if keys.is_empty() && feed.rules[r.rule].optional => {}
                Ok(keys) if keys.is_empty() => errors.push(RecordError {
                    pointer: r.key_pointer.clone(),
                    message: format!(
                        "{}: no stored {} matches {shown}: nothing to change",
                        feed.rules[r.rule].name, r.resource_type
                    ),
                    expression: None,
                }),
                Ok(keys) => {
                    let mut ids: Vec<String> = keys.into_iter().map(|(_, id)| id).collect();
                    ids.sort();
                    for id in ids {
                        let mut one = r.clone();
                        one.id = id;
                        one.select = None;
                        out.push(one);
                    }
                }
                Err(m) => errors.push(RecordError {
                    pointer: r.key_pointer.clone(),
                    message: format!("{}: selection {shown}: {m}", feed.rules[r.rule].name),
                    expression: None,
                }),
            }
        }
        if errors.is_empty() {
            Ok(out)
        } else {
            Err(errors)
        }
    }

    fn count(&self, feed: &str, o: &RecordOutcome) {
        let mut c = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        let e = c.records.entry(feed.to_string()).or_default();
        if o.result.is_ok() {
            e.0 += 1;
        } else {
            e.1 += 1;
        }
    }

    /// The `/metrics` lines of the feeds.
    pub fn render_metrics(&self) -> String {
        let c = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = String::new();
        out.push_str("# HELP huitong_feed_records_total Feed records by feed and outcome.\n");
        out.push_str("# TYPE huitong_feed_records_total counter\n");
        for (feed, (ok, bad)) in &c.records {
            let _ = writeln!(
                out,
                "huitong_feed_records_total{{feed=\"{feed}\",outcome=\"accepted\"}} {ok}"
            );
            let _ = writeln!(
                out,
                "huitong_feed_records_total{{feed=\"{feed}\",outcome=\"rejected\"}} {bad}"
            );
        }
        out
    }
}

impl Prepared {
    fn lock_keys(&self, feed: &Feed) -> Vec<String> {
        let mut keys: Vec<String> = self
            .mapped
            .resources
            .iter()
            .map(|r| format!("{}/{}", r.resource_type, r.id))
            .collect();
        keys.push(provenance_id(feed, &self.mapped.key));
        keys.extend(self.mapped.locks.iter().cloned());
        keys
    }
}

impl map::MappedResource {
    /// The record field that filled the element a FHIRPath names (indexes ignored), else the key.
    fn pointer_of(&self, expression: &str) -> String {
        let plain: String = {
            let mut s = String::new();
            let mut depth = 0;
            for c in expression.chars() {
                match c {
                    '[' => depth += 1,
                    ']' => depth -= 1,
                    c if depth == 0 => s.push(c),
                    _ => {}
                }
            }
            s
        };
        // A rule on the resource as a whole (an invariant): the record, by its key.
        if !plain.contains('.') {
            return self.key_pointer.clone();
        }
        let best = self
            .trace
            .iter()
            .filter(|(path, _)| {
                path == &plain
                    || path.starts_with(&format!("{plain}."))
                    || plain.starts_with(&format!("{path}."))
            })
            .max_by_key(|(path, _)| {
                // The element itself, else the deepest field below it.
                if path == &plain {
                    usize::MAX
                } else {
                    path.len()
                }
            });
        best.map(|(_, p)| p.clone())
            .unwrap_or_else(|| self.key_pointer.clone())
    }
}

/// The errors (and fatals) of a resource against the core definitions, then against `profiles`
/// (and, with `claimed`, the profiles in its `meta.profile`).
fn conformance_errors(
    st: &AppState,
    resource: &Value,
    profiles: &[String],
    claimed: bool,
) -> Vec<crate::model::Issue> {
    let mut issues = crate::model::check_resource(
        resource,
        crate::definitions::Definitions::core(),
        Default::default(),
    );
    if issues.is_empty() {
        issues = st
            .validator
            .validate_parsed(resource, profiles, claimed)
            .issues;
    }
    issues
        .into_iter()
        .filter(|i| matches!(i.severity, Severity::Error | Severity::Fatal))
        .collect()
}

/// Validation issues as record errors, each located at the record field that filled the element.
fn located(r: &map::MappedResource, issues: Vec<crate::model::Issue>) -> Vec<RecordError> {
    issues
        .into_iter()
        .map(|i| RecordError {
            pointer: i
                .expression
                .as_deref()
                .map(|x| r.pointer_of(x))
                .unwrap_or_else(|| r.key_pointer.clone()),
            message: i.diagnostics.clone(),
            expression: i.expression.clone(),
        })
        .collect()
}

fn written(effects: &[Effect], refs: &[(String, String)]) -> Vec<Written> {
    effects
        .iter()
        .zip(refs)
        .filter(|(_, (ty, _))| ty != "Provenance")
        .filter_map(|(e, (ty, id))| match e {
            Effect::Created(v) => Some(Written {
                reference: format!("{ty}/{id}/_history/{}", v.version),
                change: Change::Created,
            }),
            Effect::Updated(v) => Some(Written {
                reference: format!("{ty}/{id}/_history/{}", v.version),
                change: Change::Updated,
            }),
            _ => None,
        })
        .collect()
}

/// A hash of a mapped resource's content, stable within one run.
fn describe(e: &FhirError) -> String {
    e.issues
        .iter()
        .take(3)
        .map(|i| {
            let at = i
                .expression
                .as_ref()
                .map(|x| format!(" at {x}"))
                .unwrap_or_default();
            format!("{}{at}", i.diagnostics)
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn errors_of_store(e: &FhirError, m: &Mapped) -> Vec<RecordError> {
    let pointer = m
        .resources
        .first()
        .map(|r| r.key_pointer.clone())
        .unwrap_or_default();
    let message = if e.status == 412 || e.status == 409 {
        format!(
            "not stored: a resource of this record changed meanwhile; send it again ({})",
            describe(e)
        )
    } else {
        format!("not stored: {}", describe(e))
    };
    vec![RecordError {
        pointer,
        message,
        expression: None,
    }]
}

fn provenance_id(feed: &Feed, key: &str) -> String {
    format!(
        "Provenance/{}",
        resource_id(
            "Provenance",
            &feed.namespace,
            &format!("feed|{}|{key}", feed.name)
        )
    )
}

/// The Provenance of one record: what it wrote (exact versions), what those replaced, where it
/// came from, and every value no rule consumed (a contained OperationOutcome). `rewritten` is
/// false when the record changed nothing (a re-send of what is stored).
fn provenance(
    feed: &Feed,
    m: &Mapped,
    targets: &[String],
    revisions: &[String],
    rewritten: bool,
) -> Value {
    let id = resource_id(
        "Provenance",
        &feed.namespace,
        &format!("feed|{}|{}", feed.name, m.key),
    );
    let recorded = time::OffsetDateTime::now_utc()
        .format(time::macros::format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
        ))
        .unwrap_or_default();
    let mut p = Map::new();
    p.insert("resourceType".into(), json!("Provenance"));
    p.insert("id".into(), json!(id));
    let mut entity = vec![json!({
        "role": "source",
        "what": {
            "identifier": {"system": format!("urn:huitong:feed:{}", feed.name), "value": m.key},
            "display": format!("{} record {}", if feed.title.is_empty() { &feed.name } else { &feed.title }, m.key)
        }
    })];
    for r in revisions {
        entity.push(json!({"role": "revision", "what": {"reference": r}}));
    }
    if !m.unmapped.is_empty() {
        let issues: Vec<Value> = m
            .unmapped
            .iter()
            .map(|(pointer, value)| {
                json!({
                    "severity": "information",
                    "code": "informational",
                    "details": {"text": format!("no mapping: {}", value.chars().take(200).collect::<String>())},
                    "location": [pointer]
                })
            })
            .collect();
        p.insert(
            "contained".into(),
            json!([{"resourceType": "OperationOutcome", "id": "unmapped", "issue": issues}]),
        );
        entity.push(json!({"role": "derivation", "what": {"reference": "#unmapped", "display": "values no mapping consumed"}}));
    }
    let mapped_any = !targets.is_empty();
    let targets: Vec<Value> = if targets.is_empty() {
        vec![json!({"display": "no resource was mapped from this record"})]
    } else {
        targets.iter().map(|t| json!({"reference": t})).collect()
    };
    p.insert("target".into(), Value::Array(targets));
    p.insert("recorded".into(), json!(recorded));
    // v3-DataOperation has no code for "received again, nothing changed"; the binding is
    // extensible, so that case says so in text rather than claim a CREATE that did not happen.
    let activity = match (rewritten, revisions.is_empty()) {
        (false, _) if mapped_any => {
            json!({"text": "no change: every resource already held what the record states"})
        }
        (_, true) => {
            json!({"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-DataOperation", "code": "CREATE"}]})
        }
        (_, false) => {
            json!({"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-DataOperation", "code": "UPDATE"}]})
        }
    };
    p.insert("activity".into(), activity);
    p.insert(
        "agent".into(),
        json!([{"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/provenance-participant-type", "code": "author"}]},
                "who": {"display": format!("feed {}", feed.name)}}]),
    );
    p.insert("entity".into(), Value::Array(entity));
    Value::Object(p)
}

/// Code lookups through the registry's ConceptMaps and code systems.
struct TerminologyLookup<'a> {
    st: &'a AppState,
    scope: crate::terminology::Scope,
}

impl map::Lookup for TerminologyLookup<'_> {
    fn translate(
        &self,
        url: &str,
        system: Option<&str>,
        code: &str,
    ) -> Result<Option<(String, String, Option<String>)>, String> {
        let req = crate::terminology::translate::TranslateRequest {
            url: Some(url),
            system,
            code,
            ..Default::default()
        };
        let found = crate::terminology::translate::translate(&self.scope, &req)?;
        Ok(found.into_iter().find(|m| m.is_match()).map(|m| {
            let s = |k: &str| m.concept.get(k).and_then(Value::as_str).map(str::to_string);
            (
                s("system").unwrap_or_default(),
                s("code").unwrap_or_default(),
                s("display"),
            )
        }))
    }

    fn display(&self, system: &str, code: &str) -> Option<String> {
        self.st
            .terminology
            .lookup(&self.scope, system, None, code)
            .ok()
            .and_then(|l| l.display)
    }
}

/// Rows of a CSV as records: header names are top-level keys, or JSON Pointers (`/baseinfo/psn_no`)
/// for nested fields; values are typed by the schema (a `number` field becomes a number), empty
/// cells are absent.
pub struct CsvRecords {
    header: Option<Vec<String>>,
    schema: Value,
}

impl CsvRecords {
    /// For a feed's schema.
    pub fn new(feed: &Feed) -> CsvRecords {
        CsvRecords {
            header: None,
            schema: feed.schema_json.clone(),
        }
    }

    /// The record of a row, or `None` for the header row.
    pub fn record(&mut self, row: usize, cells: Vec<String>) -> Option<Result<Value, RecordError>> {
        let Some(header) = &self.header else {
            self.header = Some(cells.into_iter().map(|c| c.trim().to_string()).collect());
            return None;
        };
        if cells.len() > header.len() {
            return Some(Err(RecordError {
                pointer: String::new(),
                message: format!(
                    "row {row} has {} cells, the header {}",
                    cells.len(),
                    header.len()
                ),
                expression: None,
            }));
        }
        let mut record = Value::Object(Map::new());
        for (name, cell) in header.iter().zip(cells) {
            if cell.trim().is_empty() {
                continue;
            }
            let pointer = if name.starts_with('/') {
                name.clone()
            } else {
                format!("/{name}")
            };
            let value = typed(&self.schema, &pointer, cell);
            if let Err(m) = put_pointer(&mut record, &pointer, value) {
                return Some(Err(RecordError {
                    pointer,
                    message: m,
                    expression: None,
                }));
            }
        }
        Some(Ok(record))
    }
}

/// The schema's type at a pointer decides a cell's JSON type.
fn typed(schema: &Value, pointer: &str, cell: String) -> Value {
    let mut s = schema;
    for step in pointer.split('/').skip(1) {
        let next = if step.bytes().all(|b| b.is_ascii_digit()) {
            s.get("items")
        } else {
            s.get("properties").and_then(|p| p.get(step))
        };
        match next {
            Some(n) => s = n,
            None => return Value::String(cell),
        }
    }
    let types: Vec<&str> = match s.get("type") {
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    let t = cell.trim();
    if (types.contains(&"number") || types.contains(&"integer"))
        && let Ok(v) = serde_json::from_str::<serde_json::Number>(t)
    {
        return Value::Number(v);
    }
    if types.contains(&"boolean") && (t == "true" || t == "false") {
        return Value::Bool(t == "true");
    }
    Value::String(cell)
}

fn put_pointer(root: &mut Value, pointer: &str, value: Value) -> Result<(), String> {
    let steps: Vec<&str> = pointer.split('/').skip(1).collect();
    let mut cur = root;
    for (i, step) in steps.iter().enumerate() {
        let last = i + 1 == steps.len();
        let next_is_index = steps
            .get(i + 1)
            .is_some_and(|s| s.bytes().all(|b| b.is_ascii_digit()));
        let fresh = || {
            if next_is_index {
                Value::Array(Vec::new())
            } else {
                Value::Object(Map::new())
            }
        };
        if let Ok(idx) = step.parse::<usize>()
            && let Value::Array(a) = cur
        {
            if idx > a.len() {
                return Err(format!("column {pointer}: index {idx} skips an element"));
            }
            if idx == a.len() {
                a.push(if last { Value::Null } else { fresh() });
            }
            if last {
                a[idx] = value;
                return Ok(());
            }
            cur = &mut a[idx];
            continue;
        }
        let Value::Object(m) = cur else {
            return Err(format!("column {pointer} conflicts with another column"));
        };
        if last {
            m.insert(step.to_string(), value);
            return Ok(());
        }
        cur = m.entry(step.to_string()).or_insert_with(fresh);
    }
    Ok(())
}

/// Runs records in partial mode and collects the outcomes (for callers that answer at the end).
pub async fn collect_partial(
    st: &AppState,
    feed: &Arc<Feed>,
    records: Vec<(usize, Result<Value, RecordError>)>,
) -> Vec<RecordOutcome> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let (otx, mut orx) = tokio::sync::mpsc::channel(64);
    let feeder = tokio::spawn(async move {
        for r in records {
            if tx.send(r).await.is_err() {
                break;
            }
        }
    });
    let collector = tokio::spawn(async move {
        let mut out = Vec::new();
        while let Some(o) = orx.recv().await {
            out.push(o);
        }
        out
    });
    run_partial(st, feed, rx, otx).await;
    let _ = feeder.await;
    collector.await.unwrap_or_default()
}

/// Runs records through a feed in partial mode: `concurrency` records in flight, outcomes sent
/// to `sink` in input order (a slow reader of `sink` slows the intake: memory stays bounded).
pub async fn run_partial(
    st: &AppState,
    feed: &Arc<Feed>,
    mut records: tokio::sync::mpsc::Receiver<(usize, Result<Value, RecordError>)>,
    sink: tokio::sync::mpsc::Sender<RecordOutcome>,
) {
    use tokio::sync::mpsc::error::TryRecvError;
    type Window<T> = std::collections::VecDeque<(usize, tokio::task::JoinHandle<T>)>;
    let sink = &sink;
    let service = st.feeds.clone();
    let depth = service.concurrency.max(1);
    // Three stages: up to `depth` records are mapped at once; each then claims its resources in
    // input order (so that two records of one patient apply in the order sent); up to `depth`
    // claimed records commit at once, sharing the store's group commits.
    let mut mapping: Window<Result<Prepared, RecordOutcome>> = Window::new();
    let mut committing: Window<RecordOutcome> = Window::new();
    let mut open = true;
    while open || !mapping.is_empty() {
        // Start mapping what has arrived; wait for input only when nothing is being mapped.
        while open && mapping.len() < depth {
            let next = if mapping.is_empty() {
                records.recv().await
            } else {
                match records.try_recv() {
                    Ok(r) => Some(r),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => None,
                }
            };
            let Some((row, r)) = next else {
                open = false;
                break;
            };
            let (st, feed, service) = (st.clone(), feed.clone(), service.clone());
            let h = tokio::spawn(async move { service.map_only(&st, &feed, row, r) });
            mapping.push_back((row, h));
        }
        let Some((row, h)) = mapping.pop_front() else {
            continue;
        };
        let h = match h.await {
            Ok(Ok(p)) => {
                let p = service.claim(st, p).await;
                let (st, service) = (st.clone(), service.clone());
                tokio::spawn(async move { service.commit(&st, p).await })
            }
            Ok(Err(o)) => {
                service.count(&feed.name, &o);
                tokio::spawn(async move { o })
            }
            Err(e) => {
                let o = failed(row, &e);
                tokio::spawn(async move { o })
            }
        };
        committing.push_back((row, h));
        while committing.len() >= depth {
            if let Some((row, h)) = committing.pop_front() {
                deliver(row, h, sink).await;
            }
        }
    }
    while let Some((row, h)) = committing.pop_front() {
        deliver(row, h, sink).await;
    }
}

async fn deliver(
    row: usize,
    h: tokio::task::JoinHandle<RecordOutcome>,
    sink: &tokio::sync::mpsc::Sender<RecordOutcome>,
) {
    let o = h.await.unwrap_or_else(|e| failed(row, &e));
    let _ = sink.send(o).await;
}

/// A record whose task panicked: nothing of it is stored (a commit's unit of work is rolled back),
/// and it is reported, not dropped.
fn failed(row: usize, e: &tokio::task::JoinError) -> RecordOutcome {
    RecordOutcome {
        row,
        result: Err(vec![RecordError {
            pointer: String::new(),
            message: format!("internal error, nothing stored: {e}"),
            expression: None,
        }]),
    }
}
