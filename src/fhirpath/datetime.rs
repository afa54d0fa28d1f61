//! Partial dates, dateTimes and times with FHIRPath precision semantics: comparisons across
//! different precisions are unknown (empty), timezones are normalised to UTC before comparing, and
//! calendar arithmetic clamps the day to the month's length.

use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;
use std::cmp::Ordering;
use std::fmt;

/// Which of the three temporal System types a value is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TemporalKind {
    Date,
    DateTime,
    Time,
}

/// How much of a temporal value is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Precision {
    Year,
    Month,
    Day,
    Hour,
    Minute,
    Second,
    Millisecond,
}

/// A partial date, dateTime or time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Temporal {
    pub kind: TemporalKind,
    pub precision: Precision,
    pub year: i32,
    pub month: u8,
    pub day: u8,
    pub hour: u8,
    pub minute: u8,
    pub second: u8,
    pub millis: u16,
    /// Offset from UTC in minutes, when the value carries a timezone.
    pub tz: Option<i16>,
}

fn digits(s: &str, n: usize) -> Option<(u32, &str)> {
    if s.len() < n || !s.as_bytes()[..n].iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some((s[..n].parse().ok()?, &s[n..]))
}

fn days_in_month(year: i32, month: u8) -> u8 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        _ => 28,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

