//! Loading `mappings/feeds/<name>/`: the JSON Schema of the inbound record (compiled once) and
//! `mapping.toml`, whose FHIR paths are checked against the core definitions with the same
//! resolver the HL7 v2 maps use ([`crate::mapping::load::resolve_path`]). Every problem names its
//! file (and line, for the mapping); the gateway refuses to start with any.

use crate::mapping::LoadError;
use crate::mapping::load::{FhirPath, resolve_path};
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use toml::Spanned;

/// A place in the inbound record: a JSON Pointer from the current object (`/insutype`), or from
/// the record's root (`$/baseinfo/psn_no`) inside a `for_each` rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pointer {
    pub root: bool,
    /// RFC 6901 pointer (`/baseinfo/psn_no`).
    pub path: String,
}

impl Pointer {
    fn parse(s: &str) -> Option<Pointer> {
        let s = s.trim();
        let (root, path) = match s.strip_prefix('$') {
            Some(p) => (true, p),
            None => (false, s),
        };
        (path.starts_with('/') && path.len() > 1).then(|| Pointer {
            root,
            path: path.to_string(),
        })
    }
}

/// Alternatives for one key part: the first valued pointer wins (`/orig_card_id | /card_id`).
pub type KeyPart = Vec<Pointer>;

fn key_part(s: &str) -> Option<KeyPart> {
    s.split('|').map(Pointer::parse).collect()
}

/// A condition on a rule: `/card_type = 订正报告`, `!=`, `/x valued`, `/x not valued`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum When {
    Valued(Pointer),
    NotValued(Pointer),
    Equals(Pointer, String),
    NotEquals(Pointer, String),
}

fn when(s: &str) -> Option<When> {
    let s = s.trim();
    if let Some(p) = s.strip_suffix(" not valued") {
        return Some(When::NotValued(Pointer::parse(p)?));
    }
    if let Some(p) = s.strip_suffix(" valued") {
        return Some(When::Valued(Pointer::parse(p)?));
    }
    if let Some((p, v)) = s.split_once("!=") {
        return Some(When::NotEquals(Pointer::parse(p)?, v.trim().to_string()));
    }
    let (p, v) = s.split_once('=')?;
    Some(When::Equals(Pointer::parse(p)?, v.trim().to_string()))
}

/// How a record value becomes a FHIR value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Converter {
    String,
    Code,
    Date,
    DateTime,
    Decimal,
    Integer,
    Boolean,
    Money,
    Quantity,
    CodeableConcept,
    Coding,
    Identifier,
    Reference,
    HumanName,
    Address,
    ContactPoint,
}

impl Converter {
    /// The converter named by `as`, or the one the element's type implies.
    fn choose(named: Option<&str>, leaf: &str) -> Result<Converter, String> {
        let name = named.unwrap_or(leaf);
        Ok(match name {
            "string" | "markdown" | "id" | "uri" | "url" | "canonical" | "oid" => Converter::String,
            "code" => Converter::Code,
            "date" => Converter::Date,
            "dateTime" | "instant" => Converter::DateTime,
            "decimal" => Converter::Decimal,
            "integer" | "positiveInt" | "unsignedInt" => Converter::Integer,
            "boolean" => Converter::Boolean,
            "Money" => Converter::Money,
            "Quantity" | "SimpleQuantity" | "Age" | "Duration" => Converter::Quantity,
            "CodeableConcept" => Converter::CodeableConcept,
            "Coding" => Converter::Coding,
            "Identifier" => Converter::Identifier,
            "Reference" => Converter::Reference,
            "HumanName" => Converter::HumanName,
            "Address" => Converter::Address,
            "ContactPoint" => Converter::ContactPoint,
            other => return Err(format!("no converter for '{other}' (element type {leaf})")),
        })
    }

    /// The FHIR types a converter's output can fill.
    fn fills(self, leaf: &str) -> bool {
        let ok: &[&str] = match self {
            Converter::String => &[
                "string",
                "markdown",
                "id",
                "uri",
                "url",
                "canonical",
                "oid",
                "code",
            ],
            Converter::Code => &["code", "string", "uri"],
            Converter::Date => &["date", "dateTime"],
            Converter::DateTime => &["dateTime", "instant"],
            Converter::Decimal => &["decimal"],
            Converter::Integer => &["integer", "positiveInt", "unsignedInt"],
            Converter::Boolean => &["boolean"],
            Converter::Money => &["Money"],
            Converter::Quantity => &["Quantity", "SimpleQuantity", "Age", "Duration"],
            Converter::CodeableConcept => &["CodeableConcept"],
            Converter::Coding => &["Coding"],
            Converter::Identifier => &["Identifier"],
            Converter::Reference => &["Reference"],
            Converter::HumanName => &["HumanName"],
            Converter::Address => &["Address"],
            Converter::ContactPoint => &["ContactPoint"],
        };
        ok.contains(&leaf)
    }
}

