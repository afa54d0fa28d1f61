//! The local, offline terminology service: code system lookup, value set expansion and membership,
//! subsumption and concept-map translation over the resources in the [`Registry`].
//!
//! - [`codesystem`]: a CodeSystem compiled for lookups (hierarchy, properties, designations).
//! - [`expand`]: ValueSet expansion (include/exclude, filters, nested value sets, cycles, limits).
//! - [`ucum`]: the UCUM grammar check that stands in for the infinite UCUM code system.
//! - [`translate`]: ConceptMap translation, forwards and in reverse.
//!
//! Code systems too large to ship (SNOMED CT, LOINC, ICD, RxNorm, ...) are "not present": a value
//! set including them wholly or by filter cannot decide membership of their codes, and says so
//! ([`CodeCheck::NotAvailable`]), unless a local CodeSystem (a fragment) with the same URL is
//! registered, in which case the fragment answers.
//!
//! Invariants: expansions and compiled code systems are cached by (canonical, registry
//! generation), so a change to the registry is never answered from a stale cache; requests that
//! bring their own resources (`tx-resource`, a `valueSet` parameter) are never cached; nothing
//! here panics on any resource content.

pub mod codesystem;
pub mod expand;
pub mod translate;
pub mod ucum;

use crate::registry::{Catalogue, Registry};
use codesystem::CodeSystemIndex;
use expand::{ExpandError, ExpandOptions, Expander, Expansion, OpenReason, str_of};
use serde_json::Value;
use std::sync::Arc;

/// The most codes an expansion may hold before it is refused as too costly.
pub const EXPANSION_LIMIT: usize = 100_000;

/// Code systems too large to ship with the gateway: without a local fragment, their codes can be
/// neither confirmed nor refused.
const EXTERNAL_SYSTEMS: &[&str] = &[
    "http://snomed.info/sct",
    "http://loinc.org",
    "http://hl7.org/fhir/sid/icd-10",
    "http://hl7.org/fhir/sid/icd-10-cm",
    "http://hl7.org/fhir/sid/icd-10-pcs",
    "http://hl7.org/fhir/sid/icd-9-cm",
    "http://id.who.int/icd/release/11/mms",
    "http://www.nlm.nih.gov/research/umls/rxnorm",
    "http://hl7.org/fhir/sid/ndc",
    "http://hl7.org/fhir/sid/cvx",
    "http://www.ama-assn.org/go/cpt",
    "http://nucc.org/provider-taxonomy",
    "http://www.whocc.no/atc",
    "http://varnomen.hgvs.org",
    "http://www.genenames.org",
    "http://www.ncbi.nlm.nih.gov/clinvar",
    "http://www.nlm.nih.gov/research/umls",
    "http://fdasis.nlm.nih.gov",
    "urn:ietf:bcp:47",
    "urn:ietf:bcp:13",
    "urn:iso:std:iso:3166",
    "urn:iso:std:iso:3166:-2",
    "urn:iso:std:iso:4217",
    "urn:iso:std:iso:11073:10101",
    "urn:oid:2.16.840.1.113883.6.238",
    "http://dicom.nema.org/resources/ontology/DCM",
    "https://www.usps.com/",
];

/// True for a code system too large to ship (see [`EXTERNAL_SYSTEMS`]).
pub fn external_system(url: &str) -> bool {
    EXTERNAL_SYSTEMS.contains(&url)
}

/// The verdict on a code against a value set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CodeCheck {
    /// The code is in the value set (display, when given, matched or was not checked).
    Valid,
    /// The code is not in the value set, or its display is wrong; the message says which.
    Invalid(String),
    /// The value set or a code system it needs is not available here (unknown, or too large to ship
    /// like SNOMED CT, LOINC and ICD-10): membership cannot be decided.
    NotAvailable(String),
}

/// A terminology failure that is not a verdict on a code (the question cannot be asked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TermError {
    /// The value set, code system or concept map named is not known.
    NotFound(String),
    /// The value set cannot be expanded.
    Expand(ExpandError),
    /// The request itself is wrong.
    Invalid(String),
}

impl std::fmt::Display for TermError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TermError::NotFound(m) | TermError::Invalid(m) => f.write_str(m),
            TermError::Expand(e) => write!(f, "{e}"),
        }
    }
}

