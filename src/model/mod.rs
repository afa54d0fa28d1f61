//! Resources as JSON: parsing and the structural rules of the R4 JSON format.
//!
//! Resources stay `serde_json::Value` (with `preserve_order` and `arbitrary_precision`, so element
//! order and decimal text survive a round trip). [`parse_resource`] turns request bytes into a
//! resource, rejecting with precise issues: invalid UTF-8 or JSON, a non-object, a missing or
//! unknown `resourceType`, unknown elements, wrong JSON types, primitive values that break the
//! R4 lexical rules, `null`s, empty objects/arrays/strings, missing required elements, and nesting
//! beyond the limit. Every issue carries the FHIRPath of the offending node.
//!
//! The walk is one pass over the JSON guided by [`Definitions`]; profile validation is a later layer.

pub mod outcome;
pub mod primitives;

use crate::definitions::{ChildMatch, Definitions, StructureKind};
pub use outcome::{FhirError, Issue, Severity, operation_outcome};
use serde_json::{Map, Value};

/// Limits applied while parsing untrusted input.
#[derive(Debug, Clone, Copy)]
pub struct ParseLimits {
    /// Deepest nesting of JSON objects allowed (the JSON parser itself stops at 128 levels of
    /// objects and arrays together).
    pub max_depth: usize,
}

impl Default for ParseLimits {
    fn default() -> Self {
        ParseLimits { max_depth: 64 }
    }
}

/// Parses bytes into a resource and checks its structure. `expected_type`, when given, must equal
/// the body's `resourceType` (the type named in the URL).
pub fn parse_resource(bytes: &[u8], expected_type: Option<&str>, limits: ParseLimits) -> Result<Value, FhirError> {
    let value = parse_json(bytes)?;
    if let (Some(expected), Some(actual)) = (expected_type, value.get("resourceType").and_then(Value::as_str))
        && expected != actual
    {
        return Err(FhirError::new(
            400,
            "invalid",
            format!("resourceType '{actual}' does not match the type '{expected}' in the URL"),
        )
        .at("resourceType"));
    }
    let issues = check_resource(&value, Definitions::core(), limits);
    if issues.is_empty() { Ok(value) } else { Err(FhirError::invalid(issues)) }
}

/// Parses bytes as JSON, with UTF-8 and syntax errors located by byte offset or line and column.
pub fn parse_json(bytes: &[u8]) -> Result<Value, FhirError> {
    if let Err(e) = std::str::from_utf8(bytes) {
        return Err(FhirError::new(
            400,
            "structure",
            format!("body is not valid UTF-8 (invalid byte sequence at offset {})", e.valid_up_to()),
        ));
    }
    serde_json::from_slice(bytes).map_err(|e| {
        let what = if e.to_string().contains("recursion limit") {
            "JSON nesting is too deep".to_string()
        } else {
            format!("invalid JSON: {e}")
        };
        FhirError::new(400, "structure", what)
    })
}

/// Checks a resource already parsed as JSON; returns every issue found (empty when it conforms).
pub fn check_resource(value: &Value, defs: &Definitions, limits: ParseLimits) -> Vec<Issue> {
    let mut walk = Walk { defs, limits, issues: Vec::new() };
    walk.resource(value, "", 0);
    walk.issues
}

struct Walk<'d> {
    defs: &'d Definitions,
    limits: ParseLimits,
    issues: Vec<Issue>,
}

/// `prefix.name`, or `name` at the top.
fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() { name.to_string() } else { format!("{prefix}.{name}") }
}

