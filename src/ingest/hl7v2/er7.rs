//! The ER7 ("pipe and hat") parser: bytes to an indexed message, without copying.
//!
//! Parsing decodes the charset (MSH-18, else the sender's default), then records where each
//! segment and field starts and ends. Repetitions, components and sub-components are split on
//! access, and escapes are decoded only when a value is read, so parsing costs one pass over the
//! text and a few allocations per message.

use super::charset::{Charset, CharsetError, sniff_msh18};
use super::escape::{self, EscapeError};
use std::borrow::Cow;

/// The delimiters declared by MSH-1 and MSH-2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delimiters {
    pub field: u8,
    pub component: u8,
    pub repetition: u8,
    /// Absent when MSH-2 has fewer than three characters (escapes are then plain text).
    pub escape: Option<u8>,
    pub subcomponent: Option<u8>,
    /// The truncation character of v2.7+ (fifth character of MSH-2).
    pub truncation: Option<u8>,
}

impl Default for Delimiters {
    fn default() -> Self {
        Delimiters {
            field: b'|',
            component: b'^',
            repetition: b'~',
            escape: Some(b'\\'),
            subcomponent: Some(b'&'),
            truncation: None,
        }
    }
}

impl Delimiters {
    /// MSH-2 as it is written.
    pub fn encoding_characters(&self) -> String {
        let mut s = String::new();
        for b in [
            Some(self.component),
            Some(self.repetition),
            self.escape,
            self.subcomponent,
            self.truncation,
        ]
        .into_iter()
        .flatten()
        {
            s.push(b as char);
        }
        s
    }

    fn separator(&self, level: Level) -> Option<u8> {
        match level {
            Level::Field => Some(self.repetition),
            Level::Repetition => Some(self.component),
            Level::Component => self.subcomponent,
            Level::Subcomponent => None,
        }
    }
}

/// Where in a message something is, 1-based as HL7 counts (ERR-2 is built from it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Location {
    /// Segment id, e.g. `PID`.
    pub segment: String,
    /// 1-based position of the segment in the message.
    pub sequence: usize,
    pub field: Option<usize>,
    pub repetition: Option<usize>,
    pub component: Option<usize>,
    pub subcomponent: Option<usize>,
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.segment)?;
        if let Some(n) = self.field {
            write!(f, "-{n}")?;
            if let Some(r) = self.repetition.filter(|&r| r > 1) {
                write!(f, "[{r}]")?;
            }
            if let Some(c) = self.component {
                write!(f, ".{c}")?;
                if let Some(s) = self.subcomponent {
                    write!(f, ".{s}")?;
                }
            }
        }
        write!(f, " (segment {})", self.sequence)
    }
}

/// Why a message could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("not an HL7 v2 message: it must start with MSH")]
    NoMsh,
    #[error("MSH-1/MSH-2: {0}")]
    Delimiters(String),
    #[error("MSH-18 names an unknown character set '{0}'")]
    UnknownCharset(String),
    #[error("{location}: {error}")]
    Charset {
        location: Box<Location>,
        error: CharsetError,
    },
    #[error("{location}: segment id '{id}' is not three upper-case letters or digits")]
    SegmentId { location: Box<Location>, id: String },
    #[error("{0}: a second MSH starts another message; split the input first")]
    SecondMsh(Box<Location>),
    #[error("the message is larger than 4 GiB")]
    TooLarge,
}

