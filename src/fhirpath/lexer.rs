//! Tokeniser for FHIRPath N1: turns the expression text into tokens with line/column positions.

use super::error::{Pos, SyntaxError};

/// A lexical token.
#[derive(Debug, Clone, PartialEq)]
pub enum Tok {
    /// Plain or backtick-delimited identifier; `delimited` is true for the latter.
    Ident {
        name: String,
        delimited: bool,
    },
    /// String literal, escapes resolved.
    Str(String),
    /// Number as written (`12`, `1.5`); `long` for the `L` suffix.
    Number {
        text: String,
        long: bool,
    },
    /// `@2019-01-01T10:00`, `@T10:00` (text after `@`).
    DateTime(String),
    /// `%name`, `%'name'`, `%\`name\``.
    External(String),
    /// `$this`, `$index`, `$total`.
    Special(String),
    /// Operators and punctuation.
    Sym(&'static str),
    Eof,
}

/// A token with the position it starts at.
#[derive(Debug, Clone)]
pub struct Token {
    pub tok: Tok,
    pub pos: Pos,
}

const SYMBOLS: [&str; 22] = [
    "<=", ">=", "!=", "!~", "(", ")", "[", "]", "{", "}", ".", ",", "+", "-", "*", "/", "&", "|",
    "<", ">", "=", "~",
];

struct Cursor {
    chars: Vec<char>,
    i: usize,
    line: u32,
    col: u32,
}

impl Cursor {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.i).copied()
    }
    fn peek_at(&self, n: usize) -> Option<char> {
        self.chars.get(self.i + n).copied()
    }
    fn pos(&self) -> Pos {
        Pos {
            line: self.line,
            column: self.col,
            offset: self.i,
        }
    }
    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.i += 1;
        if c == '\n' {
            self.line += 1;
            self.col = 1;
        } else {
            self.col += 1;
        }
        Some(c)
    }
}

/// Splits `src` into tokens, ending with [`Tok::Eof`].
pub fn tokenize(src: &str) -> Result<Vec<Token>, SyntaxError> {
    let mut c = Cursor {
        chars: src.chars().collect(),
        i: 0,
        line: 1,
        col: 1,
    };
    let mut out = Vec::new();
    loop {
        skip_trivia(&mut c)?;
        let pos = c.pos();
        let Some(ch) = c.peek() else {
            out.push(Token { tok: Tok::Eof, pos });
            return Ok(out);
        };
        let tok = if ch.is_ascii_alphabetic() || ch == '_' {
            let mut name = String::new();
            while let Some(d) = c.peek() {
                if d.is_ascii_alphanumeric() || d == '_' {
                    name.push(d);
                    c.bump();
                } else {
                    break;
                }
            }
            Tok::Ident {
                name,
                delimited: false,
            }
        } else if ch == '`' {
            c.bump();
            Tok::Ident {
                name: quoted(&mut c, '`', pos)?,
                delimited: true,
            }
        } else if ch == '\'' {
            c.bump();
            Tok::Str(quoted(&mut c, '\'', pos)?)
        } else if ch.is_ascii_digit() {
            number(&mut c)
        } else if ch == '@' {
            c.bump();
            Tok::DateTime(datetime(&mut c, pos)?)
        } else if ch == '%' {
            c.bump();
            match c.peek() {
                Some('`') => {
                    c.bump();
                    Tok::External(quoted(&mut c, '`', pos)?)
                }
                Some('\'') => {
                    c.bump();
                    Tok::External(quoted(&mut c, '\'', pos)?)
                }
                Some(d) if d.is_ascii_alphabetic() || d == '_' => {
                    let mut name = String::new();
                    while let Some(d) = c.peek() {
                        if d.is_ascii_alphanumeric() || d == '_' || d == '-' {
                            name.push(d);
                            c.bump();
                        } else {
                            break;
                        }
                    }
                    Tok::External(name)
                }
                _ => {
                    return Err(SyntaxError::new(
                        pos,
                        "an environment variable name after '%'",
                    ));
                }
            }
        } else if ch == '$' {
            c.bump();
            let mut name = String::new();
            while let Some(d) = c.peek() {
                if d.is_ascii_alphanumeric() || d == '_' {
                    name.push(d);
                    c.bump();
                } else {
                    break;
                }
            }
            match name.as_str() {
                "this" | "index" | "total" => Tok::Special(name),
                _ => return Err(SyntaxError::new(pos, "$this, $index or $total")),
            }
        } else {
            let two: String = [Some(ch), c.peek_at(1)].iter().flatten().collect();
            if let Some(s) = SYMBOLS.iter().find(|s| s.len() == 2 && **s == two) {
                c.bump();
                c.bump();
                Tok::Sym(s)
            } else if let Some(s) = SYMBOLS.iter().find(|s| s.len() == 1 && s.starts_with(ch)) {
                c.bump();
                Tok::Sym(s)
            } else {
                return Err(SyntaxError::new(pos, "an expression").found(&format!("'{ch}'")));
            }
        };
        out.push(Token { tok, pos });
    }
}

