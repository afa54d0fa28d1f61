//! A streaming CSV reader (RFC 4180: quoted fields, `""` escapes, CRLF or LF) over bytes in UTF-8
//! or GB 18030, fed chunk by chunk.
//!
//! Invariant: the reader holds at most the undecoded tail of the last chunk, the decoded text of
//! one chunk and the fields of the row being read; it never buffers the file. [`CsvReader::peak_row_bytes`]
//! reports the largest row it ever held, so a test can show the bound.

use encoding_rs::{Decoder, Encoding, GB18030, UTF_8};

/// The character sets a feed accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CsvCharset {
    Utf8,
    Gb18030,
}

impl CsvCharset {
    /// From a `charset=` parameter or a flag; GBK and GB2312 are read as GB 18030 (a superset).
    pub fn from_label(s: &str) -> Option<CsvCharset> {
        match s.trim().trim_matches('"').to_ascii_lowercase().as_str() {
            "utf-8" | "utf8" => Some(CsvCharset::Utf8),
            "gb18030" | "gbk" | "gb2312" | "gb-18030" => Some(CsvCharset::Gb18030),
            _ => None,
        }
    }

    fn encoding(self) -> &'static Encoding {
        match self {
            CsvCharset::Utf8 => UTF_8,
            CsvCharset::Gb18030 => GB18030,
        }
    }
}

/// Why the CSV cannot be read further.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CsvError {
    #[error("row {row}: bytes that are not {charset:?}")]
    Charset { row: usize, charset: CsvCharset },
    #[error("row {row}: a row longer than {max} bytes")]
    RowTooLong { row: usize, max: usize },
    #[error("row {row}: a quoted field is not closed at the end of the input")]
    OpenQuote { row: usize },
    #[error("row {row}: a character after the closing quote of a field")]
    AfterQuote { row: usize },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    FieldStart,
    Plain,
    Quoted,
    QuoteInQuoted,
}

/// A push parser: bytes in, complete rows out.
pub struct CsvReader {
    charset: CsvCharset,
    decoder: Decoder,
    text: String,
    state: State,
    field: String,
    row: Vec<String>,
    row_bytes: usize,
    peak_row_bytes: usize,
    max_row_bytes: usize,
    /// Rows completed so far (the header is row 0).
    rows: usize,
    pending_cr: bool,
}

impl CsvReader {
    /// A reader for one input; rows longer than `max_row_bytes` are an error.
    pub fn new(charset: CsvCharset, max_row_bytes: usize) -> CsvReader {
        CsvReader {
            charset,
            // A BOM names the real encoding; without one the declared charset holds.
            decoder: charset.encoding().new_decoder_with_bom_removal(),
            text: String::new(),
            state: State::FieldStart,
            field: String::new(),
            row: Vec::new(),
            row_bytes: 0,
            peak_row_bytes: 0,
            max_row_bytes,
            rows: 0,
            pending_cr: false,
        }
    }

    /// The largest row (in decoded bytes) held at any time.
    pub fn peak_row_bytes(&self) -> usize {
        self.peak_row_bytes
    }

    /// Feeds a chunk; `last` at the end of input. Each complete row goes to `emit` (fields as
    /// text), in order; empty lines are skipped.
    pub fn push(
        &mut self,
        bytes: &[u8],
        last: bool,
        emit: &mut dyn FnMut(Vec<String>),
    ) -> Result<(), CsvError> {
        let mut text = std::mem::take(&mut self.text);
        text.clear();
        let need = self
            .decoder
            .max_utf8_buffer_length_without_replacement(bytes.len())
            .unwrap_or(bytes.len() * 3 + 16);
        text.reserve(need);
        let (result, _read) = self
            .decoder
            .decode_to_string_without_replacement(bytes, &mut text, last);
        if let encoding_rs::DecoderResult::Malformed(_, _) = result {
            return Err(CsvError::Charset {
                row: self.rows,
                charset: self.charset,
            });
        }
        for c in text.chars() {
            self.char(c, emit)?;
        }
        self.text = text;
        if last {
            match self.state {
                State::Quoted => return Err(CsvError::OpenQuote { row: self.rows }),
                _ => {
                    if !self.field.is_empty() || !self.row.is_empty() {
                        self.end_row(emit);
                    }
                }
            }
        }
        Ok(())
    }

