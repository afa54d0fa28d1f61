//! The security tables of `huitong.toml`: `[auth]`, `[access]`, `[audit]`, `[limits]`, `[tls]`.
//! Config file only (secrets and policies do not belong in flags or the process environment).

use serde::Deserialize;
use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;

/// Everything security-related, resolved.
#[derive(Debug, Clone, Default)]
pub struct SecurityConfig {
    /// `None`: the gateway is open (as before this layer existed), with a loud warning at start.
    pub auth: Option<AuthConfig>,
    pub access: AccessConfig,
    /// `None`: no audit trail unless `[auth]` is on (then the defaults apply).
    pub audit: Option<AuditConfig>,
    pub limits: LimitsConfig,
    pub tls: Option<TlsConfig>,
}

impl SecurityConfig {
    /// The audit settings in force, if any.
    pub fn audit_in_force(&self) -> Option<AuditConfig> {
        match (&self.audit, &self.auth) {
            (Some(a), _) => a.enabled.then(|| a.clone()),
            (None, Some(_)) => Some(AuditConfig::default()),
            (None, None) => None,
        }
    }
}

/// `[auth]`: who may call.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct AuthConfig {
    /// JWKS file of the keys bearer tokens are signed with.
    pub jwks_file: Option<PathBuf>,
    /// JWKS URL of the identity provider (https; plain http only to a loopback address), fetched
    /// at start (start-up fails without it), cached and refreshed (see `security::jwks`).
    pub jwks_url: Option<String>,
    /// How long fetched keys are used when the response has no `Cache-Control: max-age`.
    #[serde(default = "default_jwks_refresh")]
    pub jwks_refresh_secs: u64,
    /// Least time between two fetches of the JWKS URL (a token naming an unknown `kid` asks for
    /// one; this bounds how often).
    #[serde(default = "default_jwks_min_refresh")]
    pub jwks_min_refresh_secs: u64,
    /// The `aud` every token must carry (the gateway's base URL, usually). Required with a JWKS.
    pub audience: Option<String>,
    /// The `iss` every token must carry, when set.
    pub issuer: Option<String>,
    /// Clock skew allowed on `exp`/`nbf`.
    #[serde(default = "default_leeway")]
    pub leeway_secs: i64,
    /// How many verified tokens are remembered (until each one's `exp`), so a token's signature
    /// is checked once rather than on every request; 0 verifies every request.
    #[serde(default = "default_token_cache_entries")]
    pub token_cache_entries: u64,
    /// System senders (HIS, NHSA feeds, MLLP sources): API keys, client certificates, source IPs.
    #[serde(default)]
    pub senders: Vec<SenderConfig>,
}

fn default_leeway() -> i64 {
    60
}
fn default_token_cache_entries() -> u64 {
    10_000
}
fn default_jwks_refresh() -> u64 {
    300
}
fn default_jwks_min_refresh() -> u64 {
    30
}

/// One system sender and what it may do.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SenderConfig {
    /// Name in audit records.
    pub id: String,
    /// SM3 (hex) of the API key it sends as `X-API-Key` (the key itself is never configured).
    pub api_key_sm3: Option<String>,
    /// Subject CN of its TLS client certificate (HTTPS or MLLP over TLS).
    pub cert_cn: Option<String>,
    /// Source addresses it connects from over MLLP (plain TCP).
    #[serde(default)]
    pub mllp_ips: Vec<IpAddr>,
    /// Its SMART scopes, space-separated [default: system/*.cru].
    pub scopes: Option<String>,
    pub role: Option<String>,
    /// Its institution (owner of what it writes).
    pub domain: Option<String>,
    /// Sensitive categories it may see.
    #[serde(default)]
    pub grants: Vec<String>,
    /// MSH-4 sending facilities it may send as (empty: any).
    #[serde(default)]
    pub facilities: Vec<String>,
}

/// `[access]`: cross-domain reads and sensitive data.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct AccessConfig {
    /// Role -> policy. Roles not listed read their own domain only.
    #[serde(default = "default_roles")]
    pub roles: HashMap<String, RolePolicy>,
    /// Data category -> resource types (types not listed are `other`).
    #[serde(default = "default_categories")]
    pub categories: HashMap<String, Vec<String>>,
    /// `meta.security` codes that need an explicit grant (v3 ActCode sensitivity and
    /// confidentiality codes).
    #[serde(default = "default_sensitive")]
    pub sensitive_labels: Vec<String>,
    /// Status for a resource the caller may not see: 404 (does not reveal existence) or 403.
    #[serde(default = "default_hidden")]
    pub hidden_status: u16,
}

impl Default for AccessConfig {
    fn default() -> Self {
        AccessConfig {
            roles: default_roles(),
            categories: default_categories(),
            sensitive_labels: default_sensitive(),
            hidden_status: default_hidden(),
        }
    }
}

/// What one role may read outside its own domain.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RolePolicy {
    /// Categories readable across domains (`*`: all).
    #[serde(default)]
    pub cross_domain_read: Vec<String>,
    /// Sensitive labels granted to the role.
    #[serde(default)]
    pub sensitive: Vec<String>,
}

fn default_hidden() -> u16 {
    404
}

