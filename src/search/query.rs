//! Query-string parsing into a [`SearchPlan`], strict by default: an unknown parameter, a bad
//! modifier or a bad value is an error naming it, never silently dropped. Under lenient handling
//! the same problems are collected in `SearchPlan::ignored` instead.

use super::dates;
use super::fulltext;
use super::normalize::normalize;
use super::params::{Catalogue, ParamKind, ParamSpec};
use super::plan::*;
use crate::definitions::Definitions;
use crate::model::FhirError;
use std::sync::Arc;

/// How to parse.
#[derive(Debug, Clone)]
pub struct ParseOptions {
    /// `Prefer: handling=lenient`.
    pub lenient: bool,
    pub default_count: usize,
    pub max_count: usize,
    /// The server's absolute base (`http://host/fhir`): absolute references to it match `Type/id`.
    pub base_url: String,
    /// Now, in ms since the epoch (for `ap` on dates).
    pub now_ms: i64,
}

impl Default for ParseOptions {
    fn default() -> Self {
        ParseOptions {
            lenient: false,
            default_count: 20,
            max_count: 1000,
            base_url: String::new(),
            now_ms: 0,
        }
    }
}

/// Chains and `_has` nest at most this deep (a bound against hostile queries, not a FHIR rule).
const MAX_DEPTH: usize = 8;

/// One search carries at most this many filter values (comma-separated ORs counted one each): a
/// bound against hostile queries that keeps every statement far below SQLite's limit of bound
/// parameters, so a huge query gets a 400 that says so instead of a database error.
pub const MAX_VALUES: usize = 1000;

/// The most codes a search may match by `:in`, `:not-in`, `:above` and `:below` together (each
/// code is a bound argument). A larger expansion is refused as too costly, never truncated: a
/// truncated set would answer a different search.
pub const MAX_SET_CODES: usize = 5_000;

/// Result parameters and controls that are not filters.
const CONTROLS: &[&str] = &[
    "_count",
    "_sort",
    "_include",
    "_revinclude",
    "_summary",
    "_elements",
    "_total",
    "_format",
    "_pretty",
    "_after",
    "_before",
    "_offset",
    "_contained",
    "_containedType",
    "_type",
];

fn bad(msg: impl Into<String>) -> FhirError {
    FhirError::new(400, "invalid", msg)
}

fn unsupported(msg: impl Into<String>) -> FhirError {
    FhirError::new(400, "not-supported", msg)
}

/// Splits a value at commas not escaped by `\`, unescaping `\,`, `\|`, `\$` and `\\`.
pub fn split_values(v: &str) -> Vec<String> {
    split_values_keeping(v, false)
}

/// [`split_values`], keeping `\$` escaped when `keep_dollar` (a composite value is split at its
/// unescaped `$` afterwards).
fn split_values_keeping(v: &str, keep_dollar: bool) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut chars = v.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some('$') if keep_dollar => out.last_mut().map_or((), |s| s.push_str("\\$")),
                Some(n @ (',' | '$' | '\\')) => out.last_mut().map_or((), |s| s.push(n)),
                Some('|') => out.last_mut().map_or((), |s| s.push_str("\\|")),
                Some(n) => out.last_mut().map_or((), |s| {
                    s.push('\\');
                    s.push(n)
                }),
                None => out.last_mut().map_or((), |s| s.push('\\')),
            },
            ',' => out.push(String::new()),
            c => out.last_mut().map_or((), |s| s.push(c)),
        }
    }
    out
}

/// Splits `v` at the first `sep` not escaped by `\\`.
fn split_unescaped(v: &str, sep: u8) -> Option<(&str, &str)> {
    let bytes = v.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' {
            i += 2;
            continue;
        }
        if bytes[i] == sep {
            return Some((&v[..i], &v[i + 1..]));
        }
        i += 1;
    }
    None
}

/// Splits `system|code` at the first unescaped `|`.
fn split_bar(v: &str) -> Option<(String, String)> {
    split_unescaped(v, b'|').map(|(s, c)| (unescape_bar(s), unescape_bar(c)))
}

fn unescape_bar(s: &str) -> String {
    s.replace("\\|", "|")
}

/// Parses a search over `types` from query parameters (already percent-decoded).
pub fn parse(
    types: &[String],
    params: &[(String, String)],
    catalogue: &Catalogue,
    opts: &ParseOptions,
) -> Result<SearchPlan, FhirError> {
    let mut plan = SearchPlan::over(types.to_vec(), opts.default_count.min(opts.max_count));
    let values: usize = params
        .iter()
        .filter(|(name, _)| !CONTROLS.contains(&name.as_str()))
        .map(|(_, value)| split_values(value).len())
        .sum();
    if values > MAX_VALUES {
        // Not subject to lenient handling: ignoring part of it would answer a different search.
        return Err(FhirError::new(
            400,
            "too-costly",
            format!(
                "the search has {values} filter values; at most {MAX_VALUES} are allowed in one search (split it into several)"
            ),
        ));
    }
    for (name, value) in params {
        let result = if CONTROLS.contains(&name.as_str())
            || name == "_include:iterate"
            || name == "_revinclude:iterate"
        {
            control(&mut plan, name, value, catalogue, opts)
        } else {
            filter(types, name, value, catalogue, opts, 0).map(|preds| {
                plan.filters.push(preds);
            })
        };
        match result {
            Ok(()) => {
                if !matches!(
                    name.as_str(),
                    "_format" | "_pretty" | "_after" | "_before" | "_offset" | "_type"
                ) {
                    plan.applied.push((name.clone(), value.clone()));
                }
            }
            Err(e) if opts.lenient => {
                plan.ignored.push(format!(
                    "parameter '{name}={value}' ignored: {}",
                    e.issues
                        .first()
                        .map(|i| i.diagnostics.as_str())
                        .unwrap_or("invalid")
                ));
            }
            Err(e) => return Err(e.at(&format!("http.{name}"))),
        }
    }
    plan.filters = date_rows(std::mem::take(&mut plan.filters), types, catalogue);
    check_contained(&plan)?;
    let codes: usize = plan.filters.iter().map(|ors| set_codes(ors)).sum();
    if codes > MAX_SET_CODES {
        return Err(FhirError::new(
            400,
            "too-costly",
            format!(
                "the search matches {codes} codes by :in, :not-in, :above and :below; at most {MAX_SET_CODES} are allowed in one search"
            ),
        ));
    }
    Ok(plan)
}

