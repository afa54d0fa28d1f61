//! HL7 v2 ingest end to end: the sample corpus over `POST /hl7v2`, MLLP over real TCP (1,000
//! messages on 10 connections, re-sends, a connection killed mid-frame, GB18030), all on a real
//! server and SQLite file.
mod common;

use common::{TestServer, json_of};
use huitong::mapping::ids::resource_id;
use serde_json::Value;
use std::collections::BTreeMap;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn server() -> TestServer {
    TestServer::start_in(tempfile::tempdir().unwrap(), |s| {
        s.mllp_addr = Some("127.0.0.1:0".parse().unwrap());
    })
    .await
}

async fn post_v2(srv: &TestServer, body: &[u8], fhir: bool) -> (u16, Vec<u8>) {
    let mut req = srv
        .http
        .post(format!("{}/hl7v2", srv.root))
        .header("content-type", "x-application/hl7-v2+er7")
        .body(body.to_vec());
    if fhir {
        req = req.header("accept", "application/fhir+json");
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.bytes().await.unwrap().to_vec())
}

fn msa(ack: &[u8]) -> String {
    String::from_utf8_lossy(ack)
        .split('\r')
        .find(|s| s.starts_with("MSA"))
        .unwrap_or("")
        .to_string()
}

/// Sends one frame and reads one ACK frame.
async fn mllp_roundtrip(sock: &mut TcpStream, msg: &[u8]) -> Vec<u8> {
    sock.write_all(&huitong::ingest::hl7v2::mllp::frame(msg))
        .await
        .unwrap();
    let mut buf = Vec::new();
    let mut byte = [0u8; 4096];
    loop {
        let n = sock.read(&mut byte).await.unwrap();
        assert!(n > 0, "connection closed before the ACK");
        buf.extend_from_slice(&byte[..n]);
        if buf.ends_with(&[0x1c, 0x0d]) {
            break;
        }
    }
    buf[1..buf.len() - 2].to_vec()
}

fn adt(control: &str, event: &str, mrn: &str, family: &str) -> String {
    format!(
        "MSH|^~\\&|HIS|H1|HUI|HUI|20240102030405||ADT^{event}^ADT_A01|{control}|P|2.5\r\
         EVN|{event}|20240102030405\r\
         PID|1||{mrn}^^^H1^MR||{family}^Li||19800102|F\r\
         PV1|1|I|W1^R1^B1||||||||||||||||V-{mrn}^^^H1^VN\r"
    )
}

/// The string `key` of every object in the array `list`.
fn strings<'a>(list: &'a Value, key: &str) -> Vec<&'a str> {
    list.as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v[key].as_str())
        .collect()
}

fn patient_id(mrn: &str) -> String {
    resource_id("Patient", "H1", &format!("{mrn}|H1"))
}

#[tokio::test]
async fn sample_corpus_parses_converts_and_commits() {
    let Some(dir) = common::corpora("hl7v2-samples/messages") else {
        return;
    };
    let expected_dir = dir.parent().unwrap().join("expected");
    let srv = server().await;
    let maps = huitong::mapping::Mappings::load(std::path::Path::new("mappings")).unwrap();
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    files.sort();
    let (mut passed, mut failed, mut compared, mut agreed, mut duplicates) = (0, 0, 0, 0, 0);
    let mut mismatches = Vec::new();
    let mut failures = Vec::new();
    for f in &files {
        let bytes = std::fs::read(f).unwrap();
        for (i, m) in huitong::ingest::hl7v2::split_messages(&bytes)
            .into_iter()
            .enumerate()
        {
            // The samples re-use control ids across files; a unique MSH-10 per sample makes each one
            // a new message (otherwise it is, rightly, answered as a duplicate and not converted).
            let stem = f.file_stem().unwrap().to_string_lossy().to_string();
            let m = unique_control_id(m, &format!("{stem}-{i}"));
            let (status, body) = post_v2(&srv, &m, true).await;
            let name = format!("{}#{}", f.file_name().unwrap().to_string_lossy(), i + 1);
            if status != 200 {
                failed += 1;
                failures.push(format!(
                    "{name}: {}",
                    String::from_utf8_lossy(&body)
                        .chars()
                        .take(400)
                        .collect::<String>()
                ));
                continue;
            }
            passed += 1;
            let bundle: Value = serde_json::from_slice(&body).unwrap();
            if bundle["resourceType"] == "OperationOutcome" {
                // Same (MSH-4, MSH-10) as an earlier sample: answered, not applied again.
                duplicates += 1;
                continue;
            }
            let stem = f.file_stem().unwrap().to_string_lossy().to_string();
            let exp = expected_dir.join(format!("{stem}-expected.json"));
            if i == 0
                && let Ok(text) = std::fs::read(&exp)
            {
                compared += 1;
                // The expected bundles are a converter's output, made without a store; the
                // committed Bundle merges what a message names (the visit these samples share)
                // onto what earlier samples stored. So the mapping is compared as converted.
                let converted = converted(&maps, &m);
                let bad = compare(&name, &converted, &serde_json::from_slice(&text).unwrap());
                if bad.is_empty() {
                    agreed += 1;
                }
                mismatches.extend(bad);
            }
        }
    }
    println!(
        "hl7v2 samples: {passed} passed, {failed} failed ({duplicates} re-used an earlier MSH-4/MSH-10 and were answered as duplicates)"
    );
    println!(
        "hl7v2 expected bundles: {agreed} agree on every key value checked, of {compared} compared"
    );
    for f in failures.iter().chain(&mismatches) {
        println!("  {f}");
    }
    assert!(
        passed >= 99,
        "{passed} passed, {failed} failed: {failures:#?}"
    );
    assert!(
        agreed >= 74,
        "{agreed} of {compared} expected bundles agree: {mismatches:#?}"
    );
}

/// The resources `raw` maps to, as a Bundle, without a store (as the gateway's defaults convert).
fn converted(maps: &huitong::mapping::Mappings, raw: &[u8]) -> Value {
    let msg = huitong::ingest::hl7v2::parse(raw, huitong::ingest::hl7v2::Charset::Ascii).unwrap();
    let c = huitong::mapping::convert(&msg, maps, &Default::default()).unwrap();
    let entry: Vec<Value> = c
        .resources
        .into_iter()
        .map(|r| serde_json::json!({ "resource": r }))
        .collect();
    serde_json::json!({ "resourceType": "Bundle", "entry": entry })
}

/// The message with MSH-10 suffixed by `tag` (bytes elsewhere untouched).
fn unique_control_id(m: &[u8], tag: &str) -> Vec<u8> {
    let body = m.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(m);
    let end = body
        .iter()
        .position(|&b| b == b'\r' || b == b'\n')
        .unwrap_or(body.len());
    let sep = body[3];
    let mut fields: Vec<Vec<u8>> = body[..end]
        .split(|&b| b == sep)
        .map(<[u8]>::to_vec)
        .collect();
    if let Some(f) = fields.get_mut(9) {
        f.extend_from_slice(format!("-{tag}").as_bytes());
    }
    let mut out = fields.join(&sep);
    out.extend_from_slice(&body[end..]);
    out
}

