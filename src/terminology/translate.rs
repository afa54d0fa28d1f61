//! ConceptMap translation (`$translate`), forwards (source code to targets) and in reverse
//! (target code back to its sources).
//!
//! Both R4 (`equivalence`, `source`/`target` scope) and R5-shaped maps (`relationship`,
//! `sourceScopeUri`) are read; answers are given as R4 `equivalence` codes. In reverse the
//! direction of a narrower/wider relation flips, because the question is asked from the other
//! side.

use super::Scope;
use super::expand::{array, str_of};
use serde_json::{Value, json};
use std::sync::Arc;

/// What to translate, and with which maps.
#[derive(Debug, Clone, Default)]
pub struct TranslateRequest<'a> {
    /// A ConceptMap canonical to use (`url`).
    pub url: Option<&'a str>,
    /// A ConceptMap given with the request (`conceptMap`).
    pub concept_map: Option<&'a Value>,
    pub system: Option<&'a str>,
    pub code: &'a str,
    /// Source and target value set scope (`source`, `target`).
    pub source_scope: Option<&'a str>,
    pub target_scope: Option<&'a str>,
    /// The target code system (`targetsystem`).
    pub target_system: Option<&'a str>,
    /// Translate from target to source.
    pub reverse: bool,
}

/// One translation found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Match {
    /// R4 `ConceptMapEquivalence` code.
    pub equivalence: String,
    /// The translated concept as a Coding.
    pub concept: Value,
    /// `url|version` of the map that gave it.
    pub source: String,
}

impl Match {
    /// Whether the match is a usable translation (not an explicit non-match).
    pub fn is_match(&self) -> bool {
        !matches!(self.equivalence.as_str(), "unmatched" | "disjoint")
    }
}

/// The maps a request can use: the one named or given, or every map whose scopes fit.
fn maps_for(scope: &Scope, req: &TranslateRequest) -> Result<Vec<Arc<Value>>, String> {
    if let Some(m) = req.concept_map {
        return Ok(vec![Arc::new(m.clone())]);
    }
    if let Some(url) = req.url {
        return scope
            .concept_map(url)
            .map(|m| vec![m])
            .ok_or_else(|| format!("concept map {url} is not known"));
    }
    let fits = |m: &Value, keys: &[&str], wanted: Option<&str>| match wanted {
        None => true,
        Some(w) => keys
            .iter()
            .any(|k| str_of(m, k).is_some_and(|v| v == w || v.split('|').next() == Some(w))),
    };
    let (from, to) = if req.reverse {
        (req.target_scope, req.source_scope)
    } else {
        (req.source_scope, req.target_scope)
    };
    Ok(scope
        .concept_maps()
        .into_iter()
        .filter(|m| {
            fits(
                m,
                &[
                    "sourceUri",
                    "sourceCanonical",
                    "sourceScopeUri",
                    "sourceScopeCanonical",
                ],
                from,
            ) && fits(
                m,
                &[
                    "targetUri",
                    "targetCanonical",
                    "targetScopeUri",
                    "targetScopeCanonical",
                ],
                to,
            )
        })
        .collect())
}

/// The R4 equivalence of a target, from `equivalence` or an R5 `relationship`.
fn equivalence_of(target: &Value, reverse: bool) -> String {
    let base = match (
        str_of(target, "equivalence"),
        str_of(target, "relationship"),
    ) {
        (Some(e), _) => e.to_string(),
        (None, Some(r)) => match r {
            "equivalent" => "equivalent",
            "source-is-narrower-than-target" => "wider",
            "source-is-broader-than-target" => "narrower",
            "related-to" => "relatedto",
            "not-related-to" => "disjoint",
            _ => "relatedto",
        }
        .to_string(),
        (None, None) => "equivalent".to_string(),
    };
    if !reverse {
        return base;
    }
    match base.as_str() {
        "wider" => "narrower".into(),
        "narrower" => "wider".into(),
        "subsumes" => "specializes".into(),
        "specializes" => "subsumes".into(),
        _ => base,
    }
}

fn coding(system: Option<&str>, code: &str, display: Option<&str>) -> Value {
    let mut c = serde_json::Map::new();
    if let Some(s) = system {
        c.insert("system".into(), json!(s));
    }
    c.insert("code".into(), json!(code));
    if let Some(d) = display {
        c.insert("display".into(), json!(d));
    }
    Value::Object(c)
}

