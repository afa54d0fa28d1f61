//! The persistent delivery queue: one row per (subscription, matched version), in its own SQLite
//! file beside the store (`subscriptions.sqlite`, WAL), with the cursor (the highest store `seq`
//! already matched). Rows are inserted with the cursor in one transaction, so after a crash the
//! matcher resumes exactly where the queue says and nothing is matched twice or skipped; a
//! delivered row keeps its measured latency until the retention has passed ([`Queue::prune`]:
//! delivered rows only, so nothing undelivered is ever lost).
//!
//! The file is written with `synchronous=NORMAL`: a commit is not flushed to disk on its own. A
//! power cut can then undo the last commits, but never tear one: the rows go back with the cursor
//! that covered them, so the matcher matches those store versions again (the store itself syncs
//! every commit), and a delivery whose `done` was undone is sent again. Notifications are
//! delivered at least once either way; what this saves is an fsync per delivery, which was what
//! bounded the delivery rate of one subscription.

use rusqlite::{Connection, OptionalExtension, params};
use std::path::Path;
use std::sync::{Arc, Mutex};

/// One pending or finished delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub id: i64,
    pub subscription: String,
    pub resource_type: String,
    pub resource_id: String,
    pub version: u64,
    /// When the version was committed (ms since the epoch).
    pub committed_ms: i64,
    pub attempts: u32,
    pub next_ms: i64,
}

/// A delivery to add.
#[derive(Debug, Clone)]
pub struct NewDelivery {
    pub subscription: String,
    pub resource_type: String,
    pub resource_id: String,
    pub version: u64,
    pub committed_ms: i64,
}

/// The queue (cheap to clone; one connection, used off the async threads).
#[derive(Clone)]
pub struct Queue {
    conn: Arc<Mutex<Connection>>,
}

impl Queue {
    /// Opens (or creates) the queue in `dir`.
    pub fn open(dir: &Path) -> rusqlite::Result<Queue> {
        let _ = std::fs::create_dir_all(dir);
        let conn = Connection::open(dir.join("subscriptions.sqlite"))?;
        conn.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;
             CREATE TABLE IF NOT EXISTS delivery (
               id INTEGER PRIMARY KEY AUTOINCREMENT,
               subscription TEXT NOT NULL,
               resource_type TEXT NOT NULL,
               resource_id TEXT NOT NULL,
               version INTEGER NOT NULL,
               committed_ms INTEGER NOT NULL,
               attempts INTEGER NOT NULL DEFAULT 0,
               next_ms INTEGER NOT NULL,
               last_error TEXT,
               done_ms INTEGER,
               latency_ms INTEGER);
             CREATE INDEX IF NOT EXISTS delivery_pending ON delivery (done_ms, id);
             CREATE TABLE IF NOT EXISTS cursor (k INTEGER PRIMARY KEY CHECK (k = 0), seq INTEGER NOT NULL);",
        )?;
        Ok(Queue {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, String> {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let mut c = conn.lock().unwrap_or_else(|e| e.into_inner());
            f(&mut c).map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| e.to_string())?
    }

    /// The highest store `seq` already matched, if the queue ever recorded one.
    pub async fn cursor(&self) -> Result<Option<i64>, String> {
        self.run(|c| {
            c.query_row("SELECT seq FROM cursor WHERE k = 0", [], |r| r.get(0))
                .optional()
        })
        .await
    }

    /// Adds deliveries and moves the cursor to `seq`, atomically.
    pub async fn enqueue(&self, rows: Vec<NewDelivery>, seq: i64) -> Result<(), String> {
        self.run(move |c| {
            let tx = c.transaction()?;
            {
                let mut ins = tx.prepare_cached(
                    "INSERT INTO delivery (subscription, resource_type, resource_id, version, committed_ms, next_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
                )?;
                for r in &rows {
                    ins.execute(params![
                        r.subscription,
                        r.resource_type,
                        r.resource_id,
                        r.version as i64,
                        r.committed_ms
                    ])?;
                }
                tx.execute(
                    "INSERT INTO cursor (k, seq) VALUES (0, ?1) ON CONFLICT (k) DO UPDATE SET seq = max(seq, excluded.seq)",
                    params![seq],
                )?;
            }
            tx.commit()
        })
        .await
    }

    /// Pending deliveries, oldest first (at most `limit`).
    pub async fn pending(&self, limit: usize) -> Result<Vec<Delivery>, String> {
        self.run(move |c| {
            let mut q = c.prepare_cached(
                "SELECT id, subscription, resource_type, resource_id, version, committed_ms, attempts, next_ms FROM delivery WHERE done_ms IS NULL ORDER BY id LIMIT ?1",
            )?;
            let rows = q.query_map(params![limit as i64], |r| {
                Ok(Delivery {
                    id: r.get(0)?,
                    subscription: r.get(1)?,
                    resource_type: r.get(2)?,
                    resource_id: r.get(3)?,
                    version: r.get::<_, i64>(4)? as u64,
                    committed_ms: r.get(5)?,
                    attempts: r.get::<_, i64>(6)? as u32,
                    next_ms: r.get(7)?,
                })
            })?;
            rows.collect()
        })
        .await
    }

    /// Marks a delivery done with its latency (commit to acknowledged POST).
    pub async fn done(&self, id: i64, now_ms: i64, latency_ms: i64) -> Result<(), String> {
        self.run(move |c| {
            c.execute(
                "UPDATE delivery SET done_ms = ?2, latency_ms = ?3, attempts = attempts + 1, last_error = NULL WHERE id = ?1",
                params![id, now_ms, latency_ms],
            )
            .map(|_| ())
        })
        .await
    }

    /// Records a failed attempt; the next one is due at `next_ms`.
    pub async fn failed(&self, id: i64, next_ms: i64, error: String) -> Result<(), String> {
        self.run(move |c| {
            c.execute(
                "UPDATE delivery SET attempts = attempts + 1, next_ms = ?2, last_error = ?3 WHERE id = ?1",
                params![id, next_ms, error],
            )
            .map(|_| ())
        })
        .await
    }

    /// Deletes the deliveries done before `before_ms`; a pending one (not delivered yet, however
    /// old) is never deleted. Returns how many went.
    pub async fn prune(&self, before_ms: i64) -> Result<usize, String> {
        self.run(move |c| {
            c.execute(
                "DELETE FROM delivery WHERE done_ms IS NOT NULL AND done_ms < ?1",
                params![before_ms],
            )
        })
        .await
    }

    /// Pending deliveries (for the queue-depth metric).
    pub async fn depth(&self) -> Result<u64, String> {
        self.run(|c| {
            c.query_row(
                "SELECT COUNT(*) FROM delivery WHERE done_ms IS NULL",
                [],
                |r| r.get::<_, i64>(0),
            )
        })
        .await
        .map(|n| n as u64)
    }

    /// Latencies (ms) of the deliveries done for a subscription, in delivery order.
    pub async fn latencies(&self, subscription: &str) -> Result<Vec<i64>, String> {
        let s = subscription.to_string();
        self.run(move |c| {
            let mut q = c.prepare_cached(
                "SELECT latency_ms FROM delivery WHERE subscription = ?1 AND done_ms IS NOT NULL ORDER BY done_ms, id",
            )?;
            let rows = q.query_map(params![s], |r| r.get(0))?;
            rows.collect()
        })
        .await
    }
}
