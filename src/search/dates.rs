//! Dates as instant ranges: a FHIR `date`, `dateTime` or `instant` of any precision becomes the
//! inclusive range `[low, high]` of milliseconds since the epoch it covers (`2020` covers the whole
//! year). Values without a timezone are taken as UTC.

/// Milliseconds since the epoch of a civil date and time in UTC.
fn epoch_ms(y: i64, m: i64, d: i64, hh: i64, mm: i64, ss: i64, ms: i64) -> i64 {
    // Days from civil (Howard Hinnant's algorithm): exact for the proleptic Gregorian calendar.
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    ((days * 24 + hh) * 60 + mm) * 60_000 + ss * 1000 + ms
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        _ => 28,
    }
}

fn num(s: &str, range: std::ops::RangeInclusive<i64>) -> Option<i64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: i64 = s.parse().ok()?;
    range.contains(&n).then_some(n)
}

/// The range a date, dateTime or instant covers; `None` when it is not one.
pub fn range(s: &str) -> Option<(i64, i64)> {
    let s = s.trim();
    let (date, time) = match s.split_once('T') {
        Some((d, t)) => (d, Some(t)),
        None => (s, None),
    };
    let mut parts = date.split('-');
    let y_text = parts.next()?;
    if y_text.len() != 4 {
        return None;
    }
    let y = num(y_text, 1..=9999)?;
    let m = parts
        .next()
        .map(|p| (p.len() == 2).then(|| num(p, 1..=12))?);
    let m = match m {
        Some(Some(m)) => Some(m),
        Some(None) => return None,
        None => None,
    };
    let d = match parts.next() {
        Some(p) if p.len() == 2 => Some(num(p, 1..=days_in_month(y, m?))?),
        Some(_) => return None,
        None => None,
    };
    if parts.next().is_some() {
        return None;
    }
    let Some(time) = time else {
        return Some(match (m, d) {
            (None, _) => (
                epoch_ms(y, 1, 1, 0, 0, 0, 0),
                epoch_ms(y + 1, 1, 1, 0, 0, 0, 0) - 1,
            ),
            (Some(m), None) => {
                let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
                (
                    epoch_ms(y, m, 1, 0, 0, 0, 0),
                    epoch_ms(ny, nm, 1, 0, 0, 0, 0) - 1,
                )
            }
            (Some(m), Some(d)) => {
                let low = epoch_ms(y, m, d, 0, 0, 0, 0);
                (low, low + 86_400_000 - 1)
            }
        });
    };
    let (m, d) = (m?, d?);
    // Split off the zone: Z, +hh:mm or -hh:mm.
    let (clock, offset_min) = if let Some(c) = time.strip_suffix('Z') {
        (c, 0)
    } else if let Some(i) = time.rfind(['+', '-']) {
        let (c, z) = time.split_at(i);
        let sign = if z.starts_with('-') { -1 } else { 1 };
        let (zh, zm) = z[1..].split_once(':')?;
        if zh.len() != 2 || zm.len() != 2 {
            return None;
        }
        (c, sign * (num(zh, 0..=14)? * 60 + num(zm, 0..=59)?))
    } else {
        (time, 0)
    };
    let mut hms = clock.split(':');
    let hh = num(hms.next().filter(|p| p.len() == 2)?, 0..=23)?;
    let mm = num(hms.next().filter(|p| p.len() == 2)?, 0..=59)?;
    let (ss, frac, precise) = match hms.next() {
        None => (0, 0, false),
        Some(sec) => {
            let (whole, frac) = sec.split_once('.').unwrap_or((sec, ""));
            if whole.len() != 2 {
                return None;
            }
            let ss = num(whole, 0..=60)?.min(59);
            if !frac.is_empty() && !frac.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let ms = frac
                .bytes()
                .chain(std::iter::repeat(b'0'))
                .take(3)
                .fold(0i64, |acc, b| acc * 10 + i64::from(b - b'0'));
            (ss, ms, !frac.is_empty())
        }
    };
    if hms.next().is_some() {
        return None;
    }
    let low = epoch_ms(y, m, d, hh, mm, ss, frac) - offset_min * 60_000;
    let width = if precise {
        1
    } else if clock.len() > 5 {
        1000
    } else {
        60_000
    };
    Some((low, low + width - 1))
}

/// `YYYY-MM-DDThh:mm:ss.sssZ` of an instant (for messages and links).
pub fn format_ms(ms: i64) -> String {
    crate::model::format_instant(ms)
}

#[cfg(test)]
mod tests {
    use super::range;

    #[test]
    fn partial_dates_cover_their_whole_period() {
        let (lo, hi) = range("2020").expect("year");
        assert_eq!(lo, 1_577_836_800_000);
        assert_eq!(hi, 1_609_459_200_000 - 1);
        assert_eq!(
            range("2020-02").map(|r| r.1 - r.0 + 1),
            Some(29 * 86_400_000)
        );
        assert_eq!(range("2021-02-03").map(|r| r.1 - r.0 + 1), Some(86_400_000));
        assert_eq!(
            range("2020-01-01T08:00:00+08:00"),
            Some((1_577_836_800_000, 1_577_836_800_999))
        );
        assert_eq!(
            range("2020-01-01T00:00:00.5Z"),
            Some((1_577_836_800_500, 1_577_836_800_500))
        );
        for bad in [
            "20",
            "2020-13",
            "2020-02-30",
            "2020-01-01T25:00",
            "x",
            "2020-1-01",
        ] {
            assert_eq!(range(bad), None, "{bad}");
        }
    }
}
