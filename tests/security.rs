//! Security over real sockets: tokens (RS256, ES256, SM2 from keys made by the openssl CLI),
//! SMART scopes, patient isolation, domains, sensitive labels, Consent, audit and its tamper
//! detection, abuse limits, hostile input, TLS.

mod common;
mod security_support;

use common::{TestServer, json_of};
use reqwest::Method;
use security_support::*;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn obs(id: &str, patient: &str, category: &str) -> Value {
    json!({
        "resourceType": "Observation", "id": id, "status": "final",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": category}]}],
        "code": {"text": "test"},
        "subject": {"reference": format!("Patient/{patient}")},
    })
}

fn patient(id: &str, family: &str) -> Value {
    json!({"resourceType": "Patient", "id": id, "name": [{"family": family}]})
}

/// Writes as the operator (system/*.*, no domain).
async fn seed(srv: &TestServer, keys: &Keys, resources: &[Value]) {
    let op = keys.token("system/*.*", json!({}));
    for r in resources {
        let path = format!(
            "{}/{}",
            r["resourceType"].as_str().unwrap(),
            r["id"].as_str().unwrap()
        );
        let (s, v) = call(srv, Method::PUT, &path, Some(&op), Some(r)).await;
        assert!(s == 200 || s == 201, "seed {path}: {s} {v}");
    }
}

async fn expect_401(srv: &TestServer, token: Option<&str>, what: &str) {
    let (s, v) = call(srv, Method::GET, "Patient", token, None).await;
    assert_eq!(s, 401, "{what}: {v}");
    assert_eq!(v["resourceType"], "OperationOutcome", "{what}");
    assert_eq!(v["issue"][0]["code"], "login", "{what}");
}

#[tokio::test]
async fn tokens_of_each_algorithm_verify_and_bad_ones_get_401() {
    let keys = Keys::make();
    let srv = gateway(&keys, "").await;
    // The CapabilityStatement stays public; everything else needs a token.
    let (s, _) = call(&srv, Method::GET, "metadata", None, None).await;
    assert_eq!(s, 200);
    expect_401(&srv, None, "no token").await;
    let c = claims("system/*.*", json!({}));
    for kid in ["rsa", "ec", "sm2"] {
        let t = keys.sign(kid, kid, &c);
        let (s, v) = call(&srv, Method::GET, "Patient", Some(&t), None).await;
        assert_eq!(s, 200, "{kid}: {v}");
    }
    let expired = claims("system/*.*", json!({"exp": now() - 3600}));
    expect_401(&srv, Some(&keys.sign("ec", "ec", &expired)), "expired").await;
    let elsewhere = claims("system/*.*", json!({"aud": "https://other.test"}));
    expect_401(
        &srv,
        Some(&keys.sign("ec", "ec", &elsewhere)),
        "wrong audience",
    )
    .await;
    expect_401(&srv, Some(&keys.sign("ec-other", "ec", &c)), "forged ES256").await;
    expect_401(&srv, Some(&keys.sign("sm2-other", "sm2", &c)), "forged SM2").await;
    // A valid token with a flipped payload byte.
    let t = keys.sign("rsa", "rsa", &c);
    let mut parts: Vec<String> = t.split('.').map(str::to_string).collect();
    parts[1] = security_support_b64(&claims("system/*.*", json!({"sub": "mallory"})));
    expect_401(&srv, Some(&parts.join(".")), "payload swapped").await;
    expect_401(&srv, Some("not-a-token"), "garbage").await;
    println!("security tokens: RS256, ES256, SM2SM3 accepted; 7 bad tokens refused with 401");
    srv.stop().await;
}

