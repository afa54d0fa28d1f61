//! Shared test support: the external corpora, read in place, and a real server on an ephemeral port.
#![allow(dead_code)]

use std::io::Read;
use std::path::PathBuf;

/// The corpora folder (`$HUITONG_CORPORA`, default `../shared/corpora`), or `None` after printing
/// that the test is skipped. With `HUITONG_REQUIRE_CORPORA=1` a missing folder fails the test.
pub fn corpora(what: &str) -> Option<PathBuf> {
    let dir = std::env::var_os("HUITONG_CORPORA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/corpora"));
    let path = dir.join(what);
    if path.exists() {
        return Some(path);
    }
    if std::env::var("HUITONG_REQUIRE_CORPORA").as_deref() == Ok("1") {
        panic!(
            "corpus {} is required (HUITONG_REQUIRE_CORPORA=1) but missing",
            path.display()
        );
    }
    println!("skipped: corpus not found at {}", path.display());
    None
}

/// Every regular file of a `.tgz` as (path inside the archive, bytes), in archive order.
pub fn tgz_files(path: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let mut out = Vec::new();
    for entry in archive.entries().expect("tar entries") {
        let mut entry = entry.expect("tar entry");
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let name = entry
            .path()
            .expect("entry path")
            .to_string_lossy()
            .into_owned();
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).expect("read tar entry");
        out.push((name, bytes));
    }
    out
}

/// The JSON resources of the official R4 examples package, as (file name, bytes).
pub fn r4_examples() -> Option<Vec<(String, Vec<u8>)>> {
    let tgz = corpora("fhir-r4-examples/hl7.fhir.r4.examples-4.0.1.tgz")?;
    Some(
        tgz_files(&tgz)
            .into_iter()
            .filter(|(n, _)| {
                n.ends_with(".json") && !n.ends_with("package.json") && !n.contains(".index.")
            })
            .collect(),
    )
}

/// A real gateway on an ephemeral port over a real SQLite file in a temporary directory.
pub struct TestServer {
    /// `http://127.0.0.1:PORT/fhir`
    pub base: String,
    pub root: String,
    pub dir: tempfile::TempDir,
    server: Option<huitong::server::RunningServer>,
    pub http: reqwest::Client,
}

impl TestServer {
    pub async fn start() -> TestServer {
        Self::start_in(tempfile::tempdir().expect("tempdir"), |_| {}).await
    }

    /// Starts on an existing data directory, with settings adjusted by `tweak`.
    pub async fn start_in(
        dir: tempfile::TempDir,
        tweak: impl FnOnce(&mut huitong::config::Settings),
    ) -> TestServer {
        let mut settings = huitong::config::Settings {
            addr: "127.0.0.1:0".parse().unwrap(),
            data_dir: dir.path().to_path_buf(),
            ..Default::default()
        };
        tweak(&mut settings);
        let server = huitong::server::RunningServer::start(settings)
            .await
            .expect("server starts");
        let root = format!("http://{}", server.addr);
        TestServer {
            base: format!("{root}/fhir"),
            root,
            dir,
            server: Some(server),
            http: reqwest::Client::new(),
        }
    }

    /// Graceful shutdown; returns the data directory for a restart.
    pub async fn stop(mut self) -> tempfile::TempDir {
        if let Some(s) = self.server.take() {
            s.shutdown().await.expect("clean shutdown");
        }
        self.dir
    }

