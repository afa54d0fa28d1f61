//! HL7 v2 escape sequences inside values: delimiters (`\F\ \S\ \T\ \R\ \E\ \P\`), hexadecimal
//! data (`\Xhh..\`), formatting (`\.br\`, `\.sp\`, highlighting `\H\ \N\`) and ISO 2022 charset
//! switches (`\Cxxyy\`, `\Mxxyyzz\`).
//!
//! An escape we do not know (`\Zxx\`, a site's own) is kept as written, so nothing is lost; bytes
//! that are invalid in the message's charset are an error, never replaced.

use super::charset::Charset;
use super::er7::Delimiters;
use std::borrow::Cow;

/// A value whose escapes cannot be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EscapeError {
    #[error("\\X{0}\\ is not an even number of hexadecimal digits")]
    BadHex(String),
    #[error("\\X{0}\\ gives bytes that are not valid {1}")]
    HexCharset(String, &'static str),
    #[error("charset escape \\{0}\\ names a character set this gateway does not decode")]
    UnsupportedCharset(String),
    #[error("text after \\{0}\\ is not valid in that character set")]
    Iso2022(String),
}

/// Decodes the escapes of one value; borrows when there are none.
pub fn unescape<'a>(
    raw: &'a str,
    d: &Delimiters,
    charset: Charset,
) -> Result<Cow<'a, str>, EscapeError> {
    let Some(esc) = d.escape else {
        return Ok(Cow::Borrowed(raw));
    };
    let esc = esc as char;
    if !raw.contains(esc) {
        return Ok(Cow::Borrowed(raw));
    }
    let mut out = String::with_capacity(raw.len());
    // ISO 2022 designation in force (after \C..\ or \M..\), as escape-sequence bytes.
    let mut designation: Option<Vec<u8>> = None;
    let mut rest = raw;
    while let Some(open) = rest.find(esc) {
        push_text(&mut out, &rest[..open], designation.as_deref())?;
        let after = &rest[open + 1..];
        let Some(close) = after.find(esc) else {
            // An escape character that opens nothing: keep it as written.
            out.push_str(&rest[open..]);
            return Ok(Cow::Owned(out));
        };
        let seq = &after[..close];
        rest = &after[close + 1..];
        match seq {
            "F" => out.push(d.field as char),
            "S" => out.push(d.component as char),
            "R" => out.push(d.repetition as char),
            "E" => out.push(esc),
            "T" => match d.subcomponent {
                Some(c) => out.push(c as char),
                None => keep(&mut out, esc, seq),
            },
            "P" => match d.truncation {
                Some(c) => out.push(c as char),
                None => keep(&mut out, esc, seq),
            },
            "H" | "N" => {}
            ".br" => out.push('\n'),
            _ if seq.starts_with(".sp") => {
                let n = seq[3..].trim().parse::<usize>().unwrap_or(1).clamp(1, 100);
                out.extend(std::iter::repeat_n('\n', n));
            }
            _ if seq.starts_with(".in")
                || seq.starts_with(".ti")
                || seq.starts_with(".sk")
                || seq == ".fi"
                || seq == ".nf"
                || seq == ".ce" => {}
            _ if seq.starts_with('X') => out.push_str(&hex(&seq[1..], charset)?),
            _ if seq.starts_with('C') || seq.starts_with('M') => {
                designation = iso2022(seq)?;
            }
            _ => keep(&mut out, esc, seq),
        }
    }
    push_text(&mut out, rest, designation.as_deref())?;
    Ok(Cow::Owned(out))
}

fn keep(out: &mut String, esc: char, seq: &str) {
    out.push(esc);
    out.push_str(seq);
    out.push(esc);
}

fn push_text(out: &mut String, text: &str, designation: Option<&[u8]>) -> Result<(), EscapeError> {
    match designation {
        None => out.push_str(text),
        Some(_) if text.is_empty() => {}
        Some(seq) => {
            let mut bytes = seq.to_vec();
            bytes.extend_from_slice(text.as_bytes());
            let (decoded, had_errors) = encoding_rs::ISO_2022_JP
                .decode_without_bom_handling_and_without_replacement(&bytes)
                .map_or((String::new(), true), |s| (s.into_owned(), false));
            if had_errors {
                return Err(EscapeError::Iso2022(String::from_utf8_lossy(seq).into()));
            }
            out.push_str(&decoded);
        }
    }
    Ok(())
}

/// `\Cxxyy\` / `\Mxxyyzz\`: the hex bytes after ESC. ASCII returns to no designation; the JIS sets
/// decode through ISO-2022-JP; anything else is reported.
fn iso2022(seq: &str) -> Result<Option<Vec<u8>>, EscapeError> {
    let unsupported = || EscapeError::UnsupportedCharset(seq.to_string());
    let hexpart = &seq[1..];
    // \Cxxyy\ for single-byte sets; \Mxxyy\ or \Mxxyyzz\ for multi-byte ones.
    let ok_len = if seq.starts_with('C') {
        hexpart.len() == 4
    } else {
        hexpart.len() == 4 || hexpart.len() == 6
    };
    if !ok_len {
        return Err(unsupported());
    }
    let bytes = hex_bytes(hexpart).ok_or_else(unsupported)?;
    match bytes.as_slice() {
        // ESC ( B: ASCII.
        [0x28, 0x42] => Ok(None),
        // ESC ( J: JIS X 0201 Roman; ESC ( I: half-width katakana; ESC $ @ / ESC $ B: JIS X 0208.
        [0x28, 0x4A] | [0x28, 0x49] | [0x24, 0x40] | [0x24, 0x42] | [0x24, 0x28, 0x42] => {
            let mut s = vec![0x1B];
            s.extend_from_slice(&bytes);
            if s == [0x1B, 0x24, 0x28, 0x42] {
                s = vec![0x1B, 0x24, 0x42];
            }
            Ok(Some(s))
        }
        _ => Err(unsupported()),
    }
}