/// `huitong_token_cache_total{result=...}` from `/metrics` (hit, miss).
async fn token_cache_counts(srv: &TestServer, token: &str) -> (u64, u64) {
    let text = srv
        .http
        .get(format!("{}/metrics", srv.root))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let count = |result: &str| {
        let name = format!("huitong_token_cache_total{{result=\"{result}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(name.as_str()))
            .unwrap_or_else(|| panic!("no {name} in /metrics: {text}"))
            .parse::<u64>()
            .unwrap()
    };
    (count("hit"), count("miss"))
}

#[tokio::test]
async fn a_verified_token_is_cached_until_it_expires_and_forgeries_are_not_served_from_it() {
    let keys = Keys::make();
    // No leeway, so a token expires the second its `exp` has passed.
    let srv = gateway(&keys, "leeway-secs = 0\n").await;
    let c = claims("system/*.*", json!({}));
    let t = keys.sign("ec", "ec", &c);
    for i in 0..5 {
        let (s, v) = call(&srv, Method::GET, "Patient", Some(&t), None).await;
        assert_eq!(s, 200, "use {i}: {v}");
    }
    // One signature verification, four answers from the cache (the metrics call is a fifth).
    assert_eq!(token_cache_counts(&srv, &t).await, (5, 1));

    // The same header and claims under another key's signature, and the valid signature with one
    // byte changed: other tokens, verified afresh and refused, while the real one stays valid.
    let forged = keys.sign("ec-other", "ec", &c);
    let (h, rest) = t.split_once('.').unwrap();
    let (p, _) = rest.split_once('.').unwrap();
    let forged_sig = forged.rsplit('.').next().unwrap();
    let same_claims_forged_sig = format!("{h}.{p}.{forged_sig}");
    assert_ne!(same_claims_forged_sig, t);
    let mut flipped = t.clone().into_bytes();
    let last = flipped.len() - 2;
    flipped[last] = if flipped[last] == b'A' { b'B' } else { b'A' };
    let flipped = String::from_utf8(flipped).unwrap();
    for (what, bad) in [
        ("other key's signature", &same_claims_forged_sig),
        ("changed signature byte", &flipped),
    ] {
        for _ in 0..2 {
            let (s, v) = call(&srv, Method::GET, "Patient", Some(bad), None).await;
            assert_eq!(s, 401, "{what}: {v}");
            let text = v["issue"][0]["diagnostics"].as_str().unwrap_or("");
            assert!(text.contains("signature does not verify"), "{what}: {v}");
        }
    }
    let (hits, misses) = token_cache_counts(&srv, &t).await;
    assert_eq!(
        (hits, misses),
        (6, 5),
        "each forgery is verified every time"
    );

    // A token valid for two more seconds is cached, then refused once its `exp` has passed.
    let exp = now() + 2;
    let short = keys.sign("ec", "ec", &claims("system/*.*", json!({"exp": exp})));
    for _ in 0..2 {
        let (s, v) = call(&srv, Method::GET, "Patient", Some(&short), None).await;
        assert_eq!(s, 200, "{v}");
    }
    assert_eq!(
        token_cache_counts(&srv, &t).await,
        (8, 6),
        "the short token was cached"
    );
    while now() <= exp {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    for _ in 0..2 {
        let (s, v) = call(&srv, Method::GET, "Patient", Some(&short), None).await;
        assert_eq!(s, 401, "expired: {v}");
        let text = v["issue"][0]["diagnostics"].as_str().unwrap_or("");
        assert!(text.contains("expired"), "{v}");
    }
    // The long-lived token is still served from the cache.
    let (s, _) = call(&srv, Method::GET, "Patient", Some(&t), None).await;
    assert_eq!(s, 200);
    println!(
        "security token cache: 1 verification for 6 uses; forgeries and an expired cached token refused"
    );
    srv.stop().await;
}

fn security_support_b64(v: &Value) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
}

/// A JWKS endpoint on a real socket: serves whatever key set it holds now, counts its fetches.
struct JwksServer {
    url: String,
    keys: std::sync::Arc<std::sync::Mutex<Value>>,
    fetches: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl JwksServer {
    async fn start(keys: Value) -> JwksServer {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::{Arc, Mutex};
        let keys = Arc::new(Mutex::new(keys));
        let fetches = Arc::new(AtomicUsize::new(0));
        let (k, f) = (keys.clone(), fetches.clone());
        let app = axum::Router::new().route(
            "/jwks.json",
            axum::routing::get(move || {
                let (k, f) = (k.clone(), f.clone());
                async move {
                    f.fetch_add(1, Ordering::SeqCst);
                    let body = k.lock().unwrap().to_string();
                    (
                        [
                            ("content-type", "application/jwk-set+json"),
                            ("cache-control", "public, max-age=3600"),
                        ],
                        body,
                    )
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        JwksServer { url, keys, fetches }
    }

    fn fetched(&self) -> usize {
        self.fetches.load(std::sync::atomic::Ordering::SeqCst)
    }
}

fn jwk_of(keys: &Keys, file: &str, kid: &str) -> Value {
    let pem = std::fs::read(keys.dir.path().join(format!("{file}.pem"))).unwrap();
    let key = openssl::pkey::PKey::private_key_from_pem(&pem).unwrap();
    huitong::security::jwt::public_jwk(&key, kid).unwrap()
}

fn settings_with_auth(auth: &str) -> huitong::config::Settings {
    let layer: huitong::config::Overrides = toml::from_str(auth).expect("test config parses");
    huitong::config::Settings::resolve(&[&layer]).expect("test config resolves")
}

#[tokio::test]
async fn jwks_from_a_url_is_fetched_cached_and_refreshed_on_an_unknown_kid() {
    let keys = Keys::make();
    let jwks = JwksServer::start(json!({ "keys": [jwk_of(&keys, "ec", "k1")] })).await;
    // A refresh for an unknown kid at most once an hour: the test runs well inside one window.
    let resolved = settings_with_auth(&format!(
        "[auth]\njwks-url = \"{}\"\naudience = \"{AUD}\"\njwks-min-refresh-secs = 3600\n",
        jwks.url
    ));
    let srv = TestServer::start_in(tempfile::tempdir().unwrap(), move |s| {
        s.security = resolved.security
    })
    .await;
    assert_eq!(jwks.fetched(), 1, "fetched once at start");
    let c = claims("system/*.*", json!({}));
    let t1 = keys.sign("ec", "k1", &c);
    for _ in 0..3 {
        let (s, v) = call(&srv, Method::GET, "Patient", Some(&t1), None).await;
        assert_eq!(s, 200, "{v}");
    }
    assert_eq!(jwks.fetched(), 1, "the keys are cached");

    // The provider rotates to a new key: a token under the new kid makes the gateway fetch again.
    *jwks.keys.lock().unwrap() = json!({ "keys": [jwk_of(&keys, "ec-other", "k2")] });
    let t2 = keys.sign("ec-other", "k2", &c);
    let (s, v) = call(&srv, Method::GET, "Patient", Some(&t2), None).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(jwks.fetched(), 2);
    let (s, _) = call(&srv, Method::GET, "Patient", Some(&t2), None).await;
    assert_eq!(s, 200);

    // Forgeries: the old key under the new kid, and made-up kids, get 401; made-up kids do not
    // make it fetch again inside the rate limit, and the rotated-out key no longer verifies.
    let forged = keys.sign("ec", "k2", &c);
    expect_401(&srv, Some(&forged), "old key under the new kid").await;
    for kid in ["k3", "k4", "k5"] {
        expect_401(&srv, Some(&keys.sign("ec", kid, &c)), kid).await;
    }
    // t1 was verified and cached under the old key set: the new set makes it verify again.
    expect_401(&srv, Some(&t1), "rotated-out key").await;
    assert_eq!(jwks.fetched(), 2, "unknown kids are rate-limited");
    srv.stop().await;

    // Start-up: plain http to another host and an unreachable URL are refused with the reason.
    for (url, why) in [
        (
            "http://sso.example.cn/jwks.json",
            "only to a loopback address",
        ),
        ("http://127.0.0.1:1/jwks.json", "cannot fetch JWKS"),
    ] {
        let s = settings_with_auth(&format!(
            "[auth]\njwks-url = \"{url}\"\naudience = \"{AUD}\"\n"
        ));
        let e = huitong::security::Security::start(&s).await.unwrap_err();
        assert!(e.contains(why), "{url}: {e}");
    }
}

#[tokio::test]
async fn sm2_token_signed_by_the_openssl_cli_with_the_default_id_is_accepted() {
    let keys = Keys::make();
    let srv = gateway(&keys, "").await;
    let d = keys.dir.path();
    let header = security_support_b64(&json!({"alg": "SM2SM3", "kid": "sm2", "typ": "JWT"}));
    let payload = security_support_b64(&claims("system/*.*", json!({})));
    let input = format!("{header}.{payload}");
    std::fs::write(d.join("input"), &input).unwrap();
    for (id, expect) in [("1234567812345678", 200), ("0000000000000000", 401)] {
        let der = openssl(
            d,
            &[
                "dgst",
                "-sm3",
                "-sign",
                "sm2.pem",
                "-sigopt",
                &format!("distid:{id}"),
                "input",
            ],
        );
        let raw = huitong::security::jwt::der_to_raw(&der).unwrap();
        use base64::Engine;
        let t = format!(
            "{input}.{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
        );
        let (s, v) = call(&srv, Method::GET, "Patient", Some(&t), None).await;
        assert_eq!(s, expect, "distid {id}: {v}");
    }
    srv.stop().await;
}

#[tokio::test]
async fn huitong_token_command_issues_tokens_the_gateway_accepts() {
    let keys = Keys::make();
    let srv = gateway(&keys, "").await;
    let key = keys.dir.path().join("sm2.pem");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_huitong"))
        .args([
            "token",
            "--key",
            key.to_str().unwrap(),
            "--kid",
            "sm2",
            "--aud",
            AUD,
        ])
        .args(["--scope", "user/Patient.rs"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let t = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let (s, _) = call(&srv, Method::GET, "Patient", Some(&t), None).await;
    assert_eq!(s, 200);
    let (s, _) = call(&srv, Method::GET, "Observation", Some(&t), None).await;
    assert_eq!(s, 403, "user/Patient.rs does not reach Observation");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_huitong"))
        .args([
            "token",
            "--key",
            key.to_str().unwrap(),
            "--jwks",
            "--kid",
            "k9",
        ])
        .output()
        .unwrap();
    let jwks: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(jwks["keys"][0]["crv"], "SM2");
    srv.stop().await;
}

#[tokio::test]
async fn scope_forms_are_enforced_per_interaction() {
    let keys = Keys::make();
    let srv = gateway(&keys, "").await;
    seed(
        &srv,
        &keys,
        &[
            patient("a", "Alpha"),
            obs("lab", "a", "laboratory"),
            obs("vs", "a", "vital-signs"),
        ],
    )
    .await;
    let clinician = keys.token("user/Observation.cruds", json!({}));
    let (s, _) = call(&srv, Method::GET, "Observation/lab", Some(&clinician), None).await;
    assert_eq!(s, 200);
    let (s, v) = call(
        &srv,
        Method::POST,
        "Observation",
        Some(&clinician),
        Some(&obs("x", "a", "vital-signs")),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    let (s, _) = call(&srv, Method::GET, "Patient/a", Some(&clinician), None).await;
    assert_eq!(s, 403, "no scope on Patient");
    let (s, _) = call(
        &srv,
        Method::DELETE,
        "Observation/x",
        Some(&clinician),
        None,
    )
    .await;
    assert!(s == 200 || s == 204, "delete: {s}");
    let reader = keys.token("patient/*.rs", json!({"patient": "a"}));
    let (s, v) = call(
        &srv,
        Method::PUT,
        "Observation/vs",
        Some(&reader),
        Some(&obs("vs", "a", "vital-signs")),
    )
    .await;
    assert_eq!(s, 403, "read-only scope may not update: {v}");
    let (s, _) = call(&srv, Method::POST, "$reindex", Some(&reader), None).await;
    assert_eq!(s, 403, "operator operations");
    // `?param=` restriction: laboratory only.
    let lab_only = keys.token(
        "user/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category|laboratory",
        json!({}),
    );
    let (s, _) = call(&srv, Method::GET, "Observation/lab", Some(&lab_only), None).await;
    assert_eq!(s, 200);
    let (s, _) = call(&srv, Method::GET, "Observation/vs", Some(&lab_only), None).await;
    assert_eq!(s, 404, "outside the restriction: hidden");
    let (_, b) = call(&srv, Method::GET, "Observation", Some(&lab_only), None).await;
    assert_eq!(ids(&b), vec!["Observation/lab"]);
    // v1 forms.
    let v1 = keys.token("user/*.read", json!({}));
    let (s, _) = call(&srv, Method::GET, "Patient/a", Some(&v1), None).await;
    assert_eq!(s, 200);
    let (s, _) = call(
        &srv,
        Method::PUT,
        "Patient/a",
        Some(&v1),
        Some(&patient("a", "Alpha")),
    )
    .await;
    assert_eq!(s, 403);
    // Ingest endpoints need a sender with create on every type.
    let r = srv
        .http
        .post(format!("{}/hl7v2", srv.root))
        .bearer_auth(&v1)
        .body("MSH|")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
    srv.stop().await;
}

#[tokio::test]
async fn a_patient_token_cannot_reach_another_patients_observation() {
    let keys = Keys::make();
    let srv = gateway(&keys, "").await;
    seed(
        &srv,
        &keys,
        &[
            patient("a", "Alpha"),
            patient("b", "Beta"),
            obs("oa", "a", "laboratory"),
            obs("ob", "b", "laboratory"),
        ],
    )
    .await;
    let t = keys.token("patient/*.cruds", json!({"patient": "a"}));
    let get = |p: &'static str| {
        let (srv, t) = (&srv, t.clone());
        async move { call(srv, Method::GET, p, Some(&t), None).await }
    };
    let (_, b) = get("Observation").await;
    assert_eq!(ids(&b), vec!["Observation/oa"], "plain search");
    let (_, b) = get("Observation?subject=Patient/b").await;
    assert_eq!(
        ids(&b),
        Vec::<String>::new(),
        "search naming the other patient"
    );
    let (_, b) = get("Observation?subject.family=Beta").await;
    assert_eq!(ids(&b), Vec::<String>::new(), "chaining");
    let (_, b) = get("Observation?_include=Observation:subject").await;
    assert_eq!(ids(&b), vec!["Observation/oa", "Patient/a"], "_include");
    let (_, b) = get("Patient?_revinclude=Observation:subject").await;
    assert_eq!(ids(&b), vec!["Observation/oa", "Patient/a"], "_revinclude");
    let (_, b) = get("Patient/b/Observation").await;
    assert_eq!(ids(&b), Vec::<String>::new(), "the other compartment");
    let (s, _) = get("Observation/ob").await;
    assert_eq!(s, 404, "read");
    let (s, _) = get("Patient/b").await;
    assert_eq!(s, 404, "read of the other patient");
    let (_, b) = get("Observation/ob/_history").await;
    assert_eq!(ids(&b), Vec::<String>::new(), "instance history");
    let (_, b) = get("_history").await;
    assert!(
        !ids(&b)
            .iter()
            .any(|i| i.ends_with("/b") || i.ends_with("/ob")),
        "system history {b}"
    );
    let (s, _) = get("Observation/ob/_history/1").await;
    assert_eq!(s, 404, "vread");
    // Transaction: a GET entry of the other patient's data comes back without it; a write into
    // the other compartment is refused whole.
    let batch = json!({"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "GET", "url": "Observation/ob"}},
        {"request": {"method": "GET", "url": "Observation?subject=Patient/b"}},
    ]});
    let (s, v) = call(&srv, Method::POST, "", Some(&t), Some(&batch)).await;
    assert_eq!(s, 200, "{v}");
    assert!(!v.to_string().contains("\"ob\""), "batch leaks: {v}");
    let tx = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": obs("new", "b", "laboratory"), "request": {"method": "PUT", "url": "Observation/new"}},
    ]});
    let (s, v) = call(&srv, Method::POST, "", Some(&t), Some(&tx)).await;
    assert_eq!(s, 403, "{v}");
    let tx = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"request": {"method": "DELETE", "url": "Observation/ob"}},
    ]});
    let (s, _) = call(&srv, Method::POST, "", Some(&t), Some(&tx)).await;
    assert_eq!(s, 404, "deleting the other patient's data: hidden");
    let (s, _) = call(
        &srv,
        Method::GET,
        "Observation/ob",
        Some(&keys.token("system/*.*", json!({}))),
        None,
    )
    .await;
    assert_eq!(s, 200, "still there");
    srv.stop().await;
}

