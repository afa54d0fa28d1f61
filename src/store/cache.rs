//! A moka cache in front of any [`Store`] for reads by id and by version.
//!
//! - **Write-through**: after a successful [`Store::transact`], every written version goes into the cache,
//!   so a read right after a write never goes back to the database and never sees an older version.
//! - **Keys**: `("Type/id", 0)` holds the latest version (tombstones included), `("Type/id", n)` holds
//!   version `n`. Versions start at 1, so 0 is free to mean "latest". Resource types never contain `/`,
//!   so the joined string is unambiguous.
//! - **Capacity** counts entries (latest and version entries alike), not bytes: FHIR resources in a
//!   gateway are mostly a few KB, and an entry count is predictable to configure.
//! - **No stale fills**: a read that missed fetches from the database and then fills the cache. If a write
//!   committed in between, the fetched version is old. Two guards stop it from replacing newer data:
//!   (1) an entry is never replaced by one with a lower `seq`; (2) a write bumps an epoch counter (one per
//!   key shard) *before* its own cache update, and a fill is dropped if the epoch of its shard moved since
//!   the fill's fetch began. Guard (2) covers the case (1) cannot: the newer entry was already evicted.
//!   Both checks run inside moka's per-key `and_compute_with`, which serialises them with the write's
//!   own update of the same key.
//! - History is not cached: it is paged, pinned by `seq`, and rarely repeated.

use super::*;
use moka::ops::compute::Op;
use moka::sync::Cache;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};

/// Shards of the fill epoch: more shards, fewer fills dropped because of writes to unrelated keys.
const EPOCH_SHARDS: usize = 1024;

/// Version number used in keys of the "latest version" entries.
const LATEST: u64 = 0;

type Key = (String, u64);

/// A [`Store`] that serves reads and vreads from memory when it can.
pub struct CachedStore {
    inner: Arc<dyn Store>,
    cache: Cache<Key, Arc<StoredVersion>>,
    epochs: Box<[AtomicU64]>,
    hasher: RandomState,
    hits: AtomicU64,
    misses: AtomicU64,
}

fn path(resource_type: &str, id: &str) -> String {
    let mut s = String::with_capacity(resource_type.len() + 1 + id.len());
    s.push_str(resource_type);
    s.push('/');
    s.push_str(id);
    s
}

