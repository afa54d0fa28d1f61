//! Character sets of HL7 v2 messages (MSH-18, HL7 table 0211) and byte-exact decoding.
//!
//! Decoding never replaces: a byte sequence that is invalid in the declared charset is an error
//! naming its offset, so a sender's mislabelled feed is reported instead of silently turned into
//! U+FFFD.

use encoding_rs::Encoding;
use std::borrow::Cow;

/// A character set a message can be decoded from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Charset {
    /// 7-bit ASCII: any byte above 0x7F is an error.
    Ascii,
    /// ISO 8859-1: every byte is the code point of the same value (not windows-1252).
    Latin1,
    /// Any other charset `encoding_rs` decodes (UTF-8, GB18030, GBK, Big5, 8859-n, EUC-KR...).
    Other(&'static Encoding),
}

impl Charset {
    /// The charset named by an MSH-18 value (HL7 table 0211 and common aliases); `None` if unknown.
    pub fn from_msh18(name: &str) -> Option<Charset> {
        let n = name.trim().to_ascii_uppercase();
        let enc = match n.as_str() {
            "" | "ASCII" | "US-ASCII" => return Some(Charset::Ascii),
            "8859/1" | "ISO-8859-1" | "LATIN1" => return Some(Charset::Latin1),
            "UNICODE UTF-8" | "UTF-8" | "UTF8" | "UNICODE" => encoding_rs::UTF_8,
            "GB 18030-2000" | "GB18030" | "GB 18030" | "GB18030-2000" | "GB 18030-2005" => {
                encoding_rs::GB18030
            }
            "GBK" | "GB2312" | "GB 2312" | "CP936" | "EUC-CN" => encoding_rs::GBK,
            "BIG-5" | "BIG5" | "CNS 11643-1992" => encoding_rs::BIG5,
            "KS X 1001" | "EUC-KR" => encoding_rs::EUC_KR,
            "ISO IR87" | "ISO IR14" | "ISO IR159" | "ISO-2022-JP" => encoding_rs::ISO_2022_JP,
            "SHIFT_JIS" | "SJIS" => encoding_rs::SHIFT_JIS,
            "8859/2" => encoding_rs::ISO_8859_2,
            "8859/3" => encoding_rs::ISO_8859_3,
            "8859/4" => encoding_rs::ISO_8859_4,
            "8859/5" => encoding_rs::ISO_8859_5,
            "8859/6" => encoding_rs::ISO_8859_6,
            "8859/7" => encoding_rs::ISO_8859_7,
            "8859/8" => encoding_rs::ISO_8859_8,
            "8859/9" => encoding_rs::WINDOWS_1254,
            "8859/15" => encoding_rs::ISO_8859_15,
            _ => return None,
        };
        Some(Charset::Other(enc))
    }

    /// The MSH-18 spelling used when we write (ACKs are encoded in the sender's charset).
    pub fn msh18(self) -> &'static str {
        match self {
            Charset::Ascii => "ASCII",
            Charset::Latin1 => "8859/1",
            Charset::Other(e) if e == encoding_rs::UTF_8 => "UNICODE UTF-8",
            Charset::Other(e) if e == encoding_rs::GB18030 => "GB 18030-2000",
            Charset::Other(e) if e == encoding_rs::GBK => "GBK",
            Charset::Other(e) if e == encoding_rs::BIG5 => "BIG-5",
            Charset::Other(e) if e == encoding_rs::EUC_KR => "KS X 1001",
            Charset::Other(e) => e.name(),
        }
    }

    /// The IANA name (HTTP `charset=`).
    pub fn iana(self) -> &'static str {
        match self {
            Charset::Ascii => "us-ascii",
            Charset::Latin1 => "iso-8859-1",
            Charset::Other(e) => e.name(),
        }
    }

    /// Decodes the whole message; borrows when the bytes are already valid UTF-8 text of this
    /// charset (ASCII input in any ASCII-compatible charset).
    pub fn decode<'a>(self, bytes: &'a [u8]) -> Result<Cow<'a, str>, CharsetError> {
        if bytes.is_ascii() && self != Charset::Other(encoding_rs::ISO_2022_JP) {
            // Every supported charset except ISO-2022 agrees with ASCII on 0x00-0x7F.
            return std::str::from_utf8(bytes)
                .map(Cow::Borrowed)
                .map_err(|e| self.error(bytes, e.valid_up_to()));
        }
        match self {
            Charset::Ascii => {
                let at = bytes.iter().position(|b| !b.is_ascii()).unwrap_or(0);
                Err(self.error(bytes, at))
            }
            Charset::Latin1 => Ok(Cow::Owned(bytes.iter().map(|&b| b as char).collect())),
            Charset::Other(e) if e == encoding_rs::UTF_8 => std::str::from_utf8(bytes)
                .map(Cow::Borrowed)
                .map_err(|err| self.error(bytes, err.valid_up_to())),
            Charset::Other(e) => decode_strict(e, bytes)
                .map(Cow::Owned)
                .map_err(|at| self.error(bytes, at)),
        }
    }

    /// Encodes text for the wire; `None` if a character has no representation in this charset.
    pub fn encode(self, text: &str) -> Option<Vec<u8>> {
        match self {
            Charset::Ascii => text.is_ascii().then(|| text.as_bytes().to_vec()),
            Charset::Latin1 => text
                .chars()
                .map(|c| u8::try_from(u32::from(c)).ok())
                .collect(),
            Charset::Other(e) => {
                let (out, _, unmappable) = e.encode(text);
                (!unmappable).then(|| out.into_owned())
            }
        }
    }

    fn error(self, bytes: &[u8], offset: usize) -> CharsetError {
        CharsetError {
            charset: self.msh18(),
            offset,
            bytes: bytes.iter().skip(offset).take(4).copied().collect(),
        }
    }
}

