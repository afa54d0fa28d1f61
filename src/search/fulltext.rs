//! `_text` and `_content`: simple full-text search on the narrative and on all string content.
//!
//! Both sides agree on one *searchable text*: the string normalised as everywhere in search (case
//! and accents folded, see `normalize`), every character that is neither a letter nor a digit
//! turned into a space, runs of spaces collapsed, with a leading space. On write, each resource
//! gets one `idx_string` row per parameter under the reserved codes `_text` and `_content` (no
//! R4 SearchParameter has an expression for them), holding that text, cut at
//! [`MAX_TEXT_BYTES`]. On read, every whitespace-separated term of a value must occur (AND); a
//! term matches at the start of a word (`diab` finds `diabetes`, `betes` does not), except a term
//! in a script written without spaces (Chinese, Japanese, Thai), which matches anywhere (`血压`
//! finds `高血压`).

use super::normalize::normalize;
use crate::definitions::Definitions;
use serde_json::Value;

/// The reserved parameter code of the narrative's text.
pub const TEXT: &str = "_text";
/// The reserved parameter code of all string content.
pub const CONTENT: &str = "_content";

/// The most bytes of searchable text indexed per resource and parameter: text beyond it is not
/// found by `_text`/`_content`. A bound on the index row (a narrative can be megabytes of
/// tables), cut at a word boundary.
pub const MAX_TEXT_BYTES: usize = 16 * 1024;

/// Whether `code` is one of the full-text parameters.
pub fn is_fulltext(code: &str) -> bool {
    code == TEXT || code == CONTENT
}

/// The text of an XHTML narrative without its markup: tags and comments become word breaks,
/// character references are decoded, and the content of `<script>`/`<style>` (never valid in a
/// FHIR narrative, but not text either) is dropped.
pub fn strip_html(div: &str) -> String {
    let mut out = String::with_capacity(div.len());
    let mut rest = div;
    while let Some(i) = rest.find(['<', '&']) {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        if rest.starts_with("<!--") {
            rest = rest.find("-->").map_or("", |e| &rest[e + 3..]);
            out.push(' ');
        } else if rest.starts_with('<') {
            let (tag, end) = match rest.find('>') {
                Some(e) => (&rest[1..e], e + 1),
                None => (&rest[1..], rest.len()),
            };
            let tag = tag.trim_start_matches('/');
            let name: String = tag
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric())
                .collect::<String>()
                .to_ascii_lowercase();
            rest = &rest[end..];
            if (name == "script" || name == "style") && !tag.ends_with('/') {
                let close = format!("</{name}");
                let lower = rest.to_ascii_lowercase();
                rest = lower
                    .find(&close)
                    .and_then(|c| rest[c..].find('>').map(|e| &rest[c + e + 1..]))
                    .unwrap_or("");
            }
            out.push(' ');
        } else {
            let (decoded, used) = entity(rest);
            out.push_str(&decoded);
            rest = &rest[used..];
        }
    }
    out.push_str(rest);
    out
}

/// The character reference at the start of `s` (which starts with `&`) and its length; a bare
/// `&` is itself.
fn entity(s: &str) -> (String, usize) {
    let Some(end) = s[1..].find(';').map(|e| e + 1).filter(|e| *e <= 12) else {
        return ("&".into(), 1);
    };
    let name = &s[1..end];
    let c = match name {
        "amp" => Some('&'),
        "lt" => Some('<'),
        "gt" => Some('>'),
        "quot" => Some('"'),
        "apos" => Some('\''),
        "nbsp" => Some(' '),
        _ => name.strip_prefix('#').and_then(|n| {
            match n.strip_prefix(['x', 'X']) {
                Some(hex) => u32::from_str_radix(hex, 16).ok(),
                None => n.parse().ok(),
            }
            .and_then(char::from_u32)
        }),
    };
    match c {
        Some(c) => (c.to_string(), end + 1),
        None => ("&".into(), 1),
    }
}

