//! The values FHIRPath collections hold: System primitives computed by the engine, and nodes of the
//! resource's JSON tree annotated with their FHIR type.

use super::datetime::{Temporal, TemporalKind};
use super::quantity::Quantity;
use rust_decimal::Decimal;
use serde_json::Value as Json;
use std::borrow::Cow;
use std::cmp::Ordering;
use std::str::FromStr;

/// An element of the resource tree: the JSON value (absent when only `_name` exists), the `_name`
/// sibling carrying a primitive's `id`/`extension`, and the FHIR type when known.
#[derive(Debug, Clone, Copy)]
pub struct Node<'a> {
    pub json: Option<&'a Json>,
    pub ext: Option<&'a Json>,
    /// FHIR type code (`Patient`, `HumanName`, `date`).
    pub ty: Option<&'a str>,
    /// Where the children of this node are defined in the core definitions.
    pub path: Option<&'a str>,
}

/// One item of a FHIRPath collection.
#[derive(Debug, Clone)]
pub enum Value<'a> {
    Boolean(bool),
    Integer(i64),
    Long(i64),
    Decimal(Decimal),
    String(Cow<'a, str>),
    /// Date, DateTime or Time, told apart by [`Temporal::kind`].
    Temporal(Temporal),
    Quantity(Quantity),
    Node(Node<'a>),
    /// The result of `type()`: a namespace (`System`, `FHIR`) and a type name.
    TypeInfo {
        namespace: &'static str,
        name: Cow<'a, str>,
    },
}

/// A FHIRPath collection.
pub type Collection<'a> = Vec<Value<'a>>;

/// Parses a JSON number's text as a decimal (exponent notation included).
pub fn parse_decimal(text: &str) -> Option<Decimal> {
    Decimal::from_str(text)
        .ok()
        .or_else(|| Decimal::from_scientific(text).ok())
}

/// Types whose JSON value is a FHIR primitive and their System equivalents.
pub fn system_type_of_fhir_primitive(ty: &str) -> Option<&'static str> {
    Some(match ty {
        "boolean" => "Boolean",
        "integer" | "positiveInt" | "unsignedInt" => "Integer",
        "integer64" => "Long",
        "decimal" => "Decimal",
        "date" => "Date",
        "dateTime" | "instant" => "DateTime",
        "time" => "Time",
        "string" | "code" | "id" | "uri" | "url" | "canonical" | "oid" | "uuid" | "markdown"
        | "base64Binary" | "xhtml" => "String",
        _ => return None,
    })
}

/// True for the FHIR types that are (specialisations of) Quantity.
pub fn is_quantity_type(ty: &str) -> bool {
    matches!(
        ty,
        "Quantity" | "Age" | "Distance" | "Duration" | "Count" | "SimpleQuantity" | "MoneyQuantity"
    )
}

impl<'a> Node<'a> {
    /// A node without type information.
    pub fn untyped(json: &'a Json) -> Node<'a> {
        Node {
            json: Some(json),
            ext: None,
            ty: None,
            path: None,
        }
    }

    /// The System value of a primitive node, `None` for objects and for primitives without a value.
    pub fn to_system(&self) -> Option<Value<'a>> {
        let json = self.json?;
        let sys = self.ty.and_then(system_type_of_fhir_primitive);
        match json {
            Json::Bool(b) => Some(Value::Boolean(*b)),
            Json::Number(n) => {
                let text = n.as_str();
                match sys {
                    Some("Decimal") => parse_decimal(text).map(Value::Decimal),
                    Some("Long") => text.parse().ok().map(Value::Long),
                    Some(_) => text.parse().ok().map(Value::Integer),
                    None => match text.parse::<i64>() {
                        Ok(i) => Some(Value::Integer(i)),
                        Err(_) => parse_decimal(text).map(Value::Decimal),
                    },
                }
            }
            Json::String(s) => match sys {
                Some("Date") => Temporal::parse_date_time(s)
                    .map(Value::Temporal)
                    .or_else(|| Some(Value::String(Cow::Borrowed(s)))),
                // A FHIR dateTime stays a DateTime even when only its date is known.
                Some("DateTime") => Temporal::parse_date_time(s)
                    .map(|mut t| {
                        t.kind = TemporalKind::DateTime;
                        Value::Temporal(t)
                    })
                    .or_else(|| Some(Value::String(Cow::Borrowed(s)))),
                Some("Time") => Temporal::parse_time(s)
                    .map(Value::Temporal)
                    .or_else(|| Some(Value::String(Cow::Borrowed(s)))),
                Some("Decimal") => parse_decimal(s).map(Value::Decimal),
                Some("Integer") => s.parse().ok().map(Value::Integer),
                Some("Long") => s.parse().ok().map(Value::Long),
                _ => Some(Value::String(Cow::Borrowed(s))),
            },
            _ => None,
        }
    }