impl From<ExpandError> for TermError {
    fn from(e: ExpandError) -> TermError {
        match e {
            ExpandError::UnknownValueSet(u) => {
                TermError::NotFound(format!("value set {u} is not known"))
            }
            other => TermError::Expand(other),
        }
    }
}

/// Where one request finds its resources: a registry snapshot, plus resources the request brought
/// along (`tx-resource`), which take precedence.
#[derive(Debug, Clone)]
pub struct Scope {
    catalogue: Arc<Catalogue>,
    extra: Vec<Arc<Value>>,
}

impl Scope {
    /// True when the request brought no resources of its own (its results may be cached).
    pub fn is_shared(&self) -> bool {
        self.extra.is_empty()
    }

    /// Adds a resource the request carries.
    pub fn with(mut self, resource: Value) -> Scope {
        self.extra.push(Arc::new(resource));
        self
    }

    fn find(&self, ty: &str, canonical: &str) -> Option<Arc<Value>> {
        let (url, version) = match canonical.split_once('|') {
            Some((u, v)) => (u, Some(v)),
            None => (canonical, None),
        };
        let mut candidates: Vec<&Arc<Value>> = self
            .extra
            .iter()
            .filter(|r| str_of(r, "resourceType") == Some(ty) && str_of(r, "url") == Some(url))
            .collect();
        if let Some(v) = version {
            candidates.retain(|r| version_matches(str_of(r, "version"), v));
        }
        // Without a version the latest one wins; later duplicates replace earlier ones.
        let best = candidates.into_iter().rev().max_by(|a, b| {
            compare_versions(
                str_of(a, "version").unwrap_or(""),
                str_of(b, "version").unwrap_or(""),
            )
        });
        if let Some(b) = best {
            return Some(b.clone());
        }
        match version {
            Some(v) if v.contains(['x', '*']) => self
                .catalogue
                .resource(ty, url)
                .filter(|r| version_matches(str_of(r, "version"), v))
                .cloned(),
            _ => self.catalogue.resource(ty, canonical).cloned(),
        }
    }

    /// A ValueSet by canonical (`url` or `url|version`).
    pub fn value_set(&self, canonical: &str) -> Option<Arc<Value>> {
        self.find("ValueSet", canonical)
    }

    /// A CodeSystem by URL and optional version.
    pub fn code_system(&self, url: &str, version: Option<&str>) -> Option<Arc<Value>> {
        match version {
            Some(v) => self.find("CodeSystem", &format!("{url}|{v}")),
            None => self.find("CodeSystem", url),
        }
    }

    /// The versions of a code system that are known (for messages).
    pub fn code_system_versions(&self, url: &str) -> Vec<String> {
        let mut out: Vec<String> = self
            .extra
            .iter()
            .filter(|r| {
                str_of(r, "resourceType") == Some("CodeSystem") && str_of(r, "url") == Some(url)
            })
            .filter_map(|r| str_of(r, "version").map(str::to_string))
            .collect();
        if let Some(r) = self.catalogue.resolve("CodeSystem", url) {
            out.push(r.version.clone());
        }
        out.sort();
        out.dedup();
        out
    }

    /// A ConceptMap by canonical.
    pub fn concept_map(&self, canonical: &str) -> Option<Arc<Value>> {
        self.find("ConceptMap", canonical)
    }

    /// Every ConceptMap in scope (the request's first, then the registry's).
    pub fn concept_maps(&self) -> Vec<Arc<Value>> {
        let mut out: Vec<Arc<Value>> = self
            .extra
            .iter()
            .filter(|r| str_of(r, "resourceType") == Some("ConceptMap"))
            .cloned()
            .collect();
        out.extend(self.catalogue.all("ConceptMap").map(|r| r.resource.clone()));
        out
    }
}

/// Does a resource's version satisfy a requested one (`1.0.0`, or a wildcard such as `1.x`)?
pub(crate) fn version_matches(have: Option<&str>, wanted: &str) -> bool {
    let have = have.unwrap_or("");
    if have == wanted {
        return true;
    }
    let wanted_parts: Vec<&str> = wanted.split('.').collect();
    let have_parts: Vec<&str> = have.split('.').collect();
    wanted_parts.iter().any(|p| matches!(*p, "x" | "*"))
        && wanted_parts
            .iter()
            .zip(have_parts.iter().chain(std::iter::repeat(&"")))
            .all(|(w, h)| matches!(*w, "x" | "*") || w == h)
}

