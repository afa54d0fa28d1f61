//! One message in, one ACK out: parse, check for a duplicate, map, validate, commit through
//! [`crate::transaction::apply`], acknowledge. Every transport (MLLP, `POST /hl7v2`, the CLI)
//! calls [`Hl7v2Service::ingest`].
//!
//! Invariants: AA/CA only after the commit; a failure answers AE/AR and leaves the raw message in
//! the dead-letter table; a (sending facility, MSH-10) seen before gets the original ACK and is not
//! applied again (its Provenance, written in the same transaction, is the record); every value no
//! mapping consumed is listed in that Provenance and counted in `/metrics`.

use super::ack::{self, AckCode, AckError, Header};
use super::charset::sniff_msh_field;
use super::deadletter::DeadLetters;
use super::er7::{Delimiters, Hl7v2Message, ParseError};
use super::{Charset, parse};
use crate::ingest::locks::Access;
use crate::ingest::merge::Standing;
use crate::ingest::stored;
use crate::mapping::{self, Conversion, Mappings, Options, ids::resource_id};
use crate::model::FhirError;
use crate::rest::AppState;
use crate::store::StoredVersion;
use crate::transaction::{self, Entry, Method, Scope, Target};
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, RwLock};

/// Commits of one message tried before a version conflict on a re-pointed or merged resource is
/// its AE. The records a message states are locked (`ingest::locks`), so a conflict is a write
/// the locks do not order: a REST update, a resource an A40 re-points, two messages that held a
/// record shared and both changed it.
const CONFLICT_ATTEMPTS: usize = 12;

/// The HL7 v2 side of a running gateway.
pub struct Hl7v2Service {
    mappings: RwLock<Arc<Mappings>>,
    /// Failed messages.
    pub dead_letters: DeadLetters,
    counters: Mutex<Counters>,
    options: Options,
    default_charset: Charset,
    sender_charsets: HashMap<String, Charset>,
}

#[derive(Default)]
struct Counters {
    /// (ack code) -> messages.
    messages: BTreeMap<&'static str, u64>,
    duplicates: u64,
    /// Commits tried again after a version conflict (see [`CONFLICT_ATTEMPTS`]).
    conflict_retries: u64,
    /// (segment-field, e.g. PID-10) -> values no mapping consumed.
    unmapped: BTreeMap<String, u64>,
}

/// Which dead letters to replay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replay {
    One(i64),
    All,
}

impl std::str::FromStr for Replay {
    type Err = String;
    fn from_str(s: &str) -> Result<Replay, String> {
        match s.trim() {
            "all" => Ok(Replay::All),
            t => t
                .parse()
                .map(Replay::One)
                .map_err(|_| format!("'{t}' is neither a dead-letter id nor `all`")),
        }
    }
}

/// A dead letter and what its replay gave.
pub struct Replayed {
    pub letter: super::deadletter::DeadLetter,
    pub result: Ingested,
}

/// What became of one message.
#[derive(Debug, Clone)]
pub struct Ingested {
    pub code: AckCode,
    /// The ACK as text and as bytes in the sender's charset.
    pub ack_text: String,
    pub ack: Vec<u8>,
    /// The charset of `ack`.
    pub charset: Charset,
    /// False when MSH-15 asks for no accept acknowledgement of this outcome.
    pub send_ack: bool,
    /// The transaction Bundle that was committed, when asked for
    /// ([`Hl7v2Service::ingest_returning_bundle`]).
    pub bundle: Option<Value>,
    /// True when this was a re-send of a committed message.
    pub duplicate: bool,
    /// Why it failed, for logs and the CLI.
    pub reason: Option<String>,
}

impl Ingested {
    /// MSA-1 of the acknowledgement (`AA`, `CE`...).
    pub fn msa_code(&self) -> &str {
        self.ack_text
            .split('\r')
            .find_map(|seg| seg.strip_prefix("MSA"))
            .and_then(|rest| rest.get(1..))
            .map(|f| {
                f.split(|c: char| !c.is_ascii_alphabetic())
                    .next()
                    .unwrap_or("")
            })
            .unwrap_or("")
    }
}

/// Why the service cannot start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("mapping rules:\n{}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n"))]
    Mappings(Vec<mapping::LoadError>),
    #[error("dead-letter table: {0}")]
    DeadLetters(rusqlite::Error),
}

