//! Loading `mappings/hl7v3/*.toml`: one file per interaction (which elements become which FHIR
//! resources, or which search a query runs, and the response it answers with) and the response
//! templates in `mappings/hl7v3/templates/`.

use crate::mapping::xml::{Datatype, ResourceRule, ResourceSpec, Vocabulary, check_resource};
use crate::xml::path::XPath;
use serde::Deserialize;
use std::collections::HashMap;
use std::path::Path;

/// What an interaction does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// Register / update / merge / add: the resources are written (PUT by id).
    Write,
    /// A query: a FHIR search, answered with a query response.
    Query,
    /// Document register: the CDA in the message goes through the CDA engine.
    DocumentRegister,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ParamSpec {
    from: String,
    #[serde(rename = "as")]
    datatype: String,
    /// The FHIR search parameter (`identifier`, `name`, `gender`, `patient.identifier`...).
    search: String,
    #[serde(default)]
    vocabulary: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct QuerySpec {
    #[serde(rename = "type")]
    resource_type: String,
    params: Vec<ParamSpec>,
    /// The response interaction (root element of the answer).
    answer: String,
    /// The template of the answer (`templates/NAME.xml`).
    response: String,
    /// The template of one subject in the answer (`templates/NAME.xml`).
    subject: String,
    #[serde(default = "ten")]
    count: usize,
}

fn ten() -> usize {
    10
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct InteractionSpec {
    interaction: String,
    title: String,
    part: String,
    kind: Kind,
    #[serde(default)]
    note: Option<String>,
    #[serde(default)]
    resource: Vec<ResourceSpec>,
    /// The rules whose resource the interaction registers, updates or adds: its single values
    /// win over the stored version's (`ingest::merge`); every other resource the message names
    /// is merged into its stored version keeping the stored values.
    #[serde(default)]
    subject: Vec<String>,
    #[serde(default)]
    query: Option<QuerySpec>,
    /// Document register: where the base64 CDA is.
    #[serde(default)]
    document: Option<String>,
}

/// One search parameter of a query.
#[derive(Debug, Clone)]
pub struct QueryParam {
    pub from: XPath,
    pub datatype: Datatype,
    pub search: String,
    pub vocabulary: Option<String>,
}

/// A checked query.
#[derive(Debug, Clone)]
pub struct Query {
    pub resource_type: String,
    pub answer: String,
    pub params: Vec<QueryParam>,
    pub response: String,
    pub subject: String,
    pub count: usize,
}

/// A checked interaction.
#[derive(Debug, Clone)]
pub struct Interaction {
    pub id: String,
    pub title: String,
    pub part: String,
    pub kind: Kind,
    pub resources: Vec<ResourceRule>,
    /// Names of the subject rules (see `InteractionSpec::subject`).
    pub subject: Vec<String>,
    pub query: Option<Query>,
    pub document: Option<XPath>,
}

/// Every interaction and template.
#[derive(Debug, Clone, Default)]
pub struct Interactions {
    pub by_id: HashMap<String, Interaction>,
    /// Template name -> text.
    pub templates: HashMap<String, String>,
    pub vocabulary: Vocabulary,
}

impl Interactions {
    /// Loads `mappings_dir/hl7v3/`; all errors at once, each naming its file.
    pub fn load(mappings_dir: &Path) -> Result<Interactions, Vec<String>> {
        let vocabulary =
            crate::ingest::cda::table::load_vocabulary(mappings_dir).map_err(|e| vec![e])?;
        let dir = mappings_dir.join("hl7v3");
        let files = crate::ingest::cda::table::toml_files(&dir).map_err(|e| vec![e])?;
        let mut errors = Vec::new();
        let mut templates = HashMap::new();
        if let Ok(rd) = std::fs::read_dir(dir.join("templates")) {
            for e in rd.flatten() {
                let p = e.path();
                if p.extension().is_some_and(|x| x == "xml")
                    && let (Some(stem), Ok(text)) = (p.file_stem(), std::fs::read_to_string(&p))
                {
                    templates.insert(stem.to_string_lossy().into_owned(), text);
                }
            }
        }
        for needed in ["MCCI_IN000002UV01"] {
            if !templates.contains_key(needed) {
                errors.push(format!(
                    "{}: templates/{needed}.xml is missing",
                    dir.display()
                ));
            }
        }
        let mut by_id = HashMap::new();
        for file in files {
            let text = match std::fs::read_to_string(&file) {
                Ok(t) => t,
                Err(e) => {
                    errors.push(format!("{}: {e}", file.display()));
                    continue;
                }
            };
            let spec: InteractionSpec = match toml::from_str(&text) {
                Ok(s) => s,
                Err(e) => {
                    errors.push(format!("{}: {e}", file.display()));
                    continue;
                }
            };
            let mut resources = Vec::new();
            for r in &spec.resource {
                match check_resource(r, &vocabulary) {
                    Ok(x) => resources.push(x),
                    Err(e) => errors.push(format!("{}: {e}", file.display())),
                }
            }
            for m in &spec.subject {
                if !resources.iter().any(|r| &r.name == m) {
                    errors.push(format!("{}: subject names no rule '{m}'", file.display()));
                }
            }
            let query = match &spec.query {
                None => None,
                Some(q) => {
                    let mut params = Vec::new();
                    for p in &q.params {
                        match (XPath::parse(&p.from), datatype(&p.datatype)) {
                            (Ok(from), Some(dt)) => params.push(QueryParam {
                                from,
                                datatype: dt,
                                search: p.search.clone(),
                                vocabulary: p.vocabulary.clone(),
                            }),
                            (Err(e), _) => errors.push(format!("{}: {e}", file.display())),
                            (_, None) => errors.push(format!(
                                "{}: '{}' is not a datatype a query reads (II, CD, EN, TS, ST)",
                                file.display(),
                                p.datatype
                            )),
                        }
                        if let Some(v) = &p.vocabulary
                            && !vocabulary.tables.contains_key(v)
                        {
                            errors.push(format!(
                                "{}: vocabulary '{v}' is not defined",
                                file.display()
                            ));
                        }
                    }
                    if !templates.contains_key(&q.response) || !templates.contains_key(&q.subject) {
                        errors.push(format!(
                            "{}: templates/{}.xml and templates/{}.xml are needed",
                            file.display(),
                            q.response,
                            q.subject
                        ));
                    }
                    Some(Query {
                        resource_type: q.resource_type.clone(),
                        answer: q.answer.clone(),
                        params,
                        response: q.response.clone(),
                        subject: q.subject.clone(),
                        count: q.count,
                    })
                }
            };
            if spec.kind == Kind::Query && query.is_none() {
                errors.push(format!(
                    "{}: kind = \"query\" needs [query]",
                    file.display()
                ));
            }
            let document = match (&spec.document, spec.kind) {
                (Some(d), _) => match XPath::parse(d) {
                    Ok(x) => Some(x),
                    Err(e) => {
                        errors.push(format!("{}: {e}", file.display()));
                        None
                    }
                },
                (None, Kind::DocumentRegister) => {
                    errors.push(format!(
                        "{}: kind = \"document-register\" needs document = \"XPATH\"",
                        file.display()
                    ));
                    None
                }
                _ => None,
            };
            let _ = &spec.note;
            by_id.insert(
                spec.interaction.clone(),
                Interaction {
                    id: spec.interaction,
                    title: spec.title,
                    part: spec.part,
                    kind: spec.kind,
                    resources,
                    subject: spec.subject,
                    query,
                    document,
                },
            );
        }
        if errors.is_empty() {
            Ok(Interactions {
                by_id,
                templates,
                vocabulary,
            })
        } else {
            Err(errors)
        }
    }
}

fn datatype(s: &str) -> Option<Datatype> {
    match s {
        "II" => Some(Datatype::II),
        "CD" | "CS" | "CE" => Some(Datatype::CD),
        "EN" | "PN" => Some(Datatype::EN),
        "TS" => Some(Datatype::TS),
        "ST" => Some(Datatype::ST),
        _ => None,
    }
}
