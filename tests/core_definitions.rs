//! Corpus test: the embedded core definitions equal the official `hl7.fhir.r4.core` 4.0.1 package.
//!
//! Reads `fhir-r4-core/hl7.fhir.r4.core-4.0.1.tgz` in place from `$HUITONG_CORPORA` (default
//! `../shared/corpora` beside the crate). Without it the test prints that it skipped, unless
//! `HUITONG_REQUIRE_CORPORA=1`, which makes absence a failure.
//!
//! The official package is compacted here independently of `import-core`, with the same rules, and
//! compared field by field: this is what proves the import (and `profiles/core/corrections.json`)
//! faithful.

use huitong::definitions::{Definitions, StructureKind};
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::PathBuf;

/// The official resources this test compares with, by type.
#[derive(Default)]
struct Official {
    structures: Vec<Value>,
    search_parameters: Vec<Value>,
    compartments: Vec<Value>,
    terminology: BTreeMap<(String, String), Value>,
}

fn corpora() -> Option<PathBuf> {
    let dir = std::env::var_os("HUITONG_CORPORA")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/corpora"))
        });
    let tgz = dir.join("fhir-r4-core/hl7.fhir.r4.core-4.0.1.tgz");
    if tgz.is_file() {
        return Some(tgz);
    }
    if std::env::var("HUITONG_REQUIRE_CORPORA").as_deref() == Ok("1") {
        panic!(
            "corpora required (HUITONG_REQUIRE_CORPORA=1) but not found at {}",
            tgz.display()
        );
    }
    println!("skipped: corpora not found at {}", tgz.display());
    None
}

fn load_official(tgz: &PathBuf) -> Official {
    let file = std::fs::File::open(tgz).expect("open official package");
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let mut official = Official::default();
    for entry in archive.entries().expect("read tar") {
        let mut entry = entry.expect("tar entry");
        let path = entry
            .path()
            .expect("entry path")
            .to_string_lossy()
            .into_owned();
        let Some(name) = path.strip_prefix("package/") else {
            continue;
        };
        let wanted = [
            "StructureDefinition-",
            "SearchParameter-",
            "CompartmentDefinition-",
            "ValueSet-",
            "CodeSystem-",
        ];
        if !wanted.iter().any(|w| name.starts_with(w)) || !name.ends_with(".json") {
            continue;
        }
        let mut text = Vec::new();
        entry.read_to_end(&mut text).expect("read entry");
        let r: Value = serde_json::from_slice(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        match r["resourceType"].as_str() {
            Some("StructureDefinition") => official.structures.push(r),
            Some("SearchParameter") => official.search_parameters.push(r),
            Some("CompartmentDefinition") => official.compartments.push(r),
            Some(rt @ ("ValueSet" | "CodeSystem")) => {
                let url = r["url"].as_str().unwrap_or_default().to_string();
                official.terminology.insert((rt.to_string(), url), r);
            }
            _ => {}
        }
    }
    official
}

/// Core types: specialisations and the roots, of kind primitive-type, complex-type or resource.
fn is_core_structure(sd: &Value) -> bool {
    matches!(
        sd["kind"].as_str(),
        Some("primitive-type" | "complex-type" | "resource")
    ) && (sd.get("baseDefinition").is_none() || sd["derivation"] == "specialization")
}

fn copy_strings(from: &Value, key: &str, to: &mut Map<String, Value>, as_key: &str) {
    if let Some(a) = from.get(key).and_then(Value::as_array)
        && !a.is_empty()
    {
        to.insert(as_key.into(), Value::Array(a.clone()));
    }
}

/// An official snapshot element in the artefact's compact form (see `ElementDef`).
fn compact_element(e: &Value) -> Value {
    let mut o = Map::new();
    o.insert("path".into(), e["path"].clone());
    if let Some(s) = e.get("sliceName") {
        o.insert("sliceName".into(), s.clone());
    }
    o.insert("min".into(), e.get("min").cloned().unwrap_or(json!(0)));
    o.insert("max".into(), e.get("max").cloned().unwrap_or(json!("*")));
    let types: Vec<Value> = e["type"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| {
            let mut x = Map::new();
            x.insert("code".into(), t.get("code").cloned().unwrap_or(json!("")));
            copy_strings(t, "profile", &mut x, "profile");
            copy_strings(t, "targetProfile", &mut x, "targetProfile");
            let fhir_type = t["extension"].as_array().into_iter().flatten().find(|x| {
                x["url"] == "http://hl7.org/fhir/StructureDefinition/structuredefinition-fhir-type"
            });
            if let Some(f) = fhir_type {
                x.insert("fhirType".into(), f["valueUrl"].clone());
            }
            let regex = t["extension"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|x| x["url"] == "http://hl7.org/fhir/StructureDefinition/regex");
            if let Some(r) = regex {
                x.insert("regex".into(), r["valueString"].clone());
            }
            Value::Object(x)
        })
        .collect();
    if !types.is_empty() {
        o.insert("types".into(), Value::Array(types));
    }
    if let Some(c) = e.get("contentReference") {
        o.insert("contentReference".into(), c.clone());
    }
    if let Some(b) = e.get("binding") {
        let mut x = Map::new();
        x.insert("strength".into(), b["strength"].clone());
        if let Some(vs) = b.get("valueSet") {
            x.insert("valueSet".into(), vs.clone());
        }
        o.insert("binding".into(), Value::Object(x));
    }
    let constraints: Vec<Value> = e["constraint"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            let mut x = Map::new();
            x.insert("key".into(), c["key"].clone());
            x.insert("severity".into(), c["severity"].clone());
            if let Some(ex) = c.get("expression") {
                x.insert("expression".into(), ex.clone());
            }
            Value::Object(x)
        })
        .collect();
    if !constraints.is_empty() {
        o.insert("constraints".into(), Value::Array(constraints));
    }
    for (prefix, key) in [("fixed", "fixed"), ("pattern", "pattern")] {
        let found = e.as_object().into_iter().flatten().find(|(k, _)| {
            k.strip_prefix(prefix)
                .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_uppercase()))
        });
        if let Some((_, v)) = found {
            o.insert(key.into(), v.clone());
        }
    }
    if e["isSummary"] == true {
        o.insert("summary".into(), json!(true));
    }
    if e["isModifier"] == true {
        o.insert("modifier".into(), json!(true));
    }
    Value::Object(o)
}

