//! The embedded default store on SQLite (WAL, one writer thread with group commit, a reader pool).
//!
//! Shape:
//! - One file, `<dir>/huitong.db`, in WAL mode so readers never block the writer and vice versa.
//! - **One writer thread** owns the only read-write connection. [`Store::transact`] sends its unit of
//!   work over a channel; the writer takes the first queued job, drains up to `max_batch - 1` more that
//!   are already waiting, and runs them in one SQLite transaction, each inside its own SAVEPOINT. A job
//!   that aborts is rolled back to its savepoint alone; the others commit together with one COMMIT (one
//!   fsync for the whole batch: that is the point of group commit). Replies go out only after COMMIT.
//! - **Readers** are a small pool of read-only connections used from `spawn_blocking`; reads never queue
//!   behind writes.
//!
//! Invariants kept here (see also `store/mod.rs`):
//! - `resource_version.seq` is assigned by the single writer in commit order, so a reader that sees
//!   `seq = n` sees every version with `seq < n` too; history pages pinned with `at_seq` are stable.
//! - `resource_head` and the `idx_*` search index tables are updated in the same savepoint as the
//!   version row they describe.
//! - A job whose `put` hit a storage error is rolled back even if it returns `Ok`, so a job that swallows
//!   an error can never commit half a write.

use super::*;

mod index;
use crossbeam_channel::{Receiver, Sender};
use rusqlite::{Connection, OpenFlags, OptionalExtension, params, types::Value};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{Semaphore, oneshot};

/// Tuning of the SQLite store.
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    /// Reader connections.
    pub readers: usize,
    /// Most units of work folded into one group commit.
    pub max_batch: usize,
    /// Most SQLite virtual-machine steps one search statement may take (`[limits]
    /// max-search-cost`); beyond it the statement is interrupted and answered `TooCostly`.
    pub max_query_steps: Option<u64>,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions {
            readers: 4,
            max_batch: 256,
            max_query_steps: None,
        }
    }
}

/// Name of the database file inside the data directory.
const DB_FILE: &str = "huitong.db";

/// How long a connection waits for a lock held by another connection (e.g. a checkpoint) before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// The writer connection's page cache, in KiB (a negative `cache_size` is KiB, not pages).
const WRITER_CACHE_KIB: i64 = -65536;

/// Upper bounds of the batch-size histogram; the implicit last bucket is +Inf.
const BATCH_BUCKETS: [u64; 9] = [1, 2, 4, 8, 16, 32, 64, 128, 256];

/// Schema migrations, applied in order; entry `i` brings the schema from version `i` to `i + 1`.
///
/// The DDL sticks to what PostgreSQL also accepts where that costs nothing (`ON CONFLICT`, `RETURNING`,
/// no `INSERT OR REPLACE`); `WITHOUT ROWID` and `INTEGER PRIMARY KEY` as the sequence are SQLite's.
const MIGRATIONS: &[&str] = &[
    // v1: versions, heads, token index.
    "CREATE TABLE resource_version (
        seq INTEGER PRIMARY KEY,
        resource_type TEXT NOT NULL,
        id TEXT NOT NULL,
        version INTEGER NOT NULL,
        last_updated_ms INTEGER NOT NULL,
        method TEXT NOT NULL,
        body BLOB,
        UNIQUE (resource_type, id, version)
    );
    CREATE INDEX resource_version_type_seq ON resource_version (resource_type, seq);
    CREATE TABLE resource_head (
        resource_type TEXT NOT NULL,
        id TEXT NOT NULL,
        version INTEGER NOT NULL,
        seq INTEGER NOT NULL,
        deleted INTEGER NOT NULL,
        PRIMARY KEY (resource_type, id)
    ) WITHOUT ROWID;
    -- system is '' when the token has none, so the row can be part of the primary key (which also
    -- de-duplicates repeated tokens of one resource).
    CREATE TABLE token_index (
        resource_type TEXT NOT NULL,
        id TEXT NOT NULL,
        param TEXT NOT NULL,
        system TEXT NOT NULL,
        code TEXT NOT NULL,
        PRIMARY KEY (resource_type, id, param, system, code)
    ) WITHOUT ROWID;
    CREATE INDEX token_index_lookup ON token_index (resource_type, param, code, system);",
    // v2: search index tables, one per parameter type (rows keyed by their owner, so a write replaces
    // them by prefix, plus one lookup index each); the head carries `last_updated_ms` for
    // `_lastUpdated`. Missing parts are '' so every column can be in the key. Existing identifier
    // tokens move over; everything else needs a `$reindex`.
    "CREATE TABLE idx_string (
        resource_type TEXT NOT NULL, id TEXT NOT NULL, param TEXT NOT NULL,
        norm TEXT NOT NULL, exact TEXT NOT NULL,
        PRIMARY KEY (resource_type, id, param, exact)
    ) WITHOUT ROWID;
    CREATE INDEX idx_string_lookup ON idx_string (resource_type, param, norm);
    CREATE TABLE idx_token (
        resource_type TEXT NOT NULL, id TEXT NOT NULL, param TEXT NOT NULL,
        system TEXT NOT NULL, code TEXT NOT NULL, text TEXT NOT NULL,
        PRIMARY KEY (resource_type, id, param, system, code, text)
    ) WITHOUT ROWID;
    CREATE INDEX idx_token_lookup ON idx_token (resource_type, param, code, system);
    CREATE TABLE idx_reference (
        resource_type TEXT NOT NULL, id TEXT NOT NULL, param TEXT NOT NULL,
        url TEXT NOT NULL, target_type TEXT NOT NULL, target_id TEXT NOT NULL,
        PRIMARY KEY (resource_type, id, param, url)
    ) WITHOUT ROWID;
    CREATE INDEX idx_reference_lookup ON idx_reference (resource_type, param, target_id, target_type);
    CREATE INDEX idx_reference_target ON idx_reference (target_id, target_type);
    CREATE TABLE idx_date (
        resource_type TEXT NOT NULL, id TEXT NOT NULL, param TEXT NOT NULL,
        low INTEGER NOT NULL, high INTEGER NOT NULL,
        PRIMARY KEY (resource_type, id, param, low, high)
    ) WITHOUT ROWID;
    CREATE INDEX idx_date_lookup ON idx_date (resource_type, param, low, high);
    CREATE TABLE idx_number (
        resource_type TEXT NOT NULL, id TEXT NOT NULL, param TEXT NOT NULL, value REAL NOT NULL,
        PRIMARY KEY (resource_type, id, param, value)
    ) WITHOUT ROWID;
    CREATE INDEX idx_number_lookup ON idx_number (resource_type, param, value);
    CREATE TABLE idx_quantity (
        resource_type TEXT NOT NULL, id TEXT NOT NULL, param TEXT NOT NULL, value REAL NOT NULL,
        system TEXT NOT NULL, code TEXT NOT NULL, unit TEXT NOT NULL,
        PRIMARY KEY (resource_type, id, param, value, system, code, unit)
    ) WITHOUT ROWID;
    CREATE INDEX idx_quantity_lookup ON idx_quantity (resource_type, param, value);
    CREATE TABLE idx_uri (
        resource_type TEXT NOT NULL, id TEXT NOT NULL, param TEXT NOT NULL, uri TEXT NOT NULL,
        PRIMARY KEY (resource_type, id, param, uri)
    ) WITHOUT ROWID;
    CREATE INDEX idx_uri_lookup ON idx_uri (resource_type, param, uri);
    INSERT INTO idx_token (resource_type, id, param, system, code, text)
        SELECT resource_type, id, param, system, code, '' FROM token_index;
    DROP TABLE token_index;
    ALTER TABLE resource_head ADD COLUMN last_updated_ms INTEGER NOT NULL DEFAULT 0;
    UPDATE resource_head SET last_updated_ms =
        (SELECT v.last_updated_ms FROM resource_version v WHERE v.seq = resource_head.seq);",
    // v3: quantity rows carry the value in canonical UCUM units (`search::units`), looked up by
    // canonical unit and value. SQL cannot convert units: existing rows get their own value and
    // code (what a quantity without a canonical form is compared by), correct for searches in the
    // unit as stored; a `$reindex` converts them.
    "ALTER TABLE idx_quantity ADD COLUMN canonical_value REAL NOT NULL DEFAULT 0;
    ALTER TABLE idx_quantity ADD COLUMN canonical_code TEXT NOT NULL DEFAULT '';
    UPDATE idx_quantity SET canonical_value = value,
        canonical_code = CASE WHEN code = '' THEN unit ELSE code END;
    CREATE INDEX idx_quantity_canonical ON idx_quantity
        (resource_type, param, canonical_code, canonical_value);",
    // v4: `gt`/`ge`/`eb` compare a row's high end only; without an index that leads with it,
    // they read every row of the parameter (`ge` becomes a union of this and the low index).
    "CREATE INDEX idx_date_high ON idx_date (resource_type, param, high);",
    // v5: the longest span (`high - low`) stored per date parameter, kept by the writer as rows
    // are inserted (never shrinking, so always an upper bound). It bounds the `low` end of
    // `gt`/`ge`/`ap` comparisons, which otherwise only bound `high` (see `search::sql`). An
    // overflowing difference (an open period) becomes a REAL, which counts as unbounded.
    "CREATE TABLE idx_date_span (
        resource_type TEXT NOT NULL, param TEXT NOT NULL, span INTEGER NOT NULL,
        PRIMARY KEY (resource_type, param)
    ) WITHOUT ROWID;
    INSERT INTO idx_date_span (resource_type, param, span)
        SELECT resource_type, param, MAX(high - low) FROM idx_date GROUP BY resource_type, param;",
];

/// A message to the writer thread.
enum WriterMsg {
    /// A unit of work and where to send its outcome.
    Work(TxWork, oneshot::Sender<Result<TxOutcome, TxAbort>>),
    /// Answered once every message queued before it has been committed.
    Flush(oneshot::Sender<()>),
    /// Finish what is queued before it, close the connection, answer, and stop.
    Shutdown(oneshot::Sender<()>),
}