fn now_instant() -> (String, String) {
    let now = time::OffsetDateTime::now_utc();
    let fhir = now
        .format(time::macros::format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
        ))
        .unwrap_or_default();
    (fhir.clone(), dtm_of(&fhir))
}

/// `2024-01-02T03:04:05.123Z` as an HL7 DTM (`20240102030405.123+0000`).
fn dtm_of(instant: &str) -> String {
    let mut out: String = instant
        .trim_end_matches('Z')
        .chars()
        .filter(|c| !matches!(c, '-' | ':' | 'T'))
        .collect();
    out.push_str("+0000");
    out
}

impl Hl7v2Service {
    /// Loads the mappings and opens the dead-letter table.
    pub fn start(settings: &crate::config::Settings) -> Result<Hl7v2Service, StartError> {
        let mappings = if settings.mappings_dir.join("hl7v2").is_dir() {
            Mappings::load(&settings.mappings_dir).map_err(StartError::Mappings)?
        } else {
            tracing::warn!(dir = %settings.mappings_dir.display(), "no hl7v2/ mapping rules there: HL7 v2 messages will be refused");
            Mappings::empty(&settings.mappings_dir)
        };
        let dead_letters =
            DeadLetters::open(&settings.data_dir).map_err(StartError::DeadLetters)?;
        let default_charset =
            Charset::from_msh18(&settings.hl7v2_charset).unwrap_or(Charset::Ascii);
        let sender_charsets = settings
            .hl7v2_sender_charsets
            .iter()
            .filter_map(|(k, v)| Some((k.clone(), Charset::from_msh18(v)?)))
            .collect();
        Ok(Hl7v2Service {
            mappings: RwLock::new(Arc::new(mappings)),
            dead_letters,
            counters: Mutex::new(Counters::default()),
            options: Options {
                default_offset: settings.hl7v2_timezone.clone(),
                trace: false,
            },
            default_charset,
            sender_charsets,
        })
    }

    /// The mappings in force.
    pub fn mappings(&self) -> Arc<Mappings> {
        self.mappings
            .read()
            .map(|m| m.clone())
            .unwrap_or_else(|e| e.into_inner().clone())
    }

    /// Reloads the mappings from their folder; on any error the old ones stay in force.
    pub fn reload(&self) -> Result<usize, Vec<mapping::LoadError>> {
        let dir = self.mappings().dir.clone();
        let fresh = Mappings::load(&dir)?;
        let n = fresh.messages.len();
        if let Ok(mut m) = self.mappings.write() {
            *m = Arc::new(fresh);
        }
        Ok(n)
    }

    /// The charset for a message whose MSH-18 is empty: the sender's, else the default.
    pub fn charset_for(&self, raw: &[u8]) -> Charset {
        sniff_msh_field(raw, 4)
            .and_then(|f| std::str::from_utf8(f).ok())
            .and_then(|f| self.sender_charsets.get(f.trim()))
            .copied()
            .unwrap_or(self.default_charset)
    }

    /// Parses and maps without storing (`huitong convert`).
    pub fn convert(&self, raw: &[u8]) -> Result<Conversion, String> {
        let msg = parse(raw, self.charset_for(raw)).map_err(|e| e.to_string())?;
        mapping::convert(&msg, &self.mappings(), &self.options).map_err(|e| e.to_string())
    }

    /// The ACK for an MLLP frame too large to read.
    pub fn too_large_ack(&self, max: usize) -> Vec<u8> {
        let (_, dtm) = now_instant();
        let err = AckError {
            location: None,
            code: 207,
            severity: 'E',
            message: format!("message larger than {max} bytes; not processed"),
        };
        let text = ack::render(
            &Header::default(),
            &Delimiters::default(),
            Charset::Ascii,
            AckCode::Reject,
            &dtm,
            &[err],
        );
        text.into_bytes()
    }

    /// The AR ACK for a message refused before processing (the sender is not authorised).
    pub fn refused_ack(&self, raw: &[u8], why: &str) -> Vec<u8> {
        let (_, dtm) = now_instant();
        let err = AckError {
            location: None,
            code: 207,
            severity: 'E',
            message: format!("not authorised: {why}; not processed"),
        };
        let header = parse(raw, self.charset_for(raw))
            .map(|m| Header::of(&m))
            .unwrap_or_default();
        ack::render(
            &header,
            &Delimiters::default(),
            Charset::Ascii,
            AckCode::Reject,
            &dtm,
            &[err],
        )
        .into_bytes()
    }