fn civil_from_days(z: i64) -> (i64, u8, u8) {
    let z = z + 719468;
    let era = if z >= 0 { z } else { z - 146096 } / 146097;
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u8;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

const MS_PER_DAY: i64 = 86_400_000;

impl Temporal {
    fn empty(kind: TemporalKind) -> Temporal {
        Temporal {
            kind,
            precision: Precision::Year,
            year: 1,
            month: 1,
            day: 1,
            hour: 0,
            minute: 0,
            second: 0,
            millis: 0,
            tz: None,
        }
    }

    /// Parses a FHIR `date`/`dateTime`/`instant` string, or a FHIRPath literal body after `@`
    /// (a trailing `T` makes a partial dateTime).
    pub fn parse_date_time(s: &str) -> Option<Temporal> {
        let mut t = Temporal::empty(TemporalKind::Date);
        let (y, mut rest) = digits(s, 4)?;
        t.year = y as i32;
        if let Some(r) = rest.strip_prefix('-') {
            let (m, r) = digits(r, 2)?;
            if !(1..=12).contains(&m) {
                return None;
            }
            t.month = m as u8;
            t.precision = Precision::Month;
            rest = r;
            if let Some(r) = rest.strip_prefix('-') {
                let (d, r) = digits(r, 2)?;
                if d < 1 || d > u32::from(days_in_month(t.year, t.month)) {
                    return None;
                }
                t.day = d as u8;
                t.precision = Precision::Day;
                rest = r;
            }
        }
        if let Some(r) = rest.strip_prefix('T') {
            t.kind = TemporalKind::DateTime;
            if r.is_empty() {
                return Some(t);
            }
            if t.precision != Precision::Day {
                return None;
            }
            let rest = t.parse_time_part(r)?;
            let rest = t.parse_tz(rest)?;
            return rest.is_empty().then_some(t);
        }
        if rest.is_empty() { Some(t) } else { None }
    }

    /// Parses a FHIR `time` string or a FHIRPath time literal body after `@T`.
    pub fn parse_time(s: &str) -> Option<Temporal> {
        let mut t = Temporal::empty(TemporalKind::Time);
        let rest = t.parse_time_part(s)?;
        rest.is_empty().then_some(t)
    }

    fn parse_time_part<'s>(&mut self, s: &'s str) -> Option<&'s str> {
        let (h, mut rest) = digits(s, 2)?;
        if h > 23 {
            return None;
        }
        self.hour = h as u8;
        self.precision = Precision::Hour;
        if let Some(r) = rest.strip_prefix(':') {
            let (m, r) = digits(r, 2)?;
            if m > 59 {
                return None;
            }
            self.minute = m as u8;
            self.precision = Precision::Minute;
            rest = r;
            if let Some(r) = rest.strip_prefix(':') {
                let (sec, r) = digits(r, 2)?;
                if sec > 59 {
                    return None;
                }
                self.second = sec as u8;
                self.precision = Precision::Second;
                rest = r;
                if let Some(r) = rest.strip_prefix('.') {
                    let n = r.bytes().take_while(u8::is_ascii_digit).count();
                    if n == 0 {
                        return None;
                    }
                    let frac = &r[..n.min(3)];
                    let mut ms: u32 = frac.parse().ok()?;
                    for _ in frac.len()..3 {
                        ms *= 10;
                    }
                    self.millis = ms as u16;
                    self.precision = Precision::Millisecond;
                    rest = &r[n..];
                }
            }
        }
        Some(rest)
    }

    fn parse_tz<'s>(&mut self, s: &'s str) -> Option<&'s str> {
        if let Some(r) = s.strip_prefix('Z') {
            self.tz = Some(0);
            return Some(r);
        }
        let sign = match s.as_bytes().first() {
            Some(b'+') => 1,
            Some(b'-') => -1,
            _ => return Some(s),
        };
        let (h, r) = digits(&s[1..], 2)?;
        let r = r.strip_prefix(':')?;
        let (m, r) = digits(r, 2)?;
        if h > 14 || m > 59 {
            return None;
        }
        self.tz = Some(sign * (h * 60 + m) as i16);
        Some(r)
    }

    /// Milliseconds since the epoch (UTC when a timezone is known; times count from midnight).
    fn epoch_ms(&self) -> i64 {
        let days = if self.kind == TemporalKind::Time {
            0
        } else {
            days_from_civil(
                i64::from(self.year),
                i64::from(self.month),
                i64::from(self.day),
            )
        };
        let ms = days * MS_PER_DAY
            + i64::from(self.hour) * 3_600_000
            + i64::from(self.minute) * 60_000
            + i64::from(self.second) * 1000
            + i64::from(self.millis);
        ms - i64::from(self.tz.unwrap_or(0)) * 60_000
    }

    fn with_epoch_ms(&self, ms: i64) -> Temporal {
        let local = ms + i64::from(self.tz.unwrap_or(0)) * 60_000;
        let days = local.div_euclid(MS_PER_DAY);
        let mut rem = local.rem_euclid(MS_PER_DAY);
        let mut t = *self;
        if t.kind != TemporalKind::Time {
            let (y, m, d) = civil_from_days(days);
            t.year = y as i32;
            t.month = m;
            t.day = d;
        }
        t.hour = (rem / 3_600_000) as u8;
        rem %= 3_600_000;
        t.minute = (rem / 60_000) as u8;
        rem %= 60_000;
        t.second = (rem / 1000) as u8;
        t.millis = (rem % 1000) as u16;
        t
    }

    /// The value in UTC when it carries a timezone and a time of day.
    fn normalised(&self) -> Temporal {
        match self.tz {
            Some(tz) if tz != 0 && self.precision >= Precision::Hour => {
                let mut utc = *self;
                utc.tz = Some(0);
                utc.with_epoch_ms(self.epoch_ms())
            }
            _ => *self,
        }
    }

    fn fields(&self) -> [i64; 6] {
        [
            i64::from(self.year),
            i64::from(self.month),
            i64::from(self.day),
            i64::from(self.hour),
            i64::from(self.minute),
            i64::from(self.second) * 1000 + i64::from(self.millis),
        ]
    }

    fn level(p: Precision) -> usize {
        match p {
            Precision::Year => 0,
            Precision::Month => 1,
            Precision::Day => 2,
            Precision::Hour => 3,
            Precision::Minute => 4,
            Precision::Second | Precision::Millisecond => 5,
        }
    }

    /// Orders two values; `None` when the answer is unknown (precisions differ where the known parts
    /// are equal) or the kinds are incomparable.
    pub fn compare(&self, other: &Temporal) -> Option<Ordering> {
        let time_a = self.kind == TemporalKind::Time;
        let time_b = other.kind == TemporalKind::Time;
        if time_a != time_b {
            return None;
        }
        // With a time of day, a value without a timezone cannot be placed against one with it.
        let timed = self.precision >= Precision::Hour && other.precision >= Precision::Hour;
        if timed && self.tz.is_some() != other.tz.is_some() {
            return None;
        }
        let (a, b) = (self.normalised(), other.normalised());
        let (fa, fb) = (a.fields(), b.fields());
        let first = if time_a { 3 } else { 0 };
        let (la, lb) = (Self::level(a.precision), Self::level(b.precision));
        for i in first..=la.min(lb) {
            match fa[i].cmp(&fb[i]) {
                Ordering::Equal => {}
                o => return Some(o),
            }
        }
        if la != lb {
            None
        } else {
            Some(Ordering::Equal)
        }
    }

    /// Equivalence (`~`): different precisions are simply not equivalent.
    pub fn equivalent(&self, other: &Temporal) -> bool {
        self.compare(other) == Some(Ordering::Equal)
    }

    /// Adds `value` of a calendar unit (`year`...`millisecond`), as `+`/`-` on dates do.
    pub fn add(&self, value: Decimal, unit: &str) -> Option<Temporal> {
        let unit = match unit {
            "year" | "years" => "year",
            "month" | "months" => "month",
            "week" | "weeks" | "wk" => "week",
            "day" | "days" | "d" => "day",
            "hour" | "hours" | "h" => "hour",
            "minute" | "minutes" | "min" => "minute",
            "second" | "seconds" | "s" => "second",
            "millisecond" | "milliseconds" | "ms" => "millisecond",
            _ => return None,
        };
        if self.kind == TemporalKind::Time && matches!(unit, "year" | "month" | "week" | "day") {
            return None;
        }
        if unit == "year" || unit == "month" {
            let n = value.trunc().to_i64()?;
            let months = if unit == "year" {
                n.checked_mul(12)?
            } else {
                n
            };
            let months = if self.precision == Precision::Year {
                months / 12 * 12
            } else {
                months
            };
            let total = i64::from(self.year) * 12 + i64::from(self.month) - 1 + months;
            let mut t = *self;
            t.year = i32::try_from(total.div_euclid(12)).ok()?;
            t.month = (total.rem_euclid(12) + 1) as u8;
            t.day = t.day.min(days_in_month(t.year, t.month));
            return (1..=9999).contains(&t.year).then_some(t);
        }
        let unit_ms: i64 = match unit {
            "week" => 7 * MS_PER_DAY,
            "day" => MS_PER_DAY,
            "hour" => 3_600_000,
            "minute" => 60_000,
            "second" => 1000,
            _ => 1,
        };
        // Fractions of a time-valued quantity are ignored: 7.7 days adds 7 days.
        let total = value.trunc().checked_mul(Decimal::from(unit_ms))?;
        let grain: i64 = match self.precision {
            Precision::Year => 365 * MS_PER_DAY,
            Precision::Month => 30 * MS_PER_DAY,
            Precision::Day => MS_PER_DAY,
            Precision::Hour => 3_600_000,
            Precision::Minute => 60_000,
            Precision::Second => 1000,
            Precision::Millisecond => 1,
        };
        let steps = (total / Decimal::from(grain)).trunc().to_i64()?;
        if matches!(self.precision, Precision::Year | Precision::Month) {
            let months = if self.precision == Precision::Year {
                steps * 12
            } else {
                steps
            };
            return self.add(Decimal::from(months), "month");
        }
        let delta = steps.checked_mul(grain)?;
        let mut t = self.with_epoch_ms(self.epoch_ms().checked_add(delta)?);
        if self.kind == TemporalKind::Time {
            t.year = self.year;
            t.month = self.month;
            t.day = self.day;
        }
        (1..=9999).contains(&t.year).then_some(t)
    }

    /// Truncates the value to a coarser precision (used by `toDate`).
    pub fn with_precision(&self, kind: TemporalKind, precision: Precision) -> Temporal {
        let mut t = *self;
        t.kind = kind;
        t.precision = precision.min(self.precision);
        if kind == TemporalKind::Date {
            t.tz = None;
        }
        t
    }

    /// The values' common known precision, for boundary functions.
    pub fn type_name(&self) -> &'static str {
        match self.kind {
            TemporalKind::Date => "Date",
            TemporalKind::DateTime => "DateTime",
            TemporalKind::Time => "Time",
        }
    }
}

