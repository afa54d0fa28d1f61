//! Resources as JSON: parsing and the structural rules of the R4 JSON format.
//!
//! Resources stay `serde_json::Value` (with `preserve_order` and `arbitrary_precision`, so element
//! order and decimal text survive a round trip). [`parse_resource`] turns request bytes into a
//! resource, rejecting with precise issues: invalid UTF-8 or JSON, a non-object, a missing or
//! unknown `resourceType`, unknown elements, wrong JSON types, primitive values that break the
//! R4 lexical rules, `null`s, empty objects/arrays/strings, and nesting beyond the limit. Every issue carries the FHIRPath of the offending node.
//!
//! The walk is one pass over the JSON guided by [`Definitions`]. Cardinality minimums, invariants and
//! bindings are profile validation, a later layer: the official examples themselves break some
//! minimums, and a parser that rejected them could not store what the specification publishes.

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
pub fn parse_resource(
    bytes: &[u8],
    expected_type: Option<&str>,
    limits: ParseLimits,
) -> Result<Value, FhirError> {
    let value = parse_json(bytes)?;
    if let (Some(expected), Some(actual)) = (
        expected_type,
        value.get("resourceType").and_then(Value::as_str),
    ) && expected != actual
    {
        return Err(FhirError::new(
            400,
            "invalid",
            format!("resourceType '{actual}' does not match the type '{expected}' in the URL"),
        )
        .at("resourceType"));
    }
    let issues = check_resource(&value, Definitions::core(), limits);
    if issues.is_empty() {
        Ok(value)
    } else {
        Err(FhirError::invalid(issues))
    }
}