    fn char(&mut self, c: char, emit: &mut dyn FnMut(Vec<String>)) -> Result<(), CsvError> {
        if self.pending_cr {
            self.pending_cr = false;
            if c == '\n' {
                return Ok(());
            }
        }
        self.row_bytes += c.len_utf8();
        if self.row_bytes > self.max_row_bytes {
            return Err(CsvError::RowTooLong {
                row: self.rows,
                max: self.max_row_bytes,
            });
        }
        self.peak_row_bytes = self.peak_row_bytes.max(self.row_bytes);
        match (self.state, c) {
            (State::FieldStart, '"') => self.state = State::Quoted,
            (State::FieldStart | State::Plain | State::QuoteInQuoted, ',') => {
                self.end_field();
            }
            (State::FieldStart | State::Plain | State::QuoteInQuoted, '\r' | '\n') => {
                self.pending_cr = c == '\r';
                if self.row.is_empty() && self.field.is_empty() && self.state == State::FieldStart {
                    // An empty line.
                    self.row_bytes = 0;
                    return Ok(());
                }
                self.end_row(emit);
            }
            (State::FieldStart | State::Plain, c) => {
                self.state = State::Plain;
                self.field.push(c);
            }
            (State::Quoted, '"') => self.state = State::QuoteInQuoted,
            (State::Quoted, c) => self.field.push(c),
            (State::QuoteInQuoted, '"') => {
                self.field.push('"');
                self.state = State::Quoted;
            }
            (State::QuoteInQuoted, _) => return Err(CsvError::AfterQuote { row: self.rows }),
        }
        Ok(())
    }

    fn end_field(&mut self) {
        self.row.push(std::mem::take(&mut self.field));
        self.state = State::FieldStart;
    }

    fn end_row(&mut self, emit: &mut dyn FnMut(Vec<String>)) {
        self.end_field();
        self.rows += 1;
        self.row_bytes = 0;
        emit(std::mem::take(&mut self.row));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(input: &[u8], charset: CsvCharset, chunk: usize) -> Result<Vec<Vec<String>>, CsvError> {
        let mut r = CsvReader::new(charset, 1 << 20);
        let mut out = Vec::new();
        let chunks: Vec<&[u8]> = input.chunks(chunk.max(1)).collect();
        for (i, c) in chunks.iter().enumerate() {
            r.push(c, i + 1 == chunks.len(), &mut |row| out.push(row))?;
        }
        if chunks.is_empty() {
            r.push(b"", true, &mut |row| out.push(row))?;
        }
        Ok(out)
    }

    #[test]
    fn quoted_fields_and_line_ends_in_any_chunking() {
        let input = "a,b,c\r\n1,\"x,\"\"y\"\"\",3\n\n4,\"多\n行\",\r\n";
        for chunk in [1, 2, 3, 7, 100] {
            let got = rows(input.as_bytes(), CsvCharset::Utf8, chunk).unwrap();
            assert_eq!(
                got,
                vec![
                    vec!["a", "b", "c"],
                    vec!["1", "x,\"y\"", "3"],
                    vec!["4", "多\n行", ""],
                ],
                "chunk {chunk}"
            );
        }
    }

    #[test]
    fn gb18030_split_inside_a_character() {
        let (bytes, _, _) = GB18030.encode("姓名,性别\n张三,男\n");
        for chunk in [1, 3, 5] {
            let got = rows(&bytes, CsvCharset::Gb18030, chunk).unwrap();
            assert_eq!(got, vec![vec!["姓名", "性别"], vec!["张三", "男"]]);
        }
        // The same bytes declared UTF-8 are refused, with the row.
        assert_eq!(
            rows(&bytes, CsvCharset::Utf8, 100),
            Err(CsvError::Charset {
                row: 0,
                charset: CsvCharset::Utf8
            })
        );
    }

    #[test]
    fn malformed_quotes_are_located() {
        assert_eq!(
            rows(b"a\n\"x", CsvCharset::Utf8, 4),
            Err(CsvError::OpenQuote { row: 1 })
        );
        assert_eq!(
            rows(b"a\n\"x\"y\n", CsvCharset::Utf8, 4),
            Err(CsvError::AfterQuote { row: 1 })
        );
        let mut r = CsvReader::new(CsvCharset::Utf8, 8);
        assert_eq!(
            r.push(b"123456789\n", true, &mut |_| {}),
            Err(CsvError::RowTooLong { row: 0, max: 8 })
        );
    }
}