const ACCESS: &str = r#"
[access.roles.treating-clinician]
cross-domain-read = ["clinical", "administrative"]
[access.roles.insurer]
cross-domain-read = ["financial"]
[access.roles.psychiatrist]
cross-domain-read = ["clinical"]
sensitive = ["PSY"]
"#;

#[tokio::test]
async fn domains_roles_sensitive_labels_and_consent() {
    let keys = Keys::make();
    let srv = gateway(&keys, ACCESS).await;
    let a = keys.token(
        "user/*.cruds",
        json!({"huitong_role": "treating-clinician", "huitong_domain": "hosp-a"}),
    );
    let b = keys.token("user/*.cruds", json!({"huitong_role": "treating-clinician", "huitong_domain": "hosp-b", "fhirUser": "Practitioner/b1"}));
    let insurer = keys.token(
        "user/*.rs",
        json!({"huitong_role": "insurer", "huitong_domain": "nhsa"}),
    );
    let psy = keys.token(
        "user/*.rs",
        json!({"huitong_role": "psychiatrist", "huitong_domain": "hosp-c"}),
    );
    // Writes are tagged with the writer's domain.
    let (s, v) = call(
        &srv,
        Method::PUT,
        "Patient/p",
        Some(&a),
        Some(&patient("p", "Pi")),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    let (s, v) = call(
        &srv,
        Method::PUT,
        "Observation/o1",
        Some(&a),
        Some(&obs("o1", "p", "laboratory")),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    let tag = &v["meta"]["tag"][0];
    assert_eq!(
        (tag["system"].as_str(), tag["code"].as_str()),
        (Some("urn:huitong:domain"), Some("hosp-a"))
    );
    // Another domain may read clinical data across domains but not change it.
    let (s, _) = call(&srv, Method::GET, "Observation/o1", Some(&b), None).await;
    assert_eq!(s, 200);
    let (s, v) = call(
        &srv,
        Method::PUT,
        "Observation/o1",
        Some(&b),
        Some(&obs("o1", "p", "laboratory")),
    )
    .await;
    assert_eq!(s, 403, "cross-domain write: {v}");
    let mut foreign = obs("o2", "p", "laboratory");
    foreign["meta"] = json!({"tag": [{"system": "urn:huitong:domain", "code": "hosp-a"}]});
    let (s, _) = call(
        &srv,
        Method::PUT,
        "Observation/o2",
        Some(&b),
        Some(&foreign),
    )
    .await;
    assert_eq!(s, 403, "writing into another domain by tag");
    let (s, _) = call(&srv, Method::DELETE, "Observation/o1", Some(&b), None).await;
    assert_eq!(s, 403, "cross-domain delete");
    // The insurer reads financial data only across domains.
    let (s, _) = call(&srv, Method::GET, "Observation/o1", Some(&insurer), None).await;
    assert_eq!(s, 404);
    // Sensitive: a PSY-labelled observation needs the grant.
    let mut sens = obs("o3", "p", "laboratory");
    sens["meta"] = json!({"security": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "PSY"}]});
    let (s, v) = call(&srv, Method::PUT, "Observation/o3", Some(&a), Some(&sens)).await;
    assert_eq!(s, 201, "{v}");
    let (s, _) = call(&srv, Method::GET, "Observation/o3", Some(&b), None).await;
    assert_eq!(s, 404, "no PSY grant");
    let (s, _) = call(&srv, Method::GET, "Observation/o3", Some(&psy), None).await;
    assert_eq!(s, 200, "role grant PSY");
    let (_, bundle) = call(
        &srv,
        Method::GET,
        "Observation?subject=Patient/p",
        Some(&b),
        None,
    )
    .await;
    assert_eq!(
        ids(&bundle),
        vec!["Observation/o1"],
        "search drops the sensitive one"
    );
    // Consent: the patient denies hosp-b's practitioner.
    let consent = json!({
        "resourceType": "Consent", "id": "c1", "status": "active",
        "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]},
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"reference": "Patient/p"},
        "policyRule": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "OPTOUT"}]},
        "provision": {"type": "deny", "actor": [{
            "role": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "PRCP"}]},
            "reference": {"reference": "Practitioner/b1"}}]},
    });
    let (s, v) = call(&srv, Method::PUT, "Consent/c1", Some(&a), Some(&consent)).await;
    assert_eq!(s, 201, "{v}");
    let (s, _) = call(&srv, Method::GET, "Observation/o1", Some(&b), None).await;
    assert_eq!(s, 404, "consent deny on read");
    let (_, bundle) = call(
        &srv,
        Method::GET,
        "Observation?subject=Patient/p",
        Some(&b),
        None,
    )
    .await;
    assert_eq!(ids(&bundle), Vec::<String>::new(), "consent deny on search");
    let (_, bundle) = call(
        &srv,
        Method::GET,
        "Consent?_include=Consent:patient",
        Some(&b),
        None,
    )
    .await;
    assert!(
        !ids(&bundle).contains(&"Patient/p".to_string()),
        "consent deny on _include"
    );
    let (s, _) = call(&srv, Method::GET, "Observation/o1", Some(&a), None).await;
    assert_eq!(s, 200, "the consent names hosp-b's practitioner only");
    srv.stop().await;
}