    /// Processes one message end to end.
    pub async fn ingest(&self, st: &AppState, raw: &[u8]) -> Ingested {
        self.ingest_as(st, raw, false).await
    }

    /// [`Self::ingest`], also returning the committed transaction as [`Ingested::bundle`]
    /// (`POST /hl7v2` with `Accept: application/fhir+json`; the ACK alone does not need it).
    pub async fn ingest_returning_bundle(&self, st: &AppState, raw: &[u8]) -> Ingested {
        self.ingest_as(st, raw, true).await
    }

    async fn ingest_as(&self, st: &AppState, raw: &[u8], with_bundle: bool) -> Ingested {
        let charset = self.charset_for(raw);
        let msg = match parse(raw, charset) {
            Ok(m) => m,
            Err(e) => return self.unparsed(raw, e).await,
        };
        let header = Header::of(&msg);
        let facility = mapping::facility(&msg);
        let control = msg
            .msh()
            .field(10)
            .text()
            .map(|t| t.into_owned())
            .unwrap_or_default();
        let provenance_id = resource_id("Provenance", &facility, &format!("message|{control}"));
        // One message per (facility, control id) at a time: a concurrent re-send waits and then
        // finds the first one committed. (Its record, the Provenance, is locked only here, before
        // any other: the records' locks taken later cannot close a cycle.)
        let held = st
            .record_locks
            .lock(vec![(
                format!("Provenance/{provenance_id}"),
                Access::Exclusive,
            )])
            .await;
        let out = self
            .process(
                st,
                raw,
                &msg,
                &header,
                &facility,
                &control,
                &provenance_id,
                with_bundle,
            )
            .await;
        drop(held);
        self.count(&out);
        out
    }

    /// Replays dead letters (one, or all oldest first) through [`Self::ingest`]. Each replayed one
    /// leaves the table: a message that fails again has been recorded anew, with its new reason,
    /// before the old entry is removed, so nothing is lost between the two.
    pub async fn replay(&self, st: &AppState, which: Replay) -> Result<Vec<Replayed>, String> {
        let letters = match which {
            Replay::All => self.dead_letters.oldest_first(),
            Replay::One(id) => vec![
                self.dead_letters
                    .get(id)
                    .ok_or_else(|| format!("no dead letter {id}"))?,
            ],
        };
        let mut out = Vec::with_capacity(letters.len());
        for letter in letters {
            let result = self.ingest(st, &letter.raw).await;
            self.dead_letters.remove(letter.id);
            out.push(Replayed { letter, result });
        }
        Ok(out)
    }

