//! Loading `mappings/hl7v2/` and checking it against the v2 segment table and the FHIR core
//! definitions. Every problem names its file and line; the gateway refuses to start with any.

use super::datatypes::Converter;
use crate::definitions::Definitions;
use crate::ingest::hl7v2::Grammar;
use crate::ingest::merge::Standing;
use serde::Deserialize;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use toml::Spanned;

/// A problem in a mapping file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: {message}")]
pub struct LoadError {
    pub file: String,
    pub line: usize,
    pub message: String,
}

/// A v2 position: `PID-3`, `PID-3.4`, `PID-3.4.2`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V2Path {
    pub segment: String,
    pub field: usize,
    pub component: Option<usize>,
    pub subcomponent: Option<usize>,
}

impl V2Path {
    /// Parses `SEG-n[.c[.s]]`.
    pub fn parse(s: &str) -> Option<V2Path> {
        let (seg, rest) = s.trim().split_once('-')?;
        if seg.len() != 3 {
            return None;
        }
        let mut nums = rest
            .split('.')
            .map(|n| n.parse::<usize>().ok().filter(|&n| n > 0));
        let field = nums.next()??;
        let component = match nums.next() {
            Some(c) => Some(c?),
            None => None,
        };
        let subcomponent = match nums.next() {
            Some(c) => Some(c?),
            None => None,
        };
        if nums.next().is_some() {
            return None;
        }
        Some(V2Path {
            segment: seg.to_string(),
            field,
            component,
            subcomponent,
        })
    }

    /// The component path below the field (`[4, 2]` for `PID-3.4.2`), without an allocation:
    /// every rule asks for it on every segment it reads.
    pub fn below_field(&self) -> BelowField {
        let mut b = BelowField {
            steps: [0; 2],
            len: 0,
        };
        for n in self.component.into_iter().chain(self.subcomponent) {
            b.steps[b.len] = n;
            b.len += 1;
        }
        b
    }
}

/// A component path of at most two steps (component, sub-component), read as a slice.
#[derive(Debug, Clone, Copy)]
pub struct BelowField {
    steps: [usize; 2],
    len: usize,
}

impl std::ops::Deref for BelowField {
    type Target = [usize];

    fn deref(&self) -> &[usize] {
        &self.steps[..self.len]
    }
}

impl std::fmt::Display for V2Path {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.segment, self.field)?;
        if let Some(c) = self.component {
            write!(f, ".{c}")?;
        }
        if let Some(s) = self.subcomponent {
            write!(f, ".{s}")?;
        }
        Ok(())
    }
}

/// One step of a FHIR element path, with what the definitions say about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// The JSON key (`valueQuantity`, `name`).
    pub key: String,
    /// True when the element repeats (max > 1).
    pub repeating: bool,
    /// `name[n]`: the n-th element (0-based) of a repeating element, shared by every rule that
    /// names it, so that several fields fill one element (one `dosageInstruction`) instead of
    /// each starting a new one.
    pub index: Option<usize>,
    /// For a choice element (`dose[x]`), its base name (`dose`): one of its types at a time.
    pub choice: Option<String>,
}

/// A checked FHIR element path relative to a resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FhirPath {
    pub steps: Vec<Step>,
    /// The FHIR type of the last step (`Identifier`, `date`, `Reference`...).
    pub leaf_type: String,
    /// Written form, for explanations.
    pub text: String,
}