#[tokio::test]
async fn hidden_status_can_be_403() {
    let keys = Keys::make();
    let srv = gateway(&keys, "[access]\nhidden-status = 403\n").await;
    seed(&srv, &keys, &[patient("a", "A"), patient("b", "B")]).await;
    let t = keys.token("patient/*.rs", json!({"patient": "a"}));
    let (s, v) = call(&srv, Method::GET, "Patient/b", Some(&t), None).await;
    assert_eq!(s, 403, "{v}");
    // The same answer for a resource that does not exist at all would be 404 from the handler;
    // 403 mode is for deployments that prefer it to hiding.
    srv.stop().await;
}

async fn audit_events(srv: &TestServer, keys: &Keys, query: &str) -> Vec<Value> {
    let auditor = keys.token(
        "user/AuditEvent.rs",
        json!({"huitong_role": "auditor", "sub": "auditor"}),
    );
    let (s, b) = call(
        srv,
        Method::GET,
        &format!("AuditEvent?{query}"),
        Some(&auditor),
        None,
    )
    .await;
    assert_eq!(s, 200, "{b}");
    b["entry"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|e| e["resource"].clone())
        .collect()
}

fn verify_cli(dir: &std::path::Path, key: Option<&std::path::Path>) -> (i32, String) {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_huitong"));
    c.args(["audit", "verify", "--data", dir.to_str().unwrap()]);
    if let Some(k) = key {
        c.args(["--key", k.to_str().unwrap()]);
    }
    let out = c.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn copy_db(from: &std::path::Path) -> tempfile::TempDir {
    let to = tempfile::tempdir().unwrap();
    for f in ["huitong.db", "huitong.db-wal", "huitong.db-shm"] {
        if from.join(f).exists() {
            std::fs::copy(from.join(f), to.path().join(f)).unwrap();
        }
    }
    to
}

fn tamper(dir: &std::path::Path, sql: &str) {
    let c = rusqlite::Connection::open(dir.join("huitong.db")).unwrap();
    c.execute_batch(
        "DROP TRIGGER IF EXISTS audit_log_append_only; DROP TRIGGER IF EXISTS audit_log_keep;",
    )
    .unwrap();
    c.execute_batch(sql).unwrap();
}

#[tokio::test]
async fn every_interaction_is_audited_once_and_tampering_is_detected() {
    let keys = Keys::make();
    let sm2 = keys.dir.path().join("sm2.pem");
    let extra = format!(
        "[audit]\nsigning-key = {:?}\nseal-every = 3\n",
        sm2.display().to_string()
    );
    let srv = gateway(&keys, &extra).await;
    let t = keys.token("user/*.cruds", json!({"sub": "dr-wang"}));
    let (s, _) = call(
        &srv,
        Method::PUT,
        "Patient/a",
        Some(&t),
        Some(&patient("a", "A")),
    )
    .await;
    assert_eq!(s, 201);
    call(&srv, Method::GET, "Patient/a", Some(&t), None).await;
    call(&srv, Method::GET, "Patient?family=A", Some(&t), None).await;
    call(&srv, Method::GET, "Patient/zzz", Some(&t), None).await;
    call(&srv, Method::GET, "Patient", None, None).await;
    let mine = audit_events(&srv, &keys, "agent=dr-wang").await;
    let subtypes: Vec<&str> = mine
        .iter()
        .rev()
        .map(|e| e["subtype"][0]["code"].as_str().unwrap())
        .collect();
    assert_eq!(
        subtypes,
        vec!["update", "read", "search-type", "read"],
        "{mine:?}"
    );
    assert_eq!(mine[0]["outcome"], "4", "the 404");
    assert_eq!(mine[3]["entity"][0]["what"]["reference"], "/fhir/Patient/a");
    let logins = audit_events(&srv, &keys, "subtype=login").await;
    assert_eq!(logins.len(), 1, "the unauthenticated call");
    // Non-auditors cannot read the trail.
    let (s, _) = call(
        &srv,
        Method::GET,
        "AuditEvent",
        Some(&keys.token("system/*.*", json!({}))),
        None,
    )
    .await;
    assert_eq!(s, 403);
    let total = audit_events(&srv, &keys, "_count=1000").await.len();
    let dir = srv.stop().await;
    let (code, out) = verify_cli(dir.path(), Some(&sm2));
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("signed heads verified") && !out.contains(" 0 signed"),
        "{out}"
    );
    println!(
        "security audit: {total} records before stop, verify says: {}",
        out.trim()
    );
    // The triggers refuse the application's own UPDATE.
    let c = rusqlite::Connection::open(dir.path().join("huitong.db")).unwrap();
    assert!(
        c.execute("UPDATE audit_log SET agent = 'x' WHERE seq = 2", [])
            .is_err()
    );
    drop(c);
    let edited = copy_db(dir.path());
    tamper(
        edited.path(),
        "UPDATE audit_log SET agent = 'someone-else' WHERE seq = 3;",
    );
    let (code, out) = verify_cli(edited.path(), None);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("record 3 was changed"), "{out}");
    let removed = copy_db(dir.path());
    tamper(removed.path(), "DELETE FROM audit_log WHERE seq = 2;");
    let (code, out) = verify_cli(removed.path(), None);
    assert_eq!(code, 1);
    assert!(out.contains("record 2 is missing"), "{out}");
    let swapped = copy_db(dir.path());
    tamper(
        swapped.path(),
        "UPDATE audit_log SET seq = -1 WHERE seq = 4; UPDATE audit_log SET seq = 4 WHERE seq = 5; UPDATE audit_log SET seq = 5 WHERE seq = -1;",
    );
    let (code, out) = verify_cli(swapped.path(), None);
    assert_eq!(code, 1);
    assert!(out.contains("BROKEN at record 4"), "{out}");
    let truncated = copy_db(dir.path());
    tamper(
        truncated.path(),
        "DELETE FROM audit_log WHERE seq = (SELECT MAX(seq) FROM audit_log);",
    );
    let (code, out) = verify_cli(truncated.path(), Some(&sm2));
    assert_eq!(code, 1, "tail removal is caught by the signed head: {out}");
}

fn audit_record(agent: &str) -> huitong::security::audit::Record {
    huitong::security::audit::Record {
        agent: agent.into(),
        method: "token".into(),
        client: None,
        address: Some("127.0.0.1".into()),
        subtype: "read".into(),
        action: "R",
        status: 200,
        description: None,
        entity: format!("Patient/{agent}"),
        query: None,
    }
}

