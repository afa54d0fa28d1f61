//! Security as layers around every entry point: authentication (JWT bearer tokens, API keys, TLS
//! client certificates, MLLP source identities), authorisation (SMART v2 scopes, patient
//! compartments, owner domains, sensitive categories, Consent), a tamper-evident audit trail,
//! abuse limits and TLS.
//!
//! The HTTP side is one middleware, [`layer::guard`], wrapped around the whole router in
//! `rest::router`, so a route added later is covered by construction: only the paths in
//! [`layer::PUBLIC_PATHS`] opt out. MLLP goes through [`Security::mllp_sender`] and the audit in
//! `ingest::hl7v2::pipeline::MllpHandler`. Without `[auth]` the gateway stays open as before (a
//! warning says so at start), so nothing changes for deployments and tests that do not opt in.
//! What ingest writes is owned by the sender's domain through [`ownership`].

pub mod audit;
pub mod cli;
pub mod config;
pub mod jwks;
pub mod jwt;
pub mod layer;
pub mod limits;
pub mod net;
pub mod ownership;
pub mod policy;
pub mod redact;
pub mod scopes;
pub mod sm;
pub mod tokens;

pub use config::SecurityConfig;
pub use layer::guard;

use crate::config::Settings;
use scopes::{Context, Perms, Scope};
use serde_json::Value;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;

/// Who is calling, as the layers established it.
#[derive(Debug, Clone)]
pub struct Principal {
    /// Token `sub`, sender id, or `anonymous` on an open gateway.
    pub id: String,
    /// How it authenticated: `token`, `api-key`, `certificate`, `mllp-source`, `open`.
    pub method: &'static str,
    /// The OAuth client (`client_id`/`azp`), when a token names one.
    pub client: Option<String>,
    pub scopes: Vec<Scope>,
    /// Launch patient (`patient` claim): patient/ scopes reach only this compartment.
    pub patient: Option<String>,
    /// `fhirUser` claim (`Practitioner/1`): matched against Consent actors.
    pub fhir_user: Option<String>,
    pub role: Option<String>,
    /// Owning institution: writes are tagged with it, reads outside it follow `[access]`.
    pub domain: Option<String>,
    /// Sensitive categories granted (token `huitong_grants`, sender `grants`, role `sensitive`).
    pub grants: HashSet<String>,
    /// MSH-4 facilities a sender may send as (empty: any).
    pub facilities: Vec<String>,
}

impl Principal {
    /// The principal of an open gateway: everything allowed, as before security existed.
    pub fn open() -> Principal {
        Principal {
            id: "anonymous".into(),
            method: "open",
            client: None,
            scopes: scopes::parse_all("system/*.*"),
            patient: None,
            fhir_user: None,
            role: None,
            domain: None,
            grants: HashSet::from(["*".to_string()]),
            facilities: Vec::new(),
        }
    }

    /// Permissions granted on a type, by any scope.
    pub fn perms_for(&self, resource_type: &str) -> Perms {
        self.scopes
            .iter()
            .filter(|s| s.covers(resource_type))
            .fold(0, |p, s| p | s.perms)
    }

    /// Whether every permission of `p` is granted on `resource_type`.
    pub fn allows(&self, resource_type: &str, p: Perms) -> bool {
        self.perms_for(resource_type) & p == p
    }

    /// Whether `p` is granted on every type (a `*` scope).
    pub fn allows_all(&self, p: Perms) -> bool {
        self.scopes
            .iter()
            .filter(|s| s.resource_type.is_none())
            .fold(0, |acc, s| acc | s.perms)
            & p
            == p
    }

    /// The platform operator: `system/*.*`, no patient, no domain, every grant. Nothing is
    /// filtered for it (and nothing costs a filter pass).
    pub fn is_operator(&self) -> bool {
        self.patient.is_none()
            && self.domain.is_none()
            && self.grants.contains("*")
            && self.scopes.iter().any(|s| {
                s.context == Context::System
                    && s.resource_type.is_none()
                    && s.perms == scopes::ALL
                    && s.restrictions.is_empty()
            })
    }

    /// Whether reading `resource_type` is limited to the launch patient's compartment: a patient
    /// is in context and no user/system scope grants `p` on the type.
    pub fn patient_bound(&self, resource_type: &str, p: Perms) -> Option<&str> {
        let pid = self.patient.as_deref()?;
        let wider = self
            .scopes
            .iter()
            .filter(|s| s.context != Context::Patient && s.covers(resource_type))
            .fold(0, |acc, s| acc | s.perms);
        (wider & p != p).then_some(pid)
    }

    /// Whether the caller may see a sensitive label.
    pub fn granted(&self, label: &str) -> bool {
        self.grants.contains("*") || self.grants.contains(label)
    }
}

/// The connection a request or message came over (inserted by `net`).
#[derive(Debug, Clone)]
pub struct PeerInfo {
    pub addr: SocketAddr,
    /// Subject CN of a verified TLS client certificate.
    pub cert_cn: Option<String>,
}

