//! Quantities with UCUM units: a small UCUM reader (prefixes, exponents, `.` and `/`) over the atoms
//! clinical data uses, temperature scales with offsets, and the FHIRPath calendar-duration keywords.

use rust_decimal::Decimal;
use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::str::FromStr;

/// A System.Quantity: a decimal value and a UCUM unit or a calendar keyword (`day`, `year`).
#[derive(Debug, Clone, PartialEq)]
pub struct Quantity {
    pub value: Decimal,
    pub unit: String,
}

/// A unit reduced to a factor over base units and the exponents of those base units.
#[derive(Debug, Clone, PartialEq)]
struct Reduced {
    factor: Decimal,
    dims: BTreeMap<String, i32>,
}

fn dec(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap_or(Decimal::ONE)
}

/// UCUM atoms this engine knows: (code, factor, base dimensions).
fn atom(code: &str) -> Option<(Decimal, &'static [(&'static str, i32)])> {
    const L: &[(&str, i32)] = &[("m", 1)];
    const M: &[(&str, i32)] = &[("g", 1)];
    const T: &[(&str, i32)] = &[("s", 1)];
    const V: &[(&str, i32)] = &[("m", 3)];
    const P: &[(&str, i32)] = &[("g", 1), ("m", -1), ("s", -2)];
    const N: &[(&str, i32)] = &[("mol", 1)];
    const ONE: &[(&str, i32)] = &[];
    Some(match code {
        "m" => (Decimal::ONE, L),
        "g" => (Decimal::ONE, M),
        "s" => (Decimal::ONE, T),
        "min" => (Decimal::from(60), T),
        "h" => (Decimal::from(3600), T),
        "d" => (Decimal::from(86_400), T),
        "wk" => (Decimal::from(604_800), T),
        "mo" => (Decimal::from(2_629_800), T),
        "a" => (Decimal::from(31_557_600), T),
        "L" | "l" => (dec("0.001"), V),
        "mol" => (Decimal::ONE, N),
        "Pa" => (Decimal::from(1000), P),
        "m[Hg]" => (Decimal::from(133_322_000), P),
        "m[H2O]" => (dec("9806650"), P),
        "bar" => (Decimal::from(100_000_000), P),
        "[in_i]" => (dec("0.0254"), L),
        "[ft_i]" => (dec("0.3048"), L),
        "[lb_av]" => (dec("453.59237"), M),
        "[oz_av]" => (dec("28.349523125"), M),
        "%" => (dec("0.01"), ONE),
        "1" => (Decimal::ONE, ONE),
        "K" => (Decimal::ONE, &[("K", 1)]),
        _ => return None,
    })
}

fn prefix(p: &str) -> Option<Decimal> {
    let e: i32 = match p {
        "Y" => 24,
        "Z" => 21,
        "E" => 18,
        "P" => 15,
        "T" => 12,
        "G" => 9,
        "M" => 6,
        "k" => 3,
        "h" => 2,
        "da" => 1,
        "d" => -1,
        "c" => -2,
        "m" => -3,
        "u" => -6,
        "n" => -9,
        "p" => -12,
        "f" => -15,
        _ => return None,
    };
    Some(pow10(e))
}

fn pow10(e: i32) -> Decimal {
    let mut d = Decimal::ONE;
    let ten = Decimal::from(10);
    for _ in 0..e.unsigned_abs().min(28) {
        d = if e > 0 {
            d.saturating_mul(ten)
        } else {
            d / ten
        };
    }
    d
}

/// Calendar keywords and their UCUM equivalents (`year` ~ `a` only for equivalence purposes).
fn calendar_to_ucum(unit: &str) -> Option<&'static str> {
    Some(match unit {
        "year" | "years" => "a",
        "month" | "months" => "mo",
        "week" | "weeks" => "wk",
        "day" | "days" => "d",
        "hour" | "hours" => "h",
        "minute" | "minutes" => "min",
        "second" | "seconds" => "s",
        "millisecond" | "milliseconds" => "ms",
        _ => return None,
    })
}

