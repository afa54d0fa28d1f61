//! Configuration: defaults, then `huitong.toml`, then `HUITONG_*` environment variables, then flags.
//!
//! [`Settings`] is the complete, resolved configuration. [`Overrides`] is one layer (every field
//! optional); the CLI parses flags and environment variables into one layer (clap reads both, flags
//! win), the config file is another, and [`Settings::resolve`] folds them over the defaults.

use serde::Deserialize;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// How much validation a write gets before it is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ValidationPolicy {
    /// Structural checks only (the parser's R4 rules).
    Off,
    /// The core definition: cardinality, required bindings, invariants, reference targets.
    Core,
    /// Core, plus every profile in `meta.profile`, plus the profiles configured for the type.
    Profiles,
}

/// What ingest does with data that breaks a named profile rule (an invariant key such as
/// `cn-id-3`, the GB 11643 check character of a 身份证号).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuleAction {
    /// Accept the data; the issue becomes a warning in the answer and the Provenance, and is
    /// counted in `/metrics`.
    Warn,
    /// Refuse the message, as for any other error.
    Reject,
}

/// The profile rules a sender's data may break on ingest by default: the GB 11643 rules of the
/// 身份证号 (cn-id-3 check character, cn-id-2 birth date, cn-id-1 format). Real feeds carry wrong
/// check characters (the WS/T 846 sample H0201), masked ids (`4201062XXX01011919`) and
/// placeholders (`121212121212121212`) in all but a few of the national samples; refusing the
/// message would lose the clinical record for a flaw of one identifier, so these are let
/// through with a warning. `$validate` still reports them as errors.
pub const DEFAULT_INGEST_RULES: &[(&str, RuleAction)] = &[
    ("cn-id-3", RuleAction::Warn),
    ("cn-id-2", RuleAction::Warn),
    ("cn-id-1", RuleAction::Warn),
];

/// The resolved configuration of a running gateway.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Address the HTTP server listens on.
    pub addr: SocketAddr,
    /// Directory of the embedded store.
    pub data_dir: PathBuf,
    /// Path prefix of the FHIR REST API.
    pub base_path: String,
    /// Absolute base URL used in `Location` headers and Bundle links; derived from `Host` when unset.
    pub public_base_url: Option<String>,
    /// Largest request body accepted, in bytes (413 beyond).
    pub max_body_bytes: usize,
    /// Deepest JSON object nesting accepted.
    pub max_depth: usize,
    /// Entries of the read cache.
    pub cache_entries: u64,
    /// Reader connections of the embedded store.
    pub store_readers: usize,
    /// Most units of work in one group commit.
    pub store_max_batch: usize,
    /// Default and largest `_count` of history pages.
    pub default_page_size: usize,
    pub max_page_size: usize,
    /// Most entries in one batch or transaction Bundle.
    pub max_bundle_entries: usize,
    pub log_format: LogFormat,
    /// tracing filter directive, e.g. `info` or `huitong=debug`.
    pub log_level: String,
    /// Folder of conformance resources (JSON files, FHIR packages) loaded at start.
    pub profiles_dir: PathBuf,
    /// Validation of writes, for every type without its own policy.
    pub validation: ValidationPolicy,
    /// Per resource type policy (`[validation-by-type]` in the config file).
    pub validation_by_type: HashMap<String, ValidationPolicy>,
    /// Profiles every resource of a type must conform to under the `profiles` policy
    /// (`[type-profiles]` in the config file).
    pub type_profiles: HashMap<String, Vec<String>>,
    /// Identifier systems made canonical over their NamingSystem's preferred one (the other
    /// systems of that NamingSystem are rewritten to it on every write).
    pub canonical_identifier_systems: Vec<String>,
    /// MLLP listener for HL7 v2 (`None`: off). `huitong serve` defaults it to 127.0.0.1:2575.
    pub mllp_addr: Option<SocketAddr>,
    /// Largest HL7 v2 message accepted over MLLP or HTTP, in bytes.
    pub hl7v2_max_message_bytes: usize,
    /// Folder holding `hl7v2/` mapping rules, loaded and checked at start.
    pub mappings_dir: PathBuf,
    /// Charset of HL7 v2 messages whose MSH-18 is empty (an MSH-18 name, e.g. `GB 18030-2000`).
    pub hl7v2_charset: String,
    /// Per sending facility (MSH-4.1) charset when MSH-18 is empty (`[hl7v2-sender-charsets]`).
    pub hl7v2_sender_charsets: HashMap<String, String>,
    /// UTC offset for v2 times that carry none.
    pub hl7v2_timezone: String,
    /// Profile rules (invariant keys) and what ingest does when a message breaks one, for every
    /// sender without its own entry (`[ingest-rules]`; [`DEFAULT_INGEST_RULES`] by default).
    /// A rule not listed refuses the message.
    pub ingest_rules: HashMap<String, RuleAction>,
    /// Per sender (the v3 sender device id, the CDA custodian id) overrides of `ingest_rules`
    /// (`[ingest-rules-by-sender.SENDER]`).
    pub ingest_rules_by_sender: HashMap<String, HashMap<String, RuleAction>>,
    /// How long a delivered subscription notification stays in the queue (the record of its
    /// latency) before the delivery task deletes it; undelivered ones are never deleted.
    pub subscription_retention: std::time::Duration,
    /// PEM file of CA certificates trusted for `https://` subscription endpoints in addition to
    /// the system's (a regional platform's private CA); certificates are always verified.
    pub subscription_ca_file: Option<PathBuf>,
    /// `[auth]`, `[access]`, `[audit]`, `[limits]`, `[tls]` (config file only).
    pub security: crate::security::SecurityConfig,
}

