//! The conformance resource registry: every StructureDefinition, ValueSet, CodeSystem, ConceptMap,
//! NamingSystem, SearchParameter and Questionnaire the gateway knows, by canonical URL and version.
//!
//! Sources, in the order they are loaded: the value sets and code systems of the embedded core
//! artefact and the core specification's own profiles (`vitalsigns`, ...), then every JSON file or
//! FHIR package (`.tgz`) under the `profiles/` folders, then what clients post to the server. A
//! later resource with the same URL and version replaces an earlier one.
//!
//! Readers take a cheap snapshot ([`Registry::catalogue`]): an `Arc` of an immutable catalogue that
//! a writer replaces whole (copy on write). Adding resources is rare (start-up, an administrator
//! posting a profile); reading happens on every validation, so reads never wait on a lock held
//! during a load. [`Catalogue::generation`] changes with every replacement, so caches of compiled
//! artefacts (validation plans, expansions) know when to drop what they built.

use crate::definitions::Definitions;
use crate::model::FhirError;
use serde_json::Value;
use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

/// The resource types the registry holds.
pub const CONFORMANCE_TYPES: [&str; 7] = [
    "StructureDefinition",
    "ValueSet",
    "CodeSystem",
    "ConceptMap",
    "NamingSystem",
    "SearchParameter",
    // QuestionnaireResponses are validated against the Questionnaire their canonical names.
    "Questionnaire",
];

/// True for a resource type the registry holds.
pub fn is_conformance_type(ty: &str) -> bool {
    CONFORMANCE_TYPES.contains(&ty)
}

/// One registered resource.
#[derive(Debug, Clone)]
pub struct Registered {
    pub resource: Arc<Value>,
    /// `Resource.version` (business version), empty when absent.
    pub version: String,
    /// Where it came from: `core`, a file path (with the member inside a package), or `server`.
    pub source: Arc<str>,
}

/// An immutable view of everything registered.
#[derive(Debug, Default, Clone)]
pub struct Catalogue {
    /// resource type -> canonical URL -> versions in load order.
    by_url: HashMap<&'static str, HashMap<String, Vec<Registered>>>,
    generation: u64,
}

impl Catalogue {
    /// Changes whenever the registry changes.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Resolves a canonical reference (`url` or `url|version`). Without a version the most
    /// recently loaded version wins.
    pub fn resolve(&self, resource_type: &str, canonical: &str) -> Option<&Registered> {
        let (url, version) = match canonical.split_once('|') {
            Some((u, v)) => (u, Some(v)),
            None => (canonical, None),
        };
        let versions = self.by_url.get(resource_type)?.get(url)?;
        match version {
            Some(v) => versions.iter().rev().find(|r| r.version == v),
            None => versions.last(),
        }
    }

    /// The resource a canonical reference names, if registered.
    pub fn resource(&self, resource_type: &str, canonical: &str) -> Option<&Arc<Value>> {
        self.resolve(resource_type, canonical).map(|r| &r.resource)
    }

    /// The latest version of every registered resource of a type, in no particular order.
    pub fn all(&self, resource_type: &str) -> impl Iterator<Item = &Registered> {
        self.by_url
            .get(resource_type)
            .into_iter()
            .flat_map(|m| m.values().filter_map(|v| v.last()))
    }

    /// How many distinct canonical URLs of a type are registered.
    pub fn count(&self, resource_type: &str) -> usize {
        self.by_url.get(resource_type).map_or(0, HashMap::len)
    }

    fn insert(&mut self, resource: Value, source: Arc<str>) -> Result<(), FhirError> {
        let ty = resource
            .get("resourceType")
            .and_then(Value::as_str)
            .and_then(|t| CONFORMANCE_TYPES.iter().find(|c| **c == t).copied())
            .ok_or_else(|| {
                FhirError::new(
                    400,
                    "not-supported",
                    "only StructureDefinition, ValueSet, CodeSystem, ConceptMap, NamingSystem, SearchParameter and Questionnaire are registered",
                )
            })?;
        let url = match (ty, resource.get("url").and_then(Value::as_str)) {
            (_, Some(u)) if !u.is_empty() => u.to_string(),
            // A NamingSystem has no `url` in R4; its identity is its name.
            ("NamingSystem", _) => match resource.get("name").and_then(Value::as_str) {
                Some(n) => format!("NamingSystem/{n}"),
                None => {
                    return Err(
                        FhirError::new(400, "required", "NamingSystem without a name").at("name"),
                    );
                }
            },
            _ => {
                return Err(FhirError::new(
                    400,
                    "required",
                    format!("{ty} without a canonical url cannot be registered"),
                )
                .at("url"));
            }
        };
        let version = resource
            .get("version")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let versions = self.by_url.entry(ty).or_default().entry(url).or_default();
        versions.retain(|r| r.version != version);
        versions.push(Registered {
            resource: Arc::new(resource),
            version,
            source,
        });
        Ok(())
    }
}

