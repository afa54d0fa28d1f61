//! Safe XML input for the HL7 v3 and CDA pipelines: bytes -> decoded text -> a read-only tree.
//!
//! Invariants: no DTD is ever read (roxmltree's default refuses `<!DOCTYPE`, so neither external
//! entities (XXE) nor entity expansion (billion laughs) can happen; we name that refusal
//! precisely); input is bounded in bytes, in nodes and in element depth; the declared encoding
//! (UTF-8, or GB18030/GBK/GB2312, decoded with `encoding_rs` without replacement) is honoured and
//! a byte that is not valid in it is an error, never a U+FFFD. The one repair made to a document
//! is a missing space between two attributes (`code="1"codeSystem="..."`), which HIS vendors emit
//! and which loses nothing; every repair is reported with its line so the caller can record it.

pub mod path;

use roxmltree::{Document, Node, ParsingOptions};
use std::borrow::Cow;

/// The HL7 v3 / CDA namespace.
pub const HL7_NS: &str = "urn:hl7-org:v3";
/// The XML Schema instance namespace (`xsi:type`).
pub const XSI_NS: &str = "http://www.w3.org/2001/XMLSchema-instance";

/// Bounds on one document.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest accepted input in bytes.
    pub max_bytes: usize,
    /// Deepest element nesting.
    pub max_depth: usize,
    /// Most nodes (elements, attributes' owners, text, comments).
    pub max_nodes: u32,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_bytes: 16 * 1024 * 1024,
            max_depth: 256,
            max_nodes: 4_000_000,
        }
    }
}

/// Why a document was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XmlError {
    #[error("document of {size} bytes is larger than the limit of {max} bytes")]
    TooLarge { size: usize, max: usize },
    #[error(
        "DTD refused at line {line}: documents may not declare a DOCTYPE or entities (external entities and entity expansion are not accepted)"
    )]
    Dtd { line: u32 },
    #[error("declared encoding '{0}' is not supported (UTF-8, GB18030, GBK, GB2312 are)")]
    UnknownEncoding(String),
    #[error("byte at offset {offset} is not valid {encoding}")]
    Encoding {
        encoding: &'static str,
        offset: usize,
    },
    #[error("not well-formed XML at line {line}, column {column}: {message}")]
    Malformed {
        line: u32,
        column: u32,
        message: String,
    },
    #[error("element nesting deeper than {max} at line {line}")]
    TooDeep { max: usize, line: u32 },
    #[error("more than {max} nodes")]
    TooManyNodes { max: u32 },
    #[error("empty document")]
    Empty,
}

/// What was done to the text before it parsed.
#[derive(Debug, Clone, Default)]
pub struct Diagnostics {
    /// The encoding the bytes were decoded from.
    pub encoding: &'static str,
    /// Repairs, each naming its line.
    pub repairs: Vec<String>,
}

/// The encoding named in the XML declaration, if any.
fn declared_encoding(bytes: &[u8]) -> Option<String> {
    let head = &bytes[..bytes.len().min(200)];
    if !head.starts_with(b"<?xml") {
        return None;
    }
    let end = head.windows(2).position(|w| w == b"?>")?;
    let decl = std::str::from_utf8(&head[..end]).ok()?;
    let at = decl.find("encoding")?;
    let rest = decl[at + 8..].trim_start().strip_prefix('=')?.trim_start();
    let quote = rest.chars().next()?;
    if quote != '"' && quote != '\'' {
        return None;
    }
    let rest = &rest[1..];
    Some(rest[..rest.find(quote)?].trim().to_string())
}

