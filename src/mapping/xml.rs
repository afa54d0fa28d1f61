//! The rule language for XML sources (CDA documents in `mappings/cda/`, HL7 v3 interactions in
//! `mappings/hl7v3/`): a resource rule selects elements with an XPath-like path and fills a FHIR
//! resource from fields `{ from = "XPATH", as = "V3 TYPE", fhir = "element.path" }`. FHIR paths
//! are checked against the R4 definitions when the files load ([`super::load::resolve_path`]), as
//! in the v2 maps; the HL7 v3 datatype maps (II, CD, TS, EN, AD, TEL, PQ, ...) are code here, as
//! the v2 ones are in [`super::datatypes`]: the standard fixes them.
//!
//! Invariant: a value a field selects is either placed or listed in [`Filled::unmapped`] with a
//! reason; a value that breaks a rule the file states (`required`, `systems`) or an identifier
//! root that is not an OID is an error naming the XML line.

use super::load::{FhirPath, Step, resolve_path};
use crate::xml::path::XPath;
use crate::xml::{attr, child, children, is, line, text, xsi_type};
use roxmltree::Node;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, HashMap};

/// An HL7 v3 datatype a field reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Datatype {
    /// Instance identifier -> Identifier (or its value).
    II,
    /// Coded value -> CodeableConcept, Coding, code (through a vocabulary), or string.
    CD,
    /// Point in time -> date, dateTime, instant, or Period.start.
    TS,
    /// Entity name -> HumanName or string.
    EN,
    /// Address -> Address or string.
    AD,
    /// Telecom -> ContactPoint.
    TEL,
    /// Text -> string, markdown, CodeableConcept.text, Annotation.text.
    ST,
    /// Physical quantity -> Quantity or decimal.
    PQ,
    /// Integer.
    INT,
    /// Boolean.
    BL,
    /// The observation `value` of any `xsi:type` -> `value[x]`.
    ANY,
}

impl Datatype {
    fn parse(s: &str) -> Option<Datatype> {
        Some(match s {
            "II" => Datatype::II,
            "CD" | "CE" | "CV" | "CS" | "CO" => Datatype::CD,
            "TS" => Datatype::TS,
            "EN" | "PN" | "ON" => Datatype::EN,
            "AD" => Datatype::AD,
            "TEL" => Datatype::TEL,
            "ST" | "ED" => Datatype::ST,
            "PQ" | "MO" => Datatype::PQ,
            "INT" => Datatype::INT,
            "BL" => Datatype::BL,
            "ANY" => Datatype::ANY,
            _ => return None,
        })
    }
}

/// A field as written in a file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldSpec {
    pub from: String,
    #[serde(rename = "as")]
    pub datatype: String,
    pub fhir: String,
    #[serde(default)]
    pub vocabulary: Option<String>,
    /// The code systems (OIDs) accepted for a CD, or identifier roots for an II.
    #[serde(default)]
    pub systems: Vec<String>,
    #[serde(default)]
    pub required: bool,
    /// The FHIR system of the codes a vocabulary gives, for a CodeableConcept or Coding target.
    #[serde(default)]
    pub system: Option<String>,
}

/// A checked field.
#[derive(Debug, Clone)]
pub struct Field {
    pub from: XPath,
    pub datatype: Datatype,
    pub target: FhirPath,
    /// `value[x]`: the key is chosen from the value.
    pub choice: bool,
    pub vocabulary: Option<String>,
    pub systems: Vec<String>,
    pub required: bool,
    pub system: Option<String>,
}

/// A resource rule as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceSpec {
    pub name: String,
    #[serde(rename = "type")]
    pub resource_type: String,
    /// Where the resource's element is, from the rule's context (the document or message root).
    #[serde(default = "dot")]
    pub at: String,
    /// How the id is derived: `identifier` (the first identifier), or `within` (the document /
    /// message and the element's position).
    #[serde(default = "within")]
    pub id: String,
    #[serde(default)]
    pub fields: Vec<FieldSpec>,
    /// JSON set when no field gave a value.
    #[serde(default)]
    pub defaults: toml::Table,
    /// FHIR element -> name of another rule's resource, set as a Reference.
    #[serde(default)]
    pub links: BTreeMap<String, String>,
    /// meta.profile to claim.
    #[serde(default)]
    pub profile: Option<String>,
    /// An error when the element is absent.
    #[serde(default)]
    pub required: bool,
    /// Free text the reviewer reads.
    #[serde(default)]
    pub note: Option<String>,
}

fn dot() -> String {
    ".".into()
}
fn within() -> String {
    "within".into()
}

/// A checked resource rule.
#[derive(Debug, Clone)]
pub struct ResourceRule {
    pub name: String,
    pub resource_type: String,
    pub at: XPath,
    pub id_from_identifier: bool,
    pub fields: Vec<Field>,
    pub defaults: Vec<(FhirPath, Value)>,
    pub links: Vec<(FhirPath, String)>,
    pub profile: Option<String>,
    pub required: bool,
}

