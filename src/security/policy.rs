//! What a principal may see and write: scopes (with `?param=` restrictions), the launch patient's
//! compartment, owner domains ("分域负责"), sensitive labels ("分类应用") and Consent denials.
//!
//! Compartment membership and scope restrictions are decided from the resource's own search index
//! rows (the same extraction the store indexes), so "in Patient/1's compartment" here means
//! exactly what `GET [base]/Patient/1/Observation` finds.

use super::Principal;
use super::scopes::{self, Perms};
use crate::definitions::Definitions;
use crate::rest::AppState;
use crate::search::params::TypeParams;
use crate::store::IndexRows;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;

/// The `meta.tag` system naming a resource's owner domain (the institution that submitted it).
pub const DOMAIN_SYSTEM: &str = "urn:huitong:domain";

/// The owner domain of a resource.
pub fn domain_of(resource: &Value) -> Option<&str> {
    resource["meta"]["tag"]
        .as_array()?
        .iter()
        .find(|t| t["system"] == DOMAIN_SYSTEM)
        .and_then(|t| t["code"].as_str())
}

/// Sets the owner domain tag (keeps other tags).
pub fn set_domain(resource: &mut Value, domain: &str) {
    let Some(obj) = resource.as_object_mut() else {
        return;
    };
    let meta = obj.entry("meta").or_insert_with(|| json!({}));
    let Some(meta) = meta.as_object_mut() else {
        return;
    };
    let tags = meta.entry("tag").or_insert_with(|| json!([]));
    if let Some(tags) = tags.as_array_mut() {
        tags.retain(|t| t["system"] != DOMAIN_SYSTEM);
        tags.push(json!({ "system": DOMAIN_SYSTEM, "code": domain }));
    }
}

/// The `meta.security` codes of a resource.
pub fn labels(resource: &Value) -> Vec<&str> {
    resource["meta"]["security"]
        .as_array()
        .map(|a| a.iter().filter_map(|c| c["code"].as_str()).collect())
        .unwrap_or_default()
}

/// Why a request or resource is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denial {
    /// The caller may not know the resource exists: answered with the hidden status.
    Hidden,
    /// Refused with a reason (403).
    Forbidden(String),
}

/// Judges resources for one principal during one request (Consent look-ups are cached).
pub struct Judge<'a> {
    st: &'a AppState,
    who: &'a Principal,
    consents: HashMap<String, Arc<Vec<Value>>>,
}

