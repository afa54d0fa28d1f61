//! R4 rest-hook Subscriptions: a `Subscription` resource with a search `criteria`
//! (`Condition?category=...`); every committed version of a resource that matches it is POSTed to
//! `channel.endpoint` (with `channel.payload` as the body type and `channel.header` headers), from
//! a persistent queue, with retry and exponential backoff; `Subscription.status` follows
//! (`requested` -> `active`; `error` with `Subscription.error` while deliveries fail, `active`
//! again after one succeeds).
//!
//! Endpoints are `http://` or `https://`. TLS is the system OpenSSL (reqwest's `native-tls`):
//! the server certificate and host name are always verified, against the system's trust store
//! plus the CA certificates of `subscription-ca-file` (a regional platform's private CA); a
//! failed handshake is a failed delivery like any other, its reason (OpenSSL's verify error) in
//! `Subscription.error`.
//!
//! Flow: [`observe::ObservedStore`] reports each commit (after COMMIT) -> the matcher evaluates
//! the criteria of the subscriptions on that type as a search restricted to the written id (the
//! same search engine as `GET [type]?criteria`) -> matches go into [`queue::Queue`] together with
//! the cursor (the highest store `seq` matched) -> the deliverer POSTs them in order per
//! subscription.
//!
//! Invariants: nothing is delivered before it is committed; a queued delivery survives a restart
//! and is retried until it succeeds (never dropped; the status says it is failing); at start the
//! matcher catches up on every version committed after the cursor (writes made while the server
//! was down, e.g. by `huitong ingest`), so a crash between a commit and its enqueue loses nothing;
//! deliveries of one subscription leave in commit order (a failed one blocks the ones behind it).
//! Matching runs against the resource's current index rows: a version superseded before the
//! matcher saw it is judged by its successor (documented, rare: the matcher runs right after
//! the commit).

pub mod observe;
pub mod queue;

use crate::rest::AppState;
use crate::store::{HistoryQuery, HistoryScope, StoredVersion};
use crate::transaction::{self, Entry, Method, Scope, Target};
use queue::{Delivery, NewDelivery, Queue};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::{Notify, mpsc, watch};

/// What the matcher needs of a committed version (the body stays in the store).
#[derive(Debug, Clone)]
pub struct Committed {
    pub resource_type: String,
    pub id: String,
    pub version: u64,
    pub seq: i64,
    pub last_updated_ms: i64,
    pub deleted: bool,
}

impl Committed {
    /// From a stored version.
    pub fn of(v: &StoredVersion) -> Committed {
        Committed {
            resource_type: v.resource_type.clone(),
            id: v.id.clone(),
            version: v.version,
            seq: v.seq,
            last_updated_ms: v.last_updated_ms,
            deleted: v.is_deleted(),
        }
    }
}

/// First retry after this, doubling per attempt up to [`BACKOFF_MAX_MS`].
const BACKOFF_BASE_MS: i64 = 200;
const BACKOFF_MAX_MS: i64 = 30_000;
/// Upper bounds of the notification latency histogram, in seconds.
const LATENCY_BOUNDS: [f64; 10] = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 30.0];

/// One subscription in force.
#[derive(Debug, Clone)]
struct Sub {
    id: String,
    /// The criteria's resource type and query.
    resource_type: String,
    query: String,
    endpoint: String,
    payload: Option<String>,
    headers: Vec<(String, String)>,
    status: String,
}

#[derive(Default)]
struct Counters {
    ok: AtomicU64,
    failed: AtomicU64,
    depth: AtomicU64,
    pruned: AtomicU64,
    latency: [AtomicU64; LATENCY_BOUNDS.len() + 1],
    latency_sum_ms: AtomicU64,
    last_latency_ms: RwLock<HashMap<String, i64>>,
}

struct Engine {
    state: AppState,
    queue: Queue,
    subs: RwLock<HashMap<String, Sub>>,
    wake: Notify,
    http: reqwest::Client,
    counters: Counters,
}