/// Vocabularies shared by the files of one folder.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Vocabulary {
    /// Code-system OID -> FHIR system URL (absent: `urn:oid:OID`).
    #[serde(default, rename = "code-systems")]
    pub code_systems: HashMap<String, String>,
    /// Table name -> (source code -> FHIR code).
    #[serde(default)]
    pub tables: HashMap<String, HashMap<String, String>>,
}

impl Vocabulary {
    /// The FHIR system of a code-system OID.
    pub fn system(&self, oid: &str) -> String {
        self.code_systems
            .get(oid)
            .cloned()
            .unwrap_or_else(|| format!("urn:oid:{oid}"))
    }
}

/// Checks a field against the definitions.
pub fn check_field(resource: &str, f: &FieldSpec, vocab: &Vocabulary) -> Result<Field, String> {
    let from = XPath::parse(&f.from)?;
    let datatype = Datatype::parse(&f.datatype)
        .ok_or_else(|| format!("'{}' is not a known v3 datatype", f.datatype))?;
    let (target, choice) = match f.fhir.strip_suffix("[x]") {
        Some(base) => {
            // Check that the choice exists by one of its forms.
            let probe = format!("{base}String");
            let mut t = resolve_path(resource, &probe)
                .or_else(|_| resolve_path(resource, &format!("{base}CodeableConcept")))?;
            if let Some(last) = t.steps.last_mut() {
                last.key = base.rsplit('.').next().unwrap_or(base).to_string();
            }
            (t, true)
        }
        None => (resolve_path(resource, &f.fhir)?, false),
    };
    if let Some(v) = &f.vocabulary
        && !vocab.tables.contains_key(v)
    {
        return Err(format!("vocabulary '{v}' is not defined"));
    }
    if datatype == Datatype::ANY && !choice {
        return Err(format!("{}: as = \"ANY\" needs a value[x] target", f.fhir));
    }
    Ok(Field {
        from,
        datatype,
        target,
        choice,
        vocabulary: f.vocabulary.clone(),
        systems: f.systems.clone(),
        required: f.required,
        system: f.system.clone(),
    })
}

fn toml_to_json(v: &toml::Value) -> Value {
    match v {
        toml::Value::String(s) => Value::String(s.clone()),
        toml::Value::Integer(i) => json!(i),
        toml::Value::Float(f) => json!(f),
        toml::Value::Boolean(b) => json!(b),
        toml::Value::Datetime(d) => Value::String(d.to_string()),
        toml::Value::Array(a) => Value::Array(a.iter().map(toml_to_json).collect()),
        toml::Value::Table(t) => Value::Object(
            t.iter()
                .map(|(k, v)| (k.clone(), toml_to_json(v)))
                .collect(),
        ),
    }
}

/// Checks a resource rule.
pub fn check_resource(spec: &ResourceSpec, vocab: &Vocabulary) -> Result<ResourceRule, String> {
    let defs = crate::definitions::Definitions::core();
    if !defs.is_resource_type(&spec.resource_type) {
        return Err(format!(
            "'{}' is not an R4 resource type",
            spec.resource_type
        ));
    }
    let at = XPath::parse(&spec.at)?;
    let mut fields = Vec::new();
    for f in &spec.fields {
        fields.push(
            check_field(&spec.resource_type, f, vocab)
                .map_err(|e| format!("rule '{}', field {}: {e}", spec.name, f.from))?,
        );
    }
    let mut defaults = Vec::new();
    for (k, v) in &spec.defaults {
        let p = resolve_path(&spec.resource_type, k)
            .map_err(|e| format!("rule '{}', default: {e}", spec.name))?;
        defaults.push((p, toml_to_json(v)));
    }
    let mut links = Vec::new();
    for (k, v) in &spec.links {
        let p = resolve_path(&spec.resource_type, k)
            .map_err(|e| format!("rule '{}', link: {e}", spec.name))?;
        if p.leaf_type != "Reference" {
            return Err(format!(
                "rule '{}': link {k} is a {}, not a Reference",
                spec.name, p.leaf_type
            ));
        }
        links.push((p, v.clone()));
    }
    if spec.id != "identifier" && spec.id != "within" {
        return Err(format!(
            "rule '{}': id must be \"identifier\" or \"within\"",
            spec.name
        ));
    }
    Ok(ResourceRule {
        name: spec.name.clone(),
        resource_type: spec.resource_type.clone(),
        at,
        id_from_identifier: spec.id == "identifier",
        fields,
        defaults,
        links,
        profile: spec.profile.clone(),
        required: spec.required,
    })
}

/// A value no rule could place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotPlaced {
    /// `line 12 code/@code`.
    pub location: String,
    pub value: String,
    pub reason: String,
}

/// A resource filled from one element.
#[derive(Debug, Clone, Default)]
pub struct Filled {
    pub resource: Map<String, Value>,
    pub unmapped: Vec<NotPlaced>,
    /// How many values the fields placed (defaults not counted).
    pub placed: usize,
    /// Top-level elements only the rule's defaults filled: assumed, not stated by the message
    /// (a merge into a stored record does not let them contradict it, `ingest::merge`).
    pub assumed: std::collections::BTreeSet<String>,
}