fn default_sensitive() -> Vec<String> {
    // PSY mental health, HIV, STD, SEX reproductive/sexual health, GDIS genetic, ETH substance
    // use, SDV violence; R/V restricted and very restricted confidentiality.
    ["PSY", "HIV", "STD", "SEX", "GDIS", "ETH", "SDV", "R", "V"]
        .map(String::from)
        .to_vec()
}

fn default_roles() -> HashMap<String, RolePolicy> {
    let r = |cats: &[&str]| RolePolicy {
        cross_domain_read: cats.iter().map(|c| c.to_string()).collect(),
        sensitive: Vec::new(),
    };
    HashMap::from([
        (
            "treating-clinician".to_string(),
            r(&["clinical", "administrative"]),
        ),
        ("regional-platform".to_string(), r(&["*"])),
        (
            "public-health".to_string(),
            r(&["clinical", "administrative"]),
        ),
        ("insurer".to_string(), r(&["financial", "administrative"])),
        ("patient".to_string(), r(&["*"])),
    ])
}

fn default_categories() -> HashMap<String, Vec<String>> {
    let v = |ts: &[&str]| ts.iter().map(|t| t.to_string()).collect::<Vec<_>>();
    HashMap::from([
        (
            "clinical".to_string(),
            v(&[
                "Observation",
                "Condition",
                "Procedure",
                "DiagnosticReport",
                "MedicationRequest",
                "MedicationStatement",
                "MedicationAdministration",
                "MedicationDispense",
                "AllergyIntolerance",
                "Immunization",
                "CarePlan",
                "ServiceRequest",
                "Specimen",
                "ImagingStudy",
                "DocumentReference",
                "Composition",
                "FamilyMemberHistory",
                "ClinicalImpression",
            ]),
        ),
        (
            "administrative".to_string(),
            v(&[
                "Patient",
                "Encounter",
                "EpisodeOfCare",
                "Practitioner",
                "PractitionerRole",
                "Organization",
                "Location",
                "RelatedPerson",
                "Appointment",
            ]),
        ),
        (
            "financial".to_string(),
            v(&[
                "Coverage",
                "Claim",
                "ClaimResponse",
                "ExplanationOfBenefit",
                "Account",
                "ChargeItem",
                "Invoice",
            ]),
        ),
    ])
}

/// `[audit]`: the tamper-evident trail.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct AuditConfig {
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Records older than this are purged (MLPS level 3 asks for at least 6 months).
    #[serde(default = "default_retention")]
    pub retention_days: u32,
    /// SM2 private key (PEM) that signs the chain head.
    pub signing_key: Option<PathBuf>,
    /// Sign the head after this many records (and at shutdown).
    #[serde(default = "default_seal_every")]
    pub seal_every: u64,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            enabled: true,
            retention_days: default_retention(),
            signing_key: None,
            seal_every: default_seal_every(),
        }
    }
}

fn yes() -> bool {
    true
}
fn default_retention() -> u32 {
    180
}
fn default_seal_every() -> u64 {
    1000
}

/// `[limits]`: abuse limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct LimitsConfig {
    /// Sustained requests per second per client (0: no rate limit).
    #[serde(default)]
    pub rate_per_second: f64,
    /// Bucket size (burst) per client.
    #[serde(default = "default_burst")]
    pub burst: f64,
    /// Time a client has to send a request's headers (slowloris); also the keep-alive idle limit.
    #[serde(default = "default_header_timeout")]
    pub header_read_timeout_secs: u64,
    /// Time a client has to send a request's body.
    #[serde(default = "default_body_timeout")]
    pub body_read_timeout_secs: u64,
    /// Largest request head (request line and headers); beyond it 431.
    #[serde(default = "default_max_header")]
    pub max_header_bytes: usize,
    /// Largest body per endpoint: path prefix -> bytes (the longest matching prefix wins).
    #[serde(default)]
    pub body_bytes: HashMap<String, usize>,
    /// Most work one search statement may do, in SQLite virtual-machine steps (a deterministic
    /// measure of the rows it touches); beyond it 413 with an explanation.
    pub max_search_cost: Option<u64>,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            rate_per_second: 0.0,
            burst: default_burst(),
            header_read_timeout_secs: default_header_timeout(),
            body_read_timeout_secs: default_body_timeout(),
            max_header_bytes: default_max_header(),
            body_bytes: HashMap::new(),
            max_search_cost: None,
        }
    }
}

fn default_burst() -> f64 {
    100.0
}
fn default_header_timeout() -> u64 {
    30
}
fn default_body_timeout() -> u64 {
    300
}
fn default_max_header() -> usize {
    64 * 1024
}

/// `[tls]`: HTTPS and MLLP over TLS.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct TlsConfig {
    /// Certificate chain (PEM).
    pub cert: PathBuf,
    /// Private key (PEM).
    pub key: PathBuf,
    /// CA certificates (PEM) client certificates must chain to; enables mutual TLS.
    pub client_ca: Option<PathBuf>,
    /// Refuse clients without a certificate (with `client-ca`).
    #[serde(default)]
    pub require_client_cert: bool,
    /// OpenSSL cipher list for TLS 1.2.
    pub ciphers: Option<String>,
    /// `1.2` or `1.3`.
    #[serde(default = "default_min_tls")]
    pub min_version: String,
    /// Serve MLLP over TLS too.
    #[serde(default = "yes")]
    pub mllp: bool,
}

fn default_min_tls() -> String {
    "1.2".into()
}