/// Orders versions numerically segment by segment (`1.10.0` after `1.9.0`), text otherwise.
pub fn compare_versions(a: &str, b: &str) -> std::cmp::Ordering {
    let mut xs = a.split(['.', '-']);
    let mut ys = b.split(['.', '-']);
    loop {
        match (xs.next(), ys.next()) {
            (None, None) => return std::cmp::Ordering::Equal,
            (None, Some(_)) => return std::cmp::Ordering::Less,
            (Some(_), None) => return std::cmp::Ordering::Greater,
            (Some(x), Some(y)) => {
                let o = match (x.parse::<u64>(), y.parse::<u64>()) {
                    (Ok(p), Ok(q)) => p.cmp(&q),
                    _ => x.cmp(y),
                };
                if o != std::cmp::Ordering::Equal {
                    return o;
                }
            }
        }
    }
}

/// The question "is this code in that value set?" in full.
#[derive(Debug, Clone, Default)]
pub struct CodeRequest<'a> {
    /// `None` for a bare `code` whose system the value set implies.
    pub system: Option<&'a str>,
    /// The code system version the code claims (`system|version`, `systemVersion`).
    pub version: Option<&'a str>,
    pub code: &'a str,
    pub display: Option<&'a str>,
    /// For a bare code: refuse when the value set has the code in more than one system.
    pub infer_system: bool,
}

/// A severity for issues attached to a verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Error,
    Warning,
    Information,
}

/// One issue found while checking a code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeIssue {
    pub severity: Severity,
    /// An issue-type code (`code-invalid`, `invalid`, `not-found`, `business-rule`, ...).
    pub code: &'static str,
    pub message: String,
    /// What the issue is about: `code`, `display`, `system` or `version`.
    pub about: &'static str,
}

/// The full answer on a code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// For validation: `Invalid` for a code outside the value set or a wrong display.
    pub check: CodeCheck,
    /// The `$validate-code` result: true when the code is a member; a code of a fragment code
    /// system that the fragment does not hold is also true (with a warning), since it may be valid.
    pub result: bool,
    pub system: Option<String>,
    pub version: Option<String>,
    /// The code as the code system spells it (case-insensitive systems normalise it).
    pub code: String,
    /// The display the code system (or value set) gives the code.
    pub display: Option<String>,
    pub inactive: bool,
    /// Set when the display given matched no display or designation (the message says which
    /// display was expected). Validation may treat this as a warning, as the Java validator does.
    pub display_problem: Option<String>,
    /// The code does not exist in its (known, complete) code system at all.
    pub unknown_code: bool,
    pub issues: Vec<CodeIssue>,
}

impl Verdict {
    fn new(code: &str) -> Verdict {
        Verdict {
            check: CodeCheck::Valid,
            result: true,
            system: None,
            version: None,
            code: code.to_string(),
            display: None,
            inactive: false,
            display_problem: None,
            unknown_code: false,
            issues: Vec::new(),
        }
    }

    fn refuse(mut self, code: &'static str, about: &'static str, message: String) -> Verdict {
        self.issues.push(CodeIssue {
            severity: Severity::Error,
            code,
            message: message.clone(),
            about,
        });
        self.check = match self.check {
            CodeCheck::Invalid(prev) => CodeCheck::Invalid(format!("{prev}; {message}")),
            _ => CodeCheck::Invalid(message),
        };
        self.result = false;
        self
    }

    fn unavailable(mut self, message: String, result: bool) -> Verdict {
        self.issues.push(CodeIssue {
            severity: if result {
                Severity::Warning
            } else {
                Severity::Error
            },
            code: "not-found",
            message: message.clone(),
            about: "system",
        });
        self.check = CodeCheck::NotAvailable(message);
        self.result = result;
        self
    }

    fn note(
        mut self,
        severity: Severity,
        code: &'static str,
        about: &'static str,
        message: String,
    ) -> Verdict {
        self.issues.push(CodeIssue {
            severity,
            code,
            message,
            about,
        });
        self
    }