    fn count(&self, out: &Ingested) {
        let mut c = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        let k = match out.code {
            AckCode::Accept => "accepted",
            AckCode::Error => "error",
            AckCode::Reject => "rejected",
        };
        *c.messages.entry(k).or_default() += 1;
        if out.duplicate {
            c.duplicates += 1;
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn process(
        &self,
        st: &AppState,
        raw: &[u8],
        msg: &Hl7v2Message<'_>,
        header: &Header,
        facility: &str,
        control: &str,
        provenance_id: &str,
        with_bundle: bool,
    ) -> Ingested {
        let d = *msg.delimiters();
        let charset = msg.charset();
        // The message's record: also the Provenance entry's stored version, read once.
        let recorded_before = st.store.read("Provenance", provenance_id).await;
        if let Ok(Some(prev)) = &recorded_before
            && let Some(body) = &prev.body
        {
            let recorded = serde_json::from_slice::<Value>(body)
                .ok()
                .and_then(|v| {
                    v.get("recorded")
                        .and_then(Value::as_str)
                        .map(str::to_string)
                })
                .unwrap_or_default();
            let text = ack::render(
                header,
                &d,
                charset,
                AckCode::Accept,
                &dtm_of(&recorded),
                &[],
            );
            return Ingested {
                code: AckCode::Accept,
                ack: ack::encode(&text, charset),
                charset,
                ack_text: text,
                send_ack: header.wants_ack(AckCode::Accept),
                bundle: None,
                duplicate: true,
                reason: None,
            };
        }
        let mut conversion = match mapping::convert(msg, &self.mappings(), &self.options) {
            Ok(c) => c,
            Err(e) => {
                let err = AckError {
                    location: Some(msg.msh().location(Some(9))),
                    code: 200,
                    severity: 'E',
                    message: e.to_string(),
                };
                return self
                    .failed(
                        raw,
                        header,
                        &d,
                        charset,
                        facility,
                        control,
                        AckCode::Reject,
                        err,
                    )
                    .await;
            }
        };
        // Alias identifier systems become the canonical ones, as on every REST write; then a
        // record the message names or is the subject of is the one stored under any of its
        // identifiers, whichever format registered it (a patient of a CDA document).
        for r in &mut conversion.resources {
            st.identities.current().canonicalise_resource(r);
        }
        let unresolved = resolve_stored(st, &mut conversion)
            .await
            .err()
            .map(|e| format!("not stored: {}", describe(&e)));
        // The records the message changes are locked until the commit, so messages about one
        // patient merge one after the other, in arrival order, rather than onto one version and
        // all but one again.
        let (mut merges, unmerged) =
            match stored::Merges::lock(st, conversion.resources.iter().zip(&conversion.statements))
                .await
            {
                Ok(m) => (m, None),
                Err(e) => (
                    stored::Merges::default(),
                    Some(format!("not stored: {}", describe(&e))),
                ),
            };
        let unresolved = unresolved.or(unmerged);
        let mut attempt = 0;
        let (stored, bundle, dtm, conflicts) = loop {
            attempt += 1;
            // A merge (A40...): what the store holds that refers to the merged-away patient is
            // re-pointed to the survivor, in the same transaction.
            let (repointed, repoint_failed) = match repointed(st, &conversion).await {
                Ok(r) => (r, None),
                Err(message) => (Vec::new(), Some(message)),
            };
            let (recorded, dtm) = now_instant();
            let mut provenance = provenance(
                &conversion,
                provenance_id,
                facility,
                control,
                header,
                &recorded,
            );
            if let Some(targets) = provenance["target"].as_array_mut() {
                targets.extend(repointed.iter().filter_map(|e| match &e.target {
                    Target::Id(id) => {
                        Some(json!({"reference": format!("{}/{id}", e.resource_type)}))
                    }
                    _ => None,
                }));
            }
            // What the message states, merged onto what the store holds where the message only
            // names a resource or is its subject (an ORU's PID never overwrites the registered
            // patient); what the store kept over the message's values is recorded.
            let mut refused = unresolved.clone().or(repoint_failed);
            let mut written: Vec<Outgoing> = Vec::new();
            let mut conflicts = Vec::new();
            for (i, r) in conversion.resources.iter().enumerate() {
                if refused.is_some() {
                    break;
                }
                let statement = conversion.statements.get(i).cloned().unwrap_or_default();
                if statement.standing == Standing::Owned {
                    written.push(Outgoing::stated(r.clone()));
                    continue;
                }
                match merges.onto(st, i, r, &statement).await {
                    Ok(onto) => {
                        conflicts.extend(onto.conflicts);
                        if !onto.foreign {
                            written.push(Outgoing {
                                resource: onto.resource,
                                if_match: Some(onto.if_match),
                                read: Some(onto.read),
                            });
                        }
                    }
                    Err(e) => refused = Some(format!("not stored: {}", describe(&e))),
                }
            }
            stored::record_conflicts(&mut provenance, &conflicts);
            written.push(Outgoing {
                read: recorded_before.as_ref().ok().cloned(),
                ..Outgoing::stated(provenance)
            });
            let mut entries = Vec::new();
            for Outgoing {
                resource: r,
                if_match,
                read,
            } in &written
            {
                if refused.is_some() {
                    break;
                }
                // The structural rules first (REST gets them from the parser; mapped JSON must pass
                // them too), then the validation policy.
                let structural = crate::model::check_resource(
                    r,
                    crate::definitions::Definitions::core(),
                    Default::default(),
                );
                let checked = if structural.is_empty() {
                    crate::rest::check_write(st, r)
                } else {
                    Err(FhirError {
                        status: 422,
                        issues: structural,
                    })
                };
                if let Err(e) = checked {
                    let ty = r["resourceType"].as_str().unwrap_or_default();
                    let id = r["id"].as_str().unwrap_or_default();
                    refused = Some(format!("{ty}/{id} is not valid: {}", describe(&e)));
                    break;
                }
                let ty = r["resourceType"].as_str().unwrap_or_default().to_string();
                let id = r["id"].as_str().unwrap_or_default().to_string();
                let mut entry = Entry::new(Method::Put, &ty, Target::Id(id), Some(r.clone()));
                entry.if_match = *if_match;
                entry.read_before = read.clone();
                entries.push(entry);
            }
            entries.extend(repointed);
            // Owned by the sender's domain, never over another domain's (before the comparison
            // below, which must see the resources as they would be stored).
            if refused.is_none()
                && let Err(e) = crate::security::ownership::claim(st, &mut entries).await
            {
                refused = Some(describe(&e));
            }
            // A message that re-sends what is stored (an A08 of an unchanged patient, a retry) writes
            // only its Provenance.
            transaction::skip_unchanged(st.store.as_ref(), &mut entries).await;
            let bundle = with_bundle.then(|| transaction_bundle(&written));
            // A message is applied whole or not at all: one invalid resource refuses it before the store.
            let outcome = match refused {
                Some(message) => Err(message),
                None => match transaction::apply(
                    st.store.as_ref(),
                    &st.search,
                    entries,
                    Scope::Bundle,
                    Default::default(),
                )
                .await
                {
                    // A version conflict is a concurrent write to a re-pointed or merged resource:
                    // read again and re-point or merge on top of it, rather than refuse a valid
                    // message for another one's timing.
                    Err(e) if e.status == 412 && attempt < CONFLICT_ATTEMPTS => {
                        self.counters
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .conflict_retries += 1;
                        continue;
                    }
                    r => r
                        .map(|_| ())
                        .map_err(|e| format!("not stored: {}", describe(&e))),
                },
            };
            break (outcome, bundle, dtm, conflicts);
        };
        if let Err(message) = stored {
            let err = AckError {
                location: None,
                code: 207,
                severity: 'E',
                message,
            };
            return self
                .failed(
                    raw,
                    header,
                    &d,
                    charset,
                    facility,
                    control,
                    AckCode::Error,
                    err,
                )
                .await;
        }
        {
            let mut c = self.counters.lock().unwrap_or_else(|e| e.into_inner());
            for u in &conversion.unmapped {
                let field = u.field.split(['[', '.']).next().unwrap_or(&u.field);
                *c.unmapped.entry(field.to_string()).or_default() += 1;
            }
        }
        // Values the store kept over the message's are accepted, and the sender is told (ERR-4 W).
        let warnings: Vec<AckError> = conflicts
            .iter()
            .map(|c| AckError {
                location: None,
                code: 0,
                severity: 'W',
                message: c.describe(),
            })
            .collect();
        let text = ack::render(header, &d, charset, AckCode::Accept, &dtm, &warnings);
        Ingested {
            code: AckCode::Accept,
            ack: ack::encode(&text, charset),
            charset,
            ack_text: text,
            send_ack: header.wants_ack(AckCode::Accept),
            bundle,
            duplicate: false,
            reason: None,
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn failed(
        &self,
        raw: &[u8],
        header: &Header,
        d: &Delimiters,
        charset: Charset,
        facility: &str,
        control: &str,
        code: AckCode,
        err: AckError,
    ) -> Ingested {
        self.dead_letters
            .record(facility, control, &err.message, raw)
            .await;
        let (_, dtm) = now_instant();
        let reason = err.message.clone();
        let text = ack::render(header, d, charset, code, &dtm, &[err]);
        Ingested {
            code,
            ack: ack::encode(&text, charset),
            charset,
            ack_text: text,
            send_ack: header.wants_ack(code),
            bundle: None,
            duplicate: false,
            reason: Some(reason),
        }
    }

    /// A message that did not parse: AR with what was wrong, kept as a dead letter.
    async fn unparsed(&self, raw: &[u8], e: ParseError) -> Ingested {
        let field = |n| {
            sniff_msh_field(raw, n)
                .map(|f| String::from_utf8_lossy(f).into_owned())
                .unwrap_or_default()
        };
        let header = Header {
            sending_application: field(3),
            sending_facility: field(4),
            receiving_application: field(5),
            receiving_facility: field(6),
            control_id: field(10),
            version: field(12),
            ..Header::default()
        };
        let code = match &e {
            ParseError::Charset { .. } | ParseError::UnknownCharset(_) => 102,
            _ => 100,
        };
        let err = AckError {
            location: e.location().cloned(),
            code,
            severity: 'E',
            message: e.to_string(),
        };
        let facility = header.sending_facility.clone();
        let control = header.control_id.clone();
        let out = self
            .failed(
                raw,
                &header,
                &Delimiters::default(),
                Charset::Ascii,
                &facility,
                &control,
                AckCode::Reject,
                err,
            )
            .await;
        self.count(&out);
        out
    }

    /// The `/metrics` lines of HL7 v2 ingest.
    pub fn render_metrics(&self) -> String {
        let c = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = String::new();
        out.push_str("# HELP huitong_hl7v2_messages_total HL7 v2 messages by outcome.\n");
        out.push_str("# TYPE huitong_hl7v2_messages_total counter\n");
        for (k, n) in &c.messages {
            let _ = writeln!(out, "huitong_hl7v2_messages_total{{outcome=\"{k}\"}} {n}");
        }
        out.push_str("# HELP huitong_hl7v2_duplicates_total Re-sent messages answered with their original ACK.\n");
        out.push_str("# TYPE huitong_hl7v2_duplicates_total counter\n");
        let _ = writeln!(out, "huitong_hl7v2_duplicates_total {}", c.duplicates);
        out.push_str("# HELP huitong_hl7v2_conflict_retries_total Commits tried again because a record the message merged onto changed first.\n");
        out.push_str("# TYPE huitong_hl7v2_conflict_retries_total counter\n");
        let _ = writeln!(
            out,
            "huitong_hl7v2_conflict_retries_total {}",
            c.conflict_retries
        );
        out.push_str("# HELP huitong_hl7v2_unmapped_values_total Values of committed messages that no mapping consumed, by field.\n");
        out.push_str("# TYPE huitong_hl7v2_unmapped_values_total counter\n");
        for (k, n) in &c.unmapped {
            let _ = writeln!(
                out,
                "huitong_hl7v2_unmapped_values_total{{field=\"{k}\"}} {n}"
            );
        }
        out
    }
}

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

/// The Provenance of one message: what it wrote, where it came from, and what was not mapped
/// (a contained OperationOutcome with one issue per value).
fn provenance(
    c: &Conversion,
    id: &str,
    facility: &str,
    control: &str,
    h: &Header,
    recorded: &str,
) -> Value {
    let mut targets: Vec<Value> = c
        .resources
        .iter()
        .map(|r| json!({"reference": format!("{}/{}", r["resourceType"].as_str().unwrap_or_default(), r["id"].as_str().unwrap_or_default())}))
        .collect();
    if targets.is_empty() {
        targets.push(json!({"display": "no resource was mapped from this message"}));
    }
    let mut p = Map::new();
    p.insert("resourceType".into(), json!("Provenance"));
    p.insert("id".into(), json!(id));
    let mut entity = vec![json!({
        "role": "source",
        "what": {
            "identifier": {"system": format!("urn:huitong:hl7v2:message:{}", mapping::datatypes::uri_safe(facility)), "value": control},
            "display": format!("HL7 v2 {} {} from {}", c.structure, c.event, h.sending_application)
        }
    })];
    if !c.unmapped.is_empty() {
        let issues: Vec<Value> = c
            .unmapped
            .iter()
            .map(|u| {
                json!({
                    "severity": "information",
                    "code": "informational",
                    "details": {"text": format!("{}: {}", u.reason, u.value)},
                    "location": [format!("{} (segment {})", u.field, u.sequence)]
                })
            })
            .collect();
        p.insert(
            "contained".into(),
            json!([{"resourceType": "OperationOutcome", "id": "unmapped", "issue": issues}]),
        );
        entity.push(json!({"role": "derivation", "what": {"reference": "#unmapped", "display": "values no mapping consumed"}}));
    }
    p.insert("target".into(), Value::Array(targets));
    p.insert("recorded".into(), json!(recorded));
    p.insert(
        "activity".into(),
        json!({"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-DataOperation", "code": "UPDATE"}]}),
    );
    p.insert(
        "agent".into(),
        json!([{"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/provenance-participant-type", "code": "author"}]},
                "who": {"display": format!("{} at {}", h.sending_application, facility)}}]),
    );
    p.insert("entity".into(), Value::Array(entity));
    Value::Object(p)
}

