//! A [`Store`] layer that reports every committed unit of work's versions to the subscription
//! matcher. It wraps the store the server builds, so every write path (REST, Bundles, HL7 v2,
//! feeds) is seen without any of them knowing about subscriptions.

use crate::store::{
    HistoryPage, HistoryQuery, ResourceKey, SqlQuery, Store, StoreError, StoreStats, StoredVersion,
    TxAbort, TxOutcome, TxWork,
};
use async_trait::async_trait;
use std::sync::Arc;
use tokio::sync::mpsc::UnboundedSender;

/// The store with a commit feed.
pub struct ObservedStore {
    inner: Arc<dyn Store>,
    commits: UnboundedSender<Vec<super::Committed>>,
}

impl ObservedStore {
    /// Wraps `inner`; committed versions go to `commits` after the commit returned.
    pub fn new(
        inner: Arc<dyn Store>,
        commits: UnboundedSender<Vec<super::Committed>>,
    ) -> ObservedStore {
        ObservedStore { inner, commits }
    }
}

#[async_trait]
impl Store for ObservedStore {
    async fn read(
        &self,
        resource_type: &str,
        id: &str,
    ) -> Result<Option<Arc<StoredVersion>>, StoreError> {
        self.inner.read(resource_type, id).await
    }
    async fn vread(
        &self,
        resource_type: &str,
        id: &str,
        version: u64,
    ) -> Result<Option<Arc<StoredVersion>>, StoreError> {
        self.inner.vread(resource_type, id, version).await
    }
    async fn history(&self, q: HistoryQuery) -> Result<HistoryPage, StoreError> {
        self.inner.history(q).await
    }
    async fn transact(&self, work: TxWork) -> Result<TxOutcome, TxAbort> {
        let out = self.inner.transact(work).await?;
        if !out.written.is_empty() {
            // The matcher may be gone at shutdown; the cursor makes the next start catch up.
            let _ = self.commits.send(
                out.written
                    .iter()
                    .map(|v| super::Committed::of(v))
                    .collect(),
            );
        }
        Ok(out)
    }
    async fn query_keys(&self, query: SqlQuery) -> Result<Vec<ResourceKey>, StoreError> {
        self.inner.query_keys(query).await
    }
    async fn query_count(&self, query: SqlQuery) -> Result<u64, StoreError> {
        self.inner.query_count(query).await
    }
    fn dialect(&self) -> &'static dyn crate::search::sql::Dialect {
        self.inner.dialect()
    }
    fn stats(&self) -> StoreStats {
        self.inner.stats()
    }
    async fn flush(&self) -> Result<(), StoreError> {
        self.inner.flush().await
    }
}
