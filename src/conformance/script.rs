//! TestScripts and their fixtures.
//!
//! A fixture's `resource.reference` is resolved in this order: `#id` (a resource contained in the
//! TestScript), `corpora:<path>` (a file of the shared corpora, read in place from
//! `$HUITONG_CORPORA` at run time: a sample message a script sends is never copied into the
//! project), a file relative to the script's folder (`fixtures/patient.json`, or a non-FHIR body
//! such as `fixtures/adt-a01.hl7`), then the suite's [`FixtureLibrary`] (`Patient/example` from
//! the R4 examples package, read in place).

use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A fixture's body: JSON resources are also kept parsed.
#[derive(Debug, Clone)]
pub struct Fixture {
    pub body: Vec<u8>,
    pub json: Option<Value>,
    /// The media type the file's name suggests (`.hl7` -> ER7, `.xml` -> XML); JSON otherwise.
    pub media_type: Option<String>,
}

impl Fixture {
    /// A fixture from a JSON value.
    pub fn from_json(json: Value) -> Fixture {
        Fixture {
            body: serde_json::to_vec(&json).unwrap_or_default(),
            json: Some(json),
            media_type: Some("application/fhir+json".into()),
        }
    }

    /// A fixture from bytes, parsed when they are JSON.
    pub fn from_bytes(body: Vec<u8>, file_name: &str) -> Fixture {
        let media_type = if file_name.ends_with(".hl7") || file_name.ends_with(".er7") {
            Some("x-application/hl7-v2+er7".to_string())
        } else if file_name.ends_with(".xml") {
            Some("application/xml".to_string())
        } else if file_name.ends_with(".json") {
            Some("application/fhir+json".to_string())
        } else {
            None
        };
        Fixture {
            json: serde_json::from_slice(&body).ok(),
            body,
            media_type,
        }
    }
}

/// Where fixtures named `Type/id` come from when they are neither contained nor files.
pub trait FixtureLibrary: Send + Sync {
    /// The resource a reference names, when the library has it.
    fn fixture(&self, reference: &str) -> Option<Value>;
}

/// The resources of a FHIR package (`.tgz`), by `Type/id`: the R4 examples the specification's
/// own TestScripts name (`Patient/example`), read in place from the corpus.
pub struct PackageLibrary {
    by_reference: HashMap<String, Value>,
}

impl PackageLibrary {
    /// Reads every JSON resource of the package.
    pub fn open(path: &Path) -> std::io::Result<PackageLibrary> {
        use std::io::Read;
        let file = std::fs::File::open(path)?;
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
        let mut by_reference = HashMap::new();
        for entry in archive.entries()? {
            let mut entry = entry?;
            let name = entry.path()?.to_string_lossy().into_owned();
            if !name.ends_with(".json")
                || name.ends_with("package.json")
                || name.contains(".index.")
            {
                continue;
            }
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes)?;
            let Ok(json) = serde_json::from_slice::<Value>(&bytes) else {
                continue;
            };
            if let (Some(t), Some(id)) = (
                json.get("resourceType").and_then(Value::as_str),
                json.get("id").and_then(Value::as_str),
            ) {
                by_reference.insert(format!("{t}/{id}"), json.clone());
            }
        }
        Ok(PackageLibrary { by_reference })
    }

    /// Number of resources held.
    pub fn len(&self) -> usize {
        self.by_reference.len()
    }

    /// True when the package held no resources.
    pub fn is_empty(&self) -> bool {
        self.by_reference.is_empty()
    }
}

impl FixtureLibrary for PackageLibrary {
    fn fixture(&self, reference: &str) -> Option<Value> {
        self.by_reference.get(reference).cloned()
    }
}

/// A TestScript read from a file, with what its fixtures are resolved against.
#[derive(Clone)]
pub struct LoadedScript {
    /// The suite it belongs to (folder name).
    pub suite: String,
    pub path: PathBuf,
    pub json: Value,
    pub library: Option<Arc<dyn FixtureLibrary>>,
    /// What `corpora:` fixture references resolve against (`$HUITONG_CORPORA`).
    pub corpora: PathBuf,
}

/// The prefix of a fixture reference naming a file of the shared corpora.
pub const CORPORA_PREFIX: &str = "corpora:";

impl std::fmt::Debug for LoadedScript {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedScript")
            .field("suite", &self.suite)
            .field("path", &self.path)
            .finish()
    }
}

impl LoadedScript {
    /// Reads a TestScript file; an error names the file.
    pub fn load(suite: &str, path: &Path) -> Result<LoadedScript, String> {
        let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let json: Value =
            serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
        if json.get("resourceType").and_then(Value::as_str) != Some("TestScript") {
            return Err(format!("{}: not a TestScript", path.display()));
        }
        Ok(LoadedScript {
            suite: suite.to_string(),
            path: path.to_path_buf(),
            json,
            library: None,
            corpora: super::suite::corpora_dir(),
        })
    }

