//! ValueSet expansion: `compose.include`/`exclude` with concept lists, whole code systems,
//! filters on local code systems and nested value sets, or a stated `expansion` when the compose
//! cannot be evaluated.
//!
//! Invariants: a value set that reaches itself through `include.valueSet`/`exclude.valueSet`
//! (directly or through others) is an [`ExpandError::Cycle`], never a recursion; an expansion
//! never grows beyond the limit it was given ([`ExpandError::TooCostly`]); code systems too large
//! to ship (SNOMED CT, LOINC, ...) and unknown ones are recorded as [`OpenSystem`]s instead of
//! failing, so membership of the enumerable part can still be decided.

use super::codesystem::{CodeSystemIndex, Designation};
use super::{Scope, Terminology, external_system, ucum};
use regex::Regex;
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// Why a value set cannot be expanded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExpandError {
    /// A value set it needs is not known.
    UnknownValueSet(String),
    /// The value set reaches itself: the chain of canonicals, first and last equal.
    Cycle(Vec<String>),
    /// More codes than the limit.
    TooCostly(usize),
    /// The definition is broken (a filter without a value, an unknown filter operator, a regex
    /// that does not compile, ...).
    Invalid(String),
}

impl std::fmt::Display for ExpandError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExpandError::UnknownValueSet(u) => write!(f, "value set {u} is not known"),
            ExpandError::Cycle(chain) => write!(
                f,
                "value set {} includes itself (cyclic reference via {})",
                chain.first().map_or("", String::as_str),
                chain.join(" -> ")
            ),
            ExpandError::TooCostly(limit) => write!(
                f,
                "the expansion has more than {limit} codes (too costly); use a filter or a smaller value set"
            ),
            ExpandError::Invalid(m) => f.write_str(m),
        }
    }
}

/// Why the codes of a system included by a value set cannot be listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpenReason {
    /// Too large to ship (SNOMED CT, LOINC, ICD-10, ...), no local fragment registered.
    External,
    /// Not registered at all.
    Unknown,
    /// UCUM: an infinite grammar, checked by [`ucum::check`].
    Ucum,
    /// Registered, but with `content` `not-present`.
    NotPresent,
}

/// A system a value set includes (wholly or by filter) whose codes cannot be enumerated here.
#[derive(Debug, Clone)]
pub struct OpenSystem {
    pub system: String,
    pub version: Option<String>,
    pub reason: OpenReason,
}

/// One code of an expansion.
#[derive(Debug, Clone)]
pub struct Entry {
    pub system: String,
    pub version: Option<String>,
    pub code: String,
    pub display: Option<String>,
    pub inactive: bool,
    pub abstract_: bool,
    /// The code system's status of the concept, when stated (`retired`, `deprecated`, ...).
    pub status: Option<String>,
    pub designations: Vec<Designation>,
    /// The code system says nothing about the code (an enumerated code of an unknown or external
    /// system): display and status are the value set's.
    pub unverified: bool,
}

/// A computed expansion with fast membership tests.
#[derive(Debug, Clone, Default)]
pub struct Expansion {
    pub contains: Vec<Entry>,
    /// (system, code) -> index in `contains`.
    keys: HashMap<(String, String), usize>,
    /// code -> indexes, for a bare `code` whose system the value set implies.
    by_code: HashMap<String, Vec<usize>>,
    /// Systems compared ignoring case (`caseSensitive` false): lower-cased (system, code) -> index.
    folded: HashMap<(String, String), usize>,
    insensitive: HashSet<String>,
    pub open: Vec<OpenSystem>,
    /// `url|version` of every code system used.
    pub used: Vec<String>,
    /// Code systems used with `content` `fragment`.
    pub fragments: HashSet<String>,
    /// Things the expansion skipped (an enumerated code the code system does not have, ...).
    pub warnings: Vec<String>,
}

impl Expansion {
    /// The entry for `system|code` (ignoring case for a case-insensitive system).
    pub fn get(&self, system: &str, code: &str) -> Option<&Entry> {
        if let Some(&i) = self.keys.get(&(system.to_string(), code.to_string())) {
            return Some(&self.contains[i]);
        }
        if self.insensitive.contains(system) {
            let key = (system.to_string(), code.to_lowercase());
            return self.folded.get(&key).map(|&i| &self.contains[i]);
        }
        None
    }

    /// The entries with this code in any system.
    pub fn with_code(&self, code: &str) -> Vec<&Entry> {
        let mut out: Vec<&Entry> = self
            .by_code
            .get(code)
            .into_iter()
            .flatten()
            .map(|&i| &self.contains[i])
            .collect();
        if out.is_empty() {
            out.extend(self.insensitive.iter().filter_map(|s| self.get(s, code)));
        }
        out
    }