impl Settings {
    /// What ingest does when `sender`'s data breaks the profile rule `rule`: the sender's own
    /// entry, else the default list, else refuse.
    pub fn ingest_rule_action(&self, sender: &str, rule: &str) -> RuleAction {
        self.ingest_rules_by_sender
            .get(sender)
            .and_then(|m| m.get(rule))
            .or_else(|| self.ingest_rules.get(rule))
            .copied()
            .unwrap_or(RuleAction::Reject)
    }

    /// The validation policy of a resource type.
    pub fn validation_for(&self, resource_type: &str) -> ValidationPolicy {
        self.validation_by_type
            .get(resource_type)
            .copied()
            .unwrap_or(self.validation)
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("huitong-data"),
            base_path: "/fhir".into(),
            public_base_url: None,
            max_body_bytes: 64 * 1024 * 1024,
            max_depth: 64,
            cache_entries: 100_000,
            store_readers: 4,
            store_max_batch: 256,
            default_page_size: 50,
            max_page_size: 1000,
            max_bundle_entries: 10_000,
            log_format: LogFormat::Text,
            log_level: "info".into(),
            profiles_dir: PathBuf::from("profiles"),
            validation: ValidationPolicy::Core,
            validation_by_type: HashMap::new(),
            type_profiles: HashMap::new(),
            canonical_identifier_systems: Vec::new(),
            mllp_addr: None,
            hl7v2_max_message_bytes: 16 * 1024 * 1024,
            mappings_dir: PathBuf::from("mappings"),
            hl7v2_charset: "ASCII".into(),
            hl7v2_sender_charsets: HashMap::new(),
            hl7v2_timezone: "+08:00".into(),
            ingest_rules: DEFAULT_INGEST_RULES
                .iter()
                .map(|(k, a)| (k.to_string(), *a))
                .collect(),
            ingest_rules_by_sender: HashMap::new(),
            subscription_retention: std::time::Duration::from_secs(7 * 24 * 3600),
            subscription_ca_file: None,
            security: Default::default(),
        }
    }
}

