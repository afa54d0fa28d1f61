//! The R4 primitive types' lexical rules, written out by hand.
//!
//! Each function is the R4 regex of that type (from the specification's datatypes page) as a
//! straight-line scanner: no regex engine on the parse path, no backtracking on hostile input.

/// `[A-Za-z0-9\-\.]{1,64}`
pub fn is_id(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// `\s` of the specification's (Java) regexes: ASCII whitespace only, so a no-break space is content.
fn is_regex_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

/// `[^\s]+(\s[^\s]+)*`: no leading, trailing or doubled whitespace.
pub fn is_code(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && !is_regex_space(b[0])
        && !is_regex_space(b[b.len() - 1])
        && !b
            .windows(2)
            .any(|w| is_regex_space(w[0]) && is_regex_space(w[1]))
}

/// `\S*` (uri, url, canonical): no whitespace at all.
pub fn is_uri(s: &str) -> bool {
    !s.bytes().any(is_regex_space)
}

/// `urn:oid:[0-2](\.(0|[1-9][0-9]*))+`
pub fn is_oid(s: &str) -> bool {
    let Some(rest) = s.strip_prefix("urn:oid:") else {
        return false;
    };
    let mut arcs = rest.split('.');
    let first_ok = matches!(arcs.next(), Some("0" | "1" | "2"));
    let mut n = 0;
    let others_ok = arcs.all(|a| {
        n += 1;
        is_unsigned_digits(a)
    });
    first_ok && others_ok && n >= 1
}

/// `urn:uuid:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}`
pub fn is_uuid(s: &str) -> bool {
    let Some(rest) = s.strip_prefix("urn:uuid:") else {
        return false;
    };
    let groups: Vec<&str> = rest.split('-').collect();
    groups.len() == 5
        && groups.iter().zip([8, 4, 4, 4, 12]).all(|(g, n)| {
            g.len() == n
                && g.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        })
}

/// `(\s*([0-9a-zA-Z\+/=]){4}\s*)+`: base64 characters in groups of four, whitespace allowed between.
pub fn is_base64(s: &str) -> bool {
    let mut count = 0usize;
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b == b'+' || b == b'/' || b == b'=' {
            count += 1;
        } else if !b.is_ascii_whitespace() {
            return false;
        }
    }
    count > 0 && count.is_multiple_of(4)
}

/// `0|([1-9][0-9]*)`
fn is_unsigned_digits(s: &str) -> bool {
    s == "0" || (!s.is_empty() && !s.starts_with('0') && s.bytes().all(|b| b.is_ascii_digit()))
}

/// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?` applied to a JSON number's text.
pub fn is_decimal(s: &str) -> bool {
    let s = s.strip_prefix('-').unwrap_or(s);
    let (mantissa, exp) = match s.find(['e', 'E']) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    let (int, frac) = match mantissa.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (mantissa, None),
    };
    let exp_ok = exp.is_none_or(|e| {
        let e = e.strip_prefix(['+', '-']).unwrap_or(e);
        !e.is_empty() && e.bytes().all(|b| b.is_ascii_digit())
    });
    is_unsigned_digits(int)
        && frac.is_none_or(|f| !f.is_empty() && f.bytes().all(|b| b.is_ascii_digit()))
        && exp_ok
}

/// A scanner over ASCII bytes for the date/time grammars.
struct Scan<'a> {
    b: &'a [u8],
    i: usize,
}

impl Scan<'_> {
    fn digits(&mut self, n: usize) -> Option<u32> {
        let end = self.i.checked_add(n)?;
        let part = self.b.get(self.i..end)?;
        if !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        self.i = end;
        Some(part.iter().fold(0, |acc, d| acc * 10 + u32::from(d - b'0')))
    }
    fn eat(&mut self, c: u8) -> bool {
        if self.b.get(self.i) == Some(&c) {
            self.i += 1;
            true
        } else {
            false
        }
    }
    fn done(&self) -> bool {
        self.i == self.b.len()
    }
    /// `YYYY(-MM(-DD)?)?`; returns how many parts were present (1..=3).
    fn date(&mut self) -> Option<u8> {
        let year = self.digits(4)?;
        if year == 0 {
            return None;
        }
        if !self.eat(b'-') {
            return Some(1);
        }
        let month = self.digits(2)?;
        if !(1..=12).contains(&month) {
            return None;
        }
        if !self.eat(b'-') {
            return Some(2);
        }
        let day = self.digits(2)?;
        (1..=days_in_month(year, month)).contains(&day).then_some(3)
    }
    /// `hh:mm:ss(.f+)?`
    fn time(&mut self) -> Option<()> {
        let h = self.digits(2)?;
        let ok = self.eat(b':');
        let m = self.digits(2)?;
        let ok2 = self.eat(b':');
        let s = self.digits(2)?;
        if !(ok && ok2 && h <= 23 && m <= 59 && s <= 60) {
            return None;
        }
        if self.eat(b'.') {
            let start = self.i;
            while self.b.get(self.i).is_some_and(u8::is_ascii_digit) {
                self.i += 1;
            }
            if self.i == start {
                return None;
            }
        }
        Some(())
    }
    /// `Z|(+|-)((0[0-9]|1[0-3]):[0-5][0-9]|14:00)`
    fn zone(&mut self) -> Option<()> {
        if self.eat(b'Z') {
            return Some(());
        }
        if !(self.eat(b'+') || self.eat(b'-')) {
            return None;
        }
        let h = self.digits(2)?;
        let colon = self.eat(b':');
        let m = self.digits(2)?;
        (colon && (h <= 13 && m <= 59 || h == 14 && m == 0)).then_some(())
    }
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        2 if year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400)) => {
            29
        }
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// `date`: `YYYY`, `YYYY-MM` or `YYYY-MM-DD`.
pub fn is_date(s: &str) -> bool {
    let mut sc = Scan {
        b: s.as_bytes(),
        i: 0,
    };
    sc.date().is_some() && sc.done()
}