fn wall_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn agents(dir: &std::path::Path) -> Vec<(i64, String, String)> {
    let c = rusqlite::Connection::open(dir.join("huitong.db")).unwrap();
    let mut q = c
        .prepare("SELECT seq, agent, subtype FROM audit_log ORDER BY seq")
        .unwrap();
    q.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

#[tokio::test]
async fn audit_retention_purge_keeps_the_chain_verifiable() {
    use huitong::security::audit::{self, AuditLog, Verdict};
    use huitong::security::config::AuditConfig;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let log = AuditLog::open(d, &AuditConfig::default()).unwrap();
    for _ in 0..4 {
        log.record(audit_record("early"));
    }
    log.flush().await;
    // Records carry the millisecond they were written: a few ms apart, the two groups are on
    // either side of `middle` (only the order matters, not how long anything takes).
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let middle = wall_ms();
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    for _ in 0..3 {
        log.record(audit_record("late"));
    }
    log.flush().await;
    drop(log);
    assert_eq!(
        audit::verify(d, None).unwrap(),
        Verdict::Intact {
            records: 7,
            seals: 0
        }
    );
    // 180 days after `middle`, what was written before it is past the retention.
    let purged = audit::purge(d, 180, middle + 180 * 86_400_000)
        .unwrap()
        .expect("something was old enough");
    assert_eq!((purged.up_to, purged.removed, purged.record_seq), (4, 4, 8));
    let kept = agents(d);
    let names: Vec<&str> = kept.iter().map(|(_, a, _)| a.as_str()).collect();
    assert_eq!(names, vec!["late", "late", "late", "huitong"], "{kept:?}");
    assert_eq!(kept[0].0, 5);
    assert_eq!(kept[3].2, audit::PURGE_SUBTYPE);
    // The purge is itself in the trail, as an AuditEvent auditors can find.
    let (events, _) = audit::search(
        d,
        &audit::AuditQuery {
            subtype: Some(audit::PURGE_SUBTYPE.into()),
            count: 10,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["action"], "D");
    assert!(
        events[0]["outcomeDesc"]
            .as_str()
            .unwrap()
            .contains("4 records up to 4"),
        "{}",
        events[0]
    );
    assert_eq!(
        audit::verify(d, None).unwrap(),
        Verdict::Intact {
            records: 4,
            seals: 0
        }
    );
    let (code, out) = verify_cli(d, None);
    assert_eq!(code, 0, "a purge is not tampering: {out}");
    // Nothing newer than the retention goes, however often the purge runs.
    assert_eq!(
        audit::purge(d, 180, middle + 180 * 86_400_000).unwrap(),
        None
    );

    // After the purge, removing a record in the middle is still caught...
    let removed = copy_db(d);
    tamper(removed.path(), "DELETE FROM audit_log WHERE seq = 6;");
    let (code, out) = verify_cli(removed.path(), None);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("record 6 is missing"), "{out}");
    // ...and so is removing the first kept records and moving the anchor past them: no purge
    // record accounts for it.
    let moved = copy_db(d);
    tamper(
        moved.path(),
        "DELETE FROM audit_log WHERE seq = 5; UPDATE audit_anchor SET seq = 6, prev_hash = (SELECT prev_hash FROM audit_log WHERE seq = 6);",
    );
    let (code, out) = verify_cli(moved.path(), None);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("no purge record"), "{out}");

    // The gateway's own writer purges at start (here with a retention of 0 days: everything but
    // the head) and goes on chaining from the purge record.
    let cfg = AuditConfig {
        retention_days: 0,
        ..AuditConfig::default()
    };
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let log = AuditLog::open(d, &cfg).unwrap();
    log.record(audit_record("after"));
    log.flush().await;
    drop(log);
    let kept = agents(d);
    let names: Vec<&str> = kept.iter().map(|(_, a, _)| a.as_str()).collect();
    assert_eq!(names, vec!["huitong", "huitong", "after"], "{kept:?}");
    assert_eq!(
        audit::verify(d, None).unwrap(),
        Verdict::Intact {
            records: 3,
            seals: 0
        }
    );
}

#[tokio::test]
async fn rate_limit_answers_429_with_retry_after() {
    let keys = Keys::make();
    let srv = gateway(&keys, "[limits]\nrate-per-second = 0.5\nburst = 3\n").await;
    let t = keys.token("system/*.*", json!({}));
    let mut statuses = Vec::new();
    let mut retry = None;
    for _ in 0..5 {
        let r = srv
            .http
            .get(srv.url("Patient"))
            .bearer_auth(&t)
            .send()
            .await
            .unwrap();
        statuses.push(r.status().as_u16());
        if r.status() == 429 {
            retry = r
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_string());
        }
    }
    assert_eq!(&statuses[..3], &[200, 200, 200]);
    assert_eq!(statuses[4], 429, "{statuses:?}");
    assert!(retry.unwrap().parse::<u64>().unwrap() >= 1);
    // Another client has its own bucket.
    let other = keys.token("system/*.*", json!({"sub": "other"}));
    let (s, _) = call(&srv, Method::GET, "Patient", Some(&other), None).await;
    assert_eq!(s, 200);
    srv.stop().await;
}

async fn raw(addr: std::net::SocketAddr, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(20), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn slowloris_oversized_headers_and_body_limits() {
    let keys = Keys::make();
    let srv = gateway(
        &keys,
        "[limits]\nheader-read-timeout-secs = 1\nmax-header-bytes = 16384\n[limits.body-bytes]\n\"/hl7v2\" = 1000\n",
    )
    .await;
    let addr: std::net::SocketAddr = srv.root.trim_start_matches("http://").parse().unwrap();
    // Slowloris: a header line every 300 ms never completes; the server hangs up.
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /fhir/Patient HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let mut closed = false;
    for i in 0..60 {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        if s.write_all(format!("X-Slow-{i}: y\r\n").as_bytes())
            .await
            .is_err()
        {
            closed = true;
            break;
        }
        let mut b = [0u8; 256];
        match tokio::time::timeout(std::time::Duration::from_millis(1), s.read(&mut b)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed = true;
                break;
            }
            Ok(Ok(_)) => {
                closed = true; // an error response, then close
                break;
            }
            Err(_) => {}
        }
    }
    assert!(
        closed,
        "a slow client kept the connection for {:?}",
        started.elapsed()
    );
    // Oversized headers: 431 from the HTTP layer, nothing reaches the application.
    let big = format!(
        "GET /fhir/Patient HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(40_000)
    );
    let out = raw(addr, big.as_bytes()).await;
    assert!(out.starts_with("HTTP/1.1 431"), "{out}");
    // Header injection: a CR inside a header value is a malformed request, never a split one.
    let out = raw(
        addr,
        b"GET /fhir/metadata HTTP/1.1\r\nHost: x\r\nX-Request-Id: a\rSet-Cookie: x=1\r\n\r\n",
    )
    .await;
    assert!(
        out.starts_with("HTTP/1.1 400") && !out.contains("Set-Cookie"),
        "{out}"
    );
    // Per-endpoint body limit.
    let t = keys.token("system/*.*", json!({}));
    let r = srv
        .http
        .post(format!("{}/hl7v2", srv.root))
        .bearer_auth(&t)
        .body(vec![b'x'; 2000])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 413);
    let (_, v) = json_of(r).await;
    assert!(
        v["issue"][0]["diagnostics"]
            .as_str()
            .unwrap()
            .contains("1000 bytes"),
        "{v}"
    );
    srv.stop().await;
}