impl ParseError {
    /// Where the error is, when it is inside the message.
    pub fn location(&self) -> Option<&Location> {
        match self {
            ParseError::Charset { location, .. }
            | ParseError::SegmentId { location, .. }
            | ParseError::SecondMsh(location) => Some(&**location),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Span {
    start: u32,
    end: u32,
}

#[derive(Debug, Clone, Copy)]
struct SegmentSpan {
    line: Span,
    /// Index into `fields` of the segment id; fields 1.. follow.
    first: u32,
    count: u32,
}

/// A parsed message: the decoded text plus the positions of its segments and fields.
#[derive(Debug, Clone)]
pub struct Hl7v2Message<'a> {
    text: Cow<'a, str>,
    delimiters: Delimiters,
    charset: Charset,
    segments: Vec<SegmentSpan>,
    fields: Vec<Span>,
}

/// Parses one message. `default_charset` applies when MSH-18 is empty (the sender's setting).
pub fn parse(bytes: &[u8], default_charset: Charset) -> Result<Hl7v2Message<'_>, ParseError> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let bytes = trim_leading_terminators(bytes);
    if u32::try_from(bytes.len()).is_err() {
        return Err(ParseError::TooLarge);
    }
    if !bytes.starts_with(b"MSH") || bytes.len() < 8 {
        return Err(ParseError::NoMsh);
    }
    let delimiters = read_delimiters(bytes)?;
    let charset = match sniff_msh18(bytes) {
        Some(raw) if !raw.iter().all(|b| b.is_ascii_whitespace()) => {
            let name = String::from_utf8_lossy(raw);
            Charset::from_msh18(&name).ok_or_else(|| ParseError::UnknownCharset(name.into()))?
        }
        _ => default_charset,
    };
    let text = match charset.decode(bytes) {
        Ok(t) => t,
        Err(error) => {
            let location = Box::new(locate_offset(bytes, &delimiters, error.offset));
            return Err(ParseError::Charset { location, error });
        }
    };
    let mut msg = Hl7v2Message {
        text,
        delimiters,
        charset,
        segments: Vec::with_capacity(16),
        fields: Vec::with_capacity(256),
    };
    msg.index()?;
    Ok(msg)
}

fn trim_leading_terminators(mut b: &[u8]) -> &[u8] {
    while let [b'\r' | b'\n', rest @ ..] = b {
        b = rest;
    }
    b
}

fn read_delimiters(bytes: &[u8]) -> Result<Delimiters, ParseError> {
    let field = bytes[3];
    let enc: Vec<u8> = bytes[4..]
        .iter()
        .take_while(|&&b| b != field && b != b'\r' && b != b'\n')
        .copied()
        .collect();
    if enc.len() < 2 || enc.len() > 5 {
        return Err(ParseError::Delimiters(format!(
            "MSH-2 must have 2 to 5 encoding characters, found {}",
            enc.len()
        )));
    }
    let mut all = vec![field];
    all.extend_from_slice(&enc);
    for (i, &b) in all.iter().enumerate() {
        if b.is_ascii_alphanumeric() || b.is_ascii_whitespace() || !b.is_ascii_graphic() {
            return Err(ParseError::Delimiters(format!(
                "'{}' cannot be a delimiter",
                b.escape_ascii()
            )));
        }
        if all[..i].contains(&b) {
            return Err(ParseError::Delimiters(format!(
                "'{}' is used for two delimiters",
                b as char
            )));
        }
    }
    Ok(Delimiters {
        field,
        component: enc[0],
        repetition: enc[1],
        escape: enc.get(2).copied(),
        subcomponent: enc.get(3).copied(),
        truncation: enc.get(4).copied(),
    })
}

/// The segment and field holding a byte offset (for charset errors found before indexing).
fn locate_offset(bytes: &[u8], d: &Delimiters, offset: usize) -> Location {
    let before = &bytes[..offset.min(bytes.len())];
    let line_start = before
        .iter()
        .rposition(|&b| b == b'\r' || b == b'\n')
        .map_or(0, |p| p + 1);
    let sequence = 1 + before[..line_start]
        .split(|&b| b == b'\r' || b == b'\n')
        .filter(|l| !l.is_empty())
        .count();
    let line = &before[line_start..];
    let segment = String::from_utf8_lossy(&line[..line.len().min(3)]).into_owned();
    let mut field = line.iter().filter(|&&b| b == d.field).count();
    if segment == "MSH" {
        field += 1;
    }
    Location {
        segment,
        sequence,
        field: (field > 0).then_some(field),
        ..Location::default()
    }
}

impl<'a> Hl7v2Message<'a> {
    fn index(&mut self) -> Result<(), ParseError> {
        let d = self.delimiters;
        let bytes = self.text.as_bytes();
        let mut pos = 0usize;
        let len = bytes.len();
        while pos < len {
            let mut end = pos;
            while end < len && bytes[end] != b'\r' && bytes[end] != b'\n' {
                end += 1;
            }
            if end > pos {
                let first = self.fields.len() as u32;
                let mut start = pos;
                let mut i = pos;
                while i < end {
                    if bytes[i] == d.field {
                        self.fields.push(Span {
                            start: start as u32,
                            end: i as u32,
                        });
                        start = i + 1;
                    }
                    i += 1;
                }
                self.fields.push(Span {
                    start: start as u32,
                    end: end as u32,
                });
                let count = self.fields.len() as u32 - first;
                let id = &self.text[self.fields[first as usize].start as usize
                    ..self.fields[first as usize].end as usize];
                let sequence = self.segments.len() + 1;
                if id.len() != 3
                    || !id
                        .bytes()
                        .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
                {
                    return Err(ParseError::SegmentId {
                        location: Box::new(Location {
                            segment: id.chars().take(8).collect(),
                            sequence,
                            ..Location::default()
                        }),
                        id: id.chars().take(8).collect(),
                    });
                }
                if id == "MSH" && sequence > 1 {
                    return Err(ParseError::SecondMsh(Box::new(Location {
                        segment: "MSH".into(),
                        sequence,
                        ..Location::default()
                    })));
                }
                self.segments.push(SegmentSpan {
                    line: Span {
                        start: pos as u32,
                        end: end as u32,
                    },
                    first,
                    count,
                });
            }
            pos = end + 1;
        }
        Ok(())
    }