/// For each Patient of the conversion that is `replaced-by` a survivor (the merged-away one of an
/// A40), an update of every stored resource whose references point at it, now pointing at the
/// survivor. Found through the reference search index, so a reference in an element no search
/// parameter covers is not seen. Each update is conditional on the version read (If-Match): a
/// concurrent change is never overwritten; the caller reads again and re-points on top of it
/// ([`CONFLICT_ATTEMPTS`] times, then the message fails, to be replayed). The
/// merged patient's own history, Provenance and AuditEvent keep what they recorded.
async fn repointed(st: &AppState, c: &Conversion) -> Result<Vec<Entry>, String> {
    let in_message: std::collections::HashSet<(&str, &str)> = c
        .resources
        .iter()
        .filter_map(|r| Some((r["resourceType"].as_str()?, r["id"].as_str()?)))
        .collect();
    let mut out = Vec::new();
    for p in c
        .resources
        .iter()
        .filter(|r| r["resourceType"] == "Patient")
    {
        let Some(merged) = p["id"].as_str() else {
            continue;
        };
        let survivor = p["link"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|l| l["type"] == "replaced-by")
            .and_then(|l| l["other"]["reference"].as_str());
        let Some(survivor) = survivor else {
            continue;
        };
        let from = format!("Patient/{merged}");
        let query = crate::search::sql::referrers(st.store.dialect(), "Patient", merged);
        let keys = st
            .store
            .query_keys(query)
            .await
            .map_err(|e| format!("the references to {from} could not be found: {e}"))?;
        for (ty, id) in keys {
            if matches!(ty.as_str(), "Provenance" | "AuditEvent")
                || in_message.contains(&(ty.as_str(), id.as_str()))
            {
                continue;
            }
            let stored = st
                .store
                .read(&ty, &id)
                .await
                .map_err(|e| format!("{ty}/{id} could not be read to re-point it: {e}"))?;
            let Some(v) = stored else { continue };
            let Some(body) = &v.body else { continue };
            let mut r: Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
            if repoint(&mut r, &from, survivor) > 0 {
                let mut e = Entry::new(Method::Put, &ty, Target::Id(id), Some(r));
                e.if_match = Some(v.version);
                e.read_before = Some(Some(v.clone()));
                out.push(e);
            }
        }
    }
    Ok(out)
}

