//! Loading `mappings/cda/*.toml` (one table per family of documents) and
//! `mappings/v3-vocabulary.toml`. Every path, FHIR element and vocabulary is checked at load; an
//! error names the file.

use crate::mapping::xml::{ResourceRule, ResourceSpec, Vocabulary, check_resource};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// Which statements an entry rule takes.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Matcher {
    /// The element name (`observation`, `procedure`, `substanceAdministration`, ...).
    pub statement: String,
    /// `code/@code` values (any when empty).
    #[serde(default)]
    pub codes: Vec<String>,
    /// `templateId/@root` values (any when empty).
    #[serde(default)]
    pub templates: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
struct EntrySpec {
    #[serde(rename = "match")]
    matcher: Matcher,
    #[serde(flatten)]
    resource: ResourceSpec,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct TableSpec {
    name: String,
    templates: Vec<String>,
    #[serde(default, rename = "composition-profile")]
    composition_profile: Option<String>,
    #[serde(default, rename = "document-reference-profile")]
    document_reference_profile: Option<String>,
    #[serde(default)]
    header: Vec<ResourceSpec>,
    #[serde(default)]
    entry: Vec<EntrySpec>,
}

/// One entry rule.
#[derive(Debug, Clone)]
pub struct EntryRule {
    pub matcher: Matcher,
    pub rule: ResourceRule,
}

/// One checked table.
#[derive(Debug, Clone)]
pub struct Table {
    pub name: String,
    pub file: PathBuf,
    /// templateId root prefixes that select this table.
    pub templates: Vec<String>,
    pub composition_profile: Option<String>,
    pub document_reference_profile: Option<String>,
    pub header: Vec<ResourceRule>,
    pub entries: Vec<EntryRule>,
}

/// Every table, with the shared vocabulary.
#[derive(Debug, Clone, Default)]
pub struct Tables {
    pub tables: Vec<Table>,
    pub vocabulary: Vocabulary,
}

/// Reads `dir/v3-vocabulary.toml` (shared by `cda/` and `hl7v3/`).
pub fn load_vocabulary(dir: &Path) -> Result<Vocabulary, String> {
    let path = dir.join("v3-vocabulary.toml");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// The `*.toml` files of a folder, sorted.
pub fn toml_files(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    Ok(files)
}

impl Tables {
    /// Loads `mappings_dir/cda/*.toml`; all errors at once.
    pub fn load(mappings_dir: &Path) -> Result<Tables, Vec<String>> {
        let vocabulary = load_vocabulary(mappings_dir).map_err(|e| vec![e])?;
        let dir = mappings_dir.join("cda");
        let files = toml_files(&dir).map_err(|e| vec![e])?;
        let mut tables = Vec::new();
        let mut errors = Vec::new();
        for file in files {
            let text = match std::fs::read_to_string(&file) {
                Ok(t) => t,
                Err(e) => {
                    errors.push(format!("{}: {e}", file.display()));
                    continue;
                }
            };
            let spec: TableSpec = match toml::from_str(&text) {
                Ok(s) => s,
                Err(e) => {
                    errors.push(format!("{}: {e}", file.display()));
                    continue;
                }
            };
            let mut header = Vec::new();
            for h in &spec.header {
                match check_resource(h, &vocabulary) {
                    Ok(r) => header.push(r),
                    Err(e) => errors.push(format!("{}: {e}", file.display())),
                }
            }
            let mut entries = Vec::new();
            for e in &spec.entry {
                match check_resource(&e.resource, &vocabulary) {
                    Ok(r) => entries.push(EntryRule {
                        matcher: e.matcher.clone(),
                        rule: r,
                    }),
                    Err(x) => errors.push(format!("{}: {x}", file.display())),
                }
            }
            for needed in ["patient", "composition", "document-reference"] {
                if !header.iter().any(|h| h.name == needed) {
                    errors.push(format!(
                        "{}: a [[header]] rule named '{needed}' is required",
                        file.display()
                    ));
                }
            }
            tables.push(Table {
                name: spec.name,
                file,
                templates: spec.templates,
                composition_profile: spec.composition_profile,
                document_reference_profile: spec.document_reference_profile,
                header,
                entries,
            });
        }
        if errors.is_empty() {
            Ok(Tables { tables, vocabulary })
        } else {
            Err(errors)
        }
    }

    /// The table for a document with these templateId roots.
    pub fn for_templates(&self, roots: &[&str]) -> Option<&Table> {
        self.tables.iter().find(|t| {
            roots
                .iter()
                .any(|r| t.templates.iter().any(|p| r.starts_with(p.as_str())))
        })
    }
}