    /// The MLLP listener's address, when the server was started with one.
    pub fn mllp_addr(&self) -> Option<std::net::SocketAddr> {
        self.server.as_ref().and_then(|s| s.mllp_addr)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}/{}", self.base, path.trim_start_matches('/'))
    }

    /// POST/PUT a FHIR JSON body.
    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: &serde_json::Value,
    ) -> reqwest::Response {
        self.http
            .request(method, self.url(path))
            .header("content-type", "application/fhir+json")
            .body(serde_json::to_vec(body).unwrap())
            .send()
            .await
            .expect("request sent")
    }

    /// POSTs a raw body to a path below the root (`hl7v3`, `cda`, `hl7v2`): status and text.
    pub async fn post_raw(
        &self,
        path: &str,
        content_type: &str,
        body: impl Into<reqwest::Body>,
    ) -> (u16, String) {
        let r = self
            .http
            .post(format!("{}/{}", self.root, path.trim_start_matches('/')))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .expect("request sent");
        let status = r.status().as_u16();
        (status, r.text().await.expect("body"))
    }

    /// The `/metrics` text.
    pub async fn metrics(&self) -> String {
        self.get_text(&format!("{}/metrics", self.root)).await
    }

    async fn get_text(&self, url: &str) -> String {
        let r = self.http.get(url).send().await.expect("request sent");
        r.text().await.expect("body")
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(self.url(path))
            .send()
            .await
            .expect("request sent")
    }
}

/// Status and JSON body of a response.
pub async fn json_of(resp: reqwest::Response) -> (u16, serde_json::Value) {
    let status = resp.status().as_u16();
    let bytes = resp.bytes().await.expect("body");
    let v = if bytes.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_slice(&bytes).expect("JSON body")
    };
    (status, v)
}

/// Asserts an OperationOutcome with the status, and returns its first issue's (code, expression, diagnostics).
pub async fn expect_outcome(
    resp: reqwest::Response,
    status: u16,
) -> (String, Option<String>, String) {
    let ct = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let (s, v) = json_of(resp).await;
    assert_eq!(s, status, "status; body {v}");
    assert!(ct.starts_with("application/fhir+json"), "content type {ct}");
    assert_eq!(v["resourceType"], "OperationOutcome", "{v}");
    let issue = &v["issue"][0];
    assert_eq!(issue["severity"], "error", "{v}");
    (
        issue["code"].as_str().unwrap_or_default().to_string(),
        issue["expression"][0].as_str().map(str::to_string),
        issue["diagnostics"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    )
}

/// An HL7 v3 acknowledgement: (acknowledgement typeCode, acknowledgementDetail typeCode, detail
/// text).
pub fn v3_ack(xml: &str) -> (String, String, String) {
    let doc = roxmltree::Document::parse(xml).unwrap_or_else(|e| panic!("{e}: {xml}"));
    let find = |name: &str| {
        doc.descendants()
            .find(|d| d.is_element() && d.tag_name().name() == name)
    };
    let code = find("acknowledgement")
        .and_then(|a| a.attribute("typeCode"))
        .unwrap_or_default();
    let detail = find("acknowledgementDetail");
    let detail_type = detail
        .and_then(|d| d.attribute("typeCode"))
        .unwrap_or_default();
    let text = detail
        .and_then(|d| d.children().find(|c| c.is_element()))
        .and_then(|t| t.attribute("value"))
        .unwrap_or_default();
    (code.into(), detail_type.into(), text.into())
}

/// Ids of the matches (search.mode = match) of one page.
pub fn ids(bundle: &serde_json::Value) -> std::collections::BTreeSet<String> {
    bundle["entry"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["search"]["mode"] == "match")
        .map(|e| e["resource"]["id"].as_str().unwrap().to_string())
        .collect()
}

/// A set of ids.
pub fn set(items: &[&str]) -> std::collections::BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// PUTs a resource to `Type/id`, asserting it was stored.
pub async fn put(s: &TestServer, r: serde_json::Value) {
    let path = format!(
        "{}/{}",
        r["resourceType"].as_str().unwrap(),
        r["id"].as_str().unwrap()
    );
    let resp = s.send(reqwest::Method::PUT, &path, &r).await;
    let status = resp.status().as_u16();
    assert!(
        status == 201 || status == 200,
        "{path}: {status} {}",
        resp.text().await.unwrap()
    );
}