/// Resolves `a.b.c` under a resource type through the core definitions.
pub fn resolve_path(resource: &str, path: &str) -> Result<FhirPath, String> {
    let defs = Definitions::core();
    let mut parent = resource.to_string();
    let mut steps: Vec<Step> = Vec::new();
    let mut leaf_type = String::new();
    for written in path.split('.') {
        let (key, index) =
            match written.strip_suffix(']').and_then(|w| w.split_once('[')) {
                Some((key, n)) => (
                    key,
                    Some(n.parse::<usize>().map_err(|_| {
                        format!("{resource}.{path}: '[{n}]' is not an element index")
                    })?),
                ),
                None => (written, None),
            };
        // Below a primitive (`birthDate.extension`) the JSON key is the `_` sibling
        // (`_birthDate`); of a list of primitives it would be a parallel list, not supported.
        if leaf_type.starts_with(|c: char| c.is_ascii_lowercase())
            && let Some(prev) = steps.last_mut()
        {
            if prev.repeating {
                return Err(format!(
                    "{resource}.{path}: '{key}' below a repeating primitive ({}) is not supported",
                    prev.key
                ));
            }
            prev.key = format!("_{}", prev.key);
        }
        let step = defs
            .child_step(&parent, key)
            .ok_or_else(|| format!("{resource}.{path}: '{key}' is not an element of {parent}"))?;
        let el = step.matched.element;
        let repeating = el.max == "*" || el.max.parse::<u32>().is_ok_and(|m| m > 1);
        if index.is_some() && !repeating {
            return Err(format!(
                "{resource}.{path}: '{key}' does not repeat, so it takes no index"
            ));
        }
        leaf_type = step.matched.type_code.to_string();
        let choice = el
            .path
            .strip_suffix("[x]")
            .and_then(|p| p.rsplit('.').next())
            .map(str::to_string);
        steps.push(Step {
            key: key.to_string(),
            repeating,
            index,
            choice,
        });
        parent = step.children_path.to_string();
    }
    Ok(FhirPath {
        steps,
        leaf_type,
        text: format!("{resource}.{path}"),
    })
}

/// A condition on a field rule: `PV1-45 valued`, `PV1-45 not valued`, `PV1-2.1 = P`, `!=`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    Valued(V2Path),
    NotValued(V2Path),
    Equals(V2Path, String),
    NotEquals(V2Path, String),
}

fn parse_condition(s: &str) -> Option<Condition> {
    let s = s.trim();
    if let Some(p) = s.strip_suffix(" not valued") {
        return Some(Condition::NotValued(V2Path::parse(p)?));
    }
    if let Some(p) = s.strip_suffix(" valued") {
        return Some(Condition::Valued(V2Path::parse(p)?));
    }
    if let Some((p, v)) = s.split_once("!=") {
        return Some(Condition::NotEquals(V2Path::parse(p)?, v.trim().into()));
    }
    let (p, v) = s.split_once('=')?;
    Some(Condition::Equals(V2Path::parse(p)?, v.trim().into()))
}

/// A field rule of a segment map.
#[derive(Debug, Clone)]
pub struct FieldRule {
    pub v2: V2Path,
    pub target: FhirPath,
    pub converter: Converter,
    pub vocabulary: Option<String>,
    /// JSON merged into the new element of the outermost repeating step (or the resource).
    pub with: Option<Value>,
    pub when: Option<Condition>,
    /// For `varies` (OBX-5): where the value type and the units are.
    pub type_from: Option<V2Path>,
    pub units: Option<V2Path>,
    pub line: usize,
}

/// One segment's map onto one resource type (`segments/PID-Patient.toml`).
#[derive(Debug, Clone)]
pub struct SegmentMap {
    pub file: String,
    pub segment: String,
    pub resource: String,
    /// Fields whose values identify the resource (its id is derived from them).
    pub id: Vec<V2Path>,
    pub fields: Vec<FieldRule>,
    /// Values set when no field gave one.
    pub defaults: Vec<(FhirPath, Value)>,
}

/// A reference from one rule's resources to the nearest resources of another rule.
#[derive(Debug, Clone)]
pub struct Link {
    pub element: FhirPath,
    pub target: usize,
    /// JSON merged into the new element of the outermost repeating step (`participant.status`).
    pub with: Option<Value>,
}

/// Which segment (by group path) becomes which resource, in one message structure.
#[derive(Debug, Clone)]
pub struct ResourceRule {
    pub name: String,
    /// Group path suffix (`ORDER_OBSERVATION.OBR`, or just `PID`).
    pub at: String,
    pub map: String,
    pub links: Vec<Link>,
    /// Merge into the nearest resource of that rule instead of creating one.
    pub into: Option<usize>,
    /// Derive the id within the nearest resource of that rule (OBX within its OBR).
    pub id_within: Option<usize>,
    pub defaults: Vec<(FhirPath, Value)>,
    /// Values set for an event (MSH-9.2), over whatever the fields gave (A03: `finished`).
    pub set_by_event: HashMap<String, Vec<(FhirPath, Value)>>,
    /// How the message stands to the resource: whether it replaces, is merged into or only
    /// names what the store holds ([`crate::ingest::merge`]).
    pub standing: Standing,
}