/// What `_contained=true|both` cannot answer, refused rather than answered differently: contained
/// resources have no version, `meta.lastUpdated` or history of their own, and their keys have no
/// place in a system-wide order or an offset-paged sort.
fn check_contained(plan: &SearchPlan) -> Result<(), FhirError> {
    let refuse = |what: &str| -> Result<(), FhirError> {
        Err(unsupported(format!(
            "_contained={} is not supported {what}",
            match plan.contained {
                Contained::Both => "both",
                _ => "true",
            }
        ))
        .at("http._contained"))
    };
    match plan.contained {
        Contained::No => {
            if plan.contained_type == ContainedType::Contained {
                return Err(bad(
                    "_containedType=contained needs _contained=true or _contained=both (only contained resources can be returned alone)",
                )
                .at("http._containedType"));
            }
            return Ok(());
        }
        Contained::Only | Contained::Both => {}
    }
    if plan.types.len() != 1 {
        return refuse("on a system search (search one type)");
    }
    if !plan.sort.is_empty() {
        return refuse("with _sort");
    }
    if plan
        .filters
        .iter()
        .flatten()
        .any(|p| matches!(p, Predicate::Id(_) | Predicate::LastUpdated { .. }))
    {
        return refuse(
            "with _id or _lastUpdated (contained resources are not versioned on their own)",
        );
    }
    Ok(())
}

/// The codes of the code sets in `preds`, nested ones included.
fn set_codes(preds: &[Predicate]) -> usize {
    preds
        .iter()
        .map(|p| match p {
            Predicate::TokenIn { codes, .. } => codes.len(),
            Predicate::Not(inner) => set_codes(std::slice::from_ref(inner)),
            Predicate::Chain { inner, .. } | Predicate::Has { inner, .. } => set_codes(inner),
            _ => 0,
        })
        .sum()
}

/// A page cursor's `Type/id`; the id may be a contained resource's key (`_contained=true`).
fn parse_key(v: &str) -> Option<(String, String)> {
    let (t, id) = v.split_once('/')?;
    let defs = Definitions::core();
    let is_id = crate::model::primitives::is_id;
    let valid = is_id(id)
        || crate::store::split_contained_key(id).is_some_and(|(ct, cid, inner)| {
            defs.is_resource_type(ct) && is_id(cid) && is_id(inner)
        });
    (defs.is_resource_type(t) && valid).then(|| (t.to_string(), id.to_string()))
}