impl Walk<'_> {
    fn issue(&mut self, code: &'static str, location: &str, msg: String) {
        self.issues.push(Issue::error(code, msg).at(location));
    }

    /// A resource at `location` (empty at the top; `Bundle.entry[0].resource` when nested).
    fn resource(&mut self, value: &Value, location: &str, depth: usize) {
        let Some(obj) = value.as_object() else {
            let at = if location.is_empty() { "$this" } else { location };
            self.issue("structure", at, format!("a resource must be a JSON object, found {}", json_kind(value)));
            return;
        };
        let rt = match obj.get("resourceType") {
            Some(Value::String(s)) => s.as_str(),
            Some(_) => {
                self.issue("structure", &join(location, "resourceType"), "resourceType must be a string".into());
                return;
            }
            None => {
                let at = if location.is_empty() { "$this" } else { location };
                self.issue("required", at, "resource has no resourceType".into());
                return;
            }
        };
        if !self.defs.is_resource_type(rt) {
            self.issue("not-supported", &join(location, "resourceType"), format!("unknown resourceType '{rt}'"));
            return;
        }
        // Locations inside a resource start with its type at the top, and continue the path when nested.
        let here = if location.is_empty() { rt.to_string() } else { location.to_string() };
        if let Some(Value::String(id)) = obj.get("id")
            && !primitives::is_id(id)
        {
            self.issue(
                "value",
                &join(&here, "id"),
                format!("id '{}' is not a valid id (1-64 of A-Z a-z 0-9 - .)", truncate(id)),
            );
        }
        self.object(obj, rt, &here, depth, true);
    }

    /// An object whose elements are defined under `def_path` (a type name or a backbone path).
    fn object(&mut self, obj: &Map<String, Value>, def_path: &str, location: &str, depth: usize, is_resource: bool) {
        if depth > self.limits.max_depth {
            self.issue(
                "too-costly",
                location,
                format!("nesting deeper than {} levels is not accepted", self.limits.max_depth),
            );
            return;
        }
        if obj.is_empty() {
            self.issue("structure", location, "empty objects are not allowed".into());
            return;
        }
        for (key, value) in obj {
            if is_resource && key == "resourceType" {
                continue;
            }
            if let Some(base) = key.strip_prefix('_') {
                self.primitive_extension(obj, def_path, base, value, location, depth);
                continue;
            }
            let at = join(location, key);
            let Some(m) = self.defs.child(def_path, key) else {
                self.issue("structure", &at, format!("unknown element '{key}' in {def_path}"));
                continue;
            };
            self.element(m, key, value, obj.get(&format!("_{key}")), &at, depth);
        }
        self.required(obj, def_path, location);
    }

    /// The value(s) of one element.
    fn element(&mut self, m: ChildMatch<'_>, key: &str, value: &Value, ext: Option<&Value>, at: &str, depth: usize) {
        let repeats = m.element.max != "1";
        match (value, repeats) {
            (Value::Array(items), true) => {
                if items.is_empty() {
                    self.issue("structure", at, format!("'{key}' is an empty array; omit the element instead"));
                }
                let ext_items = ext.and_then(Value::as_array);
                for (i, item) in items.iter().enumerate() {
                    let loc = format!("{at}[{i}]");
                    if item.is_null() {
                        // A null is a placeholder only where the `_key` array carries this item's id/extensions.
                        if !ext_items.and_then(|e| e.get(i)).is_some_and(|e| !e.is_null()) {
                            self.issue("structure", &loc, "null values are not allowed".into());
                        }
                        continue;
                    }
                    self.value(m, item, &loc, depth);
                }
            }
            (Value::Array(_), false) => {
                self.issue("structure", at, format!("'{key}' has at most one value and must not be an array"));
            }
            (_, true) => {
                self.issue("structure", at, format!("'{key}' repeats and must be an array"));
            }
            (Value::Null, false) => self.issue("structure", at, "null values are not allowed".into()),
            (_, false) => self.value(m, value, at, depth),
        }
    }

    /// One value of an element, dispatched on its type.
    fn value(&mut self, m: ChildMatch<'_>, value: &Value, at: &str, depth: usize) {
        let type_code = primitive_of_system_type(m.type_code).unwrap_or(m.type_code);
        if type_code == "Resource" {
            self.resource(value, at, depth + 1);
            return;
        }
        let kind = self.defs.structure(type_code).map(|s| s.kind);
        if kind == Some(StructureKind::PrimitiveType) {
            self.primitive(type_code, value, at);
            return;
        }
        match value {
            Value::Object(obj) => {
                let path = self.defs.children_path(m.element, m.type_code);
                self.object(obj, path, at, depth + 1, false);
            }
            other => self.issue(
                "structure",
                at,
                format!("expected an object ({}) but found {}", type_label(m.type_code), json_kind(other)),
            ),
        }
    }

    /// `_key`: the id/extensions of a primitive element (an object, or an array parallel to the values).
    fn primitive_extension(
        &mut self,
        obj: &Map<String, Value>,
        def_path: &str,
        base: &str,
        value: &Value,
        location: &str,
        depth: usize,
    ) {
        let at = join(location, base);
        let Some(m) = self.defs.child(def_path, base) else {
            self.issue("structure", &join(location, &format!("_{base}")), format!("unknown element '_{base}'"));
            return;
        };
        let is_primitive = primitive_of_system_type(m.type_code).is_some()
            || self.defs.structure(m.type_code).is_some_and(|s| s.kind == StructureKind::PrimitiveType);
        if !is_primitive {
            self.issue("structure", &at, format!("'_{base}' is only allowed on primitive elements"));
            return;
        }
        let check = |w: &mut Self, v: &Value, loc: &str| match v {
            Value::Object(o) => w.object(o, "Element", loc, depth + 1, false),
            other => w.issue("structure", loc, format!("'_{base}' must hold objects, found {}", json_kind(other))),
        };
        match value {
            Value::Array(items) => {
                let values = obj.get(base).and_then(Value::as_array);
                if values.is_some_and(|v| v.len() != items.len()) {
                    self.issue("structure", &at, format!("'{base}' and '_{base}' arrays differ in length"));
                }
                for (i, item) in items.iter().enumerate() {
                    if item.is_null() {
                        if values.and_then(|v| v.get(i)).is_none_or(Value::is_null) {
                            self.issue("structure", &format!("{at}[{i}]"), "null values are not allowed".into());
                        }
                        continue;
                    }
                    check(self, item, &format!("{at}[{i}]"));
                }
            }
            other => check(self, other, &at),
        }
    }

    /// A primitive value against its type's JSON type and lexical rule.
    fn primitive(&mut self, type_code: &str, value: &Value, at: &str) {
        use primitives as p;
        let problem = match (type_code, value) {
            ("boolean", Value::Bool(_)) => None,
            ("integer" | "positiveInt" | "unsignedInt", Value::Number(n)) => {
                let text = n.to_string();
                match text.parse::<i64>() {
                    Ok(i) if type_code == "integer" && i32::try_from(i).is_ok() => None,
                    Ok(i) if type_code == "positiveInt" && (1..=i64::from(i32::MAX)).contains(&i) => None,
                    Ok(i) if type_code == "unsignedInt" && (0..=i64::from(i32::MAX)).contains(&i) => None,
                    _ => Some(format!("{text} is not a valid {type_code}")),
                }
            }
            ("decimal", Value::Number(n)) => {
                let text = n.to_string();
                (!p::is_decimal(&text)).then(|| format!("{text} is not a valid decimal"))
            }
            ("boolean" | "integer" | "positiveInt" | "unsignedInt" | "decimal", other) => {
                Some(format!("{type_code} must be a JSON {}, found {}", json_type_of(type_code), json_kind(other)))
            }
            (_, Value::String(s)) => self.string_problem(type_code, s),
            (_, other) => Some(format!("{type_code} must be a JSON string, found {}", json_kind(other))),
        };
        if let Some(msg) = problem {
            self.issue("value", at, msg);
        }
    }

    fn string_problem(&self, type_code: &str, s: &str) -> Option<String> {
        use primitives as p;
        if s.is_empty() {
            return Some("empty strings are not allowed; omit the element instead".into());
        }
        if s.len() > p::MAX_STRING_BYTES {
            return Some(format!("string exceeds {} bytes", p::MAX_STRING_BYTES));
        }
        let ok = match type_code {
            "id" => p::is_id(s),
            "code" => p::is_code(s),
            "uri" | "url" | "canonical" => p::is_uri(s),
            "oid" => p::is_oid(s),
            "uuid" => p::is_uuid(s),
            "base64Binary" => p::is_base64(s),
            "date" => p::is_date(s),
            "dateTime" => p::is_date_time(s),
            "instant" => p::is_instant(s),
            "time" => p::is_time(s),
            // string, markdown, xhtml: any non-empty text (R4: `[ \r\n\t\S]+`).
            _ => true,
        };
        (!ok).then(|| format!("'{}' is not a valid {type_code}", truncate(s)))
    }

    /// Elements with `min >= 1` under `def_path` must be present (as value or `_value`).
    fn required(&mut self, obj: &Map<String, Value>, def_path: &str, location: &str) {
        let missing: Vec<String> = self
            .defs
            .children(def_path)
            .filter(|e| e.min >= 1 && e.slice_name.is_none())
            .filter_map(|e| {
                let name = e.path.rsplit('.').next().unwrap_or(&e.path);
                let present = match name.strip_suffix("[x]") {
                    Some(stem) => obj.keys().any(|k| {
                        let k = k.strip_prefix('_').unwrap_or(k);
                        k.strip_prefix(stem).is_some_and(|t| t.starts_with(|c: char| c.is_ascii_uppercase()))
                    }),
                    None => obj.contains_key(name) || obj.contains_key(&format!("_{name}")),
                };
                (!present).then(|| name.to_string())
            })
            .collect();
        for name in missing {
            let at = if location.is_empty() { name.clone() } else { join(location, &name) };
            self.issue("required", &at, format!("required element '{name}' is missing (min 1 in {def_path})"));
        }
    }
}