/// The subscription side of a running gateway.
pub struct Subscriptions {
    engine: Option<Arc<Engine>>,
    stop: Option<watch::Sender<bool>>,
    tasks: tokio::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Subscriptions {
    /// No engine: matching writes are not delivered (CLI tools, tests of other parts).
    pub fn inert() -> Subscriptions {
        Subscriptions {
            engine: None,
            stop: None,
            tasks: tokio::sync::Mutex::new(Vec::new()),
        }
    }

    /// Opens the queue, loads the subscriptions, catches up from the cursor and starts the
    /// matcher and the deliverer. `commits` is the feed of the [`observe::ObservedStore`] that
    /// `state.store` is.
    pub async fn start(
        state: AppState,
        commits: mpsc::UnboundedReceiver<Vec<Committed>>,
    ) -> Result<Subscriptions, String> {
        let queue = Queue::open(&state.settings.data_dir)
            .map_err(|e| format!("subscription queue: {e}"))?;
        let mut http = reqwest::Client::builder().timeout(Duration::from_secs(10));
        if let Some(p) = &state.settings.subscription_ca_file {
            let mut extra = Vec::new();
            for der in crate::config::subscription_ca_certificates(p)? {
                extra.push(
                    reqwest::Certificate::from_der(&der)
                        .map_err(|e| format!("subscription-ca-file: {}", error_chain(&e)))?,
                );
            }
            // Merged with the system's roots, not instead of them: public endpoints still verify.
            http = http.tls_certs_merge(extra);
        }
        let http = http.build().map_err(|e| error_chain(&e))?;
        let engine = Arc::new(Engine {
            state,
            queue,
            subs: RwLock::new(HashMap::new()),
            wake: Notify::new(),
            http,
            counters: Counters::default(),
        });
        engine.load().await?;
        let (stop, stopped) = watch::channel(false);
        let m = tokio::spawn(engine.clone().matcher(commits, stopped.clone()));
        let d = tokio::spawn(engine.clone().deliverer(stopped));
        Ok(Subscriptions {
            engine: Some(engine),
            stop: Some(stop),
            tasks: tokio::sync::Mutex::new(vec![m, d]),
        })
    }

    /// Stops the matcher (after it has queued what it already received) and the deliverer.
    pub async fn stop(&self) {
        if let Some(s) = &self.stop {
            let _ = s.send(true);
        }
        if let Some(e) = &self.engine {
            e.wake.notify_one();
        }
        let tasks = std::mem::take(&mut *self.tasks.lock().await);
        for t in tasks {
            let _ = t.await;
        }
    }

    /// Latencies (ms, commit to acknowledged POST) of a subscription's finished deliveries.
    pub async fn latencies(&self, subscription: &str) -> Vec<i64> {
        match &self.engine {
            Some(e) => e.queue.latencies(subscription).await.unwrap_or_default(),
            None => Vec::new(),
        }
    }

    /// The `/metrics` lines of subscriptions.
    pub fn render_metrics(&self) -> String {
        let Some(e) = &self.engine else {
            return String::new();
        };
        let c = &e.counters;
        let mut out = String::new();
        out.push_str("# HELP huitong_subscription_deliveries_total Rest-hook delivery attempts by outcome.\n");
        out.push_str("# TYPE huitong_subscription_deliveries_total counter\n");
        let _ = writeln!(
            out,
            "huitong_subscription_deliveries_total{{outcome=\"ok\"}} {}",
            c.ok.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "huitong_subscription_deliveries_total{{outcome=\"failed\"}} {}",
            c.failed.load(Ordering::Relaxed)
        );
        out.push_str(
            "# HELP huitong_subscription_queue_depth Deliveries waiting in the persistent queue.\n",
        );
        out.push_str("# TYPE huitong_subscription_queue_depth gauge\n");
        let _ = writeln!(
            out,
            "huitong_subscription_queue_depth {}",
            c.depth.load(Ordering::Relaxed)
        );
        out.push_str("# HELP huitong_subscription_pruned_total Delivered notifications deleted from the queue after the retention.\n");
        out.push_str("# TYPE huitong_subscription_pruned_total counter\n");
        let _ = writeln!(
            out,
            "huitong_subscription_pruned_total {}",
            c.pruned.load(Ordering::Relaxed)
        );
        out.push_str("# HELP huitong_subscription_notification_latency_seconds Commit to acknowledged delivery.\n");
        out.push_str("# TYPE huitong_subscription_notification_latency_seconds histogram\n");
        let mut cum = 0;
        for (i, b) in LATENCY_BOUNDS.iter().enumerate() {
            cum += c.latency[i].load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "huitong_subscription_notification_latency_seconds_bucket{{le=\"{b}\"}} {cum}"
            );
        }
        cum += c.latency[LATENCY_BOUNDS.len()].load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "huitong_subscription_notification_latency_seconds_bucket{{le=\"+Inf\"}} {cum}"
        );
        let _ = writeln!(
            out,
            "huitong_subscription_notification_latency_seconds_sum {}",
            c.latency_sum_ms.load(Ordering::Relaxed) as f64 / 1000.0
        );
        let _ = writeln!(
            out,
            "huitong_subscription_notification_latency_seconds_count {cum}"
        );
        out.push_str("# HELP huitong_subscription_last_latency_ms Latency of the last delivery, per subscription.\n");
        out.push_str("# TYPE huitong_subscription_last_latency_ms gauge\n");
        if let Ok(m) = c.last_latency_ms.read() {
            let mut keys: Vec<_> = m.iter().collect();
            keys.sort();
            for (k, v) in keys {
                let _ = writeln!(
                    out,
                    "huitong_subscription_last_latency_ms{{subscription=\"{k}\"}} {v}"
                );
            }
        }
        out
    }
}