/// One configuration layer; `None` leaves the value below in place. Field names are the TOML keys.
#[derive(Debug, Clone, Default, Deserialize, clap::Args)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Overrides {
    /// Listen address [default: 127.0.0.1:8080]
    #[arg(long, env = "HUITONG_ADDR")]
    pub addr: Option<SocketAddr>,
    /// Data directory of the embedded store [default: ./huitong-data]
    #[arg(long = "data", env = "HUITONG_DATA")]
    #[serde(alias = "data")]
    pub data_dir: Option<PathBuf>,
    /// Path prefix of the FHIR API [default: /fhir]
    #[arg(long, env = "HUITONG_BASE_PATH")]
    pub base_path: Option<String>,
    /// Public base URL for Location headers and links [default: from the Host header]
    #[arg(long, env = "HUITONG_PUBLIC_BASE_URL")]
    pub public_base_url: Option<String>,
    /// Largest request body in bytes [default: 67108864]
    #[arg(long, env = "HUITONG_MAX_BODY_BYTES")]
    pub max_body_bytes: Option<usize>,
    /// Deepest JSON object nesting accepted [default: 64]
    #[arg(long, env = "HUITONG_MAX_DEPTH")]
    pub max_depth: Option<usize>,
    /// Entries in the read cache [default: 100000]
    #[arg(long, env = "HUITONG_CACHE_ENTRIES")]
    pub cache_entries: Option<u64>,
    /// Reader connections of the embedded store [default: 4]
    #[arg(long, env = "HUITONG_STORE_READERS")]
    pub store_readers: Option<usize>,
    /// Most units of work in one group commit [default: 256]
    #[arg(long, env = "HUITONG_STORE_MAX_BATCH")]
    pub store_max_batch: Option<usize>,
    /// Default _count of history pages [default: 50]
    #[arg(long, env = "HUITONG_DEFAULT_PAGE_SIZE")]
    pub default_page_size: Option<usize>,
    /// Largest _count of history pages [default: 1000]
    #[arg(long, env = "HUITONG_MAX_PAGE_SIZE")]
    pub max_page_size: Option<usize>,
    /// Most entries in a batch or transaction [default: 10000]
    #[arg(long, env = "HUITONG_MAX_BUNDLE_ENTRIES")]
    pub max_bundle_entries: Option<usize>,
    /// Log format [default: text]
    #[arg(long, env = "HUITONG_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// Log filter, e.g. info or huitong=debug [default: info]
    #[arg(long, env = "HUITONG_LOG_LEVEL")]
    pub log_level: Option<String>,
    /// Folder of conformance resources loaded at start [default: ./profiles]
    #[arg(long = "profiles", env = "HUITONG_PROFILES")]
    #[serde(alias = "profiles")]
    pub profiles_dir: Option<PathBuf>,
    /// Validation of writes: off, core or profiles [default: core]
    #[arg(long, env = "HUITONG_VALIDATION", value_enum)]
    pub validation: Option<ValidationPolicy>,
    /// Per-type validation policy (config file only): `[validation-by-type]` `Patient = "profiles"`
    #[arg(skip)]
    pub validation_by_type: Option<HashMap<String, ValidationPolicy>>,
    /// Profiles required per type under the profiles policy (config file only):
    /// `[type-profiles]` `Patient = ["http://..."]`
    #[arg(skip)]
    pub type_profiles: Option<HashMap<String, Vec<String>>>,
    /// Identifier systems to store instead of their NamingSystem's preferred one, comma-separated
    /// (e.g. urn:oid:2.16.840.1.113883.2.23.1.19.1 to keep 身份证号 under the HL7 China OID)
    /// [default: each NamingSystem's preferred uniqueId]
    #[arg(
        long,
        env = "HUITONG_CANONICAL_IDENTIFIER_SYSTEMS",
        value_delimiter = ','
    )]
    pub canonical_identifier_systems: Option<Vec<String>>,
    /// MLLP listen address for HL7 v2, or `off` [default: 127.0.0.1:2575]
    #[arg(long, env = "HUITONG_MLLP_ADDR")]
    pub mllp_addr: Option<String>,
    /// Largest HL7 v2 message in bytes [default: 16777216]
    #[arg(long, env = "HUITONG_HL7V2_MAX_MESSAGE_BYTES")]
    pub hl7v2_max_message_bytes: Option<usize>,
    /// Folder of mapping rules (holding hl7v2/) [default: ./mappings]
    #[arg(long = "mappings", env = "HUITONG_MAPPINGS")]
    #[serde(alias = "mappings")]
    pub mappings_dir: Option<PathBuf>,
    /// Charset of v2 messages without MSH-18 [default: ASCII]
    #[arg(long, env = "HUITONG_HL7V2_CHARSET")]
    pub hl7v2_charset: Option<String>,
    /// Per sending facility charset (config file only): `[hl7v2-sender-charsets]` `HIS1 = "GBK"`
    #[arg(skip)]
    pub hl7v2_sender_charsets: Option<HashMap<String, String>>,
    /// UTC offset for v2 times without one [default: +08:00]
    #[arg(long, env = "HUITONG_HL7V2_TIMEZONE")]
    pub hl7v2_timezone: Option<String>,
    /// What ingest does when a message breaks a profile rule (config file only):
    /// `[ingest-rules]` `cn-id-3 = "warn"` (or `"reject"`)
    #[arg(skip)]
    pub ingest_rules: Option<HashMap<String, RuleAction>>,
    /// Per sender overrides (config file only): `[ingest-rules-by-sender.HIS-7]` `cn-id-3 = "reject"`
    #[arg(skip)]
    pub ingest_rules_by_sender: Option<HashMap<String, HashMap<String, RuleAction>>>,
    /// Seconds a delivered subscription notification is kept in the queue [default: 604800 (7 days)]
    #[arg(long, env = "HUITONG_SUBSCRIPTION_RETENTION_SECS")]
    pub subscription_retention_secs: Option<u64>,
    /// PEM file of extra CA certificates trusted for https:// subscription endpoints (a
    /// regional platform's private CA) [default: the system's trust store only]
    #[arg(long, env = "HUITONG_SUBSCRIPTION_CA_FILE")]
    pub subscription_ca_file: Option<PathBuf>,
    /// Authentication (config file only): `[auth]` jwks-file or jwks-url, audience, `[[auth.senders]]`
    #[arg(skip)]
    pub auth: Option<crate::security::config::AuthConfig>,
    /// Cross-domain and sensitive-data policy (config file only): `[access]`
    #[arg(skip)]
    pub access: Option<crate::security::config::AccessConfig>,
    /// The audit trail (config file only): `[audit]`
    #[arg(skip)]
    pub audit: Option<crate::security::config::AuditConfig>,
    /// Abuse limits (config file only): `[limits]`
    #[arg(skip)]
    pub limits: Option<crate::security::config::LimitsConfig>,
    /// HTTPS and MLLP over TLS (config file only): `[tls]`
    #[arg(skip)]
    pub tls: Option<crate::security::config::TlsConfig>,
}

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {0}: {1}")]
    Read(PathBuf, std::io::Error),
    #[error("config file {0}: {1}")]
    Parse(PathBuf, toml::de::Error),
    #[error("invalid setting: {0}")]
    Invalid(String),
}