    /// The messages of the verdict's issues, errors first, joined for a `message` parameter.
    pub fn message(&self) -> Option<String> {
        let mut issues: Vec<&CodeIssue> = self.issues.iter().collect();
        issues.sort_by_key(|i| match i.severity {
            Severity::Error => 0,
            Severity::Warning => 1,
            Severity::Information => 2,
        });
        let msgs: Vec<&str> = issues.iter().map(|i| i.message.as_str()).collect();
        (!msgs.is_empty()).then(|| msgs.join("; "))
    }
}

/// What `$lookup` answers.
#[derive(Debug, Clone)]
pub struct Lookup {
    pub name: Option<String>,
    pub version: Option<String>,
    pub system: String,
    pub code: String,
    pub display: Option<String>,
    pub definition: Option<String>,
    pub abstract_: bool,
    pub inactive: bool,
    pub designations: Vec<codesystem::Designation>,
    /// (property code, value element as JSON: `{"valueCode": ...}` etc.)
    pub properties: Vec<(String, Value)>,
}

/// The `$subsumes` outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subsumption {
    Equivalent,
    Subsumes,
    SubsumedBy,
    NotSubsumed,
}

impl Subsumption {
    /// The `concept-subsumption-outcome` code.
    pub fn code(self) -> &'static str {
        match self {
            Subsumption::Equivalent => "equivalent",
            Subsumption::Subsumes => "subsumes",
            Subsumption::SubsumedBy => "subsumed-by",
            Subsumption::NotSubsumed => "not-subsumed",
        }
    }
}

type ExpansionResult = Result<Arc<Expansion>, ExpandError>;

/// The terminology service.
pub struct Terminology {
    registry: Arc<Registry>,
    /// (value set canonical, registry generation) -> expansion or the reason there is none.
    expansions: moka::sync::Cache<(String, u64), ExpansionResult>,
    /// (code system `url|version` as resolved, registry generation) -> compiled code system.
    code_systems: moka::sync::Cache<(String, u64), Arc<CodeSystemIndex>>,
}

impl Terminology {
    pub fn new(registry: Arc<Registry>) -> Terminology {
        Terminology {
            registry,
            expansions: moka::sync::Cache::builder().max_capacity(2_000).build(),
            code_systems: moka::sync::Cache::builder().max_capacity(2_000).build(),
        }
    }

    /// The registry the service reads.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// A scope over the current registry.
    pub fn scope(&self) -> Scope {
        Scope {
            catalogue: self.registry.catalogue(),
            extra: Vec::new(),
        }
    }

    /// A compiled code system, from the cache when it comes from the registry.
    pub fn code_system_in(
        &self,
        scope: &Scope,
        url: &str,
        version: Option<&str>,
    ) -> Option<Arc<CodeSystemIndex>> {
        let resource = scope.code_system(url, version)?;
        let from_registry = scope
            .catalogue
            .resource("CodeSystem", url)
            .is_some_and(|r| Arc::ptr_eq(r, &resource))
            || version.is_some_and(|v| {
                scope
                    .catalogue
                    .resource("CodeSystem", &format!("{url}|{v}"))
                    .is_some_and(|r| Arc::ptr_eq(r, &resource))
            });
        if !from_registry {
            return Some(Arc::new(CodeSystemIndex::build(&resource)));
        }
        let key = (
            format!("{url}|{}", str_of(&resource, "version").unwrap_or("")),
            scope.catalogue.generation(),
        );
        Some(
            self.code_systems
                .get_with(key, || Arc::new(CodeSystemIndex::build(&resource))),
        )
    }

    /// Whether a registered code system with complete content defines `code`: `None` when the
    /// system is not registered (or external, or only a fragment), so nothing can be said.
    pub fn code_in_system(&self, url: &str, version: Option<&str>, code: &str) -> Option<bool> {
        let scope = self.scope();
        let cs = self.code_system_in(&scope, url, version)?;
        if cs.content != "complete" {
            return None;
        }
        Some(cs.find(code).is_some())
    }