    /// A FHIR Quantity (or specialisation) node as a System.Quantity.
    pub fn to_quantity(&self) -> Option<Quantity> {
        let obj = self.json?.as_object()?;
        if let Some(ty) = self.ty
            && !is_quantity_type(ty)
        {
            return None;
        }
        let value = match obj.get("value")? {
            Json::Number(n) => parse_decimal(n.as_str())?,
            _ => return None,
        };
        let unit = obj
            .get("code")
            .and_then(Json::as_str)
            .filter(|_| {
                obj.get("system")
                    .and_then(Json::as_str)
                    .is_none_or(|s| s == "http://unitsofmeasure.org")
            })
            .or_else(|| obj.get("unit").and_then(Json::as_str))
            .unwrap_or("1");
        Some(Quantity {
            value,
            unit: unit.to_string(),
        })
    }
}

impl<'a> Value<'a> {
    /// The value with primitive nodes replaced by their System values.
    pub fn system(&self) -> Value<'a> {
        match self {
            Value::Node(n) => n.to_system().unwrap_or_else(|| self.clone()),
            v => v.clone(),
        }
    }

    /// The System or FHIR type name, for messages and `type()`.
    pub fn type_name(&self) -> &str {
        match self {
            Value::Boolean(_) => "Boolean",
            Value::Integer(_) => "Integer",
            Value::Long(_) => "Long",
            Value::Decimal(_) => "Decimal",
            Value::String(_) => "String",
            Value::Temporal(t) => t.type_name(),
            Value::Quantity(_) => "Quantity",
            Value::TypeInfo { .. } => "TypeInfo",
            Value::Node(n) => n.ty.unwrap_or(match n.json {
                Some(Json::Object(_)) => "Element",
                Some(Json::Bool(_)) => "boolean",
                Some(Json::Number(_)) => "decimal",
                _ => "string",
            }),
        }
    }

    /// The string content when this is (or holds) a string.
    pub fn as_str(&self) -> Option<Cow<'_, str>> {
        match self {
            Value::String(s) => Some(Cow::Borrowed(s.as_ref())),
            // Borrowed from the resource when the node's text is the value, as it usually is.
            Value::Node(n) => match n.to_system()? {
                Value::String(s) => Some(s),
                _ => None,
            },
            _ => None,
        }
    }

    /// The value as a JSON value for output (`huitong fhirpath` and the suite runner).
    pub fn to_json(&self) -> Json {
        match self {
            Value::Boolean(b) => Json::Bool(*b),
            Value::Integer(i) | Value::Long(i) => Json::from(*i),
            Value::Decimal(d) => serde_json::from_str(&d.to_string()).unwrap_or(Json::Null),
            Value::String(s) => Json::String(s.to_string()),
            Value::Temporal(t) => Json::String(t.to_string()),
            Value::Quantity(q) => {
                let mut m = serde_json::Map::new();
                m.insert(
                    "value".into(),
                    serde_json::from_str(&q.value.to_string()).unwrap_or(Json::Null),
                );
                m.insert("code".into(), Json::String(q.unit.clone()));
                Json::Object(m)
            }
            Value::Node(n) => n.json.cloned().unwrap_or(Json::Null),
            Value::TypeInfo { namespace, name } => {
                serde_json::json!({"namespace": namespace, "name": name})
            }
        }
    }
}

/// The FHIRPath string form of a value (`toString()`), `None` for complex values.
pub fn to_string_value(v: &Value) -> Option<String> {
    match v.system() {
        Value::Boolean(b) => Some(b.to_string()),
        Value::Integer(i) | Value::Long(i) => Some(i.to_string()),
        Value::Decimal(d) => Some(d.to_string()),
        Value::String(s) => Some(s.into_owned()),
        Value::Temporal(t) => Some(t.to_string()),
        Value::Quantity(q) => Some(q.display()),
        Value::Node(n) => n.to_quantity().map(|q| q.display()),
        Value::TypeInfo { .. } => None,
    }
}

fn as_decimal(v: &Value) -> Option<Decimal> {
    match v {
        Value::Integer(i) | Value::Long(i) => Some(Decimal::from(*i)),
        Value::Decimal(d) => Some(*d),
        _ => None,
    }
}