    /// The delimiters of this message.
    pub fn delimiters(&self) -> &Delimiters {
        &self.delimiters
    }

    /// The charset the message was decoded from.
    pub fn charset(&self) -> Charset {
        self.charset
    }

    /// The decoded text.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Number of segments.
    pub fn len(&self) -> usize {
        self.segments.len()
    }

    /// True for a message without segments (never, after a successful parse).
    pub fn is_empty(&self) -> bool {
        self.segments.is_empty()
    }

    /// The segment at a 0-based index.
    pub fn segment(&self, index: usize) -> Option<Segment<'_>> {
        let span = *self.segments.get(index)?;
        Some(Segment {
            msg: self,
            span,
            index,
        })
    }

    /// All segments in order.
    pub fn segments(&self) -> impl Iterator<Item = Segment<'_>> {
        (0..self.segments.len()).filter_map(|i| self.segment(i))
    }

    /// The first segment with this id.
    pub fn first(&self, id: &str) -> Option<Segment<'_>> {
        self.segments().find(|s| s.id() == id)
    }

    /// The MSH segment.
    pub fn msh(&self) -> Segment<'_> {
        Segment {
            msg: self,
            span: self.segments[0],
            index: 0,
        }
    }

    /// MSH-9 as `TYPE^EVENT` (e.g. `ADT^A01`) and the structure MSH-9.3 names, if any.
    pub fn message_type(&self) -> (String, String, Option<String>) {
        let f = self.msh().field(9);
        let rep = f.part(1);
        let text = |p: Piece<'_>| p.text().map(|t| t.into_owned()).unwrap_or_default();
        let structure = text(rep.part(3));
        (
            text(rep.part(1)),
            text(rep.part(2)),
            (!structure.is_empty()).then_some(structure),
        )
    }
}

/// One segment of a message.
#[derive(Debug, Clone, Copy)]
pub struct Segment<'m> {
    msg: &'m Hl7v2Message<'m>,
    span: SegmentSpan,
    index: usize,
}