/// A file or package member that could not be registered.
#[derive(Debug, Clone)]
pub struct LoadProblem {
    /// The file, and for a package the member (`us-core.tgz!package/StructureDefinition-x.json`).
    pub source: String,
    pub error: FhirError,
}

impl std::fmt::Display for LoadProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let msgs: Vec<String> = self
            .error
            .issues
            .iter()
            .map(|i| match &i.expression {
                Some(e) => format!("{} (at {e})", i.diagnostics),
                None => i.diagnostics.clone(),
            })
            .collect();
        write!(f, "{}: {}", self.source, msgs.join("; "))
    }
}

/// The shared, updatable registry.
#[derive(Debug, Default)]
pub struct Registry {
    current: RwLock<Arc<Catalogue>>,
}

impl Registry {
    /// A registry holding the core value sets, code systems and profiles.
    pub fn with_core(defs: &Definitions) -> Registry {
        let mut c = Catalogue::default();
        let core: Arc<str> = Arc::from("core");
        for r in defs
            .artefact()
            .value_sets
            .iter()
            .chain(&defs.artefact().code_systems)
            .chain(crate::definitions::core_profiles())
        {
            // The artefact is generated and tested; a resource without a url is skipped, not fatal.
            let _ = c.insert(r.clone(), core.clone());
        }
        c.generation = 1;
        Registry {
            current: RwLock::new(Arc::new(c)),
        }
    }

    /// A registry starting from this one's current contents; later changes to either are not
    /// seen by the other (a test harness loads a large package once and forks it per case).
    pub fn fork(&self) -> Registry {
        Registry {
            current: RwLock::new(self.catalogue()),
        }
    }

    /// The current catalogue (cheap: one `Arc` clone).
    pub fn catalogue(&self) -> Arc<Catalogue> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Registers resources as one change; all or nothing.
    pub fn add_all(&self, resources: Vec<(Value, Arc<str>)>) -> Result<(), LoadProblem> {
        let mut guard = self.current.write().unwrap_or_else(|p| p.into_inner());
        let mut next = (**guard).clone();
        for (r, source) in resources {
            next.insert(r, source.clone())
                .map_err(|error| LoadProblem {
                    source: source.to_string(),
                    error,
                })?;
        }
        next.generation = guard.generation + 1;
        *guard = Arc::new(next);
        Ok(())
    }

    /// Registers one resource (a client's POST/PUT of a conformance resource).
    pub fn add(&self, resource: Value, source: &str) -> Result<(), FhirError> {
        self.add_all(vec![(resource, Arc::from(source))])
            .map_err(|p| p.error)
    }

    /// Loads every conformance resource under `dir` (recursively): `*.json` files holding one
    /// resource or a Bundle of them, and FHIR packages (`*.tgz`, members under `package/`). Files
    /// holding other resource types are ignored; broken files are reported, never fatal, and the
    /// good ones are still registered.
    pub fn load_dir(&self, dir: &Path) -> Vec<LoadProblem> {
        let mut files = Vec::new();
        collect_files(dir, &mut files);
        files.sort();
        let mut problems = Vec::new();
        let mut found = Vec::new();
        for f in files {
            let name = f.to_string_lossy().into_owned();
            if name.ends_with(".tgz") || name.ends_with(".tar.gz") {
                read_package(&f, &mut found, &mut problems);
            } else if name.ends_with(".json") {
                match std::fs::read(&f) {
                    Ok(bytes) => take_json(&bytes, &name, &mut found, &mut problems),
                    Err(e) => problems.push(problem(&name, format!("cannot read: {e}"))),
                }
            }
        }
        for (r, source) in found {
            if let Err(p) = self.add_all(vec![(r, source)]) {
                problems.push(p);
            }
        }
        problems
    }
}

fn problem(source: &str, msg: String) -> LoadProblem {
    LoadProblem {
        source: source.to_string(),
        error: FhirError::new(400, "invalid", msg),
    }
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        // An implementation guide's example instances sit next to its definitions
        // (`profiles/cn/examples/`); they are test data, not conformance resources.
        if p.is_dir() && p.file_name().is_some_and(|n| n == "examples") {
            continue;
        }
        if p.is_dir() {
            collect_files(&p, out);
        } else {
            out.push(p);
        }
    }
}

/// Keeps the conformance resources of one JSON document (a resource or a Bundle of them).
fn take_json(
    bytes: &[u8],
    source: &str,
    found: &mut Vec<(Value, Arc<str>)>,
    problems: &mut Vec<LoadProblem>,
) {
    let v: Value = match serde_json::from_slice(bytes) {
        Ok(v) => v,
        Err(e) => {
            // package.json, .index.json and the like are not resources; only report what claims to be one.
            if bytes.windows(14).any(|w| w == b"\"resourceType\"") {
                problems.push(problem(source, format!("invalid JSON: {e}")));
            }
            return;
        }
    };
    let src: Arc<str> = Arc::from(source);
    match v.get("resourceType").and_then(Value::as_str) {
        Some(t) if is_conformance_type(t) => found.push((v, src)),
        Some("Bundle") => {
            let entries = v.get("entry").and_then(Value::as_array);
            for r in entries
                .into_iter()
                .flatten()
                .filter_map(|e| e.get("resource"))
            {
                if r.get("resourceType")
                    .and_then(Value::as_str)
                    .is_some_and(is_conformance_type)
                {
                    found.push((r.clone(), src.clone()));
                }
            }
        }
        _ => {}
    }
}