fn skip_trivia(c: &mut Cursor) -> Result<(), SyntaxError> {
    loop {
        match c.peek() {
            Some(ch) if ch.is_whitespace() => {
                c.bump();
            }
            Some('/') if c.peek_at(1) == Some('/') => {
                while let Some(ch) = c.peek() {
                    if ch == '\n' {
                        break;
                    }
                    c.bump();
                }
            }
            Some('/') if c.peek_at(1) == Some('*') => {
                let pos = c.pos();
                c.bump();
                c.bump();
                loop {
                    match c.bump() {
                        None => return Err(SyntaxError::new(pos, "'*/' closing the comment")),
                        Some('*') if c.peek() == Some('/') => {
                            c.bump();
                            break;
                        }
                        Some(_) => {}
                    }
                }
            }
            _ => return Ok(()),
        }
    }
}

fn quoted(c: &mut Cursor, end: char, start: Pos) -> Result<String, SyntaxError> {
    let mut s = String::new();
    loop {
        let Some(ch) = c.bump() else {
            return Err(SyntaxError::new(start, &format!("closing {end}")).found("end of input"));
        };
        if ch == end {
            return Ok(s);
        }
        if ch != '\\' {
            s.push(ch);
            continue;
        }
        let epos = c.pos();
        match c.bump() {
            Some('n') => s.push('\n'),
            Some('r') => s.push('\r'),
            Some('t') => s.push('\t'),
            Some('f') => s.push('\u{c}'),
            Some('u') => {
                let mut code = 0u32;
                for _ in 0..4 {
                    let d = c.bump().and_then(|d| d.to_digit(16));
                    let Some(d) = d else {
                        return Err(SyntaxError::new(epos, "four hex digits after \\u"));
                    };
                    code = code * 16 + d;
                }
                s.push(char::from_u32(code).unwrap_or('\u{fffd}'));
            }
            Some(o @ ('\'' | '"' | '`' | '\\' | '/')) => s.push(o),
            Some(o) => s.push(o),
            None => return Err(SyntaxError::new(epos, "an escaped character")),
        }
    }
}

fn number(c: &mut Cursor) -> Tok {
    let mut text = String::new();
    while let Some(d) = c.peek().filter(char::is_ascii_digit) {
        text.push(d);
        c.bump();
    }
    if c.peek() == Some('.') && c.peek_at(1).is_some_and(|d| d.is_ascii_digit()) {
        text.push('.');
        c.bump();
        while let Some(d) = c.peek().filter(char::is_ascii_digit) {
            text.push(d);
            c.bump();
        }
    }
    let long = c.peek() == Some('L') && !c.peek_at(1).is_some_and(|d| d.is_ascii_alphanumeric());
    if long {
        c.bump();
    }
    Tok::Number { text, long }
}

/// Scans a date/time literal body loosely (digits, `-`, `:`, `T`, `.`, `Z`, `+`); the parser
/// validates its shape.
fn datetime(c: &mut Cursor, start: Pos) -> Result<String, SyntaxError> {
    let mut s = String::new();
    let mut in_time = false;
    while let Some(ch) = c.peek() {
        let ok = ch.is_ascii_digit()
            || ch == 'T'
            || ch == 'Z'
            || ch == ':'
            || (ch == '-' && (!in_time || s.contains('T')))
            || (ch == '.' && c.peek_at(1).is_some_and(|d| d.is_ascii_digit()))
            || ((ch == '+' || ch == '-') && in_time);
        if !ok {
            break;
        }
        if ch == 'T' {
            in_time = true;
        }
        s.push(ch);
        c.bump();
        if ch == 'Z' {
            break;
        }
    }
    if s.is_empty() {
        return Err(SyntaxError::new(
            start,
            "a date, dateTime or time after '@'",
        ));
    }
    Ok(s)
}