#[tokio::test]
async fn hostile_input_neither_leaks_nor_crashes() {
    let keys = Keys::make();
    let srv = gateway(&keys, "").await;
    seed(
        &srv,
        &keys,
        &[
            patient("a", "Alpha"),
            patient("b", "Beta"),
            obs("oa", "a", "laboratory"),
            obs("ob", "b", "laboratory"),
        ],
    )
    .await;
    let t = keys.token("patient/*.rs", json!({"patient": "a"}));
    let tricks = [
        "' OR '1'='1",
        "x'; DROP TABLE resource_version;--",
        "\" OR 1=1 --",
        "%' OR 1=1 --",
        "1) UNION SELECT body FROM resource_version --",
        "Beta\u{202e}",
        "B\u{200b}eta",
        "\u{ff22}eta",
        "\u{0000}",
        "../../etc/passwd",
        "Patient/b' OR 'x'='x",
        "ge2020-01-01' OR 1=1",
        "http://x|' OR 1=1",
    ];
    // One parameter of each type: string, token, reference, date, number/quantity, uri.
    let params = [
        ("Patient", "family"),
        ("Patient", "identifier"),
        ("Observation", "subject"),
        ("Observation", "date"),
        ("Observation", "value-quantity"),
        ("Observation", "code"),
        ("Observation", "_profile"),
        ("Observation", "subject.family"),
        ("Observation", "_id"),
    ];
    let mut n = 0;
    for (ty, p) in params {
        for v in tricks {
            let q: String = form_urlencoded::Serializer::new(String::new())
                .append_pair(p, v)
                .finish();
            let (s, b) = call(&srv, Method::GET, &format!("{ty}?{q}"), Some(&t), None).await;
            assert!(s < 500, "{ty}?{p}={v:?}: {s} {b}");
            let found = ids(&b);
            assert!(
                !found.contains(&"Observation/ob".to_string())
                    && !found.contains(&"Patient/b".to_string()),
                "{ty}?{p}={v:?} leaks: {b}"
            );
            n += 1;
        }
    }
    for path in [
        "Patient/..%2Fb",
        "Patient/%2E%2E%2Fb",
        "Patient/b%00",
        "Patient/$..%2F..%2Fetc",
        "Observation/ob/$..%2F",
        "..%2F..%2Fetc%2Fpasswd",
        "Patient/b/%2E%2E/Observation",
        "%E2%80%AEPatient",
    ] {
        let (s, b) = call(&srv, Method::GET, path, Some(&t), None).await;
        assert!(s < 500, "{path}: {s} {b}");
        let found = ids(&b);
        assert!(
            b["id"] != "ob"
                && b["id"] != "b"
                && !found.iter().any(|i| i.ends_with("/ob") || i == "Patient/b"),
            "{path} leaks {b}"
        );
        n += 1;
    }
    println!("security hostile: {n} hostile requests, none leaked or crashed");
    srv.stop().await;
}

fn frame(msg: &str) -> Vec<u8> {
    huitong::ingest::hl7v2::mllp::frame(msg.as_bytes())
}

fn adt(facility: &str, control: &str) -> String {
    format!(
        "MSH|^~\\&|HIS|{facility}|HUI|HUI|20240102030405||ADT^A01^ADT_A01|{control}|P|2.5\rEVN|A01|20240102030405\rPID|1||M{control}^^^{facility}^MR||Wang^Li||19800102|F\rPV1|1|I|W1^R1^B1\r"
    )
}

async fn mllp_ack<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    s: &mut S,
    msg: &str,
) -> String {
    s.write_all(&frame(msg)).await.unwrap();
    let mut buf = Vec::new();
    let mut b = [0u8; 4096];
    while !buf.ends_with(&[0x1c, 0x0d]) {
        let n = s.read(&mut b).await.unwrap();
        assert!(n > 0, "closed before the ACK");
        buf.extend_from_slice(&b[..n]);
    }
    let text = String::from_utf8_lossy(&buf).into_owned();
    text.split('\r')
        .find(|l| l.starts_with("MSA"))
        .unwrap_or("")
        .to_string()
}

#[tokio::test]
async fn mllp_senders_are_identified_by_source_and_bound_to_their_facilities() {
    let keys = Keys::make();
    let srv = gateway_in(
        tempfile::tempdir().unwrap(),
        &keys,
        "[[auth.senders]]\nid = \"his-1\"\nmllp-ips = [\"127.0.0.1\"]\nfacilities = [\"H1\"]\ndomain = \"hosp-a\"\n",
        |s| s.mllp_addr = Some("127.0.0.1:0".parse().unwrap()),
    )
    .await;
    let mut s = TcpStream::connect(srv.mllp_addr().unwrap()).await.unwrap();
    let ok = mllp_ack(&mut s, &adt("H1", "C1")).await;
    assert!(ok.starts_with("MSA|AA"), "{ok}");
    let refused = mllp_ack(&mut s, &adt("H2", "C2")).await;
    assert!(refused.starts_with("MSA|AR"), "another facility: {refused}");
    let events = audit_events(&srv, &keys, "subtype=ingest").await;
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(events[0]["outcome"], "4");
    assert_eq!(events[1]["agent"][0]["who"]["identifier"]["value"], "his-1");
    srv.stop().await;
    // Without a sender for this source, nothing is processed.
    let srv = gateway_in(tempfile::tempdir().unwrap(), &keys, "", |s| {
        s.mllp_addr = Some("127.0.0.1:0".parse().unwrap())
    })
    .await;
    let mut s = TcpStream::connect(srv.mllp_addr().unwrap()).await.unwrap();
    let refused = mllp_ack(&mut s, &adt("H1", "C3")).await;
    assert!(refused.starts_with("MSA|AR"), "{refused}");
    srv.stop().await;
}

#[tokio::test]
async fn api_keys_identify_system_senders() {
    let keys = Keys::make();
    let digest = huitong::security::sm::sm3_hex(b"his-secret-key");
    let srv = gateway(
        &keys,
        &format!("[[auth.senders]]\nid = \"his-1\"\napi-key-sm3 = \"{digest}\"\nscopes = \"system/*.cru\"\ndomain = \"hosp-a\"\n"),
    )
    .await;
    let r = srv
        .http
        .put(srv.url("Patient/k"))
        .header("x-api-key", "his-secret-key")
        .header("content-type", "application/fhir+json")
        .body(patient("k", "K").to_string())
        .send()
        .await
        .unwrap();
    let (s, v) = json_of(r).await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["meta"]["tag"][0]["code"], "hosp-a");
    let r = srv
        .http
        .get(srv.url("Patient/k"))
        .header("x-api-key", "wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    srv.stop().await;
}

/// An ADT^A01 whose patient is keyed by `mrn` (two messages with one `mrn` name one Patient).
fn adt_for(facility: &str, control: &str, mrn: &str) -> String {
    format!(
        "MSH|^~\\&|HIS|{facility}|HUI|HUI|20240102030405||ADT^A01^ADT_A01|{control}|P|2.5\rEVN|A01|20240102030405\rPID|1||{mrn}^^^{facility}^MR||Wang^Li||19800102|F\rPV1|1|I|W1^R1^B1\r"
    )
}

/// A WS/T 500 document (the one of tests/hl7v3.rs, trimmed).
const OWNED_CDA: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<ClinicalDocument xmlns="urn:hl7-org:v3" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
  <realmCode code="CN"/>
  <typeId root="2.16.840.1.113883.1.3" extension="POCD_MT000040"/>
  <templateId root="2.16.156.10011.2.1.1.22"/>
  <id root="2.16.156.10011.1.1" extension="OWNED-DOC-1"/>
  <code code="C0002" codeSystem="2.16.156.10011.2.4"/>
  <title>门急诊病历</title>
  <effectiveTime value="20240301101500"/>
  <recordTarget><patientRole>
    <id root="2.16.156.10011.1.11" extension="MZ-88"/>
    <patient><id root="2.16.156.10011.1.3" extension="11010519491231002X"/><name>王测试</name>
      <administrativeGenderCode code="2" codeSystem="2.16.156.10011.2.3.3.4"/><birthTime value="19491231"/></patient>
  </patientRole></recordTarget>
  <author><time value="20240301"/><assignedAuthor><id root="2.16.156.10011.1.4" extension="D-9"/><assignedPerson><name>赵医生</name></assignedPerson></assignedAuthor></author>
  <custodian><assignedCustodian><representedCustodianOrganization><id root="2.16.156.10011.1.5" extension="H-1"/><name>测试医院</name></representedCustodianOrganization></assignedCustodian></custodian>
  <component><structuredBody><component><section>
    <code code="29548-5" codeSystem="2.16.840.1.113883.6.1"/><text>诊断</text>
    <entry><observation classCode="OBS" moodCode="EVN"><code code="DE05.01.024.00" codeSystem="2.16.156.10011.2.2.1"/>
      <value xsi:type="CD" code="J06.9" codeSystem="2.16.156.10011.2.3.3.11" displayName="急性上呼吸道感染"/></observation></entry>
  </section></component></structuredBody></component>