    /// Is this system open (codes not listable) in the value set?
    pub fn open_system(&self, system: &str) -> Option<&OpenSystem> {
        self.open.iter().find(|o| o.system == system)
    }

    /// Does the value set name this system at all (in an entry or as an open system)?
    pub fn mentions_system(&self, system: &str) -> bool {
        self.open_system(system).is_some() || self.contains.iter().any(|e| e.system == system)
    }

    fn push(&mut self, e: Entry) {
        let key = (e.system.clone(), e.code.clone());
        if self.keys.contains_key(&key) {
            return;
        }
        let i = self.contains.len();
        if self.insensitive.contains(&e.system) {
            self.folded
                .entry((e.system.clone(), e.code.to_lowercase()))
                .or_insert(i);
        }
        self.by_code.entry(e.code.clone()).or_default().push(i);
        self.keys.insert(key, i);
        self.contains.push(e);
    }

    fn note_open(&mut self, o: OpenSystem) {
        if !self
            .open
            .iter()
            .any(|x| x.system == o.system && x.version == o.version)
        {
            self.open.push(o);
        }
    }

    fn note_used(&mut self, cs: &CodeSystemIndex) {
        let used = match &cs.version {
            Some(v) => format!("{}|{v}", cs.url),
            None => cs.url.clone(),
        };
        if !self.used.contains(&used) {
            self.used.push(used);
        }
        if !cs.case_sensitive {
            self.insensitive.insert(cs.url.clone());
        }
        if cs.content == "fragment" {
            self.fragments.insert(cs.url.clone());
        }
    }

    /// Keeps only what `keep` accepts, rebuilding the indexes.
    fn retain(self, keep: impl Fn(&Entry) -> bool) -> Expansion {
        let mut out = Expansion {
            insensitive: self.insensitive,
            open: self.open,
            used: self.used,
            fragments: self.fragments,
            warnings: self.warnings,
            ..Default::default()
        };
        for e in self.contains {
            if keep(&e) {
                out.push(e);
            }
        }
        out
    }

    fn merge(&mut self, other: Expansion) {
        for s in other.insensitive {
            self.insensitive.insert(s);
        }
        for e in other.contains {
            self.push(e);
        }
        for o in other.open {
            self.note_open(o);
        }
        for u in other.used {
            if !self.used.contains(&u) {
                self.used.push(u);
            }
        }
        self.fragments.extend(other.fragments);
        self.warnings.extend(other.warnings);
    }
}

/// Options that change what an expansion holds.
#[derive(Debug, Clone, Default)]
pub struct ExpandOptions {
    /// Leave inactive codes out (`activeOnly`).
    pub active_only: bool,
    /// Code system versions to use when the value set does not pin one (`system-version`), or
    /// always (`force-system-version`): url -> version.
    pub system_versions: HashMap<String, String>,
    pub force_versions: HashMap<String, String>,
}

/// One expansion in progress: the value sets on the current path (cycle detection) and the
/// code systems compiled so far.
pub(crate) struct Expander<'a> {
    pub service: &'a Terminology,
    pub scope: &'a Scope,
    pub options: &'a ExpandOptions,
    pub limit: usize,
    path: Vec<String>,
    code_systems: HashMap<String, Option<Arc<CodeSystemIndex>>>,
}

