//! Persistence behind one narrow, async interface.
//!
//! [`Store`] is what every caller sees: reads by id and version, history, and [`Store::transact`], which
//! runs a unit of work atomically against a [`TxContext`]. The unit of work decides (it resolves
//! conditions, assigns versions, stamps `meta`); the store only keeps versions and index rows. This
//! keeps SQL out of the FHIR logic, so a PostgreSQL store can follow without changing callers.
//!
//! Invariants every implementation keeps:
//! - versions of one resource are 1, 2, 3... with no gaps; a delete is a version with no body (tombstone);
//! - all writes of one `transact` become visible together or not at all;
//! - index rows always describe the current version of each resource, written in the same transaction.

pub mod cache;
pub mod sqlite;

use async_trait::async_trait;
use bytes::Bytes;
use std::any::Any;
use std::sync::Arc;

pub use cache::CachedStore;
pub use sqlite::SqliteStore;

/// One stored version of a resource (or a tombstone).
#[derive(Debug, Clone, PartialEq)]
pub struct StoredVersion {
    pub resource_type: String,
    pub id: String,
    pub version: u64,
    /// Server time of the write, milliseconds since the Unix epoch (UTC).
    pub last_updated_ms: i64,
    /// The interaction that produced this version.
    pub method: WriteMethod,
    /// The resource JSON exactly as served (with `meta.versionId`/`meta.lastUpdated`); `None` for a delete.
    pub body: Option<Bytes>,
    /// Position in the store-wide history (monotonic).
    pub seq: i64,
}

impl StoredVersion {
    /// A delete tombstone.
    pub fn is_deleted(&self) -> bool {
        self.body.is_none()
    }
}

/// How a version came to be; history entries report it as `request.method`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteMethod {
    Create,
    Update,
    Delete,
}

impl WriteMethod {
    /// Stable code used in storage.
    pub fn code(self) -> &'static str {
        match self {
            WriteMethod::Create => "POST",
            WriteMethod::Update => "PUT",
            WriteMethod::Delete => "DELETE",
        }
    }
    /// Inverse of [`WriteMethod::code`].
    pub fn from_code(c: &str) -> Option<Self> {
        match c {
            "POST" => Some(WriteMethod::Create),
            "PUT" => Some(WriteMethod::Update),
            "DELETE" => Some(WriteMethod::Delete),
            _ => None,
        }
    }
}

/// The current head of a resource as seen inside a transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    pub version: u64,
    pub deleted: bool,
}

/// The search index rows of one resource version, one list per parameter type (see `search::extract`).
///
/// Every row names its search parameter by code; rows of one resource replace its previous rows
/// wholesale on every write (a delete leaves none).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct IndexRows {
    pub strings: Vec<StringRow>,
    pub tokens: Vec<TokenRow>,
    pub references: Vec<ReferenceRow>,
    pub dates: Vec<DateRow>,
    pub numbers: Vec<NumberRow>,
    pub quantities: Vec<QuantityRow>,
    pub uris: Vec<UriRow>,
    /// The rows of each contained resource, kept under keys of their own (see [`contained_key`]).
    pub contained: Vec<ContainedRows>,
}

/// The index rows of one contained resource (`_contained=true|both` searches them).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ContainedRows {
    pub resource_type: String,
    /// The id inside its container (`#m1` is `m1`).
    pub id: String,
    pub rows: IndexRows,
}

/// The token parameter of a contained resource's marker row: system the container's type, code
/// its id. Every contained resource has one, so the contained resources of a type are a scan of
/// the token lookup index.
pub const CONTAINER_MARK: &str = "_container";

/// The token parameter of a container's marker rows, one per contained resource: system its
/// type, code its id (what a rewrite of the container must remove).
pub const CONTAINED_MARK: &str = "_contained";

/// The key a contained resource's index rows are stored under: its own type, and the id
/// `Container/id#contained-id`, which can never be a resource id (ids have no `/` or `#`), so
/// a search of top-level resources never meets these rows.
pub fn contained_key(container_type: &str, container_id: &str, id: &str) -> String {
    format!("{container_type}/{container_id}#{id}")
}