/// An error a rule states, with its location.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}, {path}: {message}")]
pub struct RuleError {
    pub line: u32,
    pub path: String,
    pub message: String,
}

/// True for an ISO OID (`2.16.156.10011.1.3`).
pub fn is_oid(s: &str) -> bool {
    let mut parts = s.split('.');
    let first_ok = matches!(parts.next(), Some("0" | "1" | "2"));
    let mut n = 0;
    for p in parts {
        n += 1;
        if p.is_empty()
            || !p.bytes().all(|b| b.is_ascii_digit())
            || (p.len() > 1 && p.starts_with('0'))
        {
            return false;
        }
    }
    first_ok && n >= 1
}

/// UUID-shaped (8-4-4-4-12): senders' UUID roots are taken as they come, even with a stray
/// non-hex letter, since the root only has to be unique.
pub fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.bytes().enumerate().all(|(i, b)| {
            if matches!(i, 8 | 13 | 18 | 23) {
                b == b'-'
            } else {
                b.is_ascii_alphanumeric()
            }
        })
}

/// Every `root` and `codeSystem` attribute under `n` must be an OID (or a UUID root): the first
/// that is not, with its line.
pub fn check_oids(n: Node<'_, '_>) -> Result<(), RuleError> {
    for d in n.descendants().filter(Node::is_element) {
        for a in ["root", "codeSystem"] {
            if let Some(v) = attr(d, a)
                && !is_oid(v)
                && !(a == "root" && is_uuid(v))
            {
                return Err(RuleError {
                    line: line(d),
                    path: format!("{}/@{a}", d.tag_name().name()),
                    message: format!("'{v}' is not an OID"),
                });
            }
        }
    }
    Ok(())
}

/// A vocabulary's code as the target type: a code, or a Coding/CodeableConcept in `system`.
fn vocab_code(code: &str, leaf: &str, system: Option<&str>) -> Value {
    let coding = match system {
        Some(s) => json!({"system": s, "code": code}),
        None => json!({"code": code}),
    };
    match leaf {
        "CodeableConcept" => json!({"coding": [coding]}),
        "Coding" => coding,
        _ => json!(code),
    }
}

/// II -> Identifier. The root must be an OID (or UUID); `extension` is the value. Without an
/// extension the root itself identifies, as `urn:oid:` in `urn:ietf:rfc:3986`.
pub fn identifier(n: Node<'_, '_>, vocab: &Vocabulary) -> Result<Option<Value>, String> {
    let root = attr(n, "root");
    let ext = attr(n, "extension");
    let Some(root) = root else {
        return Ok(ext.map(|e| json!({"value": e})));
    };
    if !is_oid(root) && !is_uuid(root) {
        return Err(format!("identifier root '{root}' is not an OID"));
    }
    let _ = vocab;
    Ok(Some(match ext {
        Some(e) => json!({"system": format!("urn:oid:{root}"), "value": e}),
        None => {
            let v = if is_uuid(root) {
                format!("urn:uuid:{}", root.to_ascii_lowercase())
            } else {
                format!("urn:oid:{root}")
            };
            json!({"system": "urn:ietf:rfc:3986", "value": v})
        }
    }))
}

/// The display of a coded element: `displayName` attribute, a `<displayName value>` child (the
/// v3 message form), or `originalText`.
fn display(n: Node<'_, '_>) -> Option<String> {
    attr(n, "displayName")
        .map(str::to_string)
        .or_else(|| child(n, "displayName").and_then(|d| attr(d, "value").map(str::to_string)))
        .or_else(|| child(n, "originalText").and_then(text))
}

/// CD -> Coding (`None` when the element carries neither code nor display).
pub fn coding(n: Node<'_, '_>, vocab: &Vocabulary) -> Option<Map<String, Value>> {
    let mut c = Map::new();
    if let Some(cs) = attr(n, "codeSystem") {
        c.insert("system".into(), Value::String(vocab.system(cs)));
    }
    if let Some(code) = attr(n, "code") {
        c.insert("code".into(), Value::String(code.to_string()));
    }
    if let Some(d) = display(n) {
        c.insert("display".into(), Value::String(d));
    }
    (c.contains_key("code") || c.contains_key("display")).then_some(c)
}

/// CD -> CodeableConcept; a coding without a code keeps its display as `text`.
pub fn codeable(n: Node<'_, '_>, vocab: &Vocabulary) -> Option<Value> {
    let c = coding(n, vocab)?;
    if c.contains_key("code") {
        let mut cc = json!({"coding": [Value::Object(c.clone())]});
        if let Some(t) = child(n, "originalText").and_then(text) {
            cc["text"] = Value::String(t);
        }
        Some(cc)
    } else {
        Some(json!({"text": c.get("display").cloned().unwrap_or(Value::Null)}))
    }
}