fn control(
    plan: &mut SearchPlan,
    name: &str,
    value: &str,
    catalogue: &Catalogue,
    opts: &ParseOptions,
) -> Result<(), FhirError> {
    match name {
        "_format" | "_pretty" | "_type" => Ok(()),
        "_count" => {
            let n: usize = value
                .parse()
                .map_err(|_| bad(format!("_count '{value}' is not a non-negative integer")))?;
            if n > opts.max_count {
                return Err(bad(format!(
                    "_count {n} exceeds the maximum page size {}",
                    opts.max_count
                )));
            }
            plan.count = n;
            Ok(())
        }
        "_after" | "_before" => {
            let (t, id) =
                parse_key(value).ok_or_else(|| bad(format!("{name} '{value}' is not Type/id")))?;
            plan.cursor = if name == "_after" {
                Cursor::After(t, id)
            } else {
                Cursor::Before(t, id)
            };
            Ok(())
        }
        "_offset" => {
            let n = value
                .parse()
                .map_err(|_| bad(format!("_offset '{value}' is not a non-negative integer")))?;
            plan.cursor = Cursor::Offset(n);
            Ok(())
        }
        "_contained" => {
            plan.contained = match value {
                "false" => Contained::No,
                "true" => Contained::Only,
                "both" => Contained::Both,
                _ => {
                    return Err(bad(format!(
                        "_contained '{value}' is not true, false or both"
                    )));
                }
            };
            Ok(())
        }
        "_containedType" => {
            plan.contained_type = match value {
                "container" => ContainedType::Container,
                "contained" => ContainedType::Contained,
                _ => {
                    return Err(bad(format!(
                        "_containedType '{value}' is not container or contained"
                    )));
                }
            };
            Ok(())
        }
        "_summary" => {
            plan.summary = Some(match value {
                "true" => Summary::True,
                "text" => Summary::Text,
                "data" => Summary::Data,
                "count" => Summary::Count,
                "false" => Summary::False,
                _ => {
                    return Err(bad(format!(
                        "_summary '{value}' is not true, text, data, count or false"
                    )));
                }
            });
            Ok(())
        }
        "_elements" => {
            let names: Vec<String> = value
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect();
            if names.is_empty() {
                return Err(bad("_elements names no element"));
            }
            plan.elements = Some(names);
            Ok(())
        }
        "_total" => {
            plan.total = match value {
                "none" => Total::None,
                "estimate" => Total::Estimate,
                "accurate" => Total::Accurate,
                _ => {
                    return Err(bad(format!(
                        "_total '{value}' is not none, estimate or accurate"
                    )));
                }
            };
            Ok(())
        }
        "_sort" => {
            let mut keys = vec![];
            for part in value.split(',').map(str::trim) {
                let (descending, code) = match part.strip_prefix('-') {
                    Some(c) => (true, c),
                    None => (false, part),
                };
                if code.is_empty() {
                    return Err(bad("_sort has an empty key"));
                }
                let table = match code {
                    "_id" | "_lastUpdated" => None,
                    c if fulltext::is_fulltext(c) => {
                        return Err(unsupported(format!(
                            "cannot sort by '{c}' (a full-text parameter)"
                        )));
                    }
                    _ => {
                        let spec = common_param(&plan.types, code, catalogue)?;
                        Some(table_of(&spec).ok_or_else(|| {
                            unsupported(format!(
                                "cannot sort by '{code}' (a {} parameter)",
                                spec.kind.code()
                            ))
                        })?)
                    }
                };
                keys.push(SortKey {
                    param: code.to_string(),
                    table,
                    descending,
                });
            }
            plan.sort = keys;
            Ok(())
        }
        "_include" | "_revinclude" | "_include:iterate" | "_revinclude:iterate" => {
            let iterate = name.ends_with(":iterate");
            let name = name.trim_end_matches(":iterate");
            let mut parts = value.split(':');
            let source = parts.next().unwrap_or("");
            let param = parts.next();
            let target = parts.next();
            if parts.next().is_some() || param.is_none() {
                return Err(bad(format!("{name} '{value}' is not Type:param[:target]")));
            }
            if !Definitions::core().is_resource_type(source) {
                return Err(bad(format!("{name}: '{source}' is not a resource type")));
            }
            let param = param.filter(|p| *p != "*");
            if let Some(p) = param {
                let tp = catalogue.for_type(source);
                let s = tp.get(p).ok_or_else(|| {
                    bad(format!("{name}: {source} has no search parameter '{p}'"))
                })?;
                if s.kind != ParamKind::Reference {
                    return Err(bad(format!(
                        "{name}: {source}:{p} is not a reference parameter"
                    )));
                }
                if let Some(t) = target
                    && !s.targets.iter().any(|x| x == t)
                {
                    return Err(bad(format!("{name}: {source}:{p} cannot refer to '{t}'")));
                }
            }
            if name == "_include" && !iterate && !plan.types.iter().any(|t| t == source) {
                return Err(bad(format!(
                    "_include '{value}' starts from {source}, which is not searched (add :iterate to start from included resources)"
                )));
            }
            let inc = Include {
                source: source.to_string(),
                param: param.map(str::to_string),
                target: target.map(str::to_string),
                iterate,
            };
            if name == "_include" {
                plan.include.push(inc);
            } else {
                plan.revinclude.push(inc);
            }
            Ok(())
        }
        _ => Err(unsupported(format!("parameter '{name}' is not supported"))),
    }
}

/// The index table of a parameter type.
pub fn table_of(spec: &ParamSpec) -> Option<Table> {
    Some(match spec.kind {
        ParamKind::String => Table::String,
        ParamKind::Token => Table::Token,
        ParamKind::Reference => Table::Reference,
        ParamKind::Date => Table::Date,
        ParamKind::Number => Table::Number,
        ParamKind::Quantity => Table::Quantity,
        ParamKind::Uri => Table::Uri,
        ParamKind::Composite | ParamKind::Special => return None,
    })
}

/// The parameter `code` as defined on every type of the scope (its kind must agree across them).
fn common_param(
    types: &[String],
    code: &str,
    catalogue: &Catalogue,
) -> Result<Arc<ParamSpec>, FhirError> {
    let mut found: Option<Arc<ParamSpec>> = None;
    for t in types {
        let tp = catalogue.for_type(t);
        let Some(s) = tp.get(code) else {
            return Err(bad(format!("unknown search parameter '{code}' for {t}")));
        };
        if let Some(f) = &found
            && f.kind != s.kind
        {
            return Err(bad(format!(
                "search parameter '{code}' has different types across the searched types"
            )));
        }
        found = Some(s.clone());
    }
    found.ok_or_else(|| bad(format!("unknown search parameter '{code}'")))
}