/// Why authentication failed: answered 401.
#[derive(Debug, Clone)]
pub struct AuthFailure(pub String);

struct Sender {
    config: config::SenderConfig,
    principal: Principal,
}

/// The security runtime: keys, senders, policy, audit trail, rate limiter.
pub struct Security {
    pub config: SecurityConfig,
    keys: jwks::KeySource,
    senders: Vec<Sender>,
    pub audit: Option<Arc<audit::AuditLog>>,
    pub limiter: Option<limits::RateLimiter>,
    /// Bearer tokens that verified, until their `exp` (one signature check per token).
    tokens: tokens::TokenCache,
    /// Active Consents per patient, as judged answers need them; emptied whenever anything that
    /// could write a Consent succeeds (see `layer::guard`).
    pub consents: moka::sync::Cache<String, Arc<Vec<Value>>>,
}

fn consent_cache() -> moka::sync::Cache<String, Arc<Vec<Value>>> {
    moka::sync::Cache::new(100_000)
}

impl std::fmt::Debug for Security {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Security")
            .field("enforcing", &self.enforcing())
            .field("keys", &self.keys.len())
            .field("senders", &self.senders.len())
            .finish()
    }
}

impl Security {
    /// No authentication, no audit, no limits: the gateway as it was.
    pub fn open() -> Security {
        Security {
            config: SecurityConfig::default(),
            keys: jwks::KeySource::none(),
            senders: Vec::new(),
            audit: None,
            limiter: None,
            tokens: tokens::TokenCache::new(0),
            consents: consent_cache(),
        }
    }

    /// Loads (or fetches) keys and senders and opens the audit trail, from the settings.
    pub async fn start(settings: &Settings) -> Result<Security, String> {
        let config = settings.security.clone();
        let mut keys = jwks::KeySource::none();
        let mut senders = Vec::new();
        match &config.auth {
            Some(auth) => {
                if (auth.jwks_file.is_some() || auth.jwks_url.is_some()) && auth.audience.is_none()
                {
                    return Err("[auth] audience is required with jwks-file or jwks-url".into());
                }
                keys = jwks::KeySource::load(auth).await?;
                for s in &auth.senders {
                    senders.push(Sender {
                        principal: sender_principal(s, &config.access),
                        config: s.clone(),
                    });
                }
            }
            None => tracing::warn!(
                "NO AUTHENTICATION: [auth] is not configured, every client may read and write everything; configure [auth] in huitong.toml before carrying patient data"
            ),
        }
        let audit = match config.audit_in_force() {
            Some(a) => Some(Arc::new(
                audit::AuditLog::open(&settings.data_dir, &a)
                    .map_err(|e| format!("audit trail: {e}"))?,
            )),
            None => None,
        };
        let limiter = (config.limits.rate_per_second > 0.0)
            .then(|| limits::RateLimiter::new(config.limits.rate_per_second, config.limits.burst));
        let tokens =
            tokens::TokenCache::new(config.auth.as_ref().map_or(0, |a| a.token_cache_entries));
        Ok(Security {
            config,
            keys,
            senders,
            audit,
            limiter,
            tokens,
            consents: consent_cache(),
        })
    }

    /// Whether `[auth]` is configured (every entry point then needs an identity).
    pub fn enforcing(&self) -> bool {
        self.config.auth.is_some()
    }

    /// Whether the layer has anything to do at all.
    pub fn active(&self) -> bool {
        self.enforcing() || self.audit.is_some() || self.limiter.is_some()
    }

