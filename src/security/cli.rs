//! `huitong token` (sign a development token, print a JWKS) and `huitong audit verify`.

use super::{audit, jwt, sm};
use serde_json::{Map, Value, json};
use std::path::PathBuf;
use std::process::ExitCode;

/// `huitong token`.
#[derive(Debug, clap::Args)]
pub struct TokenArgs {
    /// Private key (PEM): RSA (RS256), P-256 (ES256) or SM2 (SM2SM3).
    #[arg(long)]
    pub key: PathBuf,
    /// Key id written into the header and the JWKS.
    #[arg(long, default_value = "huitong-dev")]
    pub kid: String,
    /// Print the public JWKS of the key instead of a token.
    #[arg(long)]
    pub jwks: bool,
    /// `sub` claim.
    #[arg(long, default_value = "dev")]
    pub sub: String,
    /// `aud` claim (the gateway's `[auth] audience`).
    #[arg(long, default_value = "huitong")]
    pub aud: String,
    /// `iss` claim.
    #[arg(long)]
    pub iss: Option<String>,
    /// SMART scopes, space-separated.
    #[arg(long, default_value = "system/*.*")]
    pub scope: String,
    /// Launch patient id (`patient` claim).
    #[arg(long)]
    pub patient: Option<String>,
    /// `fhirUser` claim (`Practitioner/1`).
    #[arg(long)]
    pub fhir_user: Option<String>,
    /// Role (`huitong_role`): treating-clinician, regional-platform, public-health, insurer,
    /// patient, auditor.
    #[arg(long)]
    pub role: Option<String>,
    /// Owner domain (`huitong_domain`).
    #[arg(long)]
    pub domain: Option<String>,
    /// Sensitive categories granted (`huitong_grants`), comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub grants: Vec<String>,
    /// Lifetime in seconds (negative: already expired, for tests).
    #[arg(long, default_value_t = 3600, allow_hyphen_values = true)]
    pub lifetime: i64,
}

/// `huitong audit ...`.
#[derive(Debug, clap::Subcommand)]
pub enum AuditCommand {
    /// Checks the hash chain (and signed heads) of the audit trail; exits 1 naming the first
    /// broken record.
    Verify {
        /// Data directory of the store.
        #[arg(long = "data", env = "HUITONG_DATA", default_value = "huitong-data")]
        data: PathBuf,
        /// The SM2 signing key (or its public key), to check the signed heads.
        #[arg(long)]
        key: Option<PathBuf>,
    },
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Runs `huitong token`.
pub fn token(a: &TokenArgs) -> ExitCode {
    let key = match std::fs::read(&a.key)
        .map_err(|e| format!("{}: {e}", a.key.display()))
        .and_then(|pem| sm::private_key_pem(&pem))
    {
        Ok(k) => k,
        Err(e) => {
            eprintln!("huitong token: {e}");
            return ExitCode::from(2);
        }
    };
    if a.jwks {
        return match jwt::public_jwk(&key, &a.kid) {
            Ok(j) => {
                println!("{}", json!({ "keys": [j] }));
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("huitong token: {e}");
                ExitCode::from(2)
            }
        };
    }
    let now = now_secs();
    let mut c = Map::new();
    c.insert("sub".into(), a.sub.clone().into());
    c.insert("aud".into(), a.aud.clone().into());
    c.insert("iat".into(), now.into());
    c.insert("exp".into(), (now + a.lifetime).into());
    c.insert("scope".into(), a.scope.clone().into());
    let opt = |c: &mut Map<String, Value>, k: &str, v: &Option<String>| {
        if let Some(v) = v {
            c.insert(k.into(), v.clone().into());
        }
    };
    opt(&mut c, "iss", &a.iss);
    opt(&mut c, "patient", &a.patient);
    opt(&mut c, "fhirUser", &a.fhir_user);
    opt(&mut c, "huitong_role", &a.role);
    opt(&mut c, "huitong_domain", &a.domain);
    if !a.grants.is_empty() {
        c.insert("huitong_grants".into(), json!(a.grants));
    }
    match jwt::sign(&key, Some(&a.kid), &Value::Object(c)) {
        Ok(t) => {
            println!("{t}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("huitong token: {e}");
            ExitCode::from(2)
        }
    }
}

/// Runs `huitong audit ...`.
pub fn audit(cmd: &AuditCommand) -> ExitCode {
    let AuditCommand::Verify { data, key } = cmd;
    let pem = match key.as_ref().map(std::fs::read).transpose() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("huitong audit verify: {e}");
            return ExitCode::from(2);
        }
    };
    match audit::verify(data, pem.as_deref()) {
        Ok(audit::Verdict::Intact { records, seals }) => {
            println!("audit trail intact: {records} records, {seals} signed heads verified");
            ExitCode::SUCCESS
        }
        Ok(audit::Verdict::Broken { seq, reason }) => {
            println!("audit trail BROKEN at record {seq}: {reason}");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("huitong audit verify: {e}");
            ExitCode::from(2)
        }
    }
}