/// Parses a Subscription resource into what the engine needs, or the reason it cannot run.
fn parse_sub(
    id: &str,
    r: &Value,
    catalogue: &crate::search::Catalogue,
) -> Result<Option<Sub>, String> {
    let status = r
        .get("status")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    if !matches!(status.as_str(), "requested" | "active" | "error") {
        return Ok(None);
    }
    let channel = r.get("channel").cloned().unwrap_or(Value::Null);
    let ty = channel
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if ty != "rest-hook" {
        return Err(format!(
            "channel type '{ty}' is not supported (rest-hook only)"
        ));
    }
    let endpoint = channel
        .get("endpoint")
        .and_then(Value::as_str)
        .ok_or("rest-hook needs channel.endpoint")?
        .to_string();
    if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
        return Err(format!(
            "endpoint '{endpoint}': only http:// and https:// endpoints are supported"
        ));
    }
    let criteria = r
        .get("criteria")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let (resource_type, query) = criteria.split_once('?').unwrap_or((criteria, ""));
    if !crate::definitions::Definitions::core().is_resource_type(resource_type) {
        return Err(format!(
            "criteria '{criteria}': '{resource_type}' is not a resource type"
        ));
    }
    // Checked now, so a bad criteria is an error status, not a silent non-match.
    let check = if query.is_empty() {
        "_id:missing=false".to_string()
    } else {
        query.to_string()
    };
    crate::search::conditional_plan(catalogue, resource_type, &check).map_err(|e| {
        format!(
            "criteria '{criteria}': {}",
            e.issues
                .first()
                .map(|i| i.diagnostics.clone())
                .unwrap_or_default()
        )
    })?;
    let headers = channel
        .get("header")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .filter_map(|h| h.split_once(':'))
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                .collect()
        })
        .unwrap_or_default();
    Ok(Some(Sub {
        id: id.to_string(),
        resource_type: resource_type.to_string(),
        query: query.to_string(),
        endpoint,
        payload: channel
            .get("payload")
            .and_then(Value::as_str)
            .map(str::to_string),
        headers,
        status,
    }))
}