/// A quantity view of a value: System.Quantity, a FHIR Quantity node.
pub fn as_quantity(v: &Value) -> Option<Quantity> {
    match v {
        Value::Quantity(q) => Some(q.clone()),
        Value::Node(n) => n.to_quantity(),
        _ => None,
    }
}

/// A hash that items equal under `=` share, so collections can be de-duplicated in linear time
/// (`|`, `distinct()`, `isDistinct()`, `intersect()`); unequal items rarely collide, and collisions
/// are settled with [`equals`].
pub fn equality_hash(v: &Value) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = fast_hasher();
    match v.system() {
        Value::Boolean(b) => (0u8, b).hash(&mut h),
        Value::Integer(i) | Value::Long(i) => (1u8, Decimal::from(i).normalize()).hash(&mut h),
        Value::Decimal(d) => (1u8, d.normalize()).hash(&mut h),
        Value::String(s) => (2u8, s.as_ref()).hash(&mut h),
        // Equal dates may differ in their fields (timezones) and equal quantities in their units:
        // such items share one bucket per kind.
        Value::Temporal(_) => 3u8.hash(&mut h),
        Value::Quantity(_) => 4u8.hash(&mut h),
        Value::Node(n) => match n.to_quantity() {
            Some(_) => 4u8.hash(&mut h),
            None => {
                5u8.hash(&mut h);
                if let Some(j) = n.json {
                    h.write_u64(json_hash(j));
                }
            }
        },
        Value::TypeInfo { namespace, name } => (6u8, namespace, name.as_ref()).hash(&mut h),
    }
    h.finish()
}

/// The hasher behind [`equality_hash`]: it only buckets items within one evaluation (collisions
/// are settled with [`equals`], and bucket order is never observable), so speed matters more than
/// resistance to chosen collisions, and a fixed seed keeps results repeatable.
fn fast_hasher() -> foldhash::fast::FoldHasher<'static> {
    use std::hash::BuildHasher;
    foldhash::fast::FixedState::default().build_hasher()
}

/// A structural hash consistent with `json_equal` (numbers by value, objects in any key order).
fn json_hash(j: &Json) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = fast_hasher();
    match j {
        Json::Null => 0u8.hash(&mut h),
        Json::Bool(b) => (1u8, b).hash(&mut h),
        Json::Number(n) => match parse_decimal(n.as_str()) {
            Some(d) => (2u8, d.normalize()).hash(&mut h),
            None => (2u8, n.as_str()).hash(&mut h),
        },
        Json::String(s) => (3u8, s).hash(&mut h),
        Json::Array(a) => {
            4u8.hash(&mut h);
            for x in a {
                h.write_u64(json_hash(x));
            }
        }
        Json::Object(o) => {
            5u8.hash(&mut h);
            let mut acc = 0u64;
            for (k, v) in o {
                let mut e = fast_hasher();
                k.hash(&mut e);
                e.write_u64(json_hash(v));
                acc = acc.wrapping_add(e.finish());
            }
            h.write_u64(acc);
        }
    }
    h.finish()
}

/// The text of a value whose System form is a String, read without building that form: a
/// String, or a node whose JSON string is not a date, time or number type.
fn plain_string<'v>(v: &'v Value) -> Option<&'v str> {
    match v {
        Value::String(s) => Some(s),
        Value::Node(Node {
            json: Some(Json::String(s)),
            ty,
            ..
        }) => match ty.and_then(system_type_of_fhir_primitive) {
            None | Some("String" | "Boolean") => Some(s),
            Some(_) => None,
        },
        _ => None,
    }
}

/// `=` on two single items: `None` means empty (incomparable precisions or units).
pub fn equals(a: &Value, b: &Value) -> Option<bool> {
    // Strings are most of what is compared (`isDistinct()` over ids and paths, `reference = '#'`).
    if let (Some(x), Some(y)) = (plain_string(a), plain_string(b)) {
        return Some(x == y);
    }
    if let (Value::Node(x), Value::Node(y)) = (a, b) {
        let same = |p: Option<&Json>, q: Option<&Json>| match (p, q) {
            (Some(p), Some(q)) => std::ptr::eq(p, q),
            (None, None) => true,
            _ => false,
        };
        if x.json.is_some() && same(x.json, y.json) && same(x.ext, y.ext) {
            return Some(true);
        }
        if x.to_system().is_none() || y.to_system().is_none() {
            return Some(match (x.json, y.json) {
                (Some(p), Some(q)) => json_equal(p, q),
                _ => false,
            });
        }
    }
    let (a, b) = (a.system(), b.system());
    match (&a, &b) {
        (Value::String(x), Value::String(y)) => Some(x == y),
        (Value::Boolean(x), Value::Boolean(y)) => Some(x == y),
        (Value::Temporal(x), Value::Temporal(y)) => {
            if (x.kind == TemporalKind::Time) != (y.kind == TemporalKind::Time) {
                return Some(false);
            }
            x.compare(y).map(|o| o == Ordering::Equal)
        }
        (Value::Quantity(_) | Value::Node(_), _) | (_, Value::Quantity(_) | Value::Node(_)) => {
            match (as_quantity(&a), as_quantity(&b)) {
                (Some(x), Some(y)) => x.equals(&y),
                (None, None) => match (&a, &b) {
                    (Value::Node(x), Value::Node(y)) => Some(match (x.json, y.json) {
                        (Some(p), Some(q)) => json_equal(p, q),
                        _ => false,
                    }),
                    _ => Some(false),
                },
                _ => Some(false),
            }
        }
        _ => match (as_decimal(&a), as_decimal(&b)) {
            (Some(x), Some(y)) => Some(x == y),
            _ => Some(false),
        },
    }
}