impl fmt::Display for Temporal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = self.precision;
        if self.kind != TemporalKind::Time {
            write!(f, "{:04}", self.year)?;
            if p >= Precision::Month {
                write!(f, "-{:02}", self.month)?;
            }
            if p >= Precision::Day {
                write!(f, "-{:02}", self.day)?;
            }
            if self.kind == TemporalKind::Date {
                return Ok(());
            }
            if p < Precision::Hour {
                return Ok(());
            }
            f.write_str("T")?;
        }
        write!(f, "{:02}", self.hour)?;
        if p >= Precision::Minute {
            write!(f, ":{:02}", self.minute)?;
        }
        if p >= Precision::Second {
            write!(f, ":{:02}", self.second)?;
        }
        if p >= Precision::Millisecond {
            write!(f, ".{:03}", self.millis)?;
        }
        if self.kind == TemporalKind::DateTime {
            match self.tz {
                Some(0) => f.write_str("Z")?,
                Some(tz) => {
                    let sign = if tz < 0 { '-' } else { '+' };
                    let a = tz.unsigned_abs();
                    write!(f, "{sign}{:02}:{:02}", a / 60, a % 60)?;
                }
                None => {}
            }
        }
        Ok(())
    }
}

/// The current instant as a dateTime in UTC with millisecond precision.
pub fn now() -> Temporal {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    let mut t = Temporal::empty(TemporalKind::DateTime);
    t.precision = Precision::Millisecond;
    t.tz = Some(0);
    t.with_epoch_ms(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_partials() {
        for s in [
            "2012",
            "2012-04",
            "2012-04-15",
            "2012-04-15T10:00:00.000+10:00",
            "2012-04-15T10Z",
        ] {
            let t = Temporal::parse_date_time(s).expect(s);
            assert_eq!(t.to_string(), s);
        }
        assert!(Temporal::parse_date_time("2012-13").is_none());
        assert!(Temporal::parse_date_time("2012-02-30").is_none());
        assert_eq!(
            Temporal::parse_time("14:34:28.1").map(|t| t.millis),
            Some(100)
        );
    }

    #[test]
    fn comparison_with_precision() {
        let a = Temporal::parse_date_time("2012-04-15").unwrap();
        let b = Temporal::parse_date_time("2012-04").unwrap();
        let c = Temporal::parse_date_time("2012-05").unwrap();
        assert_eq!(a.compare(&b), None);
        assert_eq!(a.compare(&c), Some(Ordering::Less));
        let x = Temporal::parse_date_time("2017-11-05T01:30:00.0-04:00").unwrap();
        let y = Temporal::parse_date_time("2017-11-05T01:15:00.0-05:00").unwrap();
        assert_eq!(x.compare(&y), Some(Ordering::Less));
    }

    #[test]
    fn arithmetic_clamps_days() {
        let a = Temporal::parse_date_time("2012-01-31").unwrap();
        assert_eq!(
            a.add(Decimal::ONE, "month").unwrap().to_string(),
            "2012-02-29"
        );
        let t = Temporal::parse_time("23:00").unwrap();
        assert_eq!(
            t.add(Decimal::from(2), "hour").unwrap().to_string(),
            "01:00"
        );
    }
}