/// The AND terms with the single-valued comparisons of each one-row date parameter (see
/// `ParamSpec::one_row`, in every searched type) folded into one [`Predicate::DateAll`] at the
/// place of the first: `date=ge2015-01&date=lt2015-02` becomes one condition on the row, one
/// range of the index, instead of two sets of everything after and everything before,
/// intersected. A resource has at most one row of such a parameter, so a row satisfying every
/// comparison is the same as the resource satisfying each one (FHIR's AND, which for a parameter
/// of several values lets each comparison be met by a different value, keeps its own sets).
/// Terms with several values (OR) are left alone.
fn date_rows(
    filters: Vec<Vec<Predicate>>,
    types: &[String],
    catalogue: &Catalogue,
) -> Vec<Vec<Predicate>> {
    let one_row = |param: &str| {
        types
            .iter()
            .all(|t| catalogue.for_type(t).get(param).is_some_and(|s| s.one_row))
    };
    let mut out: Vec<Vec<Predicate>> = Vec::with_capacity(filters.len());
    // Per parameter, where its DateAll is in `out`.
    let mut at: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for ors in filters {
        let [
            Predicate::Date {
                param,
                prefix,
                low,
                high,
                margin,
            },
        ] = ors.as_slice()
        else {
            out.push(ors);
            continue;
        };
        if !one_row(param) {
            out.push(ors);
            continue;
        }
        let bound = DateBound {
            prefix: *prefix,
            low: *low,
            high: *high,
            margin: *margin,
        };
        if let Some(&i) = at.get(param)
            && let [Predicate::DateAll { bounds, .. }] = out[i].as_mut_slice()
        {
            bounds.push(bound);
            continue;
        }
        at.insert(param.clone(), out.len());
        out.push(vec![Predicate::DateAll {
            param: param.clone(),
            bounds: vec![bound],
        }]);
    }
    // A parameter compared once stays what it was.
    for ors in &mut out {
        if let [Predicate::DateAll { param, bounds }] = ors.as_slice()
            && let [b] = bounds.as_slice()
        {
            *ors = vec![Predicate::Date {
                param: param.clone(),
                prefix: b.prefix,
                low: b.low,
                high: b.high,
                margin: b.margin,
            }];
        }
    }
    out
}

/// One filter parameter (`name[:modifier][.chain]` or `_has:...`) into its OR list.
fn filter(
    types: &[String],
    name: &str,
    value: &str,
    catalogue: &Catalogue,
    opts: &ParseOptions,
    depth: usize,
) -> Result<Vec<Predicate>, FhirError> {
    if depth > MAX_DEPTH {
        return Err(bad(format!("chains and _has nest deeper than {MAX_DEPTH}")));
    }
    if let Some(rest) = name.strip_prefix("_has:") {
        return has(types, rest, value, catalogue, opts, depth);
    }
    if let Some((head, tail)) = name.split_once('.') {
        return chain(types, head, tail, value, catalogue, opts, depth);
    }
    let (code, modifier) = match name.split_once(':') {
        Some((c, m)) => (c, Some(m)),
        None => (name, None),
    };
    if value.is_empty() {
        return Err(bad(format!("parameter '{name}' has an empty value")));
    }
    if code == "_id" || code == "_lastUpdated" {
        if let Some(m) = modifier {
            return Err(bad(format!("modifier ':{m}' is not supported on {code}")));
        }
        return split_values(value)
            .iter()
            .map(|v| {
                if code == "_id" {
                    if crate::model::primitives::is_id(v) {
                        Ok(Predicate::Id(v.clone()))
                    } else {
                        Err(bad(format!("_id '{v}' is not a valid id")))
                    }
                } else {
                    let (prefix, rest) = Prefix::split(v);
                    let (low, high) = dates::range(rest)
                        .ok_or_else(|| bad(format!("_lastUpdated '{v}' is not a date")))?;
                    Ok(Predicate::LastUpdated { prefix, low, high })
                }
            })
            .collect();
    }
    if code == "_list" {
        return list_members(name, modifier, value);
    }
    let spec = common_param(types, code, catalogue)?;
    if fulltext::is_fulltext(code) && modifier != Some("missing") {
        return full_text(name, code, modifier, value);
    }
    if spec.expression.is_none() && !fulltext::is_fulltext(code) {
        // Nothing is indexed for it (R4's `_query` names a query this server does not have), so
        // any answer would be silently empty.
        return Err(unsupported(format!(
            "'{code}' is not supported: it has no expression this server can index"
        )));
    }
    if modifier == Some("missing") {
        let table = table_of(&spec)
            .ok_or_else(|| unsupported(format!("':missing' is not supported on '{code}'")))?;
        let missing = match value {
            "true" => true,
            "false" => false,
            _ => return Err(bad(format!("{name} must be true or false, not '{value}'"))),
        };
        return Ok(vec![Predicate::Missing {
            table,
            param: code.to_string(),
            missing,
        }]);
    }
    let composite = spec.kind == ParamKind::Composite;
    split_values_keeping(value, composite)
        .iter()
        .map(|v| {
            if v.is_empty() {
                return Err(bad(format!(
                    "parameter '{name}' has an empty value in its list"
                )));
            }
            one_value(&spec, modifier, v, opts, types, catalogue)
        })
        .collect()
}

/// `_list=id[,id]`: entries of those Lists. A functional list (`$current-allergies`) would need the
/// server to keep such lists; it keeps none, so it is refused, not answered empty.
fn list_members(
    name: &str,
    modifier: Option<&str>,
    value: &str,
) -> Result<Vec<Predicate>, FhirError> {
    if let Some(m) = modifier {
        return Err(bad(format!(
            "modifier ':{m}' is not supported on _list (it takes List ids)"
        )));
    }
    split_values(value)
        .into_iter()
        .map(|v| {
            if v.starts_with('$') {
                Err(unsupported(format!(
                    "functional list '{v}' is not supported: this server keeps no functional lists; name a List by its id"
                )))
            } else if crate::model::primitives::is_id(&v) {
                Ok(Predicate::List(v))
            } else {
                Err(bad(format!("{name} '{v}' is not a List id")))
            }
        })
        .collect()
}