/// Replaces every `reference` equal to `from` by `to`; returns how many.
fn repoint(v: &mut Value, from: &str, to: &str) -> usize {
    match v {
        Value::Object(m) => {
            let mut n = 0;
            for (k, x) in m.iter_mut() {
                if k == "reference" && x.as_str() == Some(from) {
                    *x = Value::String(to.to_string());
                    n += 1;
                } else {
                    n += repoint(x, from, to);
                }
            }
            n
        }
        Value::Array(a) => a.iter_mut().map(|x| repoint(x, from, to)).sum(),
        _ => 0,
    }
}

/// One resource of the message about to be written.
struct Outgoing {
    resource: Value,
    /// The version it was merged onto ([`transaction::ABSENT`]: none), for a named or subject
    /// resource.
    if_match: Option<u64>,
    /// Its stored version as read for the merge ([`Entry::read_before`]).
    read: Option<Option<Arc<StoredVersion>>>,
}

impl Outgoing {
    /// A resource written as stated.
    fn stated(resource: Value) -> Outgoing {
        Outgoing {
            resource,
            if_match: None,
            read: None,
        }
    }
}

/// Resolves the named and subject resources of `c` to the records stored under one of their
/// identifiers ([`stored::resolve`]): their ids and every reference to them become the stored
/// ones. Two resources of the message that resolve to one record are one: the first, the other
/// is reported as not mapped (a transaction cannot write one resource twice).
async fn resolve_stored(st: &AppState, c: &mut Conversion) -> Result<(), FhirError> {
    let renames = stored::resolve(st, c.resources.iter().zip(&c.statements)).await?;
    if renames.is_empty() {
        return Ok(());
    }
    let mut seen = std::collections::HashSet::new();
    let mut kept = Vec::with_capacity(c.resources.len());
    let statements = std::mem::take(&mut c.statements);
    for (mut r, s) in std::mem::take(&mut c.resources).into_iter().zip(statements) {
        let before = stored::type_and_id(&r);
        stored::rename(&mut r, &renames);
        let key = stored::type_and_id(&r);
        if seen.insert(key.clone()) {
            kept.push((r, s));
        } else {
            c.unmapped.push(mapping::Unmapped {
                field: r["resourceType"].as_str().unwrap_or_default().to_string(),
                sequence: 0,
                value: before,
                reason: format!("the same stored record as an earlier resource ({key})"),
            });
        }
    }
    (c.resources, c.statements) = kept.into_iter().unzip();
    Ok(())
}