/// One record field (or several, for a Reference key) into one FHIR element.
#[derive(Debug, Clone)]
pub struct FieldRule {
    pub from: Vec<KeyPart>,
    pub target: FhirPath,
    pub converter: Converter,
    /// Code system or identifier system.
    pub system: Option<String>,
    /// ConceptMap canonical: the record's code is translated (code) or added (CodeableConcept).
    pub conceptmap: Option<String>,
    /// Unit (UCUM) of a Quantity.
    pub unit: Option<String>,
    /// Resource type of a Reference; the id is derived from the `from` values as that type's key.
    pub target_type: Option<String>,
    /// Id namespace of a Reference's target (default: the feed's).
    pub namespace: Option<String>,
    /// A Reference's `display`, from this field (in the same element as the reference, which
    /// a second rule on `x.display` could not be when `x` repeats).
    pub display: Option<Pointer>,
    /// JSON merged into the new element of the first repeating step.
    pub with: Option<Value>,
    pub when: Option<When>,
    /// A constant written instead of the record's value (which must be valued; with `when`,
    /// this maps a record code to a FHIR code without a ConceptMap: `status = cancelled`).
    pub value: Option<Value>,
    /// Line in `mapping.toml`, for explanations.
    pub line: usize,
}

/// Elements built one per item of a record list (`diseinfo` -> `Claim.diagnosis`), each from
/// fields relative to the item.
#[derive(Debug, Clone)]
pub struct GroupRule {
    pub each: Pointer,
    /// The repeating element each item becomes.
    pub target: FhirPath,
    /// An element of the item set to its 1-based position (`sequence`).
    pub index: Option<FhirPath>,
    pub with: Option<Value>,
    /// Paths relative to the element (their `text` is the full path).
    pub fields: Vec<FieldRule>,
}

/// References from a rule's resources to the resources of other rules.
#[derive(Debug, Clone)]
pub struct LinkRule {
    pub path: FhirPath,
    /// Rule indexes, in order: a repeating element gets every resource of each, a single one the
    /// first.
    pub targets: Vec<usize>,
    /// JSON merged into the new element of the first repeating step.
    pub with: Option<Value>,
    /// All the references go into one new element of the first repeating step (one
    /// `Composition.section` listing every diagnosis), not one element each.
    pub gather: bool,
}

/// How a rule's resource is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteMode {
    /// The whole resource, PUT to its derived id (an upsert).
    Put,
    /// Only the mapped elements, as a JSON Patch of an existing resource (cancellations).
    Patch,
}

/// One piece of a [`Selection`]: text as written, a record value, or the id record values derive
/// for a resource type (`{Encounter:/data/mdtrt_id}`, `{Claim:/data/mdtrt_id,/data/chrg_bchno}`,
/// as a Reference field derives it from its `from` list).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SelectPart {
    Text(String),
    Value(Pointer),
    Id(String, Vec<Pointer>),
}

/// The stored resources a patch rule changes, found by search criteria filled from the record:
/// a cancellation names the batch, not each line the batch wrote (2205).
#[derive(Debug, Clone)]
pub struct Selection {
    /// As written in `mapping.toml`, for messages.
    pub text: String,
    pub parts: Vec<SelectPart>,
}