/// For `.id`/`Extension.url`-style elements typed with a FHIRPath System type, the FHIR primitive to check against.
fn primitive_of_system_type(code: &str) -> Option<&'static str> {
    Some(match code.strip_prefix("http://hl7.org/fhirpath/System.")? {
        "Boolean" => "boolean",
        "Integer" => "integer",
        "Decimal" => "decimal",
        "Date" => "date",
        "DateTime" => "dateTime",
        "Time" => "time",
        _ => "string",
    })
}

fn json_type_of(type_code: &str) -> &'static str {
    if type_code == "boolean" { "boolean" } else { "number" }
}

fn type_label(code: &str) -> &str {
    if code.is_empty() { "element" } else { code }
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Echoes of input in messages are cut short so an error cannot amplify a huge value.
fn truncate(s: &str) -> String {
    const MAX: usize = 64;
    if s.chars().count() <= MAX { s.to_string() } else { format!("{}...", s.chars().take(MAX).collect::<String>()) }
}

/// Formats milliseconds since the epoch as a FHIR `instant` in UTC with millisecond precision.
pub fn format_instant(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

/// Parses a FHIR `instant`/`dateTime` (or a date) into milliseconds since the epoch; partial dates
/// count from their first moment.
pub fn parse_instant_ms(s: &str) -> Option<i64> {
    use time::format_description::well_known::Rfc3339;
    if let Ok(t) = time::OffsetDateTime::parse(s, &Rfc3339) {
        return i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok();
    }
    if !primitives::is_date(s) {
        return None;
    }
    let mut parts = s.split('-').map(|p| p.parse::<u32>().ok());
    let year = i32::try_from(parts.next()??).ok()?;
    let month = time::Month::try_from(u8::try_from(parts.next().unwrap_or(Some(1))?).ok()?).ok()?;
    let day = u8::try_from(parts.next().unwrap_or(Some(1))?).ok()?;
    let date = time::Date::from_calendar_date(year, month, day).ok()?;
    Some(date.midnight().assume_utc().unix_timestamp() * 1000)
}