    /// Expands the value set `canonical` (cached when the scope is the registry's).
    pub fn expand_canonical(
        &self,
        scope: &Scope,
        canonical: &str,
        options: &ExpandOptions,
    ) -> Result<Arc<Expansion>, TermError> {
        if let Some(system) = canonical.strip_suffix("?fhir_vs") {
            // The implicit value set of all of a code system's codes.
            let vs = serde_json::json!({"resourceType": "ValueSet", "url": canonical,
                "compose": {"include": [{"system": system}]}});
            return self.expand_resource(scope, &vs, options);
        }
        let vs = scope
            .value_set(canonical)
            .ok_or_else(|| TermError::NotFound(format!("value set {canonical} is not known")))?;
        let cacheable = scope.is_shared()
            && options.system_versions.is_empty()
            && options.force_versions.is_empty()
            && !options.active_only;
        if !cacheable {
            return self.expand_resource(scope, &vs, options);
        }
        let key = (canonical.to_string(), scope.catalogue.generation());
        self.expansions
            .get_with(key, || {
                let mut x = Expander::new(self, scope, options, EXPANSION_LIMIT);
                x.expand(&vs).map(Arc::new)
            })
            .map_err(TermError::from)
    }

    /// Expands a ValueSet resource (never cached: it may not be the registry's).
    pub fn expand_resource(
        &self,
        scope: &Scope,
        vs: &Value,
        options: &ExpandOptions,
    ) -> Result<Arc<Expansion>, TermError> {
        let mut x = Expander::new(self, scope, options, EXPANSION_LIMIT);
        x.expand(vs).map(Arc::new).map_err(TermError::from)
    }

    /// Is `system|code` in the value set `value_set` (a canonical, optionally `|version`)?
    /// `system` is `None` for a bare `code` element, whose system the value set implies.
    /// A display that matches neither the display nor a designation makes the code `Invalid`
    /// (see [`Verdict::display_problem`] for a softer treatment).
    pub fn validate_code(
        &self,
        value_set: &str,
        system: Option<&str>,
        code: &str,
        display: Option<&str>,
    ) -> CodeCheck {
        let (system, version) = match system.map(|s| s.split_once('|')) {
            Some(Some((s, v))) => (Some(s), Some(v)),
            _ => (system, None),
        };
        let request = CodeRequest {
            system,
            version,
            code,
            display,
            infer_system: false,
        };
        let scope = self.scope();
        // A code that names its code system version is checked against that version wherever
        // the value set leaves the version open.
        let mut options = ExpandOptions::default();
        if let (Some(s), Some(v)) = (system, version) {
            options.system_versions.insert(s.to_string(), v.to_string());
        }
        match self.expand_canonical(&scope, value_set, &options) {
            Ok(exp) => self.check_in(&scope, &exp, value_set, &request).check,
            Err(TermError::NotFound(m)) => CodeCheck::NotAvailable(m),
            Err(e) => {
                CodeCheck::NotAvailable(format!("value set {value_set} cannot be expanded: {e}"))
            }
        }
    }