/// Appends the searchable words of `s` to `out` (each preceded by a space).
fn push_words(out: &mut String, s: &str) {
    for word in normalize(s).split(|c: char| !c.is_alphanumeric()) {
        if !word.is_empty() {
            out.push(' ');
            out.push_str(word);
        }
    }
}

/// The searchable text of several strings, cut at [`MAX_TEXT_BYTES`] at a word boundary; `None`
/// when they hold no word.
pub fn searchable<'a>(parts: impl IntoIterator<Item = &'a str>) -> Option<String> {
    let mut text = Searchable::default();
    for p in parts {
        if !text.push(p) {
            break;
        }
    }
    text.finish()
}

/// Searchable text being built, part by part.
#[derive(Default)]
struct Searchable {
    out: String,
}

impl Searchable {
    /// Appends the words of `s`; false once the text is longer than [`MAX_TEXT_BYTES`] (what
    /// follows would be cut anyway).
    fn push(&mut self, s: &str) -> bool {
        push_words(&mut self.out, s);
        self.out.len() <= MAX_TEXT_BYTES
    }

    fn finish(mut self) -> Option<String> {
        let out = &mut self.out;
        if out.len() > MAX_TEXT_BYTES {
            let mut cut = MAX_TEXT_BYTES;
            while !out.is_char_boundary(cut) {
                cut -= 1;
            }
            // Back to the last word break, so no truncated word is indexed.
            if !out[cut..].starts_with(' ') {
                cut = out[..cut].rfind(' ').unwrap_or(0);
            }
            out.truncate(cut);
        }
        (!out.is_empty()).then_some(self.out)
    }
}

/// The narrative's searchable text (`text.div` without markup).
pub fn narrative_text(resource: &Value) -> Option<String> {
    let div = resource.get("text")?.get("div")?.as_str()?;
    searchable([strip_html(div).as_str()])
}

/// The searchable text of every `string`, `markdown` and `code` value of the resource, the
/// narrative's text and that of contained resources included, in document order.
pub fn content_text(resource: &Value) -> Option<String> {
    let ty = resource.get("resourceType")?.as_str()?;
    let mut text = Searchable::default();
    collect(Definitions::core(), ty, resource, &mut text, 0);
    text.finish()
}

/// Resources nest (contained, Bundle entries); deeper than this is not walked.
const MAX_NESTING: usize = 16;

/// Collects the text values of an object whose elements are defined under `path`, by their
/// types in the definitions (a `uri`, `id` or date is not text, even though JSON spells it as a
/// string). False once the text is full.
fn collect(
    defs: &Definitions,
    path: &str,
    json: &Value,
    out: &mut Searchable,
    depth: usize,
) -> bool {
    if depth > MAX_NESTING {
        return true;
    }
    let Some(obj) = json.as_object() else {
        return true;
    };
    let Some(index) = defs.child_index(path) else {
        return true;
    };
    for (key, value) in obj {
        let Some(step) = index.step(key) else {
            continue;
        };
        // A pointer to another resource, though typed `string`, is not content.
        if step.matched.element.path == "Reference.reference" {
            continue;
        }
        let items = match value {
            Value::Array(a) => a.as_slice(),
            v => std::slice::from_ref(v),
        };
        for item in items {
            let room = match step.matched.type_code {
                "string" | "markdown" | "code" => item.as_str().is_none_or(|s| out.push(s)),
                "xhtml" => item.as_str().is_none_or(|s| out.push(&strip_html(s))),
                "Resource" => match item.get("resourceType").and_then(Value::as_str) {
                    Some(t) if defs.is_resource_type(t) => collect(defs, t, item, out, depth + 1),
                    _ => true,
                },
                _ if item.is_object() => collect(defs, step.children_path, item, out, depth + 1),
                _ => true,
            };
            if !room {
                return false;
            }
        }
    }
    true
}