/// True for the FHIRPath calendar-duration keywords.
pub fn is_calendar_unit(unit: &str) -> bool {
    calendar_to_ucum(unit).is_some()
}

/// Normalises a calendar keyword to its singular form (`days` -> `day`).
pub fn singular_calendar(unit: &str) -> &str {
    unit.strip_suffix('s')
        .filter(|u| is_calendar_unit(u))
        .unwrap_or(unit)
}

fn reduce_term(term: &str) -> Option<Reduced> {
    if term.is_empty() {
        return None;
    }
    // `{annotation}` alone is unity; a trailing annotation is ignored.
    let term = match term.find('{') {
        Some(0) => {
            return term.ends_with('}').then(|| Reduced {
                factor: Decimal::ONE,
                dims: BTreeMap::new(),
            });
        }
        Some(i) => &term[..i],
        None => term,
    };
    if let Some(exp) = term
        .strip_prefix("10*")
        .or_else(|| term.strip_prefix("10^"))
    {
        let e: i32 = exp.parse().ok()?;
        return Some(Reduced {
            factor: pow10(e),
            dims: BTreeMap::new(),
        });
    }
    // Split a trailing exponent (`m2`, `s-1`), unless the whole term is a number.
    if term.bytes().all(|b| b.is_ascii_digit()) {
        let n: i64 = term.parse().ok()?;
        return Some(Reduced {
            factor: Decimal::from(n),
            dims: BTreeMap::new(),
        });
    }
    let cut = term
        .char_indices()
        .rev()
        .take_while(|(_, c)| c.is_ascii_digit() || *c == '-' || *c == '+')
        .last()
        .map(|(i, _)| i)
        .unwrap_or(term.len());
    let (base, exp) = if cut < term.len() && cut > 0 {
        (&term[..cut], term[cut..].parse::<i32>().ok()?)
    } else {
        (term, 1)
    };
    // No real unit has a power beyond 8; refusing larger ones keeps the arithmetic in range.
    if base.is_empty() || exp.unsigned_abs() > 8 {
        return None;
    }
    let (factor, dims) = match atom(base) {
        Some(a) => a,
        None => {
            let mut found = None;
            for plen in [1, 2] {
                if base.len() > plen
                    && base.is_char_boundary(plen)
                    && let (Some(p), Some((f, d))) = (prefix(&base[..plen]), atom(&base[plen..]))
                {
                    // A large prefix on a large atom ('Yd') leaves Decimal's range: no unit.
                    found = Some((p.checked_mul(f)?, d));
                    break;
                }
            }
            match found {
                Some(f) => f,
                // An atom we do not know: its own dimension, so only identical units compare.
                None => {
                    let mut dims = BTreeMap::new();
                    dims.insert(base.to_string(), exp);
                    return Some(Reduced {
                        factor: Decimal::ONE,
                        dims,
                    });
                }
            }
        }
    };
    let mut f = Decimal::ONE;
    for _ in 0..exp.unsigned_abs() {
        f = if exp > 0 {
            f.checked_mul(factor)?
        } else {
            f.checked_div(factor)?
        };
    }
    let mut out = BTreeMap::new();
    for (d, e) in dims {
        out.insert((*d).to_string(), e.checked_mul(exp)?);
    }
    Some(Reduced {
        factor: f,
        dims: out,
    })
}

