//! The embedded default store on SQLite (WAL, one writer thread with group commit, a reader pool).

use super::*;
use std::path::Path;

/// Tuning of the SQLite store.
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    /// Reader connections.
    pub readers: usize,
    /// Most units of work folded into one group commit.
    pub max_batch: usize,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions { readers: 4, max_batch: 256 }
    }
}

/// The SQLite store (placeholder until implemented).
pub struct SqliteStore {}

impl SqliteStore {
    /// Opens (creating if needed) the database file `huitong.db` in `dir`.
    pub fn open(_dir: &Path, _opts: SqliteOptions) -> Result<SqliteStore, StoreError> {
        Err(StoreError::Backend("not implemented".into()))
    }
}