/// Counters shared between the writer thread and [`Store::stats`].
#[derive(Default)]
struct WriterStats {
    batches: AtomicU64,
    jobs: AtomicU64,
    /// Per-bucket (not cumulative) counts; index `BATCH_BUCKETS.len()` is +Inf.
    buckets: [AtomicU64; BATCH_BUCKETS.len() + 1],
}

impl WriterStats {
    fn record(&self, batch_size: usize) {
        let n = batch_size as u64;
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.jobs.fetch_add(n, Ordering::Relaxed);
        let idx = BATCH_BUCKETS
            .iter()
            .position(|&b| n <= b)
            .unwrap_or(BATCH_BUCKETS.len());
        self.buckets[idx].fetch_add(1, Ordering::Relaxed);
    }

    fn snapshot(&self) -> StoreStats {
        let mut cumulative = 0;
        let mut batch_size_buckets = Vec::with_capacity(BATCH_BUCKETS.len() + 1);
        for (i, bound) in BATCH_BUCKETS
            .iter()
            .copied()
            .chain(std::iter::once(u64::MAX))
            .enumerate()
        {
            cumulative += self.buckets[i].load(Ordering::Relaxed);
            batch_size_buckets.push((bound, cumulative));
        }
        StoreStats {
            write_batches: self.batches.load(Ordering::Relaxed),
            write_jobs: self.jobs.load(Ordering::Relaxed),
            batch_size_buckets,
            cache_hits: 0,
            cache_misses: 0,
        }
    }
}

/// Read-only connections handed out one per blocking task.
struct ReaderPool {
    /// One permit per idle connection: waiting happens here, asynchronously, not on a blocking thread.
    permits: Arc<Semaphore>,
    conns: Arc<Mutex<Vec<Connection>>>,
}

/// Puts a reader connection back into the pool even if the query panicked.
struct PooledReader {
    conn: Option<Connection>,
    pool: Arc<Mutex<Vec<Connection>>>,
}

impl Drop for PooledReader {
    fn drop(&mut self) {
        if let Some(c) = self.conn.take() {
            // A poisoned lock only means another reader panicked while pushing/popping; the Vec is intact.
            self.pool.lock().unwrap_or_else(|e| e.into_inner()).push(c);
        }
    }
}

/// The SQLite store.
pub struct SqliteStore {
    jobs: Sender<WriterMsg>,
    writer: Option<JoinHandle<()>>,
    readers: ReaderPool,
    stats: Arc<WriterStats>,
    max_query_steps: Option<u64>,
}

fn db_err(e: rusqlite::Error) -> StoreError {
    StoreError::Backend(e.to_string())
}

fn to_i64(v: u64, what: &str) -> Result<i64, StoreError> {
    i64::try_from(v).map_err(|_| StoreError::Backend(format!("{what} {v} out of range")))
}

fn wall_clock_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        // A clock before 1970 is a broken host; the writer still keeps time non-decreasing.
        .unwrap_or(0)
}

/// Steps between two calls of the progress handler that bounds a search statement.
const STEP_GRANULARITY: i32 = 1000;

/// Runs a search statement under the step bound: SQLite's progress handler interrupts it once it
/// has run `max` virtual-machine steps, so an expensive query is refused instead of timing out.
fn bounded<T>(
    c: &Connection,
    max: Option<u64>,
    f: impl FnOnce(&Connection) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    let Some(max) = max else {
        return f(c);
    };
    let fired = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = fired.clone();
    let mut calls: u64 = 0;
    let budget = max / STEP_GRANULARITY as u64 + 1;
    c.progress_handler(
        STEP_GRANULARITY,
        Some(move || {
            calls += 1;
            let stop = calls > budget;
            if stop {
                flag.store(true, std::sync::atomic::Ordering::Relaxed);
            }
            stop
        }),
    )
    .map_err(db_err)?;
    let out = f(c);
    c.progress_handler(0, None::<fn() -> bool>)
        .map_err(db_err)?;
    if fired.load(std::sync::atomic::Ordering::Relaxed) {
        return Err(StoreError::TooCostly(max));
    }
    out
}

/// Settings every connection needs.
fn configure_common(conn: &Connection) -> Result<(), StoreError> {
    conn.busy_timeout(BUSY_TIMEOUT).map_err(db_err)?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(())
}

/// Brings the schema up to the latest version; refuses a database written by a newer Huitong.
fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    conn.execute_batch("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        .map_err(db_err)?;
    let current: Option<i64> = conn
        .query_row("SELECT MAX(version) FROM schema_version", [], |r| r.get(0))
        .map_err(db_err)?;
    let current = usize::try_from(current.unwrap_or(0))
        .map_err(|_| StoreError::Backend("negative schema version".into()))?;
    if current > MIGRATIONS.len() {
        return Err(StoreError::Backend(format!(
            "database schema version {current} is newer than this build supports ({})",
            MIGRATIONS.len()
        )));
    }
    for (i, ddl) in MIGRATIONS.iter().enumerate().skip(current) {
        let tx = conn.transaction().map_err(db_err)?;
        tx.execute_batch(ddl).map_err(db_err)?;
        tx.execute("DELETE FROM schema_version", [])
            .map_err(db_err)?;
        tx.execute(
            "INSERT INTO schema_version (version) VALUES (?)",
            params![to_i64(i as u64 + 1, "schema version")?],
        )
        .map_err(db_err)?;
        tx.commit().map_err(db_err)?;
    }
    Ok(())
}

/// Columns selected by [`row_to_version`], in order.
const VERSION_COLUMNS: &str =
    "v.seq, v.resource_type, v.id, v.version, v.last_updated_ms, v.method, v.body";

fn row_to_version(r: &rusqlite::Row<'_>) -> rusqlite::Result<Result<StoredVersion, StoreError>> {
    let seq: i64 = r.get(0)?;
    let resource_type: String = r.get(1)?;
    let id: String = r.get(2)?;
    let version: i64 = r.get(3)?;
    let last_updated_ms: i64 = r.get(4)?;
    let method: String = r.get(5)?;
    let body: Option<Vec<u8>> = r.get(6)?;
    // Corrupt rows become an error for this query, not a panic.
    Ok((|| {
        let method = WriteMethod::from_code(&method).ok_or_else(|| {
            StoreError::Backend(format!("unknown method code {method:?} at seq {seq}"))
        })?;
        let version = u64::try_from(version)
            .map_err(|_| StoreError::Backend(format!("negative version at seq {seq}")))?;
        Ok(StoredVersion {
            resource_type,
            id,
            version,
            last_updated_ms,
            method,
            body: body.map(Bytes::from),
            seq,
        })
    })())
}

impl SqliteStore {
    /// Opens (creating if needed) the database file `huitong.db` in `dir`.
    pub fn open(dir: &Path, opts: SqliteOptions) -> Result<SqliteStore, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| {
            StoreError::Backend(format!(
                "cannot create data directory {}: {e}",
                dir.display()
            ))
        })?;
        let path = dir.join(DB_FILE);

        let mut writer = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(db_err)?;
        configure_common(&writer)?;
        let mode: String = writer
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .map_err(db_err)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Backend(format!(
                "cannot enable WAL (journal_mode is {mode})"
            )));
        }
        // FULL, not NORMAL: with WAL, NORMAL skips the fsync at COMMIT, so a power loss or OS crash can drop
        // transactions that were already committed and acknowledged (the database stays consistent, but the
        // last writes vanish). Huitong acknowledges HL7 messages only after commit ("nothing lost"), so a
        // commit must be durable. Group commit pays that fsync once per batch, which keeps it affordable.
        writer
            .pragma_update(None, "synchronous", "FULL")
            .map_err(db_err)?;
        // The writer touches the index tables' lookup B-trees all over: a page cache much larger than
        // SQLite's 2 MB default keeps their interior and hot leaf pages in memory instead of re-reading
        // them from the OS for every batch. Savepoint sub-journals (one per job) stay in memory too.
        writer
            .pragma_update(None, "cache_size", WRITER_CACHE_KIB)
            .and_then(|()| writer.pragma_update(None, "temp_store", "MEMORY"))
            .map_err(db_err)?;
        migrate(&mut writer)?;
        let checkpoints = Checkpointer::start(&path, &writer)?;

        // The writer keeps `now_ms` non-decreasing from here, even if the wall clock went back since the
        // last run: history `_since` and `seq` order must agree.
        let last_ms: i64 = writer
            .query_row(
                "SELECT COALESCE(MAX(last_updated_ms), 0) FROM resource_version",
                [],
                |r| r.get(0),
            )
            .map_err(db_err)?;

        // Readers open after the writer so the WAL and shared-memory files exist (read-only connections
        // cannot create them).
        let n_readers = opts.readers.max(1);
        let mut conns = Vec::with_capacity(n_readers);
        for _ in 0..n_readers {
            let c = Connection::open_with_flags(
                &path,
                OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )
            .map_err(db_err)?;
            configure_common(&c)?;
            conns.push(c);
        }

        let stats = Arc::new(WriterStats::default());
        // Unbounded: backpressure belongs to the callers' admission control (HTTP concurrency limits,
        // transport windows); a bounded channel would block an async task on `send`.
        let (tx, rx) = crossbeam_channel::unbounded();
        let max_batch = opts.max_batch.max(1);
        let writer_stats = stats.clone();
        let handle = std::thread::Builder::new()
            .name("huitong-sqlite-writer".into())
            .spawn(move || run_writer(writer, rx, max_batch, writer_stats, last_ms, checkpoints))
            .map_err(|e| StoreError::Backend(format!("cannot start writer thread: {e}")))?;

        Ok(SqliteStore {
            jobs: tx,
            writer: Some(handle),
            readers: ReaderPool {
                permits: Arc::new(Semaphore::new(n_readers)),
                conns: Arc::new(Mutex::new(conns)),
            },
            stats,
            max_query_steps: opts.max_query_steps,
        })
    }

    /// Finishes every unit of work queued so far, closes the writer connection and stops the writer.
    /// Later `transact` calls fail with [`StoreError::Closed`].
    pub async fn close(&self) -> Result<(), StoreError> {
        let (tx, rx) = oneshot::channel();
        // Already closed (or closing): nothing to wait for.
        if self.jobs.send(WriterMsg::Shutdown(tx)).is_err() {
            return Ok(());
        }
        // A dropped reply means another close got there first; the writer is stopping either way.
        let _ = rx.await;
        Ok(())
    }

    /// Runs `f` on a reader connection on the blocking pool.
    async fn with_reader<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let permit = self
            .readers
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| StoreError::Closed)?;
        let pool = self.readers.conns.clone();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let conn = pool.lock().unwrap_or_else(|e| e.into_inner()).pop();
            let guard = PooledReader {
                conn,
                pool: pool.clone(),
            };
            match &guard.conn {
                Some(c) => f(c),
                // Only reachable if a reader connection was lost to a panic inside `f`.
                None => Err(StoreError::Backend("no reader connection available".into())),
            }
        })
        .await
        .map_err(|e| StoreError::Backend(format!("read task failed: {e}")))?
    }

    #[cfg(test)]
    fn queued(&self) -> usize {
        self.jobs.len()
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        // Let the writer finish the queue and close its connection before the store is gone, so a reopen
        // of the same directory right after sees everything and no thread outlives the store.
        let (tx, _rx) = oneshot::channel();
        let _ = self.jobs.send(WriterMsg::Shutdown(tx));
        if let Some(h) = self.writer.take() {
            // If the last handle is dropped by a unit of work on the writer itself, joining would wait for
            // this very thread; it stops on its own once the Shutdown above is reached.
            if h.thread().id() != std::thread::current().id() {
                let _ = h.join();
            }
        }
    }
}