impl<'a> Expander<'a> {
    pub fn new(
        service: &'a Terminology,
        scope: &'a Scope,
        options: &'a ExpandOptions,
        limit: usize,
    ) -> Expander<'a> {
        Expander {
            service,
            scope,
            options,
            limit,
            path: Vec::new(),
            code_systems: HashMap::new(),
        }
    }

    /// The compiled code system `url` (at `version` when given).
    pub fn code_system(
        &mut self,
        url: &str,
        version: Option<&str>,
    ) -> Option<Arc<CodeSystemIndex>> {
        let key = match version {
            Some(v) => format!("{url}|{v}"),
            None => url.to_string(),
        };
        if let Some(found) = self.code_systems.get(&key) {
            return found.clone();
        }
        let found = self.service.code_system_in(self.scope, url, version);
        self.code_systems.insert(key, found.clone());
        found
    }

    /// Expands a ValueSet resource.
    pub fn expand(&mut self, vs: &Value) -> Result<Expansion, ExpandError> {
        let id = canonical_of(vs);
        if self.path.contains(&id) {
            let mut chain = self.path.clone();
            chain.push(id);
            let start = chain
                .iter()
                .position(|c| *c == chain[chain.len() - 1])
                .unwrap_or(0);
            return Err(ExpandError::Cycle(chain[start..].to_vec()));
        }
        self.path.push(id);
        let out = self.expand_inner(vs);
        self.path.pop();
        out
    }

    fn expand_inner(&mut self, vs: &Value) -> Result<Expansion, ExpandError> {
        let Some(compose) = vs.get("compose") else {
            return match vs.get("expansion") {
                Some(exp) => Ok(self.stated(exp)),
                None => Err(ExpandError::Invalid(format!(
                    "value set {} has neither compose nor expansion",
                    canonical_of(vs)
                ))),
            };
        };
        // compose.inactive false means inactive codes are left out of this value set.
        let inactive_allowed = compose.get("inactive").and_then(Value::as_bool) != Some(false)
            && !self.options.active_only;
        let mut out = Expansion::default();
        for inc in array(compose, "include") {
            let part = self.component(vs, inc)?;
            out.merge(part);
            if out.contains.len() > self.limit {
                return Err(ExpandError::TooCostly(self.limit));
            }
        }
        let mut excluded: Vec<Expansion> = Vec::new();
        for exc in array(compose, "exclude") {
            excluded.push(self.component(vs, exc)?);
        }
        let out = if excluded.is_empty() && inactive_allowed {
            out
        } else {
            out.retain(|e| {
                (inactive_allowed || !e.inactive)
                    && !excluded.iter().any(|x| x.get(&e.system, &e.code).is_some())
            })
        };
        Ok(out)
    }

    /// A stated expansion (`ValueSet.expansion.contains`, nested entries flattened).
    fn stated(&mut self, exp: &Value) -> Expansion {
        let mut out = Expansion::default();
        let mut stack: Vec<&Value> = array(exp, "contains").iter().rev().collect();
        while let Some(c) = stack.pop() {
            let inactive = c.get("inactive").and_then(Value::as_bool) == Some(true);
            if let (Some(system), Some(code)) = (str_of(c, "system"), str_of(c, "code"))
                && !(self.options.active_only && inactive)
            {
                out.push(Entry {
                    system: system.to_string(),
                    version: str_of(c, "version").map(str::to_string),
                    code: code.to_string(),
                    display: str_of(c, "display").map(str::to_string),
                    inactive,
                    abstract_: c.get("abstract").and_then(Value::as_bool) == Some(true),
                    status: None,
                    designations: Vec::new(),
                    unverified: false,
                });
            }
            stack.extend(array(c, "contains").iter().rev());
        }
        out
    }

    /// One `include` or `exclude`: the system part intersected with every nested value set.
    fn component(&mut self, vs: &Value, inc: &Value) -> Result<Expansion, ExpandError> {
        let mut sets: Vec<Expansion> = Vec::new();
        for canonical in array(inc, "valueSet").iter().filter_map(Value::as_str) {
            let nested = self.nested(vs, canonical)?;
            sets.push(nested);
        }
        if let Some(system) = str_of(inc, "system") {
            sets.insert(0, self.system_part(system, inc)?);
        }
        let mut sets = sets.into_iter();
        let Some(first) = sets.next() else {
            return Ok(Expansion::default());
        };
        let rest: Vec<Expansion> = sets.collect();
        if rest.is_empty() {
            return Ok(first);
        }
        let mut opens = first.open.clone();
        for r in &rest {
            opens.extend(r.open.iter().cloned());
        }
        let mut joined = first.retain(|e| {
            rest.iter()
                .all(|r| r.get(&e.system, &e.code).is_some() || r.open_system(&e.system).is_some())
        });
        for o in opens {
            joined.note_open(o);
        }
        Ok(joined)
    }

    /// A value set named by `include.valueSet` (a canonical, possibly a contained `#id`).
    fn nested(&mut self, vs: &Value, canonical: &str) -> Result<Expansion, ExpandError> {
        if let Some(local) = canonical.strip_prefix('#') {
            let contained = array(vs, "contained").iter().find(|c| {
                str_of(c, "resourceType") == Some("ValueSet") && str_of(c, "id") == Some(local)
            });
            return match contained {
                Some(c) => self.expand(&c.clone()),
                None => Err(ExpandError::UnknownValueSet(canonical.to_string())),
            };
        }
        if let Some(system) = canonical.strip_suffix("?fhir_vs") {
            return self.system_part(system, &Value::Null);
        }
        let Some(nested) = self.scope.value_set(canonical) else {
            return Err(ExpandError::UnknownValueSet(canonical.to_string()));
        };
        self.expand(&nested)
    }

    /// The codes of one system an include names: a concept list, filters, or all of it.
    fn system_part(&mut self, system: &str, inc: &Value) -> Result<Expansion, ExpandError> {
        let stated_version = str_of(inc, "version");
        let default_version = self.options.system_versions.get(system).map(String::as_str);
        let version = self
            .options
            .force_versions
            .get(system)
            .map(String::as_str)
            // A wildcard pin (`1.x`) accepts a requested version that fits it.
            .or(match (stated_version, default_version) {
                (Some(w), Some(d))
                    if w.contains(['x', '*']) && super::version_matches(Some(d), w) =>
                {
                    Some(d)
                }
                _ => stated_version,
            })
            .or(default_version);
        let concepts = array(inc, "concept");
        let filters = array(inc, "filter");
        let mut out = Expansion::default();
        let cs = self.code_system(system, version);
        let Some(cs) = cs else {
            let reason = if system == ucum::SYSTEM {
                OpenReason::Ucum
            } else if external_system(system) {
                OpenReason::External
            } else {
                OpenReason::Unknown
            };
            if filters.is_empty() && !concepts.is_empty() {
                // Enumerated codes of a system we do not hold: listed as given, unverified.
                for c in concepts {
                    let Some(code) = str_of(c, "code") else {
                        continue;
                    };
                    if reason == OpenReason::Ucum && ucum::check(code).is_err() {
                        out.warnings
                            .push(format!("'{code}' is not a valid UCUM unit"));
                        continue;
                    }
                    out.push(Entry {
                        system: system.to_string(),
                        version: version.map(str::to_string),
                        code: code.to_string(),
                        display: str_of(c, "display").map(str::to_string),
                        inactive: false,
                        abstract_: false,
                        status: None,
                        designations: designations_of(c),
                        unverified: true,
                    });
                }
                if reason == OpenReason::Unknown {
                    out.note_open(OpenSystem {
                        system: system.to_string(),
                        version: version.map(str::to_string),
                        reason,
                    });
                }
            } else {
                out.note_open(OpenSystem {
                    system: system.to_string(),
                    version: version.map(str::to_string),
                    reason,
                });
            }
            return Ok(out);
        };
        out.note_used(&cs);
        if cs.content == "not-present" {
            out.note_open(OpenSystem {
                system: system.to_string(),
                version: cs.version.clone(),
                reason: OpenReason::NotPresent,
            });
            return Ok(out);
        }
        let selected: Vec<usize> = if !concepts.is_empty() {
            let mut v = Vec::new();
            for c in concepts {
                let Some(code) = str_of(c, "code") else {
                    continue;
                };
                match cs.index_of(code) {
                    Some(i) => v.push(i),
                    None => out.warnings.push(format!(
                        "the code '{code}' is not in code system {system}; left out of the expansion"
                    )),
                }
            }
            v
        } else {
            let mut current: Option<Vec<usize>> = None;
            for f in filters {
                let matched = apply_filter(&cs, f)?;
                current = Some(match current {
                    None => matched,
                    Some(prev) => {
                        let keep: HashSet<usize> = matched.into_iter().collect();
                        prev.into_iter().filter(|i| keep.contains(i)).collect()
                    }
                });
            }
            current.unwrap_or_else(|| (0..cs.concepts.len()).collect())
        };
        if selected.len() > self.limit {
            return Err(ExpandError::TooCostly(self.limit));
        }
        for i in selected {
            let concept = &cs.concepts[i];
            // A display given in the value set's concept list overrides the code system's.
            let stated = concepts
                .iter()
                .find(|c| str_of(c, "code") == Some(concept.code.as_str()));
            let mut designations = concept.designations.clone();
            if let Some(s) = stated {
                designations.extend(designations_of(s));
            }
            out.push(Entry {
                system: system.to_string(),
                version: cs.version.clone(),
                code: concept.code.clone(),
                display: stated
                    .and_then(|s| str_of(s, "display"))
                    .map(str::to_string)
                    .or_else(|| concept.display.clone()),
                inactive: concept.inactive,
                abstract_: concept.not_selectable,
                status: concept.status.clone(),
                designations,
                unverified: false,
            });
        }
        Ok(out)
    }
}