impl<'a> Judge<'a> {
    pub fn new(st: &'a AppState, who: &'a Principal) -> Judge<'a> {
        Judge {
            st,
            who,
            consents: HashMap::new(),
        }
    }

    /// The index rows judging reads: those of the Patient compartment's parameters and of the
    /// principal's scope restrictions on the type; extracting every parameter of the type (full
    /// text included) for each judged answer was work nothing here reads.
    fn rows(&self, resource: &Value) -> IndexRows {
        let ty = resource["resourceType"].as_str().unwrap_or("");
        let all = self.st.search.for_type(ty);
        let compartment = compartment_params(ty);
        let restricted = |code: &str| {
            self.who
                .scopes
                .iter()
                .any(|s| s.covers(ty) && s.restrictions.iter().any(|(k, _)| k == code))
        };
        let wanted = TypeParams {
            resource_type: ty.to_string(),
            by_code: all
                .by_code
                .iter()
                .filter(|(code, _)| compartment.contains(&code.as_str()) || restricted(code))
                .map(|(code, spec)| (code.clone(), spec.clone()))
                .collect(),
        };
        crate::search::extract::extract(&wanted, resource)
    }

    /// The patients whose compartment holds the resource (itself, for a Patient).
    pub fn patients_of(&self, resource: &Value, rows: &IndexRows) -> Vec<String> {
        let ty = resource["resourceType"].as_str().unwrap_or("");
        if ty == "Patient" {
            return resource["id"]
                .as_str()
                .map(str::to_string)
                .into_iter()
                .collect();
        }
        let params = compartment_params(ty);
        let mut out: Vec<String> = rows
            .references
            .iter()
            .filter(|r| {
                r.target_type.as_deref() == Some("Patient") && params.contains(&r.param.as_str())
            })
            .filter_map(|r| r.target_id.clone())
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// Whether the resource's type is in the Patient compartment at all.
    pub fn in_patient_compartment(ty: &str) -> bool {
        ty == "Patient" || !compartment_params(ty).is_empty()
    }

    /// May the principal see this resource (read or search result)?
    pub async fn visible(&mut self, resource: &Value) -> bool {
        if self.who.is_operator() {
            return true;
        }
        let ty = resource["resourceType"].as_str().unwrap_or("");
        if !self.who.allows(ty, scopes::R) && !self.who.allows(ty, scopes::S) {
            return false;
        }
        let rows = self.rows(resource);
        if !self.restrictions_hold(ty, scopes::R | scopes::S, &rows) {
            return false;
        }
        let patients = self.patients_of(resource, &rows);
        if let Some(pid) = self.who.patient_bound(ty, scopes::R)
            && Self::in_patient_compartment(ty)
            && !patients.iter().any(|p| p == pid)
        {
            return false;
        }
        if !self.domain_readable(ty, resource) {
            return false;
        }
        if labels(resource)
            .iter()
            .any(|l| self.sensitive(l) && !self.who.granted(l))
        {
            return false;
        }
        if ty != "Consent" {
            for p in &patients {
                if self.who.patient.as_deref() == Some(p.as_str()) {
                    continue;
                }
                if self.consent_denies(p, ty, resource).await {
                    return false;
                }
            }
        }
        true
    }

    fn sensitive(&self, label: &str) -> bool {
        self.st
            .security
            .config
            .access
            .sensitive_labels
            .iter()
            .any(|s| s == label)
    }

    /// The category of a type under `[access] categories`.
    pub fn category(&self, ty: &str) -> &str {
        self.st
            .security
            .config
            .access
            .categories
            .iter()
            .find(|(_, ts)| ts.iter().any(|t| t == ty))
            .map_or("other", |(c, _)| c.as_str())
    }

    fn domain_readable(&self, ty: &str, resource: &Value) -> bool {
        let Some(owner) = domain_of(resource) else {
            return true;
        };
        if self.who.domain.as_deref() == Some(owner) {
            return true;
        }
        let Some(policy) = self
            .who
            .role
            .as_deref()
            .and_then(|r| self.st.security.config.access.roles.get(r))
        else {
            return false;
        };
        let cat = self.category(ty);
        policy
            .cross_domain_read
            .iter()
            .any(|c| c == "*" || c == cat)
    }

    /// Some scope granting `p` on the type has all its `?param=` restrictions met.
    fn restrictions_hold(&self, ty: &str, p: Perms, rows: &IndexRows) -> bool {
        self.who
            .scopes
            .iter()
            .filter(|s| s.covers(ty) && s.perms & p != 0)
            .any(|s| s.restrictions.iter().all(|(k, v)| row_matches(rows, k, v)))
    }

    async fn consent_denies(&mut self, patient: &str, ty: &str, resource: &Value) -> bool {
        if !self.consents.contains_key(patient) {
            let cache = &self.st.security.consents;
            let found = match cache.get(patient) {
                Some(c) => c,
                None => {
                    let (found, complete) = load_consents(self.st, patient).await;
                    let found = Arc::new(found);
                    // A failed look-up (treated as deny) is not remembered.
                    if complete {
                        cache.insert(patient.to_string(), found.clone());
                    }
                    found
                }
            };
            self.consents.insert(patient.to_string(), found);
        }
        let who = self.who;
        let labels = labels(resource);
        self.consents[patient].iter().any(|c| {
            let prov = &c["provision"];
            if prov["type"] != "deny" {
                return false;
            }
            let actor_ok = match prov["actor"].as_array() {
                None => true,
                Some(actors) => actors.iter().any(|a| {
                    let r = a["reference"]["reference"].as_str().unwrap_or("");
                    who.fhir_user.as_deref() == Some(r)
                        || who
                            .domain
                            .as_deref()
                            .is_some_and(|d| r == format!("Organization/{d}"))
                }),
            };
            let class_ok = match prov["class"].as_array() {
                None => true,
                Some(cs) => cs.iter().any(|c| c["code"].as_str() == Some(ty)),
            };
            let label_ok = match prov["securityLabel"].as_array() {
                None => true,
                Some(ls) => ls
                    .iter()
                    .any(|l| labels.contains(&l["code"].as_str().unwrap_or(""))),
            };
            actor_ok && class_ok && label_ok
        })
    }

    /// Checks a resource about to be written: scope, restrictions, own domain (tagging it when
    /// untagged), the launch patient's compartment.
    pub fn admit_write(&self, resource: &mut Value, p: Perms) -> Result<(), Denial> {
        if self.who.is_operator() {
            return Ok(());
        }
        let ty = resource["resourceType"].as_str().unwrap_or("").to_string();
        if !self.who.allows(&ty, p) {
            return Err(Denial::Forbidden(format!(
                "scope does not grant '{}' on {ty}",
                scopes::letters(p)
            )));
        }
        let current = domain_of(resource).map(str::to_string);
        match (current.as_deref(), self.who.domain.as_deref()) {
            (Some(d), Some(own)) if d != own => {
                return Err(Denial::Forbidden(format!(
                    "writes are allowed only to the caller's own domain '{own}', not '{d}'"
                )));
            }
            (Some(d), None) => {
                return Err(Denial::Forbidden(format!(
                    "the caller has no domain and cannot write into domain '{d}'"
                )));
            }
            (None, Some(own)) => set_domain(resource, own),
            _ => {}
        }
        let rows = self.rows(resource);
        if !self.restrictions_hold(&ty, p, &rows) {
            return Err(Denial::Forbidden(format!(
                "the resource does not meet the scope's restrictions on {ty}"
            )));
        }
        if let Some(pid) = self.who.patient_bound(&ty, p)
            && Self::in_patient_compartment(&ty)
            && !self.patients_of(resource, &rows).iter().any(|x| x == pid)
        {
            return Err(Denial::Forbidden(format!(
                "a patient-context token may write only into Patient/{pid}'s compartment"
            )));
        }
        Ok(())
    }

    /// Checks an existing resource about to be changed or deleted: visible, and in the own domain.
    pub async fn admit_change(&mut self, existing: &Value) -> Result<(), Denial> {
        if self.who.is_operator() {
            return Ok(());
        }
        if !self.visible(existing).await {
            return Err(Denial::Hidden);
        }
        match domain_of(existing) {
            Some(d) if self.who.domain.as_deref() != Some(d) => Err(Denial::Forbidden(format!(
                "the resource belongs to domain '{d}'; only that domain may change it"
            ))),
            _ => Ok(()),
        }
    }
}