impl CachedStore {
    /// Wraps `inner` with a cache of at most `capacity` entries.
    pub fn new(inner: Arc<dyn Store>, capacity: u64) -> CachedStore {
        CachedStore {
            inner,
            cache: Cache::builder().max_capacity(capacity).build(),
            epochs: (0..EPOCH_SHARDS).map(|_| AtomicU64::new(0)).collect(),
            hasher: RandomState::new(),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// The epoch counter guarding fills of the resource at `path` (latest and all its versions).
    fn epoch(&self, path: &str) -> &AtomicU64 {
        let shard = (self.hasher.hash_one(path) % EPOCH_SHARDS as u64) as usize;
        &self.epochs[shard]
    }

    fn lookup(&self, key: &Key) -> Option<Arc<StoredVersion>> {
        let hit = self.cache.get(key);
        let counter = if hit.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        hit
    }

    /// Fills the cache with `v` fetched from the inner store after reading `epoch_before`.
    fn fill(&self, v: &Arc<StoredVersion>, epoch_before: u64, also_latest: bool) {
        let p = path(&v.resource_type, &v.id);
        let epoch = self.epoch(&p);
        // A version entry is immutable once committed, so a fetched version is never stale.
        self.cache.insert((p.clone(), v.version), v.clone());
        if also_latest {
            self.cache.entry((p, LATEST)).and_compute_with(|cur| {
                if epoch.load(Ordering::SeqCst) != epoch_before {
                    return Op::Nop;
                }
                match cur {
                    Some(e) if e.value().seq >= v.seq => Op::Nop,
                    _ => Op::Put(v.clone()),
                }
            });
        }
    }

    /// Write-through of a committed version.
    fn store_written(&self, v: &Arc<StoredVersion>) {
        let p = path(&v.resource_type, &v.id);
        // Bump first: any fill that fetched before this commit and has not yet run its compute will see
        // the new epoch and back off, even if our entry below gets evicted before it runs.
        self.epoch(&p).fetch_add(1, Ordering::SeqCst);
        self.cache.insert((p.clone(), v.version), v.clone());
        self.cache
            .entry((p, LATEST))
            .and_compute_with(|cur| match cur {
                Some(e) if e.value().seq >= v.seq => Op::Nop,
                _ => Op::Put(v.clone()),
            });
    }

    #[cfg(test)]
    fn cached_latest(&self, resource_type: &str, id: &str) -> Option<Arc<StoredVersion>> {
        self.cache.get(&(path(resource_type, id), LATEST))
    }
}

#[async_trait]
impl Store for CachedStore {
    async fn read(
        &self,
        resource_type: &str,
        id: &str,
    ) -> Result<Option<Arc<StoredVersion>>, StoreError> {
        let key = (path(resource_type, id), LATEST);
        if let Some(v) = self.lookup(&key) {
            return Ok(Some(v));
        }
        let epoch_before = self.epoch(&key.0).load(Ordering::SeqCst);
        let found = self.inner.read(resource_type, id).await?;
        // Absence is not cached: a create would have to invalidate it, and misses on unknown ids are rare.
        if let Some(v) = &found {
            self.fill(v, epoch_before, true);
        }
        Ok(found)
    }

    async fn vread(
        &self,
        resource_type: &str,
        id: &str,
        version: u64,
    ) -> Result<Option<Arc<StoredVersion>>, StoreError> {
        if version == LATEST {
            // Not a real version; never let it alias the "latest" entry.
            return self.inner.vread(resource_type, id, version).await;
        }
        let key = (path(resource_type, id), version);
        if let Some(v) = self.lookup(&key) {
            return Ok(Some(v));
        }
        let epoch_before = self.epoch(&key.0).load(Ordering::SeqCst);
        let found = self.inner.vread(resource_type, id, version).await?;
        if let Some(v) = &found {
            self.fill(v, epoch_before, false);
        }
        Ok(found)
    }

    async fn history(&self, q: HistoryQuery) -> Result<HistoryPage, StoreError> {
        self.inner.history(q).await
    }

    async fn transact(&self, work: TxWork) -> Result<TxOutcome, TxAbort> {
        let out = self.inner.transact(work).await?;
        for v in &out.written {
            self.store_written(v);
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
        let mut s = self.inner.stats();
        s.cache_hits += self.hits.load(Ordering::Relaxed);
        s.cache_misses += self.misses.load(Ordering::Relaxed);
        s
    }

    async fn flush(&self) -> Result<(), StoreError> {
        self.inner.flush().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite::SqliteOptions;

    fn version(id: &str, v: u64, method: WriteMethod, body: Option<&str>) -> NewVersion {
        NewVersion {
            resource_type: "Patient".into(),
            id: id.into(),
            version: v,
            method,
            body: body.map(|b| Bytes::from(b.to_owned())),
            index: IndexRows::default(),
        }
    }

    async fn commit(store: &dyn Store, v: NewVersion) -> Arc<StoredVersion> {
        let out = store
            .transact(Box::new(move |tx: &mut dyn TxContext| {
                tx.put(v)?;
                Ok(Box::new(()) as Box<dyn Any + Send>)
            }))
            .await;
        match out {
            Ok(o) => o.written[0].clone(),
            Err(_) => panic!("transact failed"),
        }
    }

    fn open(dir: &std::path::Path) -> (Arc<SqliteStore>, CachedStore) {
        let inner = Arc::new(SqliteStore::open(dir, SqliteOptions::default()).expect("open"));
        let cached = CachedStore::new(inner.clone(), 1000);
        (inner, cached)
    }

    #[tokio::test]
    async fn counts_hits_and_misses_and_merges_inner_stats() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (inner, store) = open(dir.path());
        // Written through the inner store directly: the cache does not know it.
        commit(
            inner.as_ref(),
            version("a", 1, WriteMethod::Create, Some("{}")),
        )
        .await;
        assert!(store.read("Patient", "a").await.expect("read").is_some()); // miss, fills
        assert!(store.read("Patient", "a").await.expect("read").is_some()); // hit
        assert!(
            store
                .vread("Patient", "a", 1)
                .await
                .expect("vread")
                .is_some()
        ); // hit: filled by the read
        assert!(store.read("Patient", "nope").await.expect("read").is_none()); // miss, not cached
        assert!(store.read("Patient", "nope").await.expect("read").is_none()); // miss again
        assert!(
            store
                .vread("Patient", "a", 2)
                .await
                .expect("vread")
                .is_none()
        ); // miss
        let s = store.stats();
        assert_eq!((s.cache_hits, s.cache_misses), (2, 4));
        assert_eq!(s.write_batches, 1);
        assert_eq!(s.write_jobs, 1);
    }

    #[tokio::test]
    async fn writes_go_through_and_reads_never_see_an_older_version() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_inner, store) = open(dir.path());
        commit(
            &store,
            version("a", 1, WriteMethod::Create, Some("{\"v\":1}")),
        )
        .await;
        assert_eq!(
            store
                .read("Patient", "a")
                .await
                .expect("read")
                .expect("a")
                .version,
            1
        );
        for v in 2..=5 {
            commit(&store, version("a", v, WriteMethod::Update, Some("{}"))).await;
            assert_eq!(
                store
                    .read("Patient", "a")
                    .await
                    .expect("read")
                    .expect("a")
                    .version,
                v
            );
        }
        commit(&store, version("a", 6, WriteMethod::Delete, None)).await;
        assert!(
            store
                .read("Patient", "a")
                .await
                .expect("read")
                .expect("a")
                .is_deleted()
        );
        assert_eq!(
            store
                .vread("Patient", "a", 1)
                .await
                .expect("vread")
                .expect("v1")
                .body
                .as_deref(),
            Some(&b"{\"v\":1}"[..])
        );
        // Every read above was served from the write-through entries.
        let s = store.stats();
        assert_eq!((s.cache_hits, s.cache_misses), (7, 0));
    }

    #[tokio::test]
    async fn an_aborted_transaction_leaves_the_cache_alone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_inner, store) = open(dir.path());
        commit(&store, version("a", 1, WriteMethod::Create, Some("{}"))).await;
        let r = store
            .transact(Box::new(|tx: &mut dyn TxContext| {
                tx.put(version("a", 2, WriteMethod::Update, Some("{}")))?;
                Err(TxAbort::Caller(Box::new(())))
            }))
            .await;
        assert!(r.is_err());
        assert_eq!(
            store
                .read("Patient", "a")
                .await
                .expect("read")
                .expect("a")
                .version,
            1
        );
        assert!(
            store
                .vread("Patient", "a", 2)
                .await
                .expect("vread")
                .is_none()
        );
    }

    #[tokio::test]
    async fn a_late_fill_with_an_older_version_is_dropped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (inner, store) = open(dir.path());
        let v1 = commit(&store, version("a", 1, WriteMethod::Create, Some("{}"))).await;
        // A reader fetched v1 and is about to fill...
        let epoch_before = store.epoch("Patient/a").load(Ordering::SeqCst);
        let v2 = commit(&store, version("a", 2, WriteMethod::Update, Some("{}"))).await;
        // ...after v2 was written through: lower seq, refused.
        store.fill(&v1, epoch_before, true);
        assert_eq!(
            store.cached_latest("Patient", "a").expect("cached").version,
            2
        );

        // Same race, but the newer entry was evicted before the late fill: the epoch guard refuses it.
        store.cache.invalidate(&("Patient/a".to_string(), LATEST));
        store.fill(&v1, epoch_before, true);
        assert!(store.cached_latest("Patient", "a").is_none());
        assert_eq!(
            store
                .read("Patient", "a")
                .await
                .expect("read")
                .expect("a")
                .version,
            2
        );

        // A fill with no write in between is kept.
        store.cache.invalidate(&("Patient/a".to_string(), LATEST));
        let epoch_now = store.epoch("Patient/a").load(Ordering::SeqCst);
        store.fill(&v2, epoch_now, true);
        assert_eq!(
            store.cached_latest("Patient", "a").expect("cached").seq,
            v2.seq
        );
        drop(inner);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_readers_and_writers_end_on_the_latest_version() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_inner, store) = open(dir.path());
        let store = Arc::new(store);
        commit(
            store.as_ref(),
            version("a", 1, WriteMethod::Create, Some("{}")),
        )
        .await;
        let readers: Vec<_> = (0..4)
            .map(|_| {
                let s = store.clone();
                tokio::spawn(async move {
                    let mut last = 0;
                    for _ in 0..200 {
                        let v = s
                            .read("Patient", "a")
                            .await
                            .expect("read")
                            .expect("a")
                            .version;
                        assert!(v >= last, "went back from {last} to {v}");
                        last = v;
                    }
                })
            })
            .collect();
        for v in 2..=50 {
            commit(
                store.as_ref(),
                version("a", v, WriteMethod::Update, Some("{}")),
            )
            .await;
        }
        for r in readers {
            r.await.expect("reader");
        }
        assert_eq!(
            store
                .read("Patient", "a")
                .await
                .expect("read")
                .expect("a")
                .version,
            50
        );
    }
}