fn reduce(unit: &str) -> Option<Reduced> {
    let unit = calendar_to_ucum(unit).unwrap_or(unit);
    let mut acc = Reduced {
        factor: Decimal::ONE,
        dims: BTreeMap::new(),
    };
    let mut divide = false;
    let mut term = String::new();
    let mut depth = 0;
    let apply = |acc: &mut Reduced, term: &str, divide: bool| -> Option<()> {
        let r = reduce_term(term)?;
        acc.factor = if divide {
            acc.factor.checked_div(r.factor)?
        } else {
            acc.factor.checked_mul(r.factor)?
        };
        for (d, e) in r.dims {
            let v = acc.dims.entry(d).or_insert(0);
            *v = v.checked_add(if divide { -e } else { e })?;
        }
        Some(())
    };
    let chars: Vec<char> = unit.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        match c {
            '[' | '{' => depth += 1,
            ']' | '}' => depth -= 1,
            _ => {}
        }
        if depth == 0 && (c == '.' || (c == '/' && i > 0)) {
            apply(&mut acc, &term, divide)?;
            term.clear();
            divide = c == '/';
        } else if depth == 0 && c == '/' {
            term.push('1');
            apply(&mut acc, &term, false)?;
            term.clear();
            divide = true;
        } else {
            term.push(c);
        }
    }
    apply(&mut acc, &term, divide)?;
    acc.dims.retain(|_, e| *e != 0);
    Some(acc)
}

/// The atoms every unit [`atom`] knows is reduced to.
const BASE_ATOMS: [&str; 5] = ["g", "m", "s", "mol", "K"];

/// The unit expression of reduced dimensions: `g.m-1.s-2`, `1` for none.
fn dims_unit(dims: &BTreeMap<String, i32>) -> String {
    let mut unit = String::new();
    for (d, e) in dims {
        if !unit.is_empty() {
            unit.push('.');
        }
        unit.push_str(d);
        if *e != 1 {
            unit.push_str(&e.to_string());
        }
    }
    if unit.is_empty() {
        unit.push('1');
    }
    unit
}

/// `None` for a unit that is not a temperature, or a value out of the decimal range.
fn temperature_to_kelvin(value: Decimal, unit: &str) -> Option<Decimal> {
    match unit {
        "Cel" => value.checked_add(dec("273.15")),
        "[degF]" => value
            .checked_sub(Decimal::from(32))?
            .checked_mul(Decimal::from(5))?
            .checked_div(Decimal::from(9))?
            .checked_add(dec("273.15")),
        "K" => Some(value),
        _ => None,
    }
}

impl Quantity {
    /// Converts to `unit` when the dimensions agree.
    pub fn convert_to(&self, unit: &str) -> Option<Quantity> {
        if self.unit == unit {
            return Some(self.clone());
        }
        if let (Some(k), Some(_)) = (
            temperature_to_kelvin(self.value, &self.unit),
            temperature_to_kelvin(Decimal::ZERO, unit),
        ) {
            let v = match unit {
                "Cel" => k.checked_sub(dec("273.15"))?,
                "[degF]" => k
                    .checked_sub(dec("273.15"))?
                    .checked_mul(Decimal::from(9))?
                    .checked_div(Decimal::from(5))?
                    .checked_add(Decimal::from(32))?,
                _ => k,
            };
            return Some(Quantity {
                value: v.normalize(),
                unit: unit.to_string(),
            });
        }
        let (a, b) = (reduce(&self.unit)?, reduce(unit)?);
        if a.dims != b.dims {
            return None;
        }
        let v = self.value.checked_mul(a.factor)?.checked_div(b.factor)?;
        Some(Quantity {
            value: v.normalize(),
            unit: unit.to_string(),
        })
    }

    /// Whether the two units can be compared at all (calendar years and months do not compare with
    /// UCUM `a` and `mo`).
    fn comparable_units(a: &str, b: &str) -> bool {
        let cal_a = matches!(a, "year" | "years" | "month" | "months");
        let cal_b = matches!(b, "year" | "years" | "month" | "months");
        if cal_a != cal_b {
            return false;
        }
        true
    }

    /// Orders two quantities after converting `other` to this unit; `None` when incomparable.
    pub fn compare(&self, other: &Quantity) -> Option<Ordering> {
        if !Self::comparable_units(&self.unit, &other.unit) {
            return None;
        }
        let o = other.convert_to(&self.unit)?;
        Some(self.value.cmp(&o.value))
    }