impl Overrides {
    /// Reads a TOML config file layer.
    pub fn from_file(path: &Path) -> Result<Overrides, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|e| ConfigError::Read(path.to_path_buf(), e))?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse(path.to_path_buf(), e))
    }
}

impl Settings {
    /// Folds layers over the defaults, lowest first.
    pub fn resolve(layers: &[&Overrides]) -> Result<Settings, ConfigError> {
        let mut s = Settings::default();
        for l in layers {
            macro_rules! take {
                ($($f:ident),*) => { $( if let Some(v) = l.$f.clone() { s.$f = v; } )* };
            }
            take!(
                addr,
                data_dir,
                base_path,
                max_body_bytes,
                max_depth,
                cache_entries,
                store_readers,
                store_max_batch
            );
            take!(
                default_page_size,
                max_page_size,
                max_bundle_entries,
                log_format,
                log_level,
                profiles_dir,
                validation,
                canonical_identifier_systems
            );
            if let Some(m) = &l.validation_by_type {
                s.validation_by_type.extend(m.clone());
            }
            if let Some(m) = &l.type_profiles {
                s.type_profiles.extend(m.clone());
            }
            take!(
                hl7v2_max_message_bytes,
                mappings_dir,
                hl7v2_charset,
                hl7v2_timezone
            );
            if l.subscription_ca_file.is_some() {
                s.subscription_ca_file = l.subscription_ca_file.clone();
            }
            if let Some(secs) = l.subscription_retention_secs {
                s.subscription_retention = std::time::Duration::from_secs(secs);
            }
            if let Some(m) = &l.hl7v2_sender_charsets {
                s.hl7v2_sender_charsets.extend(m.clone());
            }
            if let Some(m) = &l.ingest_rules {
                s.ingest_rules.extend(m.clone());
            }
            for (sender, m) in l.ingest_rules_by_sender.iter().flatten() {
                s.ingest_rules_by_sender
                    .entry(sender.clone())
                    .or_default()
                    .extend(m.clone());
            }
            if let Some(a) = &l.mllp_addr {
                s.mllp_addr = if a == "off" {
                    None
                } else {
                    Some(a.parse().map_err(|_| {
                        ConfigError::Invalid(format!("mllp-addr '{a}' is not host:port or off"))
                    })?)
                };
            }
            if l.public_base_url.is_some() {
                s.public_base_url = l.public_base_url.clone();
            }
            if l.auth.is_some() {
                s.security.auth = l.auth.clone();
            }
            if let Some(a) = &l.access {
                s.security.access = a.clone();
            }
            if l.audit.is_some() {
                s.security.audit = l.audit.clone();
            }
            if let Some(a) = &l.limits {
                s.security.limits = a.clone();
            }
            if l.tls.is_some() {
                s.security.tls = l.tls.clone();
            }
        }
        s.validate()?;
        Ok(s)
    }