/// `_text` / `_content`: simple full-text, each comma-separated value an alternative whose
/// whitespace-separated terms must all occur (see `fulltext`).
fn full_text(
    name: &str,
    code: &str,
    modifier: Option<&str>,
    value: &str,
) -> Result<Vec<Predicate>, FhirError> {
    if let Some(m) = modifier {
        return Err(bad(format!(
            "modifier ':{m}' is not supported on '{code}' (simple full-text takes no modifier but :missing)"
        )));
    }
    split_values(value)
        .iter()
        .map(|v| {
            let terms: Vec<String> = v.split_whitespace().filter_map(fulltext::term).collect();
            if terms.is_empty() {
                return Err(bad(format!(
                    "{name} '{v}' has no word to search for (letters or digits)"
                )));
            }
            Ok(Predicate::Text {
                param: code.to_string(),
                terms,
            })
        })
        .collect()
}

/// One value of a composite (`http://loinc.org|8480-6$gt100`): the token part picks the index
/// rows of that code (see `extract::composite_key`), the rest is matched by the second
/// component's own rules (prefixes, units).
fn composite_value(
    spec: &ParamSpec,
    modifier: Option<&str>,
    v: &str,
    opts: &ParseOptions,
    types: &[String],
    catalogue: &Catalogue,
) -> Result<Predicate, FhirError> {
    let code = &spec.code;
    if let Some(m) = modifier {
        return Err(bad(format!(
            "modifier ':{m}' is not supported on '{code}' (a composite parameter)"
        )));
    }
    let [_, second] = spec.components.as_slice() else {
        return Err(unsupported(format!(
            "'{code}' is a composite parameter whose components cannot be indexed (only two components, the first a token, are supported)"
        )));
    };
    let Some((head, tail)) = split_unescaped(v, b'$') else {
        return Err(bad(format!(
            "'{v}' for '{code}' is not two values joined by '$'"
        )));
    };
    if tail.is_empty() || split_unescaped(tail, b'$').is_some() {
        return Err(bad(format!(
            "'{v}' for '{code}' must have exactly two parts joined by '$'"
        )));
    }
    let tail = tail.replace("\\$", "$");
    let Predicate::Token {
        system,
        code: Some(token_code),
        ..
    } = token(code, code, &head.replace("\\$", "$"))?
    else {
        return Err(bad(format!(
            "the first part of '{v}' for '{code}' needs a code (code, system|code or |code)"
        )));
    };
    let part = ParamSpec {
        code: format!(
            "{code}${}",
            super::extract::composite_key(system.as_deref(), Some(&token_code))
        ),
        kind: second.kind,
        url: spec.url.clone(),
        expression_text: None,
        expression: None,
        targets: vec![],
        components: vec![],
        one_row: false,
    };
    one_value(&part, None, &tail, opts, types, catalogue).map_err(|e| {
        bad(format!(
            "{} (in the second part of '{code}={v}')",
            e.issues
                .first()
                .map(|i| i.diagnostics.as_str())
                .unwrap_or("invalid")
        ))
    })
}

/// The codes of the value set `canonical` for `code:in` / `code:not-in`, through the server's
/// terminology service. Every failure is the client's 400: an unknown value set, one whose codes
/// cannot be listed here (it includes all of LOINC, say), or one larger than [`MAX_SET_CODES`].
fn value_set_codes(
    catalogue: &Catalogue,
    code: &str,
    modifier: &str,
    canonical: &str,
) -> Result<Vec<(String, String)>, FhirError> {
    let shown = format!("{code}:{modifier}");
    let terminology = catalogue.terminology().ok_or_else(|| {
        unsupported(format!(
            "'{shown}' needs the terminology service, which is not available to this search"
        ))
    })?;
    let scope = terminology.scope();
    let expansion = terminology
        .expand_canonical(
            &scope,
            canonical,
            &crate::terminology::expand::ExpandOptions::default(),
        )
        .map_err(|e| match e {
            crate::terminology::TermError::NotFound(_) => bad(format!(
                "'{shown}': value set '{canonical}' is not known to this server"
            )),
            crate::terminology::TermError::Expand(
                crate::terminology::expand::ExpandError::TooCostly(_),
            ) => FhirError::new(
                400,
                "too-costly",
                format!("'{shown}': value set '{canonical}' is too large to search by: {e}"),
            ),
            other => bad(format!(
                "'{shown}': value set '{canonical}' cannot be expanded: {other}"
            )),
        })?;
    if let Some(open) = expansion.open.first() {
        return Err(FhirError::new(
            400,
            "not-supported",
            format!(
                "'{shown}': value set '{canonical}' includes codes of {} that this server cannot list, so it cannot be searched by",
                open.system
            ),
        ));
    }
    let codes = code_set(
        expansion
            .contains
            .iter()
            .map(|e| (e.system.clone(), e.code.clone())),
    );
    check_set_size(&shown, canonical, codes)
}

/// Sorted, without duplicates (so equal searches give equal plans).
fn code_set(codes: impl Iterator<Item = (String, String)>) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = codes.collect();
    v.sort();
    v.dedup();
    v
}

fn check_set_size(
    shown: &str,
    what: &str,
    codes: Vec<(String, String)>,
) -> Result<Vec<(String, String)>, FhirError> {
    if codes.len() > MAX_SET_CODES {
        return Err(FhirError::new(
            400,
            "too-costly",
            format!(
                "'{shown}': '{what}' stands for {} codes; at most {MAX_SET_CODES} can be searched by",
                codes.len()
            ),
        ));
    }
    Ok(codes)
}

