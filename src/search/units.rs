//! Quantities in canonical UCUM units, for search: the form in which a stored `5.5 g` and a
//! searched `5400 mg` are compared. The conversion itself is the FHIRPath engine's
//! ([`Quantity::canonical`]); this module decides when it applies and what a quantity without a
//! canonical form is compared by instead.

use super::plan::CanonicalQuantity;
use crate::fhirpath::Quantity;
use crate::terminology::ucum;
use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;
use std::str::FromStr;

/// The value and unit a quantity is compared by when a search names a UCUM unit.
#[derive(Debug, Clone, PartialEq)]
pub struct Canonical {
    pub value: f64,
    pub code: String,
}

/// A decimal as written in JSON or a query (`5.5`, `1e3`).
fn decimal(number: &str) -> Option<Decimal> {
    Decimal::from_str(number)
        .or_else(|_| Decimal::from_scientific(number))
        .ok()
}

/// The canonical form of `value` in `unit`, when the unit has one.
fn convert(value: Decimal, unit: &str) -> Option<Canonical> {
    let q = Quantity {
        value,
        unit: unit.to_string(),
    }
    .canonical()?;
    Some(Canonical {
        value: q.value.to_f64()?,
        code: q.unit,
    })
}

/// What an index row of a stored quantity is compared by under a UCUM search: its value in
/// canonical units when it is a UCUM quantity whose unit has a canonical form, otherwise its own
/// value and code, so that a search naming that same unit still finds it. The unit text stands in
/// for a missing code, as it does for a search by code.
pub fn of_stored(
    number: &str,
    value: f64,
    system: Option<&str>,
    code: Option<&str>,
    unit: Option<&str>,
) -> Canonical {
    let own = Canonical {
        value,
        code: code.or(unit).unwrap_or("").to_string(),
    };
    if system != Some(ucum::SYSTEM) || own.code.is_empty() {
        return own;
    }
    decimal(number)
        .and_then(|d| convert(d, &own.code))
        .unwrap_or(own)
}

/// A searched `number|system|code` in canonical units, its bounds scaled like the value. `None`
/// when the search does not name a UCUM unit, which is then matched by code as written. A UCUM
/// unit without a canonical form is its own code, unscaled, as stored rows of it are.
pub fn of_search(
    number: &str,
    (value, low, high): (f64, f64, f64),
    system: Option<&str>,
    code: Option<&str>,
) -> Option<CanonicalQuantity> {
    let code = code?;
    if system != Some(ucum::SYSTEM) {
        return None;
    }
    let own = CanonicalQuantity {
        value,
        low,
        high,
        code: code.to_string(),
    };
    let Some(c) = decimal(number).and_then(|d| convert(d, code)) else {
        return Some(own);
    };
    // The bounds the value's precision (or `ap`) implies, converted as the value is: by the
    // unit's factor, and its offset for a temperature (`Cel` to `K` adds 273.15).
    let offset = convert(Decimal::ZERO, code).map_or(0.0, |zero| zero.value);
    let factor = convert(Decimal::ONE, code).map_or(1.0, |one| one.value - offset);
    Some(CanonicalQuantity {
        value: c.value,
        low: low * factor + offset,
        high: high * factor + offset,
        code: c.code,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_ucum_quantities_are_canonical_others_keep_their_own_code() {
        let u = Some(ucum::SYSTEM);
        assert_eq!(
            of_stored("5.5", 5.5, u, Some("g"), None),
            Canonical {
                value: 5.5,
                code: "g".into()
            }
        );
        assert_eq!(of_stored("5500", 5500.0, u, None, Some("mg")).value, 5.5);
        assert_eq!(
            of_stored("3", 3.0, u, Some("[iU]/L"), Some("IU/L")),
            Canonical {
                value: 3.0,
                code: "[iU]/L".into()
            }
        );
        // Not UCUM: `mg` of some other system is not converted.
        assert_eq!(
            of_stored("5500", 5500.0, Some("urn:units"), Some("mg"), None).value,
            5500.0
        );
    }

    #[test]
    fn searched_bounds_scale_with_the_value() {
        let c = of_search(
            "5400",
            (5400.0, 5399.5, 5400.5),
            Some(ucum::SYSTEM),
            Some("mg"),
        )
        .unwrap();
        assert_eq!((c.value, c.code.as_str()), (5.4, "g"));
        assert!((c.low - 5.3995).abs() < 1e-12 && (c.high - 5.4005).abs() < 1e-12);
        assert_eq!(of_search("1", (1.0, 0.5, 1.5), None, Some("mg")), None);
    }

    #[test]
    fn temperatures_compare_in_kelvin_with_their_bounds_shifted_and_scaled() {
        let u = Some(ucum::SYSTEM);
        let stored = of_stored("98.6", 98.6, u, Some("[degF]"), None);
        assert_eq!(stored.code, "K");
        assert!((stored.value - 310.15).abs() < 1e-9, "{stored:?}");
        let c = of_search("37", (37.0, 36.5, 37.5), u, Some("Cel")).unwrap();
        assert_eq!(c.code, "K");
        assert!((c.value - 310.15).abs() < 1e-9);
        assert!(
            (c.low - 309.65).abs() < 1e-9 && (c.high - 310.65).abs() < 1e-9,
            "{c:?}"
        );
        // A Fahrenheit degree is 5/9 of a kelvin: 98.6 ± 0.05 °F is 310.15 ± 0.0278 K.
        let f = of_search("98.6", (98.6, 98.55, 98.65), u, Some("[degF]")).unwrap();
        assert!((f.high - f.low - 0.1 * 5.0 / 9.0).abs() < 1e-9, "{f:?}");
    }
}