    /// The caller of an HTTP request: a bearer token, an API key or a client certificate.
    /// `Ok(open principal)` when not enforcing.
    pub async fn authenticate(
        &self,
        headers: &axum::http::HeaderMap,
        peer: Option<&PeerInfo>,
    ) -> Result<Arc<Principal>, AuthFailure> {
        let Some(auth) = &self.config.auth else {
            return Ok(Arc::new(Principal::open()));
        };
        if let Some(v) = headers.get(axum::http::header::AUTHORIZATION) {
            let v = v
                .to_str()
                .map_err(|_| AuthFailure("Authorization header is not ASCII".into()))?;
            let token = v
                .strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
                .ok_or_else(|| AuthFailure("Authorization must be 'Bearer <token>'".into()))?
                .trim();
            let exp = jwt::Expectations {
                audience: auth.audience.as_deref(),
                issuer: auth.issuer.as_deref(),
                now_secs: now_secs(),
                leeway_secs: auth.leeway_secs,
            };
            let mut keys = self.keys.current();
            match self.tokens.lookup(token, keys.generation, &exp) {
                tokens::Lookup::Accepted(p) => return Ok(p),
                tokens::Lookup::Refused(e) => return Err(AuthFailure(e.to_string())),
                tokens::Lookup::Unknown => {}
            }
            let claims = match jwt::verify(token, &keys.keys, &exp) {
                // Perhaps the provider rotated its keys: fetch them again (rate-limited).
                Err(e @ jwt::TokenError::UnknownKey(_)) => {
                    match self.keys.refreshed_for_unknown_key(&keys).await {
                        Some(fresh) => {
                            keys = fresh;
                            jwt::verify(token, &keys.keys, &exp)
                        }
                        None => Err(e),
                    }
                }
                other => other,
            }
            .map_err(|e| AuthFailure(e.to_string()))?;
            let principal = Arc::new(token_principal(&claims, &self.config.access));
            self.tokens
                .remember(token, keys.generation, &claims, principal.clone(), &exp);
            return Ok(principal);
        }
        if let Some(v) = headers.get("x-api-key") {
            let digest = sm::sm3_hex(v.as_bytes());
            return self
                .senders
                .iter()
                .find(|s| {
                    s.config
                        .api_key_sm3
                        .as_deref()
                        .is_some_and(|h| constant_time_eq(h.as_bytes(), digest.as_bytes()))
                })
                .map(|s| Arc::new(with_method(&s.principal, "api-key")))
                .ok_or_else(|| AuthFailure("unknown API key".into()));
        }
        if let Some(cn) = peer.and_then(|p| p.cert_cn.as_deref())
            && let Some(s) = self
                .senders
                .iter()
                .find(|s| s.config.cert_cn.as_deref() == Some(cn))
        {
            return Ok(Arc::new(with_method(&s.principal, "certificate")));
        }
        Err(AuthFailure(
            "authentication required: send 'Authorization: Bearer <token>' or an API key".into(),
        ))
    }

    /// The sender of an MLLP connection: by client certificate, else by source address.
    /// `Ok(open principal)` when not enforcing; `Err` names why the connection is refused.
    pub fn mllp_sender(&self, peer: &PeerInfo) -> Result<Principal, AuthFailure> {
        if !self.enforcing() {
            return Ok(Principal::open());
        }
        if let Some(cn) = &peer.cert_cn
            && let Some(s) = self
                .senders
                .iter()
                .find(|s| s.config.cert_cn.as_deref() == Some(cn.as_str()))
        {
            return Ok(with_method(&s.principal, "certificate"));
        }
        self.senders
            .iter()
            .find(|s| s.config.mllp_ips.contains(&peer.addr.ip()))
            .map(|s| with_method(&s.principal, "mllp-source"))
            .ok_or_else(|| {
                AuthFailure(format!(
                    "MLLP source {} is not a configured sender",
                    peer.addr.ip()
                ))
            })
    }

    /// Prometheus text of the security layer (the verified-token cache).
    pub fn render_metrics(&self) -> String {
        self.tokens.render_metrics()
    }

    /// The status of a hidden resource (`[access] hidden-status`).
    pub fn hidden_status(&self) -> u16 {
        match self.config.access.hidden_status {
            403 => 403,
            _ => 404,
        }
    }
}

fn with_method(p: &Principal, method: &'static str) -> Principal {
    let mut p = p.clone();
    p.method = method;
    p
}

/// Compares without an early exit, so timing does not reveal how much of a key matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn role_grants(access: &config::AccessConfig, role: Option<&str>) -> HashSet<String> {
    role.and_then(|r| access.roles.get(r))
        .map(|p| p.sensitive.iter().cloned().collect())
        .unwrap_or_default()
}

fn sender_principal(s: &config::SenderConfig, access: &config::AccessConfig) -> Principal {
    let mut grants = role_grants(access, s.role.as_deref());
    grants.extend(s.grants.iter().cloned());
    Principal {
        id: s.id.clone(),
        method: "api-key",
        client: Some(s.id.clone()),
        scopes: scopes::parse_all(s.scopes.as_deref().unwrap_or("system/*.cru")),
        patient: None,
        fhir_user: None,
        role: s.role.clone(),
        domain: s.domain.clone(),
        grants,
        facilities: s.facilities.clone(),
    }
}

fn token_principal(claims: &Value, access: &config::AccessConfig) -> Principal {
    let s = |k: &str| claims[k].as_str().map(str::to_string);
    let role = s("huitong_role");
    let mut grants = role_grants(access, role.as_deref());
    if let Some(g) = claims["huitong_grants"].as_array() {
        grants.extend(g.iter().filter_map(|v| v.as_str().map(str::to_string)));
    }
    Principal {
        id: s("sub").unwrap_or_else(|| "unknown".into()),
        method: "token",
        client: s("client_id").or_else(|| s("azp")),
        scopes: scopes::parse_all(claims["scope"].as_str().unwrap_or("")),
        patient: s("patient"),
        fhir_user: s("fhirUser"),
        role,
        domain: s("huitong_domain"),
        grants,
        facilities: Vec::new(),
    }
}