    fn validate(&mut self) -> Result<(), ConfigError> {
        let b = self.base_path.trim_end_matches('/');
        if !b.starts_with('/') || b.contains(['?', '#', '{', '}']) {
            return Err(ConfigError::Invalid(format!(
                "base-path '{}' must start with '/'",
                self.base_path
            )));
        }
        self.base_path = b.to_string();
        if let Some(u) = &self.public_base_url {
            self.public_base_url = Some(u.trim_end_matches('/').to_string());
        }
        if self.default_page_size == 0 || self.default_page_size > self.max_page_size {
            return Err(ConfigError::Invalid(
                "default-page-size must be between 1 and max-page-size".into(),
            ));
        }
        if self.store_readers == 0 || self.store_max_batch == 0 {
            return Err(ConfigError::Invalid(
                "store-readers and store-max-batch must be at least 1".into(),
            ));
        }
        let charsets =
            std::iter::once(&self.hl7v2_charset).chain(self.hl7v2_sender_charsets.values());
        for c in charsets {
            if crate::ingest::hl7v2::Charset::from_msh18(c).is_none() {
                return Err(ConfigError::Invalid(format!(
                    "'{c}' is not an HL7 v2 character set (MSH-18 names: ASCII, 8859/1, UNICODE UTF-8, GB 18030-2000, GBK, ...)"
                )));
            }
        }
        if let Some(p) = &self.subscription_ca_file {
            subscription_ca_certificates(p).map_err(ConfigError::Invalid)?;
        }
        Ok(())
    }
}