/// Parses bytes as JSON, with UTF-8 and syntax errors located by byte offset or line and column.
pub fn parse_json(bytes: &[u8]) -> Result<Value, FhirError> {
    if let Err(e) = std::str::from_utf8(bytes) {
        return Err(FhirError::new(
            400,
            "structure",
            format!(
                "body is not valid UTF-8 (invalid byte sequence at offset {})",
                e.valid_up_to()
            ),
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
    let mut walk = Walk {
        defs,
        limits,
        issues: Vec::new(),
        path: Vec::new(),
    };
    walk.resource(value, 0);
    walk.issues
}

struct Walk<'d, 'v> {
    defs: &'d Definitions,
    limits: ParseLimits,
    issues: Vec<Issue>,
    /// Where the walk is, as borrowed segments; rendered into a FHIRPath only when an issue is raised,
    /// so a valid resource costs no location strings at all.
    path: Vec<Seg<'v>>,
}

/// One step of a location.
#[derive(Clone, Copy)]
enum Seg<'v> {
    Key(&'v str),
    Index(usize),
}

impl<'v> Walk<'_, 'v> {
    /// The FHIRPath of the current node (`$this` at the very top).
    fn here(&self) -> String {
        let mut out = String::new();
        for seg in &self.path {
            match seg {
                Seg::Key(k) if out.is_empty() => out.push_str(k),
                Seg::Key(k) => {
                    out.push('.');
                    out.push_str(k);
                }
                Seg::Index(i) => {
                    out.push('[');
                    out.push_str(&i.to_string());
                    out.push(']');
                }
            }
        }
        if out.is_empty() { "$this".into() } else { out }
    }

    fn issue(&mut self, code: &'static str, msg: String) {
        let at = self.here();
        self.issues.push(Issue::error(code, msg).at(at));
    }

    /// An issue one step below the current node.
    fn issue_below(&mut self, seg: Seg<'v>, code: &'static str, msg: String) {
        self.path.push(seg);
        self.issue(code, msg);
        self.path.pop();
    }

    /// A resource at the current node (the top, or `Bundle.entry[0].resource` when nested).
    fn resource(&mut self, value: &'v Value, depth: usize) {
        let Some(obj) = value.as_object() else {
            self.issue(
                "structure",
                format!(
                    "a resource must be a JSON object, found {}",
                    json_kind(value)
                ),
            );
            return;
        };
        let rt = match obj.get("resourceType") {
            Some(Value::String(s)) => s.as_str(),
            Some(_) => {
                return self.issue_below(
                    Seg::Key("resourceType"),
                    "structure",
                    "resourceType must be a string".into(),
                );
            }
            None => return self.issue("required", "resource has no resourceType".into()),
        };
        if !self.defs.is_resource_type(rt) {
            return self.issue_below(
                Seg::Key("resourceType"),
                "not-supported",
                format!("unknown resourceType '{rt}'"),
            );
        }
        // Locations inside a resource start with its type at the top, and continue the path when nested.
        let top = self.path.is_empty();
        if top {
            self.path.push(Seg::Key(rt));
        }
        if let Some(Value::String(id)) = obj.get("id")
            && !primitives::is_id(id)
        {
            self.issue_below(
                Seg::Key("id"),
                "value",
                format!(
                    "id '{}' is not a valid id (1-64 of A-Z a-z 0-9 - .)",
                    truncate(id)
                ),
            );
        }
        self.object(obj, rt, depth, true);
        if top {
            self.path.pop();
        }
    }

    /// An object whose elements are defined under `def_path` (a type name or a backbone path).
    fn object(
        &mut self,
        obj: &'v Map<String, Value>,
        def_path: &str,
        depth: usize,
        is_resource: bool,
    ) {
        if depth > self.limits.max_depth {
            let max = self.limits.max_depth;
            return self.issue(
                "too-costly",
                format!("nesting deeper than {max} levels is not accepted"),
            );
        }
        if obj.is_empty() {
            return self.issue("structure", "empty objects are not allowed".into());
        }
        for (key, value) in obj {
            if is_resource && key == "resourceType" {
                continue;
            }
            if let Some(base) = key.strip_prefix('_') {
                self.primitive_extension(obj, def_path, key, base, value, depth);
                continue;
            }
            self.path.push(Seg::Key(key));
            match self.defs.child(def_path, key) {
                Some(m) => self.element(m, obj, key, value, depth),
                None => self.issue(
                    "structure",
                    format!("unknown element '{key}' in {def_path}"),
                ),
            }
            self.path.pop();
        }
    }

    /// The value(s) of one element (the current node is the element).
    fn element(
        &mut self,
        m: ChildMatch<'_>,
        obj: &'v Map<String, Value>,
        key: &str,
        value: &'v Value,
        depth: usize,
    ) {
        let repeats = m.element.max != "1";
        match (value, repeats) {
            (Value::Array(items), true) => {
                if items.is_empty() {
                    self.issue(
                        "structure",
                        format!("'{key}' is an empty array; omit the element instead"),
                    );
                }
                for (i, item) in items.iter().enumerate() {
                    self.path.push(Seg::Index(i));
                    if item.is_null() {
                        // A null is a placeholder only where the `_key` array carries this item's id/extensions.
                        let ext = obj
                            .get(&format!("_{key}"))
                            .and_then(Value::as_array)
                            .and_then(|e| e.get(i));
                        if ext.is_none_or(Value::is_null) {
                            self.issue("structure", "null values are not allowed".into());
                        }
                    } else {
                        self.value(m, item, depth);
                    }
                    self.path.pop();
                }
            }
            (Value::Array(_), false) => {
                self.issue(
                    "structure",
                    format!("'{key}' has at most one value and must not be an array"),
                );
            }
            (_, true) => self.issue("structure", format!("'{key}' repeats and must be an array")),
            (Value::Null, false) => self.issue("structure", "null values are not allowed".into()),
            (_, false) => self.value(m, value, depth),
        }
    }

    /// One value of an element, dispatched on its type.
    fn value(&mut self, m: ChildMatch<'_>, value: &'v Value, depth: usize) {
        let type_code = fhir_type_of(m);
        if type_code == "Resource" {
            return self.resource(value, depth + 1);
        }
        let kind = self.defs.structure(type_code).map(|s| s.kind);
        if kind == Some(StructureKind::PrimitiveType) {
            return self.primitive(type_code, value);
        }
        match value {
            Value::Object(obj) => {
                let path = self.defs.children_path(m.element, m.type_code);
                self.object(obj, path, depth + 1, false);
            }
            other => self.issue(
                "structure",
                format!(
                    "expected an object ({}) but found {}",
                    type_label(m.type_code),
                    json_kind(other)
                ),
            ),
        }
    }

    /// `_key`: the id/extensions of a primitive element (an object, or an array parallel to the values).
    fn primitive_extension(
        &mut self,
        obj: &'v Map<String, Value>,
        def_path: &str,
        key: &'v str,
        base: &'v str,
        value: &'v Value,
        depth: usize,
    ) {
        let Some(m) = self.defs.child(def_path, base) else {
            return self.issue_below(
                Seg::Key(key),
                "structure",
                format!("unknown element '{key}'"),
            );
        };
        self.path.push(Seg::Key(base));
        let is_primitive = primitive_of_system_type(m.type_code).is_some()
            || self
                .defs
                .structure(m.type_code)
                .is_some_and(|s| s.kind == StructureKind::PrimitiveType);
        if !is_primitive {
            self.issue(
                "structure",
                format!("'{key}' is only allowed on primitive elements"),
            );
        } else if let Value::Array(items) = value {
            let values = obj.get(base).and_then(Value::as_array);
            if values.is_some_and(|v| v.len() != items.len()) {
                self.issue(
                    "structure",
                    format!("'{base}' and '{key}' arrays differ in length"),
                );
            }
            for (i, item) in items.iter().enumerate() {
                self.path.push(Seg::Index(i));
                if !item.is_null() {
                    self.primitive_element(key, item, depth);
                } else if values.and_then(|v| v.get(i)).is_none_or(Value::is_null) {
                    self.issue("structure", "null values are not allowed".into());
                }
                self.path.pop();
            }
        } else {
            self.primitive_element(key, value, depth);
        }
        self.path.pop();
    }

    /// One `_key` object: an `Element` (id and extensions).
    fn primitive_element(&mut self, key: &str, value: &'v Value, depth: usize) {
        match value {
            Value::Object(o) => self.object(o, "Element", depth + 1, false),
            other => self.issue(
                "structure",
                format!("'{key}' must hold objects, found {}", json_kind(other)),
            ),
        }
    }

    /// A primitive value against its type's JSON type and lexical rule.
    fn primitive(&mut self, type_code: &str, value: &Value) {
        use primitives as p;
        let problem = match (type_code, value) {
            ("boolean", Value::Bool(_)) => None,
            ("integer" | "positiveInt" | "unsignedInt", Value::Number(n)) => {
                let text = n.to_string();
                match text.parse::<i64>() {
                    Ok(i) if type_code == "integer" && i32::try_from(i).is_ok() => None,
                    Ok(i)
                        if type_code == "positiveInt" && (1..=i64::from(i32::MAX)).contains(&i) =>
                    {
                        None
                    }
                    Ok(i)
                        if type_code == "unsignedInt" && (0..=i64::from(i32::MAX)).contains(&i) =>
                    {
                        None
                    }
                    _ => Some(format!("{text} is not a valid {type_code}")),
                }
            }
            ("decimal", Value::Number(n)) => {
                let text = n.to_string();
                (!p::is_decimal(&text)).then(|| format!("{text} is not a valid decimal"))
            }
            ("boolean" | "integer" | "positiveInt" | "unsignedInt" | "decimal", other) => {
                Some(format!(
                    "{type_code} must be a JSON {}, found {}",
                    json_type_of(type_code),
                    json_kind(other)
                ))
            }
            (_, Value::String(s)) => string_problem(type_code, s),
            (_, other) => Some(format!(
                "{type_code} must be a JSON string, found {}",
                json_kind(other)
            )),
        };
        if let Some(msg) = problem {
            self.issue("value", msg);
        }
    }
}

/// What is wrong with a string-typed primitive value, if anything.
fn string_problem(type_code: &str, s: &str) -> Option<String> {
    use primitives as p;
    if s.is_empty() {
        return Some("empty strings are not allowed; omit the element instead".into());
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

/// The FHIR type to check a value against: for elements typed with a FHIRPath System type
/// (`Element.id`, `Extension.url`), the FHIR type the definitions record for them (`string`, `uri`).
fn fhir_type_of<'a>(m: ChildMatch<'a>) -> &'a str {
    if m.type_code.starts_with("http://hl7.org/fhirpath/System.") {
        let recorded = m.element.types.first().and_then(|t| t.fhir_type.as_deref());
        return recorded
            .or_else(|| primitive_of_system_type(m.type_code))
            .unwrap_or("string");
    }
    m.type_code
}

/// For elements typed with a FHIRPath System type and no recorded FHIR type, the closest FHIR primitive.
fn primitive_of_system_type(code: &str) -> Option<&'static str> {
    Some(
        match code.strip_prefix("http://hl7.org/fhirpath/System.")? {
            "Boolean" => "boolean",
            "Integer" => "integer",
            "Decimal" => "decimal",
            "Date" => "date",
            "DateTime" => "dateTime",
            "Time" => "time",
            _ => "string",
        },
    )
}

fn json_type_of(type_code: &str) -> &'static str {
    if type_code == "boolean" {
        "boolean"
    } else {
        "number"
    }
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
    if s.chars().count() <= MAX {
        s.to_string()
    } else {
        format!("{}...", s.chars().take(MAX).collect::<String>())
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The (location, code) pairs of the issues raised for a body.
    fn problems(body: &str) -> Vec<(String, &'static str)> {
        match parse_resource(body.as_bytes(), None, ParseLimits::default()) {
            Ok(_) => vec![],
            Err(e) => e
                .issues
                .into_iter()
                .map(|i| (i.expression.unwrap_or_default(), i.code))
                .collect(),
        }
    }

    fn one(body: &str) -> String {
        let p = problems(body);
        assert_eq!(p.len(), 1, "{body}: {p:?}");
        p[0].0.clone()
    }

    #[test]
    fn accepts_a_valid_patient_with_extensions_on_primitives() {
        let body = r#"{"resourceType":"Patient","id":"p1","active":true,"name":[{"family":"李","given":["小明",null],"_given":[null,{"extension":[{"url":"http://x","valueString":"y"}]}]}],
            "birthDate":"1990-01-01","_birthDate":{"id":"b"},"multipleBirthInteger":2,"contact":[{"name":{"text":"王"}}]}"#;
        assert_eq!(problems(body), vec![]);
    }

    #[test]
    fn rejects_non_resources() {
        assert_eq!(problems("[1]"), vec![("$this".to_string(), "structure")]);
        assert_eq!(
            problems("{\"id\":\"x\"}"),
            vec![("$this".to_string(), "required")]
        );
        assert_eq!(one(r#"{"resourceType":"Patent"}"#), "resourceType");
        assert_eq!(one(r#"{"resourceType":"DomainResource"}"#), "resourceType");
        assert_eq!(one(r#"{"resourceType":7}"#), "resourceType");
    }

    #[test]
    fn locates_each_structural_error() {
        assert_eq!(one(r#"{"resourceType":"Patient","foo":1}"#), "Patient.foo");
        assert_eq!(
            one(r#"{"resourceType":"Patient","name":[{"famly":"x"}]}"#),
            "Patient.name[0].famly"
        );
        assert_eq!(
            one(r#"{"resourceType":"Patient","active":"true"}"#),
            "Patient.active"
        );
        assert_eq!(
            one(r#"{"resourceType":"Patient","birthDate":"1990-13-01"}"#),
            "Patient.birthDate"
        );
        assert_eq!(
            one(r#"{"resourceType":"Patient","name":{"family":"x"}}"#),
            "Patient.name"
        );
        assert_eq!(
            one(r#"{"resourceType":"Patient","gender":["male"]}"#),
            "Patient.gender"
        );
        assert_eq!(
            one(r#"{"resourceType":"Patient","gender":null}"#),
            "Patient.gender"
        );
        assert_eq!(
            one(r#"{"resourceType":"Patient","name":[]}"#),
            "Patient.name"
        );
        assert_eq!(
            one(r#"{"resourceType":"Patient","name":[{}]}"#),
            "Patient.name[0]"
        );
        assert_eq!(
            one(r#"{"resourceType":"Patient","gender":""}"#),
            "Patient.gender"
        );
        assert_eq!(
            one(r#"{"resourceType":"Patient","name":[{"given":["a",null]}]}"#),
            "Patient.name[0].given[1]"
        );
        assert_eq!(
            one(r#"{"resourceType":"Patient","id":"a_b"}"#),
            "Patient.id"
        );
        assert_eq!(
            one(r#"{"resourceType":"Patient","multipleBirthInteger":1.5}"#),
            "Patient.multipleBirthInteger"
        );
        assert_eq!(
            one(r#"{"resourceType":"Patient","_name":{"id":"x"}}"#),
            "Patient.name"
        );
        assert_eq!(
            one(
                r#"{"resourceType":"Observation","status":"final","code":{"text":"x"},"valueQuantity":{"value":"1"}}"#
            ),
            "Observation.valueQuantity.value"
        );
        assert_eq!(
            one(
                r#"{"resourceType":"Observation","status":"final","code":{"text":"x"},"valueFoo":1}"#
            ),
            "Observation.valueFoo"
        );
    }

    #[test]
    fn checks_nested_resources_with_their_path() {
        let body = r#"{"resourceType":"Bundle","type":"transaction","entry":[{"resource":{"resourceType":"Patient","active":1}}]}"#;
        assert_eq!(one(body), "Bundle.entry[0].resource.active");
        let contained = r#"{"resourceType":"Patient","contained":[{"resourceType":"Nope"}]}"#;
        assert_eq!(one(contained), "Patient.contained[0].resourceType");
    }

    #[test]
    fn rejects_bad_bytes_and_depth() {
        let e = parse_resource(
            b"{\"resourceType\":\"Patient\",\"id\":\"\xff\"}",
            None,
            ParseLimits::default(),
        )
        .unwrap_err();
        assert!(
            e.issues[0]
                .diagnostics
                .contains("not valid UTF-8 (invalid byte sequence at offset 32)"),
            "{e}"
        );
        let e = parse_resource(b"{\"resourceType\":", None, ParseLimits::default()).unwrap_err();
        assert!(e.issues[0].diagnostics.starts_with("invalid JSON"), "{e}");
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        let e = parse_resource(deep.as_bytes(), None, ParseLimits::default()).unwrap_err();
        assert_eq!(e.issues[0].diagnostics, "JSON nesting is too deep");
        // Extension nesting is legal FHIR but bounded by the configured depth.
        let mut ext = String::from(r#"{"url":"http://x","valueString":"v"}"#);
        for _ in 0..10 {
            ext = format!(r#"{{"url":"http://x","extension":[{ext}]}}"#);
        }
        let body = format!(r#"{{"resourceType":"Patient","extension":[{ext}]}}"#);
        let e = parse_resource(body.as_bytes(), None, ParseLimits { max_depth: 5 }).unwrap_err();
        assert_eq!(e.issues[0].code, "too-costly");
        assert!(parse_resource(body.as_bytes(), None, ParseLimits::default()).is_ok());
    }

    #[test]
    fn url_type_must_match_body() {
        let e = parse_resource(
            br#"{"resourceType":"Patient"}"#,
            Some("Observation"),
            ParseLimits::default(),
        )
        .unwrap_err();
        assert_eq!(e.issues[0].expression.as_deref(), Some("resourceType"));
    }

    #[test]
    fn instants_format_and_parse() {
        assert_eq!(format_instant(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            format_instant(1_700_000_000_123),
            "2023-11-14T22:13:20.123Z"
        );
        assert_eq!(
            parse_instant_ms("2023-11-14T22:13:20.123Z"),
            Some(1_700_000_000_123)
        );
        assert_eq!(
            parse_instant_ms("2023-11-15T06:13:20.123+08:00"),
            Some(1_700_000_000_123)
        );
        assert_eq!(parse_instant_ms("1970-01-02"), Some(86_400_000));
        assert_eq!(parse_instant_ms("yesterday"), None);
    }
}