/// The concepts a filter selects.
fn apply_filter(cs: &CodeSystemIndex, f: &Value) -> Result<Vec<usize>, ExpandError> {
    let property = str_of(f, "property").unwrap_or("");
    let op = str_of(f, "op").unwrap_or("");
    let Some(value) = str_of(f, "value") else {
        return Err(ExpandError::Invalid(format!(
            "the filter '{property} {op}' on {} has no value",
            cs.url
        )));
    };
    let by_code = |code: &str| -> Result<usize, ExpandError> {
        cs.index_of(code).ok_or_else(|| {
            ExpandError::Invalid(format!(
                "the filter '{property} {op} {value}' names a code that is not in {}",
                cs.url
            ))
        })
    };
    let hierarchy = matches!(property, "concept" | "code" | "parent" | "child");
    let all = || (0..cs.concepts.len()).collect::<Vec<usize>>();
    Ok(match (op, hierarchy) {
        ("is-a", true) => {
            let i = by_code(value)?;
            let mut v = vec![i];
            v.extend(cs.descendants(i));
            v
        }
        ("descendent-of", true) => cs.descendants(by_code(value)?),
        ("is-not-a", true) => {
            let i = by_code(value)?;
            let mut out_set: HashSet<usize> = cs.descendants(i).into_iter().collect();
            out_set.insert(i);
            all().into_iter().filter(|j| !out_set.contains(j)).collect()
        }
        ("child-of", true) => cs.concepts[by_code(value)?].children.clone(),
        ("generalizes", true) => {
            let i = by_code(value)?;
            let mut v = vec![i];
            v.extend(cs.ancestors(i));
            v
        }
        // `parent = X` selects the children of X; `child = X` the parents of X.
        ("=", true) if property == "parent" => cs.concepts[by_code(value)?].children.clone(),
        ("=", true) if property == "child" => cs.concepts[by_code(value)?].parents.clone(),
        ("=", true) => cs.index_of(value).into_iter().collect(),
        ("in", true) => value
            .split(',')
            .filter_map(|c| cs.index_of(c.trim()))
            .collect(),
        ("not-in", true) => {
            let named: HashSet<usize> = value
                .split(',')
                .filter_map(|c| cs.index_of(c.trim()))
                .collect();
            all().into_iter().filter(|j| !named.contains(j)).collect()
        }
        ("regex", _) => {
            // FHIR filter regexes match the whole value, as in the specification's (Java) tooling.
            let re = Regex::new(&format!("^(?:{value})$")).map_err(|e| {
                ExpandError::Invalid(format!("the regex filter '{value}' is invalid: {e}"))
            })?;
            cs.all()
                .filter(|(_, c)| {
                    if hierarchy {
                        re.is_match(&c.code)
                    } else {
                        cs.property_values(c, property)
                            .iter()
                            .any(|v| re.is_match(v))
                    }
                })
                .map(|(i, _)| i)
                .collect()
        }
        ("=", false) => cs
            .all()
            .filter(|(_, c)| cs.property_values(c, property).iter().any(|v| v == value))
            .map(|(i, _)| i)
            .collect(),
        ("in", false) | ("not-in", false) => {
            let wanted: HashSet<&str> = value.split(',').map(str::trim).collect();
            let inside = op == "in";
            cs.all()
                .filter(|(_, c)| {
                    cs.property_values(c, property)
                        .iter()
                        .any(|v| wanted.contains(v.as_str()))
                        == inside
                })
                .map(|(i, _)| i)
                .collect()
        }
        ("exists", _) => {
            let want = match value {
                "true" => true,
                "false" => false,
                _ => {
                    return Err(ExpandError::Invalid(format!(
                        "the 'exists' filter on '{property}' needs true or false, not '{value}'"
                    )));
                }
            };
            cs.all()
                .filter(|(_, c)| cs.property_values(c, property).is_empty() != want)
                .map(|(i, _)| i)
                .collect()
        }
        _ => {
            return Err(ExpandError::Invalid(format!(
                "the filter '{property} {op} {value}' is not supported on {}",
                cs.url
            )));
        }
    })
}

fn designations_of(c: &Value) -> Vec<Designation> {
    array(c, "designation")
        .iter()
        .filter_map(|d| {
            Some(Designation {
                language: str_of(d, "language").map(str::to_string),
                use_: d.get("use").cloned(),
                value: str_of(d, "value")?.to_string(),
            })
        })
        .collect()
}

/// `url|version` of a value set (or its id for one without url, e.g. contained).
pub fn canonical_of(vs: &Value) -> String {
    match (str_of(vs, "url"), str_of(vs, "version")) {
        (Some(u), Some(v)) => format!("{u}|{v}"),
        (Some(u), None) => u.to_string(),
        _ => format!("#{}", str_of(vs, "id").unwrap_or("")),
    }
}

pub(crate) fn array<'v>(v: &'v Value, key: &str) -> &'v [Value] {
    v.get(key)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

pub(crate) fn str_of<'v>(v: &'v Value, key: &str) -> Option<&'v str> {
    v.get(key).and_then(Value::as_str)
}