/// Decodes with `encoding_rs` without replacement; the error is the byte offset of the first
/// malformed sequence.
fn decode_strict(enc: &'static Encoding, bytes: &[u8]) -> Result<String, usize> {
    let mut decoder = enc.new_decoder_without_bom_handling();
    let cap = decoder
        .max_utf8_buffer_length_without_replacement(bytes.len())
        .ok_or(0usize)?;
    let mut out = String::with_capacity(cap);
    let (result, read) = decoder.decode_to_string_without_replacement(bytes, &mut out, true);
    match result {
        encoding_rs::DecoderResult::InputEmpty => Ok(out),
        encoding_rs::DecoderResult::Malformed(bad, extra) => {
            Err(read.saturating_sub(bad as usize + extra as usize))
        }
        encoding_rs::DecoderResult::OutputFull => Err(read),
    }
}

/// Bytes that are not valid in the message's charset.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("byte offset {offset}: {bytes:02X?} is not valid {charset}")]
pub struct CharsetError {
    /// The MSH-18 name of the charset used.
    pub charset: &'static str,
    /// Offset of the first invalid byte in the message.
    pub offset: usize,
    /// Up to four bytes from there.
    pub bytes: Vec<u8>,
}

/// The raw MSH-18 value (first repetition) read from the undecoded bytes of the MSH segment.
///
/// Fields before MSH-18 are normally ASCII; a multi-byte charset whose trail bytes can equal a
/// delimiter (GBK) could in theory shift this split, which is why a per-sender default exists.
pub fn sniff_msh18(bytes: &[u8]) -> Option<&[u8]> {
    sniff_msh_field(bytes, 18)
}

/// The first repetition and component of MSH-`n` (n >= 3) read from undecoded bytes.
pub fn sniff_msh_field(bytes: &[u8], n: usize) -> Option<&[u8]> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let bytes = bytes.strip_prefix(b"MSH")?;
    let sep = *bytes.first()?;
    let line_end = bytes
        .iter()
        .position(|&b| b == b'\r' || b == b'\n')
        .unwrap_or(bytes.len());
    let line = &bytes[..line_end];
    // line starts with the separator; split index k holds MSH-(k+1).
    let field = line.split(|&b| b == sep).nth(n.checked_sub(1)?)?;
    let comp = line.get(1).copied().unwrap_or(b'^');
    let rep = line.get(2).copied().unwrap_or(b'~');
    let first = field.split(|&b| b == rep).next().unwrap_or(field);
    if n == 18 {
        return Some(first);
    }
    Some(first.split(|&b| b == comp).next().unwrap_or(first))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn msh18_names_map_to_charsets() {
        assert_eq!(Charset::from_msh18("ASCII"), Some(Charset::Ascii));
        assert_eq!(Charset::from_msh18("8859/1"), Some(Charset::Latin1));
        assert_eq!(
            Charset::from_msh18("GB 18030-2000"),
            Some(Charset::Other(encoding_rs::GB18030))
        );
        assert_eq!(
            Charset::from_msh18("unicode utf-8"),
            Some(Charset::Other(encoding_rs::UTF_8))
        );
        assert_eq!(Charset::from_msh18("EBCDIC"), None);
    }

    #[test]
    fn gb18030_decodes_and_invalid_bytes_are_located() {
        let cs = Charset::from_msh18("GB 18030-2000").unwrap();
        let (bytes, _, _) = encoding_rs::GB18030.encode("PID|张三");
        assert_eq!(cs.decode(&bytes).unwrap(), "PID|张三");
        let mut bad = b"PID|".to_vec();
        bad.extend_from_slice(&[0x81, 0x20]);
        let err = cs.decode(&bad).unwrap_err();
        assert_eq!(err.offset, 4);
    }

    #[test]
    fn ascii_rejects_high_bytes_and_latin1_keeps_c1() {
        assert_eq!(Charset::Ascii.decode(b"ab\xE9").unwrap_err().offset, 2);
        assert_eq!(Charset::Latin1.decode(b"\xE9\x85").unwrap(), "\u{e9}\u{85}");
        let utf8 = Charset::from_msh18("UNICODE UTF-8").unwrap();
        assert_eq!(utf8.decode(b"ok\xFF").unwrap_err().offset, 2);
    }

    #[test]
    fn sniffs_msh18_from_bytes() {
        let m = b"MSH|^~\\&|a|b|c|d|t||ADT^A01|1|P|2.5|||||CHN|GB 18030-2000~UNICODE UTF-8\rPID|1";
        assert_eq!(sniff_msh18(m), Some(&b"GB 18030-2000"[..]));
        assert_eq!(sniff_msh18(b"MSH|^~\\&|a\r"), None);
    }
}