impl Selection {
    /// Parses `identifier=s|{/x}&context=Encounter/{Encounter:/y}`; the error names the bad piece.
    fn parse(s: &str) -> Result<Selection, String> {
        let mut parts = Vec::new();
        let mut rest = s;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                parts.push(SelectPart::Text(rest[..open].to_string()));
            }
            let Some(close) = rest[open..].find('}') else {
                return Err(format!("select: '{{' without '}}' in '{s}'"));
            };
            let inner = &rest[open + 1..open + close];
            let part = match inner.split_once(':') {
                Some((ty, p)) => {
                    if !crate::definitions::Definitions::core().is_resource_type(ty) {
                        return Err(format!("select: '{ty}' is not an R4 resource type"));
                    }
                    p.split(',')
                        .map(Pointer::parse)
                        .collect::<Option<Vec<_>>>()
                        .map(|p| SelectPart::Id(ty.to_string(), p))
                }
                None => Pointer::parse(inner).map(SelectPart::Value),
            };
            match part {
                Some(p) => parts.push(p),
                None => return Err(format!("select: '{inner}' is not a JSON Pointer")),
            }
            rest = &rest[open + close + 1..];
        }
        if !rest.is_empty() {
            parts.push(SelectPart::Text(rest.to_string()));
        }
        if parts.iter().all(|p| matches!(p, SelectPart::Text(_))) {
            return Err(format!(
                "select: '{s}' takes nothing from the record (it would change the same resources for every record)"
            ));
        }
        Ok(Selection {
            text: s.to_string(),
            parts,
        })
    }
}

/// One resource per record (or per element of `for_each`).
#[derive(Debug, Clone)]
pub struct ResourceRule {
    pub name: String,
    pub resource_type: String,
    /// The key the resource's id derives from; empty for a rule with `select`.
    pub id: Vec<KeyPart>,
    /// A patch of every stored resource these criteria find (instead of one by `id`).
    pub select: Option<Selection>,
    /// With `select`: finding nothing is nothing to change (the pre-settlement of a batch that
    /// may never have been pre-settled), not a refusal.
    pub optional: bool,
    pub namespace: Option<String>,
    pub for_each: Option<Pointer>,
    pub profile: Option<String>,
    pub mode: WriteMode,
    /// The rule applies only when this holds (read from each item under `for_each`).
    pub when: Option<When>,
    /// When this holds, the resource must exist already (a correction must correct something).
    pub require_existing: Option<When>,
    pub defaults: Vec<(FhirPath, Value)>,
    pub links: Vec<LinkRule>,
    /// Whole resources of other rules placed in an element of type Resource (`entry.resource` of
    /// a document Bundle), in the order given; the new element gets `fullUrl = urn:uuid:<id>`
    /// and references between the embedded resources are rewritten to those fullUrls.
    pub embeds: Vec<(FhirPath, Vec<usize>)>,
    pub fields: Vec<FieldRule>,
    pub groups: Vec<GroupRule>,
}

/// A business rule that refuses a record while a later step of the same process stands: if a
/// search over the stored resources, filled from the record, finds anything, the record is
/// refused and nothing is written (`[[refuse]]`: no 挂号撤销 while fee details are uploaded, no
/// 费用明细撤销 once the visit is settled).
#[derive(Debug, Clone)]
pub struct RefusalRule {
    pub name: String,
    /// The type searched.
    pub resource_type: String,
    /// The search criteria (same syntax as `select`); the record is refused when they match.
    pub if_found: Selection,
    /// Why, for the error (what stands, and what must come first).
    pub message: String,
}

/// One feed: its schema, compiled once, and its rules.
pub struct Feed {
    pub name: String,
    pub title: String,
    pub namespace: String,
    /// The record's business key (Provenance id, error messages).
    pub key: Vec<KeyPart>,
    pub schema: jsonschema::Validator,
    /// The schema as written (CSV cells are typed by it).
    pub schema_json: Value,
    pub rules: Vec<ResourceRule>,
    /// Checked once the `select` rules found what they change, before anything is written; any
    /// one that finds something refuses the record.
    pub refusals: Vec<RefusalRule>,
    /// Keys a record holds exclusively while it is checked and committed, besides the resources
    /// it writes (`lock = ["Encounter/{Encounter:/data/mdtrt_id}"]`): the records of one visit
    /// from different feeds apply one at a time, so a refusal rule never reads the store while a
    /// record it would refuse because of is committing.
    pub locks: Vec<Selection>,
    pub dir: PathBuf,
}