fn by_type(b: &Value) -> BTreeMap<String, Vec<Value>> {
    let mut m: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for e in b["entry"].as_array().into_iter().flatten() {
        let r = &e["resource"];
        m.entry(r["resourceType"].as_str().unwrap_or("").to_string())
            .or_default()
            .push(r.clone());
    }
    m
}

fn check_eq<T: PartialEq + std::fmt::Debug>(
    bad: &mut Vec<String>,
    ours: T,
    expected: T,
    what: String,
) {
    if ours != expected {
        bad.push(format!("{what}: ours {ours:?}, expected {expected:?}"));
    }
}

/// Two FHIR dateTimes denote the same instant (the expected bundles shift zones).
fn same_time(a: Option<&str>, b: Option<&str>) -> bool {
    use time::format_description::well_known::Rfc3339;
    match (a, b) {
        (Some(a), Some(b)) => match (
            time::OffsetDateTime::parse(a, &Rfc3339),
            time::OffsetDateTime::parse(b, &Rfc3339),
        ) {
            (Ok(x), Ok(y)) => x == y,
            _ => a == b,
        },
        (a, b) => a == b,
    }
}

/// Semantic comparison with the converter's expected bundle: the key values of the resource
/// types both produce (ids and that converter's own choices differ by design).
fn compare(name: &str, ours: &Value, expected: &Value) -> Vec<String> {
    let mut bad = Vec::new();
    let ours = by_type(ours);
    let exp = by_type(expected);
    for ty in [
        "Patient",
        "Encounter",
        "DiagnosticReport",
        "Observation",
        "MedicationRequest",
        "ChargeItem",
    ] {
        let (Some(o), Some(e)) = (ours.get(ty), exp.get(ty)) else {
            continue;
        };
        match ty {
            "Patient" => {
                let (o, e) = (&o[0], &e[0]);
                for key in ["birthDate", "gender"] {
                    if e.get(key).is_some() {
                        check_eq(
                            &mut bad,
                            o.get(key),
                            e.get(key),
                            format!("{name}: Patient.{key}"),
                        );
                    }
                }
                let values = |p: &Value| -> Vec<String> {
                    p["identifier"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|i| i["value"].as_str().map(str::to_string))
                        .collect()
                };
                let ov = values(o);
                if let Some(first) = values(e).first()
                    && !ov.contains(first)
                {
                    bad.push(format!(
                        "{name}: Patient identifier {first} missing from {ov:?}"
                    ));
                }
                let family = |p: &Value| p["name"][0]["family"].as_str().map(str::to_string);
                if family(e).is_some() {
                    check_eq(
                        &mut bad,
                        family(o),
                        family(e),
                        format!("{name}: Patient.name.family"),
                    );
                }
            }
            "Encounter" => {
                let (o, e) = (&o[0], &e[0]);
                if let Some(code) = e["class"]["code"].as_str() {
                    check_eq(
                        &mut bad,
                        o["class"]["code"].as_str(),
                        Some(code),
                        format!("{name}: Encounter.class"),
                    );
                }
                if let Some(start) = e["period"]["start"].as_str()
                    && !same_time(o["period"]["start"].as_str(), Some(start))
                {
                    bad.push(format!(
                        "{name}: Encounter.period.start {:?} vs {start}",
                        o["period"]["start"]
                    ));
                }
            }
            "DiagnosticReport" => {
                let statuses = |v: &[Value]| -> Vec<String> {
                    let mut s: Vec<String> = v
                        .iter()
                        .filter_map(|r| r["status"].as_str().map(str::to_string))
                        .collect();
                    s.sort();
                    s
                };
                check_eq(
                    &mut bad,
                    o.len(),
                    e.len(),
                    format!("{name}: DiagnosticReport count"),
                );
                check_eq(
                    &mut bad,
                    statuses(o),
                    statuses(e),
                    format!("{name}: DiagnosticReport.status"),
                );
            }
            "Observation" => {
                let codes = |v: &[Value]| -> Vec<String> {
                    let mut s: Vec<String> = v
                        .iter()
                        .filter_map(|r| r["code"]["coding"][0]["code"].as_str().map(str::to_string))
                        .collect();
                    s.sort();
                    s.dedup();
                    s
                };
                let oc = codes(o);
                for c in codes(e) {
                    if !oc.contains(&c) {
                        bad.push(format!("{name}: Observation code {c} missing from {oc:?}"));
                    }
                }
                for ob in e {
                    let Some(v) = ob.get("valueQuantity") else {
                        continue;
                    };
                    let code = &ob["code"]["coding"][0]["code"];
                    let mine = o.iter().find(|x| {
                        x["code"]["coding"][0]["code"] == *code && x.get("valueQuantity").is_some()
                    });
                    if let Some(m) = mine {
                        check_eq(
                            &mut bad,
                            m["valueQuantity"]["value"].to_string(),
                            v["value"].to_string(),
                            format!("{name}: value of {code}"),
                        );
                    }
                }
            }
            "MedicationRequest" => {
                // That converter makes one request per RXO and per RXE and codes the drug in
                // Medication resources; we make one per ORDER with the code inline. What must
                // agree: each of our drugs is one of theirs, and the refills allowed.
                let code_of = |r: &Value| {
                    r["code"]["coding"][0]["code"]
                        .as_str()
                        .or(r["medicationCodeableConcept"]["coding"][0]["code"].as_str())
                        .map(str::to_string)
                };
                let theirs: Vec<String> = exp
                    .get("Medication")
                    .into_iter()
                    .flatten()
                    .chain(e.iter())
                    .filter_map(code_of)
                    .collect();
                for m in o {
                    let code = code_of(m).unwrap_or_default();
                    if !theirs.contains(&code) {
                        bad.push(format!(
                            "{name}: MedicationRequest drug {code} not among {theirs:?}"
                        ));
                    }
                    let refills = &m["dispenseRequest"]["numberOfRepeatsAllowed"];
                    if !e
                        .iter()
                        .any(|x| x["dispenseRequest"]["numberOfRepeatsAllowed"] == *refills)
                    {
                        bad.push(format!("{name}: MedicationRequest refills {refills}"));
                    }
                }
            }
            "ChargeItem" => {
                let keys = |v: &[Value]| -> Vec<String> {
                    let mut k: Vec<String> = v
                        .iter()
                        .map(|c| {
                            format!(
                                "{} x{} {} {}",
                                c["code"]["coding"][0]["code"],
                                c["quantity"]["value"],
                                c["priceOverride"]["value"],
                                c["priceOverride"]["currency"]
                            )
                        })
                        .collect();
                    k.sort();
                    k
                };
                check_eq(
                    &mut bad,
                    keys(o),
                    keys(e),
                    format!("{name}: ChargeItem code, quantity and price"),
                );
            }
            _ => {}
        }
    }
    bad
}