</ClinicalDocument>"#;

fn owner(r: &Value) -> Option<&str> {
    huitong::security::policy::domain_of(r)
}

/// Everything the store holds now (`[base]?_summary=count`).
async fn stored_total(srv: &TestServer, op: &str) -> u64 {
    let (s, v) = call(srv, Method::GET, "?_summary=count", Some(op), None).await;
    assert_eq!(s, 200, "{v}");
    v["total"].as_u64().unwrap()
}

async fn as_sender(
    srv: &TestServer,
    key: &str,
    path: &str,
    content_type: &str,
    accept: &str,
    body: &str,
) -> (u16, String) {
    let r = srv
        .http
        .post(format!("{}/{path}", srv.root))
        .header("x-api-key", key)
        .header("content-type", content_type)
        .header("accept", accept)
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

#[tokio::test]
async fn ingest_is_owned_by_the_senders_domain_and_not_overwritten_by_another() {
    let keys = Keys::make();
    let (ka, kb) = ("his-a-secret", "his-b-secret");
    let srv = gateway_in(
        tempfile::tempdir().unwrap(),
        &keys,
        &format!(
            "[[auth.senders]]\nid = \"his-a\"\napi-key-sm3 = \"{}\"\nmllp-ips = [\"127.0.0.1\"]\ndomain = \"hosp-a\"\n\
             [[auth.senders]]\nid = \"his-b\"\napi-key-sm3 = \"{}\"\ndomain = \"hosp-b\"\n",
            huitong::security::sm::sm3_hex(ka.as_bytes()),
            huitong::security::sm::sm3_hex(kb.as_bytes()),
        ),
        |s| s.mllp_addr = Some("127.0.0.1:0".parse().unwrap()),
    )
    .await;
    // The platform operator (no domain, every grant) reads everything back.
    let op = keys.token("system/*.*", json!({"huitong_grants": ["*"]}));
    let read = async |path: &str| {
        let (s, v) = call(&srv, Method::GET, path, Some(&op), None).await;
        assert_eq!(s, 200, "{path}: {v}");
        v
    };
    let er7 = "x-application/hl7-v2+er7";
    let fhir = "application/fhir+json";

    // POST /hl7v2 as hospital A: every resource of the message (its Provenance too) is A's.
    let (s, body) = as_sender(&srv, ka, "hl7v2", er7, fhir, &adt_for("H1", "A1", "M-1")).await;
    assert_eq!(s, 200, "{body}");
    let bundle: Value = serde_json::from_str(&body).unwrap();
    let written = ids(&bundle);
    assert!(
        written.iter().any(|w| w.starts_with("Patient/"))
            && written.iter().any(|w| w.starts_with("Provenance/")),
        "{written:?}"
    );
    for w in &written {
        assert_eq!(owner(&read(w).await), Some("hosp-a"), "{w}");
    }
    let patient = written
        .iter()
        .find(|w| w.starts_with("Patient/"))
        .unwrap()
        .clone();

    // The same patient from hospital B: refused, whole, and nothing of it is written.
    let before = stored_total(&srv, &op).await;
    let (s, body) = as_sender(&srv, kb, "hl7v2", er7, fhir, &adt_for("H1", "B1", "M-1")).await;
    assert_eq!(s, 422, "{body}");
    let oo: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(oo["resourceType"], "OperationOutcome");
    let diag = oo["issue"][0]["diagnostics"].as_str().unwrap();
    assert!(
        diag.contains("belongs to domain 'hosp-a'") && diag.contains("sender 'his-b'"),
        "{diag}"
    );
    let (s, ack) = as_sender(&srv, kb, "hl7v2", er7, er7, &adt_for("H1", "B2", "M-1")).await;
    assert_eq!(s, 200);
    assert!(ack.contains("MSA|AE"), "{ack}");
    assert_eq!(
        stored_total(&srv, &op).await,
        before,
        "nothing of B's written"
    );
    let p = read(&patient).await;
    assert_eq!(
        (owner(&p), p["meta"]["versionId"].as_str()),
        (Some("hosp-a"), Some("1"))
    );

    // MLLP: the source address names hospital A, whose domain owns what the message writes.
    let mut mllp = TcpStream::connect(srv.mllp_addr().unwrap()).await.unwrap();
    let msa = mllp_ack(&mut mllp, &adt_for("H1", "A2", "M-2")).await;
    assert!(msa.starts_with("MSA|AA"), "{msa}");
    let found = read("Patient?identifier=M-2").await;
    assert_eq!(found["entry"].as_array().map(Vec::len), Some(1), "{found}");
    assert_eq!(owner(&found["entry"][0]["resource"]), Some("hosp-a"));

    // A record feed: A's record is A's; B re-sending it is rejected and changes nothing.
    let example = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("mappings/feeds/immunization/examples/01-hepb-birth-dose.json"),
    )
    .unwrap();
    let record: Value = serde_json::from_str(&example).unwrap();
    let batch = json!([record]).to_string();
    let (s, body) = as_sender(
        &srv,
        ka,
        "feeds/immunization",
        "application/json",
        "application/json",
        &batch,
    )
    .await;
    assert_eq!(s, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["accepted"], 1, "{v}");
    let imm = format!(
        "Immunization/{}",
        huitong::mapping::ids::resource_id(
            "Immunization",
            "cn-immunization",
            record["record_id"].as_str().unwrap()
        )
    );
    assert_eq!(owner(&read(&imm).await), Some("hosp-a"));
    let before = stored_total(&srv, &op).await;
    let (s, body) = as_sender(
        &srv,
        kb,
        "feeds/immunization",
        "application/json",
        "application/json",
        &batch,
    )
    .await;
    assert_eq!(s, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (v["accepted"].as_u64(), v["rejected"].as_u64()),
        (Some(0), Some(1)),
        "{v}"
    );
    assert!(v.to_string().contains("belongs to domain 'hosp-a'"), "{v}");
    let i = read(&imm).await;
    assert_eq!(
        (owner(&i), i["meta"]["versionId"].as_str()),
        (Some("hosp-a"), Some("1"))
    );
    assert_eq!(stored_total(&srv, &op).await, before);

    // A CDA document: A's, and B posting the same document gets a 403 OperationOutcome.
    let xml = "application/xml";
    let (s, body) = as_sender(&srv, ka, "cda", xml, fhir, OWNED_CDA).await;
    assert_eq!(s, 201, "{body}");
    let doc: Value = serde_json::from_str(&body).unwrap();
    let docs: Vec<String> = ids(&doc);
    assert!(!docs.is_empty(), "{doc}");
    let composition = docs
        .iter()
        .find(|d| d.starts_with("Composition/"))
        .unwrap_or_else(|| panic!("{doc}"));
    assert_eq!(owner(&read(composition).await), Some("hosp-a"));
    let before = stored_total(&srv, &op).await;
    let (s, body) = as_sender(&srv, kb, "cda", xml, fhir, OWNED_CDA).await;
    assert_eq!(s, 403, "{body}");
    let oo: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(oo["resourceType"], "OperationOutcome");
    assert!(
        oo["issue"][0]["diagnostics"]
            .as_str()
            .unwrap()
            .contains("belongs to domain 'hosp-a'"),
        "{oo}"
    );
    assert_eq!(stored_total(&srv, &op).await, before);

    // B's own document about the same person: accepted and B's. The patient, author and
    // custodian it names are A's records: they stay as A stored them (no new version, A's
    // name), and B's Provenance keeps what B's document said of them.
    let patient = docs
        .iter()
        .find(|d| d.starts_with("Patient/"))
        .unwrap_or_else(|| panic!("{doc}"))
        .clone();
    let stored_patient = read(&patient).await;
    let b_doc = OWNED_CDA
        .replace("OWNED-DOC-1", "B-DOC-1")
        .replace("<name>王测试</name>", "<name>王测式</name>");
    let (s, body) = as_sender(&srv, kb, "cda", xml, fhir, &b_doc).await;
    assert_eq!(s, 201, "{body}");
    let b_bundle: Value = serde_json::from_str(&body).unwrap();
    let b_written = ids(&b_bundle);
    let b_composition = b_written
        .iter()
        .find(|d| d.starts_with("Composition/"))
        .unwrap_or_else(|| panic!("{b_bundle}"));
    assert_ne!(
        Some(b_composition),
        docs.iter().find(|d| d.starts_with("Composition/"))
    );
    assert_eq!(owner(&read(b_composition).await), Some("hosp-b"));
    let p = read(&patient).await;
    assert_eq!(owner(&p), Some("hosp-a"), "{p}");
    assert_eq!(
        p["meta"]["versionId"], stored_patient["meta"]["versionId"],
        "{p}"
    );
    assert_eq!(p["name"], stored_patient["name"], "{p}");
    let found = read(&format!("Provenance?target={b_composition}")).await;
    let prov = &found["entry"][0]["resource"];
    let kept = prov["contained"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["id"] == "kept")
        .unwrap_or_else(|| panic!("no #kept in {prov}"));
    let issue = kept["issue"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| {
            i["details"]["text"]
                .as_str()
                .is_some_and(|t| t.starts_with(&patient))
        })
        .unwrap_or_else(|| panic!("{kept}"));
    let said = issue["diagnostics"].as_str().unwrap();
    assert!(said.contains("hosp-a") && said.contains("王测式"), "{said}");
    srv.stop().await;
}