fn read_latest(conn: &Connection, rt: &str, id: &str) -> Result<Option<StoredVersion>, StoreError> {
    let sql = format!(
        "SELECT {VERSION_COLUMNS} FROM resource_head h JOIN resource_version v ON v.seq = h.seq
         WHERE h.resource_type = ? AND h.id = ?"
    );
    let mut st = conn.prepare_cached(&sql).map_err(db_err)?;
    st.query_row(params![rt, id], row_to_version)
        .optional()
        .map_err(db_err)?
        .transpose()
}

fn read_version(
    conn: &Connection,
    rt: &str,
    id: &str,
    version: u64,
) -> Result<Option<StoredVersion>, StoreError> {
    let sql = format!(
        "SELECT {VERSION_COLUMNS} FROM resource_version v
         WHERE v.resource_type = ? AND v.id = ? AND v.version = ?"
    );
    let Ok(version) = i64::try_from(version) else {
        return Ok(None);
    };
    let mut st = conn.prepare_cached(&sql).map_err(db_err)?;
    st.query_row(params![rt, id, version], row_to_version)
        .optional()
        .map_err(db_err)?
        .transpose()
}

fn read_history(conn: &Connection, q: &HistoryQuery) -> Result<HistoryPage, StoreError> {
    // Pin the view: every later page of this history sees exactly the versions up to `at`. A caller's
    // `at_seq` beyond the current end is clamped, or versions committed later would leak into its pages.
    let max_seq: i64 = conn
        .prepare_cached("SELECT COALESCE(MAX(seq), 0) FROM resource_version")
        .and_then(|mut st| st.query_row([], |r| r.get(0)))
        .map_err(db_err)?;
    let at = q.at_seq.map_or(max_seq, |s| s.min(max_seq));

    let mut filter = String::from("v.seq <= ?");
    let mut args: Vec<Value> = vec![Value::Integer(at)];
    match &q.scope {
        HistoryScope::System => {}
        HistoryScope::Type(t) => {
            filter.push_str(" AND v.resource_type = ?");
            args.push(Value::Text(t.clone()));
        }
        HistoryScope::Instance(t, id) => {
            filter.push_str(" AND v.resource_type = ? AND v.id = ?");
            args.push(Value::Text(t.clone()));
            args.push(Value::Text(id.clone()));
        }
    }
    if let Some(since) = q.since_ms {
        filter.push_str(" AND v.last_updated_ms >= ?");
        args.push(Value::Integer(since));
    }

    // Rows with seq <= at never change, so the count and the page agree without a read transaction.
    let total: i64 = conn
        .prepare_cached(&format!(
            "SELECT COUNT(*) FROM resource_version v WHERE {filter}"
        ))
        .and_then(|mut st| st.query_row(rusqlite::params_from_iter(args.iter()), |r| r.get(0)))
        .map_err(db_err)?;

    let mut entries = Vec::new();
    if q.count > 0 {
        let sql = format!(
            "SELECT {VERSION_COLUMNS} FROM resource_version v WHERE {filter} ORDER BY v.seq DESC LIMIT ? OFFSET ?"
        );
        args.push(Value::Integer(i64::try_from(q.count).unwrap_or(i64::MAX)));
        args.push(Value::Integer(i64::try_from(q.offset).unwrap_or(i64::MAX)));
        let mut st = conn.prepare_cached(&sql).map_err(db_err)?;
        let rows = st
            .query_map(rusqlite::params_from_iter(args.iter()), row_to_version)
            .map_err(db_err)?;
        for row in rows {
            entries.push(Arc::new(row.map_err(db_err)??));
        }
    }
    Ok(HistoryPage {
        total: u64::try_from(total).unwrap_or(0),
        at_seq: at,
        entries,
    })
}

#[async_trait]
impl Store for SqliteStore {
    async fn read(
        &self,
        resource_type: &str,
        id: &str,
    ) -> Result<Option<Arc<StoredVersion>>, StoreError> {
        let (rt, id) = (resource_type.to_owned(), id.to_owned());
        Ok(self
            .with_reader(move |c| read_latest(c, &rt, &id))
            .await?
            .map(Arc::new))
    }

    async fn vread(
        &self,
        resource_type: &str,
        id: &str,
        version: u64,
    ) -> Result<Option<Arc<StoredVersion>>, StoreError> {
        let (rt, id) = (resource_type.to_owned(), id.to_owned());
        Ok(self
            .with_reader(move |c| read_version(c, &rt, &id, version))
            .await?
            .map(Arc::new))
    }

    async fn history(&self, q: HistoryQuery) -> Result<HistoryPage, StoreError> {
        self.with_reader(move |c| read_history(c, &q)).await
    }

    async fn transact(&self, work: TxWork) -> Result<TxOutcome, TxAbort> {
        let (tx, rx) = oneshot::channel();
        self.jobs
            .send(WriterMsg::Work(work, tx))
            .map_err(|_| TxAbort::Store(StoreError::Closed))?;
        // A dropped reply means the writer stopped before reaching this job (shutdown): nothing was written.
        rx.await.map_err(|_| TxAbort::Store(StoreError::Closed))?
    }

    async fn query_keys(&self, query: SqlQuery) -> Result<Vec<ResourceKey>, StoreError> {
        let max = self.max_query_steps;
        self.with_reader(move |c| bounded(c, max, |c| run_query_keys(c, &query)))
            .await
    }

    async fn query_count(&self, query: SqlQuery) -> Result<u64, StoreError> {
        let max = self.max_query_steps;
        self.with_reader(move |c| bounded(c, max, |c| run_query_count(c, &query)))
            .await
    }

    fn dialect(&self) -> &'static dyn crate::search::sql::Dialect {
        &crate::search::sql::SQLITE
    }

    fn stats(&self) -> StoreStats {
        self.stats.snapshot()
    }

    async fn flush(&self) -> Result<(), StoreError> {
        let (tx, rx) = oneshot::channel();
        self.jobs
            .send(WriterMsg::Flush(tx))
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)
    }
}

// ---------------------------------------------------------------------------------------------------
// Writer thread
// ---------------------------------------------------------------------------------------------------

/// The writer's loop: one batch per iteration until shutdown or until every sender is gone.
fn run_writer(
    conn: Connection,
    rx: Receiver<WriterMsg>,
    max_batch: usize,
    stats: Arc<WriterStats>,
    mut last_ms: i64,
    checkpoints: Checkpointer,
) {
    let mut shutdown_reply = None;
    // Whether the last batch held more than one job: writers are arriving concurrently.
    let mut concurrent = false;
    loop {
        // Block for the first message only; the rest of the batch is whatever is already queued, so an
        // idle store (or one sequential client) commits a lone job at once and a busy one amortises
        // each fsync over many jobs. When the last batch shows concurrent writers, the batch also
        // waits up to `GROUP_COMMIT_WINDOW` for jobs still being prepared: a commit costs one fsync
        // plus every page it dirtied, and concurrent jobs dirty many of the same index pages, so one
        // commit of ten jobs writes far fewer pages than ten commits of one.
        let Ok(first) = rx.recv() else { break };
        let deadline = concurrent.then(|| std::time::Instant::now() + GROUP_COMMIT_WINDOW);
        let mut work = Vec::new();
        let mut flushes = Vec::new();
        let mut pending = Some(first);
        while let Some(msg) = pending.take() {
            match msg {
                WriterMsg::Work(w, reply) => work.push((w, reply)),
                WriterMsg::Flush(reply) => flushes.push(reply),
                WriterMsg::Shutdown(reply) => {
                    shutdown_reply = Some(reply);
                    break;
                }
            }
            if work.len() < max_batch {
                // Empty (or the window over) and disconnected both end the batch; a disconnect is
                // seen by the next `recv`.
                pending = match deadline {
                    Some(d) => rx.recv_deadline(d).ok(),
                    None => rx.try_recv().ok(),
                };
            }
        }
        concurrent = work.len() > 1;
        if !work.is_empty() {
            // One timestamp per batch, never behind the previous batch's.
            last_ms = last_ms.max(wall_clock_ms());
            run_batch(&conn, work, last_ms, &stats);
            checkpoints.committed();
        }
        // Everything queued before these flushes has been committed (or failed) by now.
        for f in flushes {
            let _ = f.send(());
        }
        if shutdown_reply.is_some() {
            break;
        }
    }
    // Jobs queued after a shutdown are dropped with the receiver; their callers see `Closed`.
    drop(rx);
    // The checkpointer stops first, so that closing the last connection checkpoints the whole WAL
    // into the main file.
    checkpoints.stop();
    drop(conn);
    if let Some(r) = shutdown_reply {
        let _ = r.send(());
    }
}