/// The CA certificates (DER) of the `subscription-ca-file`: read at start, so a missing or
/// unreadable file stops the gateway instead of failing every https delivery later.
pub fn subscription_ca_certificates(path: &Path) -> Result<Vec<Vec<u8>>, String> {
    let what = || format!("subscription-ca-file '{}'", path.display());
    let pem = std::fs::read(path).map_err(|e| format!("{}: {e}", what()))?;
    let certs = openssl::x509::X509::stack_from_pem(&pem)
        .map_err(|e| format!("{}: not PEM certificates: {e}", what()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate in it", what()));
    }
    certs
        .iter()
        .map(|c| c.to_der().map_err(|e| format!("{}: {e}", what())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_apply_in_order() {
        let file: Overrides =
            toml::from_str("addr = \"127.0.0.1:9000\"\nbase-path = \"/api/fhir/\"\nmax-depth = 10")
                .unwrap();
        let flags = Overrides {
            max_depth: Some(20),
            ..Default::default()
        };
        let s = Settings::resolve(&[&file, &flags]).unwrap();
        assert_eq!(s.addr.port(), 9000);
        assert_eq!(s.base_path, "/api/fhir");
        assert_eq!(s.max_depth, 20);
        assert_eq!(s.default_page_size, 50);
    }

    #[test]
    fn validation_policies_per_type() {
        let file: Overrides = toml::from_str(
            "validation = \"core\"\n[validation-by-type]\nPatient = \"profiles\"\nBinary = \"off\"\n[type-profiles]\nPatient = [\"http://x/p\"]",
        )
        .unwrap();
        let s = Settings::resolve(&[&file]).unwrap();
        assert_eq!(s.validation_for("Patient"), ValidationPolicy::Profiles);
        assert_eq!(s.validation_for("Binary"), ValidationPolicy::Off);
        assert_eq!(s.validation_for("Observation"), ValidationPolicy::Core);
        assert_eq!(s.type_profiles["Patient"], vec!["http://x/p".to_string()]);
    }

    #[test]
    fn ingest_rules_default_per_sender_and_unlisted() {
        let s = Settings::resolve(&[]).unwrap();
        assert_eq!(s.ingest_rule_action("any", "cn-id-3"), RuleAction::Warn);
        assert_eq!(
            s.ingest_rule_action("any", "cn-pat-sex"),
            RuleAction::Reject
        );
        let file: Overrides = toml::from_str(
            "[ingest-rules]\ncn-uscc-2 = \"warn\"\n[ingest-rules-by-sender.HIS-7]\ncn-id-3 = \"reject\"",
        )
        .unwrap();
        let s = Settings::resolve(&[&file]).unwrap();
        assert_eq!(s.ingest_rule_action("HIS-7", "cn-id-3"), RuleAction::Reject);
        assert_eq!(s.ingest_rule_action("HIS-7", "cn-uscc-2"), RuleAction::Warn);
        assert_eq!(s.ingest_rule_action("HIS-8", "cn-id-3"), RuleAction::Warn);
        assert!(toml::from_str::<Overrides>("[ingest-rules]\ncn-id-3 = \"ignore\"").is_err());
    }

    /// The extra CA file is a setting like the others (file, flag, env), and a file that is not
    /// there or holds no certificate stops the start.
    #[test]
    fn subscription_ca_file_must_hold_certificates() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let file: Overrides = toml::from_str(&format!(
            "subscription-ca-file = {:?}",
            missing.display().to_string()
        ))
        .unwrap();
        let e = Settings::resolve(&[&file]).unwrap_err().to_string();
        assert!(
            e.starts_with("invalid setting: subscription-ca-file '"),
            "{e}"
        );
        let not_pem = dir.path().join("ca.pem");
        std::fs::write(&not_pem, "省平台 CA\n").unwrap();
        let layer = Overrides {
            subscription_ca_file: Some(not_pem.clone()),
            ..Default::default()
        };
        let e = Settings::resolve(&[&layer]).unwrap_err().to_string();
        assert!(
            e.contains("no certificate in it") || e.contains("not PEM"),
            "{e}"
        );
        let key = openssl::pkey::PKey::from_ec_key(
            openssl::ec::EcKey::generate(
                &openssl::ec::EcGroup::from_curve_name(openssl::nid::Nid::X9_62_PRIME256V1)
                    .unwrap(),
            )
            .unwrap(),
        )
        .unwrap();
        let mut name = openssl::x509::X509NameBuilder::new().unwrap();
        name.append_entry_by_text("CN", "Regional Platform CA")
            .unwrap();
        let name = name.build();
        let mut b = openssl::x509::X509::builder().unwrap();
        b.set_subject_name(&name).unwrap();
        b.set_issuer_name(&name).unwrap();
        b.set_pubkey(&key).unwrap();
        b.set_not_before(&openssl::asn1::Asn1Time::days_from_now(0).unwrap())
            .unwrap();
        b.set_not_after(&openssl::asn1::Asn1Time::days_from_now(1).unwrap())
            .unwrap();
        b.sign(&key, openssl::hash::MessageDigest::sha256())
            .unwrap();
        std::fs::write(&not_pem, b.build().to_pem().unwrap()).unwrap();
        let s = Settings::resolve(&[&layer]).unwrap();
        assert_eq!(s.subscription_ca_file.as_deref(), Some(not_pem.as_path()));
        assert_eq!(subscription_ca_certificates(&not_pem).unwrap().len(), 1);
        assert!(toml::from_str::<Overrides>("subscription-ca = \"x\"").is_err());
    }

    #[test]
    fn unknown_keys_and_bad_values_are_rejected() {
        assert!(toml::from_str::<Overrides>("adr = \"x\"").is_err());
        let bad = Overrides {
            base_path: Some("fhir".into()),
            ..Default::default()
        };
        assert!(Settings::resolve(&[&bad]).is_err());
    }
}