/// An official SearchParameter in the artefact's compact form (see `SearchParamDef`).
fn compact_search_param(p: &Value) -> Value {
    let mut o = Map::new();
    o.insert("url".into(), p["url"].clone());
    o.insert("code".into(), p["code"].clone());
    o.insert("base".into(), p.get("base").cloned().unwrap_or(json!([])));
    o.insert("type".into(), p["type"].clone());
    if let Some(e) = p.get("expression") {
        o.insert("expression".into(), e.clone());
    }
    for k in ["target", "modifier", "comparator"] {
        copy_strings(p, k, &mut o, k);
    }
    let components: Vec<Value> = p["component"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| json!([c["definition"], c["expression"]]))
        .collect();
    if !components.is_empty() {
        o.insert("component".into(), Value::Array(components));
    }
    Value::Object(o)
}

/// Every (code, display) of a CodeSystem's concept tree, flattened with the parent code.
fn concepts(list: &Value, parent: &str, out: &mut Vec<(String, String, String)>) {
    for c in list.as_array().into_iter().flatten() {
        let code = c["code"].as_str().unwrap_or_default().to_string();
        let display = c["display"].as_str().unwrap_or_default().to_string();
        out.push((parent.to_string(), code.clone(), display));
        concepts(&c["concept"], &code, out);
    }
}

