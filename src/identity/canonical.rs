//! The identifier-system canonicaliser, data-driven from NamingSystems.
//!
//! A NamingSystem (kind `identifier`) lists the URIs and OIDs that name one identifier; the one
//! marked `preferred` (or the one a deployment configures, `canonical-identifier-systems`) is
//! canonical, the others are aliases. Every write is rewritten before it is validated and stored:
//! `Identifier.system` anywhere in the resource, conditional criteria (`identifier=alias|v`) and
//! conditional references (`Patient?identifier=alias|v`). Stored bodies and identifier index rows
//! therefore carry only canonical systems, so a match by either system finds the same resource.
//!
//! Invariant: the table is rebuilt when the registry's generation changes, never served stale.

use crate::registry::{Catalogue, Registry, is_conformance_type};
use crate::transaction::{Entry, Target};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Alias system URI -> canonical system URI, for every identifier NamingSystem registered.
#[derive(Debug, Default, Clone)]
pub struct IdentifierSystems {
    alias: HashMap<String, String>,
}

/// The URIs a NamingSystem accepts, in its order, and which one it prefers.
fn accepted_uris(ns: &Value) -> (Vec<String>, Option<String>) {
    let mut uris = Vec::new();
    let mut preferred = None;
    for u in ns
        .get("uniqueId")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let Some(value) = u.get("value").and_then(Value::as_str) else {
            continue;
        };
        // An OID is used in FHIR as `urn:oid:` + the OID; other id types (v2csmnemonic) are not systems.
        let uri = match u.get("type").and_then(Value::as_str) {
            Some("uri") => value.to_string(),
            Some("oid") => format!("urn:oid:{value}"),
            _ => continue,
        };
        let is_preferred = u.get("preferred").and_then(Value::as_bool) == Some(true);
        if is_preferred
            && preferred.is_none()
            && u.get("type").and_then(Value::as_str) == Some("uri")
        {
            preferred = Some(uri.clone());
        }
        if !uris.contains(&uri) {
            uris.push(uri);
        }
    }
    (uris, preferred)
}

impl IdentifierSystems {
    /// Builds the table from the catalogue's identifier NamingSystems. A URI in `configured` that a
    /// NamingSystem accepts becomes that NamingSystem's canonical system, overriding `preferred`.
    pub fn from_catalogue(catalogue: &Catalogue, configured: &[String]) -> IdentifierSystems {
        let mut systems: Vec<&Value> = catalogue
            .all("NamingSystem")
            .map(|r| r.resource.as_ref())
            .filter(|ns| ns.get("kind").and_then(Value::as_str) == Some("identifier"))
            .collect();
        // Deterministic when two NamingSystems claim one URI: the first by name keeps it.
        systems.sort_by_key(|ns| ns.get("name").and_then(Value::as_str).unwrap_or(""));
        let mut alias = HashMap::new();
        for ns in systems {
            let (uris, preferred) = accepted_uris(ns);
            let Some(canonical) = uris
                .iter()
                .find(|u| configured.contains(u))
                .cloned()
                .or(preferred)
                .or_else(|| uris.first().cloned())
            else {
                continue;
            };
            for u in uris {
                if u != canonical {
                    alias.entry(u).or_insert_with(|| canonical.clone());
                }
            }
        }
        IdentifierSystems { alias }
    }

    /// The canonical system for `system` (itself when it is canonical or unknown).
    pub fn canonical<'a>(&'a self, system: &'a str) -> &'a str {
        self.alias.get(system).map_or(system, String::as_str)
    }

    /// True when no alias is known (nothing would ever be rewritten).
    pub fn is_empty(&self) -> bool {
        self.alias.is_empty()
    }

    /// Search parameters with the systems of `identifier` values made canonical (each value of a
    /// comma OR list), so a search by an alias system finds what was stored under the canonical one.
    pub fn canonicalise_params(&self, params: &[(String, String)]) -> Vec<(String, String)> {
        params
            .iter()
            .map(|(name, value)| {
                let plain =
                    name.split(':').next() == Some("identifier") && !name.ends_with(":of-type");
                if self.is_empty() || !plain {
                    return (name.clone(), value.clone());
                }
                let value = value
                    .split(',')
                    .map(|one| match one.split_once('|') {
                        Some((system, code)) => format!("{}|{code}", self.canonical(system)),
                        None => one.to_string(),
                    })
                    .collect::<Vec<_>>()
                    .join(",");
                (name.clone(), value)
            })
            .collect()
    }