// ---- TLS ----

struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn make() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        openssl(
            d,
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-subj",
                "/CN=Test CA",
                "-days",
                "2",
            ],
        );
        for (name, cn) in [
            ("server", "localhost"),
            ("client", "lab-a.example"),
            ("server2", "localhost"),
        ] {
            openssl(
                d,
                &[
                    "req",
                    "-newkey",
                    "rsa:2048",
                    "-nodes",
                    "-keyout",
                    &format!("{name}.key"),
                    "-out",
                    &format!("{name}.csr"),
                    "-subj",
                    &format!("/CN={cn}"),
                ],
            );
            std::fs::write(d.join("ext"), "subjectAltName=DNS:localhost,IP:127.0.0.1\n").unwrap();
            openssl(
                d,
                &[
                    "x509",
                    "-req",
                    "-in",
                    &format!("{name}.csr"),
                    "-CA",
                    "ca.pem",
                    "-CAkey",
                    "ca.key",
                    "-CAcreateserial",
                    "-out",
                    &format!("{name}.pem"),
                    "-days",
                    "2",
                    "-extfile",
                    "ext",
                ],
            );
        }
        Pki { dir }
    }
    fn p(&self, f: &str) -> String {
        self.dir.path().join(f).display().to_string()
    }
}

async fn tls_connect(
    addr: std::net::SocketAddr,
    pki: &Pki,
    client_cert: bool,
) -> Result<(tokio_openssl::SslStream<TcpStream>, String), String> {
    use openssl::ssl::{SslConnector, SslFiletype, SslMethod};
    let mut b = SslConnector::builder(SslMethod::tls_client()).unwrap();
    b.set_ca_file(pki.p("ca.pem")).unwrap();
    if client_cert {
        b.set_certificate_file(pki.p("client.pem"), SslFiletype::PEM)
            .unwrap();
        b.set_private_key_file(pki.p("client.key"), SslFiletype::PEM)
            .unwrap();
    }
    let ssl = b
        .build()
        .configure()
        .unwrap()
        .into_ssl("localhost")
        .unwrap();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let mut s = tokio_openssl::SslStream::new(ssl, tcp).unwrap();
    std::pin::Pin::new(&mut s)
        .connect()
        .await
        .map_err(|e| e.to_string())?;
    let serial = s
        .ssl()
        .peer_certificate()
        .map(|c| {
            c.serial_number()
                .to_bn()
                .unwrap()
                .to_hex_str()
                .unwrap()
                .to_string()
        })
        .unwrap_or_default();
    Ok((s, serial))
}

async fn https_get(s: &mut tokio_openssl::SslStream<TcpStream>, path: &str) -> String {
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn https_and_mllp_over_tls_with_and_without_client_certificates() {
    let keys = Keys::make();
    let pki = Pki::make();
    let tls = format!(
        "[tls]\ncert = {:?}\nkey = {:?}\nclient-ca = {:?}\n[[auth.senders]]\nid = \"lab-a\"\ncert-cn = \"lab-a.example\"\nscopes = \"system/*.cruds\"\n",
        pki.p("server.pem"),
        pki.p("server.key"),
        pki.p("ca.pem")
    );
    // `[[auth.senders]]` must follow `[auth]`: put it right after.
    let srv = gateway_in(tempfile::tempdir().unwrap(), &keys, &tls, |s| {
        s.mllp_addr = Some("127.0.0.1:0".parse().unwrap())
    })
    .await;
    let addr: std::net::SocketAddr = srv.root.trim_start_matches("http://").parse().unwrap();
    // Without a client certificate: the handshake works, the request needs a token.
    let (mut s, serial1) = tls_connect(addr, &pki, false).await.unwrap();
    let out = https_get(&mut s, "/fhir/Patient").await;
    assert!(out.starts_with("HTTP/1.1 401"), "{out}");
    // With one: the certificate is the sender's identity.
    let (mut s, _) = tls_connect(addr, &pki, true).await.unwrap();
    let out = https_get(&mut s, "/fhir/Patient").await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    // Plain HTTP on the TLS port is not served.
    let out = raw(addr, b"GET /fhir/metadata HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(!out.starts_with("HTTP/1.1 200"), "{out}");
    // MLLP over TLS with the client certificate.
    let (mut m, _) = tls_connect(srv.mllp_addr().unwrap(), &pki, true)
        .await
        .unwrap();
    let ack = mllp_ack(&mut m, &adt("H1", "T1")).await;
    assert!(ack.starts_with("MSA|AA"), "{ack}");
    let (mut m, _) = tls_connect(srv.mllp_addr().unwrap(), &pki, false)
        .await
        .unwrap();
    let ack = mllp_ack(&mut m, &adt("H1", "T2")).await;
    assert!(
        ack.starts_with("MSA|AR"),
        "no certificate, no sender: {ack}"
    );
    // Reload on SIGHUP: swap the files, signal, and new handshakes see the new certificate.
    std::fs::copy(pki.p("server2.pem"), pki.p("server.pem")).unwrap();
    std::fs::copy(pki.p("server2.key"), pki.p("server.key")).unwrap();
    let pid = std::process::id().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success()
    );
    let mut serial2 = serial1.clone();
    for _ in 0..50 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        serial2 = tls_connect(addr, &pki, false).await.unwrap().1;
        if serial2 != serial1 {
            break;
        }
    }
    assert_ne!(serial1, serial2, "the reloaded certificate is served");
    srv.stop().await;
}

#[tokio::test]
async fn a_search_past_the_cost_bound_gets_413_with_an_explanation() {
    let keys = Keys::make();
    let srv = gateway(&keys, "[limits]\nmax-search-cost = 3000\n").await;
    let many: Vec<Value> = (0..150)
        .map(|i| patient(&format!("p{i}"), &format!("Fam{i}")))
        .collect();
    seed(&srv, &keys, &many).await;
    let t = keys.token("system/*.*", json!({}));
    let (s, v) = call(
        &srv,
        Method::GET,
        "Patient?family:contains=am&_count=200&_sort=family",
        Some(&t),
        None,
    )
    .await;
    assert_eq!(s, 413, "{v}");
    assert_eq!(v["issue"][0]["code"], "too-costly");
    assert!(
        v["issue"][0]["diagnostics"]
            .as_str()
            .unwrap()
            .contains("max-search-cost"),
        "{v}"
    );
    let (s, _) = call(&srv, Method::GET, "Patient/p1", Some(&t), None).await;
    assert_eq!(s, 200, "reads are not searches");
    let (s, _) = call(&srv, Method::GET, "Patient?_id=p1", Some(&t), None).await;
    assert_eq!(s, 200, "a selective search stays under the bound");
    srv.stop().await;
}