fn hex_bytes(h: &str) -> Option<Vec<u8>> {
    if !h.len().is_multiple_of(2) || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..h.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&h[i..i + 2], 16).ok())
        .collect()
}

fn hex(h: &str, charset: Charset) -> Result<String, EscapeError> {
    let bytes = hex_bytes(h).ok_or_else(|| EscapeError::BadHex(h.to_string()))?;
    charset
        .decode(&bytes)
        .map(Cow::into_owned)
        .map_err(|e| EscapeError::HexCharset(h.to_string(), e.charset))
}

/// Escapes text for writing into a value (ACK messages echo what they were sent).
pub fn escape(text: &str, d: &Delimiters) -> String {
    let Some(esc) = d.escape else {
        return text.to_string();
    };
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        let code = match c {
            _ if c == d.field as char => Some('F'),
            _ if c == d.component as char => Some('S'),
            _ if c == d.repetition as char => Some('R'),
            _ if c == esc as char => Some('E'),
            _ if Some(c) == d.subcomponent.map(char::from) => Some('T'),
            _ if Some(c) == d.truncation.map(char::from) => Some('P'),
            _ => None,
        };
        match (code, c) {
            (Some(k), _) => {
                out.push(esc as char);
                out.push(k);
                out.push(esc as char);
            }
            (None, '\n') => {
                out.push(esc as char);
                out.push_str(".br");
                out.push(esc as char);
            }
            (None, '\r') => {}
            (None, c) => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn un(s: &str) -> String {
        unescape(s, &Delimiters::default(), Charset::Ascii)
            .unwrap()
            .into_owned()
    }

    #[test]
    fn delimiter_escapes() {
        assert_eq!(un(r"A\F\B\S\C\T\D\R\E\E\F"), r"A|B^C&D~E\F");
        assert_eq!(un("plain"), "plain");
        assert!(matches!(
            unescape("plain", &Delimiters::default(), Charset::Ascii),
            Ok(Cow::Borrowed(_))
        ));
    }

    #[test]
    fn formatting_and_unknown_escapes() {
        assert_eq!(un(r"line1\.br\line2"), "line1\nline2");
        assert_eq!(un(r"\H\bold\N\"), "bold");
        assert_eq!(un(r"a\.sp2\b"), "a\n\nb");
        assert_eq!(un(r"keep \Zsite\ as is"), r"keep \Zsite\ as is");
        assert_eq!(un(r"lone \ escape"), r"lone \ escape");
    }

    #[test]
    fn hex_in_the_message_charset() {
        assert_eq!(un(r"\X4142\"), "AB");
        let utf8 = Charset::from_msh18("UNICODE UTF-8").unwrap();
        let d = Delimiters::default();
        assert_eq!(unescape(r"\XE5BCA0\", &d, utf8).unwrap(), "张");
        assert!(matches!(
            unescape(r"\XE5BC\", &d, utf8),
            Err(EscapeError::HexCharset(..))
        ));
        assert!(matches!(
            unescape(r"\X4\", &d, utf8),
            Err(EscapeError::BadHex(_))
        ));
    }

    #[test]
    fn iso2022_charset_switches() {
        // ESC $ B (JIS X 0208) text, written as HL7 does: \M2442\ then the 7-bit bytes.
        let word = ["漢字", "日本", "東京", "試験"]
            .into_iter()
            .find_map(|w| {
                let (bytes, _, _) = encoding_rs::ISO_2022_JP.encode(w);
                let inner = bytes.get(3..bytes.len() - 3)?.to_vec();
                let text = String::from_utf8(inner).ok()?;
                (!text.contains(['|', '^', '~', '\\', '&'])).then_some((w, text))
            })
            .unwrap();
        let input = format!("\\M2442\\{}\\C2842\\ ok", word.1);
        let got = unescape(&input, &Delimiters::default(), Charset::Ascii);
        assert_eq!(
            got.map(Cow::into_owned),
            Ok(format!("{} ok", word.0)),
            "{word:?}"
        );
        let e = unescape(r"\C2D41\x", &Delimiters::default(), Charset::Ascii).unwrap_err();
        assert!(matches!(e, EscapeError::UnsupportedCharset(_)));
    }

    #[test]
    fn escape_round_trips() {
        let d = Delimiters::default();
        let s = "a|b^c&d~e\\f\ng";
        assert_eq!(un(&escape(s, &d)), s);
    }
}