/// The transaction as committed: each resource as written (merged where the message named it or
/// was its subject, with the version it was merged onto as `ifMatch`), then the Provenance.
fn transaction_bundle(written: &[Outgoing]) -> Value {
    let entries: Vec<Value> = written
        .iter()
        .map(|o| {
            let (r, if_match) = (&o.resource, o.if_match);
            let url = format!(
                "{}/{}",
                r["resourceType"].as_str().unwrap_or_default(),
                r["id"].as_str().unwrap_or_default()
            );
            let mut request = json!({"method": "PUT", "url": url});
            if let Some(v) = if_match.filter(|&v| v != transaction::ABSENT) {
                request["ifMatch"] = json!(format!("W/\"{v}\""));
            }
            json!({"fullUrl": url, "resource": r, "request": request})
        })
        .collect();
    json!({"resourceType": "Bundle", "type": "transaction", "entry": entries})
}

/// The MLLP transport's view of the service.
pub struct MllpHandler {
    state: AppState,
}

impl MllpHandler {
    /// A handler over the gateway state.
    pub fn new(state: AppState) -> MllpHandler {
        MllpHandler { state }
    }
}

impl super::mllp::Handler for MllpHandler {
    async fn handle(&self, peer: &crate::security::PeerInfo, message: Vec<u8>) -> Option<Vec<u8>> {
        let sec = &self.state.security;
        let facility = sniff_msh_field(&message, 4)
            .map(|f| {
                String::from_utf8_lossy(f)
                    .split('^')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_string()
            })
            .unwrap_or_default();
        let mut record = crate::security::audit::Record {
            agent: "unknown".into(),
            method: "none".into(),
            client: None,
            address: Some(peer.addr.ip().to_string()),
            subtype: "ingest".into(),
            action: "C",
            status: 0,
            description: None,
            entity: format!("mllp:{facility}"),
            query: None,
        };
        // The sender's identity (certificate or source address) and the facilities it may send as.
        let who = match sec.mllp_sender(peer) {
            Ok(p) => p,
            Err(f) => {
                record.subtype = "login".into();
                record.status = 401;
                record.description = Some(f.0.clone());
                if let Some(a) = &sec.audit {
                    a.record(record);
                }
                return Some(self.state.hl7v2.refused_ack(&message, &f.0));
            }
        };
        record.agent = who.id.clone();
        record.method = who.method.into();
        if !who.facilities.is_empty() && !who.facilities.iter().any(|f| f == &facility) {
            let why = format!(
                "sender '{}' may not send as facility '{facility}' (MSH-4)",
                who.id
            );
            record.status = 403;
            record.description = Some(why.clone());
            if let Some(a) = &sec.audit {
                a.record(record);
            }
            return Some(self.state.hl7v2.refused_ack(&message, &why));
        }
        let st = self.state.clone().writing_as(Some(who));
        let out = st.hl7v2.ingest(&st, &message).await;
        sec.consents.invalidate_all();
        if let Some(a) = &sec.audit {
            record.status = match out.code {
                AckCode::Accept => 200,
                AckCode::Reject => 400,
                _ => 422,
            };
            record.description = out.reason.clone();
            a.record(record);
        }
        out.send_ack.then_some(out.ack)
    }

    fn too_large(&self) -> Vec<u8> {
        self.state
            .hl7v2
            .too_large_ack(self.state.settings.hl7v2_max_message_bytes)
    }
}