/// What the searchable text must contain for one term of a search value (already split at
/// whitespace): its words with a leading space, which anchors the term at a word start (the
/// searchable text starts with a space, so every word follows one), or without it for a term in
/// a script that does not mark words; `None` when the term holds no letter or digit.
pub fn term(term: &str) -> Option<String> {
    let mut words = String::new();
    push_words(&mut words, term);
    if words.is_empty() {
        return None;
    }
    if words.chars().any(unspaced_script) {
        words.remove(0);
    }
    Some(words)
}

/// Characters of scripts written without spaces between words.
fn unspaced_script(c: char) -> bool {
    matches!(c as u32,
        0x0E00..=0x0EFF      // Thai, Lao
        | 0x1000..=0x109F    // Myanmar
        | 0x1780..=0x17FF    // Khmer
        | 0x3040..=0x30FF    // Hiragana, Katakana
        | 0x3400..=0x4DBF    // CJK extension A
        | 0x4E00..=0x9FFF    // CJK unified ideographs
        | 0xF900..=0xFAFF    // CJK compatibility ideographs
        | 0x20000..=0x3134F // CJK extensions B-G
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn markup_is_stripped_and_references_decoded() {
        let div = "<div xmlns=\"http://www.w3.org/1999/xhtml\"><p>Type&nbsp;2 <b>diabetes</b>, \
                   HbA1c &gt; 7&#37;</p><!-- a <b>comment</b> --><table><tr><td>李小明</td>\
                   <td>高血压</td></tr></table><br/>caf&eacute;&amp;co<script>var x = '<p>';</script>end</div>";
        let text = strip_html(div);
        assert!(!text.contains('<') && !text.contains("xmlns"), "{text}");
        assert!(text.contains("Type 2"), "{text}");
        assert!(text.contains("HbA1c > 7%"), "{text}");
        assert!(!text.contains("comment"), "{text}");
        assert!(!text.contains("var x"), "{text}");
        assert!(text.contains("李小明") && text.contains("高血压"), "{text}");
        // An unknown named reference stays as written; `&amp;` is an ampersand.
        assert!(text.contains("caf&eacute;&co"), "{text}");
        assert!(text.trim_end().ends_with("end"), "{text}");
        assert_eq!(
            searchable([text.as_str()]).as_deref(),
            Some(" type 2 diabetes hba1c 7 李小明 高血压 caf eacute co end")
        );
    }

    #[test]
    fn terms_match_word_starts_and_chinese_anywhere() {
        assert_eq!(term("Diab").as_deref(), Some(" diab"));
        assert_eq!(term("Élodie").as_deref(), Some(" elodie"));
        assert_eq!(term("e-mail").as_deref(), Some(" e mail"));
        assert_eq!(term("血压").as_deref(), Some("血压"));
        assert_eq!(term("--"), None);
    }

    #[test]
    fn content_takes_text_types_only_and_is_capped() {
        let obs = json!({"resourceType": "Observation", "status": "final",
            "code": {"text": "Glucose", "coding": [{"system": "http://loinc.org", "code": "2345-7", "display": "Glucose [Mass/volume]"}]},
            "subject": {"reference": "Patient/p1", "display": "王芳"},
            "effectiveDateTime": "2020-01-01",
            "note": [{"text": "fasting **sample**"}],
            "contained": [{"resourceType": "Specimen", "id": "s1", "note": [{"text": "haemolysed"}]}]});
        let text = content_text(&obs).expect("text");
        for w in [
            "final",
            "glucose",
            "2345 7",
            "王芳",
            "fasting",
            "haemolysed",
        ] {
            assert!(text.contains(w), "{w} in {text}");
        }
        for w in ["loinc", "patient", "2020"] {
            assert!(!text.contains(w), "{w} in {text}");
        }
        let long = "word ".repeat(MAX_TEXT_BYTES);
        let capped = searchable([long.as_str()]).expect("text");
        assert!(capped.len() <= MAX_TEXT_BYTES);
        assert!(capped.ends_with(" word"));
    }
}
