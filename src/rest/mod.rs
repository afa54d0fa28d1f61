//! The FHIR REST API (one module per group of interactions) and the operational endpoints.
//!
//! Handlers stay thin: they negotiate, parse, and hand writes to [`crate::transaction::apply`] and
//! reads to the [`Store`]. Cross-cutting behaviour (request ids, tracing spans, metrics, panic
//! containment) is a layer around the router, not code inside handlers.

mod bundle;
mod capability;
mod cda;
pub mod feeds;
mod guide;
pub mod hl7v2;
pub mod http;
pub mod operations;
mod read;
mod search;
mod terminology;
mod validate;
mod write;

use crate::config::Settings;
use crate::definitions::Definitions;
use crate::identity::Canonicaliser;
use crate::model::{FhirError, ParseLimits};
use crate::registry::Registry;
use crate::store::Store;
use crate::telemetry::Metrics;
use crate::terminology::Terminology;
use crate::validation::Validator;
use axum::Router;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use http::{ApiError, Interaction, tagged};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;
use tracing::Instrument;

/// Everything a handler needs, cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub settings: Arc<Settings>,
    pub metrics: Arc<Metrics>,
    /// The CapabilityStatement, rendered once at start.
    pub capability: Bytes,
    /// False once shutdown has begun (`/readyz` then answers 503).
    pub ready: Arc<AtomicBool>,
    /// Conformance resources (core, `profiles/`, posted ones).
    pub registry: Arc<Registry>,
    /// The terminology service over the registry.
    pub terminology: Arc<Terminology>,
    /// Validation against core definitions and profiles.
    pub validator: Arc<Validator>,
    /// The search parameters in force (core + activated custom ones).
    pub search: Arc<crate::search::Catalogue>,
    /// Alias identifier systems -> canonical ones, applied to every write.
    pub identities: Arc<Canonicaliser>,
    /// HL7 v2 ingest: mappings, dead letters, duplicate detection.
    pub hl7v2: Arc<crate::ingest::hl7v2::pipeline::Hl7v2Service>,
    /// Authentication, authorisation, audit, limits (open until the server installs its own).
    pub security: Arc<crate::security::Security>,
    /// HL7 v3 interactions and CDA documents (`mappings/hl7v3/`, `mappings/cda/`).
    pub hl7v3: Arc<crate::ingest::hl7v3::Hl7v3Service>,
    /// Record feeds (`mappings/feeds`); empty until the server (or CLI) loads them.
    pub feeds: Arc<crate::ingest::feed::FeedService>,
    /// The locks of the records ingests are changing, shared by every ingest path.
    pub record_locks: Arc<crate::ingest::locks::RecordLocks>,
    /// R4 rest-hook subscriptions; inert until the server starts its worker.
    pub subscriptions: Arc<crate::subscription::Subscriptions>,
    /// The authenticated sender of the ingest this state serves (see `security::ownership`);
    /// `None` for REST handlers, the CLI and the gateway's own work.
    pub writer: Option<Arc<crate::security::Principal>>,
}

impl AppState {
    /// Builds the state over a store.
    pub fn new(
        store: Arc<dyn Store>,
        settings: Settings,
        hl7v2: Arc<crate::ingest::hl7v2::pipeline::Hl7v2Service>,
    ) -> AppState {
        let capability = capability::render(&settings);
        let registry = Arc::new(Registry::with_core(Definitions::core()));
        if settings.profiles_dir.is_dir() {
            for p in crate::validation::load_profiles(&registry, &settings.profiles_dir) {
                // A broken file is named (with its OperationOutcome); the server still starts.
                tracing::warn!(
                    problem = %p,
                    outcome = %crate::model::operation_outcome(&p.error.issues),
                    "conformance resource problem"
                );
            }
        }
        let terminology = Arc::new(Terminology::new(registry.clone()));
        let validator = Arc::new(Validator::new(registry.clone(), terminology.clone()));
        let identities = Arc::new(Canonicaliser::new(
            registry.clone(),
            settings.canonical_identifier_systems.clone(),
        ));
        let hl7v3 = Arc::new(crate::ingest::hl7v3::Hl7v3Service::start(
            &settings.mappings_dir,
            settings.max_body_bytes,
        ));
        AppState {
            identities,
            hl7v2,
            hl7v3,
            feeds: Arc::new(crate::ingest::feed::FeedService::empty()),
            record_locks: Arc::default(),
            subscriptions: Arc::new(crate::subscription::Subscriptions::inert()),
            registry,
            validator,
            search: Arc::new(crate::search::Catalogue::with_terminology(
                terminology.clone(),
            )),
            store,
            settings: Arc::new(settings),
            metrics: Arc::new(Metrics::default()),
            capability,
            ready: Arc::new(AtomicBool::new(true)),
            terminology,
            security: Arc::new(crate::security::Security::open()),
            writer: None,
        }
    }

    fn limits(&self) -> ParseLimits {
        ParseLimits {
            max_depth: self.settings.max_depth,
        }
    }