/// The code `system|code` with its descendants (`:below`) or ancestors (`:above`) in a code
/// system the server holds, through the terminology service's compiled hierarchy.
fn hierarchy_codes(
    catalogue: &Catalogue,
    code: &str,
    modifier: &str,
    v: &str,
) -> Result<Vec<(String, String)>, FhirError> {
    let shown = format!("{code}:{modifier}");
    let Some((system, concept)) = split_bar(v).filter(|(s, c)| !s.is_empty() && !c.is_empty())
    else {
        return Err(bad(format!(
            "'{shown}' needs system|code (the code system names the hierarchy), not '{v}'"
        )));
    };
    let terminology = catalogue.terminology().ok_or_else(|| {
        unsupported(format!(
            "'{shown}' needs the terminology service, which is not available to this search"
        ))
    })?;
    let scope = terminology.scope();
    let cs = terminology
        .code_system_in(&scope, &system, None)
        .filter(|cs| cs.content != "not-present")
        .ok_or_else(|| {
            bad(format!(
                "'{shown}': code system '{system}' is not held by this server, so its hierarchy is unknown"
            ))
        })?;
    let i = cs.index_of(&concept).ok_or_else(|| {
        bad(format!(
            "'{shown}': code '{concept}' is not in code system '{system}'"
        ))
    })?;
    let related = if modifier == "below" {
        cs.descendants(i)
    } else {
        cs.ancestors(i)
    };
    let codes = code_set(
        std::iter::once(i)
            .chain(related)
            .map(|j| (system.clone(), cs.concepts[j].code.clone())),
    );
    check_set_size(&shown, v, codes)
}

fn one_value(
    spec: &ParamSpec,
    modifier: Option<&str>,
    v: &str,
    opts: &ParseOptions,
    types: &[String],
    catalogue: &Catalogue,
) -> Result<Predicate, FhirError> {
    let code = spec.code.clone();
    let bad_modifier = |m: &str| {
        Err(bad(format!(
            "modifier ':{m}' is not supported on '{code}' (a {} parameter)",
            spec.kind.code()
        )))
    };
    match spec.kind {
        ParamKind::String => {
            let how = match modifier {
                None => StringMatch::Prefix,
                Some("exact") => StringMatch::Exact,
                Some("contains") => StringMatch::Contains,
                Some(m) => return bad_modifier(m),
            };
            let value = if how == StringMatch::Exact {
                v.to_string()
            } else {
                normalize(v)
            };
            Ok(Predicate::String {
                param: code,
                how,
                value,
            })
        }
        ParamKind::Token => match modifier {
            Some("text") => Ok(Predicate::TokenText {
                param: code,
                text: normalize(v),
            }),
            Some("not") => Ok(Predicate::Not(Box::new(token(&code, &code, v)?))),
            Some("of-type") => {
                let parts: Vec<&str> = v.splitn(3, '|').collect();
                let [system, tc, value] = parts.as_slice() else {
                    return Err(bad(format!(
                        "{code}:of-type needs system|code|value, not '{v}'"
                    )));
                };
                if tc.is_empty() || value.is_empty() {
                    return Err(bad(format!(
                        "{code}:of-type needs system|code|value, not '{v}'"
                    )));
                }
                Ok(Predicate::Token {
                    param: format!("{code}:of-type"),
                    system: (!system.is_empty()).then(|| system.to_string()),
                    code: Some(format!("{tc}|{value}")),
                })
            }
            None => token(&code, &code, v),
            Some("in") => Ok(Predicate::TokenIn {
                param: code.clone(),
                codes: value_set_codes(catalogue, &code, "in", v)?,
            }),
            // The complement, like `:not`: resources with no code of the parameter in the set.
            Some("not-in") => Ok(Predicate::Not(Box::new(Predicate::TokenIn {
                param: code.clone(),
                codes: value_set_codes(catalogue, &code, "not-in", v)?,
            }))),
            Some(m @ ("above" | "below")) => Ok(Predicate::TokenIn {
                param: code.clone(),
                codes: hierarchy_codes(catalogue, &code, m, v)?,
            }),
            Some(m) => bad_modifier(m),
        },
        ParamKind::Date => {
            if let Some(m) = modifier {
                return bad_modifier(m);
            }
            let (prefix, rest) = Prefix::split(v);
            let (low, high) = dates::range(rest)
                .ok_or_else(|| bad(format!("'{v}' is not a date for '{code}'")))?;
            // `ap`: 10% of the distance from now, at least a day (what the spec suggests).
            let margin = if prefix == Prefix::Ap {
                ((opts.now_ms - low).abs() / 10).max(86_400_000)
            } else {
                0
            };
            Ok(Predicate::Date {
                param: code,
                prefix,
                low,
                high,
                margin,
            })
        }
        ParamKind::Number => {
            if let Some(m) = modifier {
                return bad_modifier(m);
            }
            let (prefix, rest) = Prefix::split(v);
            let (value, low, high) = number_range(rest)
                .ok_or_else(|| bad(format!("'{v}' is not a number for '{code}'")))?;
            Ok(Predicate::Number {
                param: code,
                prefix,
                value,
                low,
                high,
            })
        }
        ParamKind::Quantity => {
            if let Some(m) = modifier {
                return bad_modifier(m);
            }
            let (prefix, rest) = Prefix::split(v);
            let mut parts = rest.splitn(3, '|');
            let num = parts.next().unwrap_or("");
            let system = parts.next().filter(|s| !s.is_empty()).map(str::to_string);
            let unit = parts.next().filter(|s| !s.is_empty()).map(str::to_string);
            let (value, low, high) = number_range(num)
                .ok_or_else(|| bad(format!("'{v}' is not number|system|code for '{code}'")))?;
            let canonical = super::units::of_search(
                num,
                (value, low, high),
                system.as_deref(),
                unit.as_deref(),
            );
            Ok(Predicate::Quantity {
                param: code,
                prefix,
                value,
                low,
                high,
                system,
                code: unit,
                canonical,
            })
        }
        ParamKind::Reference => reference(spec, modifier, v, opts, types),
        ParamKind::Uri => {
            let how = match modifier {
                None => UriMatch::Exact,
                Some("below") => UriMatch::Below,
                Some("above") => UriMatch::Above,
                Some(m) => return bad_modifier(m),
            };
            Ok(Predicate::Uri {
                param: code,
                how,
                value: v.to_string(),
            })
        }
        ParamKind::Composite => composite_value(spec, modifier, v, opts, types, catalogue),
        ParamKind::Special => Err(unsupported(format!(
            "'{code}' is a special parameter; these are not supported yet"
        ))),
    }
}