    /// Rewrites every `Identifier.system` (elements named `identifier` or `masterIdentifier`,
    /// at any depth, including `Reference.identifier`) and every conditional reference; returns
    /// how many values changed. Conformance resources are left as sent: their `identifier` is
    /// metadata about the artefact.
    pub fn canonicalise_resource(&self, resource: &mut Value) -> usize {
        if self.is_empty()
            || resource
                .get("resourceType")
                .and_then(Value::as_str)
                .is_some_and(is_conformance_type)
        {
            return 0;
        }
        self.walk(resource)
    }

    fn walk(&self, node: &mut Value) -> usize {
        let mut changed = 0;
        match node {
            Value::Object(map) => {
                for (key, child) in map.iter_mut() {
                    match key.as_str() {
                        "identifier" | "masterIdentifier" => {
                            changed += self.identifiers(child);
                        }
                        "reference" => {
                            if let Value::String(r) = child
                                && let Some(new) = self.conditional_reference(r)
                            {
                                *r = new;
                                changed += 1;
                            }
                        }
                        _ => {}
                    }
                    changed += self.walk(child);
                }
            }
            Value::Array(items) => {
                for i in items {
                    changed += self.walk(i);
                }
            }
            _ => {}
        }
        changed
    }

    /// One `identifier` value: an Identifier or an array of them.
    fn identifiers(&self, v: &mut Value) -> usize {
        let one = |id: &mut Value| -> usize {
            match id.get_mut("system") {
                Some(Value::String(s)) => match self.alias.get(s.as_str()) {
                    Some(c) => {
                        *s = c.clone();
                        1
                    }
                    None => 0,
                },
                _ => 0,
            }
        };
        match v {
            Value::Array(items) => items.iter_mut().map(one).sum(),
            Value::Object(_) => one(v),
            _ => 0,
        }
    }

    /// `Type?identifier=alias|v` -> `Type?identifier=canonical|v`; `None` when nothing changes.
    fn conditional_reference(&self, reference: &str) -> Option<String> {
        let (ty, query) = reference.split_once('?')?;
        self.canonicalise_query(query).map(|q| format!("{ty}?{q}"))
    }

    /// Rewrites the systems of `identifier` criteria in a conditional query; `None` when nothing
    /// changes (the query is then used exactly as sent).
    pub fn canonicalise_query(&self, query: &str) -> Option<String> {
        if self.is_empty() {
            return None;
        }
        let mut changed = false;
        let pairs: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
            .map(|(name, value)| {
                let value = value.into_owned();
                if name == "identifier"
                    && let Some((system, code)) = value.split_once('|')
                    && let Some(c) = self.alias.get(system)
                {
                    changed = true;
                    return (name.into_owned(), format!("{c}|{code}"));
                }
                (name.into_owned(), value)
            })
            .collect();
        if !changed {
            return None;
        }
        let mut ser = form_urlencoded::Serializer::new(String::new());
        for (n, v) in &pairs {
            ser.append_pair(n, v);
        }
        Some(ser.finish())
    }

    /// Canonicalises one write: its resource, its conditional target and its `If-None-Exist`.
    pub fn canonicalise_entry(&self, entry: &mut Entry) -> usize {
        let mut changed = 0;
        if let Some(r) = entry.resource.as_mut() {
            changed += self.canonicalise_resource(r);
        }
        if let Target::Condition(q) = &mut entry.target
            && let Some(new) = self.canonicalise_query(q)
        {
            *q = new;
            changed += 1;
        }
        if let Some(q) = &mut entry.if_none_exist
            && let Some(new) = self.canonicalise_query(q)
        {
            *q = new;
            changed += 1;
        }
        changed
    }
}

/// The canonicaliser of a running server: the table for the registry's current generation.
pub struct Canonicaliser {
    registry: Arc<Registry>,
    configured: Vec<String>,
    built: Mutex<Option<(u64, Arc<IdentifierSystems>)>>,
}

impl Canonicaliser {
    /// A canonicaliser over `registry`; `configured` names systems to make canonical.
    pub fn new(registry: Arc<Registry>, configured: Vec<String>) -> Canonicaliser {
        Canonicaliser {
            registry,
            configured,
            built: Mutex::new(None),
        }
    }

