//! One HTTP request and its response, kept as evidence and as a source for later asserts and
//! variables (`responseId`, `requestId`).

use serde_json::{Value, json};

/// Most bytes of a body kept in the evidence of a report (the whole body stays in memory for
/// asserts while the script runs).
pub const EVIDENCE_BODY_BYTES: usize = 8 * 1024;

/// A request as sent and the response as received.
#[derive(Debug, Clone, Default)]
pub struct Exchange {
    pub method: String,
    pub url: String,
    pub request_headers: Vec<(String, String)>,
    pub request_body: Option<Vec<u8>>,
    /// 0 when no response came (see `error`).
    pub status: u16,
    pub response_headers: Vec<(String, String)>,
    pub response_body: Vec<u8>,
    /// The response body parsed as JSON, when it is JSON.
    pub response_json: Option<Value>,
    /// Why there is no response (connection refused, timeout...).
    pub error: Option<String>,
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

impl Exchange {
    /// A response header by name (case-insensitive).
    pub fn response_header(&self, name: &str) -> Option<&str> {
        header(&self.response_headers, name)
    }

    /// A request header by name (case-insensitive).
    pub fn request_header(&self, name: &str) -> Option<&str> {
        header(&self.request_headers, name)
    }

    /// The media type of the response, without parameters, lower case.
    pub fn response_media_type(&self) -> Option<String> {
        self.response_header("content-type").map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
    }

    /// One line: `GET http://... -> 200`.
    pub fn summary(&self) -> String {
        match &self.error {
            Some(e) => format!("{} {} -> no response ({e})", self.method, self.url),
            None => format!("{} {} -> {}", self.method, self.url, self.status),
        }
    }

    /// The exchange as JSON evidence (bodies cut to [`EVIDENCE_BODY_BYTES`]).
    pub fn evidence(&self) -> Value {
        let body = |b: &[u8]| {
            let cut = b.len() > EVIDENCE_BODY_BYTES;
            let mut end = b.len().min(EVIDENCE_BODY_BYTES);
            // Do not cut inside a UTF-8 sequence.
            while end > 0 && end < b.len() && (b[end] & 0xC0) == 0x80 {
                end -= 1;
            }
            let mut s = String::from_utf8_lossy(&b[..end]).into_owned();
            if cut {
                s.push_str(&format!("\n... ({} bytes in all)", b.len()));
            }
            s
        };
        json!({
            "request": {
                "method": self.method,
                "url": self.url,
                "headers": self.request_headers.iter().map(|(k, v)| format!("{k}: {v}")).collect::<Vec<_>>(),
                "body": self.request_body.as_deref().map(body),
            },
            "response": {
                "status": self.status,
                "error": self.error,
                "headers": self.response_headers.iter().map(|(k, v)| format!("{k}: {v}")).collect::<Vec<_>>(),
                "body": body(&self.response_body),
            }
        })
    }
}

/// The HTTP client the runner sends with: no redirects followed (a 3xx is a result to judge),
/// a timeout so one hanging server cannot stop a suite.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(std::time::Duration::from_secs(60))
        .build()
        .unwrap_or_else(|_| reqwest::Client::new())
}

/// Sends one request and records it with its response.
pub async fn send(
    client: &reqwest::Client,
    method: &str,
    url: &str,
    headers: Vec<(String, String)>,
    body: Option<Vec<u8>>,
) -> Exchange {
    let mut ex = Exchange {
        method: method.to_string(),
        url: url.to_string(),
        request_headers: headers,
        request_body: body,
        ..Exchange::default()
    };
    let m = match reqwest::Method::from_bytes(method.as_bytes()) {
        Ok(m) => m,
        Err(_) => {
            ex.error = Some(format!("'{method}' is not an HTTP method"));
            return ex;
        }
    };
    let mut req = client.request(m, url);
    for (k, v) in &ex.request_headers {
        req = req.header(k.as_str(), v.as_str());
    }
    if let Some(b) = &ex.request_body {
        req = req.body(b.clone());
    }
    match req.send().await {
        Err(e) => ex.error = Some(e.to_string()),
        Ok(resp) => {
            ex.status = resp.status().as_u16();
            ex.response_headers = resp
                .headers()
                .iter()
                .map(|(k, v)| {
                    (
                        k.as_str().to_string(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect();
            match resp.bytes().await {
                Ok(b) => ex.response_body = b.to_vec(),
                Err(e) => ex.error = Some(format!("reading the body: {e}")),
            }
            ex.response_json = serde_json::from_slice(&ex.response_body).ok();
        }
    }
    ex
}