impl<'m> Segment<'m> {
    /// The segment id (`PID`, `ZPI`...).
    pub fn id(&self) -> &'m str {
        self.slice(self.msg.fields[self.span.first as usize])
    }

    /// 0-based index of this segment in the message.
    pub fn index(&self) -> usize {
        self.index
    }

    /// True for site-defined segments (`Z..`).
    pub fn is_z(&self) -> bool {
        self.id().starts_with('Z')
    }

    /// The whole segment text as received.
    pub fn raw(&self) -> &'m str {
        self.slice(self.span.line)
    }

    fn slice(&self, s: Span) -> &'m str {
        self.msg
            .text
            .get(s.start as usize..s.end as usize)
            .unwrap_or("")
    }

    fn is_msh(&self) -> bool {
        self.index == 0 && self.id() == "MSH"
    }

    /// The highest field number present (trailing empty fields included).
    pub fn field_count(&self) -> usize {
        let n = self.span.count as usize - 1;
        if self.is_msh() { n + 1 } else { n }
    }

    /// Field `n` (1-based, as HL7 numbers them; MSH-1 is the field separator itself). Absent
    /// fields are empty pieces.
    pub fn field(&self, n: usize) -> Piece<'m> {
        let d = &self.msg.delimiters;
        let literal = |raw: &'m str| Piece {
            raw,
            delimiters: d,
            charset: self.msg.charset,
            level: Level::Subcomponent,
        };
        let index = if self.is_msh() {
            match n {
                0 => return literal(""),
                1 => {
                    let at = self.span.line.start as usize + 3;
                    return literal(self.msg.text.get(at..at + 1).unwrap_or(""));
                }
                2 => {
                    let f = self.msg.fields[self.span.first as usize + 1];
                    return literal(self.slice(f));
                }
                _ => n - 1,
            }
        } else {
            n
        };
        let raw = if n == 0 || index >= self.span.count as usize {
            ""
        } else {
            self.slice(self.msg.fields[self.span.first as usize + index])
        };
        Piece {
            raw,
            delimiters: d,
            charset: self.msg.charset,
            level: Level::Field,
        }
    }

    /// The location of field `n` of this segment.
    pub fn location(&self, field: Option<usize>) -> Location {
        Location {
            segment: self.id().to_string(),
            sequence: self.index + 1,
            field,
            ..Location::default()
        }
    }
}

/// Which split a [`Piece`] undergoes next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Field,
    Repetition,
    Component,
    Subcomponent,
}

impl Level {
    fn below(self) -> Level {
        match self {
            Level::Field => Level::Repetition,
            Level::Repetition => Level::Component,
            Level::Component | Level::Subcomponent => Level::Subcomponent,
        }
    }
}

/// A field, repetition, component or sub-component: raw text plus what splits it further.
#[derive(Debug, Clone, Copy)]
pub struct Piece<'m> {
    raw: &'m str,
    delimiters: &'m Delimiters,
    charset: Charset,
    level: Level,
}