/// A message structure's map (`messages/ORU_R01.toml`).
#[derive(Debug, Clone)]
pub struct MessageMap {
    pub file: String,
    pub structure: String,
    pub events: Vec<String>,
    pub grammar: Grammar,
    pub rules: Vec<ResourceRule>,
}

/// One vocabulary entry: a code, or a full coding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Concept {
    pub system: Option<String>,
    pub code: String,
    pub display: Option<String>,
}

/// Everything loaded from `mappings/hl7v2/`.
#[derive(Debug, Clone)]
pub struct Mappings {
    pub dir: PathBuf,
    pub messages: Vec<MessageMap>,
    by_event: HashMap<String, usize>,
    by_structure: HashMap<String, usize>,
    pub segments: HashMap<String, SegmentMap>,
    pub vocabularies: HashMap<String, HashMap<String, Concept>>,
    /// Local identifier systems per sending facility (`identifier-systems.toml`).
    pub identifier_systems: super::identifiers::IdentifierSystems,
    /// Segment id -> field (1-based) -> (data type, name).
    pub fields: HashMap<String, Vec<(String, String)>>,
}

impl Mappings {
    /// The map for a message: by MSH-9.3 structure, then by `TYPE^EVENT`, then the `*` map.
    pub fn for_message(
        &self,
        ty: &str,
        event: &str,
        structure: Option<&str>,
    ) -> Option<&MessageMap> {
        let key = format!("{ty}^{event}");
        self.by_event
            .get(&key)
            .or_else(|| structure.and_then(|s| self.by_structure.get(s)))
            .or_else(|| self.by_event.get("*"))
            .and_then(|&i| self.messages.get(i))
    }

    /// The v2 name of a field (`PID-5` -> `Patient Name`), for explanations.
    pub fn field_name(&self, segment: &str, field: usize) -> Option<&str> {
        self.fields
            .get(segment)?
            .get(field.checked_sub(1)?)
            .map(|(_, n)| n.as_str())
    }

    /// No rules at all: every message is refused as unsupported (a gateway started where no
    /// `mappings/hl7v2/` exists still serves FHIR).
    pub fn empty(dir: &Path) -> Mappings {
        Mappings {
            dir: dir.to_path_buf(),
            messages: Vec::new(),
            by_event: HashMap::new(),
            by_structure: HashMap::new(),
            segments: HashMap::new(),
            vocabularies: HashMap::new(),
            identifier_systems: Default::default(),
            fields: HashMap::new(),
        }
    }

    /// Loads and checks a mappings directory (the one holding `hl7v2/`).
    pub fn load(dir: &Path) -> Result<Mappings, Vec<LoadError>> {
        let root = dir.join("hl7v2");
        let mut errors = Vec::new();
        let fields = load_fields(&root.join("segment-fields.toml"), &mut errors);
        let vocabularies = load_vocabularies(&root.join("vocabulary.toml"), &mut errors);
        let systems_file = root.join("identifier-systems.toml");
        let identifier_systems = super::identifiers::IdentifierSystems::load(&systems_file)
            .unwrap_or_else(|es| {
                errors.extend(es.iter().map(|e| err(&systems_file, 0, e)));
                Default::default()
            });
        let mut segments = HashMap::new();
        for (path, text) in toml_files(&root.join("segments"), &mut errors) {
            if let Some(m) = load_segment(&path, &text, &fields, &vocabularies, &mut errors) {
                let key = path
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default();
                segments.insert(key, m);
            }
        }
        let mut messages = Vec::new();
        for (path, text) in toml_files(&root.join("messages"), &mut errors) {
            if let Some(m) = load_message(&path, &text, &segments, &mut errors) {
                messages.push(m);
            }
        }
        let mut by_event = HashMap::new();
        let mut by_structure = HashMap::new();
        for (i, m) in messages.iter().enumerate() {
            by_structure.insert(m.structure.clone(), i);
            for e in &m.events {
                if let Some(prev) = by_event.insert(e.clone(), i) {
                    errors.push(LoadError {
                        file: m.file.clone(),
                        line: 1,
                        message: format!("event {e} is also mapped by {}", messages[prev].file),
                    });
                }
            }
        }
        if errors.is_empty() {
            Ok(Mappings {
                dir: dir.to_path_buf(),
                messages,
                by_event,
                by_structure,
                segments,
                vocabularies,
                identifier_systems,
                fields,
            })
        } else {
            Err(errors)
        }
    }
}