fn read_package(path: &Path, found: &mut Vec<(Value, Arc<str>)>, problems: &mut Vec<LoadProblem>) {
    let name = path.to_string_lossy().into_owned();
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) => {
            problems.push(problem(&name, format!("cannot read: {e}")));
            return;
        }
    };
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let entries = match archive.entries() {
        Ok(e) => e,
        Err(e) => {
            problems.push(problem(&name, format!("not a FHIR package (.tgz): {e}")));
            return;
        }
    };
    for entry in entries {
        let mut entry = match entry {
            Ok(e) => e,
            Err(e) => {
                problems.push(problem(&name, format!("corrupt package: {e}")));
                return;
            }
        };
        let member = entry
            .path()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        // Examples and other sub-folders are not part of the package's definitions.
        let Some(file) = member.strip_prefix("package/") else {
            continue;
        };
        if file.contains('/') || !file.ends_with(".json") {
            continue;
        }
        let mut bytes = Vec::new();
        if let Err(e) = entry.read_to_end(&mut bytes) {
            problems.push(problem(
                &format!("{name}!{member}"),
                format!("cannot read: {e}"),
            ));
            continue;
        }
        take_json(&bytes, &format!("{name}!{member}"), found, problems);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn core_value_sets_resolve_by_url_and_version() {
        let r = Registry::with_core(Definitions::core());
        let c = r.catalogue();
        let vs = c
            .resource(
                "ValueSet",
                "http://hl7.org/fhir/ValueSet/administrative-gender",
            )
            .expect("administrative-gender");
        assert_eq!(vs["resourceType"], "ValueSet");
        assert!(
            c.resolve(
                "ValueSet",
                "http://hl7.org/fhir/ValueSet/administrative-gender|4.0.1"
            )
            .is_some()
        );
        assert!(
            c.resolve(
                "ValueSet",
                "http://hl7.org/fhir/ValueSet/administrative-gender|9.9"
            )
            .is_none()
        );
        assert!(c.count("CodeSystem") > 100);
    }

    #[test]
    fn adding_replaces_the_same_version_and_bumps_the_generation() {
        let r = Registry::with_core(Definitions::core());
        let g0 = r.catalogue().generation();
        let vs = |v: &str, name: &str| json!({"resourceType": "ValueSet", "url": "http://x/vs", "version": v, "name": name, "status": "active"});
        r.add(vs("1", "a"), "server").unwrap();
        r.add(vs("2", "b"), "server").unwrap();
        r.add(vs("1", "c"), "server").unwrap();
        let c = r.catalogue();
        assert!(c.generation() > g0);
        assert_eq!(
            c.resource("ValueSet", "http://x/vs|1").unwrap()["name"],
            "c"
        );
        // Without a version, the one loaded last.
        assert_eq!(c.resource("ValueSet", "http://x/vs").unwrap()["name"], "c");
        assert_eq!(
            c.resource("ValueSet", "http://x/vs|2").unwrap()["name"],
            "b"
        );
    }

    #[test]
    fn non_conformance_resources_and_missing_urls_are_refused() {
        let r = Registry::with_core(Definitions::core());
        let e = r
            .add(json!({"resourceType": "Patient"}), "server")
            .unwrap_err();
        assert_eq!(e.status, 400);
        let e = r
            .add(
                json!({"resourceType": "ValueSet", "status": "draft"}),
                "server",
            )
            .unwrap_err();
        assert_eq!(e.issues[0].expression.as_deref(), Some("url"));
    }

    #[test]
    fn a_folder_loads_good_files_and_names_the_broken_one() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("good.json"),
            json!({"resourceType": "CodeSystem", "url": "http://x/cs", "status": "active", "content": "complete"}).to_string(),
        )
        .unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(
            dir.path().join("sub/bundle.json"),
            json!({"resourceType": "Bundle", "type": "collection", "entry": [
                {"resource": {"resourceType": "ValueSet", "url": "http://x/vs2", "status": "active"}},
                {"resource": {"resourceType": "Patient", "id": "p"}}
            ]})
            .to_string(),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("broken.json"),
            b"{\"resourceType\": \"ValueSet\",",
        )
        .unwrap();
        let r = Registry::with_core(Definitions::core());
        let problems = r.load_dir(dir.path());
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].source.ends_with("broken.json"));
        let c = r.catalogue();
        assert!(c.resource("CodeSystem", "http://x/cs").is_some());
        assert!(c.resource("ValueSet", "http://x/vs2").is_some());
    }
}