impl std::fmt::Debug for Feed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Feed")
            .field("name", &self.name)
            .field("rules", &self.rules.len())
            .finish()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFeed {
    feed: String,
    #[serde(default)]
    title: String,
    namespace: String,
    key: Vec<String>,
    #[serde(default)]
    resource: Vec<Spanned<RawResource>>,
    #[serde(default)]
    refuse: Vec<Spanned<RawRefusal>>,
    #[serde(default)]
    lock: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRefusal {
    name: String,
    #[serde(rename = "type")]
    resource_type: String,
    if_found: String,
    message: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawResource {
    name: String,
    #[serde(rename = "type")]
    resource_type: String,
    #[serde(default)]
    id: Vec<String>,
    select: Option<String>,
    #[serde(default)]
    optional: bool,
    namespace: Option<String>,
    for_each: Option<String>,
    profile: Option<String>,
    method: Option<String>,
    when: Option<String>,
    require_existing: Option<String>,
    #[serde(default)]
    defaults: BTreeMap<String, toml::Value>,
    #[serde(default)]
    links: BTreeMap<String, toml::Value>,
    #[serde(default)]
    embed: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    field: Vec<Spanned<RawField>>,
    #[serde(default)]
    group: Vec<Spanned<RawGroup>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGroup {
    each: String,
    fhir: String,
    index: Option<String>,
    with: Option<toml::Value>,
    #[serde(default)]
    field: Vec<Spanned<RawField>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawField {
    from: toml::Value,
    fhir: String,
    #[serde(rename = "as")]
    converter: Option<String>,
    system: Option<String>,
    conceptmap: Option<String>,
    unit: Option<String>,
    target: Option<String>,
    namespace: Option<String>,
    display: Option<String>,
    with: Option<toml::Value>,
    when: Option<String>,
    value: Option<toml::Value>,
}

fn json_of(v: &toml::Value) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// Loads every feed under `dir` (`mappings/feeds`); a missing folder is no feeds.
pub fn load_all(dir: &Path) -> Result<BTreeMap<String, std::sync::Arc<Feed>>, Vec<LoadError>> {
    let mut feeds = BTreeMap::new();
    let mut errors = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(feeds);
    };
    let mut dirs: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("mapping.toml").is_file())
        .collect();
    dirs.sort();
    for d in dirs {
        match load_feed(&d) {
            Ok(f) => {
                feeds.insert(f.name.clone(), std::sync::Arc::new(f));
            }
            Err(mut e) => errors.append(&mut e),
        }
    }
    if errors.is_empty() {
        Ok(feeds)
    } else {
        Err(errors)
    }
}

/// Loads and checks one feed folder.
pub fn load_feed(dir: &Path) -> Result<Feed, Vec<LoadError>> {
    let mapping_file = dir.join("mapping.toml");
    let schema_file = dir.join("schema.json");
    let mf = mapping_file.display().to_string();
    let sf = schema_file.display().to_string();
    let err = |file: &str, line: usize, message: String| LoadError {
        file: file.to_string(),
        line,
        message,
    };
    let text =
        std::fs::read_to_string(&mapping_file).map_err(|e| vec![err(&mf, 0, e.to_string())])?;
    let raw: RawFeed = toml::from_str(&text).map_err(|e| {
        let line = e.span().map(|s| line_of(&text, s.start)).unwrap_or(0);
        vec![err(&mf, line, e.message().to_string())]
    })?;
    let schema_text =
        std::fs::read_to_string(&schema_file).map_err(|e| vec![err(&sf, 0, e.to_string())])?;
    let schema_json: Value =
        serde_json::from_str(&schema_text).map_err(|e| vec![err(&sf, e.line(), e.to_string())])?;
    let schema = compile_schema(&schema_json).map_err(|e| vec![err(&sf, 0, e)])?;
    let mut errors = Vec::new();
    let names: Vec<String> = raw
        .resource
        .iter()
        .map(|r| r.get_ref().name.clone())
        .collect();
    let key: Vec<KeyPart> = raw
        .key
        .iter()
        .filter_map(|k| {
            let p = key_part(k);
            if p.is_none() {
                errors.push(err(&mf, 1, format!("key: '{k}' is not a JSON Pointer")));
            }
            p
        })
        .collect();
    let mut rules = Vec::new();
    for r in &raw.resource {
        let line = line_of(&text, r.span().start);
        let r = r.get_ref();
        let ty = r.resource_type.clone();
        if !crate::definitions::Definitions::core().is_resource_type(&ty) {
            errors.push(err(&mf, line, format!("'{ty}' is not an R4 resource type")));
            continue;
        }
        let mut msgs: Vec<String> = Vec::new();
        let mut id = Vec::new();
        for s in &r.id {
            match key_part(s) {
                Some(p) => id.push(p),
                None => msgs.push(format!("id: '{s}' is not a JSON Pointer")),
            }
        }
        let cond = |s: &Option<String>, msgs: &mut Vec<String>| -> Option<When> {
            let s = s.as_ref()?;
            let w = when(s);
            if w.is_none() {
                msgs.push(format!(
                    "'{s}' is not a condition (`/p = v`, `/p != v`, `/p valued`, `/p not valued`)"
                ));
            }
            w
        };
        let select = match &r.select {
            Some(s) => match Selection::parse(s) {
                Ok(sel) => Some(sel),
                Err(m) => {
                    msgs.push(m);
                    None
                }
            },
            None => None,
        };
        match (r.select.is_some(), r.id.is_empty()) {
            (true, false) => msgs.push("`id` and `select` exclude each other".into()),
            (false, true) => msgs.push("no `id` (nor `select`)".into()),
            _ => {}
        }
        if r.select.is_some() && r.method.as_deref() != Some("patch") {
            msgs.push("`select` changes stored resources: it needs method = \"patch\"".into());
        }
        if r.optional && r.select.is_none() {
            msgs.push("`optional` is for a rule with `select`".into());
        }
        if r.select.is_some() && r.for_each.is_some() {
            msgs.push("`select` and `for_each` exclude each other".into());
        }
        let rule_when = cond(&r.when, &mut msgs);
        let require_existing = cond(&r.require_existing, &mut msgs);
        let for_each = r.for_each.as_ref().and_then(|s| {
            let p = Pointer::parse(s);
            if p.is_none() {
                msgs.push(format!("for_each: '{s}' is not a JSON Pointer"));
            }
            p
        });
        let mode = match r.method.as_deref() {
            None | Some("put") => WriteMode::Put,
            Some("patch") => WriteMode::Patch,
            Some(m) => {
                msgs.push(format!("method '{m}' is not put or patch"));
                WriteMode::Put
            }
        };
        let mut defaults = Vec::new();
        for (path, v) in &r.defaults {
            match resolve_path(&ty, path) {
                Ok(p) => defaults.push((p, json_of(v))),
                Err(m) => msgs.push(m),
            }
        }
        let mut links = Vec::new();
        // A link is a rule name, a list of them (the element gets the resources of each, in
        // order), a table with `to` (either), `with` and `gather`, or a list of such tables (one
        // element, several links: a Composition's sections).
        let declared: Vec<(&String, &toml::Value)> = r
            .links
            .iter()
            .flat_map(|(path, v)| match v {
                toml::Value::Array(a) if a.iter().all(toml::Value::is_table) && !a.is_empty() => {
                    a.iter().map(|t| (path, t)).collect::<Vec<_>>()
                }
                other => vec![(path, other)],
            })
            .collect();
        for (path, v) in declared {
            let names_of = |x: Option<&toml::Value>| -> Vec<String> {
                match x {
                    Some(toml::Value::String(s)) => vec![s.clone()],
                    Some(toml::Value::Array(a)) => a
                        .iter()
                        .map(|n| n.as_str().unwrap_or_default().to_string())
                        .collect(),
                    _ => vec![String::new()],
                }
            };
            let (names_to, with, gather) = match v {
                toml::Value::Table(t) => (
                    names_of(t.get("to")),
                    t.get("with").map(json_of),
                    t.get("gather")
                        .and_then(toml::Value::as_bool)
                        .unwrap_or(false),
                ),
                other => (names_of(Some(other)), None, false),
            };
            let resolved = match resolve_path(&ty, path) {
                Ok(p) if p.leaf_type == "Reference" => p,
                Ok(p) => {
                    msgs.push(format!(
                        "link {path}: {} is a {}, not a Reference",
                        p.text, p.leaf_type
                    ));
                    continue;
                }
                Err(m) => {
                    msgs.push(m);
                    continue;
                }
            };
            let mut targets = Vec::new();
            for target in names_to {
                match names.iter().position(|n| *n == target) {
                    // Its resources are known only when the store is searched, after mapping.
                    Some(ti) if raw.resource[ti].get_ref().select.is_some() => msgs.push(format!(
                        "link {path}: rule '{target}' selects stored resources; it cannot be linked to"
                    )),
                    Some(ti) => targets.push(ti),
                    None => msgs.push(format!("link {path}: no resource rule named '{target}'")),
                }
            }
            if gather && !resolved.steps.iter().any(|s| s.repeating) {
                msgs.push(format!("link {path}: `gather` needs a repeating element"));
            }
            links.push(LinkRule {
                path: resolved,
                targets,
                with,
                gather,
            });
        }
        let mut embeds = Vec::new();
        for (path, to) in &r.embed {
            let resolved = match resolve_path(&ty, path) {
                Ok(p) if p.leaf_type == "Resource" => p,
                Ok(p) => {
                    msgs.push(format!(
                        "embed {path}: {} is a {}, not a Resource",
                        p.text, p.leaf_type
                    ));
                    continue;
                }
                Err(m) => {
                    msgs.push(m);
                    continue;
                }
            };
            let mut targets = Vec::new();
            for target in to {
                match raw
                    .resource
                    .iter()
                    .position(|x| x.get_ref().name == *target)
                {
                    // A patch is a change, not a resource: there is nothing whole to embed.
                    Some(ti) if raw.resource[ti].get_ref().method.as_deref() == Some("patch") => {
                        msgs.push(format!("embed {path}: rule '{target}' is a patch"))
                    }
                    Some(ti) => targets.push(ti),
                    None => msgs.push(format!("embed {path}: no resource rule named '{target}'")),
                }
            }
            embeds.push((resolved, targets));
        }
        errors.extend(
            msgs.into_iter()
                .map(|m| err(&mf, line, format!("{}: {m}", r.name))),
        );
        let mut fields = Vec::new();
        for f in &r.field {
            let fline = line_of(&text, f.span().start);
            match field_rule(&ty, None, f.get_ref(), fline) {
                Ok(x) => fields.push(x),
                Err(ms) => errors.extend(
                    ms.into_iter()
                        .map(|m| err(&mf, fline, format!("{}: {m}", r.name))),
                ),
            }
        }
        let mut groups = Vec::new();
        for g in &r.group {
            let gline = line_of(&text, g.span().start);
            let g = g.get_ref();
            let target = match resolve_path(&ty, &g.fhir) {
                Ok(t) if t.steps.last().is_some_and(|s| s.repeating) => t,
                Ok(t) => {
                    errors.push(err(
                        &mf,
                        gline,
                        format!("{}: group {}: not a repeating element", r.name, t.text),
                    ));
                    continue;
                }
                Err(m) => {
                    errors.push(err(&mf, gline, format!("{}: {m}", r.name)));
                    continue;
                }
            };
            let Some(each) = Pointer::parse(&g.each) else {
                errors.push(err(
                    &mf,
                    gline,
                    format!("{}: each: '{}' is not a JSON Pointer", r.name, g.each),
                ));
                continue;
            };
            let index = match &g.index {
                Some(ix) => match resolve_path(&ty, &format!("{}.{ix}", g.fhir)) {
                    Ok(mut p) => {
                        p.steps.drain(..target.steps.len());
                        Some(p)
                    }
                    Err(m) => {
                        errors.push(err(&mf, gline, format!("{}: {m}", r.name)));
                        None
                    }
                },
                None => None,
            };
            let mut gfields = Vec::new();
            for f in &g.field {
                let fline = line_of(&text, f.span().start);
                match field_rule(&ty, Some((&g.fhir, target.steps.len())), f.get_ref(), fline) {
                    Ok(x) => gfields.push(x),
                    Err(ms) => errors.extend(
                        ms.into_iter()
                            .map(|m| err(&mf, fline, format!("{}: {m}", r.name))),
                    ),
                }
            }
            groups.push(GroupRule {
                each,
                target,
                index,
                with: g.with.as_ref().map(json_of),
                fields: gfields,
            });
        }
        rules.push(ResourceRule {
            name: r.name.clone(),
            resource_type: ty,
            id,
            select,
            optional: r.optional,
            namespace: r.namespace.clone(),
            for_each,
            profile: r.profile.clone(),
            mode,
            when: rule_when,
            require_existing,
            defaults,
            links,
            embeds,
            fields,
            groups,
        });
    }
    let mut refusals = Vec::new();
    for r in &raw.refuse {
        let line = line_of(&text, r.span().start);
        let r = r.get_ref();
        let mut bad = |m: String| errors.push(err(&mf, line, format!("refuse {}: {m}", r.name)));
        if !crate::definitions::Definitions::core().is_resource_type(&r.resource_type) {
            bad(format!("'{}' is not an R4 resource type", r.resource_type));
            continue;
        }
        if r.message.trim().is_empty() {
            bad("`message` is empty (say what stands and what must come first)".into());
        }
        // As for `select`, criteria must take a record value: without one a rule would refuse
        // every record, or none.
        match Selection::parse(&r.if_found) {
            Ok(sel) => refusals.push(RefusalRule {
                name: r.name.clone(),
                resource_type: r.resource_type.clone(),
                if_found: sel,
                message: r.message.trim().to_string(),
            }),
            Err(m) => bad(m.replacen("select:", "if_found:", 1)),
        }
    }
    let mut locks = Vec::new();
    for l in &raw.lock {
        match Selection::parse(l) {
            Ok(sel) => locks.push(sel),
            Err(m) => errors.push(err(&mf, 1, m.replacen("select:", "lock:", 1))),
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(Feed {
        name: raw.feed,
        title: raw.title,
        namespace: raw.namespace,
        key,
        schema,
        schema_json,
        rules,
        refusals,
        locks,
        dir: dir.to_path_buf(),
    })
}

/// Compiles a record schema (its `$schema` picks draft 2020-12 or draft-07); no remote `$ref`s.
pub fn compile_schema(schema: &Value) -> Result<jsonschema::Validator, String> {
    jsonschema::options()
        .should_validate_formats(true)
        .build(schema)
        .map_err(|e| format!("schema does not compile: {e}"))
}

/// Checks one field rule; `group` is (the group's path, its number of steps) for a field whose
/// path is relative to a group element.
fn field_rule(
    ty: &str,
    group: Option<(&str, usize)>,
    f: &RawField,
    line: usize,
) -> Result<FieldRule, Vec<String>> {
    let mut errors = Vec::new();
    let from_list: Vec<String> = match &f.from {
        toml::Value::String(s) => vec![s.clone()],
        toml::Value::Array(a) => a
            .iter()
            .filter_map(|x| x.as_str().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    };
    let mut from = Vec::new();
    for s in &from_list {
        match key_part(s) {
            Some(p) => from.push(p),
            None => errors.push(format!("from: '{s}' is not a JSON Pointer")),
        }
    }
    if from.is_empty() {
        errors.push("from: no JSON Pointer".into());
        return Err(errors);
    }
    let full = match group {
        Some((g, _)) => format!("{g}.{}", f.fhir),
        None => f.fhir.clone(),
    };
    let mut target = resolve_path(ty, &full).map_err(|m| vec![m])?;
    if let Some((_, n)) = group {
        target.steps.drain(..n);
    }
    let converter = match Converter::choose(f.converter.as_deref(), &target.leaf_type) {
        Ok(c) if c.fills(&target.leaf_type) => c,
        Ok(_) => {
            errors.push(format!(
                "{}: a {} cannot fill a {}",
                target.text,
                f.converter.as_deref().unwrap_or("?"),
                target.leaf_type
            ));
            return Err(errors);
        }
        Err(m) => {
            errors.push(format!("{}: {m}", target.text));
            return Err(errors);
        }
    };
    if matches!(
        converter,
        Converter::CodeableConcept | Converter::Coding | Converter::Identifier
    ) && f.system.is_none()
        && f.value.is_none()
    {
        errors.push(format!("{}: a {converter:?} needs `system`", target.text));
    }
    if converter == Converter::Reference {
        match &f.target {
            Some(t) if crate::definitions::Definitions::core().is_resource_type(t) => {}
            _ => errors.push(format!(
                "{}: a Reference needs `target`, a resource type",
                target.text
            )),
        }
    } else if from.len() > 1 {
        errors.push(format!(
            "{}: several `from` pointers are a Reference key only",
            target.text
        ));
    }
    let display = match &f.display {
        Some(_) if converter != Converter::Reference => {
            errors.push(format!("{}: `display` is for a Reference", target.text));
            None
        }
        Some(d) => {
            let p = Pointer::parse(d);
            if p.is_none() {
                errors.push(format!("display: '{d}' is not a JSON Pointer"));
            }
            p
        }
        None => None,
    };
    let when_rule = match &f.when {
        Some(s) => match when(s) {
            Some(w) => Some(w),
            None => {
                errors.push(format!("'{s}' is not a condition"));
                None
            }
        },
        None => None,
    };
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(FieldRule {
        from,
        target,
        converter,
        system: f.system.clone(),
        conceptmap: f.conceptmap.clone(),
        unit: f.unit.clone(),
        target_type: f.target.clone(),
        namespace: f.namespace.clone(),
        display,
        with: f.with.as_ref().map(json_of),
        when: when_rule,
        value: f.value.as_ref().map(json_of),
        line,
    })
}
