//! No secret in the logs: every line the tracing subscriber writes passes through [`redact`],
//! which masks bearer tokens and JWTs, API keys, private keys, 身份证 numbers and mobile numbers,
//! whichever code logged them.

use regex::Regex;
use std::io::Write;
use std::sync::OnceLock;
use tracing_subscriber::fmt::MakeWriter;

fn patterns() -> &'static [(Regex, &'static str)] {
    static P: OnceLock<Vec<(Regex, &'static str)>> = OnceLock::new();
    P.get_or_init(|| {
        [
            (
                r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z0-9 ]*PRIVATE KEY-----",
                "[redacted private key]",
            ),
            (r"(?i)\bbearer\s+[A-Za-z0-9._~+/=-]+", "Bearer [redacted]"),
            (
                r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*",
                "[redacted token]",
            ),
            (
                r#"(?i)(x-api-key["'\s:=]+)[^\s"',}]+"#,
                "${1}[redacted]",
            ),
            // 身份证 (GB 11643): region, birth date, sequence, check character.
            (
                r"\b[1-9]\d{5}(?:18|19|20)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])\d{3}[\dXx]\b",
                "[redacted id]",
            ),
            (r"\b1[3-9]\d{9}\b", "[redacted phone]"),
        ]
        .into_iter()
        .filter_map(|(p, r)| Regex::new(p).ok().map(|re| (re, r)))
        .collect()
    })
}

/// The text with every secret masked.
pub fn redact(text: &str) -> std::borrow::Cow<'_, str> {
    let mut out = std::borrow::Cow::Borrowed(text);
    for (re, with) in patterns() {
        if re.is_match(&out) {
            out = std::borrow::Cow::Owned(re.replace_all(&out, *with).into_owned());
        }
    }
    out
}

/// Wraps a tracing writer so that what it writes is redacted.
pub struct Redacting<M>(pub M);

impl<'a, M: MakeWriter<'a>> MakeWriter<'a> for Redacting<M> {
    type Writer = RedactingWriter<M::Writer>;
    fn make_writer(&'a self) -> Self::Writer {
        RedactingWriter(self.0.make_writer())
    }
}

/// One redacting write (tracing writes each event with one `write_all`).
pub struct RedactingWriter<W>(W);

impl<W: Write> Write for RedactingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        self.0.write_all(redact(&text).as_bytes())?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_each_kind() {
        let line = "auth=Bearer abc.def-ghi token eyJhbGciOi.eyJzdWIiOi.c2ln x-api-key: k-123 id 11010519491231002X tel 13812345678 ok";
        let r = redact(line);
        for secret in [
            "abc.def-ghi",
            "eyJhbGciOi",
            "k-123",
            "11010519491231002X",
            "13812345678",
        ] {
            assert!(!r.contains(secret), "{secret} in {r}");
        }
        assert!(r.ends_with("ok"));
        assert_eq!(redact("nothing here"), "nothing here");
    }
}