    /// Checks a code against an expansion (`label` names the value set in messages).
    pub fn check_in(
        &self,
        scope: &Scope,
        exp: &Expansion,
        label: &str,
        req: &CodeRequest,
    ) -> Verdict {
        let v = Verdict::new(req.code);
        let entry = match req.system {
            Some(system) => exp.get(system, req.code),
            None => {
                let found = exp.with_code(req.code);
                let mut systems: Vec<&str> = found.iter().map(|e| e.system.as_str()).collect();
                systems.dedup();
                if req.infer_system && systems.len() > 1 {
                    return v.refuse(
                        "not-found",
                        "code",
                        format!(
                            "the code '{}' is in more than one code system of value set {label} ({}), so the system cannot be inferred",
                            req.code,
                            systems.join(", ")
                        ),
                    );
                }
                found.first().copied()
            }
        };
        if let Some(e) = entry {
            return self.found(scope, label, req, e, v);
        }
        let not_in_vs = |system: &str| match system {
            "" => format!(
                "the code '{}' was not found in the value set '{label}'",
                req.code
            ),
            s => format!(
                "the provided code '{s}#{}' was not found in the value set '{label}'",
                req.code
            ),
        };
        let Some(system) = req.system else {
            // A bare code: any open system of the value set might hold it.
            if exp.open_system(ucum::SYSTEM).is_some() && ucum::check(req.code).is_ok() {
                let mut v = v;
                v.system = Some(ucum::SYSTEM.to_string());
                v.display = Some(req.code.to_string());
                return v;
            }
            if let Some(o) = exp.open.iter().find(|o| o.reason != OpenReason::Ucum) {
                return v.unavailable(open_message(&o.system, &o.reason, req.code), false);
            }
            return v.refuse("code-invalid", "code", not_in_vs(""));
        };
        let mut v = v;
        v.system = Some(system.to_string());
        v.version = req.version.map(str::to_string);
        if let Some(open) = exp.open_system(system) {
            if open.reason == OpenReason::Ucum {
                return match ucum::check(req.code) {
                    Ok(()) => {
                        v.display = Some(req.code.to_string());
                        v
                    }
                    Err(e) => v.refuse("code-invalid", "code", e.0),
                };
            }
            // The code system is known, only not in the version asked for: that is a wrong
            // version, not a missing code system.
            if open.reason == OpenReason::Unknown && scope.code_system(system, None).is_some() {
                let known = scope.code_system_versions(system);
                return v.refuse(
                    "not-found",
                    "version",
                    format!(
                        "version '{}' of code system '{system}' is not known (known: {})",
                        open.version.as_deref().unwrap_or(""),
                        known.join(", ")
                    ),
                );
            }
            return v.unavailable(open_message(system, &open.reason, req.code), false);
        }
        // The value set holds the system, but not this code: say why as precisely as possible.
        let cs = self.code_system_in(scope, system, req.version);
        match cs {
            None if scope.code_system(system, None).is_none() && !exp.mentions_system(system) => {
                let v = v.refuse("code-invalid", "code", not_in_vs(system));
                if system == ucum::SYSTEM || external_system(system) {
                    return v;
                }
                v.refuse(
                    "not-found",
                    "system",
                    format!("a definition for CodeSystem '{system}' could not be found, so the code cannot be validated"),
                )
            }
            None => {
                if let Some(wanted) = req.version {
                    let known = scope.code_system_versions(system);
                    return v.refuse(
                        "not-found",
                        "system",
                        format!(
                            "version '{wanted}' of code system '{system}' is not known (known: {})",
                            known.join(", ")
                        ),
                    );
                }
                v.refuse("code-invalid", "code", not_in_vs(system))
            }
            Some(cs) => match cs.find(req.code) {
                None if cs.content == "fragment" => v.unavailable(
                    format!(
                        "unknown code '{}' in the code system '{system}' version '{}': the code system is a fragment, so the code may be valid in some other fragment",
                        req.code,
                        cs.version.as_deref().unwrap_or("")
                    ),
                    true,
                ),
                None => {
                    let mut v = v.refuse("code-invalid", "code", not_in_vs(system));
                    v.unknown_code = true;
                    let hint = cs
                        .find_ignoring_case(req.code)
                        .map(|c| format!(" (did you mean '{}'? the code system is case sensitive)", c.code))
                        .unwrap_or_default();
                    v.refuse(
                        "code-invalid",
                        "code",
                        format!(
                            "unknown code '{}' in the code system '{system}' version '{}'{hint}",
                            req.code,
                            cs.version.as_deref().unwrap_or("")
                        ),
                    )
                }
                Some(c) => {
                    let mut v = v;
                    v.display = c.display.clone();
                    v.version = cs.version.clone();
                    v.refuse("code-invalid", "code", not_in_vs(system))
                }
            },
        }
    }