#[test]
fn core_definitions_equal_the_official_package() {
    let Some(tgz) = corpora() else { return };
    let official = load_official(&tgz);
    let defs = Definitions::core();
    let mut failures: Vec<String> = Vec::new();

    // Structures: the same core set, no extras, and equal snapshots element by element.
    let core: Vec<&Value> = official
        .structures
        .iter()
        .filter(|sd| is_core_structure(sd))
        .collect();
    let official_resources: BTreeSet<&str> = core
        .iter()
        .filter(|sd| sd["kind"] == "resource" && sd["abstract"] != true)
        .filter_map(|sd| sd["type"].as_str())
        .collect();
    let ours_resources: BTreeSet<&str> = defs.resource_types().collect();
    assert_eq!(
        official_resources.len(),
        146,
        "the official package defines 146 concrete resource types"
    );
    for missing in official_resources.difference(&ours_resources) {
        failures.push(format!("resource type {missing} missing"));
    }
    for extra in ours_resources.difference(&official_resources) {
        failures.push(format!("resource type {extra} is not in the official core"));
    }
    let official_names: BTreeSet<&str> = core.iter().filter_map(|sd| sd["type"].as_str()).collect();
    for sd in &defs.artefact().structures {
        if !official_names.contains(sd.name.as_str()) {
            failures.push(format!("structure {} is not in the official core", sd.name));
        }
    }
    let (mut elements_compared, mut bindings_compared, mut constraints_compared) =
        (0usize, 0usize, 0usize);
    for sd in &core {
        let name = sd["type"].as_str().unwrap_or_default();
        let Some(ours) = defs.structure(name) else {
            failures.push(format!("structure {name} missing"));
            continue;
        };
        let kind = match sd["kind"].as_str() {
            Some("primitive-type") => StructureKind::PrimitiveType,
            Some("complex-type") => StructureKind::ComplexType,
            _ => StructureKind::Resource,
        };
        let base = sd["baseDefinition"]
            .as_str()
            .and_then(|b| b.rsplit('/').next());
        if ours.url != sd["url"].as_str().unwrap_or_default()
            || ours.kind != kind
            || ours.is_abstract != (sd["abstract"] == true)
            || ours.base.as_deref() != base
        {
            failures.push(format!("{name}: url, kind, abstract or base differ"));
        }
        let theirs: Vec<Value> = sd["snapshot"]["element"]
            .as_array()
            .into_iter()
            .flatten()
            .map(compact_element)
            .collect();
        if theirs.len() != ours.elements.len() {
            failures.push(format!(
                "{name}: {} elements, official {}",
                ours.elements.len(),
                theirs.len()
            ));
        }
        for (i, (t, o)) in theirs.iter().zip(&ours.elements).enumerate() {
            let o = serde_json::to_value(o).expect("serialise element");
            elements_compared += 1;
            bindings_compared += usize::from(t.get("binding").is_some());
            constraints_compared += t["constraints"].as_array().map_or(0, Vec::len);
            for key in ["path", "sliceName", "min", "max"] {
                if t.get(key) != o.get(key) {
                    failures.push(format!(
                        "{name} element {i} ({}): {key} is {:?}, official {:?}",
                        t["path"],
                        o.get(key),
                        t.get(key)
                    ));
                }
            }
            if t != &o {
                let fields: Vec<&String> = t
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(k, _)| k)
                    .chain(o.as_object().into_iter().flatten().map(|(k, _)| k))
                    .filter(|k| t.get(k.as_str()) != o.get(k.as_str()))
                    .collect::<BTreeSet<_>>()
                    .into_iter()
                    .collect();
                failures.push(format!("{name} element {}: {fields:?} differ", t["path"]));
            }
        }
    }

    // Search parameters: those of the official core (the package's experimental ones are the spec's
    // examples and extension-based parameters of its profiles, not core ones).
    let official_params: BTreeMap<&str, Value> = official
        .search_parameters
        .iter()
        .filter(|p| p["experimental"] != true)
        .map(|p| {
            (
                p["url"].as_str().unwrap_or_default(),
                compact_search_param(p),
            )
        })
        .collect();
    let ours_params: BTreeMap<&str, Value> = defs
        .artefact()
        .search_parameters
        .iter()
        .map(|p| {
            (
                p.url.as_str(),
                serde_json::to_value(p).expect("serialise search parameter"),
            )
        })
        .collect();
    type ParamKey = (String, String, String, String);
    let per_type = |params: &BTreeMap<&str, Value>| -> BTreeMap<String, BTreeSet<ParamKey>> {
        let mut m: BTreeMap<String, BTreeSet<ParamKey>> = BTreeMap::new();
        for p in params.values() {
            for base in p["base"].as_array().into_iter().flatten() {
                m.entry(base.as_str().unwrap_or_default().to_string())
                    .or_default()
                    .insert((
                        p["code"].as_str().unwrap_or_default().to_string(),
                        p["type"].as_str().unwrap_or_default().to_string(),
                        p["expression"].as_str().unwrap_or_default().to_string(),
                        p["url"].as_str().unwrap_or_default().to_string(),
                    ));
            }
        }
        m
    };
    let (theirs_by_type, ours_by_type) = (per_type(&official_params), per_type(&ours_params));
    for rt in theirs_by_type
        .keys()
        .chain(ours_by_type.keys())
        .collect::<BTreeSet<_>>()
    {
        let (t, o) = (theirs_by_type.get(rt), ours_by_type.get(rt));
        if t != o {
            let empty = BTreeSet::new();
            let (t, o) = (t.unwrap_or(&empty), o.unwrap_or(&empty));
            failures.push(format!(
                "search parameters of {rt}: ours only {:?}, official only {:?}",
                o.difference(t).collect::<Vec<_>>(),
                t.difference(o).collect::<Vec<_>>()
            ));
        }
    }
    for (url, t) in &official_params {
        if let Some(o) = ours_params.get(url)
            && o != t
        {
            failures.push(format!("search parameter {url}: ours {o}, official {t}"));
        }
    }

    // Compartments (the package also holds an example Device compartment; compare the canonical ones).
    for c in &defs.artefact().compartments {
        let url = format!(
            "http://hl7.org/fhir/CompartmentDefinition/{}",
            lower_first(&c.code)
        );
        let Some(t) = official
            .compartments
            .iter()
            .find(|t| t["url"] == url.as_str())
        else {
            failures.push(format!("compartment {url} not in the official package"));
            continue;
        };
        let theirs: Vec<(String, Vec<String>)> = t["resource"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| {
                let params = r["param"].as_array().into_iter().flatten();
                (
                    r["code"].as_str().unwrap_or_default().to_string(),
                    params
                        .filter_map(|p| p.as_str().map(String::from))
                        .collect(),
                )
            })
            .collect();
        if theirs != c.resources {
            failures.push(format!("compartment {} differs", c.code));
        }
    }
    if defs.artefact().compartments.len() != 5 {
        failures.push(format!(
            "{} compartments, expected 5",
            defs.artefact().compartments.len()
        ));
    }

    // Terminology: every kept ValueSet and CodeSystem exists in the official package with the same
    // version and the same concept tree (codes and displays).
    let mut concepts_compared = 0usize;
    for r in defs
        .artefact()
        .value_sets
        .iter()
        .chain(&defs.artefact().code_systems)
    {
        let key = (
            r["resourceType"].as_str().unwrap_or_default().to_string(),
            r["url"].as_str().unwrap_or_default().to_string(),
        );
        let Some(t) = official.terminology.get(&key) else {
            failures.push(format!(
                "{} {} is not in the official package",
                key.0, key.1
            ));
            continue;
        };
        if r["version"] != t["version"] {
            failures.push(format!(
                "{} {}: version {} differs from official {}",
                key.0, key.1, r["version"], t["version"]
            ));
        }
        let (mut ours_c, mut theirs_c) = (Vec::new(), Vec::new());
        concepts(&r["concept"], "", &mut ours_c);
        concepts(&t["concept"], "", &mut theirs_c);
        for (inc_o, inc_t) in [(&r["compose"]["include"], &t["compose"]["include"])] {
            let systems = |v: &Value| -> Vec<Value> {
                v.as_array()
                    .into_iter()
                    .flatten()
                    .map(|i| json!([i["system"], i["valueSet"], i["filter"]]))
                    .collect()
            };
            if systems(inc_o) != systems(inc_t) {
                failures.push(format!("{} {}: compose.include differs", key.0, key.1));
            }
            for (a, b) in inc_o
                .as_array()
                .into_iter()
                .flatten()
                .zip(inc_t.as_array().into_iter().flatten())
            {
                concepts(&a["concept"], "include", &mut ours_c);
                concepts(&b["concept"], "include", &mut theirs_c);
            }
        }
        concepts_compared += theirs_c.len();
        if ours_c != theirs_c {
            failures.push(format!("{} {}: concepts differ", key.0, key.1));
        }
    }

    println!(
        "compared {} structures ({} resource types), {elements_compared} elements, {bindings_compared} bindings, \
         {constraints_compared} constraints, {} search parameters, {} compartments, {} value sets, {} code systems \
         ({concepts_compared} concepts) with the official package: {} differences",
        core.len(),
        official_resources.len(),
        official_params.len(),
        defs.artefact().compartments.len(),
        defs.artefact().value_sets.len(),
        defs.artefact().code_systems.len(),
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} differences from the official package:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