    /// Equality: `None` when the units are incomparable.
    pub fn equals(&self, other: &Quantity) -> Option<bool> {
        self.compare(other).map(|o| o == Ordering::Equal)
    }

    /// Equivalence: compared at the precision of the less precise value.
    pub fn equivalent(&self, other: &Quantity) -> bool {
        let o = match other.convert_to(&self.unit) {
            Some(o) => o,
            None => {
                let (Some(a), Some(b)) = (
                    calendar_to_ucum(&self.unit).or(Some(self.unit.as_str())),
                    calendar_to_ucum(&other.unit).or(Some(other.unit.as_str())),
                ) else {
                    return false;
                };
                match (Quantity {
                    value: other.value,
                    unit: b.to_string(),
                })
                .convert_to(a)
                {
                    Some(o) => o,
                    None => return false,
                }
            }
        };
        let scale = self.value.scale().min(other.value.scale());
        self.value.round_dp(scale) == o.value.round_dp(scale)
    }

    /// Multiplies or divides two quantities, combining their units.
    pub fn mul_div(&self, other: &Quantity, divide: bool) -> Option<Quantity> {
        // Keep the units as written where UCUM allows a plain combination.
        let simple = |u: &str| !u.is_empty() && !u.contains(['.', '/', '(', '{']);
        let (a, b) = (self.unit.as_str(), other.unit.as_str());
        let symbolic = match (divide, a, b) {
            (_, a, "1") => Some(a.to_string()),
            (false, "1", b) => Some(b.to_string()),
            (true, a, b) if a == b => Some("1".to_string()),
            (false, a, b) if a == b && simple(a) && !a.ends_with(|c: char| c.is_ascii_digit()) => {
                Some(format!("{a}2"))
            }
            (false, a, b) if simple(a) && simple(b) => Some(format!("{a}.{b}")),
            (true, a, b) if simple(b) && !a.contains('/') => Some(format!("{a}/{b}")),
            _ => None,
        };
        if let (Some(unit), false) = (symbolic, is_calendar_unit(a) || is_calendar_unit(b)) {
            let value = if divide {
                self.value.checked_div(other.value)?.normalize()
            } else {
                self.value.checked_mul(other.value)?
            };
            return Some(Quantity { value, unit });
        }
        let a = reduce(&self.unit)?;
        let b = reduce(&other.unit)?;
        let mut dims = a.dims.clone();
        for (d, e) in &b.dims {
            *dims.entry(d.clone()).or_insert(0) += if divide { -e } else { *e };
        }
        dims.retain(|_, e| *e != 0);
        let factor = if divide {
            a.factor.checked_div(b.factor)?
        } else {
            a.factor.checked_mul(b.factor)?
        };
        let raw = if divide {
            self.value.checked_div(other.value)?
        } else {
            self.value.checked_mul(other.value)?
        };
        let value = raw.checked_mul(factor)?;
        Some(Quantity {
            value,
            unit: dims_unit(&dims),
        })
    }

    /// This quantity in UCUM base units, the one form all quantities of a dimension share
    /// (`5400 mg` is `5.4 g`, `120 mm[Hg]` is `15998640 g.m-1.s-2`, `50 %` is `0.5 1`): what a
    /// search compares when it names a UCUM unit. A temperature on a scale with an offset is in
    /// kelvin (`37 Cel` and `98.6 [degF]` are `310.15 K`). `None` when the unit has no such form:
    /// an atom this engine does not know (it would only be its own dimension), a calendar keyword
    /// (not UCUM).
    pub fn canonical(&self) -> Option<Quantity> {
        if is_calendar_unit(&self.unit) {
            return None;
        }
        if let Some(k) = temperature_to_kelvin(self.value, &self.unit) {
            return Some(Quantity {
                value: k.normalize(),
                unit: "K".to_string(),
            });
        }
        let r = reduce(&self.unit)?;
        if !r.dims.keys().all(|d| BASE_ATOMS.contains(&d.as_str())) {
            return None;
        }
        Some(Quantity {
            value: self.value.checked_mul(r.factor)?.normalize(),
            unit: dims_unit(&r.dims),
        })
    }