/// Copies committed WAL frames into the main database file on its own thread and connection.
///
/// SQLite's automatic checkpoint runs inside the COMMIT that crosses its threshold, on the single
/// writer: every batch queued behind that commit waited for thousands of page copies and the
/// database file's fsync. A PASSIVE checkpoint on another connection does the same work while the
/// writer goes on appending to the WAL (it never blocks the writer or a reader).
///
/// The WAL only starts again from its beginning when a write finds every frame copied, which a
/// checkpoint running beside a busy writer rarely achieves: left alone, the WAL grows for as long
/// as writes keep coming. So the writer keeps an automatic checkpoint too, at a higher threshold
/// ([`WAL_BACKSTOP_PAGES`]); by then the background has copied nearly everything, the writer
/// copies the rest, and its next write restarts the WAL. `journal_size_limit` then gives the
/// file's space back.
struct Checkpointer {
    signal: Sender<()>,
    thread: JoinHandle<()>,
}

/// Longest a batch waits for more jobs once writers are seen to arrive concurrently (see
/// [`run_writer`]); it bounds the latency that waiting adds to any one write.
const GROUP_COMMIT_WINDOW: Duration = Duration::from_millis(1);

/// WAL pages after which the writer checkpoints itself (SQLite's default is 1,000).
const WAL_BACKSTOP_PAGES: i64 = 4_000;

/// Bytes a restarted WAL file is truncated to.
const WAL_SIZE_LIMIT: i64 = 64 << 20;

/// Least time between two checkpoints: a page rewritten by many commits in between is copied once.
const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(100);

impl Checkpointer {
    fn start(path: &Path, writer: &Connection) -> Result<Checkpointer, StoreError> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(db_err)?;
        configure_common(&conn)?;
        // FULL: the checkpoint syncs the WAL before copying and the database file after.
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(db_err)?;
        writer
            .pragma_update(None, "wal_autocheckpoint", WAL_BACKSTOP_PAGES)
            .and_then(|()| writer.pragma_update(None, "journal_size_limit", WAL_SIZE_LIMIT))
            .map_err(db_err)?;
        // One pending signal is enough: a checkpoint copies everything committed before it started.
        let (signal, rx) = crossbeam_channel::bounded::<()>(1);
        let thread = std::thread::Builder::new()
            .name("huitong-checkpoint".into())
            .spawn(move || {
                while rx.recv().is_ok() {
                    let started = std::time::Instant::now();
                    if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
                    {
                        tracing::warn!(error = %e, "WAL checkpoint failed; retried after the next commit");
                    }
                    if let Some(rest) = CHECKPOINT_INTERVAL.checked_sub(started.elapsed()) {
                        std::thread::sleep(rest);
                    }
                }
            })
            .map_err(|e| StoreError::Backend(format!("cannot start checkpoint thread: {e}")))?;
        Ok(Checkpointer { signal, thread })
    }

    /// Called after each commit; never waits.
    fn committed(&self) {
        let _ = self.signal.try_send(());
    }

    /// Stops the thread (after a checkpoint it is running) and closes its connection.
    fn stop(self) {
        drop(self.signal);
        let _ = self.thread.join();
    }
}

type Reply = oneshot::Sender<Result<TxOutcome, TxAbort>>;

/// Runs one group commit: every job in its own savepoint, one COMMIT, then the replies.
fn run_batch(conn: &Connection, jobs: Vec<(TxWork, Reply)>, now_ms: i64, stats: &WriterStats) {
    stats.record(jobs.len());
    if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
        let msg = format!("cannot begin transaction: {e}");
        for (_, reply) in jobs {
            let _ = reply.send(Err(TxAbort::Store(StoreError::Backend(msg.clone()))));
        }
        return;
    }

    let mut results: Vec<(Reply, Result<TxOutcome, TxAbort>)> = Vec::with_capacity(jobs.len());
    // Set when the transaction itself can no longer be trusted (a savepoint command failed): the whole
    // batch is then rolled back instead of committing an unknown state.
    let mut broken: Option<String> = None;
    for (work, reply) in jobs {
        if let Some(msg) = &broken {
            results.push((reply, Err(TxAbort::Store(StoreError::Backend(msg.clone())))));
            continue;
        }
        if let Err(e) = conn.execute_batch("SAVEPOINT job") {
            broken = Some(format!("cannot open savepoint: {e}"));
            results.push((
                reply,
                Err(TxAbort::Store(StoreError::Backend(format!(
                    "cannot open savepoint: {e}"
                )))),
            ));
            continue;
        }
        let result = run_job(conn, work, now_ms);
        let end = if result.is_ok() {
            "RELEASE job"
        } else {
            "ROLLBACK TO job; RELEASE job"
        };
        if let Err(e) = conn.execute_batch(end) {
            broken = Some(format!("cannot close savepoint: {e}"));
        }
        results.push((reply, result));
    }

    let failure = match broken {
        Some(msg) => Some(msg),
        None => conn
            .execute_batch("COMMIT")
            .err()
            .map(|e| format!("commit failed: {e}")),
    };
    if let Some(msg) = failure {
        // Whatever happened, leave the connection outside any transaction for the next batch. An error
        // here just means SQLite already rolled back.
        let _ = conn.execute_batch("ROLLBACK");
        tracing::error!(error = %msg, "group commit rolled back");
        for (reply, result) in results {
            // A job that aborted on its own keeps its own reason (it wrote nothing either way); a job that
            // would have committed learns that it did not.
            let result = match result {
                Ok(_) => Err(TxAbort::Store(StoreError::Backend(msg.clone()))),
                Err(abort) => Err(abort),
            };
            let _ = reply.send(result);
        }
        return;
    }
    // Only now is every write durable: acknowledge.
    for (reply, result) in results {
        let _ = reply.send(result);
    }
}

/// Runs one unit of work; a panic or a storage error inside it becomes an abort (rolled back by the caller).
fn run_job(conn: &Connection, work: TxWork, now_ms: i64) -> Result<TxOutcome, TxAbort> {
    let mut ctx = WriterTx {
        conn,
        now_ms,
        written: Vec::new(),
        failed: None,
    };
    // The writer thread must survive a buggy unit of work; the savepoint discards whatever it wrote.
    let outcome = catch_unwind(AssertUnwindSafe(|| work(&mut ctx)));
    match outcome {
        Err(_) => {
            tracing::error!("unit of work panicked; rolled back");
            Err(TxAbort::Store(StoreError::Backend(
                "unit of work panicked".into(),
            )))
        }
        Ok(Err(abort)) => Err(abort),
        Ok(Ok(value)) => match ctx.failed {
            // The work swallowed a storage error: its writes may be partial, so they must not commit.
            Some(msg) => Err(TxAbort::Store(StoreError::Backend(msg))),
            None => Ok(TxOutcome {
                value,
                written: ctx.written,
            }),
        },
    }
}

/// The writer's [`TxContext`]: sees the writes of every earlier job in the batch (same connection).
struct WriterTx<'c> {
    conn: &'c Connection,
    now_ms: i64,
    written: Vec<Arc<StoredVersion>>,
    /// First storage error hit by a `put` after it began writing.
    failed: Option<String>,
}

impl WriterTx<'_> {
    fn write_version(&mut self, v: NewVersion) -> Result<Arc<StoredVersion>, StoreError> {
        let version = to_i64(v.version, "version")?;
        // `seq` is the rowid. Not `RETURNING seq`: closing a RETURNING statement releases its
        // statement savepoint, which inside a large group commit cost more than half the
        // writer's time (measured with perf on the Synthea load).
        self.conn
            .prepare_cached(
                "INSERT INTO resource_version (resource_type, id, version, last_updated_ms, method, body)
                 VALUES (?, ?, ?, ?, ?, ?)",
            )
            .and_then(|mut st| {
                st.execute(params![
                    v.resource_type,
                    v.id,
                    version,
                    self.now_ms,
                    v.method.code(),
                    v.body.as_deref()
                ])
            })
            .map_err(db_err)?;
        let seq = self.conn.last_insert_rowid();
        self.conn
            .prepare_cached(
                "INSERT INTO resource_head (resource_type, id, version, seq, deleted, last_updated_ms)
                 VALUES (?, ?, ?, ?, ?, ?)
                 ON CONFLICT (resource_type, id) DO UPDATE
                 SET version = excluded.version, seq = excluded.seq, deleted = excluded.deleted,
                     last_updated_ms = excluded.last_updated_ms",
            )
            .and_then(|mut st| {
                st.execute(params![
                    v.resource_type,
                    v.id,
                    version,
                    seq,
                    v.body.is_none(),
                    self.now_ms
                ])
            })
            .map_err(db_err)?;
        // Index rows describe the current version only, and a delete has none whatever it carries;
        // a first version has no rows to compare with.
        let none = IndexRows::default();
        let rows = if v.body.is_some() { &v.index } else { &none };
        index::sync(self.conn, &v.resource_type, &v.id, rows, v.version > 1)?;
        Ok(Arc::new(StoredVersion {
            resource_type: v.resource_type,
            id: v.id,
            version: v.version,
            last_updated_ms: self.now_ms,
            method: v.method,
            body: v.body,
            seq,
        }))
    }
}

