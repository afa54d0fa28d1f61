//! Shared support of the security tests: keys made by the `openssl` CLI, tokens, a gateway with
//! `[auth]` from a TOML snippet.
#![allow(dead_code)]

use crate::common::TestServer;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Command;

pub const AUD: &str = "https://gw.test/fhir";

/// Runs the `openssl` CLI in `dir`; panics with its output on failure.
pub fn openssl(dir: &Path, args: &[&str]) -> Vec<u8> {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the openssl CLI is installed");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Keys made with the openssl CLI and the JWKS naming them (`rsa`, `ec`, `sm2`).
pub struct Keys {
    pub dir: tempfile::TempDir,
    pub jwks: PathBuf,
}

impl Keys {
    pub fn make() -> Keys {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        openssl(
            d,
            &[
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
                "-out",
                "rsa.pem",
            ],
        );
        openssl(
            d,
            &[
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-out",
                "ec.pem",
            ],
        );
        openssl(d, &["genpkey", "-algorithm", "SM2", "-out", "sm2.pem"]);
        // A second key per kind, for forgeries (same kid, other key).
        openssl(
            d,
            &[
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-out",
                "ec-other.pem",
            ],
        );
        openssl(
            d,
            &["genpkey", "-algorithm", "SM2", "-out", "sm2-other.pem"],
        );
        let keys: Vec<Value> = ["rsa", "ec", "sm2"]
            .iter()
            .map(|k| huitong::security::jwt::public_jwk(&Self::load(d, k), k).unwrap())
            .collect();
        let jwks = d.join("jwks.json");
        std::fs::write(&jwks, json!({ "keys": keys }).to_string()).unwrap();
        Keys { dir, jwks }
    }

    fn load(d: &Path, name: &str) -> openssl::pkey::PKey<openssl::pkey::Private> {
        let pem = std::fs::read(d.join(format!("{name}.pem"))).unwrap();
        openssl::pkey::PKey::private_key_from_pem(&pem).unwrap()
    }

    /// A token signed with key file `name` under `kid`.
    pub fn sign(&self, name: &str, kid: &str, claims: &Value) -> String {
        huitong::security::jwt::sign(&Self::load(self.dir.path(), name), Some(kid), claims).unwrap()
    }

    /// A valid ES256 token with these scopes and extra claims.
    pub fn token(&self, scope: &str, extra: Value) -> String {
        self.sign("ec", "ec", &claims(scope, extra))
    }
}

pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Claims with audience, a ten-minute lifetime, the scopes, and `extra` merged in.
pub fn claims(scope: &str, extra: Value) -> Value {
    let mut c = json!({"sub": "tester", "aud": AUD, "exp": now() + 600, "scope": scope});
    if let (Some(o), Some(e)) = (c.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            o.insert(k.clone(), v.clone());
        }
    }
    c
}

/// A gateway with `[auth]` on the JWKS, plus the TOML `extra` (more tables, e.g. `[limits]`).
pub async fn gateway(keys: &Keys, extra: &str) -> TestServer {
    gateway_in(tempfile::tempdir().unwrap(), keys, extra, |_| {}).await
}

pub async fn gateway_in(
    dir: tempfile::TempDir,
    keys: &Keys,
    extra: &str,
    tweak: impl FnOnce(&mut huitong::config::Settings),
) -> TestServer {
    let text = format!(
        "[auth]\njwks-file = {:?}\naudience = \"{AUD}\"\n{extra}",
        keys.jwks.display().to_string()
    );
    let layer: huitong::config::Overrides = toml::from_str(&text).expect("test config parses");
    let resolved = huitong::config::Settings::resolve(&[&layer]).expect("test config resolves");
    TestServer::start_in(dir, move |s| {
        s.security = resolved.security;
        tweak(s);
    })
    .await
}

/// A request with a bearer token (or none), JSON body optional; returns status and JSON.
pub async fn call(
    srv: &TestServer,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> (u16, Value) {
    let mut r = srv.http.request(method, srv.url(path));
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    if let Some(b) = body {
        r = r
            .header("content-type", "application/fhir+json")
            .body(serde_json::to_vec(b).unwrap());
    }
    crate::common::json_of(r.send().await.unwrap()).await
}

/// The resource ids (`Type/id`) of a Bundle's entries.
pub fn ids(bundle: &Value) -> Vec<String> {
    let mut v: Vec<String> = bundle["entry"]
        .as_array()
        .map(|es| {
            es.iter()
                .filter_map(|e| {
                    let r = &e["resource"];
                    Some(format!(
                        "{}/{}",
                        r["resourceType"].as_str()?,
                        r["id"].as_str()?
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}