    /// Adds or subtracts; the result carries this quantity's unit.
    pub fn add(&self, other: &Quantity, subtract: bool) -> Option<Quantity> {
        if !Self::comparable_units(&self.unit, &other.unit) {
            return None;
        }
        let o = other.convert_to(&self.unit)?;
        let value = if subtract {
            self.value.checked_sub(o.value)?
        } else {
            self.value.checked_add(o.value)?
        };
        Some(Quantity {
            value,
            unit: self.unit.clone(),
        })
    }

    /// Formats as FHIRPath does: `1 'wk'`, `1 week`.
    pub fn display(&self) -> String {
        if is_calendar_unit(&self.unit) {
            format!("{} {}", self.value, self.unit)
        } else {
            format!("{} '{}'", self.value, self.unit)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(v: &str, u: &str) -> Quantity {
        Quantity {
            value: dec(v),
            unit: u.to_string(),
        }
    }

    #[test]
    fn converts_common_units() {
        assert_eq!(q("4", "g").compare(&q("4000", "mg")), Some(Ordering::Equal));
        assert_eq!(q("1", "L").compare(&q("1000", "mL")), Some(Ordering::Equal));
        assert_eq!(q("7", "d").compare(&q("1", "wk")), Some(Ordering::Equal));
        assert_eq!(
            q("100", "Cel").convert_to("[degF]").map(|x| x.value),
            Some(dec("212"))
        );
        assert_eq!(
            q("1", "mm[Hg]")
                .convert_to("Pa")
                .map(|x| x.value.round_dp(3)),
            Some(dec("133.322"))
        );
        assert_eq!(q("1", "year").compare(&q("1", "a")), None);
        let area = q("2", "cm").mul_div(&q("2", "m"), false).unwrap();
        assert_eq!(area.unit, "cm.m");
        assert_eq!(area.compare(&q("0.04", "m2")), Some(Ordering::Equal));
        assert_eq!(
            q("6", "g")
                .mul_div(&q("2", "g"), true)
                .map(|x| (x.value, x.unit)),
            Some((dec("3"), "1".to_string()))
        );
    }

    #[test]
    fn canonical_form_is_shared_by_a_dimension_and_absent_without_one() {
        let c = |v: &str, u: &str| q(v, u).canonical().map(|x| (x.value, x.unit));
        assert_eq!(c("5400", "mg"), Some((dec("5.4"), "g".to_string())));
        assert_eq!(c("5.4", "g"), c("5400", "mg"));
        assert_eq!(
            c("120", "mm[Hg]"),
            Some((dec("15998640"), "g.m-1.s-2".to_string()))
        );
        assert_eq!(c("1", "mg/dL"), Some((dec("10"), "g.m-3".to_string())));
        assert_eq!(c("50", "%"), Some((dec("0.5"), "1".to_string())));
        assert_eq!(c("36.6", "Cel"), Some((dec("309.75"), "K".to_string())));
        assert_eq!(c("98.6", "[degF]"), c("37", "Cel"));
        assert_eq!(c("79228162514264337593543950335", "Cel"), None);
        assert_eq!(c("3", "[iU]/L"), None);
        assert_eq!(c("1", "year"), None);
    }

    #[test]
    fn units_beyond_decimal_range_are_incomparable_not_a_panic() {
        // Found by cargo-fuzz: yotta-days exceed Decimal's range.
        assert_eq!(q("98.6", "Yd").compare(&q("4", "d")), None);
        assert_eq!(q("1", "m2147483647").compare(&q("1", "m")), None);
        assert_eq!(q("1", "m8.m8").compare(&q("1", "m16")), None);
        assert_eq!(
            q("79228162514264337593543950335", "Cel").convert_to("[degF]"),
            None
        );
    }
}
