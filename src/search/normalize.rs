//! The normalised form of strings for search: case and accents folded, everything else kept.
//!
//! `Müller`, `MULLER` and `muller` match each other; Chinese (and any script without case or
//! combining marks) is kept exactly as written, so `李` matches only `李`.

use unicode_normalization::UnicodeNormalization;
use unicode_normalization::char::is_combining_mark;

/// Folds case and removes accents (canonical decomposition without combining marks), and
/// collapses runs of whitespace to one space.
pub fn normalize(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut space = false;
    // Most indexed text (codes, identifiers, names in Latin letters) is ASCII, which has no
    // decomposition: the same folding without the NFD iterator.
    if s.is_ascii() {
        for b in s.trim().bytes() {
            if (b as char).is_whitespace() {
                space = true;
                continue;
            }
            if space {
                out.push(' ');
                space = false;
            }
            out.push(b.to_ascii_lowercase() as char);
        }
        return out;
    }
    for c in s.trim().nfd() {
        if is_combining_mark(c) {
            continue;
        }
        if c.is_whitespace() {
            space = true;
            continue;
        }
        if space {
            out.push(' ');
            space = false;
        }
        out.extend(c.to_lowercase());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::normalize;

    #[test]
    fn folds_case_and_accents_and_keeps_chinese() {
        assert_eq!(normalize("Müller"), "muller");
        assert_eq!(normalize("  ÉLODIE   Chloé "), "elodie chloe");
        assert_eq!(normalize("李小明"), "李小明");
        assert_eq!(normalize("Zhāng Wěi"), "zhang wei");
        assert_eq!(normalize(" A\t\x0bB\r\n  c "), "a b c");
    }
}