/// TS -> FHIR date/dateTime, with the default offset for times without one.
pub fn timestamp(n: Node<'_, '_>, leaf: &str) -> Result<Option<Value>, String> {
    let v = attr(n, "value")
        .map(str::to_string)
        .or_else(|| child(n, "low").and_then(|l| attr(l, "value").map(str::to_string)))
        .or_else(|| child(n, "any").and_then(|l| attr(l, "value").map(str::to_string)))
        .or_else(|| {
            text(n).filter(|t| t.bytes().all(|b| b.is_ascii_digit() || b"+-.".contains(&b)))
        });
    let Some(v) = v else { return Ok(None) };
    ts_value(&v, leaf)
}

/// A TS string as the FHIR type `leaf`.
pub fn ts_value(v: &str, leaf: &str) -> Result<Option<Value>, String> {
    use super::datatypes::{Precision, date_time};
    let want = match leaf {
        "date" => Precision::Date,
        "instant" => Precision::Instant,
        _ => Precision::DateTime,
    };
    // A v3 time without seconds or with a fraction is fine; trailing garbage is not.
    date_time(v.trim(), want, "+08:00")
}

/// EN -> HumanName: the CDA form (`<name>张三</name>`, or `given`/`family` parts) and the v3
/// message form (`<name><item><part value="张三"/></item></name>`).
pub fn human_name(n: Node<'_, '_>) -> Option<Value> {
    let mut h = Map::new();
    let parts: Vec<Node<'_, '_>> = n.descendants().filter(|d| is(*d, "part")).collect();
    if !parts.is_empty() {
        let whole: Vec<&str> = parts.iter().filter_map(|p| attr(*p, "value")).collect();
        let family: Vec<&str> = parts
            .iter()
            .filter(|p| attr(**p, "type") == Some("FAM"))
            .filter_map(|p| attr(*p, "value"))
            .collect();
        let given: Vec<Value> = parts
            .iter()
            .filter(|p| attr(**p, "type") == Some("GIV"))
            .filter_map(|p| attr(*p, "value").map(|v| json!(v)))
            .collect();
        if whole.is_empty() {
            return None;
        }
        h.insert("text".into(), json!(whole.join("")));
        if let Some(f) = family.first() {
            h.insert("family".into(), json!(f));
        }
        if !given.is_empty() {
            h.insert("given".into(), Value::Array(given));
        }
        return Some(Value::Object(h));
    }
    let family = child(n, "family").and_then(text);
    let given: Vec<Value> = children(n, "given")
        .filter_map(text)
        .map(Value::String)
        .collect();
    if family.is_some() || !given.is_empty() {
        if let Some(f) = &family {
            h.insert("family".into(), json!(f));
        }
        if !given.is_empty() {
            h.insert("given".into(), Value::Array(given.clone()));
        }
        let prefix: Vec<Value> = children(n, "prefix")
            .filter_map(text)
            .map(Value::String)
            .collect();
        if !prefix.is_empty() {
            h.insert("prefix".into(), Value::Array(prefix));
        }
        let suffix: Vec<Value> = children(n, "suffix")
            .filter_map(text)
            .map(Value::String)
            .collect();
        if !suffix.is_empty() {
            h.insert("suffix".into(), Value::Array(suffix));
        }
        let mut t = family.clone().unwrap_or_default();
        for g in &given {
            if let Some(g) = g.as_str() {
                if !t.is_empty() && g.is_ascii() {
                    t.insert(0, ' ');
                    t.insert_str(0, g);
                } else {
                    t.push_str(g);
                }
            }
        }
        h.insert("text".into(), json!(t));
        if attr(n, "use") == Some("L") {
            h.insert("use".into(), json!("official"));
        }
        return Some(Value::Object(h));
    }
    text(n).map(|t| json!({"text": t}))
}

/// AD -> Address: CDA parts (`houseNumber`, `streetAddressLine`, `city`, ...) and the v3
/// message form (`<part type="CTY" value="..."/>`).
pub fn address(n: Node<'_, '_>) -> Option<Value> {
    let mut a = Map::new();
    let mut lines = Vec::new();
    let mut texts = Vec::new();
    let put = |a: &mut Map<String, Value>, key: &str, v: String| {
        a.entry(key.to_string()).or_insert(Value::String(v));
    };
    for p in n.descendants().filter(|d| is(*d, "part")) {
        let Some(v) = attr(p, "value") else { continue };
        texts.push(v.to_string());
        match attr(p, "type") {
            Some("STA") => put(&mut a, "state", v.into()),
            Some("CTY") => put(&mut a, "city", v.into()),
            Some("CNT") => put(&mut a, "district", v.into()),
            Some("ZIP") => put(&mut a, "postalCode", v.into()),
            Some("CNT_RY" | "CNTRY") => put(&mut a, "country", v.into()),
            Some("SAL") => {
                a.insert("text".into(), Value::String(v.into()));
            }
            _ => lines.push(Value::String(v.into())),
        }
    }
    for c in n.children().filter(|c| c.is_element()) {
        let Some(v) = text(c) else { continue };
        texts.push(v.clone());
        match c.tag_name().name() {
            "state" => put(&mut a, "state", v),
            "city" => put(&mut a, "city", v),
            "county" => put(&mut a, "district", v),
            "postalCode" => put(&mut a, "postalCode", v),
            "country" => put(&mut a, "country", v),
            _ => lines.push(Value::String(v)),
        }
    }
    if texts.is_empty() {
        return text(n).map(|t| json!({"text": t}));
    }
    if !lines.is_empty() {
        a.insert("line".into(), Value::Array(lines));
    }
    if !a.contains_key("text") {
        a.insert("text".into(), Value::String(texts.join("")));
    }
    match attr(n, "use") {
        Some("H" | "HP") => {
            a.insert("use".into(), json!("home"));
        }
        Some("WP") => {
            a.insert("use".into(), json!("work"));
        }
        _ => {}
    }
    Some(Value::Object(a))
}