#[tokio::test]
async fn mllp_thousand_messages_ten_connections_in_order_once() {
    let srv = server().await;
    let addr = srv.mllp_addr().expect("MLLP listener");
    let mut tasks = Vec::new();
    for k in 0..10 {
        tasks.push(tokio::spawn(async move {
            let mut sock = TcpStream::connect(addr).await.unwrap();
            let mut acks = Vec::new();
            for j in 0..50 {
                let mrn = format!("K{k}-{j}");
                // The A08 after the A01 on the same connection must land second.
                for (event, family) in [("A01", "First"), ("A08", "Second")] {
                    let ack = mllp_roundtrip(
                        &mut sock,
                        adt(&format!("C{k}-{j}-{event}"), event, &mrn, family).as_bytes(),
                    )
                    .await;
                    acks.push(msa(&ack));
                }
            }
            acks
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    assert_eq!(all.len(), 1000);
    assert!(
        all.iter().all(|a| a.starts_with("MSA|AA|")),
        "{:?}",
        all.iter().find(|a| !a.starts_with("MSA|AA|"))
    );
    for k in 0..10 {
        for j in [0, 49] {
            let (status, p) = json_of(
                srv.get(&format!("Patient/{}", patient_id(&format!("K{k}-{j}"))))
                    .await,
            )
            .await;
            assert_eq!(status, 200);
            assert_eq!(p["meta"]["versionId"], "2", "two messages, two versions");
            assert_eq!(p["name"][0]["family"], "Second");
        }
    }
    // A re-send gets the original ACK and is not applied again.
    let mut sock = TcpStream::connect(addr).await.unwrap();
    let msg = adt("C3-7-A08", "A08", "K3-7", "Second");
    let first = mllp_roundtrip(&mut sock, msg.as_bytes()).await;
    let again = mllp_roundtrip(&mut sock, msg.as_bytes()).await;
    assert_eq!(first, again);
    assert!(msa(&first).starts_with("MSA|AA|C3-7-A08"));
    let (_, p) = json_of(srv.get(&format!("Patient/{}", patient_id("K3-7"))).await).await;
    assert_eq!(p["meta"]["versionId"], "2", "the duplicate was not applied");
    let metrics = srv.metrics().await;
    assert!(
        metrics.contains("huitong_hl7v2_duplicates_total 2"),
        "{metrics}"
    );
    assert!(metrics.contains("huitong_hl7v2_messages_total{outcome=\"accepted\"} 1002"));
}

#[tokio::test]
async fn mllp_framing_errors_lose_nothing_acked() {
    let srv = server().await;
    let addr = srv.mllp_addr().unwrap();
    // Killed mid-frame: nothing processed, nothing acknowledged.
    let mut sock = TcpStream::connect(addr).await.unwrap();
    let msg = adt("KILL1", "A01", "KILL", "Gone");
    let bytes = huitong::ingest::hl7v2::mllp::frame(msg.as_bytes());
    sock.write_all(&bytes[..bytes.len() / 2]).await.unwrap();
    drop(sock);
    // Garbage before the start block, then a good frame on a new connection.
    let mut sock = TcpStream::connect(addr).await.unwrap();
    sock.write_all(b"garbage").await.unwrap();
    let ack = mllp_roundtrip(&mut sock, adt("OK1", "A01", "OK", "Kept").as_bytes()).await;
    assert!(msa(&ack).starts_with("MSA|AA|OK1"));
    let (status, _) = json_of(srv.get(&format!("Patient/{}", patient_id("KILL"))).await).await;
    assert_eq!(status, 404, "the half-sent message was not applied");
    // Not HL7 at all: AR, and it is kept as a dead letter.
    let ack = mllp_roundtrip(&mut sock, b"hello").await;
    assert!(
        msa(&ack).starts_with("MSA|AR"),
        "{}",
        String::from_utf8_lossy(&ack)
    );
    let (_, errors) = json_of(srv.get("$ingest-errors").await).await;
    assert_eq!(errors["parameter"][0]["part"][4]["name"], "reason");
    assert!(
        errors["parameter"][0]["part"][4]["valueString"]
            .as_str()
            .unwrap()
            .contains("MSH")
    );
}

#[tokio::test]
async fn gb18030_message_round_trips_chinese_names() {
    let srv = server().await;
    let addr = srv.mllp_addr().unwrap();
    let text = "MSH|^~\\&|HIS|H1|HUI|HUI|20240102030405||ADT^A01^ADT_A01|GB1|P|2.5|||||CHN|GB 18030-2000\r\
                EVN|A01|20240102030405\r\
                PID|1||GB-1^^^H1^MR||张^三丰||19800102|M|||北京市海淀区^^北京^^100080^CN\r\
                PV1|1|O\r";
    let (bytes, _, unmappable) = encoding_rs::GB18030.encode(text);
    assert!(!unmappable);
    assert_ne!(bytes.as_ref(), text.as_bytes());
    let mut sock = TcpStream::connect(addr).await.unwrap();
    let ack = mllp_roundtrip(&mut sock, &bytes).await;
    // The ACK is in the sender's charset and says so.
    assert!(String::from_utf8_lossy(&ack).contains("GB 18030-2000"));
    assert!(
        msa(&ack).starts_with("MSA|AA|GB1"),
        "{}",
        String::from_utf8_lossy(&ack)
    );
    let (status, p) = json_of(srv.get(&format!("Patient/{}", patient_id("GB-1"))).await).await;
    assert_eq!(status, 200);
    assert_eq!(p["name"][0]["family"], "张");
    assert_eq!(p["name"][0]["given"][0], "三丰");
    assert_eq!(p["address"][0]["line"][0], "北京市海淀区");
    // The same bytes labelled ASCII are refused, not mangled.
    let mut raw = bytes.to_vec();
    let pos = raw.windows(13).position(|w| w == b"GB 18030-2000").unwrap();
    raw.splice(pos..pos + 13, b"ASCII".iter().copied());
    let ack = mllp_roundtrip(&mut sock, &raw).await;
    assert!(
        msa(&ack).starts_with("MSA|AR"),
        "{}",
        String::from_utf8_lossy(&ack)
    );
    assert!(
        String::from_utf8_lossy(&ack).contains("ERR||PID^3^5|102"),
        "{}",
        String::from_utf8_lossy(&ack)
    );
}

#[tokio::test]
async fn http_ack_bundle_provenance_and_unmapped_fields() {
    let srv = server().await;
    let msg = adt("H1", "A01", "HTTP-1", "Zhao").replace("PV1|1|I", "ZPV|site-specific\rPV1|1|I");
    let (status, ack) = post_v2(&srv, msg.as_bytes(), false).await;
    assert_eq!(status, 200);
    assert!(msa(&ack).starts_with("MSA|AA|H1"));
    let (_, bundle) = post_v2(&srv, adt("H2", "A08", "HTTP-1", "Zhao").as_bytes(), true).await;
    let bundle: Value = serde_json::from_slice(&bundle).unwrap();
    assert_eq!(bundle["type"], "transaction");
    // The Provenance of the first message lists the Z-segment's value as not mapped.
    let prov_id = resource_id("Provenance", "H1", "message|H1");
    let (status, prov) = json_of(srv.get(&format!("Provenance/{prov_id}")).await).await;
    assert_eq!(status, 200);
    let issues = prov["contained"][0]["issue"].as_array().unwrap();
    assert!(
        issues
            .iter()
            .any(|i| i["location"][0].as_str().unwrap().starts_with("ZPV-1")),
        "{issues:?}"
    );
    let metrics = srv.metrics().await;
    assert!(
        metrics.contains("huitong_hl7v2_unmapped_values_total{field=\"ZPV-1\"} 1"),
        "{metrics}"
    );
    // Enhanced mode: MSH-15 = AL gives CA.
    let enhanced = adt("H3", "A01", "HTTP-2", "Qian").replace("|P|2.5\r", "|P|2.5|||AL|NE\r");
    let (_, ack) = post_v2(&srv, enhanced.as_bytes(), false).await;
    assert!(
        msa(&ack).starts_with("MSA|CA|H3"),
        "{}",
        String::from_utf8_lossy(&ack)
    );
}

/// The size limit (`hl7v2-max-message-bytes`) on both transports: over HTTP an exact 413
/// OperationOutcome, over MLLP an AR whose ERR carries code 207 and the limit; nothing is stored, and
/// the MLLP connection goes on serving the next frame.
#[tokio::test]
async fn oversized_messages_are_refused_on_both_transports() {
    let srv = TestServer::start_in(tempfile::tempdir().unwrap(), |s| {
        s.mllp_addr = Some("127.0.0.1:0".parse().unwrap());
        s.hl7v2_max_message_bytes = 4096;
    })
    .await;
    let mut big = adt("BIG1", "A01", "BIG", "Huge");
    big.push_str(&format!("NTE|1||{}\r", "x".repeat(8192)));

    let (status, body) = post_v2(&srv, big.as_bytes(), false).await;
    assert_eq!(status, 413, "{}", String::from_utf8_lossy(&body));
    let oo: Value = serde_json::from_slice(&body).expect("an OperationOutcome");
    assert_eq!(oo["resourceType"], "OperationOutcome");
    assert_eq!(oo["issue"][0]["code"], "too-costly");
    assert_eq!(
        oo["issue"][0]["diagnostics"],
        "HL7 v2 message larger than 4096 bytes"
    );

    let mut sock = TcpStream::connect(srv.mllp_addr().unwrap()).await.unwrap();
    let ack = String::from_utf8(mllp_roundtrip(&mut sock, big.as_bytes()).await).unwrap();
    assert!(msa(ack.as_bytes()).starts_with("MSA|AR"), "{ack}");
    let err = ack.split('\r').find(|s| s.starts_with("ERR")).expect("ERR");
    assert!(
        err.contains("207"),
        "ERR-3 is 207 (application internal error): {err}"
    );
    assert!(
        err.contains("message larger than 4096 bytes; not processed"),
        "{err}"
    );

    let (status, _) = json_of(srv.get(&format!("Patient/{}", patient_id("BIG"))).await).await;
    assert_eq!(status, 404, "an oversized message is never applied");
    // The same connection takes the next (small) message.
    let ack = mllp_roundtrip(&mut sock, adt("SMALL1", "A01", "SMALL", "Fits").as_bytes()).await;
    assert!(
        msa(&ack).starts_with("MSA|AA|SMALL1"),
        "{}",
        String::from_utf8_lossy(&ack)
    );
    let (status, _) = json_of(srv.get(&format!("Patient/{}", patient_id("SMALL"))).await).await;
    assert_eq!(status, 200);
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

/// The dead-letter entries as (id, reason).
async fn dead_letters(srv: &TestServer) -> Vec<(i64, String)> {
    let (status, body) = json_of(srv.get("$ingest-errors").await).await;
    assert_eq!(status, 200);
    body["parameter"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            let part = |n: &str| {
                p["part"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|x| x["name"] == n)
                    .unwrap()
                    .clone()
            };
            (
                part("id")["valueInteger"].as_i64().unwrap(),
                part("reason")["valueString"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

async fn replay(srv: &TestServer, which: &str) -> (u16, Value) {
    json_of(
        srv.http
            .post(srv.url(&format!("$ingest-errors?replay={which}")))
            .send()
            .await
            .unwrap(),
    )
    .await
}

#[tokio::test]
async fn dead_letters_are_replayed_after_a_mapping_fix() {
    let maps = tempfile::tempdir().unwrap();
    copy_dir(std::path::Path::new("mappings"), maps.path());
    let dir = maps.path().to_path_buf();
    let srv = TestServer::start_in(tempfile::tempdir().unwrap(), move |s| {
        s.mappings_dir = dir;
    })
    .await;
    // An FT1 without its transaction code: ChargeItem.code is required, so AE and a dead letter.
    let msg = "MSH|^~\\&|HIS|H1|HUI|HUI|20240102030405||DFT^P03^DFT_P03|DL1|P|2.5\rEVN|P03|20240102030405\rPID|1||MRN7^^^H1^MR||Li^Si\rFT1|1|T1||20240102|||||||12&CNY\r";
    let (status, ack) = post_v2(&srv, msg.as_bytes(), false).await;
    assert_eq!(status, 200);
    assert!(
        String::from_utf8_lossy(&ack).contains("MSA|AE|DL1"),
        "{}",
        String::from_utf8_lossy(&ack)
    );
    let first = dead_letters(&srv).await;
    assert_eq!(first.len(), 1);
    assert!(first[0].1.contains("ChargeItem.code"), "{first:?}");

    // Replayed unchanged: it fails again, is listed anew with its reason, and the old entry goes.
    let (status, body) = replay(&srv, &first[0].0.to_string()).await;
    assert_eq!(status, 200, "{body}");
    let parts = &body["parameter"][0]["part"];
    assert_eq!(parts[0]["valueInteger"], first[0].0);
    assert_eq!(parts[2]["valueCode"], "AE");
    assert_eq!(parts[3]["valueBoolean"], false);
    let second = dead_letters(&srv).await;
    assert_eq!(second.len(), 1);
    assert_ne!(second[0].0, first[0].0);
    assert_eq!(second[0].1, first[0].1);

    // The fix: a default code for uncoded charges, reloaded; the replay commits.
    let ft1 = maps.path().join("hl7v2/segments/FT1-ChargeItem.toml");
    let text = std::fs::read_to_string(&ft1).unwrap().replace(
        "[defaults]\nstatus = \"unknown\"\n",
        "[defaults]\nstatus = \"unknown\"\ncode = { text = \"uncoded charge\" }\n",
    );
    std::fs::write(&ft1, text).unwrap();
    let r = srv
        .http
        .post(srv.url("$reload-mappings"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let (status, body) = replay(&srv, "all").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["parameter"].as_array().unwrap().len(), 1);
    assert_eq!(body["parameter"][0]["part"][2]["valueCode"], "AA");
    assert_eq!(body["parameter"][0]["part"][3]["valueBoolean"], true);
    assert!(dead_letters(&srv).await.is_empty());
    let (_, found) = json_of(srv.get("ChargeItem?code:text=uncoded").await).await;
    assert_eq!(found["total"], 1, "{found}");
    assert_eq!(
        found["entry"][0]["resource"]["priceOverride"]["currency"],
        "CNY"
    );

    // Bad requests are named.
    let r = srv
        .http
        .post(srv.url("$ingest-errors"))
        .send()
        .await
        .unwrap();
    let (code, _, diag) = common::expect_outcome(r, 400).await;
    assert_eq!(code, "required");
    assert!(diag.contains("`replay` is required"), "{diag}");
    let (status, body) = replay(&srv, "first").await;
    assert_eq!(status, 400);
    assert_eq!(
        body["issue"][0]["diagnostics"],
        "replay: 'first' is neither a dead-letter id nor `all`"
    );
    let (status, body) = replay(&srv, "999").await;
    assert_eq!(status, 404);
    assert_eq!(body["issue"][0]["diagnostics"], "no dead letter 999");
}

#[tokio::test]
async fn a_merge_repoints_what_referred_to_the_merged_patient() {
    let srv = server().await;
    let old = patient_id("OLD");
    let new = patient_id("NEW");
    // The patient registered twice, under two MRNs; the first record gathered an Encounter (from
    // the ADT) and an Observation (written over REST).
    for (control, mrn) in [("M1", "OLD"), ("M2", "NEW")] {
        let (_, ack) = post_v2(&srv, adt(control, "A01", mrn, "Wang").as_bytes(), false).await;
        assert!(String::from_utf8_lossy(&ack).contains("MSA|AA"));
    }
    let obs = serde_json::json!({"resourceType": "Observation", "status": "final",
        "code": {"text": "weight"}, "subject": {"reference": format!("Patient/{old}")},
        "valueQuantity": {"value": 60, "unit": "kg"}});
    let (status, created) =
        json_of(srv.send(reqwest::Method::POST, "Observation", &obs).await).await;
    assert_eq!(status, 201, "{created}");
    let obs_id = created["id"].as_str().unwrap().to_string();

    let a40 = "MSH|^~\\&|HIS|H1|HUI|HUI|20240103030405||ADT^A40^ADT_A39|M3|P|2.5\r\
               EVN|A40|20240103030405\r\
               PID|1||NEW^^^H1^MR||Wang^Li||19800102|F\r\
               MRG|OLD^^^H1^MR\r";
    let (_, ack) = post_v2(&srv, a40.as_bytes(), false).await;
    assert!(
        String::from_utf8_lossy(&ack).contains("MSA|AA|M3"),
        "{}",
        String::from_utf8_lossy(&ack)
    );

    let (_, merged) = json_of(srv.get(&format!("Patient/{old}")).await).await;
    assert_eq!(merged["active"], false);
    assert_eq!(merged["link"][0]["type"], "replaced-by");
    assert_eq!(
        merged["link"][0]["other"]["reference"],
        format!("Patient/{new}")
    );
    // Everything that pointed at the merged record now points at the survivor.
    let (_, o) = json_of(srv.get(&format!("Observation/{obs_id}")).await).await;
    assert_eq!(o["subject"]["reference"], format!("Patient/{new}"));
    assert_eq!(o["meta"]["versionId"], "2");
    for (query, total) in [
        (format!("Encounter?subject=Patient/{old}"), 0),
        (format!("Encounter?subject=Patient/{new}"), 2),
        (format!("Observation?subject=Patient/{old}"), 0),
        (format!("Observation?subject=Patient/{new}"), 1),
    ] {
        let (_, b) = json_of(srv.get(&query).await).await;
        assert_eq!(b["total"], total, "{query}: {b}");
    }
    // The message's Provenance names what it re-pointed.
    let prov = resource_id("Provenance", "H1", "message|M3");
    let (_, p) = json_of(srv.get(&format!("Provenance/{prov}")).await).await;
    let targets = strings(&p["target"], "reference");
    assert!(
        targets.contains(&format!("Observation/{obs_id}").as_str()),
        "{targets:?}"
    );
}

/// The same merge sent eight times at once under eight control ids (a HIS retrying on several
/// connections): each reads the Observation at the version it finds and re-points it on that
/// condition, so all but one meet a version conflict. None may be refused for it.
#[tokio::test]
async fn concurrent_merges_of_one_patient_are_all_accepted_and_repoint_once() {
    let srv = server().await;
    let old = patient_id("C-OLD");
    let new = patient_id("C-NEW");
    for (control, mrn) in [("CM1", "C-OLD"), ("CM2", "C-NEW")] {
        let (_, ack) = post_v2(&srv, adt(control, "A01", mrn, "Zhao").as_bytes(), false).await;
        assert!(String::from_utf8_lossy(&ack).contains("MSA|AA"));
    }
    let obs = serde_json::json!({"resourceType": "Observation", "status": "final",
        "code": {"text": "weight"}, "subject": {"reference": format!("Patient/{old}")},
        "valueQuantity": {"value": 61, "unit": "kg"}});
    let (status, created) =
        json_of(srv.send(reqwest::Method::POST, "Observation", &obs).await).await;
    assert_eq!(status, 201, "{created}");
    let obs_id = created["id"].as_str().unwrap().to_string();

    let merges = (0..8).map(|i| {
        let msg = format!(
            "MSH|^~\\&|HIS|H1|HUI|HUI|20240103030405||ADT^A40^ADT_A39|CM-MERGE-{i}|P|2.5\r\
             EVN|A40|20240103030405\r\
             PID|1||C-NEW^^^H1^MR||Zhao^Li||19800102|F\r\
             MRG|C-OLD^^^H1^MR\r"
        );
        let srv = &srv;
        async move { post_v2(srv, msg.as_bytes(), false).await }
    });
    for (i, (status, ack)) in futures_util::future::join_all(merges)
        .await
        .into_iter()
        .enumerate()
    {
        let ack = String::from_utf8_lossy(&ack);
        assert_eq!(status, 200, "{ack}");
        assert!(
            ack.contains(&format!("MSA|AA|CM-MERGE-{i}")),
            "merge {i}: {ack}"
        );
    }
    assert!(dead_letters(&srv).await.is_empty());
    // Re-pointed once: the later merges found nothing left to re-point.
    let (_, o) = json_of(srv.get(&format!("Observation/{obs_id}")).await).await;
    assert_eq!(o["subject"]["reference"], format!("Patient/{new}"));
    assert_eq!(o["meta"]["versionId"], "2", "{o}");
}

/// Sixteen messages at once change one registered patient: eight A08s each give it another family
/// name, eight results each add an identifier. Each merges onto the version the one before it
/// committed (the patient is locked from before the read until the commit), so none is refused,
/// none is tried again after a version conflict, and no change is lost.
#[tokio::test]
async fn concurrent_messages_changing_one_patient_apply_one_after_the_other() {
    let srv = server().await;
    let pid = patient_id("LOCK1");
    let (_, ack) = post_v2(&srv, registration("LK0", "LOCK1").as_bytes(), false).await;
    assert!(msa(&ack).starts_with("MSA|AA|LK0"), "{}", msa(&ack));
    let messages = (0..8).flat_map(|i| {
        [
            format!(
                "MSH|^~\\&|HIS|H1|HUI|HUI|20240102030405||ADT^A08^ADT_A01|LK-A{i}|P|2.5\r\
                 EVN|A08|20240102030405\r\
                 PID|1||LOCK1^^^H1^MR||Family{i}^Li||19800102|F\r\
                 PV1|1|O|||||||||||||||||V-LOCK1^^^H1^VN\r"
            ),
            format!(
                "MSH|^~\\&|LAB|H1|HUI|HUI|20240105080000||ORU^R01^ORU_R01|LK-R{i}|P|2.5\r\
                 PID|1||LOCK1^^^H1^MR~CARD{i}^^^H1^PI||Wang^Li||19800102|F\r\
                 OBR|1|PO-LK{i}|FO-LK{i}|GLU^Glucose^L\r\
                 OBX|1|NM|GLU^Glucose^L||5.{i}|mmol/L|||||F\r"
            ),
        ]
    });
    let sent = messages.map(|m| {
        let srv = &srv;
        async move { post_v2(srv, m.as_bytes(), false).await }
    });
    for (status, ack) in futures_util::future::join_all(sent).await {
        assert_eq!(status, 200);
        assert!(msa(&ack).starts_with("MSA|AA"), "{}", msa(&ack));
    }
    assert!(dead_letters(&srv).await.is_empty());

    let (_, p) = json_of(srv.get(&format!("Patient/{pid}")).await).await;
    let ids = strings(&p["identifier"], "value");
    for i in 0..8 {
        assert!(
            ids.contains(&format!("CARD{i}").as_str()),
            "CARD{i} lost: {ids:?}"
        );
    }
    let family = p["name"][0]["family"].as_str().unwrap_or_default();
    assert!(family.starts_with("Family"), "{p}");
    // The registration and one version per message.
    assert_eq!(p["meta"]["versionId"], "17", "{p}");
    let metrics = srv.metrics().await;
    assert!(
        metrics.contains("huitong_hl7v2_conflict_retries_total 0"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_message_re_sending_what_is_stored_writes_no_new_versions() {
    let srv = server().await;
    let version = |v: &Value| v["meta"]["versionId"].as_str().unwrap().to_string();
    let pid = patient_id("M-RESEND");
    let (s, _) = post_v2(&srv, adt("R1", "A08", "M-RESEND", "Wang").as_bytes(), false).await;
    assert_eq!(s, 200);
    // The same content in a new message (another control id): the Patient and the Encounter stay
    // at version 1; the message's own Provenance is written and names them.
    let (s, ack) = post_v2(&srv, adt("R2", "A08", "M-RESEND", "Wang").as_bytes(), false).await;
    assert_eq!(s, 200);
    assert!(msa(&ack).starts_with("MSA|AA|R2"), "{}", msa(&ack));
    let (_, p) = json_of(srv.get(&format!("Patient/{pid}")).await).await;
    assert_eq!(version(&p), "1", "{p}");
    let (_, history) = json_of(srv.get(&format!("Patient/{pid}/_history")).await).await;
    assert_eq!(history["total"], 1, "{history}");
    let (_, provs) = json_of(srv.get(&format!("Provenance?target=Patient/{pid}")).await).await;
    assert_eq!(provs["total"], 2, "one Provenance per message: {provs}");
    // A changed family name is a new version.
    let (s, _) = post_v2(&srv, adt("R3", "A08", "M-RESEND", "Zhao").as_bytes(), false).await;
    assert_eq!(s, 200);
    let (_, p) = json_of(srv.get(&format!("Patient/{pid}")).await).await;
    assert_eq!(version(&p), "2", "{p}");
    assert_eq!(p["name"][0]["family"], "Zhao", "{p}");
}

/// A result names the patient it is about; it is not the patient's register. What it states is
/// added to the registered record (a new identifier), what the record already holds is kept
/// over a different value (the sex), which the ACK and the Provenance report, and what it does
/// not repeat (telephone, address) is not lost. An A08 is the record's update: its values
/// replace the stored ones, and a field it does not send is no change (HL7 v2's "not present").
#[tokio::test]
async fn a_result_naming_a_registered_patient_adds_to_it_and_never_overwrites_it() {
    let srv = server().await;
    let pid = patient_id("REG1");
    let a04 = "MSH|^~\\&|HIS|H1|HUI|HUI|20240102030405||ADT^A04^ADT_A01|N1|P|2.5\r\
               EVN|A04|20240102030405\r\
               PID|1||REG1^^^H1^MR||Wang^Li||19800102|F|||Road 1^^Beijing^^100000||^PRN^PH^^^^13800000000|||M\r\
               PV1|1|O|||||||||||||||||V-REG1^^^H1^VN\r";
    let (_, ack) = post_v2(&srv, a04.as_bytes(), false).await;
    assert!(msa(&ack).starts_with("MSA|AA|N1"), "{}", msa(&ack));

    let oru = "MSH|^~\\&|LAB|H1|HUI|HUI|20240105080000||ORU^R01^ORU_R01|L1|P|2.5\r\
               PID|1||REG1^^^H1^MR~HC9^^^H1^PI||Wang^Li||19800102|M\r\
               OBR|1|PO1|FO1|GLU^Glucose^L\r\
               OBX|1|NM|GLU^Glucose^L||5.4|mmol/L|||||F\r";
    let (_, ack) = post_v2(&srv, oru.as_bytes(), false).await;
    let ack = String::from_utf8_lossy(&ack).to_string();
    assert!(ack.contains("MSA|AA|L1"), "{ack}");
    let warning = ack
        .split('\r')
        .find(|s| s.starts_with("ERR") && s.contains("Patient.gender"))
        .unwrap_or_else(|| panic!("no warning about the sex: {ack}"));
    assert!(
        warning.contains("|W|") && warning.contains("female") && warning.contains("male"),
        "{warning}"
    );

    let (_, p) = json_of(srv.get(&format!("Patient/{pid}")).await).await;
    assert_eq!(p["gender"], "female", "the registered sex is kept: {p}");
    assert_eq!(p["telecom"][0]["value"], "13800000000", "{p}");
    assert_eq!(p["address"][0]["city"], "Beijing", "{p}");
    assert!(p["maritalStatus"].is_object(), "{p}");
    let ids = strings(&p["identifier"], "value");
    assert!(ids.contains(&"REG1") && ids.contains(&"HC9"), "{ids:?}");
    assert_eq!(
        p["meta"]["versionId"], "2",
        "the new identifier is a version: {p}"
    );

    // The result's Provenance records the value the store kept.
    let prov = resource_id("Provenance", "H1", "message|L1");
    let (_, pr) = json_of(srv.get(&format!("Provenance/{prov}")).await).await;
    let kept = pr["contained"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "kept")
        .unwrap_or_else(|| panic!("no #kept outcome: {pr}"));
    assert_eq!(
        kept["issue"][0]["expression"][0], "Patient.gender",
        "{kept}"
    );
    assert_eq!(kept["issue"][0]["severity"], "warning", "{kept}");

    // The register's update: a new family name replaces the stored one; the telephone it does
    // not send stays, and so does the identifier the result added.
    let a08 = "MSH|^~\\&|HIS|H1|HUI|HUI|20240106030405||ADT^A08^ADT_A01|N2|P|2.5\r\
               EVN|A08|20240106030405\r\
               PID|1||REG1^^^H1^MR||Zhao^Li||19800102|F\r\
               PV1|1|O|||||||||||||||||V-REG1^^^H1^VN\r";
    let (_, ack) = post_v2(&srv, a08.as_bytes(), false).await;
    assert!(msa(&ack).starts_with("MSA|AA|N2"), "{}", msa(&ack));
    let (_, p) = json_of(srv.get(&format!("Patient/{pid}")).await).await;
    assert_eq!(p["name"][0]["family"], "Zhao", "{p}");
    assert_eq!(p["telecom"][0]["value"], "13800000000", "{p}");
    let ids = strings(&p["identifier"], "value");
    assert!(ids.contains(&"HC9"), "{ids:?}");
}

/// The contained resource `id` of the Provenance of message `control` from facility H1.
async fn provenance_part(srv: &TestServer, control: &str, id: &str) -> Option<Value> {
    let prov = resource_id("Provenance", "H1", &format!("message|{control}"));
    let (status, pr) = json_of(srv.get(&format!("Provenance/{prov}")).await).await;
    assert_eq!(status, 200, "{pr}");
    pr["contained"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["id"] == id)
        .cloned()
}

/// Asserts that the Provenance of message `control` reports none of `fields` as not mapped.
async fn assert_consumed(srv: &TestServer, control: &str, fields: &[&str]) {
    let Some(oo) = provenance_part(srv, control, "unmapped").await else {
        return;
    };
    // Located as `PID-13 (segment 3)`.
    let unmapped: Vec<&str> = oo["issue"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i["location"][0].as_str())
        .collect();
    for f in fields {
        let here = format!("{f} ");
        assert!(
            !unmapped.iter().any(|u| u.starts_with(&here)),
            "{f}: {unmapped:?}"
        );
    }
}

/// A04 registering patient `mrn` with a home and a work telephone, a sex and an address.
fn registration(control: &str, mrn: &str) -> String {
    format!(
        "MSH|^~\\&|HIS|H1|HUI|HUI|20240102030405||ADT^A04^ADT_A01|{control}|P|2.5\r\
         EVN|A04|20240102030405\r\
         PID|1||{mrn}^^^H1^MR||Wang^Li||19800102|F|||Road 1^^Beijing^^100000||^PRN^PH^^^^13800000000|^WPN^PH^^^^01088880000||M\r\
         PV1|1|O|||||||||||||||||V-{mrn}^^^H1^VN\r"
    )
}

#[tokio::test]
async fn an_explicit_null_in_an_update_deletes_the_element_and_an_empty_field_deletes_nothing() {
    let srv = server().await;
    let pid = patient_id("NUL1");
    let (_, ack) = post_v2(&srv, registration("X1", "NUL1").as_bytes(), false).await;
    assert!(msa(&ack).starts_with("MSA|AA|X1"), "{}", msa(&ack));
    let (_, p) = json_of(srv.get(&format!("Patient/{pid}")).await).await;
    assert_eq!(p["telecom"].as_array().map(Vec::len), Some(2), "{p}");

    // The register's update: PID-8 and PID-13 are `""` (delete), PID-11 and PID-14 are empty
    // (not sent: no change).
    let a08 = "MSH|^~\\&|HIS|H1|HUI|HUI|20240106030405||ADT^A08^ADT_A01|X2|P|2.5\r\
               EVN|A08|20240106030405\r\
               PID|1||NUL1^^^H1^MR||Wang^Li||19800102|\"\"|||||\"\"|||M\r\
               PV1|1|O|||||||||||||||||V-NUL1^^^H1^VN\r";
    let (_, ack) = post_v2(&srv, a08.as_bytes(), false).await;
    assert!(msa(&ack).starts_with("MSA|AA|X2"), "{}", msa(&ack));
    let (_, p) = json_of(srv.get(&format!("Patient/{pid}")).await).await;
    assert!(p.get("gender").is_none(), "PID-8 \"\" deletes the sex: {p}");
    assert_eq!(
        strings(&p["telecom"], "value"),
        ["01088880000"],
        "PID-13 \"\" deletes the home telephone, not PID-14's work one: {p}"
    );
    assert_eq!(p["telecom"][0]["use"], "work", "{p}");
    assert_eq!(
        p["address"][0]["city"], "Beijing",
        "an empty PID-11 deletes nothing: {p}"
    );
    assert!(p["maritalStatus"].is_object(), "{p}");
    assert_eq!(p["meta"]["versionId"], "2", "{p}");
    assert!(
        !p.to_string().contains(r#"\"\""#),
        "no literal \"\" stored: {p}"
    );
    // A `""` a rule maps is consumed, not reported as unmapped.
    assert_consumed(&srv, "X2", &["PID-8", "PID-13"]).await;
    assert!(
        provenance_part(&srv, "X2", "kept").await.is_none(),
        "the subject's deletions are applied, nothing kept"
    );

    // An empty field in a later update deletes nothing either: the work telephone stays.
    let a08 = a08
        .replace("|X2|", "|X3|")
        .replace("|\"\"|||||\"\"|||M", "|M||||||||M");
    let (_, ack) = post_v2(&srv, a08.as_bytes(), false).await;
    assert!(msa(&ack).starts_with("MSA|AA|X3"), "{}", msa(&ack));
    let (_, p) = json_of(srv.get(&format!("Patient/{pid}")).await).await;
    assert_eq!(p["gender"], "male", "{p}");
    assert_eq!(strings(&p["telecom"], "value"), ["01088880000"], "{p}");
    assert_eq!(p["address"][0]["city"], "Beijing", "{p}");
}

#[tokio::test]
async fn an_explicit_null_in_a_result_deletes_nothing_of_the_patient_it_names_and_is_recorded() {
    let srv = server().await;
    let pid = patient_id("NUL2");
    let (_, ack) = post_v2(&srv, registration("Y1", "NUL2").as_bytes(), false).await;
    assert!(msa(&ack).starts_with("MSA|AA|Y1"), "{}", msa(&ack));
    let (_, registered) = json_of(srv.get(&format!("Patient/{pid}")).await).await;

    let oru = "MSH|^~\\&|LAB|H1|HUI|HUI|20240105080000||ORU^R01^ORU_R01|Y2|P|2.5\r\
               PID|1||NUL2^^^H1^MR||Wang^Li||19800102|\"\"|||||\"\"\r\
               OBR|1|PO2|FO2|GLU^Glucose^L\r\
               OBX|1|NM|GLU^Glucose^L||5.4|mmol/L|||||F\r";
    let (_, ack) = post_v2(&srv, oru.as_bytes(), false).await;
    let ack = String::from_utf8_lossy(&ack).to_string();
    assert!(ack.contains("MSA|AA|Y2"), "{ack}");
    assert!(
        ack.split('\r')
            .any(|s| s.starts_with("ERR") && s.contains("|W|") && s.contains("PID-13")),
        "the sender is told its deletion was not applied: {ack}"
    );

    let (_, p) = json_of(srv.get(&format!("Patient/{pid}")).await).await;
    assert_eq!(p["gender"], "female", "{p}");
    assert_eq!(p["telecom"], registered["telecom"], "{p}");
    assert_eq!(
        p["meta"]["versionId"], registered["meta"]["versionId"],
        "nothing changed: {p}"
    );

    let kept = provenance_part(&srv, "Y2", "kept")
        .await
        .expect("a #kept outcome");
    let issues = kept["issue"].as_array().unwrap();
    for (path, field) in [("Patient.gender", "PID-8"), ("Patient.telecom", "PID-13")] {
        let issue = issues
            .iter()
            .find(|i| i["expression"][0] == path)
            .unwrap_or_else(|| panic!("no issue at {path}: {kept}"));
        let text = issue["details"]["text"].as_str().unwrap();
        assert!(
            text.contains(field) && text.contains("not applied"),
            "{text}"
        );
    }
    // The home telephone is what the deletion would have removed; the work one is not named.
    let telecom = issues
        .iter()
        .find(|i| i["expression"][0] == "Patient.telecom")
        .unwrap();
    let text = telecom["details"]["text"].as_str().unwrap();
    assert!(
        text.contains("13800000000") && !text.contains("01088880000"),
        "{text}"
    );
    assert_consumed(&srv, "Y2", &["PID-8", "PID-13"]).await;
}

#[tokio::test]
async fn an_explicit_null_in_an_owned_resource_leaves_the_element_absent() {
    let srv = server().await;
    let result = |control: &str, interpretation: &str| {
        format!(
            "MSH|^~\\&|LAB|H1|HUI|HUI|20240105080000||ORU^R01^ORU_R01|{control}|P|2.5\r\
             PID|1||NUL3^^^H1^MR||Wang^Li||19800102|F\r\
             OBR|1|PO3|FO3|GLU^Glucose^L\r\
             OBX|1|NM|GLU^Glucose^L||9.4|mmol/L||{interpretation}|||F\r"
        )
    };
    let (_, bundle) = post_v2(&srv, result("Z1", "H").as_bytes(), true).await;
    let bundle: Value = serde_json::from_slice(&bundle).unwrap();
    let observation = bundle["entry"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["resource"]["resourceType"] == "Observation")
        .map(|e| e["fullUrl"].as_str().unwrap().to_string())
        .unwrap_or_else(|| panic!("no Observation: {bundle}"));
    let (_, o) = json_of(srv.get(&observation).await).await;
    assert!(o["interpretation"].is_array(), "{o}");

    // The corrected result: OBX-8 `""` (no interpretation any more).
    let (_, ack) = post_v2(&srv, result("Z2", "\"\"").as_bytes(), false).await;
    assert!(msa(&ack).starts_with("MSA|AA|Z2"), "{}", msa(&ack));
    let (_, o) = json_of(srv.get(&observation).await).await;
    assert!(o.get("interpretation").is_none(), "{o}");
    assert_eq!(o["meta"]["versionId"], "2", "{o}");
    assert!(!o.to_string().contains(r#"\"\""#), "{o}");
    assert_consumed(&srv, "Z2", &["OBX-8"]).await;
}

#[tokio::test]
async fn a_result_names_the_patient_registered_elsewhere_under_its_identifier() {
    let srv = server().await;
    // A patient registered through another entry point (a REST client, as a CDA document or an
    // HL7 v3 register would) under its 居民身份证号.
    let id_card = "urn:oid:2.16.156.10011.1.3";
    common::put(
        &srv,
        serde_json::json!({
            "resourceType": "Patient", "id": "registered-elsewhere",
            "identifier": [{"system": id_card, "value": "110101199003070011"}],
            "name": [{"family": "Wang", "given": ["Li"]}],
            "gender": "female",
            "telecom": [{"system": "phone", "value": "13800000000"}]
        }),
    )
    .await;

    // The laboratory keys the patient by the same number (type NNCHN: the national system).
    let oru = "MSH|^~\\&|LAB|H1|HUI|HUI|20240105080000||ORU^R01^ORU_R01|R1|P|2.5\r\
               PID|1||110101199003070011^^^^NNCHN~LAB77^^^H1^MR||Wang^Li||19900307|F\r\
               OBR|1|PO4|FO4|GLU^Glucose^L\r\
               OBX|1|NM|GLU^Glucose^L||5.4|mmol/L|||||F\r";
    let (_, bundle) = post_v2(&srv, oru.as_bytes(), true).await;
    let bundle: Value = serde_json::from_str(&String::from_utf8_lossy(&bundle))
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&bundle)));
    let resources: Vec<&Value> = bundle["entry"]
        .as_array()
        .unwrap_or_else(|| panic!("{bundle}"))
        .iter()
        .map(|e| &e["resource"])
        .collect();
    for ty in ["Observation", "DiagnosticReport"] {
        let r = resources
            .iter()
            .find(|r| r["resourceType"] == ty)
            .unwrap_or_else(|| panic!("no {ty}: {bundle}"));
        let (status, stored) = json_of(
            srv.get(&format!("{ty}/{}", r["id"].as_str().unwrap()))
                .await,
        )
        .await;
        assert_eq!(status, 200, "{stored}");
        assert_eq!(
            stored["subject"]["reference"], "Patient/registered-elsewhere",
            "{stored}"
        );
    }
    // One Patient: the registered one, with the laboratory's number added.
    let own_id = resource_id("Patient", "H1", "110101199003070011|");
    let (status, _) = json_of(srv.get(&format!("Patient/{own_id}")).await).await;
    assert_eq!(status, 404, "no second Patient under the message's own id");
    let (_, all) = json_of(srv.get("Patient").await).await;
    assert_eq!(
        common::ids(&all),
        common::set(&["registered-elsewhere"]),
        "{all}"
    );
    let (_, p) = json_of(srv.get("Patient/registered-elsewhere").await).await;
    let values = strings(&p["identifier"], "value");
    assert!(
        values.contains(&"110101199003070011") && values.contains(&"LAB77"),
        "{values:?}"
    );
    assert_eq!(p["telecom"][0]["value"], "13800000000", "{p}");
    assert_eq!(p["meta"]["versionId"], "2", "{p}");
}