fn json_equal(a: &Json, b: &Json) -> bool {
    match (a, b) {
        (Json::Number(x), Json::Number(y)) => {
            match (parse_decimal(x.as_str()), parse_decimal(y.as_str())) {
                (Some(p), Some(q)) => p == q,
                _ => x == y,
            }
        }
        (Json::Array(x), Json::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| json_equal(p, q))
        }
        (Json::Object(x), Json::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_equal(v, w)))
        }
        _ => a == b,
    }
}

fn normalise_ws(s: &str) -> String {
    s.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

/// `~` on two single items.
pub fn equivalent(a: &Value, b: &Value) -> bool {
    let (a, b) = (a.system(), b.system());
    match (&a, &b) {
        (Value::String(x), Value::String(y)) => normalise_ws(x) == normalise_ws(y),
        (Value::Boolean(x), Value::Boolean(y)) => x == y,
        (Value::Temporal(x), Value::Temporal(y)) => x.equivalent(y),
        (Value::Quantity(_) | Value::Node(_), _) | (_, Value::Quantity(_) | Value::Node(_)) => {
            match (as_quantity(&a), as_quantity(&b)) {
                (Some(x), Some(y)) => x.equivalent(&y),
                (None, None) => match (&a, &b) {
                    (Value::Node(x), Value::Node(y)) => match (x.json, y.json) {
                        (Some(p), Some(q)) => json_equivalent(p, q),
                        _ => false,
                    },
                    _ => false,
                },
                _ => false,
            }
        }
        _ => match (as_decimal(&a), as_decimal(&b)) {
            (Some(x), Some(y)) => {
                let scale = x.scale().min(y.scale());
                x.round_dp(scale) == y.round_dp(scale)
            }
            _ => false,
        },
    }
}

fn json_equivalent(a: &Json, b: &Json) -> bool {
    match (a, b) {
        (Json::String(x), Json::String(y)) => normalise_ws(x) == normalise_ws(y),
        (Json::Array(x), Json::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| json_equivalent(p, q))
        }
        (Json::Object(x), Json::Object(y)) => {
            let keys = |m: &serde_json::Map<String, Json>| m.keys().filter(|k| *k != "id").count();
            keys(x) == keys(y)
                && x.iter()
                    .filter(|(k, _)| *k != "id")
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_equivalent(v, w)))
        }
        _ => json_equal(a, b),
    }
}

/// Orders two single items for `<`, `>`, `sort()`; `Err` for incomparable types, `Ok(None)` when the
/// answer is unknown (precision).
pub fn compare(a: &Value, b: &Value) -> Result<Option<Ordering>, String> {
    let (a, b) = (a.system(), b.system());
    match (&a, &b) {
        (Value::String(x), Value::String(y)) => Ok(Some(x.cmp(y))),
        (Value::Temporal(x), Value::Temporal(y)) => {
            if (x.kind == TemporalKind::Time) != (y.kind == TemporalKind::Time) {
                return Err(format!(
                    "cannot compare {} with {}",
                    x.type_name(),
                    y.type_name()
                ));
            }
            Ok(x.compare(y))
        }
        _ => {
            if let (Some(x), Some(y)) = (as_decimal(&a), as_decimal(&b)) {
                return Ok(Some(x.cmp(&y)));
            }
            if let (Some(x), Some(y)) = (as_quantity(&a), as_quantity(&b)) {
                return Ok(x.compare(&y));
            }
            Err(format!(
                "cannot compare {} with {}",
                a.type_name(),
                b.type_name()
            ))
        }
    }
}