/// Decodes the bytes by their declared encoding (UTF-8 when none is declared).
pub fn decode(bytes: &[u8]) -> Result<(Cow<'_, str>, &'static str), XmlError> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let enc = declared_encoding(bytes).unwrap_or_default();
    let lower = enc.to_ascii_lowercase();
    match lower.as_str() {
        "" | "utf-8" | "utf8" | "us-ascii" | "ascii" => match std::str::from_utf8(bytes) {
            Ok(s) => Ok((Cow::Borrowed(s), "UTF-8")),
            Err(e) => Err(XmlError::Encoding {
                encoding: "UTF-8",
                offset: e.valid_up_to(),
            }),
        },
        "gb18030" | "gbk" | "gb2312" | "gb_2312-80" | "cp936" => {
            let mut decoder = encoding_rs::GB18030.new_decoder_without_bom_handling();
            let mut out = String::with_capacity(bytes.len() * 3 / 2 + 16);
            let max = decoder
                .max_utf8_buffer_length_without_replacement(bytes.len())
                .unwrap_or(bytes.len() * 4);
            out.reserve(max);
            let (result, read) =
                decoder.decode_to_string_without_replacement(bytes, &mut out, true);
            match result {
                encoding_rs::DecoderResult::InputEmpty => Ok((Cow::Owned(out), "GB18030")),
                _ => Err(XmlError::Encoding {
                    encoding: "GB18030",
                    offset: read,
                }),
            }
        }
        _ => Err(XmlError::UnknownEncoding(enc)),
    }
}

fn line_of(text: &str, offset: usize) -> u32 {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count() as u32
        + 1
}

/// Inserts the missing space between an attribute's closing quote and the next attribute's
/// name inside start tags; returns the repaired text and one note per repair.
fn repair_attribute_spacing(text: &str) -> (String, Vec<String>) {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len() + 16);
    let mut notes = Vec::new();
    let mut in_tag = false;
    let mut quote: Option<u8> = None;
    let mut last = 0;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match quote {
            Some(q) if b == q => {
                quote = None;
                let next = bytes.get(i + 1).copied().unwrap_or(b' ');
                if next.is_ascii_alphabetic() || next == b'_' {
                    out.push_str(&text[last..=i]);
                    out.push(' ');
                    last = i + 1;
                    notes.push(format!(
                        "line {}: inserted the missing space between two attributes",
                        line_of(text, i)
                    ));
                }
            }
            Some(_) => {}
            None if in_tag => match b {
                b'"' | b'\'' => quote = Some(b),
                b'>' => in_tag = false,
                _ => {}
            },
            None => {
                if b == b'<' {
                    let n = bytes.get(i + 1).copied().unwrap_or(0);
                    in_tag = n.is_ascii_alphabetic() || n == b'_';
                    if text[i..].starts_with("<!--") {
                        // Skip comments whole: quotes in them are prose.
                        match text[i..].find("-->") {
                            Some(e) => {
                                i += e + 3;
                                continue;
                            }
                            None => break,
                        }
                    }
                    if text[i..].starts_with("<![CDATA[") {
                        match text[i..].find("]]>") {
                            Some(e) => {
                                i += e + 3;
                                continue;
                            }
                            None => break,
                        }
                    }
                }
            }
        }
        i += 1;
    }
    out.push_str(&text[last..]);
    (out, notes)
}

fn options(limits: &Limits) -> ParsingOptions {
    ParsingOptions {
        allow_dtd: false,
        nodes_limit: limits.max_nodes,
    }
}

fn map_error(e: roxmltree::Error, text: &str, limits: &Limits) -> XmlError {
    use roxmltree::Error as E;
    match e {
        E::DtdDetected => XmlError::Dtd {
            line: text.find("<!DOCTYPE").map_or(1, |o| line_of(text, o)),
        },
        E::NodesLimitReached => XmlError::TooManyNodes {
            max: limits.max_nodes,
        },
        other => {
            let pos = other.pos();
            XmlError::Malformed {
                line: pos.row,
                column: pos.col,
                message: other.to_string(),
            }
        }
    }
}