    fn found(
        &self,
        scope: &Scope,
        label: &str,
        req: &CodeRequest,
        e: &expand::Entry,
        mut v: Verdict,
    ) -> Verdict {
        v.system = Some(e.system.clone());
        v.version = e.version.clone();
        v.code = e.code.clone();
        v.display = e.display.clone();
        v.inactive = e.inactive;
        if let (Some(wanted), Some(have)) = (req.version, e.version.as_deref())
            && wanted != have
            && !version_matches(Some(have), wanted)
        {
            let known = scope.code_system_versions(&e.system);
            let msg = if known.iter().any(|k| k == wanted) {
                format!(
                    "the code '{}#{}' is in value set '{label}' for version '{have}', not for version '{wanted}'",
                    e.system, e.code
                )
            } else {
                format!(
                    "version '{wanted}' of code system '{}' is not known (known: {})",
                    e.system,
                    known.join(", ")
                )
            };
            return v.refuse("not-found", "version", msg);
        }
        if e.inactive {
            v = v.note(
                Severity::Warning,
                "business-rule",
                "code",
                format!(
                    "the concept '{}' has a status of {} and its use should be reviewed",
                    e.code,
                    e.status.as_deref().unwrap_or("inactive")
                ),
            );
        }
        if let Some(display) = req.display {
            let concept_designations = self
                .code_system_in(scope, &e.system, e.version.as_deref())
                .and_then(|cs| cs.find(&e.code).cloned());
            let wanted = codesystem::normalise_display(display);
            let matches = e
                .display
                .iter()
                .chain(e.designations.iter().map(|d| &d.value))
                .any(|d| codesystem::normalise_display(d) == wanted)
                || concept_designations
                    .as_ref()
                    .is_some_and(|c| CodeSystemIndex::display_matches(c, display));
            // An enumerated code of an unknown system has no authoritative display to check.
            if !(matches || e.unverified && e.display.is_none()) {
                let expected = e
                    .display
                    .clone()
                    .or_else(|| concept_designations.and_then(|c| c.display))
                    .unwrap_or_default();
                let msg = format!(
                    "wrong display '{display}' for {}#{}: should be '{expected}'",
                    e.system, e.code
                );
                v.display_problem = Some(msg.clone());
                v = v.refuse("invalid", "display", msg);
            }
        }
        v
    }

    /// Checks a code against a whole code system (`CodeSystem/$validate-code`).
    pub fn check_in_code_system(
        &self,
        scope: &Scope,
        url: &str,
        req: &CodeRequest,
    ) -> Result<Verdict, TermError> {
        let v = Verdict::new(req.code);
        if url == ucum::SYSTEM && scope.code_system(url, None).is_none() {
            let mut v = v;
            v.system = Some(url.to_string());
            return Ok(match ucum::check(req.code) {
                Ok(()) => {
                    v.display = Some(req.code.to_string());
                    v
                }
                Err(e) => v.refuse("code-invalid", "code", e.0),
            });
        }
        let Some(cs) = self.code_system_in(scope, url, req.version) else {
            if external_system(url) {
                let mut v = v;
                v.system = Some(url.to_string());
                return Ok(v.unavailable(open_message(url, &OpenReason::External, req.code), false));
            }
            return Err(TermError::NotFound(match req.version {
                Some(ver) => format!("version '{ver}' of code system {url} is not known"),
                None => format!("code system {url} is not known"),
            }));
        };
        let vs = serde_json::json!({"resourceType": "ValueSet", "url": format!("{url}?fhir_vs"),
            "compose": {"include": [{"system": url, "version": cs.version}]}});
        let exp = self.expand_resource(scope, &vs, &ExpandOptions::default())?;
        let req = CodeRequest {
            system: Some(url),
            version: cs.version.as_deref(),
            ..req.clone()
        };
        Ok(self.check_in(scope, &exp, url, &req))
    }

    /// `$lookup`: everything the code system says about a code.
    pub fn lookup(
        &self,
        scope: &Scope,
        system: &str,
        version: Option<&str>,
        code: &str,
    ) -> Result<Lookup, TermError> {
        if system == ucum::SYSTEM && scope.code_system(system, None).is_none() {
            return match ucum::check(code) {
                Ok(()) => Ok(Lookup {
                    name: Some("UCUM".into()),
                    version: None,
                    system: system.to_string(),
                    code: code.to_string(),
                    display: Some(code.to_string()),
                    definition: None,
                    abstract_: false,
                    inactive: false,
                    designations: Vec::new(),
                    properties: Vec::new(),
                }),
                Err(e) => Err(TermError::NotFound(e.0)),
            };
        }
        let cs = self.code_system_in(scope, system, version).ok_or_else(|| {
            TermError::NotFound(match (version, external_system(system)) {
                (_, true) => format!("code system {system} is not available on this server (too large to ship; no local fragment is loaded)"),
                (Some(v), _) => format!("version '{v}' of code system {system} is not known"),
                (None, _) => format!("code system {system} is not known"),
            })
        })?;
        let concept = cs.find(code).ok_or_else(|| {
            TermError::NotFound(format!(
                "unknown code '{code}' in the code system '{system}' version '{}'",
                cs.version.as_deref().unwrap_or("")
            ))
        })?;
        let mut properties: Vec<(String, Value)> = concept
            .properties
            .iter()
            .filter(|(c, _)| !matches!(c.as_str(), "parent" | "child"))
            .map(|(c, p)| {
                let value = p
                    .as_object()
                    .and_then(|o| o.iter().find(|(k, _)| k.starts_with("value")))
                    .map(|(k, v)| serde_json::json!({ k.clone(): v.clone() }))
                    .unwrap_or(Value::Null);
                (c.clone(), value)
            })
            .collect();
        for &p in &concept.parents {
            properties.push((
                "parent".into(),
                serde_json::json!({"valueCode": cs.concepts[p].code}),
            ));
        }
        for &c in &concept.children {
            properties.push((
                "child".into(),
                serde_json::json!({"valueCode": cs.concepts[c].code}),
            ));
        }
        if !properties.iter().any(|(c, _)| c == "inactive") {
            properties.push((
                "inactive".into(),
                serde_json::json!({"valueBoolean": concept.inactive}),
            ));
        }
        Ok(Lookup {
            name: cs.name.clone().or_else(|| cs.title.clone()),
            version: cs.version.clone(),
            system: system.to_string(),
            code: concept.code.clone(),
            display: concept.display.clone(),
            definition: concept.definition.clone(),
            abstract_: concept.not_selectable,
            inactive: concept.inactive,
            designations: concept.designations.clone(),
            properties,
        })
    }