fn toml_files(dir: &Path, errors: &mut Vec<LoadError>) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        errors.push(err(dir, 0, "missing directory"));
        return out;
    };
    let mut paths: Vec<PathBuf> = rd
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    paths.sort();
    for p in paths {
        match std::fs::read_to_string(&p) {
            Ok(t) => out.push((p, t)),
            Err(e) => errors.push(err(&p, 0, &e.to_string())),
        }
    }
    out
}

fn err(path: &Path, line: usize, message: &str) -> LoadError {
    LoadError {
        file: path.display().to_string(),
        line,
        message: message.to_string(),
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    1 + text
        .as_bytes()
        .iter()
        .take(offset)
        .filter(|&&b| b == b'\n')
        .count()
}

fn toml_error(path: &Path, text: &str, e: toml::de::Error) -> LoadError {
    let line = e.span().map_or(0, |s| line_of(text, s.start));
    err(path, line, e.message())
}

#[derive(Deserialize)]
struct FieldsFile {
    fields: Vec<(String, String)>,
}

fn load_fields(path: &Path, errors: &mut Vec<LoadError>) -> HashMap<String, Vec<(String, String)>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            errors.push(err(path, 0, &e.to_string()));
            return HashMap::new();
        }
    };
    match toml::from_str::<BTreeMap<String, FieldsFile>>(&text) {
        Ok(m) => m.into_iter().map(|(k, v)| (k, v.fields)).collect(),
        Err(e) => {
            errors.push(toml_error(path, &text, e));
            HashMap::new()
        }
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum ConceptFile {
    Code(String),
    Coding {
        system: Option<String>,
        code: String,
        display: Option<String>,
    },
}

fn load_vocabularies(
    path: &Path,
    errors: &mut Vec<LoadError>,
) -> HashMap<String, HashMap<String, Concept>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            errors.push(err(path, 0, &e.to_string()));
            return HashMap::new();
        }
    };
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Table {
        system: Option<String>,
        codes: BTreeMap<String, ConceptFile>,
    }
    match toml::from_str::<BTreeMap<String, Table>>(&text) {
        Ok(m) => m
            .into_iter()
            .map(|(name, t)| {
                let codes = t
                    .codes
                    .into_iter()
                    .map(|(k, c)| {
                        let c = match c {
                            ConceptFile::Code(code) => Concept {
                                system: t.system.clone(),
                                code,
                                display: None,
                            },
                            ConceptFile::Coding {
                                system,
                                code,
                                display,
                            } => Concept {
                                system: system.or_else(|| t.system.clone()),
                                code,
                                display,
                            },
                        };
                        (k, c)
                    })
                    .collect();
                (name, codes)
            })
            .collect(),
        Err(e) => {
            errors.push(toml_error(path, &text, e));
            HashMap::new()
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SegmentFile {
    segment: String,
    resource: String,
    #[serde(default)]
    id: Vec<String>,
    #[serde(default)]
    defaults: toml::Table,
    #[serde(default)]
    field: Vec<Spanned<FieldFile>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FieldFile {
    v2: String,
    fhir: String,
    #[serde(rename = "type")]
    datatype: Option<String>,
    vocabulary: Option<String>,
    with: Option<toml::Table>,
    when: Option<String>,
    type_from: Option<String>,
    units: Option<String>,
}

fn load_segment(
    path: &Path,
    text: &str,
    fields: &HashMap<String, Vec<(String, String)>>,
    vocab: &HashMap<String, HashMap<String, Concept>>,
    errors: &mut Vec<LoadError>,
) -> Option<SegmentMap> {
    let file: SegmentFile = match toml::from_str(text) {
        Ok(f) => f,
        Err(e) => {
            errors.push(toml_error(path, text, e));
            return None;
        }
    };
    let before = errors.len();
    let Some(table) = fields.get(&file.segment) else {
        errors.push(err(
            path,
            1,
            &format!("segment {} is not in segment-fields.toml", file.segment),
        ));
        return None;
    };
    if !Definitions::core().is_resource_type(&file.resource) {
        errors.push(err(
            path,
            1,
            &format!("{} is not an R4 resource type", file.resource),
        ));
        return None;
    }
    let check_v2 = |s: &str, line: usize, errors: &mut Vec<LoadError>| -> Option<V2Path> {
        match V2Path::parse(s) {
            Some(p) if p.segment == file.segment && p.field <= table.len() => Some(p),
            Some(p) if p.segment != file.segment => {
                errors.push(err(
                    path,
                    line,
                    &format!("{s} is not a field of {}", file.segment),
                ));
                None
            }
            Some(_) => {
                errors.push(err(
                    path,
                    line,
                    &format!("{s}: {} has {} fields", file.segment, table.len()),
                ));
                None
            }
            None => {
                errors.push(err(
                    path,
                    line,
                    &format!("'{s}' is not a v2 field (SEG-n.c.s)"),
                ));
                None
            }
        }
    };
    let id = file
        .id
        .iter()
        .filter_map(|s| check_v2(s, 1, errors))
        .collect();
    let mut rules = Vec::new();
    for f in &file.field {
        let line = line_of(text, f.span().start);
        let f = f.get_ref();
        let Some(v2) = check_v2(&f.v2, line, errors) else {
            continue;
        };
        let target = match resolve_path(&file.resource, &f.fhir) {
            Ok(t) => t,
            Err(e) => {
                errors.push(err(path, line, &format!("unknown FHIR path: {e}")));
                continue;
            }
        };
        let v2_type = f.datatype.clone().unwrap_or_else(|| {
            if v2.component.is_some() {
                "ST".into()
            } else {
                table
                    .get(v2.field - 1)
                    .map(|(t, _)| t.clone())
                    .unwrap_or_else(|| "ST".into())
            }
        });
        let converter = match Converter::choose(&v2_type, &target.leaf_type) {
            Ok(c) => c,
            Err(e) => {
                errors.push(err(path, line, &format!("{}: {e}", f.v2)));
                continue;
            }
        };
        if let Some(v) = &f.vocabulary
            && !vocab.contains_key(v)
        {
            errors.push(err(
                path,
                line,
                &format!("vocabulary {v} is not in vocabulary.toml"),
            ));
        }
        let when = match f.when.as_deref().map(|w| (w, parse_condition(w))) {
            None => None,
            Some((_, Some(c))) => Some(c),
            Some((w, None)) => {
                errors.push(err(
                    path,
                    line,
                    &format!("condition '{w}' is not understood"),
                ));
                None
            }
        };
        let aux = |s: &Option<String>, errors: &mut Vec<LoadError>| {
            s.as_deref().and_then(|s| check_v2(s, line, errors))
        };
        let type_from = aux(&f.type_from, errors);
        let units = aux(&f.units, errors);
        if units.is_some() && !matches!(converter, Converter::Varies | Converter::Quantity) {
            errors.push(err(
                path,
                line,
                &format!("{}: `units` is for a Quantity or OBX-5 only", f.v2),
            ));
        }
        let with = f.with.as_ref().and_then(|t| {
            check_with(&file.resource, &target, t)
                .map_err(|e| errors.push(err(path, line, &e)))
                .ok()
        });
        rules.push(FieldRule {
            v2,
            target,
            converter,
            vocabulary: f.vocabulary.clone(),
            with,
            when,
            type_from,
            units,
            line,
        });
    }
    let defaults = defaults(&file.resource, &file.defaults, path, errors);
    (errors.len() == before).then(|| SegmentMap {
        file: path.display().to_string(),
        segment: file.segment,
        resource: file.resource,
        id,
        fields: rules,
        defaults,
    })
}

/// `with` keys are element names under the outermost repeating step of the target.
fn check_with(resource: &str, target: &FhirPath, with: &toml::Table) -> Result<Value, String> {
    let depth = target
        .steps
        .iter()
        .position(|s| s.repeating)
        .map_or(0, |i| i + 1);
    let base: Vec<&str> = target.steps[..depth]
        .iter()
        .map(|s| s.key.as_str())
        .collect();
    for k in with.keys() {
        let p = if base.is_empty() {
            k.clone()
        } else {
            format!("{}.{k}", base.join("."))
        };
        resolve_path(resource, &p).map_err(|e| format!("with: unknown FHIR path: {e}"))?;
    }
    serde_json::to_value(with).map_err(|e| e.to_string())
}

fn defaults(
    resource: &str,
    table: &toml::Table,
    path: &Path,
    errors: &mut Vec<LoadError>,
) -> Vec<(FhirPath, Value)> {
    let mut out = Vec::new();
    for (k, v) in table {
        match (resolve_path(resource, k), serde_json::to_value(v)) {
            (Ok(p), Ok(v)) => out.push((p, v)),
            (Err(e), _) => errors.push(err(path, 1, &format!("defaults: unknown FHIR path: {e}"))),
            (_, Err(e)) => errors.push(err(path, 1, &e.to_string())),
        }
    }
    out
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MessageFile {
    structure: String,
    events: Vec<String>,
    grammar: Spanned<String>,
    #[serde(default)]
    resource: Vec<Spanned<RuleFile>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    name: String,
    at: String,
    map: String,
    #[serde(default)]
    links: BTreeMap<String, LinkFile>,
    into: Option<String>,
    id_within: Option<String>,
    #[serde(default)]
    defaults: toml::Table,
    #[serde(default)]
    set_by_event: BTreeMap<String, toml::Table>,
    #[serde(default)]
    standing: Standing,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum LinkFile {
    To(String),
    With { to: String, with: toml::Table },
}

fn load_message(
    path: &Path,
    text: &str,
    segments: &HashMap<String, SegmentMap>,
    errors: &mut Vec<LoadError>,
) -> Option<MessageMap> {
    let file: MessageFile = match toml::from_str(text) {
        Ok(f) => f,
        Err(e) => {
            errors.push(toml_error(path, text, e));
            return None;
        }
    };
    let before = errors.len();
    let grammar = match Grammar::parse(file.grammar.get_ref()) {
        Ok(g) => g,
        Err(e) => {
            errors.push(err(
                path,
                line_of(text, file.grammar.span().start),
                &format!("grammar: {e}"),
            ));
            return None;
        }
    };
    let names: Vec<String> = file
        .resource
        .iter()
        .map(|r| r.get_ref().name.clone())
        .collect();
    let mut rules = Vec::new();
    for r in &file.resource {
        let line = line_of(text, r.span().start);
        let r = r.get_ref();
        let Some(seg) = segments.get(&r.map) else {
            errors.push(err(
                path,
                line,
                &format!("no segment map segments/{}.toml", r.map),
            ));
            continue;
        };
        if r.at.rsplit('.').next() != Some(seg.segment.as_str()) {
            errors.push(err(
                path,
                line,
                &format!(
                    "at = '{}' does not end with {}, the segment of {}",
                    r.at, seg.segment, r.map
                ),
            ));
        }
        let rule_index = |n: &str, errors: &mut Vec<LoadError>| {
            let i = names.iter().position(|x| x == n);
            if i.is_none() {
                errors.push(err(path, line, &format!("no resource rule named '{n}'")));
            }
            i
        };
        let mut links = Vec::new();
        for (element, link) in &r.links {
            let (target, with) = match link {
                LinkFile::To(t) => (t, None),
                LinkFile::With { to, with } => (to, Some(with)),
            };
            let Some(t) = rule_index(target, errors) else {
                continue;
            };
            match resolve_path(&seg.resource, element) {
                Ok(p) if p.leaf_type == "Reference" => {
                    let with = match with.map(|w| check_with(&seg.resource, &p, w)) {
                        Some(Ok(v)) => Some(v),
                        Some(Err(e)) => {
                            errors.push(err(path, line, &e));
                            None
                        }
                        None => None,
                    };
                    links.push(Link {
                        element: p,
                        target: t,
                        with,
                    })
                }
                Ok(p) => errors.push(err(
                    path,
                    line,
                    &format!("{} is a {}, not a Reference", p.text, p.leaf_type),
                )),
                Err(e) => errors.push(err(path, line, &format!("unknown FHIR path: {e}"))),
            }
        }
        let into = r.into.as_deref().and_then(|n| rule_index(n, errors));
        let id_within = r.id_within.as_deref().and_then(|n| rule_index(n, errors));
        let defaults_v = defaults(&seg.resource, &r.defaults, path, errors);
        let by_event = r
            .set_by_event
            .iter()
            .map(|(e, t)| (e.clone(), defaults(&seg.resource, t, path, errors)))
            .collect();
        rules.push(ResourceRule {
            name: r.name.clone(),
            at: r.at.clone(),
            map: r.map.clone(),
            links,
            into,
            id_within,
            defaults: defaults_v,
            set_by_event: by_event,
            standing: r.standing,
        });
    }
    (errors.len() == before).then(|| MessageMap {
        file: path.display().to_string(),
        structure: file.structure,
        events: file.events,
        grammar,
        rules,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v2_paths_parse() {
        let p = V2Path::parse("PID-3.4.2").unwrap();
        assert_eq!(
            (p.field, p.component, p.subcomponent),
            (3, Some(4), Some(2))
        );
        assert_eq!(p.to_string(), "PID-3.4.2");
        assert!(V2Path::parse("PID-0").is_none());
        assert!(V2Path::parse("PID3").is_none());
        assert!(V2Path::parse("PID-3.x").is_none());
    }

    #[test]
    fn fhir_paths_resolve_through_definitions() {
        let p = resolve_path("Encounter", "participant.individual").unwrap();
        assert!(p.steps[0].repeating);
        assert_eq!(p.leaf_type, "Reference");
        assert_eq!(
            resolve_path("Observation", "valueQuantity")
                .unwrap()
                .leaf_type,
            "Quantity"
        );
        assert!(resolve_path("Patient", "nmae").is_err());
    }

    #[test]
    fn the_shipped_mappings_load() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("mappings");
        let m = Mappings::load(&dir).unwrap_or_else(|e| panic!("{e:#?}"));
        assert!(m.for_message("ADT", "A01", None).is_some());
        assert!(m.for_message("ORU", "R01", Some("ORU_R01")).is_some());
    }

    #[test]
    fn errors_name_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("mappings/hl7v2");
        let root = dir.path().join("hl7v2");
        std::fs::create_dir_all(root.join("segments")).unwrap();
        std::fs::create_dir_all(root.join("messages")).unwrap();
        for f in ["segment-fields.toml", "vocabulary.toml"] {
            std::fs::copy(src.join(f), root.join(f)).unwrap();
        }
        std::fs::write(
            root.join("segments/PID-Patient.toml"),
            "segment = \"PID\"\nresource = \"Patient\"\n\n[[field]]\nv2 = \"PID-5\"\nfhir = \"nmae\"\n\n[[field]]\nv2 = \"PID-99\"\nfhir = \"name\"\n",
        )
        .unwrap();
        let errs = Mappings::load(dir.path()).unwrap_err();
        let shown: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
        assert!(
            shown
                .iter()
                .any(|e| e.contains("PID-Patient.toml:4: unknown FHIR path")),
            "{shown:?}"
        );
        assert!(
            shown
                .iter()
                .any(|e| e.contains("PID-Patient.toml:8: PID-99")),
            "{shown:?}"
        );
    }
}