/// `dateTime`: a date, or a full date with a time and a zone.
pub fn is_date_time(s: &str) -> bool {
    let mut sc = Scan {
        b: s.as_bytes(),
        i: 0,
    };
    match sc.date() {
        Some(3) if sc.eat(b'T') => sc.time().is_some() && sc.zone().is_some() && sc.done(),
        Some(_) => sc.done(),
        None => false,
    }
}

/// `instant`: a full date, time and zone.
pub fn is_instant(s: &str) -> bool {
    let mut sc = Scan {
        b: s.as_bytes(),
        i: 0,
    };
    sc.date() == Some(3) && sc.eat(b'T') && sc.time().is_some() && sc.zone().is_some() && sc.done()
}

/// `time`: `hh:mm:ss(.f+)?` with no zone.
pub fn is_time(s: &str) -> bool {
    let mut sc = Scan {
        b: s.as_bytes(),
        i: 0,
    };
    sc.time().is_some() && sc.done()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        assert!(is_id("example-1.a"));
        assert!(is_id(&"a".repeat(64)));
        assert!(!is_id(&"a".repeat(65)));
        assert!(!is_id(""));
        assert!(!is_id("a b"));
        assert!(!is_id("a_b"));
        assert!(!is_id("患者"));
    }

    #[test]
    fn codes_and_uris() {
        assert!(is_code("final"));
        assert!(is_code("a b"));
        assert!(!is_code(" a"));
        assert!(!is_code("a  b"));
        assert!(!is_code("a "));
        assert!(
            is_code("CHEST\u{a0}"),
            "a no-break space is not \\s in the R4 regexes"
        );
        assert!(is_uri("http://x/y?a=b"));
        assert!(!is_uri("http://x y"));
        assert!(is_oid("urn:oid:2.16.156.10011.1.3"));
        assert!(!is_oid("urn:oid:3.1"));
        assert!(!is_oid("urn:oid:1.01"));
        assert!(!is_oid("urn:oid:1"));
        assert!(is_uuid("urn:uuid:c757873d-ec9a-4326-a141-556f43239520"));
        assert!(!is_uuid("urn:uuid:C757873D-ec9a-4326-a141-556f43239520"));
        assert!(is_base64("SGVs bG8="));
        assert!(!is_base64("SGVsbG8"));
        assert!(!is_base64("SGV*bG8="));
    }

    #[test]
    fn decimals() {
        for ok in ["0", "1.50", "-0.5", "1e10", "1.0E-3", "123"] {
            assert!(is_decimal(ok), "{ok}");
        }
        for bad in ["01", "1.", ".5", "1e", "--1", "+1", "1.2.3"] {
            assert!(!is_decimal(bad), "{bad}");
        }
    }

    #[test]
    fn dates_and_times() {
        for ok in ["2024", "2024-02", "2024-02-29", "2000-02-29"] {
            assert!(is_date(ok), "{ok}");
        }
        for bad in [
            "2023-02-29",
            "1900-02-29",
            "0000",
            "2024-13",
            "2024-1-01",
            "2024-01-32",
            "2024-01-01T00:00:00Z",
        ] {
            assert!(!is_date(bad), "{bad}");
        }
        for ok in [
            "2024",
            "2024-01-01",
            "2024-01-01T10:00:00Z",
            "2024-01-01T10:00:00.123+08:00",
            "2015-02-07T13:28:17-05:00",
        ] {
            assert!(is_date_time(ok), "{ok}");
        }
        for bad in [
            "2024-01-01T10:00:00",
            "2024-01-01T10:00Z",
            "2024-01T10:00:00Z",
            "2024-01-01T24:00:00Z",
            "2024-01-01T10:00:00+15:00",
        ] {
            assert!(!is_date_time(bad), "{bad}");
        }
        assert!(is_instant("2024-01-01T10:00:00.5Z"));
        assert!(!is_instant("2024-01-01"));
        assert!(is_time("23:59:60"));
        assert!(is_time("10:00:00.25"));
        assert!(!is_time("10:00"));
        assert!(!is_time("10:00:00Z"));
    }
}