/// TEL -> ContactPoint (`tel:`, `mailto:`, `fax:` prefixes; a bare number is a phone).
pub fn contact_point(n: Node<'_, '_>) -> Option<Value> {
    let v = attr(n, "value")?;
    let (system, value) = if let Some(r) = v.strip_prefix("tel:") {
        ("phone", r)
    } else if let Some(r) = v.strip_prefix("mailto:") {
        ("email", r)
    } else if let Some(r) = v.strip_prefix("fax:") {
        ("fax", r)
    } else if let Some(r) = v.strip_prefix("http:").or(v.strip_prefix("https:")) {
        let _ = r;
        ("url", v)
    } else {
        ("phone", v)
    };
    let mut c = json!({"system": system, "value": value.trim()});
    match attr(n, "use") {
        Some("H" | "HP") => c["use"] = json!("home"),
        Some("WP") => c["use"] = json!("work"),
        Some("MC") => c["use"] = json!("mobile"),
        _ => {}
    }
    Some(c)
}

/// PQ/MO -> Quantity (the unit is kept as written; UCUM only when it parses as such is not
/// claimed).
pub fn quantity(n: Node<'_, '_>) -> Result<Option<Value>, String> {
    let Some(v) = attr(n, "value") else {
        return Ok(None);
    };
    let value = super::datatypes::decimal(v)?;
    let mut q = json!({"value": value});
    if let Some(u) = attr(n, "unit").or(attr(n, "currency")) {
        q["unit"] = json!(u);
    }
    Ok(Some(q))
}

/// An observation's `value` by its `xsi:type` -> (`value[x]` suffix, value).
pub fn any_value(
    n: Node<'_, '_>,
    vocab: &Vocabulary,
) -> Result<Option<(&'static str, Value)>, String> {
    let ty = xsi_type(n).unwrap_or("ST");
    Ok(match ty {
        "CD" | "CE" | "CV" | "CS" | "CO" => codeable(n, vocab).map(|c| ("CodeableConcept", c)),
        "PQ" | "MO" => quantity(n)?.map(|q| ("Quantity", q)),
        "INT" => match attr(n, "value") {
            Some(v) => match v.parse::<i64>() {
                Ok(i) => Some(("Integer", json!(i))),
                Err(_) => return Err(format!("'{v}' is not an integer")),
            },
            None => None,
        },
        "REAL" => match attr(n, "value") {
            Some(v) => Some(("Quantity", json!({"value": super::datatypes::decimal(v)?}))),
            None => None,
        },
        "BL" => match attr(n, "value") {
            Some("true") => Some(("Boolean", json!(true))),
            Some("false") => Some(("Boolean", json!(false))),
            Some(v) => return Err(format!("'{v}' is not a boolean")),
            None => None,
        },
        "TS" => match timestamp(n, "dateTime") {
            Ok(v) => v.map(|v| ("DateTime", v)),
            // A TS that is not a v3 time keeps its text rather than being lost.
            Err(_) => attr(n, "value").map(|v| ("String", json!(v))),
        },
        "IVL_TS" => {
            let low = child(n, "low").and_then(|l| attr(l, "value"));
            let high = child(n, "high").and_then(|l| attr(l, "value"));
            let mut p = Map::new();
            if let Some(l) = low
                && let Ok(Some(v)) = ts_value(l, "dateTime")
            {
                p.insert("start".into(), v);
            }
            if let Some(h) = high
                && let Ok(Some(v)) = ts_value(h, "dateTime")
            {
                p.insert("end".into(), v);
            }
            if p.is_empty() {
                attr(n, "value")
                    .and_then(|v| ts_value(v, "dateTime").ok().flatten())
                    .map(|v| ("DateTime", v))
            } else {
                Some(("Period", Value::Object(p)))
            }
        }
        "II" => match identifier(n, vocab)? {
            Some(i) => i
                .get("value")
                .and_then(Value::as_str)
                .map(|v| ("String", json!(v))),
            None => None,
        },
        _ => text(n)
            .or_else(|| attr(n, "value").map(str::to_string))
            .map(|t| ("String", Value::String(t))),
    })
}

fn at(n: Node<'_, '_>, from: &XPath) -> String {
    format!("line {} {from}", line(n))
}