/// The Patient compartment's parameters for a type.
fn compartment_params(ty: &str) -> Vec<&'static str> {
    Definitions::core()
        .compartment("Patient")
        .and_then(|c| c.resources.iter().find(|(t, _)| t == ty))
        .map(|(_, ps)| {
            ps.iter()
                .map(String::as_str)
                .filter(|p| *p != "{def}")
                .collect()
        })
        .unwrap_or_default()
}

/// A `?param=value` restriction against index rows: tokens (`code`, `system|code`, `|code`,
/// `system|`), references (`Type/id`) and exact strings.
fn row_matches(rows: &IndexRows, param: &str, value: &str) -> bool {
    value.split(',').any(|v| {
        let token = match v.split_once('|') {
            Some((sys, code)) => rows.tokens.iter().any(|t| {
                t.param == param
                    && (code.is_empty() || t.code == code)
                    && match sys {
                        "" => t.system.is_none(),
                        s => t.system.as_deref() == Some(s),
                    }
            }),
            None => rows.tokens.iter().any(|t| t.param == param && t.code == v),
        };
        token
            || rows
                .references
                .iter()
                .any(|r| r.param == param && r.url == v)
            || rows
                .strings
                .iter()
                .any(|s| s.param == param && s.exact == v)
    })
}

/// The active Consents of a patient (searched like any client would), and whether the look-up
/// succeeded.
async fn load_consents(st: &AppState, patient: &str) -> (Vec<Value>, bool) {
    let params = vec![
        ("patient".to_string(), format!("Patient/{patient}")),
        ("status".to_string(), "active".to_string()),
        ("_count".to_string(), "1000".to_string()),
    ];
    let opts = crate::search::ParseOptions {
        max_count: 1000,
        ..Default::default()
    };
    let Ok(plan) = crate::search::parse(&["Consent".to_string()], &params, &st.search, &opts)
    else {
        return (Vec::new(), true);
    };
    match crate::search::run::execute(&*st.store, &plan).await {
        Ok(page) => (
            page.matches
                .iter()
                .filter_map(|v| v.body.as_ref())
                .filter_map(|b| serde_json::from_slice(b).ok())
                .collect(),
            true,
        ),
        Err(e) => {
            // Fail closed: a Consent that cannot be read is taken as a denial.
            tracing::error!(error = %e, "Consent look-up failed; treating as deny");
            (vec![json!({ "provision": { "type": "deny" } })], false)
        }
    }
}