    /// A script held in memory (tests); file fixtures resolve against `dir`.
    pub fn from_json(suite: &str, dir: &Path, json: Value) -> LoadedScript {
        LoadedScript {
            suite: suite.to_string(),
            path: dir.join("inline.json"),
            json,
            library: None,
            corpora: super::suite::corpora_dir(),
        }
    }

    /// The script's id (or its file stem).
    pub fn id(&self) -> String {
        self.json
            .get("id")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| {
                self.path
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default()
            })
    }

    /// `title`, else `name`, else the id.
    pub fn title(&self) -> String {
        ["title", "name"]
            .iter()
            .find_map(|k| self.json.get(*k).and_then(Value::as_str))
            .map(str::to_string)
            .unwrap_or_else(|| self.id())
    }

    /// The service family the script counts towards: a `meta.tag` with system
    /// [`FAMILY_TAG_SYSTEM`], else the suite name.
    pub fn family(&self) -> String {
        self.json
            .pointer("/meta/tag")
            .and_then(Value::as_array)
            .and_then(|tags| {
                tags.iter()
                    .find(|t| t.get("system").and_then(Value::as_str) == Some(FAMILY_TAG_SYSTEM))
            })
            .and_then(|t| t.get("code").and_then(Value::as_str))
            .map(str::to_string)
            .unwrap_or_else(|| self.suite.clone())
    }

    /// Resolves every `fixture` of the script; an unresolvable one is an error naming it.
    pub fn fixtures(&self) -> Result<HashMap<String, Fixture>, String> {
        let mut out = HashMap::new();
        let dir = self.path.parent().unwrap_or(Path::new("."));
        for f in self
            .json
            .get("fixture")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let Some(id) = f.get("id").and_then(Value::as_str) else {
                return Err("a fixture has no id".into());
            };
            let reference = f
                .pointer("/resource/reference")
                .and_then(Value::as_str)
                .ok_or_else(|| format!("fixture '{id}' has no resource.reference"))?;
            out.insert(id.to_string(), self.resolve(dir, reference)?);
        }
        Ok(out)
    }

    /// The `corpora:` files the fixtures name that are not there (with why), so a run without
    /// the corpora can say which scripts it could not run instead of failing them one by one.
    pub fn missing_corpus_files(&self) -> Vec<String> {
        self.fixture_references()
            .filter_map(|r| r.strip_prefix(CORPORA_PREFIX).map(str::to_string))
            .filter_map(|rel| self.corpus_file(&rel).err())
            .collect()
    }

    fn fixture_references(&self) -> impl Iterator<Item = &str> {
        self.json
            .get("fixture")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|f| f.pointer("/resource/reference").and_then(Value::as_str))
    }

    /// The path of a corpus file; relative, without `..`, and present.
    fn corpus_file(&self, rel: &str) -> Result<PathBuf, String> {
        let p = Path::new(rel);
        if rel.is_empty()
            || p.is_absolute()
            || p.components()
                .any(|c| !matches!(c, std::path::Component::Normal(_)))
        {
            return Err(format!(
                "fixture reference '{CORPORA_PREFIX}{rel}': a corpus path is relative to $HUITONG_CORPORA and has no '..' or '.'"
            ));
        }
        let file = self.corpora.join(p);
        if !file.is_file() {
            return Err(format!(
                "corpus file {rel} not found in {} ($HUITONG_CORPORA): set HUITONG_CORPORA to the folder of the shared corpora (corpus files are read in place, never copied into the project)",
                self.corpora.display()
            ));
        }
        Ok(file)
    }

    fn resolve(&self, dir: &Path, reference: &str) -> Result<Fixture, String> {
        if let Some(rel) = reference.strip_prefix(CORPORA_PREFIX) {
            let file = self.corpus_file(rel)?;
            let bytes = std::fs::read(&file).map_err(|e| format!("{}: {e}", file.display()))?;
            return Ok(Fixture::from_bytes(bytes, rel));
        }
        if let Some(local) = reference.strip_prefix('#') {
            return self
                .json
                .get("contained")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .find(|r| r.get("id").and_then(Value::as_str) == Some(local))
                .map(|r| {
                    let mut r = r.clone();
                    // A contained fixture's id is local to the script, not the server's.
                    if let Some(o) = r.as_object_mut() {
                        o.remove("id");
                    }
                    Fixture::from_json(r)
                })
                .ok_or_else(|| format!("fixture reference '{reference}': no contained resource"));
        }
        let file = dir.join(reference);
        if !reference.contains("://") && file.is_file() {
            let bytes = std::fs::read(&file).map_err(|e| format!("{}: {e}", file.display()))?;
            return Ok(Fixture::from_bytes(bytes, reference));
        }
        if let Some(json) = self.library.as_ref().and_then(|l| l.fixture(reference)) {
            return Ok(Fixture::from_json(json));
        }
        Err(format!(
            "fixture reference '{reference}' is neither contained, a file beside the script, nor in the suite's fixture library"
        ))
    }
}

/// `meta.tag` system naming the service family a script belongs to (see `conformance/maturity.toml`).
pub const FAMILY_TAG_SYSTEM: &str = "http://huitong.dev/fhir/conformance/family";