fn token(param: &str, shown: &str, v: &str) -> Result<Predicate, FhirError> {
    let (system, code) = match split_bar(v) {
        Some((s, c)) => (Some(s), c),
        None => (None, unescape_bar(v)),
    };
    if code.is_empty() && system.as_deref().is_none_or(str::is_empty) {
        return Err(bad(format!(
            "'{v}' for '{shown}' has neither system nor code"
        )));
    }
    Ok(Predicate::Token {
        param: param.to_string(),
        system,
        code: (!code.is_empty()).then_some(code),
    })
}

/// A number's value and the half-open range `[low, high)` its significant digits imply
/// (`100` is [99.5, 100.5), `1.50` is [1.495, 1.505)).
pub fn number_range(s: &str) -> Option<(f64, f64, f64)> {
    if s.is_empty()
        || !s.bytes().all(|b| {
            b.is_ascii_digit() || b == b'.' || b == b'-' || b == b'+' || b == b'e' || b == b'E'
        })
    {
        return None;
    }
    let value: f64 = s.parse().ok()?;
    if !value.is_finite() {
        return None;
    }
    if s.contains(['e', 'E']) {
        return Some((value, value, value));
    }
    let decimals = s.split_once('.').map_or(0, |(_, f)| f.len()) as i32;
    let half = 0.5 * 10f64.powi(-decimals);
    Some((value, value - half, value + half))
}

fn reference(
    spec: &ParamSpec,
    modifier: Option<&str>,
    v: &str,
    opts: &ParseOptions,
    _types: &[String],
) -> Result<Predicate, FhirError> {
    let code = spec.code.clone();
    let defs = Definitions::core();
    match modifier {
        Some("identifier") => token(&format!("{code}:identifier"), &code, v),
        Some(t) if defs.is_resource_type(t) => {
            if !spec.targets.is_empty() && !spec.targets.iter().any(|x| x == t) {
                return Err(bad(format!("'{code}' cannot refer to {t}")));
            }
            if !crate::model::primitives::is_id(v) {
                return Err(bad(format!("'{v}' is not an id for {code}:{t}")));
            }
            Ok(Predicate::Reference {
                param: code,
                target_type: Some(t.to_string()),
                id: Some(v.to_string()),
                url: None,
            })
        }
        Some(m) => Err(bad(format!(
            "modifier ':{m}' is not supported on '{code}' (a reference parameter)"
        ))),
        None => {
            let local = if !opts.base_url.is_empty() {
                v.strip_prefix(opts.base_url.trim_end_matches('/'))
                    .and_then(|r| r.strip_prefix('/'))
            } else {
                None
            };
            let candidate = local.unwrap_or(v);
            if let Some((t, id)) = candidate.split_once('/')
                && !candidate.contains("://")
            {
                if !defs.is_resource_type(t) || !crate::model::primitives::is_id(id) {
                    return Err(bad(format!("'{v}' is not Type/id for '{code}'")));
                }
                return Ok(Predicate::Reference {
                    param: code,
                    target_type: Some(t.to_string()),
                    id: Some(id.to_string()),
                    url: None,
                });
            }
            if crate::model::primitives::is_id(candidate) {
                return Ok(Predicate::Reference {
                    param: code,
                    target_type: None,
                    id: Some(candidate.to_string()),
                    url: None,
                });
            }
            if v.contains(':') {
                // An absolute URL elsewhere, or a canonical: matched as written.
                return Ok(Predicate::Reference {
                    param: code,
                    target_type: None,
                    id: None,
                    url: Some(v.to_string()),
                });
            }
            Err(bad(format!("'{v}' is not a reference for '{code}'")))
        }
    }
}

/// `ref[:Type].rest`: resources whose `ref` points at a resource matching `rest`.
fn chain(
    types: &[String],
    head: &str,
    tail: &str,
    value: &str,
    catalogue: &Catalogue,
    opts: &ParseOptions,
    depth: usize,
) -> Result<Vec<Predicate>, FhirError> {
    let (code, modifier) = match head.split_once(':') {
        Some((c, m)) => (c, Some(m)),
        None => (head, None),
    };
    let spec = common_param(types, code, catalogue)?;
    if spec.kind != ParamKind::Reference {
        return Err(bad(format!(
            "cannot chain through '{code}': it is a {} parameter",
            spec.kind.code()
        )));
    }
    let next_code = tail.split(['.', ':']).next().unwrap_or(tail);
    let targets: Vec<String> = match modifier {
        Some(t) => {
            if !Definitions::core().is_resource_type(t)
                || (!spec.targets.is_empty() && !spec.targets.iter().any(|x| x == t))
            {
                return Err(bad(format!("'{code}' cannot refer to '{t}'")));
            }
            vec![t.to_string()]
        }
        None => spec
            .targets
            .iter()
            .filter(|t| {
                next_code.starts_with('_') || catalogue.for_type(t).get(next_code).is_some()
            })
            .cloned()
            .collect(),
    };
    if targets.is_empty() {
        return Err(bad(format!(
            "no target type of '{code}' has a search parameter '{next_code}'"
        )));
    }
    // With several target types, the chained parameter must mean the same on all of them; when
    // they disagree, the client must name one (`subject:Patient.name`).
    let inner = filter(&targets, tail, value, catalogue, opts, depth + 1).map_err(|e| {
        if targets.len() > 1 {
            bad(format!(
                "{} (in chain '{head}.{tail}'; name the target type with '{code}:Type.' to narrow it)",
                e.issues.first().map(|i| i.diagnostics.as_str()).unwrap_or("invalid")
            ))
        } else {
            e
        }
    })?;
    Ok(vec![Predicate::Chain {
        param: code.to_string(),
        targets,
        inner,
    }])
}