impl<'m> Piece<'m> {
    /// The text as received (escapes not decoded).
    pub fn raw(&self) -> &'m str {
        self.raw
    }

    /// True when nothing is there (the HL7 null `""` is not empty: it says "delete").
    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }

    /// True when something other than separators is there.
    pub fn is_valued(&self) -> bool {
        let d = self.delimiters;
        self.raw.bytes().any(|b| {
            b != d.repetition && b != d.component && Some(b) != d.subcomponent && b != b' '
        })
    }

    /// True for the explicit HL7 null `""`.
    pub fn is_null(&self) -> bool {
        self.raw == "\"\""
    }

    /// The `n`th (1-based) part one level down: repetition of a field, component of a repetition,
    /// sub-component of a component. A sub-component has only itself as part 1.
    pub fn part(&self, n: usize) -> Piece<'m> {
        let sep = self.delimiters.separator(self.level);
        let level = self.level.below();
        let raw = match sep {
            None => {
                if n == 1 {
                    self.raw
                } else {
                    ""
                }
            }
            Some(sep) => nth_part(self.raw, sep, n),
        };
        Piece {
            raw,
            delimiters: self.delimiters,
            charset: self.charset,
            level,
        }
    }

    /// The parts one level down, split once: a converter that reads many components of one
    /// repetition asks [`Parts::part`] instead of re-scanning the text from its start each time.
    pub fn split(&self) -> Parts<'m> {
        let mut parts = Parts {
            whole: *self,
            raw: [""; PARTS_KEPT],
            count: 0,
            level: self.level.below(),
        };
        match self.delimiters.separator(self.level) {
            None => {
                parts.raw[0] = self.raw;
                parts.count = 1;
            }
            Some(sep) => {
                for r in self.raw.split(sep as char).take(PARTS_KEPT) {
                    parts.raw[parts.count] = r;
                    parts.count += 1;
                }
            }
        }
        parts
    }

    /// All parts one level down (a field's repetitions, a repetition's components...).
    pub fn parts(&self) -> impl Iterator<Item = Piece<'m>> + use<'m> {
        let sep = self.delimiters.separator(self.level);
        let level = self.level.below();
        let delimiters = self.delimiters;
        let charset = self.charset;
        let raw = self.raw;
        // Lazy: most callers stop at the first repetition, so nothing is collected.
        let split = sep.map(|s| raw.split(s as char)).into_iter().flatten();
        let whole = sep.is_none().then_some(raw);
        split.chain(whole).map(move |raw| Piece {
            raw,
            delimiters,
            charset,
            level,
        })
    }

    /// A component path below this piece: `at(&[4, 1])` of a repetition is its component 4,
    /// sub-component 1. A field is read through its first repetition.
    pub fn at(&self, path: &[usize]) -> Piece<'m> {
        let mut p = if self.level == Level::Field {
            self.part(1)
        } else {
            *self
        };
        for &n in path {
            p = p.part(n);
        }
        p
    }

    /// The decoded text: escapes resolved. A piece that still has separators (a whole
    /// component with sub-components) keeps them, unescaped.
    pub fn text(&self) -> Result<Cow<'m, str>, EscapeError> {
        if self.is_null() {
            return Ok(Cow::Borrowed(""));
        }
        escape::unescape(self.raw, self.delimiters, self.charset)
    }

    /// True when the value ends with the truncation character (v2.7+): it was cut by the sender.
    pub fn is_truncated(&self) -> bool {
        self.delimiters
            .truncation
            .is_some_and(|t| self.raw.as_bytes().last() == Some(&t))
    }
}

/// How many parts [`Piece::split`] keeps; the widest v2 data types (XCN, XAD) have fewer than 24
/// components, and a part beyond the last kept one is found by scanning.
const PARTS_KEPT: usize = 24;

/// The parts of one piece, split once (see [`Piece::split`]).
#[derive(Debug, Clone, Copy)]
pub struct Parts<'m> {
    whole: Piece<'m>,
    raw: [&'m str; PARTS_KEPT],
    count: usize,
    level: Level,
}

impl<'m> Parts<'m> {
    /// The `n`th (1-based) part, exactly as [`Piece::part`] of the whole would give it.
    pub fn part(&self, n: usize) -> Piece<'m> {
        if n == 0 {
            return self.whole.part(0);
        }
        if n > PARTS_KEPT {
            return self.whole.part(n);
        }
        Piece {
            raw: if n <= self.count { self.raw[n - 1] } else { "" },
            delimiters: self.whole.delimiters,
            charset: self.whole.charset,
            level: self.level,
        }
    }

    /// The piece these parts were split from.
    pub fn whole(&self) -> Piece<'m> {
        self.whole
    }
}

/// The `n`th (1-based) part of `raw` split on `sep`, or `""`. Delimiters are ASCII
/// (`read_delimiters` refuses others), so a byte scan cuts only at character boundaries.
fn nth_part(raw: &str, sep: u8, n: usize) -> &str {
    if n == 0 {
        return "";
    }
    let bytes = raw.as_bytes();
    let mut start = 0;
    let mut seen = 1;
    for (i, &b) in bytes.iter().enumerate() {
        if b == sep {
            if seen == n {
                return &raw[start..i];
            }
            seen += 1;
            start = i + 1;
        }
    }
    if seen == n { &raw[start..] } else { "" }
}