    /// The absolute base URL of the FHIR API, from configuration or the request's `Host`.
    fn base_url(&self, headers: &HeaderMap) -> String {
        if let Some(u) = &self.settings.public_base_url {
            return u.clone();
        }
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("localhost");
        format!("http://{host}{}", self.settings.base_path)
    }
}

/// Applies the validation policy to a resource about to be written (REST and ingest alike).
pub fn check_write(st: &AppState, resource: &serde_json::Value) -> Result<(), FhirError> {
    validate::check_write(st, resource).map(|_| ())
}

/// Validates a translated resource before ingest writes it (see [`validate::check_ingest`]).
pub fn check_ingest(
    st: &AppState,
    resource: &serde_json::Value,
) -> Result<Vec<crate::model::Issue>, FhirError> {
    validate::check_ingest(st, resource)
}

/// Registers the conformance resources already in the store (see [`validate::register_stored`]).
pub async fn register_stored_conformance(st: &AppState) -> Result<usize, crate::store::StoreError> {
    validate::register_stored(st).await
}

/// The whole HTTP application.
pub fn router(state: AppState) -> Router {
    let fhir = Router::new()
        .route("/metadata", get(capability::metadata))
        .route("/ImplementationGuide/cn", get(guide::cn))
        .route("/", get(system_root).post(bundle::batch_or_transaction))
        .route(
            "/$ingest-errors",
            get(hl7v2::ingest_errors).post(hl7v2::replay_ingest_errors),
        )
        .route(
            "/$reload-mappings",
            axum::routing::post(hl7v2::reload_mappings),
        )
        .route("/_history", get(read::history_system))
        .route(
            "/{type}",
            get(type_root)
                .post(type_root)
                .put(write::conditional_update)
                .patch(write::conditional_patch)
                .delete(write::conditional_delete),
        )
        .route("/{type}/_history", get(read::history_type))
        .route(
            "/{type}/{id}",
            get(instance_or_operation)
                .post(instance_or_operation)
                .put(write::update)
                .patch(write::patch)
                .delete(write::delete),
        )
        .route("/{type}/{id}/_history", get(read::history_instance))
        .route("/{type}/{id}/_history/{vid}", get(read::vread))
        .route("/{type}/{id}/{op}", get(instance_sub).post(instance_sub))
        .method_not_allowed_fallback(method_not_allowed);
    let base = state.settings.base_path.clone();
    Router::new()
        // `[base]/` is the same endpoint as `[base]`: clients differ on the trailing slash.
        .route(
            &format!("{base}/"),
            get(system_root).post(bundle::batch_or_transaction),
        )
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/hl7v2", axum::routing::post(hl7v2::post))
        .route("/cda", axum::routing::post(cda::post))
        .route("/hl7v3", axum::routing::post(cda::post_hl7v3))
        .route("/feeds/{name}", axum::routing::post(feeds::post))
        .nest(&base, fhir)
        .fallback(not_found)
        // Security wraps every route, including those added above later (see `security::layer`).
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::security::guard,
        ))
        .layer(axum::middleware::from_fn_with_state(state.clone(), observe))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            panic_response,
        ))
        .with_state(state)
}

/// Request id, tracing span, metrics: once per request around everything else.
async fn observe(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_string)
        .unwrap_or_else(next_request_id);
    let span = tracing::info_span!("request", request_id = %id, method = %req.method(), path = %req.uri().path());
    let mut resp = as_outcome(next.run(req).instrument(span.clone()).await).await;
    let status = resp.status().as_u16();
    let interaction = resp
        .extensions()
        .get::<Interaction>()
        .map_or("other", |i| i.0);
    let elapsed = start.elapsed();
    state.metrics.record(interaction, status, elapsed);
    if status >= 500 {
        tracing::error!(parent: &span, status, interaction, elapsed_us = elapsed.as_micros() as u64, "request failed");
    } else {
        tracing::debug!(parent: &span, status, interaction, elapsed_us = elapsed.as_micros() as u64, "request done");
    }
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    resp
}