    /// The table for the registry as it is now (rebuilt only after the registry changed).
    pub fn current(&self) -> Arc<IdentifierSystems> {
        let catalogue = self.registry.catalogue();
        let mut built = self.built.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((generation, table)) = built.as_ref()
            && *generation == catalogue.generation()
        {
            return table.clone();
        }
        let table = Arc::new(IdentifierSystems::from_catalogue(
            &catalogue,
            &self.configured,
        ));
        *built = Some((catalogue.generation(), table.clone()));
        table
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::definitions::Definitions;
    use crate::transaction::Method;
    use serde_json::json;

    const NATIONAL: &str = "urn:oid:2.16.156.10011.1.3";
    const HL7CN: &str = "urn:oid:2.16.840.1.113883.2.23.1.19.1";

    fn registry() -> Arc<Registry> {
        let r = Registry::with_core(Definitions::core());
        r.add(
            json!({"resourceType": "NamingSystem", "name": "Id", "status": "draft", "kind": "identifier", "date": "2026",
                "uniqueId": [{"type": "uri", "value": NATIONAL, "preferred": true}, {"type": "oid", "value": "2.16.156.10011.1.3"},
                             {"type": "uri", "value": HL7CN}, {"type": "oid", "value": "2.16.840.1.113883.2.23.1.19.1"}]}),
            "test",
        )
        .unwrap();
        Arc::new(r)
    }

    #[test]
    fn aliases_map_to_the_preferred_uri_and_configuration_overrides_it() {
        let r = registry();
        let t = IdentifierSystems::from_catalogue(&r.catalogue(), &[]);
        assert_eq!(t.canonical(HL7CN), NATIONAL);
        assert_eq!(t.canonical(NATIONAL), NATIONAL);
        assert_eq!(t.canonical("http://other"), "http://other");
        let t = IdentifierSystems::from_catalogue(&r.catalogue(), &[HL7CN.to_string()]);
        assert_eq!(t.canonical(NATIONAL), HL7CN);
        assert_eq!(t.canonical("urn:oid:2.16.156.10011.1.3"), HL7CN);
    }

    #[test]
    fn identifiers_criteria_and_conditional_references_are_rewritten() {
        let t = IdentifierSystems::from_catalogue(&registry().catalogue(), &[]);
        let mut p = json!({"resourceType": "Patient", "identifier": [{"system": HL7CN, "value": "11010519491231002X"}, {"system": "x", "value": "1"}],
            "generalPractitioner": [{"identifier": {"system": HL7CN, "value": "1"}}], "link": [{"other": {"reference": format!("Patient?identifier={HL7CN}|2")}}]});
        assert_eq!(t.canonicalise_resource(&mut p), 3);
        assert_eq!(p["identifier"][0]["system"], NATIONAL);
        assert_eq!(p["identifier"][1]["system"], "x");
        assert_eq!(
            p["generalPractitioner"][0]["identifier"]["system"],
            NATIONAL
        );
        assert_eq!(
            p["link"][0]["other"]["reference"],
            format!(
                "Patient?identifier={}",
                form_urlencoded::byte_serialize(format!("{NATIONAL}|2").as_bytes())
                    .collect::<String>()
            )
        );
        let mut e = Entry::new(
            Method::Put,
            "Patient",
            Target::Condition(format!("identifier={HL7CN}|9")),
            None,
        );
        e.if_none_exist = Some("identifier=x|1".into());
        assert_eq!(t.canonicalise_entry(&mut e), 1);
        let Target::Condition(q) = &e.target else {
            panic!("condition")
        };
        let parsed: Vec<(String, String)> =
            form_urlencoded::parse(q.as_bytes()).into_owned().collect();
        assert_eq!(
            parsed,
            vec![("identifier".to_string(), format!("{NATIONAL}|9"))]
        );
        assert_eq!(e.if_none_exist.as_deref(), Some("identifier=x|1"));
    }

    #[test]
    fn conformance_resources_are_left_alone() {
        let t = IdentifierSystems::from_catalogue(&registry().catalogue(), &[]);
        let mut cs =
            json!({"resourceType": "CodeSystem", "identifier": [{"system": HL7CN, "value": "1"}]});
        assert_eq!(t.canonicalise_resource(&mut cs), 0);
    }

    #[test]
    fn the_table_follows_the_registry() {
        let r = registry();
        let c = Canonicaliser::new(r.clone(), vec![]);
        assert_eq!(c.current().canonical("urn:x:b"), "urn:x:b");
        r.add(json!({"resourceType": "NamingSystem", "name": "B", "status": "draft", "kind": "identifier", "date": "2026",
            "uniqueId": [{"type": "uri", "value": "urn:x:a", "preferred": true}, {"type": "uri", "value": "urn:x:b"}]}), "test").unwrap();
        assert_eq!(c.current().canonical("urn:x:b"), "urn:x:a");
    }
}
