//! The dead-letter table: every message that was not committed, with the raw bytes and the
//! reason, in its own SQLite file beside the store (`hl7v2-deadletter.sqlite`), so a failure in
//! the store itself can still be recorded and a message can be replayed after a fix.

use rusqlite::{Connection, params};
use std::path::Path;
use std::sync::{Arc, Mutex};

/// One failed message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub id: i64,
    pub received_ms: i64,
    pub facility: String,
    pub control_id: String,
    pub reason: String,
    pub raw: Vec<u8>,
}

/// The table, shared by every transport.
#[derive(Clone)]
pub struct DeadLetters {
    conn: Arc<Mutex<Connection>>,
}

impl DeadLetters {
    /// Opens (or creates) the table in `dir`.
    pub fn open(dir: &Path) -> rusqlite::Result<DeadLetters> {
        let _ = std::fs::create_dir_all(dir);
        let conn = Connection::open(dir.join("hl7v2-deadletter.sqlite"))?;
        conn.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;
             CREATE TABLE IF NOT EXISTS dead_letter (
               id INTEGER PRIMARY KEY AUTOINCREMENT,
               received_ms INTEGER NOT NULL,
               facility TEXT NOT NULL,
               control_id TEXT NOT NULL,
               reason TEXT NOT NULL,
               raw BLOB NOT NULL)",
        )?;
        Ok(DeadLetters {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    /// Records a failure (off the async threads).
    pub async fn record(&self, facility: &str, control_id: &str, reason: &str, raw: &[u8]) {
        let conn = self.conn.clone();
        let (f, c, r, raw) = (
            facility.to_string(),
            control_id.to_string(),
            reason.to_string(),
            raw.to_vec(),
        );
        let now = now_ms();
        let done = tokio::task::spawn_blocking(move || {
            let conn = conn.lock().map_err(|e| e.to_string())?;
            conn.execute(
                "INSERT INTO dead_letter (received_ms, facility, control_id, reason, raw) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![now, f, c, r, raw],
            )
            .map_err(|e| e.to_string())
        })
        .await;
        if !matches!(done, Ok(Ok(_))) {
            tracing::error!(?done, "dead-letter record failed");
        }
    }

    /// The most recent failures, newest first.
    pub fn list(&self, limit: usize) -> Vec<DeadLetter> {
        self.select("ORDER BY id DESC LIMIT ?1", limit as i64)
    }

    /// Every failure, oldest first (the order to replay them in).
    pub fn oldest_first(&self) -> Vec<DeadLetter> {
        self.select("WHERE id > ?1 ORDER BY id", 0)
    }

    /// One failure by its id.
    pub fn get(&self, id: i64) -> Option<DeadLetter> {
        self.select("WHERE id = ?1", id).into_iter().next()
    }

    fn select(&self, tail: &str, arg: i64) -> Vec<DeadLetter> {
        let Ok(conn) = self.conn.lock() else {
            return Vec::new();
        };
        let Ok(mut st) = conn.prepare(&format!(
            "SELECT id, received_ms, facility, control_id, reason, raw FROM dead_letter {tail}"
        )) else {
            return Vec::new();
        };
        st.query_map([arg], |r| {
            Ok(DeadLetter {
                id: r.get(0)?,
                received_ms: r.get(1)?,
                facility: r.get(2)?,
                control_id: r.get(3)?,
                reason: r.get(4)?,
                raw: r.get(5)?,
            })
        })
        .map(|rows| rows.flatten().collect())
        .unwrap_or_default()
    }

    /// Removes an entry (after a successful replay).
    pub fn remove(&self, id: i64) -> bool {
        self.conn
            .lock()
            .ok()
            .and_then(|c| {
                c.execute("DELETE FROM dead_letter WHERE id = ?1", [id])
                    .ok()
            })
            .is_some_and(|n| n > 0)
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