fn sql_args(args: &[SqlArg]) -> Vec<Value> {
    args.iter()
        .map(|a| match a {
            SqlArg::Text(t) => Value::Text(t.clone()),
            SqlArg::Int(i) => Value::Integer(*i),
            SqlArg::Real(r) => Value::Real(*r),
        })
        .collect()
}

/// Runs a search statement returning (type, id) rows.
fn run_query_keys(conn: &Connection, q: &SqlQuery) -> Result<Vec<ResourceKey>, StoreError> {
    let mut st = conn.prepare_cached(&q.sql).map_err(db_err)?;
    let rows = st
        .query_map(rusqlite::params_from_iter(sql_args(&q.args)), |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
        })
        .map_err(db_err)?;
    rows.collect::<Result<Vec<_>, _>>().map_err(db_err)
}

/// Runs a search statement returning one count.
fn run_query_count(conn: &Connection, q: &SqlQuery) -> Result<u64, StoreError> {
    let mut st = conn.prepare_cached(&q.sql).map_err(db_err)?;
    let n: i64 = st
        .query_row(rusqlite::params_from_iter(sql_args(&q.args)), |r| r.get(0))
        .map_err(db_err)?;
    Ok(u64::try_from(n).unwrap_or(0))
}

impl TxContext for WriterTx<'_> {
    fn now_ms(&self) -> i64 {
        self.now_ms
    }

    fn head(&mut self, resource_type: &str, id: &str) -> Result<Option<Head>, StoreError> {
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT version, deleted FROM resource_head WHERE resource_type = ? AND id = ?",
            )
            .map_err(db_err)?;
        let row: Option<(i64, bool)> = st
            .query_row(params![resource_type, id], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()
            .map_err(db_err)?;
        row.map(|(v, deleted)| {
            let version = u64::try_from(v).map_err(|_| {
                StoreError::Backend(format!("negative head version for {resource_type}/{id}"))
            })?;
            Ok(Head { version, deleted })
        })
        .transpose()
    }

    fn dialect(&self) -> &'static dyn crate::search::sql::Dialect {
        &crate::search::sql::SQLITE
    }

    fn query_keys(&mut self, query: &SqlQuery) -> Result<Vec<ResourceKey>, StoreError> {
        run_query_keys(self.conn, query)
    }

    fn replace_index(
        &mut self,
        resource_type: &str,
        id: &str,
        rows: &IndexRows,
    ) -> Result<(), StoreError> {
        let result = index::sync(self.conn, resource_type, id, rows, true);
        if let Err(e) = &result
            && self.failed.is_none()
        {
            self.failed = Some(e.to_string());
        }
        result
    }

    fn current_body(&mut self, resource_type: &str, id: &str) -> Result<Option<Bytes>, StoreError> {
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT v.body FROM resource_head h JOIN resource_version v ON v.seq = h.seq
                 WHERE h.resource_type = ? AND h.id = ? AND h.deleted = 0",
            )
            .map_err(db_err)?;
        let body: Option<Option<Vec<u8>>> = st
            .query_row(params![resource_type, id], |r| r.get(0))
            .optional()
            .map_err(db_err)?;
        Ok(body.flatten().map(Bytes::from))
    }

    fn put(&mut self, v: NewVersion) -> Result<Arc<StoredVersion>, StoreError> {
        if (v.method == WriteMethod::Delete) != v.body.is_none() {
            return Err(StoreError::Backend(format!(
                "{}/{} version {}: a delete must have no body and any other write must have one",
                v.resource_type, v.id, v.version
            )));
        }
        // Checked before anything is written, so a conflict leaves the job's state untouched and the job
        // may recover from it.
        let expected = self
            .head(&v.resource_type, &v.id)?
            .map_or(1, |h| h.version + 1);
        if v.version != expected {
            return Err(StoreError::Conflict(
                format!("{}/{}", v.resource_type, v.id),
                expected,
            ));
        }
        match self.write_version(v) {
            Ok(stored) => {
                self.written.push(stored.clone());
                Ok(stored)
            }
            Err(e) => {
                // Some rows of this version may be written and others not; poison the job.
                if self.failed.is_none() {
                    self.failed = Some(e.to_string());
                }
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn body(s: &str) -> Option<Bytes> {
        Some(Bytes::from(s.to_owned()))
    }

    fn new_version(
        rt: &str,
        id: &str,
        version: u64,
        method: WriteMethod,
        b: Option<Bytes>,
    ) -> NewVersion {
        NewVersion {
            resource_type: rt.into(),
            id: id.into(),
            version,
            method,
            body: b,
            index: IndexRows::default(),
        }
    }

    /// A job that writes one version and returns nothing.
    fn put_job(v: NewVersion) -> TxWork {
        Box::new(move |tx: &mut dyn TxContext| {
            tx.put(v)?;
            Ok(Box::new(()) as Box<dyn Any + Send>)
        })
    }

    /// A job that writes the next version of `rt/id` (create if new), whatever the head is.
    fn next_version_job(rt: &'static str, id: String, b: &'static str) -> TxWork {
        Box::new(move |tx: &mut dyn TxContext| {
            let next = tx.head(rt, &id)?.map_or(1, |h| h.version + 1);
            let m = if next == 1 {
                WriteMethod::Create
            } else {
                WriteMethod::Update
            };
            let v = tx.put(new_version(rt, &id, next, m, body(b)))?;
            Ok(Box::new(v.version) as Box<dyn Any + Send>)
        })
    }

    fn open(dir: &Path) -> SqliteStore {
        SqliteStore::open(
            dir,
            SqliteOptions {
                readers: 2,
                max_batch: 64,
                max_query_steps: None,
            },
        )
        .expect("open store")
    }

    async fn commit(store: &SqliteStore, v: NewVersion) -> Arc<StoredVersion> {
        match store.transact(put_job(v)).await {
            Ok(out) => out.written[0].clone(),
            Err(TxAbort::Store(e)) => panic!("store error: {e}"),
            Err(TxAbort::Caller(_)) => panic!("caller abort"),
        }
    }

    fn abort_reason(r: Result<TxOutcome, TxAbort>) -> String {
        match r {
            Ok(_) => "committed".into(),
            Err(TxAbort::Store(e)) => format!("store: {e}"),
            Err(TxAbort::Caller(b)) => format!(
                "caller: {}",
                b.downcast_ref::<&str>().copied().unwrap_or("?")
            ),
        }
    }

    /// Waits (at most 10 s, so a broken test fails instead of hanging) until `n` messages are queued.
    async fn wait_queued(store: &SqliteStore, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while store.queued() < n {
            assert!(Instant::now() < deadline, "never saw {n} queued messages");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// Blocks the writer inside a job until `n` more messages are queued, so they form one batch.
    async fn hold_writer_until_queued(
        store: &Arc<SqliteStore>,
        n: usize,
    ) -> tokio::task::JoinHandle<()> {
        let (started_tx, started_rx) = std::sync::mpsc::channel::<()>();
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        let s = store.clone();
        let blocker = tokio::spawn(async move {
            let work: TxWork = Box::new(move |_tx: &mut dyn TxContext| {
                let _ = started_tx.send(());
                let _ = go_rx.recv_timeout(Duration::from_secs(10));
                Ok(Box::new(()) as Box<dyn Any + Send>)
            });
            assert!(s.transact(work).await.is_ok());
        });
        tokio::task::spawn_blocking(move || started_rx.recv_timeout(Duration::from_secs(10)))
            .await
            .expect("join")
            .expect("blocker started");
        let store = store.clone();
        tokio::spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(10);
            while store.queued() < n && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            let _ = go_tx.send(());
            let _ = blocker.await;
        })
    }

    #[tokio::test]
    async fn create_update_delete_are_gapless_versions() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(dir.path());
        let v1 = commit(
            &store,
            new_version("Patient", "p1", 1, WriteMethod::Create, body("{\"a\":1}")),
        )
        .await;
        let v2 = commit(
            &store,
            new_version("Patient", "p1", 2, WriteMethod::Update, body("{\"a\":2}")),
        )
        .await;
        let v3 = commit(
            &store,
            new_version("Patient", "p1", 3, WriteMethod::Delete, None),
        )
        .await;
        assert!(v1.seq < v2.seq && v2.seq < v3.seq);
        assert!(v3.is_deleted());

        let latest = store
            .read("Patient", "p1")
            .await
            .expect("read")
            .expect("exists");
        assert_eq!(latest.version, 3);
        assert!(latest.is_deleted());
        assert_eq!(latest.method, WriteMethod::Delete);
        for (n, want) in [(1, Some("{\"a\":1}")), (2, Some("{\"a\":2}")), (3, None)] {
            let v = store
                .vread("Patient", "p1", n)
                .await
                .expect("vread")
                .expect("version exists");
            assert_eq!(v.version, n);
            assert_eq!(v.body.as_deref(), want.map(str::as_bytes));
        }
        assert!(
            store
                .vread("Patient", "p1", 4)
                .await
                .expect("vread")
                .is_none()
        );
        assert!(
            store
                .vread("Patient", "p1", u64::MAX)
                .await
                .expect("vread")
                .is_none()
        );
        assert!(store.read("Patient", "nope").await.expect("read").is_none());

        // Re-create after delete continues the version sequence.
        let v4 = commit(
            &store,
            new_version("Patient", "p1", 4, WriteMethod::Update, body("{\"a\":4}")),
        )
        .await;
        assert_eq!(v4.version, 4);
        let h = store
            .history(HistoryQuery {
                scope: HistoryScope::Instance("Patient".into(), "p1".into()),
                since_ms: None,
                at_seq: None,
                count: 10,
                offset: 0,
            })
            .await
            .expect("history");
        assert_eq!(
            h.entries.iter().map(|e| e.version).collect::<Vec<_>>(),
            vec![4, 3, 2, 1]
        );
    }

    #[tokio::test]
    async fn wrong_version_is_a_conflict_and_writes_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(dir.path());
        // A new resource must start at 1.
        let r = store
            .transact(put_job(new_version(
                "Patient",
                "p",
                2,
                WriteMethod::Create,
                body("{}"),
            )))
            .await;
        assert!(
            matches!(r, Err(TxAbort::Store(StoreError::Conflict(ref k, 1))) if k == "Patient/p")
        );
        commit(
            &store,
            new_version("Patient", "p", 1, WriteMethod::Create, body("{}")),
        )
        .await;
        for wrong in [1, 3] {
            let r = store
                .transact(put_job(new_version(
                    "Patient",
                    "p",
                    wrong,
                    WriteMethod::Update,
                    body("{}"),
                )))
                .await;
            assert!(
                matches!(r, Err(TxAbort::Store(StoreError::Conflict(_, 2)))),
                "version {wrong}"
            );
        }
        // A delete with a body is a caller bug, refused.
        let r = store
            .transact(put_job(new_version(
                "Patient",
                "p",
                2,
                WriteMethod::Delete,
                body("{}"),
            )))
            .await;
        assert!(matches!(r, Err(TxAbort::Store(StoreError::Backend(_)))));
        assert_eq!(
            store
                .read("Patient", "p")
                .await
                .expect("read")
                .expect("exists")
                .version,
            1
        );
    }

    #[tokio::test]
    async fn a_unit_of_work_is_atomic_and_sees_its_own_writes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(dir.path());
        // Writes two resources then aborts: neither survives.
        let r = store
            .transact(Box::new(|tx: &mut dyn TxContext| {
                tx.put(new_version(
                    "Patient",
                    "a",
                    1,
                    WriteMethod::Create,
                    body("{\"n\":\"a\"}"),
                ))?;
                assert_eq!(
                    tx.head("Patient", "a")?,
                    Some(Head {
                        version: 1,
                        deleted: false
                    })
                );
                assert_eq!(
                    tx.current_body("Patient", "a")?.as_deref(),
                    Some(&b"{\"n\":\"a\"}"[..])
                );
                tx.put(new_version(
                    "Patient",
                    "b",
                    1,
                    WriteMethod::Create,
                    body("{}"),
                ))?;
                Err(TxAbort::Caller(Box::new("rule failed")))
            }))
            .await;
        assert_eq!(abort_reason(r), "caller: rule failed");
        assert!(store.read("Patient", "a").await.expect("read").is_none());
        assert!(store.read("Patient", "b").await.expect("read").is_none());

        // Same writes, committed: one timestamp for the whole unit of work, `written` in order.
        let out = store
            .transact(Box::new(|tx: &mut dyn TxContext| {
                tx.put(new_version(
                    "Patient",
                    "a",
                    1,
                    WriteMethod::Create,
                    body("{}"),
                ))?;
                tx.put(new_version("Patient", "a", 2, WriteMethod::Delete, None))?;
                assert_eq!(
                    tx.head("Patient", "a")?,
                    Some(Head {
                        version: 2,
                        deleted: true
                    })
                );
                assert_eq!(tx.current_body("Patient", "a")?, None);
                tx.put(new_version(
                    "Patient",
                    "b",
                    1,
                    WriteMethod::Create,
                    body("{}"),
                ))?;
                Ok(Box::new(tx.now_ms()) as Box<dyn Any + Send>)
            }))
            .await
            .unwrap_or_else(|r| panic!("{}", abort_reason(Err(r))));
        let now = *out.value.downcast::<i64>().expect("i64");
        assert_eq!(out.written.len(), 3);
        assert!(out.written.iter().all(|w| w.last_updated_ms == now));
        assert_eq!(
            out.written
                .iter()
                .map(|w| (w.id.as_str(), w.version))
                .collect::<Vec<_>>(),
            vec![("a", 1), ("a", 2), ("b", 1)]
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_aborting_job_in_a_batch_leaves_nothing_while_its_neighbours_commit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(open(dir.path()));
        const N: usize = 20;
        let release = hold_writer_until_queued(&store, N).await;
        let mut tasks = Vec::new();
        for i in 0..N {
            let s = store.clone();
            tasks.push(tokio::spawn(async move {
                let work: TxWork = if i == 7 {
                    Box::new(|tx: &mut dyn TxContext| {
                        tx.put(new_version(
                            "Patient",
                            "bad",
                            1,
                            WriteMethod::Create,
                            body("{}"),
                        ))?;
                        Err(TxAbort::Caller(Box::new("no")))
                    })
                } else if i == 11 {
                    // Conflicts with nothing it wrote itself: version 5 of a new resource.
                    put_job(new_version(
                        "Patient",
                        "conflict",
                        5,
                        WriteMethod::Create,
                        body("{}"),
                    ))
                } else {
                    put_job(new_version(
                        "Patient",
                        &format!("ok{i}"),
                        1,
                        WriteMethod::Create,
                        body("{}"),
                    ))
                };
                (i, s.transact(work).await)
            }));
        }
        release.await.expect("release");
        for t in tasks {
            let (i, r) = t.await.expect("task");
            match i {
                7 => assert_eq!(abort_reason(r), "caller: no"),
                11 => assert!(matches!(r, Err(TxAbort::Store(StoreError::Conflict(_, 1))))),
                _ => assert!(r.is_ok(), "job {i}: {}", abort_reason(r)),
            }
        }
        assert!(store.read("Patient", "bad").await.expect("read").is_none());
        assert!(
            store
                .read("Patient", "conflict")
                .await
                .expect("read")
                .is_none()
        );
        for i in (0..N).filter(|i| *i != 7 && *i != 11) {
            assert!(
                store
                    .read("Patient", &format!("ok{i}"))
                    .await
                    .expect("read")
                    .is_some(),
                "ok{i}"
            );
        }
        let stats = store.stats();
        // The N queued jobs shared one batch: not every batch had size 1.
        let le_1 = stats.batch_size_buckets[0].1;
        assert!(stats.write_batches > le_1, "no batch > 1: {stats:?}");
        let le_32 = stats
            .batch_size_buckets
            .iter()
            .find(|b| b.0 == 32)
            .expect("bucket")
            .1;
        let le_16 = stats
            .batch_size_buckets
            .iter()
            .find(|b| b.0 == 16)
            .expect("bucket")
            .1;
        assert_eq!(
            le_32 - le_16,
            1,
            "exactly one batch of 17..=32 jobs: {stats:?}"
        );
        assert_eq!(stats.write_jobs, N as u64 + 1);
        assert_eq!(
            stats.batch_size_buckets.last().expect("inf").1,
            stats.write_batches
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn jobs_in_one_batch_see_earlier_jobs_writes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(open(dir.path()));
        let release = hold_writer_until_queued(&store, 10).await;
        let tasks: Vec<_> = (0..10)
            .map(|_| {
                let s = store.clone();
                tokio::spawn(async move {
                    s.transact(next_version_job("Counter", "c".into(), "{}"))
                        .await
                })
            })
            .collect();
        release.await.expect("release");
        let mut versions = Vec::new();
        for t in tasks {
            let out = t
                .await
                .expect("task")
                .unwrap_or_else(|r| panic!("{}", abort_reason(Err(r))));
            versions.push(*out.value.downcast::<u64>().expect("u64"));
        }
        versions.sort_unstable();
        assert_eq!(versions, (1..=10).collect::<Vec<u64>>());
        assert!(store.stats().batch_size_buckets[0].1 < store.stats().write_batches);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_hundred_concurrent_jobs_all_commit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(open(dir.path()));
        let tasks: Vec<_> = (0..200)
            .map(|i| {
                let s = store.clone();
                tokio::spawn(async move {
                    // Half write distinct resources, half contend on one, serialised by the writer.
                    let id = if i % 2 == 0 {
                        format!("p{i}")
                    } else {
                        "shared".into()
                    };
                    s.transact(next_version_job("Patient", id, "{}")).await
                })
            })
            .collect();
        for t in tasks {
            let r = t.await.expect("task");
            assert!(r.is_ok(), "{}", abort_reason(r));
        }
        store.flush().await.expect("flush");
        assert_eq!(
            store
                .read("Patient", "shared")
                .await
                .expect("read")
                .expect("exists")
                .version,
            100
        );
        let h = store
            .history(HistoryQuery {
                scope: HistoryScope::System,
                since_ms: None,
                at_seq: None,
                count: 0,
                offset: 0,
            })
            .await
            .expect("history");
        assert_eq!(h.total, 200);
        let stats = store.stats();
        assert_eq!(stats.write_jobs, 200);
        assert!(stats.write_batches <= 200);
    }

    #[tokio::test]
    async fn history_scopes_since_and_pinned_paging() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(dir.path());
        // Three batches separated in time so `since` can split them.
        let mut seqs = Vec::new();
        for (rt, id, v) in [
            ("Patient", "a", 1),
            ("Patient", "a", 2),
            ("Observation", "o", 1),
        ] {
            let m = if v == 1 {
                WriteMethod::Create
            } else {
                WriteMethod::Update
            };
            seqs.push(commit(&store, new_version(rt, id, v, m, body("{}"))).await);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        commit(
            &store,
            new_version("Patient", "b", 1, WriteMethod::Create, body("{}")),
        )
        .await;

        let q = |scope, since_ms, at_seq, count, offset| HistoryQuery {
            scope,
            since_ms,
            at_seq,
            count,
            offset,
        };
        let ids = |p: &HistoryPage| {
            p.entries
                .iter()
                .map(|e| format!("{}/{}", e.id, e.version))
                .collect::<Vec<_>>()
        };

        let all = store
            .history(q(HistoryScope::System, None, None, 10, 0))
            .await
            .expect("h");
        assert_eq!(all.total, 4);
        assert_eq!(ids(&all), vec!["b/1", "o/1", "a/2", "a/1"]);
        let pt = store
            .history(q(HistoryScope::Type("Patient".into()), None, None, 10, 0))
            .await
            .expect("h");
        assert_eq!(
            (pt.total, ids(&pt)),
            (3, vec!["b/1".to_string(), "a/2".into(), "a/1".into()])
        );
        let inst = store
            .history(q(
                HistoryScope::Instance("Patient".into(), "a".into()),
                None,
                None,
                10,
                0,
            ))
            .await
            .expect("h");
        assert_eq!(ids(&inst), vec!["a/2", "a/1"]);
        let since = store
            .history(q(
                HistoryScope::System,
                Some(seqs[1].last_updated_ms),
                None,
                10,
                0,
            ))
            .await
            .expect("h");
        assert_eq!(ids(&since), vec!["b/1", "o/1", "a/2"]);
        let none = store
            .history(q(HistoryScope::Type("Encounter".into()), None, None, 10, 0))
            .await
            .expect("h");
        assert_eq!((none.total, none.entries.len()), (0, 0));

        // Paging: page 1, then a write, then page 2 pinned to page 1's view.
        let p1 = store
            .history(q(HistoryScope::System, None, None, 2, 0))
            .await
            .expect("h");
        assert_eq!(
            (p1.total, ids(&p1)),
            (4, vec!["b/1".to_string(), "o/1".into()])
        );
        commit(
            &store,
            new_version("Patient", "c", 1, WriteMethod::Create, body("{}")),
        )
        .await;
        let p2 = store
            .history(q(HistoryScope::System, None, Some(p1.at_seq), 2, 2))
            .await
            .expect("h");
        assert_eq!(
            (p2.total, ids(&p2)),
            (4, vec!["a/2".to_string(), "a/1".into()])
        );
        assert_eq!(p2.at_seq, p1.at_seq);
        // A pin beyond the end is clamped, and an unpinned query sees the new write.
        let fresh = store
            .history(q(HistoryScope::System, None, Some(i64::MAX), 1, 0))
            .await
            .expect("h");
        assert_eq!((fresh.total, ids(&fresh)), (5, vec!["c/1".to_string()]));
        assert!(fresh.at_seq > p1.at_seq);
        let count_only = store
            .history(q(HistoryScope::System, None, None, 0, 0))
            .await
            .expect("h");
        assert_eq!((count_only.total, count_only.entries.len()), (5, 0));
    }

    fn token(param: &str, system: Option<&str>, code: &str) -> TokenRow {
        TokenRow {
            param: param.into(),
            system: system.map(Into::into),
            code: code.into(),
            text: None,
        }
    }

    fn tokens(rows: Vec<TokenRow>) -> IndexRows {
        IndexRows {
            tokens: rows,
            ..IndexRows::default()
        }
    }

    async fn find(
        store: &SqliteStore,
        system: Option<&'static str>,
        code: &'static str,
    ) -> Vec<String> {
        let out = store
            .transact(Box::new(move |tx: &mut dyn TxContext| {
                let mut sql = String::from(
                    "SELECT DISTINCT resource_type, id FROM idx_token
                     WHERE resource_type = 'Patient' AND param = 'identifier' AND code = ?",
                );
                let mut args = vec![SqlArg::Text(code.into())];
                if let Some(s) = system {
                    sql.push_str(" AND system = ?");
                    args.push(SqlArg::Text(s.into()));
                }
                sql.push_str(" ORDER BY id");
                let keys = tx.query_keys(&SqlQuery { sql, args })?;
                let ids: Vec<String> = keys.into_iter().map(|(_, id)| id).collect();
                Ok(Box::new(ids) as Box<dyn Any + Send>)
            }))
            .await
            .unwrap_or_else(|r| panic!("{}", abort_reason(Err(r))));
        *out.value.downcast::<Vec<String>>().expect("ids")
    }

    #[tokio::test]
    async fn token_rows_follow_the_current_version() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(dir.path());
        let mut v = new_version("Patient", "p1", 1, WriteMethod::Create, body("{}"));
        v.index = tokens(vec![
            token("identifier", Some("urn:mrn"), "123"),
            token("identifier", Some("urn:ssn"), "123"),
            token("identifier", Some("urn:mrn"), "123"), // duplicate: de-duplicated
            token("identifier", None, "nosys"),
        ]);
        commit(&store, v).await;
        let mut v = new_version("Patient", "p2", 1, WriteMethod::Create, body("{}"));
        v.index = tokens(vec![token("identifier", Some("urn:mrn"), "123")]);
        commit(&store, v).await;
        let mut v = new_version("Observation", "o1", 1, WriteMethod::Create, body("{}"));
        v.index = tokens(vec![token("identifier", Some("urn:mrn"), "123")]);
        commit(&store, v).await;

        assert_eq!(find(&store, Some("urn:mrn"), "123").await, vec!["p1", "p2"]);
        assert_eq!(find(&store, Some("urn:ssn"), "123").await, vec!["p1"]);
        assert_eq!(find(&store, None, "123").await, vec!["p1", "p2"]);
        assert_eq!(find(&store, Some(""), "nosys").await, vec!["p1"]);
        assert_eq!(find(&store, None, "nosys").await, vec!["p1"]);
        assert!(find(&store, Some("urn:mrn"), "nosys").await.is_empty());
        assert!(find(&store, Some(""), "123").await.is_empty());

        // An update replaces the rows; a delete removes them.
        let mut v = new_version("Patient", "p1", 2, WriteMethod::Update, body("{}"));
        v.index = tokens(vec![token("identifier", Some("urn:mrn"), "999")]);
        commit(&store, v).await;
        assert_eq!(find(&store, None, "123").await, vec!["p2"]);
        assert_eq!(find(&store, Some("urn:mrn"), "999").await, vec!["p1"]);
        let mut v = new_version("Patient", "p1", 3, WriteMethod::Delete, None);
        v.index = tokens(vec![token("identifier", Some("urn:mrn"), "999")]); // ignored for a tombstone
        commit(&store, v).await;
        assert!(find(&store, None, "999").await.is_empty());
    }

    #[tokio::test]
    async fn the_wal_starts_again_under_sustained_writes() {
        // 2,400 commits of 16 KB each put about 40 MB through the WAL; with the background
        // checkpointer alone it would hold all of them. The writer's backstop checkpoint
        // restarts it at about `WAL_BACKSTOP_PAGES` pages (16 MB).
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(dir.path());
        let big = format!("{{\"text\":\"{}\"}}", "x".repeat(16 * 1024));
        let mut largest = 0;
        for i in 0..2_400u64 {
            let method = if i == 0 {
                WriteMethod::Create
            } else {
                WriteMethod::Update
            };
            commit(
                &store,
                new_version("Binary", "b1", i + 1, method, body(&big)),
            )
            .await;
            let wal = std::fs::metadata(dir.path().join(format!("{DB_FILE}-wal")))
                .map(|m| m.len())
                .unwrap_or(0);
            largest = largest.max(wal);
        }
        assert!(
            largest < 28 << 20,
            "the WAL grew to {largest} bytes for 40 MB written"
        );
    }

    #[tokio::test]
    async fn reopen_finds_everything() {
        let dir = tempfile::tempdir().expect("tempdir");
        let last_ms;
        {
            let store = open(dir.path());
            for i in 0..5 {
                let mut v = new_version(
                    "Patient",
                    &format!("p{i}"),
                    1,
                    WriteMethod::Create,
                    body("{\"x\":1}"),
                );
                v.index = tokens(vec![token("identifier", Some("urn:mrn"), "123")]);
                commit(&store, v).await;
            }
            last_ms = commit(
                &store,
                new_version("Patient", "p0", 2, WriteMethod::Delete, None),
            )
            .await
            .last_updated_ms;
            store.close().await.expect("close");
            let r = store
                .transact(put_job(new_version(
                    "Patient",
                    "late",
                    1,
                    WriteMethod::Create,
                    body("{}"),
                )))
                .await;
            assert!(matches!(r, Err(TxAbort::Store(StoreError::Closed))));
            assert!(matches!(store.flush().await, Err(StoreError::Closed)));
        }
        let store = open(dir.path());
        assert!(
            store
                .read("Patient", "p0")
                .await
                .expect("read")
                .expect("exists")
                .is_deleted()
        );
        assert_eq!(
            store
                .vread("Patient", "p0", 1)
                .await
                .expect("vread")
                .expect("v1")
                .body,
            body("{\"x\":1}")
        );
        assert_eq!(
            store
                .read("Patient", "p4")
                .await
                .expect("read")
                .expect("exists")
                .version,
            1
        );
        assert!(store.read("Patient", "late").await.expect("read").is_none());
        assert_eq!(
            find(&store, Some("urn:mrn"), "123").await,
            vec!["p1", "p2", "p3", "p4"]
        );
        let h = store
            .history(HistoryQuery {
                scope: HistoryScope::System,
                since_ms: None,
                at_seq: None,
                count: 100,
                offset: 0,
            })
            .await
            .expect("history");
        assert_eq!(h.total, 6);
        // Time never goes back across a restart.
        let v = commit(
            &store,
            new_version("Patient", "p9", 1, WriteMethod::Create, body("{}")),
        )
        .await;
        assert!(v.last_updated_ms >= last_ms);
        assert!(v.seq > h.at_seq);
    }

    #[tokio::test]
    async fn a_panicking_job_is_rolled_back_and_the_writer_survives() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(dir.path());
        let r = store
            .transact(Box::new(|tx: &mut dyn TxContext| {
                tx.put(new_version(
                    "Patient",
                    "x",
                    1,
                    WriteMethod::Create,
                    body("{}"),
                ))?;
                panic!("bug in a unit of work");
            }))
            .await;
        assert_eq!(
            abort_reason(r),
            "store: storage failure: unit of work panicked"
        );
        assert!(store.read("Patient", "x").await.expect("read").is_none());
        let v = commit(
            &store,
            new_version("Patient", "x", 1, WriteMethod::Create, body("{}")),
        )
        .await;
        assert_eq!(v.version, 1);
    }

    #[tokio::test]
    async fn timestamps_never_decrease_across_batches() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(dir.path());
        let mut last = (0, 0);
        for i in 0..20 {
            let v = commit(
                &store,
                new_version(
                    "Patient",
                    &format!("p{i}"),
                    1,
                    WriteMethod::Create,
                    body("{}"),
                ),
            )
            .await;
            assert!(v.last_updated_ms >= last.0 && v.seq > last.1);
            last = (v.last_updated_ms, v.seq);
        }
    }

    /// Queues `n` single-put jobs behind a held writer; returns their tasks.
    fn spawn_creates(
        store: &Arc<SqliteStore>,
        n: usize,
    ) -> Vec<tokio::task::JoinHandle<Result<TxOutcome, TxAbort>>> {
        (0..n)
            .map(|i| {
                let s = store.clone();
                tokio::spawn(async move {
                    s.transact(put_job(new_version(
                        "Patient",
                        &format!("q{i}"),
                        1,
                        WriteMethod::Create,
                        body("{}"),
                    )))
                    .await
                })
            })
            .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn max_batch_bounds_each_group_commit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(
            SqliteStore::open(
                dir.path(),
                SqliteOptions {
                    readers: 1,
                    max_batch: 4,
                    max_query_steps: None,
                },
            )
            .expect("open"),
        );
        let release = hold_writer_until_queued(&store, 10).await;
        let tasks = spawn_creates(&store, 10);
        release.await.expect("release");
        for t in tasks {
            assert!(t.await.expect("task").is_ok());
        }
        let s = store.stats();
        // 1 (the holder) + 4 + 4 + 2.
        assert_eq!(s.write_batches, 4, "{s:?}");
        let le_4 = s
            .batch_size_buckets
            .iter()
            .find(|b| b.0 == 4)
            .expect("bucket")
            .1;
        assert_eq!(le_4, s.write_batches);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn flush_waits_for_everything_queued_before_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(open(dir.path()));
        let release = hold_writer_until_queued(&store, 11).await;
        let tasks = spawn_creates(&store, 10);
        let s = store.clone();
        let flush = tokio::spawn(async move {
            // Queued behind the ten jobs.
            wait_queued(&s, 10).await;
            s.flush().await
        });
        release.await.expect("release");
        flush.await.expect("task").expect("flush");
        // Every job was committed before flush answered, whatever order the tasks are observed in.
        assert_eq!(store.stats().write_jobs, 11);
        for i in 0..10 {
            assert!(
                store
                    .read("Patient", &format!("q{i}"))
                    .await
                    .expect("read")
                    .is_some()
            );
        }
        for t in tasks {
            assert!(t.await.expect("task").is_ok());
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn close_finishes_the_queue_then_refuses_work() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(open(dir.path()));
        let release = hold_writer_until_queued(&store, 11).await;
        let tasks = spawn_creates(&store, 10);
        let s = store.clone();
        let closing = tokio::spawn(async move {
            // Wait until the ten jobs are queued so the close lands behind them.
            wait_queued(&s, 10).await;
            s.close().await
        });
        release.await.expect("release");
        closing.await.expect("task").expect("close");
        for t in tasks {
            assert!(t.await.expect("task").is_ok());
        }
        let r = store
            .transact(put_job(new_version(
                "Patient",
                "late",
                1,
                WriteMethod::Create,
                body("{}"),
            )))
            .await;
        assert!(matches!(r, Err(TxAbort::Store(StoreError::Closed))));
        // Closing twice is harmless; reads still work on the reader pool.
        store.close().await.expect("close again");
        assert!(store.read("Patient", "q3").await.expect("read").is_some());
    }

    #[tokio::test]
    async fn opening_a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        drop(open(dir.path()));
        {
            let c = Connection::open(dir.path().join(DB_FILE)).expect("open");
            c.execute("UPDATE schema_version SET version = 999", [])
                .expect("bump");
        }
        let r = SqliteStore::open(dir.path(), SqliteOptions::default());
        assert!(matches!(r, Err(StoreError::Backend(ref m)) if m.contains("newer")));
    }

    /// The steps of SQLite's plan for one page of `plan`.
    fn page_plan(c: &Connection, plan: &crate::search::plan::SearchPlan) -> Vec<String> {
        let q = crate::search::sql::page(plan, &crate::search::sql::Sqlite, 11);
        let mut st = c
            .prepare(&format!("EXPLAIN QUERY PLAN {}", q.sql))
            .expect("explain");
        st.query_map(rusqlite::params_from_iter(sql_args(&q.args)), |r| r.get(3))
            .expect("plan")
            .collect::<Result<_, _>>()
            .expect("rows")
    }

    /// A month of a one-valued date (`date=ge2015-01-01&date=lt2015-02-01`, folded into one
    /// `DateAll`) reads one range of the low index, bounded at both ends (the low end by the
    /// longest span stored), instead of everything after and everything before.
    #[tokio::test]
    async fn a_date_range_of_one_row_reads_one_range_of_the_low_index() {
        use crate::search::plan::{DateBound, Predicate, Prefix, SearchPlan};
        let dir = tempfile::tempdir().expect("tempdir");
        drop(open(dir.path()));
        let c = Connection::open(dir.path().join(DB_FILE)).expect("open");
        let mut plan = SearchPlan::over(vec!["Observation".into()], 10);
        let bound = |prefix, low, high| DateBound {
            prefix,
            low,
            high,
            margin: 0,
        };
        plan.filters = vec![vec![Predicate::DateAll {
            param: "date".into(),
            bounds: vec![
                bound(Prefix::Ge, 1_000, 1_999),
                bound(Prefix::Lt, 5_000, 5_999),
            ],
        }]];
        let steps = page_plan(&c, &plan);
        let on_dates: Vec<&String> = steps
            .iter()
            .filter(|s| {
                s.contains("idx_date ")
                    || s.contains("idx_date_lookup")
                    || s.contains("idx_date_high")
            })
            .collect();
        assert!(!on_dates.is_empty(), "{steps:#?}");
        for step in on_dates {
            assert!(
                step.contains("idx_date_lookup") && step.contains("low>") && step.contains("low<"),
                "not one range of the low index: {steps:#?}"
            );
        }
    }

    /// In an AND search the most selective term drives (the subject's reference rows) and the
    /// others are probed per candidate on their table's primary key, never read as a set.
    #[tokio::test]
    async fn and_terms_are_probed_from_the_most_selective() {
        use crate::search::plan::{DateBound, Predicate, Prefix, SearchPlan};
        let dir = tempfile::tempdir().expect("tempdir");
        drop(open(dir.path()));
        let c = Connection::open(dir.path().join(DB_FILE)).expect("open");
        let subject = Predicate::Reference {
            param: "subject".into(),
            target_type: Some("Patient".into()),
            id: Some("p1".into()),
            url: None,
        };
        let code = Predicate::Token {
            param: "code".into(),
            system: Some("http://loinc.org".into()),
            code: Some("8310-5".into()),
        };
        let month = Predicate::DateAll {
            param: "date".into(),
            bounds: [(Prefix::Ge, 1_000), (Prefix::Lt, 5_000)]
                .map(|(prefix, low)| DateBound {
                    prefix,
                    low,
                    high: low + 999,
                    margin: 0,
                })
                .to_vec(),
        };
        for other in [code, month] {
            let mut plan = SearchPlan::over(vec!["Observation".into()], 10);
            // The broad term first: the order of the terms does not decide.
            plan.filters = vec![vec![other], vec![subject.clone()]];
            let steps = page_plan(&c, &plan);
            let driving = steps
                .iter()
                .position(|s| s.contains("idx_reference_lookup"))
                .unwrap_or_else(|| panic!("the subject does not drive: {steps:#?}"));
            let probed: Vec<&String> = steps
                .iter()
                .filter(|s| s.contains("idx_token") || s.contains("idx_date"))
                .collect();
            assert!(!probed.is_empty(), "{steps:#?}");
            for step in probed {
                // SQLite may probe by the primary key or by the lookup index with the id: either
                // way one resource's rows, per candidate.
                assert!(
                    step.contains("id=?") && !step.contains("LIST SUBQUERY"),
                    "not a probe of one resource's rows: {steps:#?}"
                );
            }
            assert!(driving < steps.len());
        }
    }

    /// Every date prefix except `ne` and `ap` (whose matches are not one range of either end)
    /// finds its rows by a range of the low or the high index, never by reading every row of the
    /// parameter.
    #[tokio::test]
    async fn date_searches_read_a_range_of_an_index() {
        use crate::search::plan::{Predicate, Prefix};
        let dir = tempfile::tempdir().expect("tempdir");
        drop(open(dir.path()));
        let c = Connection::open(dir.path().join(DB_FILE)).expect("open");
        for prefix in [
            Prefix::Eq,
            Prefix::Gt,
            Prefix::Ge,
            Prefix::Lt,
            Prefix::Le,
            Prefix::Sa,
            Prefix::Eb,
        ] {
            let mut plan = crate::search::plan::SearchPlan::over(vec!["Observation".into()], 10);
            plan.filters = vec![vec![Predicate::Date {
                param: "date".into(),
                prefix,
                low: 1_000,
                high: 2_000,
                margin: 0,
            }]];
            let q = crate::search::sql::page(&plan, &crate::search::sql::Sqlite, 11);
            let mut st = c
                .prepare(&format!("EXPLAIN QUERY PLAN {}", q.sql))
                .expect("explain");
            let steps: Vec<String> = st
                .query_map(rusqlite::params_from_iter(sql_args(&q.args)), |r| r.get(3))
                .expect("plan")
                .collect::<Result<_, _>>()
                .expect("rows");
            let on_dates: Vec<&String> = steps.iter().filter(|s| s.contains("idx_date")).collect();
            assert!(!on_dates.is_empty(), "{prefix:?}: {steps:#?}");
            for step in on_dates {
                assert!(
                    step.contains("low>") || step.contains("low<") || step.contains("high"),
                    "{prefix:?} reads every row of the parameter: {steps:#?}"
                );
            }
        }
    }
}