impl Engine {
    /// Loads the subscriptions in force and catches up on what was committed after the cursor.
    async fn load(self: &Arc<Self>) -> Result<(), String> {
        let st = &self.state;
        let plan = crate::search::conditional_plan(
            &st.search,
            "Subscription",
            "status=requested,active,error",
        )
        .map_err(|e| format!("{e:?}"))?;
        let keys = st
            .store
            .query_keys(crate::search::sql::all(&plan, st.store.dialect()))
            .await
            .map_err(|e| e.to_string())?;
        for (_, id) in keys {
            self.refresh(&id).await;
        }
        let head = st
            .store
            .history(HistoryQuery {
                scope: HistoryScope::System,
                since_ms: None,
                at_seq: None,
                count: 1,
                offset: 0,
            })
            .await
            .map_err(|e| e.to_string())?;
        let top = head.entries.first().map(|v| v.seq).unwrap_or(0);
        match self.queue.cursor().await? {
            // A fresh queue starts at the present: subscriptions are about what happens next.
            None => self.queue.enqueue(Vec::new(), top).await?,
            Some(c) if c < top => {
                let mut missed = Vec::new();
                let mut offset = 0;
                'pages: loop {
                    let page = st
                        .store
                        .history(HistoryQuery {
                            scope: HistoryScope::System,
                            since_ms: None,
                            at_seq: Some(top),
                            count: 500,
                            offset,
                        })
                        .await
                        .map_err(|e| e.to_string())?;
                    if page.entries.is_empty() {
                        break;
                    }
                    offset += page.entries.len();
                    for v in page.entries {
                        if v.seq <= c {
                            break 'pages;
                        }
                        missed.push(Committed::of(&v));
                    }
                }
                missed.reverse();
                tracing::info!(
                    versions = missed.len(),
                    from_seq = c,
                    "subscriptions: catching up"
                );
                for chunk in missed.chunks(500) {
                    self.process(chunk.to_vec()).await;
                }
            }
            Some(_) => {}
        }
        Ok(())
    }

    /// Re-reads one Subscription and puts it in force (or out), activating a requested one.
    async fn refresh(&self, id: &str) {
        let st = &self.state;
        let current = st.store.read("Subscription", id).await.ok().flatten();
        let Some(body) = current.as_ref().and_then(|v| v.body.clone()) else {
            self.subs
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .remove(id);
            return;
        };
        let Ok(r) = serde_json::from_slice::<Value>(&body) else {
            return;
        };
        match parse_sub(id, &r, &st.search) {
            Ok(Some(sub)) => {
                let requested = sub.status == "requested";
                self.subs
                    .write()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(id.to_string(), sub);
                if requested {
                    self.set_status(id, "active", None).await;
                }
            }
            Ok(None) => {
                self.subs
                    .write()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(id);
            }
            Err(reason) => {
                self.subs
                    .write()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(id);
                // Only a subscription the server was asked to run is marked: one already in
                // `error` (or `off`) is not run, so its status and error text stay the client's.
                if matches!(
                    r.get("status").and_then(Value::as_str),
                    Some("requested" | "active")
                ) {
                    self.set_status(id, "error", Some(&reason)).await;
                }
            }
        }
    }

    /// Writes `status` (and `error`) on the Subscription, through the one write path.
    async fn set_status(&self, id: &str, status: &str, error: Option<&str>) {
        let st = &self.state;
        let Ok(Some(v)) = st.store.read("Subscription", id).await else {
            return;
        };
        let Some(Ok(Value::Object(mut r))) =
            v.body.as_ref().map(|b| serde_json::from_slice::<Value>(b))
        else {
            return;
        };
        r.insert("status".into(), json!(status));
        match error {
            Some(e) => {
                r.insert("error".into(), json!(e));
            }
            None => {
                r.remove("error");
            }
        }
        r.remove("meta");
        let mut entry = Entry::new(
            Method::Put,
            "Subscription",
            Target::Id(id.to_string()),
            Some(Value::Object(r)),
        );
        // Someone else changed it meanwhile: their version wins; the next event re-judges it.
        entry.if_match = Some(v.version);
        if let Err(e) = transaction::apply(
            st.store.as_ref(),
            &st.search,
            vec![entry],
            Scope::Single,
            Default::default(),
        )
        .await
        {
            tracing::warn!(subscription = id, error = ?e.issues.first().map(|i| &i.diagnostics), "status not updated");
        }
        if let Some(s) = self
            .subs
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(id)
        {
            s.status = status.to_string();
        }
    }

    async fn matcher(
        self: Arc<Self>,
        mut commits: mpsc::UnboundedReceiver<Vec<Committed>>,
        mut stop: watch::Receiver<bool>,
    ) {
        loop {
            let first = tokio::select! {
                c = commits.recv() => c,
                _ = stop.changed() => None,
            };
            let Some(mut batch) = first else {
                // Stopping: queue what already arrived, then leave.
                let mut rest = Vec::new();
                while let Ok(more) = commits.try_recv() {
                    rest.extend(more);
                }
                if !rest.is_empty() {
                    self.process(rest).await;
                }
                return;
            };
            while batch.len() < 2000 {
                match commits.try_recv() {
                    Ok(more) => batch.extend(more),
                    Err(_) => break,
                }
            }
            self.process(batch).await;
        }
    }

    /// Matches committed versions against the subscriptions and queues the deliveries.
    async fn process(&self, batch: Vec<Committed>) {
        let st = &self.state;
        let mut rows = Vec::new();
        let mut top = 0;
        for v in &batch {
            top = top.max(v.seq);
            if v.resource_type == "Subscription" {
                self.refresh(&v.id).await;
                continue;
            }
            if v.deleted {
                continue;
            }
            let subs: Vec<Sub> = self
                .subs
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .values()
                .filter(|s| s.resource_type == v.resource_type && s.status != "requested")
                .cloned()
                .collect();
            for s in subs {
                let criteria = if s.query.is_empty() {
                    format!("_id={}", v.id)
                } else {
                    format!("{}&_id={}", s.query, v.id)
                };
                let Ok(plan) =
                    crate::search::conditional_plan(&st.search, &s.resource_type, &criteria)
                else {
                    continue;
                };
                match st
                    .store
                    .query_keys(crate::search::sql::all(&plan, st.store.dialect()))
                    .await
                {
                    Ok(keys) if !keys.is_empty() => rows.push(NewDelivery {
                        subscription: s.id.clone(),
                        resource_type: v.resource_type.clone(),
                        resource_id: v.id.clone(),
                        version: v.version,
                        committed_ms: v.last_updated_ms,
                    }),
                    Ok(_) => {}
                    Err(e) => {
                        tracing::error!(error = %e, subscription = s.id, "criteria not evaluated")
                    }
                }
            }
        }
        let any = !rows.is_empty();
        if let Err(e) = self.queue.enqueue(rows, top).await {
            // Not moving the cursor: the next start matches these versions again.
            tracing::error!(error = %e, "subscription queue: not enqueued");
        }
        if any {
            self.wake.notify_one();
        }
    }

    async fn deliverer(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut pruned_at = 0;
        loop {
            if *stop.borrow() {
                return;
            }
            pruned_at = self.prune(pruned_at).await;
            let pending = self.queue.pending(512).await.unwrap_or_default();
            if let Ok(n) = self.queue.depth().await {
                self.counters.depth.store(n, Ordering::Relaxed);
            }
            let now = now_ms();
            // Per subscription, in order, up to the first delivery not yet due.
            let mut groups: Vec<(String, Vec<Delivery>)> = Vec::new();
            let mut blocked: Vec<String> = Vec::new();
            let mut earliest = i64::MAX;
            for d in pending {
                if blocked.contains(&d.subscription) {
                    continue;
                }
                if d.next_ms > now {
                    earliest = earliest.min(d.next_ms);
                    blocked.push(d.subscription.clone());
                    continue;
                }
                match groups.iter_mut().find(|(s, _)| *s == d.subscription) {
                    Some((_, g)) => g.push(d),
                    None => groups.push((d.subscription.clone(), vec![d])),
                }
            }
            if groups.is_empty() {
                let wait = if earliest == i64::MAX {
                    1000
                } else {
                    (earliest - now).clamp(1, 1000)
                };
                tokio::select! {
                    _ = self.wake.notified() => {}
                    _ = tokio::time::sleep(Duration::from_millis(wait as u64)) => {}
                    _ = stop.changed() => return,
                }
                continue;
            }
            let mut tasks = Vec::new();
            for (_, group) in groups {
                let me = self.clone();
                tasks.push(tokio::spawn(async move {
                    for d in group {
                        if !me.deliver(&d).await {
                            break;
                        }
                    }
                }));
            }
            let all = futures_util::future::join_all(tasks);
            tokio::select! {
                _ = all => {}
                _ = stop.changed() => return,
            }
        }
    }

    /// Deletes the delivered rows older than the retention, at most once a minute (more often
    /// when the retention is shorter), so the queue file does not grow without end; returns when
    /// it last pruned. The delivery task does it: it is the one writer of finished rows.
    async fn prune(&self, last_ms: i64) -> i64 {
        let retention = self.state.settings.subscription_retention.as_millis() as i64;
        let now = now_ms();
        if now - last_ms < retention.clamp(100, 60_000) {
            return last_ms;
        }
        match self.queue.prune(now - retention).await {
            Ok(n) => {
                self.counters.pruned.fetch_add(n as u64, Ordering::Relaxed);
                if n > 0 {
                    tracing::debug!(rows = n, "pruned delivered subscription notifications");
                }
            }
            Err(e) => tracing::warn!(error = %e, "pruning the subscription queue failed"),
        }
        now
    }

    /// One attempt; true when delivered (or nothing to deliver to any more).
    async fn deliver(&self, d: &Delivery) -> bool {
        let sub = self
            .subs
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&d.subscription)
            .cloned();
        let Some(sub) = sub else {
            // The subscription was deleted or switched off: its queue is closed, with a record.
            let _ = self
                .queue
                .failed(d.id, i64::MAX, "subscription no longer in force".into())
                .await;
            return true;
        };
        let st = &self.state;
        let mut req = self.http.post(&sub.endpoint);
        for (k, v) in &sub.headers {
            req = req.header(k.as_str(), v.as_str());
        }
        req = req
            .header("x-huitong-subscription", sub.id.as_str())
            .header(
                "x-huitong-resource",
                format!(
                    "{}/{}/_history/{}",
                    d.resource_type, d.resource_id, d.version
                ),
            )
            .header("x-huitong-committed-ms", d.committed_ms.to_string());
        if let Some(p) = &sub.payload {
            match st
                .store
                .vread(&d.resource_type, &d.resource_id, d.version)
                .await
            {
                Ok(Some(v)) => {
                    if let Some(b) = v.body.clone() {
                        req = req.header("content-type", p.as_str()).body(b);
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    self.retry(d, &sub, format!("store: {e}")).await;
                    return false;
                }
            }
        }
        let result = req.send().await;
        match result {
            Ok(resp) if resp.status().is_success() => {
                let now = now_ms();
                let latency = (now - d.committed_ms).max(0);
                let _ = self.queue.done(d.id, now, latency).await;
                let c = &self.counters;
                c.ok.fetch_add(1, Ordering::Relaxed);
                let secs = latency as f64 / 1000.0;
                let slot = LATENCY_BOUNDS
                    .iter()
                    .position(|b| secs <= *b)
                    .unwrap_or(LATENCY_BOUNDS.len());
                c.latency[slot].fetch_add(1, Ordering::Relaxed);
                c.latency_sum_ms
                    .fetch_add(latency as u64, Ordering::Relaxed);
                if let Ok(mut m) = c.last_latency_ms.write() {
                    m.insert(sub.id.clone(), latency);
                }
                if sub.status == "error" {
                    self.set_status(&sub.id, "active", None).await;
                }
                true
            }
            Ok(resp) => {
                self.retry(
                    d,
                    &sub,
                    format!("{} answered {}", sub.endpoint, resp.status()),
                )
                .await;
                false
            }
            Err(e) => {
                self.retry(
                    d,
                    &sub,
                    format!("{} not reached: {}", sub.endpoint, error_chain(&e)),
                )
                .await;
                false
            }
        }
    }

    async fn retry(&self, d: &Delivery, sub: &Sub, reason: String) {
        self.counters.failed.fetch_add(1, Ordering::Relaxed);
        let backoff = (BACKOFF_BASE_MS << d.attempts.min(20)).min(BACKOFF_MAX_MS);
        let _ = self
            .queue
            .failed(d.id, now_ms() + backoff, reason.clone())
            .await;
        if sub.status != "error" {
            let text = format!("delivery failed (retrying): {reason}");
            self.set_status(&sub.id, "error", Some(&text)).await;
        }
    }
}

/// An error with its causes: reqwest's own text ("error sending request") hides why, and for a
/// TLS failure the why (OpenSSL's "certificate verify failed ... (unable to get local issuer
/// certificate)") is what the subscriber's operator needs in `Subscription.error`.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let t = c.to_string();
        // Some errors print their cause themselves.
        if !text.contains(&t) {
            text.push_str(": ");
            text.push_str(&t);
        }
        cause = c.source();
    }
    text
}