fn check_depth(doc: &Document<'_>, max: usize) -> Result<(), XmlError> {
    let mut stack: Vec<(Node<'_, '_>, usize)> = vec![(doc.root(), 0)];
    while let Some((n, d)) = stack.pop() {
        if d > max {
            return Err(XmlError::TooDeep {
                max,
                line: doc.text_pos_at(n.range().start).row,
            });
        }
        for c in n.children().filter(Node::is_element) {
            stack.push((c, d + 1));
        }
    }
    Ok(())
}

/// Decodes, parses and checks `bytes`, then hands the tree to `f`.
pub fn with_document<R>(
    bytes: &[u8],
    limits: &Limits,
    f: impl FnOnce(&Document<'_>, &Diagnostics) -> R,
) -> Result<R, XmlError> {
    if bytes.len() > limits.max_bytes {
        return Err(XmlError::TooLarge {
            size: bytes.len(),
            max: limits.max_bytes,
        });
    }
    let (text, encoding) = decode(bytes)?;
    if text.trim().is_empty() {
        return Err(XmlError::Empty);
    }
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let mut diag = Diagnostics {
        encoding,
        repairs: Vec::new(),
    };
    match Document::parse_with_options(text, options(limits)) {
        Ok(doc) => {
            check_depth(&doc, limits.max_depth)?;
            Ok(f(&doc, &diag))
        }
        Err(e) => {
            let first = map_error(e, text, limits);
            if !matches!(first, XmlError::Malformed { .. }) {
                return Err(first);
            }
            let (fixed, notes) = repair_attribute_spacing(text);
            if notes.is_empty() {
                return Err(first);
            }
            match Document::parse_with_options(&fixed, options(limits)) {
                Ok(doc) => {
                    check_depth(&doc, limits.max_depth)?;
                    diag.repairs = notes;
                    Ok(f(&doc, &diag))
                }
                // The repair did not help: report the original error, where the sender can find it.
                Err(_) => Err(first),
            }
        }
    }
}

/// The first child element named `name` in the HL7 namespace (or no namespace).
pub fn child<'a, 'i>(node: Node<'a, 'i>, name: &str) -> Option<Node<'a, 'i>> {
    node.children().find(|c| is(*c, name))
}

/// The child elements named `name`.
pub fn children<'a, 'i>(node: Node<'a, 'i>, name: &'a str) -> impl Iterator<Item = Node<'a, 'i>> {
    node.children().filter(move |c| is(*c, name))
}

/// True when the node is the element `name` in the HL7 namespace (or in none).
pub fn is(node: Node<'_, '_>, name: &str) -> bool {
    node.is_element()
        && node.tag_name().name() == name
        && matches!(node.tag_name().namespace(), None | Some(HL7_NS))
}

/// A non-empty attribute value, trimmed.
pub fn attr<'a>(node: Node<'a, '_>, name: &str) -> Option<&'a str> {
    node.attribute(name)
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

/// `xsi:type` without its prefix.
pub fn xsi_type<'a>(node: Node<'a, '_>) -> Option<&'a str> {
    node.attribute((XSI_NS, "type"))
        .map(|t| t.rsplit(':').next().unwrap_or(t).trim())
}

/// The element's text content (all descendant text), whitespace-collapsed; `None` when empty.
pub fn text(node: Node<'_, '_>) -> Option<String> {
    let mut s = String::new();
    for d in node.descendants().filter(Node::is_text) {
        if let Some(t) = d.text() {
            s.push_str(t);
        }
    }
    let collapsed = s.split_whitespace().collect::<Vec<_>>().join(" ");
    (!collapsed.is_empty()).then_some(collapsed)
}

/// The 1-based line of a node, for messages.
pub fn line(node: Node<'_, '_>) -> u32 {
    node.document().text_pos_at(node.range().start).row
}

/// Escapes text for an XML attribute or element we write (acknowledgements, narrative, reports).
/// Characters XML 1.0 forbids even as references (C0 controls other than tab, line feed and
/// carriage return; U+FFFE, U+FFFF) become U+FFFD: senders' bytes echoed in an error message must
/// not make the answer itself unreadable.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaped_text_is_always_well_formed() {
        let nasty = "a<b>&\"'\u{0}\u{B}\u{1F}\u{FFFE}\u{FFFF}\t\n中";
        let doc = format!("<r a=\"{}\">{}</r>", escape(nasty), escape(nasty));
        let parsed = roxmltree::Document::parse(&doc).expect("well-formed");
        let want = "a<b>&\"'\u{FFFD}\u{FFFD}\u{FFFD}\u{FFFD}\u{FFFD}\t\n中";
        assert_eq!(parsed.root_element().text(), Some(want));
        // Attribute values are normalised by the parser (tab and line feed become spaces).
        assert_eq!(
            parsed.root_element().attribute("a"),
            Some("a<b>&\"'\u{FFFD}\u{FFFD}\u{FFFD}\u{FFFD}\u{FFFD}  中")
        );
    }

    fn parse(s: &str) -> Result<(String, Vec<String>), XmlError> {
        with_document(s.as_bytes(), &Limits::default(), |d, diag| {
            (
                d.root_element().tag_name().name().to_string(),
                diag.repairs.clone(),
            )
        })
    }

    #[test]
    fn dtds_are_refused_by_name() {
        let xxe = "<?xml version=\"1.0\"?>\n<!DOCTYPE r [<!ENTITY x SYSTEM \"file:///etc/passwd\">]>\n<r>&x;</r>";
        assert_eq!(parse(xxe).unwrap_err(), XmlError::Dtd { line: 2 });
        let lol = "<!DOCTYPE l [<!ENTITY a \"aaaa\"><!ENTITY b \"&a;&a;&a;\">]><l>&b;</l>";
        assert!(matches!(parse(lol), Err(XmlError::Dtd { line: 1 })));
    }

    #[test]
    fn attribute_spacing_is_repaired_and_reported() {
        let (root, repairs) = parse("<a>\n<b code=\"1\"codeSystem=\"2\"/></a>").unwrap();
        assert_eq!(root, "a");
        assert_eq!(repairs.len(), 1);
        assert!(repairs[0].starts_with("line 2"), "{repairs:?}");
        // A quote in a comment is not an attribute.
        assert!(parse("<a><!-- \"x\"y --><b/>").is_err());
    }

    #[test]
    fn truncated_and_deep_documents_are_refused() {
        assert!(matches!(parse("<a><b>"), Err(XmlError::Malformed { .. })));
        let deep = "<a>".repeat(300) + &"</a>".repeat(300);
        assert!(matches!(
            parse(&deep),
            Err(XmlError::TooDeep { max: 256, .. })
        ));
        let big = vec![b' '; 10];
        let small = Limits {
            max_bytes: 5,
            ..Limits::default()
        };
        assert!(matches!(
            with_document(&big, &small, |_, _| ()),
            Err(XmlError::TooLarge { .. })
        ));
    }

    #[test]
    fn gb18030_is_decoded_and_bad_bytes_refused() {
        let (bytes, _, _) = encoding_rs::GB18030
            .encode("<?xml version=\"1.0\" encoding=\"GB18030\"?><名>张三</名>");
        let name = with_document(&bytes, &Limits::default(), |d, diag| {
            (
                d.root_element().text().unwrap_or("").to_string(),
                diag.encoding,
            )
        })
        .unwrap();
        assert_eq!(name, ("张三".to_string(), "GB18030"));
        let mut bad = b"<?xml version=\"1.0\" encoding=\"GBK\"?><a>".to_vec();
        bad.extend_from_slice(&[0x81, 0x20]);
        bad.extend_from_slice(b"</a>");
        assert!(matches!(
            with_document(&bad, &Limits::default(), |_, _| ()),
            Err(XmlError::Encoding { .. })
        ));
        assert!(matches!(
            parse("<?xml version=\"1.0\" encoding=\"EBCDIC\"?><a/>"),
            Err(XmlError::UnknownEncoding(_))
        ));
    }
}