fn lower_first(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_lowercase().chain(c).collect(),
        None => String::new(),
    }
}

/// What the snapshot of a profile says of one element, for comparing two copies of it.
fn element_key(e: &Value) -> String {
    let types: Vec<String> = e["type"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| format!("{}{}{}", t["code"], t["profile"], t["targetProfile"]))
        .collect();
    let constraints: Vec<String> = e["constraint"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| format!("{}:{}", c["key"], c["expression"]))
        .collect();
    let fixed: Vec<String> = e
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(k, _)| k.starts_with("fixed") || k.starts_with("pattern"))
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    format!(
        "{} {} {}..{} {types:?} {}|{} {constraints:?} {fixed:?} {}",
        e["id"],
        e["path"],
        e["min"],
        e["max"],
        e["binding"]["strength"],
        e["binding"]["valueSet"],
        e["slicing"]["discriminator"]
    )
}

/// The embedded core profiles (`profiles/core/r4-profiles.json`: vital signs, lipid profile,
/// genetics, shareable artefacts...) are the official package's profiles, each with the same
/// snapshot, element by element. Not among them: extensions, the two Quantity profiles (the core
/// artefact carries SimpleQuantity and MoneyQuantity as types) and the two example Composition
/// profiles (examples in the specification, not profiles to build on).
#[test]
fn core_profiles_equal_the_official_package() {
    let Some(tgz) = corpora() else { return };
    let official = load_official(&tgz);
    let embedded: BTreeMap<&str, &Value> = huitong::definitions::core_profiles()
        .iter()
        .map(|p| (p["url"].as_str().unwrap(), p))
        .collect();
    let wanted: BTreeMap<&str, &Value> = official
        .structures
        .iter()
        .filter(|sd| {
            sd["derivation"] == "constraint"
                && sd["type"] != "Extension"
                && !["SimpleQuantity", "MoneyQuantity"].contains(&sd["id"].as_str().unwrap_or(""))
                && !sd["id"].as_str().unwrap_or("").starts_with("example-")
        })
        .map(|sd| (sd["url"].as_str().unwrap(), sd))
        .collect();
    let missing: Vec<&&str> = wanted
        .keys()
        .filter(|u| !embedded.contains_key(*u))
        .collect();
    let extra: Vec<&&str> = embedded
        .keys()
        .filter(|u| !wanted.contains_key(*u))
        .collect();
    let mut differ = Vec::new();
    for (url, ours) in &embedded {
        let Some(theirs) = wanted.get(url) else {
            continue;
        };
        let keys = |sd: &Value| -> Vec<String> {
            sd["snapshot"]["element"]
                .as_array()
                .into_iter()
                .flatten()
                .map(element_key)
                .collect()
        };
        let (a, b) = (keys(ours), keys(theirs));
        if a != b {
            let first = a.iter().zip(&b).find(|(x, y)| x != y);
            differ.push(format!(
                "{url}: {} vs {} elements, first difference {first:?}",
                a.len(),
                b.len()
            ));
        }
    }
    println!(
        "core profiles: {} embedded, {} official, {} missing, {} extra, {} differ",
        embedded.len(),
        wanted.len(),
        missing.len(),
        extra.len(),
        differ.len()
    );
    assert!(missing.is_empty(), "not embedded: {missing:?}");
    assert!(extra.is_empty(), "not in the official package: {extra:?}");
    assert!(differ.is_empty(), "{differ:#?}");
}