    /// `$subsumes`: how code `a` relates to code `b` in the hierarchy of `system`.
    pub fn subsumes(
        &self,
        scope: &Scope,
        system: &str,
        version: Option<&str>,
        a: &str,
        b: &str,
    ) -> Result<Subsumption, TermError> {
        let cs = self
            .code_system_in(scope, system, version)
            .ok_or_else(|| TermError::NotFound(format!("code system {system} is not known")))?;
        let index = |code: &str| {
            cs.index_of(code).ok_or_else(|| {
                TermError::Invalid(format!(
                    "unknown code '{code}' in the code system '{system}'"
                ))
            })
        };
        let (ia, ib) = (index(a)?, index(b)?);
        Ok(if ia == ib {
            Subsumption::Equivalent
        } else if cs.subsumes(ia, ib) {
            Subsumption::Subsumes
        } else if cs.subsumes(ib, ia) {
            Subsumption::SubsumedBy
        } else {
            Subsumption::NotSubsumed
        })
    }
}

fn open_message(system: &str, reason: &OpenReason, code: &str) -> String {
    match reason {
        OpenReason::External => format!(
            "code system {system} is not available on this server (too large to ship; no local fragment is loaded), so '{code}' cannot be checked"
        ),
        OpenReason::Unknown => format!(
            "a definition for CodeSystem '{system}' could not be found, so the code cannot be validated"
        ),
        OpenReason::NotPresent => format!(
            "code system {system} is registered without its content (content = not-present), so '{code}' cannot be checked"
        ),
        OpenReason::Ucum => format!("'{code}' is not a valid UCUM unit"),
    }
}

/// `memberOf()` in FHIRPath: codes, Codings and CodeableConcepts.
impl crate::fhirpath::Terminology for Terminology {
    fn member_of(
        &self,
        value: &Value,
        type_name: &str,
        value_set: &str,
    ) -> Result<Option<bool>, String> {
        let codings: Vec<(Option<&str>, &str)> = match value {
            Value::String(code) => vec![(None, code.as_str())],
            Value::Object(o) if type_name == "CodeableConcept" || o.contains_key("coding") => o
                .get("coding")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|c| Some((str_of(c, "system"), str_of(c, "code")?)))
                .collect(),
            Value::Object(o) => match o.get("code").and_then(Value::as_str) {
                Some(code) => vec![(o.get("system").and_then(Value::as_str), code)],
                None => return Ok(None),
            },
            _ => return Ok(None),
        };
        let mut unknown = false;
        for (system, code) in codings {
            match self.validate_code(value_set, system, code, None) {
                CodeCheck::Valid => return Ok(Some(true)),
                CodeCheck::Invalid(_) => {}
                CodeCheck::NotAvailable(_) => unknown = true,
            }
        }
        Ok(if unknown { None } else { Some(false) })
    }
}

#[cfg(test)]
mod tests;
