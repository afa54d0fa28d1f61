//! The audit trail ("权责一致"): one AuditEvent per interaction, in an append-only table of the
//! store's own SQLite file, each record carrying the SM3 hash of the previous one.
//!
//! Invariants: `hash(n) = SM3(hash(n-1) | seq | recorded_ms | agent | subtype | outcome | entity |
//! event)`, seqs are gapless from the anchor (the first kept record after a retention purge names
//! its predecessor's hash in `audit_anchor`, and the purge appends a record of its own naming the
//! last seq it removed, which the anchor must agree with); with a signing key, the head is SM2-signed every
//! `seal-every` records and at shutdown (`audit_seal`), so truncating the tail is detected too.
//! Triggers refuse UPDATE and DELETE (outside a retention purge) to the application; someone with
//! the file can drop them, which the chain then reveals: [`verify`] names the first broken record.
//!
//! Records are queued and written by one thread in batches (one transaction, one fsync per batch),
//! so the trail does not serialise requests; [`AuditLog::flush`] waits for the queue (audit reads,
//! shutdown).

use super::config::AuditConfig;
use super::sm;
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use tokio::sync::oneshot;

const DB_FILE: &str = "huitong.db";
const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
const MAX_BATCH: usize = 512;
/// The subtype of the record a retention purge appends to the chain.
pub const PURGE_SUBTYPE: &str = "audit-purge";
const DAY_MS: i64 = 86_400_000;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS audit_log (
    seq INTEGER PRIMARY KEY,
    recorded_ms INTEGER NOT NULL,
    agent TEXT NOT NULL,
    subtype TEXT NOT NULL,
    outcome TEXT NOT NULL,
    entity TEXT NOT NULL,
    event BLOB NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_log_recorded ON audit_log (recorded_ms);
CREATE TABLE IF NOT EXISTS audit_anchor (seq INTEGER NOT NULL, prev_hash TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS audit_purge (up_to INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS audit_seal (
    seq INTEGER PRIMARY KEY,
    hash TEXT NOT NULL,
    signed_ms INTEGER NOT NULL,
    signature BLOB NOT NULL
);
CREATE TRIGGER IF NOT EXISTS audit_log_append_only BEFORE UPDATE ON audit_log
BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_log_keep BEFORE DELETE ON audit_log
WHEN OLD.seq > (SELECT COALESCE(MAX(up_to), 0) FROM audit_purge)
BEGIN SELECT RAISE(ABORT, 'audit_log records are removed only by the retention purge'); END;
";

/// One interaction to record.
#[derive(Debug, Clone)]
pub struct Record {
    /// Who (principal id), how they authenticated, their client and address.
    pub agent: String,
    pub method: String,
    pub client: Option<String>,
    pub address: Option<String>,
    /// `read`, `search-type`, `create`, `ingest`, `login`, ... (the interaction).
    pub subtype: String,
    /// `C`, `R`, `U`, `D`, `E`.
    pub action: &'static str,
    /// The HTTP status or ACK code.
    pub status: u16,
    pub description: Option<String>,
    /// Resource references (`Observation/1`) or the endpoint.
    pub entity: String,
    /// The query string of a search.
    pub query: Option<String>,
}

impl Record {
    /// FHIR `AuditEvent.outcome`: 0 success, 4 minor failure (refused), 8 serious (server error).
    fn outcome(&self) -> &'static str {
        match self.status {
            0..=399 => "0",
            400..=499 => "4",
            _ => "8",
        }
    }

    fn event(&self, recorded_ms: i64) -> Value {
        let (ty, subtype_system) = match self.subtype.as_str() {
            "login" => (
                json!({"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "110114", "display": "User Authentication"}),
                "http://dicom.nema.org/resources/ontology/DCM",
            ),
            PURGE_SUBTYPE => (
                json!({"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "110101", "display": "Audit Log Used"}),
                "urn:huitong:audit-subtype",
            ),
            "ingest" => (
                json!({"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "110107", "display": "Import"}),
                "urn:huitong:audit-subtype",
            ),
            _ => (
                json!({"system": "http://terminology.hl7.org/CodeSystem/audit-event-type", "code": "rest", "display": "RESTful Operation"}),
                "http://hl7.org/fhir/restful-interaction",
            ),
        };
        let mut agent = json!({
            "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/extra-security-role-type", "code": "humanuser"}]},
            "who": {"identifier": {"value": self.agent}},
            "altId": self.method,
            "requestor": true,
        });
        if let Some(c) = &self.client {
            agent["name"] = json!(c);
        }
        if let Some(a) = &self.address {
            agent["network"] = json!({"address": a, "type": "2"});
        }
        let mut entity = json!({"what": {"reference": self.entity}});
        if let Some(q) = &self.query {
            use base64::Engine;
            entity["query"] = json!(base64::engine::general_purpose::STANDARD.encode(q));
        }
        let mut ev = json!({
            "resourceType": "AuditEvent",
            "type": ty,
            "subtype": [{"system": subtype_system, "code": self.subtype}],
            "action": self.action,
            "recorded": rfc3339(recorded_ms),
            "outcome": self.outcome(),
            "agent": [agent],
            "source": {"observer": {"display": "huitong"}, "type": [{"system": "http://terminology.hl7.org/CodeSystem/security-source-type", "code": "4"}]},
            "entity": [entity],
        });
        if let Some(d) = &self.description {
            ev["outcomeDesc"] = json!(d);
        }
        ev
    }
}

fn rfc3339(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn chain_hash(
    prev: &str,
    seq: i64,
    ms: i64,
    cols: [&str; 4],
    event: &[u8],
) -> Result<String, String> {
    let mut input = Vec::with_capacity(prev.len() + event.len() + 128);
    input.extend_from_slice(prev.as_bytes());
    for part in [
        seq.to_string().as_str(),
        ms.to_string().as_str(),
        cols[0],
        cols[1],
        cols[2],
        cols[3],
    ] {
        input.push(b'|');
        input.extend_from_slice(part.as_bytes());
    }
    input.push(b'|');
    input.extend_from_slice(event);
    sm::sm3(&input)
        .map(|d| sm::hex(&d))
        .map_err(|e| e.to_string())
}

enum Msg {
    Record(Box<Record>),
    Flush(oneshot::Sender<()>),
}

/// The audit trail's writer.
pub struct AuditLog {
    path: PathBuf,
    jobs: crossbeam_channel::Sender<Msg>,
}

/// Opens the audit tables in `dir`'s store file (creating them).
pub fn open_db(dir: &Path) -> Result<Connection, String> {
    let conn = Connection::open_with_flags(
        dir.join(DB_FILE),
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| e.to_string())?;
    conn.busy_timeout(std::time::Duration::from_secs(10))
        .map_err(|e| e.to_string())?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(|e| e.to_string())?;
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(|e| e.to_string())?;
    conn.execute_batch(SCHEMA).map_err(|e| e.to_string())?;
    Ok(conn)
}

struct Writer {
    conn: Connection,
    last_seq: i64,
    last_hash: String,
    key: Option<openssl::pkey::PKey<openssl::pkey::Private>>,
    seal_every: u64,
    since_seal: u64,
    retention_ms: i64,
}

impl Writer {
    fn write_batch(&mut self, batch: &[Box<Record>]) -> Result<(), String> {
        let tx = self.conn.transaction().map_err(|e| e.to_string())?;
        let (mut seq, mut hash) = (self.last_seq, self.last_hash.clone());
        for r in batch {
            hash = append(&tx, seq, &hash, r, now_ms())?;
            seq += 1;
        }
        tx.commit().map_err(|e| e.to_string())?;
        self.last_seq = seq;
        self.last_hash = hash;
        self.since_seal += batch.len() as u64;
        if self.since_seal >= self.seal_every {
            self.seal()?;
        }
        Ok(())
    }

    /// Signs the head (when a key is configured and something was written since the last seal).
    fn seal(&mut self) -> Result<(), String> {
        let Some(key) = &self.key else {
            return Ok(());
        };
        if self.since_seal == 0 || self.last_seq == 0 {
            return Ok(());
        }
        let sig = sm::sm2_sign(key, seal_message(self.last_seq, &self.last_hash).as_bytes())?;
        self.conn
            .execute(
                "INSERT OR REPLACE INTO audit_seal (seq, hash, signed_ms, signature) VALUES (?, ?, ?, ?)",
                params![self.last_seq, self.last_hash, now_ms(), sig],
            )
            .map_err(|e| e.to_string())?;
        self.since_seal = 0;
        Ok(())
    }

    /// Removes records older than the retention (as of now) and goes on from the new head.
    fn purge(&mut self) -> Result<(), String> {
        if let Some(p) = purge_before(&mut self.conn, now_ms() - self.retention_ms)? {
            self.last_seq = p.record_seq;
            self.last_hash = p.record_hash;
            self.since_seal += 1;
        }
        Ok(())
    }
}

/// Appends one record after (`seq`, `hash`); returns its hash.
fn append(
    tx: &rusqlite::Transaction<'_>,
    seq: i64,
    hash: &str,
    r: &Record,
    ms: i64,
) -> Result<String, String> {
    let mut stmt = tx
        .prepare_cached(
            "INSERT INTO audit_log (seq, recorded_ms, agent, subtype, outcome, entity, event, prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .map_err(|e| e.to_string())?;
    let event = serde_json::to_vec(&r.event(ms)).unwrap_or_default();
    let next = seq + 1;
    let cols = [
        r.agent.as_str(),
        r.subtype.as_str(),
        r.outcome(),
        r.entity.as_str(),
    ];
    let h = chain_hash(hash, next, ms, cols, &event)?;
    stmt.execute(params![
        next, ms, cols[0], cols[1], cols[2], cols[3], event, hash, h
    ])
    .map_err(|e| e.to_string())?;
    Ok(h)
}

/// What a retention purge removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Purged {
    /// Records `..=up_to` are gone; the chain is anchored at `up_to + 1`.
    pub up_to: i64,
    pub removed: u64,
    /// The seq and hash of the record the purge appended about itself (the new head).
    pub record_seq: i64,
    pub record_hash: String,
}

/// The entity of a purge record: the last seq it removed (what [`verify`] holds the anchor to).
fn purge_entity(up_to: i64) -> String {
    format!("AuditEvent?seq=le{up_to}")
}

fn purged_up_to(entity: &str) -> Option<i64> {
    entity.strip_prefix("AuditEvent?seq=le")?.parse().ok()
}

/// The retention purge as of `now_ms`: removes the records of `dir`'s trail older than
/// `retention_days`. The running gateway purges at start and every 100 000 records; this entry
/// point takes the clock as an argument so the rule can be exercised without waiting months, and
/// must not run while a gateway writes to the same trail.
pub fn purge(dir: &Path, retention_days: u32, now_ms: i64) -> Result<Option<Purged>, String> {
    let mut conn = open_db(dir)?;
    purge_before(&mut conn, now_ms - i64::from(retention_days) * DAY_MS)
}

/// Removes the records recorded before `cutoff_ms`, in one transaction: the head is always kept
/// (the chain goes on from it, even when it is older), the first kept record becomes the anchor, and a record of the
/// purge (who: the gateway, what: the seqs removed) is appended to the chain, so removing old
/// records leaves a trace in the trail itself and cannot be passed off as a purge without one.
fn purge_before(conn: &mut Connection, cutoff_ms: i64) -> Result<Option<Purged>, String> {
    let tx = conn.transaction().map_err(|e| e.to_string())?;
    let (head_seq, head_hash): (i64, String) = match tx
        .query_row(
            "SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()
        .map_err(|e| e.to_string())?
    {
        Some(h) => h,
        None => return Ok(None),
    };
    let up_to: Option<i64> = tx
        .query_row(
            "SELECT MAX(seq) FROM audit_log WHERE recorded_ms < ? AND seq < ?",
            [cutoff_ms, head_seq],
            |r| r.get(0),
        )
        .map_err(|e| e.to_string())?;
    let Some(up_to) = up_to else {
        return Ok(None);
    };
    let next_prev: String = tx
        .query_row(
            "SELECT prev_hash FROM audit_log WHERE seq = ?",
            [up_to + 1],
            |r| r.get(0),
        )
        .map_err(|e| e.to_string())?;
    tx.execute("INSERT INTO audit_purge (up_to) VALUES (?)", [up_to])
        .map_err(|e| e.to_string())?;
    let removed = tx
        .execute("DELETE FROM audit_log WHERE seq <= ?", [up_to])
        .map_err(|e| e.to_string())? as u64;
    tx.execute("DELETE FROM audit_anchor", [])
        .map_err(|e| e.to_string())?;
    tx.execute(
        "INSERT INTO audit_anchor (seq, prev_hash) VALUES (?, ?)",
        params![up_to + 1, next_prev],
    )
    .map_err(|e| e.to_string())?;
    tx.execute("DELETE FROM audit_seal WHERE seq <= ?", [up_to])
        .map_err(|e| e.to_string())?;
    let record = Record {
        agent: "huitong".into(),
        method: "retention".into(),
        client: None,
        address: None,
        subtype: PURGE_SUBTYPE.into(),
        action: "D",
        status: 200,
        description: Some(format!(
            "retention purge: {removed} records up to {up_to}, recorded before {}, removed",
            rfc3339(cutoff_ms)
        )),
        entity: purge_entity(up_to),
        query: None,
    };
    let record_hash = append(&tx, head_seq, &head_hash, &record, now_ms())?;
    tx.commit().map_err(|e| e.to_string())?;
    tracing::info!(up_to, removed, "audit retention purge");
    Ok(Some(Purged {
        up_to,
        removed,
        record_seq: head_seq + 1,
        record_hash,
    }))
}

fn seal_message(seq: i64, hash: &str) -> String {
    format!("huitong-audit-head|{seq}|{hash}")
}

fn load_key(
    cfg: &AuditConfig,
) -> Result<Option<openssl::pkey::PKey<openssl::pkey::Private>>, String> {
    let Some(path) = &cfg.signing_key else {
        return Ok(None);
    };
    let pem = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let key = sm::private_key_pem(&pem)?;
    if !sm::is_sm2(&key) {
        return Err(format!("{} is not an SM2 key", path.display()));
    }
    Ok(Some(key))
}

impl AuditLog {
    /// Opens the trail in the store directory and starts its writer.
    pub fn open(dir: &Path, cfg: &AuditConfig) -> Result<AuditLog, String> {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        let conn = open_db(dir)?;
        let head: Option<(i64, String)> = conn
            .query_row(
                "SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(|e| e.to_string())?;
        let (last_seq, last_hash) = head.unwrap_or((0, GENESIS.to_string()));
        let mut writer = Writer {
            conn,
            last_seq,
            last_hash,
            key: load_key(cfg)?,
            seal_every: cfg.seal_every.max(1),
            since_seal: 0,
            retention_ms: i64::from(cfg.retention_days) * DAY_MS,
        };
        writer.purge()?;
        let (tx, rx) = crossbeam_channel::unbounded::<Msg>();
        // The writer lives as long as the process; every flush (shutdown included) seals the head.
        std::thread::Builder::new()
            .name("huitong-audit-writer".into())
            .spawn(move || run(writer, rx))
            .map_err(|e| e.to_string())?;
        Ok(AuditLog {
            path: dir.to_path_buf(),
            jobs: tx,
        })
    }

    /// Queues a record.
    pub fn record(&self, r: Record) {
        if self.jobs.send(Msg::Record(Box::new(r))).is_err() {
            tracing::error!("audit writer has stopped; an audit record was lost");
        }
    }

    /// Waits until every queued record is committed.
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.jobs.send(Msg::Flush(tx)).is_ok() {
            let _ = rx.await;
        }
    }

    /// The store directory (for reads of the trail).
    pub fn dir(&self) -> &Path {
        &self.path
    }
}

fn run(mut w: Writer, rx: crossbeam_channel::Receiver<Msg>) {
    let mut batch: Vec<Box<Record>> = Vec::new();
    let mut waiting: Vec<oneshot::Sender<()>> = Vec::new();
    let mut since_purge = 0usize;
    while let Ok(first) = rx.recv() {
        let mut next = Some(first);
        while let Some(m) = next.take() {
            match m {
                Msg::Record(r) => batch.push(r),
                Msg::Flush(t) => waiting.push(t),
            }
            if batch.len() < MAX_BATCH {
                next = rx.try_recv().ok();
            }
        }
        if !batch.is_empty() {
            if let Err(e) = w.write_batch(&batch) {
                tracing::error!(error = %e, records = batch.len(), "audit records could not be written");
            }
            since_purge += batch.len();
            batch.clear();
        }
        if !waiting.is_empty() {
            if let Err(e) = w.seal() {
                tracing::error!(error = %e, "audit head could not be signed");
            }
            for t in waiting.drain(..) {
                let _ = t.send(());
            }
        }
        if since_purge >= 100_000 {
            since_purge = 0;
            if let Err(e) = w.purge() {
                tracing::error!(error = %e, "audit retention purge failed");
            }
        }
    }
    let _ = w.seal();
}

/// What `huitong audit verify` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The chain holds: records checked, seals checked.
    Intact { records: u64, seals: u64 },
    /// The first record (by seq) where it breaks, and why.
    Broken { seq: i64, reason: String },
}

/// Checks the whole chain (and the seals, with the public key of the signing key).
pub fn verify(dir: &Path, public_key_pem: Option<&[u8]>) -> Result<Verdict, String> {
    let conn = Connection::open_with_flags(dir.join(DB_FILE), OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|e| e.to_string())?;
    let anchor: Option<(i64, String)> = conn
        .query_row("SELECT seq, prev_hash FROM audit_anchor LIMIT 1", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()
        .map_err(|e| e.to_string())?;
    let anchor_seq = anchor.as_ref().map(|a| a.0);
    let mut last_purge: Option<i64> = None;
    let (mut expect_seq, mut prev) = anchor.unwrap_or((1, GENESIS.to_string()));
    let mut stmt = conn
        .prepare("SELECT seq, recorded_ms, agent, subtype, outcome, entity, event, prev_hash, hash FROM audit_log ORDER BY seq")
        .map_err(|e| e.to_string())?;
    let mut rows = stmt.query([]).map_err(|e| e.to_string())?;
    let mut hashes: std::collections::HashMap<i64, String> = std::collections::HashMap::new();
    let mut n = 0u64;
    while let Some(r) = rows.next().map_err(|e| e.to_string())? {
        let seq: i64 = r.get(0).map_err(|e| e.to_string())?;
        let ms: i64 = r.get(1).map_err(|e| e.to_string())?;
        let cols: [String; 4] = [
            r.get(2).map_err(|e| e.to_string())?,
            r.get(3).map_err(|e| e.to_string())?,
            r.get(4).map_err(|e| e.to_string())?,
            r.get(5).map_err(|e| e.to_string())?,
        ];
        let event: Vec<u8> = r.get(6).map_err(|e| e.to_string())?;
        let stored_prev: String = r.get(7).map_err(|e| e.to_string())?;
        let stored: String = r.get(8).map_err(|e| e.to_string())?;
        if seq != expect_seq {
            return Ok(Verdict::Broken {
                seq: expect_seq,
                reason: format!("record {expect_seq} is missing (next present is {seq})"),
            });
        }
        if stored_prev != prev {
            return Ok(Verdict::Broken {
                seq,
                reason: format!(
                    "record {seq} does not follow record {}: its previous hash differs (removed, reordered or rewritten records)",
                    seq - 1
                ),
            });
        }
        let c = [
            cols[0].as_str(),
            cols[1].as_str(),
            cols[2].as_str(),
            cols[3].as_str(),
        ];
        let h = chain_hash(&prev, seq, ms, c, &event)?;
        if h != stored {
            return Ok(Verdict::Broken {
                seq,
                reason: format!("record {seq} was changed: its content does not match its hash"),
            });
        }
        if c[1] == PURGE_SUBTYPE {
            last_purge = purged_up_to(c[3]).or(last_purge);
        }
        hashes.insert(seq, h.clone());
        prev = h;
        expect_seq += 1;
        n += 1;
    }
    // Records before the anchor may only have gone by a purge, and the purge says so in the chain.
    if let Some(a) = anchor_seq
        && last_purge.map(|u| u + 1) != Some(a)
    {
        return Ok(Verdict::Broken {
            seq: a,
            reason: format!(
                "the chain starts at record {a}, but no purge record in it removed the records before it"
            ),
        });
    }
    let last = expect_seq - 1;
    let mut seals = 0u64;
    let key = match public_key_pem {
        Some(pem) => Some(
            openssl::pkey::PKey::public_key_from_pem(pem)
                .or_else(|_| {
                    openssl::pkey::PKey::private_key_from_pem(pem).and_then(|k| {
                        openssl::pkey::PKey::public_key_from_der(&k.public_key_to_der()?)
                    })
                })
                .map_err(|e| format!("signing key: {e}"))?,
        ),
        None => None,
    };
    let mut stmt = conn
        .prepare("SELECT seq, hash, signature FROM audit_seal ORDER BY seq")
        .map_err(|e| e.to_string())?;
    let mut rows = stmt.query([]).map_err(|e| e.to_string())?;
    while let Some(r) = rows.next().map_err(|e| e.to_string())? {
        let seq: i64 = r.get(0).map_err(|e| e.to_string())?;
        let hash: String = r.get(1).map_err(|e| e.to_string())?;
        let sig: Vec<u8> = r.get(2).map_err(|e| e.to_string())?;
        if seq > last {
            return Ok(Verdict::Broken {
                seq: last + 1,
                reason: format!(
                    "the head signed at record {seq} is gone: records {}..={seq} were removed",
                    last + 1
                ),
            });
        }
        if hashes.get(&seq) != Some(&hash) {
            return Ok(Verdict::Broken {
                seq,
                reason: format!("the signed head at record {seq} does not match the chain"),
            });
        }
        if let Some(k) = &key {
            if !sm::sm2_verify(k, seal_message(seq, &hash).as_bytes(), &sig) {
                return Ok(Verdict::Broken {
                    seq,
                    reason: format!(
                        "the SM2 signature of the head at record {seq} does not verify"
                    ),
                });
            }
            seals += 1;
        }
    }
    Ok(Verdict::Intact { records: n, seals })
}

/// One page of the trail for `GET [base]/AuditEvent`: newest first, filtered.
pub fn search(dir: &Path, q: &AuditQuery) -> Result<(Vec<Value>, Option<i64>), String> {
    let conn = Connection::open_with_flags(dir.join(DB_FILE), OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|e| e.to_string())?;
    conn.busy_timeout(std::time::Duration::from_secs(10))
        .map_err(|e| e.to_string())?;
    let mut sql = String::from("SELECT seq, event FROM audit_log WHERE 1=1");
    let mut args: Vec<rusqlite::types::Value> = Vec::new();
    if let Some(a) = &q.agent {
        sql.push_str(" AND agent = ?");
        args.push(a.clone().into());
    }
    if let Some(s) = &q.subtype {
        sql.push_str(" AND subtype = ?");
        args.push(s.clone().into());
    }
    if let Some(o) = &q.outcome {
        sql.push_str(" AND outcome = ?");
        args.push(o.clone().into());
    }
    if let Some(e) = &q.entity {
        sql.push_str(" AND entity = ?");
        args.push(e.clone().into());
    }
    if let Some(ms) = q.since_ms {
        sql.push_str(" AND recorded_ms >= ?");
        args.push(ms.into());
    }
    if let Some(ms) = q.until_ms {
        sql.push_str(" AND recorded_ms <= ?");
        args.push(ms.into());
    }
    if let Some(b) = q.before_seq {
        sql.push_str(" AND seq < ?");
        args.push(b.into());
    }
    sql.push_str(" ORDER BY seq DESC LIMIT ?");
    args.push(((q.count + 1) as i64).into());
    let mut stmt = conn.prepare(&sql).map_err(|e| e.to_string())?;
    let rows = stmt
        .query_map(rusqlite::params_from_iter(args), |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?))
        })
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    let mut next = None;
    for r in rows {
        let (seq, ev) = r.map_err(|e| e.to_string())?;
        if out.len() == q.count {
            next = out
                .last()
                .and_then(|v: &Value| v["id"].as_str()?.parse::<i64>().ok());
            break;
        }
        let mut v: Value = serde_json::from_slice(&ev).map_err(|e| e.to_string())?;
        v["id"] = json!(seq.to_string());
        v["meta"] = json!({"versionId": "1"});
        out.push(v);
    }
    Ok((out, next))
}

/// Filters of an audit search.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    pub agent: Option<String>,
    pub subtype: Option<String>,
    pub outcome: Option<String>,
    pub entity: Option<String>,
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
    pub before_seq: Option<i64>,
    pub count: usize,
}