/// Converts one selected node for a field; `Ok(None)` when it holds nothing.
fn convert(
    f: &Field,
    n: Node<'_, '_>,
    vocab: &Vocabulary,
) -> Result<Option<(Option<&'static str>, Value)>, String> {
    let leaf = f.target.leaf_type.as_str();
    let plain = |v: Option<Value>| Ok(v.map(|v| (None, v)));
    if f.from.is_attribute() {
        // An attribute value: a code through a vocabulary, or a primitive.
        // `n` is an element the path already selected: read its attribute, not the path again.
        let Some(v) = f.from.attribute_of(n) else {
            return Ok(None);
        };
        return match (&f.vocabulary, f.datatype) {
            (Some(t), _) => match vocab.tables.get(t).and_then(|m| m.get(&v)) {
                Some(code) => plain(Some(vocab_code(code, leaf, f.system.as_deref()))),
                None => Err(format!("code '{v}' is not in vocabulary '{t}'")),
            },
            (None, Datatype::TS) => ts_value(&v, leaf).map(|x| x.map(|v| (None, v))),
            (None, Datatype::INT) => v
                .parse::<i64>()
                .map(|i| Some((None, json!(i))))
                .map_err(|_| format!("'{v}' is not an integer")),
            (None, Datatype::BL) => Ok(Some((None, json!(v == "true")))),
            (None, _) if leaf == "CodeableConcept" || leaf == "Annotation" => {
                plain(Some(json!({"text": v})))
            }
            (None, _) => plain(Some(Value::String(v))),
        };
    }
    let check_system = |sys: Option<&str>| -> Result<(), String> {
        if f.systems.is_empty() {
            return Ok(());
        }
        match sys {
            Some(s) if f.systems.iter().any(|x| x == s) => Ok(()),
            Some(s) => Err(format!(
                "system '{s}' is not the expected {}",
                f.systems.join(" or ")
            )),
            None => Ok(()),
        }
    };
    match f.datatype {
        Datatype::II => {
            check_system(attr(n, "root"))?;
            let id = identifier(n, vocab)?;
            plain(match leaf {
                "Identifier" => id,
                _ => id.and_then(|i| i.get("value").cloned()),
            })
        }
        Datatype::CD => {
            if let Some(cs) = attr(n, "codeSystem")
                && !is_oid(cs)
            {
                return Err(format!("codeSystem '{cs}' is not an OID"));
            }
            check_system(attr(n, "codeSystem"))?;
            if let Some(t) = &f.vocabulary {
                let Some(code) = attr(n, "code") else {
                    return Ok(None);
                };
                return match vocab.tables.get(t).and_then(|m| m.get(code)) {
                    Some(c) => plain(Some(vocab_code(c, leaf, f.system.as_deref()))),
                    None => Err(format!("code '{code}' is not in vocabulary '{t}'")),
                };
            }
            plain(match leaf {
                "CodeableConcept" => codeable(n, vocab),
                "Coding" => coding(n, vocab).map(Value::Object),
                "code" => attr(n, "code").map(|c| json!(c)),
                // A concept of a code system or value set: its code and display.
                "BackboneElement" => coding(n, vocab).and_then(|mut c| {
                    c.remove("system");
                    c.contains_key("code").then_some(Value::Object(c))
                }),
                _ => display(n)
                    .or_else(|| attr(n, "code").map(str::to_string))
                    .map(Value::String),
            })
        }
        Datatype::TS => {
            let v = timestamp(n, leaf)?;
            plain(match leaf {
                "Period" => v.map(|v| json!({"start": v})),
                _ => v,
            })
        }
        Datatype::EN => plain(match leaf {
            "HumanName" => human_name(n),
            _ => human_name(n).and_then(|h| h.get("text").cloned()),
        }),
        Datatype::AD => plain(match leaf {
            "Address" => address(n),
            _ => address(n).and_then(|a| a.get("text").cloned()),
        }),
        Datatype::TEL => plain(contact_point(n)),
        Datatype::ST => {
            let t = text(n).or_else(|| attr(n, "value").map(str::to_string));
            plain(match leaf {
                "CodeableConcept" | "Annotation" => t.map(|t| json!({"text": t})),
                _ => t.map(Value::String),
            })
        }
        Datatype::PQ => {
            let q = quantity(n)?;
            plain(match leaf {
                "decimal" => q.and_then(|q| q.get("value").cloned()),
                _ => q,
            })
        }
        Datatype::INT => match attr(n, "value") {
            Some(v) => v
                .parse::<i64>()
                .map(|i| Some((None, json!(i))))
                .map_err(|_| format!("'{v}' is not an integer")),
            None => Ok(None),
        },
        Datatype::BL => Ok(attr(n, "value").map(|v| (None, json!(v == "true")))),
        Datatype::ANY => Ok(any_value(n, vocab)?.map(|(s, v)| (Some(s), v))),
    }
}