/// The container type, container id and contained id of a [`contained_key`].
pub fn split_contained_key(key: &str) -> Option<(&str, &str, &str)> {
    let (container, id) = key.split_once('#')?;
    let (ty, container_id) = container.split_once('/')?;
    Some((ty, container_id, id))
}

impl IndexRows {
    /// Total number of rows of the resource itself (not counting contained resources).
    pub fn len(&self) -> usize {
        self.strings.len()
            + self.tokens.len()
            + self.references.len()
            + self.dates.len()
            + self.numbers.len()
            + self.quantities.len()
            + self.uris.len()
    }
    /// No rows at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A string index row: the normalised form (case and accents folded) and the exact text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StringRow {
    pub param: String,
    pub norm: String,
    pub exact: String,
}

/// A token index row (`system|code`, with the normalised display/text for `:text`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRow {
    /// Search parameter code, e.g. `identifier`.
    pub param: String,
    pub system: Option<String>,
    /// Empty for a text-only row (a CodeableConcept with `text` and no coding).
    pub code: String,
    /// Normalised `display`/`text`, if any.
    pub text: Option<String>,
}

/// A reference index row: the reference as written and, when it names one, the target's type and id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReferenceRow {
    pub param: String,
    /// `Patient/1`, an absolute URL or a canonical, as stored.
    pub url: String,
    pub target_type: Option<String>,
    pub target_id: Option<String>,
}

/// A date index row: the instant range `[low, high]` in ms since the epoch, both inclusive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DateRow {
    pub param: String,
    pub low: i64,
    pub high: i64,
}

/// A number index row.
#[derive(Debug, Clone, PartialEq)]
pub struct NumberRow {
    pub param: String,
    pub value: f64,
}

/// A quantity index row: the value with its unit as given, and what a search naming a UCUM unit
/// compares (`search::units::of_stored`): the value in canonical UCUM units and that unit, or the
/// value and code as given when there is no canonical form.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantityRow {
    pub param: String,
    pub value: f64,
    pub system: Option<String>,
    pub code: Option<String>,
    pub unit: Option<String>,
    pub canonical_value: f64,
    pub canonical_code: String,
}

/// A uri index row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UriRow {
    pub param: String,
    pub uri: String,
}

/// One resource found by a search: type and id.
pub type ResourceKey = (String, String);

/// A statement of the search engine, with its arguments (see `search::sql`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SqlQuery {
    pub sql: String,
    pub args: Vec<SqlArg>,
}

/// An argument of a [`SqlQuery`].
#[derive(Debug, Clone, PartialEq)]
pub enum SqlArg {
    Text(String),
    Int(i64),
    Real(f64),
}

/// A new version to write inside a transaction.
#[derive(Debug, Clone)]
pub struct NewVersion {
    pub resource_type: String,
    pub id: String,
    /// Must be the current head's version + 1 (or 1 for a new resource); the store rejects anything else.
    pub version: u64,
    pub method: WriteMethod,
    /// Serialised resource, `None` for a delete.
    pub body: Option<Bytes>,
    /// Index rows of this version (ignored for deletes: a tombstone has none).
    pub index: IndexRows,
}

/// Which history to list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HistoryScope {
    System,
    Type(String),
    Instance(String, String),
}

/// A history query: newest first, `count` entries after skipping `offset`.
#[derive(Debug, Clone)]
pub struct HistoryQuery {
    pub scope: HistoryScope,
    /// Only versions with `last_updated_ms >= since_ms`.
    pub since_ms: Option<i64>,
    /// Only versions with `seq <= at_seq`: pins later pages to the first page's view.
    pub at_seq: Option<i64>,
    pub count: usize,
    pub offset: usize,
}

/// A page of history.
#[derive(Debug, Clone)]
pub struct HistoryPage {
    /// Number of versions matching the query (all pages).
    pub total: u64,
    /// Highest `seq` the query saw; pass it back as `at_seq` for the next page.
    pub at_seq: i64,
    pub entries: Vec<Arc<StoredVersion>>,
}

/// Counters for `/metrics`.
#[derive(Debug, Clone, Default)]
pub struct StoreStats {
    /// Group commits done.
    pub write_batches: u64,
    /// Units of work committed or rolled back.
    pub write_jobs: u64,
    /// Histogram of jobs per group commit: (upper bound, cumulative count), Prometheus style; last is +Inf (u64::MAX).
    pub batch_size_buckets: Vec<(u64, u64)>,
    pub cache_hits: u64,
    pub cache_misses: u64,
}