/// A request id unique across the process's life and its restarts: a random prefix drawn once, then
/// a counter (no system call per request on the hot path).
fn next_request_id() -> String {
    static PREFIX: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let prefix = PREFIX.get_or_init(|| uuid::Uuid::new_v4().simple().to_string()[..16].to_string());
    format!("{prefix}-{:x}", COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// Errors produced below the handlers (axum's extractor rejections, e.g. a path that is not valid
/// percent-encoded UTF-8) come as plain text; every error leaves as an OperationOutcome.
async fn as_outcome(resp: Response) -> Response {
    let is_fhir = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/fhir+json"));
    if resp.status().as_u16() < 400 || is_fhir {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let text = match axum::body::to_bytes(body, 64 * 1024).await {
        Ok(b) => String::from_utf8_lossy(&b).into_owned(),
        Err(_) => String::new(),
    };
    let reason = parts.status.canonical_reason().unwrap_or("error");
    let msg = if text.trim().is_empty() {
        reason.to_string()
    } else {
        text
    };
    let mut out = ApiError(FhirError::new(parts.status.as_u16(), "invalid", msg)).into_response();
    if let Some(i) = parts.extensions.get::<Interaction>() {
        out.extensions_mut().insert(*i);
    }
    out
}

fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("handler panicked");
    tagged(
        ApiError(FhirError::new(
            500,
            "exception",
            "internal error; the request was not applied",
        ))
        .into_response(),
        "panic",
    )
}

async fn method_not_allowed(req: Request) -> Response {
    let msg = format!("{} is not allowed on {}", req.method(), req.uri().path());
    tagged(
        ApiError(FhirError::new(405, "not-supported", msg)).into_response(),
        "other",
    )
}

async fn not_found(req: Request) -> Response {
    let msg = format!("no such endpoint: {}", req.uri().path());
    tagged(
        ApiError(FhirError::new(404, "not-found", msg)).into_response(),
        "other",
    )
}

// `[base]/{type}` is also `[base]/$op`, and `[base]/{type}/{id}` is also `[base]/{type}/$op`: the
// router cannot tell a `$` segment apart, so these small handlers do.

/// `[base]/{type}`: the type's search (GET) or create (POST), or a system-level `$operation`.
async fn type_root(
    State(st): State<AppState>,
    Path(ty): Path<String>,
    method: Method,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    if ty.starts_with('$') {
        return operations::system(State(st), Path(ty), method, RawQuery(q), headers, body).await;
    }
    if method == Method::POST {
        write::create(State(st), Path(ty), RawQuery(q), headers, body).await
    } else {
        search::type_search(&st, ty, q.as_deref(), &headers, None).await
    }
}

/// `[base]/{type}/{id}` for GET and POST: a read, or a type-level `$operation`.
async fn instance_or_operation(
    State(st): State<AppState>,
    Path((ty, id)): Path<(String, String)>,
    method: Method,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    if id.starts_with('$') {
        return operations::type_level(&st, ty, &id, method, q.as_deref(), headers, body).await;
    }
    if id == "_search" {
        let form = if method == Method::POST {
            match http::read_body(&headers, body, st.settings.max_body_bytes).await {
                Ok(b) => Some(b),
                Err(e) => return tagged(ApiError(e).into_response(), "search-type"),
            }
        } else {
            None
        };
        return search::type_search(&st, ty, q.as_deref(), &headers, form).await;
    }
    if method != Method::POST {
        return read::read(State(st), Path((ty, id)), RawQuery(q), headers).await;
    }
    let msg = format!("POST is not allowed on {ty}/{id}; use PUT to update");
    tagged(
        ApiError(FhirError::new(405, "not-supported", msg)).into_response(),
        "other",
    )
}

/// `[base]/{type}/{id}/{x}`: an instance `$operation`, or a compartment search (`Patient/1/Observation`).
async fn instance_sub(
    State(st): State<AppState>,
    Path((ty, id, op)): Path<(String, String, String)>,
    method: Method,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    if method == Method::GET && (op == "$cda" || op == "$hl7v3") {
        return cda::instance_operation(&st, &ty, &id, &op).await;
    }
    if op.starts_with('$') || method != Method::GET {
        return operations::instance(
            State(st),
            Path((ty, id, op)),
            method,
            RawQuery(q),
            headers,
            body,
        )
        .await;
    }
    search::compartment_search(&st, ty, id, op, q.as_deref(), &headers).await
}

/// `GET [base]?...`: system search.
async fn system_root(
    State(st): State<AppState>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Response {
    search::system_search(&st, q.as_deref(), &headers).await
}

async fn healthz() -> Response {
    tagged((StatusCode::OK, "ok\n").into_response(), "health")
}

async fn readyz(State(state): State<AppState>) -> Response {
    let r = if state.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response()
    };
    tagged(r, "health")
}

async fn metrics(State(state): State<AppState>) -> Response {
    let mut text = state.metrics.render(&state.store.stats());
    text.push_str(&state.hl7v2.render_metrics());
    text.push_str(&state.hl7v3.cda.accepted_violations.render());
    text.push_str(&state.feeds.render_metrics());
    text.push_str(&state.subscriptions.render_metrics());
    text.push_str(&state.security.render_metrics());
    let mut r = text.into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    tagged(r, "metrics")
}

/// 404 for a type that is not a concrete R4 resource type.
pub(crate) fn check_type(ty: &str) -> Result<(), FhirError> {
    if Definitions::core().is_resource_type(ty) {
        Ok(())
    } else {
        Err(FhirError::new(
            404,
            "not-supported",
            format!("'{ty}' is not a resource type of FHIR R4"),
        ))
    }
}

/// 400 for an id that breaks the R4 id rule.
pub(crate) fn check_id(id: &str) -> Result<(), FhirError> {
    if crate::model::primitives::is_id(id) {
        Ok(())
    } else {
        let shown: String = id.chars().take(70).collect();
        Err(FhirError::new(
            400,
            "value",
            format!("id '{shown}' in the URL must be 1-64 characters of A-Z a-z 0-9 - ."),
        ))
    }
}