/// `_has:Source:refparam:rest=value`.
fn has(
    types: &[String],
    rest: &str,
    value: &str,
    catalogue: &Catalogue,
    opts: &ParseOptions,
    depth: usize,
) -> Result<Vec<Predicate>, FhirError> {
    let mut parts = rest.splitn(3, ':');
    let (Some(source), Some(param), Some(inner_name)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(bad(format!(
            "_has:{rest} is not _has:Type:reference:parameter"
        )));
    };
    if !Definitions::core().is_resource_type(source) {
        return Err(bad(format!("_has: '{source}' is not a resource type")));
    }
    let tp = catalogue.for_type(source);
    let spec = tp
        .get(param)
        .ok_or_else(|| bad(format!("_has: {source} has no search parameter '{param}'")))?;
    if spec.kind != ParamKind::Reference {
        return Err(bad(format!(
            "_has: {source}:{param} is not a reference parameter"
        )));
    }
    if !spec.targets.is_empty() && !types.iter().any(|t| spec.targets.contains(t)) {
        return Err(bad(format!(
            "_has: {source}:{param} cannot refer to {}",
            types.join(",")
        )));
    }
    let inner = filter(
        &[source.to_string()],
        inner_name,
        value,
        catalogue,
        opts,
        depth + 1,
    )?;
    Ok(vec![Predicate::Has {
        source: source.to_string(),
        param: param.to_string(),
        inner,
    }])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(q: &str) -> Result<SearchPlan, FhirError> {
        let params: Vec<(String, String)> =
            form_urlencoded::parse(q.as_bytes()).into_owned().collect();
        parse(
            &["Patient".to_string()],
            &params,
            &Catalogue::new(),
            &ParseOptions::default(),
        )
    }

    /// ANDed single values of a one-row date parameter fold into one `DateAll`; a repeating
    /// one, a term with several values and a parameter compared once keep their shape.
    #[test]
    fn date_bounds_of_one_row_fold_into_one_term() {
        let on = |ty: &str, q: &str| {
            let params: Vec<(String, String)> =
                form_urlencoded::parse(q.as_bytes()).into_owned().collect();
            parse(
                &[ty.to_string()],
                &params,
                &Catalogue::new(),
                &ParseOptions::default(),
            )
            .expect(q)
            .filters
        };
        let f = on(
            "Observation",
            "date=ge2015-01-01&code=x&date=lt2015-02-01&date=ne2015-01-10",
        );
        assert_eq!(f.len(), 2, "{f:?}");
        let Predicate::DateAll { param, bounds } = &f[0][0] else {
            panic!("{f:?}")
        };
        assert_eq!(param, "date");
        assert_eq!(
            bounds.iter().map(|b| b.prefix).collect::<Vec<_>>(),
            [Prefix::Ge, Prefix::Lt, Prefix::Ne]
        );
        assert!(matches!(f[1][0], Predicate::Token { .. }));
        for (ty, q) in [
            ("Encounter", "location-period=ge2020&location-period=lt2021"),
            ("Observation", "date=ge2015,lt2010&date=lt2015-02-01"),
            ("Observation", "date=ge2015"),
        ] {
            let f = on(ty, q);
            assert!(
                f.iter()
                    .flatten()
                    .all(|p| matches!(p, Predicate::Date { .. })),
                "{q}: {f:?}"
            );
        }
    }

    #[test]
    fn strict_errors_name_the_problem() {
        for (q, needle) in [
            ("foo=1", "unknown search parameter 'foo'"),
            ("name:bogus=x", "modifier ':bogus'"),
            ("birthdate=notadate", "not a date"),
            ("_count=abc", "_count"),
            ("gender:missing=maybe", "true or false"),
            ("general-practitioner.nothing=1", "no target type"),
            (
                "_has:Observation:subject=1",
                "_has:Type:reference:parameter",
            ),
        ] {
            let e = p(q).expect_err(q);
            let msg = &e.issues[0].diagnostics;
            assert!(msg.contains(needle), "{q}: {msg}");
        }
    }

    #[test]
    fn values_and_chains_parse() {
        let plan = p("name=Li,Wang&birthdate=ge2000&general-practitioner:Practitioner.name=x&_sort=-birthdate,_id").expect("plan");
        assert_eq!(plan.filters.len(), 3);
        assert_eq!(plan.filters[0].len(), 2);
        assert!(matches!(plan.filters[2][0], Predicate::Chain { .. }));
        assert_eq!(plan.sort.len(), 2);
        assert!(plan.sort[0].descending);
        assert_eq!(split_values("a\\,b,c"), vec!["a,b", "c"]);
    }
}
