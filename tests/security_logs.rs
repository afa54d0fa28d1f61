//! No secret in the logs: a run with debug logging on, bearer tokens, API keys, a 身份证 number in
//! searches, failed logins, MLLP ingest; then the captured log is scanned for each secret used.
//! (Its own test binary: it installs the process-wide subscriber.)

mod common;
mod security_support;

use reqwest::Method;
use security_support::*;
use serde_json::json;
use std::sync::{Arc, Mutex};

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn logs_carry_no_token_key_or_identifier() {
    let cap = Capture::default();
    let writer = cap.clone();
    huitong::telemetry::init_logging_to(
        huitong::config::LogFormat::Json,
        "trace,hyper=info,h2=info",
        move || writer.clone(),
    );
    let keys = Keys::make();
    let api_key = "his-api-key-5f2c9d";
    let digest = huitong::security::sm::sm3_hex(api_key.as_bytes());
    let srv = gateway(
        &keys,
        &format!("[[auth.senders]]\nid = \"his-1\"\napi-key-sm3 = \"{digest}\"\n"),
    )
    .await;
    let token = keys.token("system/*.*", json!({}));
    let id_card = "11010519491231002X";
    let phone = "13812345678";
    let p = json!({"resourceType": "Patient", "id": "s1",
        "identifier": [{"system": "urn:oid:1.2.156.112604.1.2.1.2", "value": id_card}],
        "telecom": [{"system": "phone", "value": phone}]});
    call(&srv, Method::PUT, "Patient/s1", Some(&token), Some(&p)).await;
    call(
        &srv,
        Method::GET,
        &format!("Patient?identifier={id_card}"),
        Some(&token),
        None,
    )
    .await;
    call(
        &srv,
        Method::GET,
        &format!("Patient/{id_card}"),
        Some(&token),
        None,
    )
    .await;
    // A failed login with a (forged) token, and a broken Authorization header.
    let forged = keys.sign("ec-other", "ec", &claims("system/*.*", json!({})));
    call(&srv, Method::GET, "Patient", Some(&forged), None).await;
    srv.http
        .get(srv.url("Patient"))
        .header("x-api-key", api_key)
        .send()
        .await
        .unwrap();
    srv.http
        .get(srv.url("Patient"))
        .header("authorization", format!("Basic {token}"))
        .send()
        .await
        .unwrap();
    // An HL7 v2 message carrying the identifier, over HTTP.
    let v2 = format!(
        "MSH|^~\\&|HIS|H1|HUI|HUI|20240102030405||ADT^A01^ADT_A01|L1|P|2.5\rEVN|A01|20240102030405\rPID|1||{id_card}^^^H1^MR||Wang^Li||19800102|F|||||{phone}\rPV1|1|I|W1\r"
    );
    srv.http
        .post(format!("{}/hl7v2", srv.root))
        .bearer_auth(&token)
        .header("content-type", "x-application/hl7-v2+er7")
        .body(v2)
        .send()
        .await
        .unwrap();
    srv.stop().await;
    let log = String::from_utf8_lossy(&cap.0.lock().unwrap()).into_owned();
    let lines = log.lines().count();
    assert!(lines > 10, "the run logged ({lines} lines)");
    let sig = token.rsplit('.').next().unwrap();
    for (what, secret) in [
        ("bearer token", token.as_str()),
        ("token signature", sig),
        ("forged token", forged.as_str()),
        ("API key", api_key),
        ("身份证 number", id_card),
        ("phone number", phone),
    ] {
        assert!(!log.contains(secret), "{what} found in the logs");
    }
    println!("security logs: {lines} log lines scanned, 6 secrets absent");
}