/// Places `value` at `steps` under `obj`: a repeating leaf takes every value, a single one the
/// first (`false` when it already had one).
pub fn place(obj: &mut Map<String, Value>, steps: &[Step], value: Value) -> bool {
    let Some((last, inner)) = steps.split_last() else {
        return false;
    };
    let mut cur = obj;
    for step in inner {
        let slot = cur.entry(step.key.clone()).or_insert_with(|| {
            if step.repeating {
                Value::Array(vec![Value::Object(Map::new())])
            } else {
                Value::Object(Map::new())
            }
        });
        let next = match slot {
            Value::Array(a) => {
                // The element `name[n]` names, or else the last one (created when none is).
                let n = step.index.unwrap_or(a.len().saturating_sub(1));
                if a.len() == n {
                    a.push(Value::Object(Map::new()));
                }
                a.get_mut(n)
            }
            other => Some(other),
        };
        let Some(Value::Object(next)) = next else {
            return false;
        };
        cur = next;
    }
    if last.repeating {
        let slot = cur
            .entry(last.key.clone())
            .or_insert_with(|| Value::Array(Vec::new()));
        if let Value::Array(a) = slot {
            if let Some(n) = last.index {
                // `name[n]` holds one value: the first to come.
                if a.len() != n {
                    return a.get(n) == Some(&value);
                }
                a.push(value);
                return true;
            }
            match value {
                Value::Array(v) => a.extend(v),
                v => {
                    if !a.contains(&v) {
                        a.push(v);
                    }
                }
            }
            return true;
        }
        return false;
    }
    if cur.contains_key(&last.key) {
        return cur.get(&last.key) == Some(&value);
    }
    cur.insert(last.key.clone(), value);
    true
}

fn has(obj: &Map<String, Value>, steps: &[Step]) -> bool {
    let mut cur = obj;
    for (i, s) in steps.iter().enumerate() {
        let Some(v) = cur.get(&s.key) else {
            return false;
        };
        if i + 1 == steps.len() {
            return true;
        }
        let v = match v {
            Value::Array(a) => a.first(),
            v => Some(v),
        };
        let Some(Value::Object(o)) = v else {
            return true;
        };
        cur = o;
    }
    false
}

/// Fills a resource of `rule` from the element `n` (the element the rule's `at` selected).
pub fn fill(rule: &ResourceRule, n: Node<'_, '_>, vocab: &Vocabulary) -> Result<Filled, RuleError> {
    let mut out = Filled::default();
    out.resource.insert(
        "resourceType".into(),
        Value::String(rule.resource_type.clone()),
    );
    if let Some(p) = &rule.profile {
        out.resource.insert("meta".into(), json!({"profile": [p]}));
    }
    for f in &rule.fields {
        let nodes = f.from.nodes(n);
        let mut placed = false;
        for node in nodes {
            match convert(f, node, vocab) {
                Ok(Some((suffix, v))) => {
                    let mut steps = f.target.steps.clone();
                    if let (true, Some(s), Some(last)) = (f.choice, suffix, steps.last_mut()) {
                        last.key = format!("{}{s}", last.key);
                    }
                    if place(&mut out.resource, &steps, v.clone()) {
                        placed = true;
                        out.placed += 1;
                    } else {
                        out.unmapped.push(NotPlaced {
                            location: at(node, &f.from),
                            value: v.to_string(),
                            reason: format!("{} already has a value", f.target.text),
                        });
                    }
                }
                Ok(None) => {}
                Err(e) if f.required || !f.systems.is_empty() || e.contains("is not an OID") => {
                    return Err(RuleError {
                        line: line(node),
                        path: f.from.to_string(),
                        message: format!("{} ({})", e, f.target.text),
                    });
                }
                Err(e) => out.unmapped.push(NotPlaced {
                    location: at(node, &f.from),
                    value: f
                        .from
                        .attribute_of(node)
                        .or_else(|| crate::xml::text(node))
                        .unwrap_or_default(),
                    reason: e,
                }),
            }
        }
        if f.required && !placed {
            return Err(RuleError {
                line: line(n),
                path: f.from.to_string(),
                message: format!("required value missing (for {})", f.target.text),
            });
        }
    }
    for (p, v) in &rule.defaults {
        if !has(&out.resource, &p.steps) {
            if let Some(first) = p.steps.first()
                && !out.resource.contains_key(&first.key)
            {
                out.assumed.insert(first.key.clone());
            }
            place(&mut out.resource, &p.steps, v.clone());
        }
    }
    Ok(out)
}

/// A Reference value to `Type/id`.
pub fn reference(resource_type: &str, id: &str) -> Value {
    json!({"reference": format!("{resource_type}/{id}")})
}

/// Sets a rule's links from the ids of the named resources (`names`: rule name -> (type, id)).
pub fn link(
    rule: &ResourceRule,
    resource: &mut Map<String, Value>,
    names: &HashMap<String, (String, String)>,
) {
    for (p, name) in &rule.links {
        if let Some((ty, id)) = names.get(name) {
            place(resource, &p.steps, reference(ty, id));
        }
    }
}