/// Failure of the storage layer (never the client's fault unless it is a `Conflict`).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("version conflict on {0}: expected version {1}")]
    Conflict(String, u64),
    #[error("storage failure: {0}")]
    Backend(String),
    #[error("store is shutting down")]
    Closed,
    /// A search statement ran past the configured cost bound (SQLite steps) and was stopped.
    #[error("query exceeds the cost bound of {0} steps")]
    TooCostly(u64),
}

/// The inside of one atomic unit of work. Everything written through it commits together or not at all.
pub trait TxContext {
    /// The transaction's timestamp in ms since the epoch; the same for every write in it.
    fn now_ms(&self) -> i64;
    /// The current head of a resource, if it ever existed.
    fn head(&mut self, resource_type: &str, id: &str) -> Result<Option<Head>, StoreError>;
    /// The SQL dialect of [`TxContext::query_keys`].
    fn dialect(&self) -> &'static dyn crate::search::sql::Dialect;
    /// Runs a search statement (from `search::sql`, in this store's dialect) inside the transaction.
    fn query_keys(&mut self, query: &SqlQuery) -> Result<Vec<ResourceKey>, StoreError>;
    /// Replaces the index rows of a live resource (for `$reindex`; no new version).
    fn replace_index(
        &mut self,
        resource_type: &str,
        id: &str,
        rows: &IndexRows,
    ) -> Result<(), StoreError>;
    /// The current body of a live resource (for PATCH and conditional reads inside a transaction).
    fn current_body(&mut self, resource_type: &str, id: &str) -> Result<Option<Bytes>, StoreError>;
    /// Writes a version; fails with `Conflict` when `version` is not head + 1.
    fn put(&mut self, v: NewVersion) -> Result<Arc<StoredVersion>, StoreError>;
}

/// A unit of work: runs on the store's writer, returns a value or aborts (rolling back its writes).
pub type TxWork =
    Box<dyn FnOnce(&mut dyn TxContext) -> Result<Box<dyn Any + Send>, TxAbort> + Send>;

/// Why a unit of work gave up; carried back to the caller untouched.
pub enum TxAbort {
    /// A store failure inside the work.
    Store(StoreError),
    /// The caller's own error (a FHIR rule, a failed precondition), boxed.
    Caller(Box<dyn Any + Send>),
}

impl From<StoreError> for TxAbort {
    fn from(e: StoreError) -> Self {
        TxAbort::Store(e)
    }
}

/// What a committed unit of work produced.
pub struct TxOutcome {
    pub value: Box<dyn Any + Send>,
    /// Every version written, in write order.
    pub written: Vec<Arc<StoredVersion>>,
}

/// The persistence interface.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// The latest version of a resource, including a tombstone if the latest is a delete.
    async fn read(
        &self,
        resource_type: &str,
        id: &str,
    ) -> Result<Option<Arc<StoredVersion>>, StoreError>;
    /// One version.
    async fn vread(
        &self,
        resource_type: &str,
        id: &str,
        version: u64,
    ) -> Result<Option<Arc<StoredVersion>>, StoreError>;
    /// History, newest first.
    async fn history(&self, q: HistoryQuery) -> Result<HistoryPage, StoreError>;
    /// Runs `work` atomically. On `Err(TxAbort)` nothing it wrote is kept.
    async fn transact(&self, work: TxWork) -> Result<TxOutcome, TxAbort>;
    /// Runs a search statement (from `search::sql`, in [`Store::dialect`]) on a reader.
    async fn query_keys(&self, query: SqlQuery) -> Result<Vec<ResourceKey>, StoreError>;
    /// Runs a `SELECT COUNT(*)` statement on a reader.
    async fn query_count(&self, query: SqlQuery) -> Result<u64, StoreError>;
    /// The SQL dialect the search engine must generate for this store.
    fn dialect(&self) -> &'static dyn crate::search::sql::Dialect;
    /// Counters for `/metrics`.
    fn stats(&self) -> StoreStats;
    /// Waits until every accepted write is durable; used on shutdown.
    async fn flush(&self) -> Result<(), StoreError>;
}