/// Translates a code with the ConceptMaps in scope.
pub fn translate(scope: &Scope, req: &TranslateRequest) -> Result<Vec<Match>, String> {
    let mut out: Vec<Match> = Vec::new();
    for map in maps_for(scope, req)? {
        let origin = match (str_of(&map, "url"), str_of(&map, "version")) {
            (Some(u), Some(v)) => format!("{u}|{v}"),
            (Some(u), None) => u.to_string(),
            _ => String::new(),
        };
        for group in array(&map, "group") {
            let (from_system, to_system) = if req.reverse {
                (str_of(group, "target"), str_of(group, "source"))
            } else {
                (str_of(group, "source"), str_of(group, "target"))
            };
            if req
                .system
                .is_some_and(|s| from_system.is_some_and(|g| g != s))
            {
                continue;
            }
            if req
                .target_system
                .is_some_and(|s| to_system.is_some_and(|g| g != s))
            {
                continue;
            }
            let before = out.len();
            for element in array(group, "element") {
                let targets = array(element, "target");
                if req.reverse {
                    for t in targets {
                        if str_of(t, "code") == Some(req.code)
                            && let Some(code) = str_of(element, "code")
                        {
                            out.push(Match {
                                equivalence: equivalence_of(t, true),
                                concept: coding(to_system, code, str_of(element, "display")),
                                source: origin.clone(),
                            });
                        }
                    }
                } else if str_of(element, "code") == Some(req.code) {
                    for t in targets {
                        match str_of(t, "code") {
                            Some(code) => out.push(Match {
                                equivalence: equivalence_of(t, false),
                                concept: coding(to_system, code, str_of(t, "display")),
                                source: origin.clone(),
                            }),
                            // A target without a code states that nothing matches.
                            None => out.push(Match {
                                equivalence: equivalence_of(t, false),
                                concept: coding(to_system, "", None),
                                source: origin.clone(),
                            }),
                        }
                    }
                }
            }
            // `unmapped` applies only forwards, to a code the group has no element for.
            if !req.reverse
                && out.len() == before
                && let Some(unmapped) = group.get("unmapped")
            {
                let mode = str_of(unmapped, "mode");
                let eq = || equivalence_of(unmapped, false);
                match mode {
                    Some("fixed") => {
                        if let Some(code) = str_of(unmapped, "code") {
                            out.push(Match {
                                equivalence: eq(),
                                concept: coding(to_system, code, str_of(unmapped, "display")),
                                source: origin.clone(),
                            });
                        }
                    }
                    Some("provided") => out.push(Match {
                        equivalence: "equal".into(),
                        concept: coding(to_system, req.code, None),
                        source: origin.clone(),
                    }),
                    _ => {}
                }
            }
        }
    }
    out.retain(|m| m.concept.get("code").and_then(Value::as_str) != Some(""));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::definitions::Definitions;
    use crate::registry::Registry;
    use crate::terminology::Terminology;

    fn scope() -> Scope {
        let t = Terminology::new(Arc::new(Registry::with_core(Definitions::core())));
        t.scope().with(json!({
            "resourceType": "ConceptMap", "url": "http://x/cm", "version": "1",
            "sourceUri": "http://x/vs-a", "targetUri": "http://x/vs-b",
            "group": [{"source": "http://x/a", "target": "http://x/b",
                "element": [
                    {"code": "a1", "target": [{"code": "b1", "equivalence": "equivalent"}]},
                    {"code": "a2", "target": [{"code": "b2", "equivalence": "wider"}, {"code": "b3", "equivalence": "narrower"}]},
                    {"code": "a3", "target": [{"equivalence": "unmatched"}]}
                ],
                "unmapped": {"mode": "fixed", "code": "other", "equivalence": "relatedto"}}]
        }))
    }

    #[test]
    fn forwards_gives_every_target_with_its_equivalence() {
        let s = scope();
        let m = translate(
            &s,
            &TranslateRequest {
                system: Some("http://x/a"),
                code: "a2",
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].equivalence, "wider");
        assert_eq!(m[0].concept, json!({"system": "http://x/b", "code": "b2"}));
        assert_eq!(m[0].source, "http://x/cm|1");
    }

    #[test]
    fn reverse_finds_the_source_and_flips_the_direction() {
        let s = scope();
        let req = TranslateRequest {
            system: Some("http://x/b"),
            code: "b2",
            reverse: true,
            ..Default::default()
        };
        let m = translate(&s, &req).unwrap();
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].concept["code"], "a2");
        assert_eq!(m[0].concept["system"], "http://x/a");
        assert_eq!(m[0].equivalence, "narrower");
    }

    #[test]
    fn unmapped_fixed_applies_to_codes_without_an_element_and_scopes_filter_maps() {
        let s = scope();
        let m = translate(
            &s,
            &TranslateRequest {
                system: Some("http://x/a"),
                code: "zz",
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].concept["code"], "other");
        // A target without a code is not a translation.
        let none = translate(
            &s,
            &TranslateRequest {
                system: Some("http://x/a"),
                code: "a3",
                ..Default::default()
            },
        )
        .unwrap();
        assert!(none.is_empty());
        let elsewhere = TranslateRequest {
            code: "a1",
            target_scope: Some("http://x/other-vs"),
            ..Default::default()
        };
        assert!(translate(&s, &elsewhere).unwrap().is_empty());
    }
}