/// The first identifier of a filled resource as `system|value`.
pub fn identifier_key(resource: &Map<String, Value>) -> Option<String> {
    let id = resource.get("identifier")?;
    let id = match id {
        Value::Array(a) => a.first()?,
        v => v,
    };
    Some(format!(
        "{}|{}",
        id.get("system").and_then(Value::as_str).unwrap_or(""),
        id.get("value").and_then(Value::as_str)?
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(xml: &str) -> roxmltree::Document<'_> {
        roxmltree::Document::parse(xml).unwrap()
    }

    #[test]
    fn oids_are_recognised() {
        assert!(is_oid("2.16.156.10011.1.3"));
        assert!(!is_oid("2.16.156.10011.01"));
        assert!(!is_oid("abc"));
        assert!(!is_oid("3.1"));
        assert!(!is_oid("2"));
    }

    #[test]
    fn a_rule_fills_a_patient_and_refuses_a_bad_root() {
        let spec: ResourceSpec = toml::from_str(
            r#"
name = "patient"
type = "Patient"
id = "identifier"
fields = [
  { from = "id", as = "II", fhir = "identifier" },
  { from = "name", as = "EN", fhir = "name" },
  { from = "administrativeGenderCode", as = "CD", fhir = "gender", vocabulary = "sex" },
  { from = "birthTime", as = "TS", fhir = "birthDate" },
]
defaults = { active = true }
"#,
        )
        .unwrap();
        let mut vocab = Vocabulary::default();
        vocab.tables.insert(
            "sex".into(),
            [("1".to_string(), "male".to_string())]
                .into_iter()
                .collect(),
        );
        let rule = check_resource(&spec, &vocab).unwrap();
        let d = doc(
            r#"<p xmlns="urn:hl7-org:v3"><id root="2.16.156.10011.1.3" extension="X1"/><name>张三</name><administrativeGenderCode code="1"/><birthTime value="19800102"/></p>"#,
        );
        let f = fill(&rule, d.root_element(), &vocab).unwrap();
        assert_eq!(
            Value::Object(f.resource.clone()),
            json!({"resourceType": "Patient", "identifier": [{"system": "urn:oid:2.16.156.10011.1.3", "value": "X1"}],
                   "name": [{"text": "张三"}], "gender": "male", "birthDate": "1980-01-02", "active": true})
        );
        assert_eq!(
            identifier_key(&f.resource).unwrap(),
            "urn:oid:2.16.156.10011.1.3|X1"
        );
        let d = doc(r#"<p xmlns="urn:hl7-org:v3"><id root="身份证" extension="X1"/></p>"#);
        let e = fill(&rule, d.root_element(), &vocab).unwrap_err();
        assert!(e.message.contains("not an OID"), "{e}");
        let d = doc(r#"<p xmlns="urn:hl7-org:v3"><administrativeGenderCode code="7"/></p>"#);
        let f = fill(&rule, d.root_element(), &vocab).unwrap();
        assert_eq!(f.unmapped.len(), 1);
        assert!(f.unmapped[0].reason.contains("not in vocabulary"));
    }

    #[test]
    fn fields_ending_in_an_attribute_read_it_from_the_selected_element() {
        let spec: ResourceSpec = toml::from_str(
            r#"
name = "codesystem"
type = "CodeSystem"
fields = [
  { from = "id/@extension", as = "ST", fhir = "name" },
  { from = "desc/@value", as = "ST", fhir = "title" },
  { from = "statusCode/@code", as = "CS", fhir = "status", vocabulary = "status" },
]
"#,
        )
        .unwrap();
        let mut vocab = Vocabulary::default();
        vocab.tables.insert(
            "status".into(),
            [("1".to_string(), "active".to_string())]
                .into_iter()
                .collect(),
        );
        let rule = check_resource(&spec, &vocab).unwrap();
        let d = doc(
            r#"<v xmlns="urn:hl7-org:v3"><id extension="bloodType"/><desc value="血型"/><statusCode code="1"/></v>"#,
        );
        let f = fill(&rule, d.root_element(), &vocab).unwrap();
        assert_eq!(
            Value::Object(f.resource),
            json!({"resourceType": "CodeSystem", "name": "bloodType", "title": "血型", "status": "active"})
        );
        // A code outside the vocabulary is kept as not placed, with its value.
        let d = doc(r#"<v xmlns="urn:hl7-org:v3"><statusCode code="9"/></v>"#);
        let f = fill(&rule, d.root_element(), &vocab).unwrap();
        assert_eq!(f.unmapped.len(), 1);
        assert_eq!(f.unmapped[0].value, "9");
    }

    #[test]
    fn check_refuses_unknown_elements_and_types() {
        let vocab = Vocabulary::default();
        let bad: ResourceSpec = toml::from_str(
            "name = \"x\"\ntype = \"Patient\"\nfields = [{ from = \"id\", as = \"II\", fhir = \"nosuch\" }]",
        )
        .unwrap();
        assert!(check_resource(&bad, &vocab).is_err());
        let bad: ResourceSpec = toml::from_str(
            "name = \"x\"\ntype = \"Patient\"\nfields = [{ from = \"id\", as = \"XX\", fhir = \"identifier\" }]",
        )
        .unwrap();
        assert!(check_resource(&bad, &vocab).is_err());
    }
}