/// Splits a file or stream of messages on each `MSH` at the start of a segment (batch headers
/// `FHS`/`BHS`/`BTS`/`FTS` are dropped).
pub fn split_messages(bytes: &[u8]) -> Vec<&[u8]> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let mut starts = Vec::new();
    let mut at_line_start = true;
    for (i, &b) in bytes.iter().enumerate() {
        if at_line_start && bytes[i..].starts_with(b"MSH") {
            starts.push(i);
        }
        at_line_start = b == b'\r' || b == b'\n';
    }
    let mut out = Vec::with_capacity(starts.len());
    for (k, &s) in starts.iter().enumerate() {
        let e = starts.get(k + 1).copied().unwrap_or(bytes.len());
        let mut chunk = &bytes[s..e];
        // A batch trailer or header between messages is not part of either.
        for trailer in [&b"BTS"[..], b"FTS", b"BHS", b"FHS"] {
            if let Some(p) = find_segment(chunk, trailer) {
                chunk = &chunk[..p];
            }
        }
        out.push(chunk);
    }
    out
}

fn find_segment(chunk: &[u8], id: &[u8]) -> Option<usize> {
    (1..chunk.len())
        .find(|&i| (chunk[i - 1] == b'\r' || chunk[i - 1] == b'\n') && chunk[i..].starts_with(id))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ADT: &[u8] = b"MSH|^~\\&|HIS|H1|HUI|HUI|20240102030405||ADT^A01^ADT_A01|MSG1|P|2.5\rEVN|A01|20240102\rPID|1||123^^^H1^MR~456^^^SS^SS||Wang^Li&Ming^X||19800101|M\rZPI|custom|x\r";

    #[test]
    fn fields_repetitions_components_subcomponents() {
        let m = parse(ADT, Charset::Ascii).unwrap();
        assert_eq!(m.len(), 4);
        let pid = m.segment(2).unwrap();
        assert_eq!(pid.id(), "PID");
        assert_eq!(pid.field(3).part(2).part(1).text().unwrap(), "456");
        assert_eq!(pid.field(3).at(&[4]).text().unwrap(), "H1");
        assert_eq!(pid.field(5).at(&[2, 2]).text().unwrap(), "Ming");
        assert_eq!(pid.field(5).at(&[2, 1]).text().unwrap(), "Li");
        assert_eq!(pid.field(7).raw(), "19800101");
        assert!(pid.field(30).is_empty());
        assert_eq!(pid.field(3).parts().count(), 2);
        assert!(m.segment(3).unwrap().is_z());
    }

    #[test]
    fn parts_split_once_read_as_part_does() {
        let m = parse(ADT, Charset::Ascii).unwrap();
        let pid = m.segment(2).unwrap();
        // A repetition, a component with sub-components, a lone sub-component, a field.
        let wide = "a^b".repeat(20);
        let seg = format!("MSH|^~\\&|X|||||||||2.5\rPID|1||{wide}\r");
        let w = parse(seg.as_bytes(), Charset::Ascii).unwrap();
        let pieces = [
            pid.field(3).part(1),
            pid.field(5).part(1).part(2),
            pid.field(5).part(1).part(2).part(1),
            pid.field(3),
            w.segment(1).unwrap().field(3).part(1),
        ];
        for p in pieces {
            let parts = p.split();
            for n in 0..45 {
                let (a, b) = (parts.part(n), p.part(n));
                assert_eq!(a.raw(), b.raw(), "{} part {n}", p.raw());
                assert_eq!(a.split().part(1).raw(), b.part(1).raw());
            }
        }
    }

    #[test]
    fn msh_fields_count_the_separator() {
        let m = parse(ADT, Charset::Ascii).unwrap();
        let msh = m.msh();
        assert_eq!(msh.field(1).raw(), "|");
        assert_eq!(msh.field(2).raw(), "^~\\&");
        assert_eq!(msh.field(3).text().unwrap(), "HIS");
        assert_eq!(msh.field(10).text().unwrap(), "MSG1");
        assert_eq!(
            m.message_type(),
            ("ADT".into(), "A01".into(), Some("ADT_A01".into()))
        );
    }

    #[test]
    fn segment_terminators_cr_lf_crlf() {
        for sep in [&b"\r"[..], b"\n", b"\r\n"] {
            let text = [&b"MSH|^~\\&|A"[..], sep, b"PID|1", sep, b"PV1|1", sep].concat();
            let m = parse(&text, Charset::Ascii).unwrap();
            let ids: Vec<_> = m.segments().map(|s| s.id()).collect();
            assert_eq!(ids, ["MSH", "PID", "PV1"]);
        }
    }

    #[test]
    fn other_delimiters_from_msh() {
        let m = parse(b"MSH#*!%@#A#B\rPID#1#x*y@z!w", Charset::Ascii).unwrap();
        let pid = m.segment(1).unwrap();
        assert_eq!(pid.field(2).at(&[2, 2]).raw(), "z");
        assert_eq!(pid.field(2).part(2).raw(), "w");
        assert_eq!(m.delimiters().escape, Some(b'%'));
    }

    #[test]
    fn truncation_character_v27() {
        let m = parse(b"MSH|^~\\&#|A\rNTE|1||Long text#", Charset::Ascii).unwrap();
        assert_eq!(m.delimiters().truncation, Some(b'#'));
        assert!(m.segment(1).unwrap().field(3).is_truncated());
    }

    #[test]
    fn bad_input_is_an_error_with_location() {
        assert_eq!(
            parse(b"PID|1", Charset::Ascii).unwrap_err(),
            ParseError::NoMsh
        );
        assert!(matches!(
            parse(b"MSH|^|A|B|C", Charset::Ascii),
            Err(ParseError::Delimiters(_))
        ));
        assert!(matches!(
            parse(b"MSH|^^\\&|A", Charset::Ascii),
            Err(ParseError::Delimiters(_))
        ));
        let e = parse(b"MSH|^~\\&|A\rpid|1", Charset::Ascii).unwrap_err();
        assert_eq!(e.location().unwrap().sequence, 2);
        let e = parse(b"MSH|^~\\&|A\rPID|1|\xFF", Charset::Ascii).unwrap_err();
        let loc = e.location().unwrap();
        assert_eq!((loc.segment.as_str(), loc.field), ("PID", Some(2)));
        assert!(matches!(
            parse(b"MSH|^~\\&|A|||||||||||||||KLINGON", Charset::Ascii),
            Err(ParseError::UnknownCharset(_))
        ));
    }

    #[test]
    fn gb18030_message_by_msh18_and_by_sender_default() {
        let text = "MSH|^~\\&|HIS|医院|HUI|HUI|20240101||ADT^A01|1|P|2.5|||||CHN|GB 18030-2000\rPID|1||1||张^三丰\r";
        let (bytes, _, _) = encoding_rs::GB18030.encode(text);
        let m = parse(&bytes, Charset::Ascii).unwrap();
        assert_eq!(
            m.segment(1).unwrap().field(5).at(&[2]).text().unwrap(),
            "三丰"
        );
        let plain = "MSH|^~\\&|HIS|H|HUI|HUI|20240101||ADT^A01|1|P|2.5\rPID|1||1||张^三\r";
        let (bytes, _, _) = encoding_rs::GBK.encode(plain);
        let gbk = Charset::from_msh18("GBK").unwrap();
        let m = parse(&bytes, gbk).unwrap();
        assert_eq!(
            m.segment(1).unwrap().field(5).at(&[1]).text().unwrap(),
            "张"
        );
        assert!(parse(&bytes, Charset::Ascii).is_err());
    }

    #[test]
    fn splits_batches() {
        let b = b"FHS|^~\\&\rBHS|^~\\&\rMSH|^~\\&|A\rPID|1\rMSH|^~\\&|B\nPID|2\nBTS|2\rFTS|1";
        let parts = split_messages(b);
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[1], b"MSH|^~\\&|B\nPID|2\n");
    }
}
