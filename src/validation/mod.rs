//! Profile validation: a resource against its core definition and any profiles.
//!
//! Each StructureDefinition compiles once into a [`plan::Plan`]; [`Validator::validate`] walks the
//! resource once per plan (the core type first, then each profile) and returns every issue with
//! the FHIRPath of the node it concerns. Nested resources (`contained`, `Bundle.entry.resource`,
//! `Parameters.parameter.resource`) are validated against their own type in the same walk, and a
//! Bundle's `fullUrl`s are indexed once so references between its entries resolve in O(1): the cost
//! of validating a bundle is linear in its size.
//!
//! What a profile pass checks is what the profile adds over the core definition: its rules that
//! equal the core rule for the same path are dropped at compile time, so no issue is reported twice.

mod audit;
mod plan;
mod questionnaire;
mod rules;
pub mod snapshot;
mod verdicts;
mod walk;

pub use audit::{audit, load_profiles};
pub use plan::{Plan, Strength};

use crate::definitions::Definitions;
use crate::model::{self, FhirError, Issue, ParseLimits, Severity};
use crate::registry::Registry;
use crate::terminology::Terminology;
use plan::InvariantCache;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

/// A profile compiled, or why it could not be.
type Compiled = Result<Arc<Plan>, FhirError>;

/// Validates resources against the core definitions and profiles.
pub struct Validator {
    defs: &'static Definitions,
    registry: Arc<Registry>,
    terminology: Arc<Terminology>,
    /// Core types never change: compiled once, kept for the life of the process.
    core: RwLock<HashMap<String, Arc<Plan>>>,
    /// Profiles are keyed by canonical and registry generation, so a re-posted profile recompiles.
    profiles: moka::sync::Cache<(String, u64), Arc<Compiled>>,
    invariants: Mutex<InvariantCache>,
    /// Binding verdicts, per registry generation.
    verdicts: verdicts::Verdicts,
    /// How an extension whose definition is not loaded is reported (a modifier extension is
    /// always an error).
    extension_rules: Severity,
}

/// How a failed invariant is worded: `constraint KEY failed on ELEMENT: EXPRESSION`. Policies
/// that name rules ([`failed_invariant`]) read the key back from this one wording.
fn invariant_failure(key: &str, element: &str, expression: &str) -> String {
    format!("{INVARIANT_FAILED}{key} failed on {element}: {expression}")
}

const INVARIANT_FAILED: &str = "constraint ";

/// The key of the invariant (`cn-id-3`) an issue reports as failed, if it reports one.
pub fn failed_invariant(issue: &Issue) -> Option<&str> {
    if issue.code != "invariant" {
        return None;
    }
    let rest = issue.diagnostics.strip_prefix(INVARIANT_FAILED)?;
    let (key, tail) = rest.split_once(' ')?;
    tail.starts_with("failed on ").then_some(key)
}

/// The outcome of validating one resource.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub issues: Vec<Issue>,
}

impl Report {
    /// True when some issue is an error or fatal.
    pub fn has_errors(&self) -> bool {
        self.issues
            .iter()
            .any(|i| matches!(i.severity, Severity::Error | Severity::Fatal))
    }

    /// Number of error and fatal issues.
    pub fn error_count(&self) -> usize {
        self.issues
            .iter()
            .filter(|i| matches!(i.severity, Severity::Error | Severity::Fatal))
            .count()
    }

    /// The report as an OperationOutcome; an empty report says so in one informational issue, as
    /// `$validate` requires at least one issue.
    pub fn outcome(&self) -> Value {
        if self.issues.is_empty() {
            return model::operation_outcome(&[Issue::information(
                "informational",
                "validation found no issues",
            )]);
        }
        model::operation_outcome(&self.issues)
    }
}

impl Validator {
    pub fn new(registry: Arc<Registry>, terminology: Arc<Terminology>) -> Validator {
        Validator {
            defs: Definitions::core(),
            registry,
            terminology,
            core: RwLock::new(HashMap::new()),
            profiles: moka::sync::Cache::new(1_000),
            invariants: Mutex::new(InvariantCache::default()),
            verdicts: verdicts::Verdicts::default(),
            extension_rules: Severity::Warning,
        }
    }

    /// Reports extensions whose definition is not loaded, and extensions used outside the contexts
    /// their definition names, with `severity`. The default is a warning, so a gateway accepts
    /// local extensions it has no definition for and data whose extensions its senders' tools
    /// place differently (the R4 examples themselves break the contexts of 1,490 extension uses
    /// once the package's extension definitions are loaded); the HL7 validator reports both as
    /// errors, and the suite runner asks for that.
    pub fn with_extension_rules(mut self, severity: Severity) -> Validator {
        self.extension_rules = severity;
        self
    }

    /// The terminology service bindings are checked with.
    pub fn terminology(&self) -> &Terminology {
        &self.terminology
    }

    /// The compiled plan of a core type.
    pub(crate) fn core_plan(&self, type_name: &str) -> Option<Arc<Plan>> {
        if let Some(p) = self
            .core
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(type_name)
        {
            return Some(p.clone());
        }
        let plan = {
            let mut cache = self.invariants.lock().unwrap_or_else(|p| p.into_inner());
            Arc::new(Plan::from_core(self.defs, type_name, &mut cache)?)
        };
        let mut map = self.core.write().unwrap_or_else(|p| p.into_inner());
        Some(map.entry(type_name.to_string()).or_insert(plan).clone())
    }

    /// The compiled plan of a profile by canonical (`url` or `url|version`). A core
    /// StructureDefinition URL compiles the core type.
    pub fn profile_plan(&self, canonical: &str) -> Result<Arc<Plan>, FhirError> {
        let catalogue = self.registry.catalogue();
        let key = (canonical.to_string(), catalogue.generation());
        let result = self.profiles.get_with(key, || {
            Arc::new(match catalogue.resource("StructureDefinition", canonical) {
                Some(sd) => {
                    // A profile published without a snapshot gets one generated from its
                    // differential (and its base chain) before it compiles.
                    let with_snapshot;
                    let sd = if sd.pointer("/snapshot/element").is_some() {
                        sd.as_ref()
                    } else {
                        match snapshot::snapshot_of(self.defs, &catalogue, sd) {
                            Ok(elements) => {
                                let mut full = (**sd).clone();
                                full["snapshot"] = serde_json::json!({ "element": elements });
                                with_snapshot = full;
                                &with_snapshot
                            }
                            Err(e) => return Arc::new(Err(e)),
                        }
                    };
                    let mut cache = self.invariants.lock().unwrap_or_else(|p| p.into_inner());
                    Plan::from_snapshot(self.defs, sd, &mut cache).map(|mut p| {
                        plan::drop_core_duplicates(self.defs, &mut p);
                        Arc::new(p)
                    })
                }
                None => {
                    let core_name = canonical
                        .split('|')
                        .next()
                        .and_then(|u| u.strip_prefix("http://hl7.org/fhir/StructureDefinition/"));
                    match core_name.and_then(|n| self.core_plan(n)) {
                        Some(p) => Ok(p),
                        None => Err(FhirError::new(
                            404,
                            "not-found",
                            format!("profile {canonical} is not known to this server"),
                        )),
                    }
                }
            })
        });
        (*result).clone()
    }

    /// Validates a resource (already parsed JSON) against its core definition and `profiles`.
    /// With `meta_profiles`, the profiles the resource claims in `meta.profile` are added.
    pub fn validate(&self, resource: &Value, profiles: &[String], meta_profiles: bool) -> Report {
        let issues = model::check_resource(resource, self.defs, ParseLimits::default());
        if !issues.is_empty() {
            // The walk assumes the structure the parse guarantees; report the structural issues alone.
            return Report { issues };
        }
        self.validate_parsed(resource, profiles, meta_profiles)
    }

    /// [`Validator::validate`] for a resource that has already passed `model::parse_resource`
    /// (every REST write has): the structural walk is not repeated.
    pub fn validate_parsed(
        &self,
        resource: &Value,
        profiles: &[String],
        meta_profiles: bool,
    ) -> Report {
        let mut issues = Vec::new();
        let Some(ty) = resource.get("resourceType").and_then(Value::as_str) else {
            return Report { issues };
        };
        let mut walk = walk::Walk::new(self, true);
        if let Some(plan) = self.core_plan(ty) {
            walk.resource(&plan, resource, ty, None);
        }
        let mut wanted: Vec<String> = profiles.to_vec();
        if meta_profiles {
            for p in resource
                .pointer("/meta/profile")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
            {
                if !wanted.iter().any(|w| w == p) {
                    wanted.push(p.to_string());
                }
            }
        }
        issues.append(&mut walk.issues);
        // A QuestionnaireResponse is also checked against its Questionnaire, which no
        // StructureDefinition can express.
        if ty == "QuestionnaireResponse" {
            issues.extend(questionnaire::check(self, resource));
        }
        for canonical in wanted {
            let claimed = !profiles.contains(&canonical);
            match self.profile_plan(&canonical) {
                Ok(plan) => {
                    if plan.type_name != ty {
                        issues.push(
                            Issue::error(
                                "invalid",
                                format!(
                                    "profile {canonical} constrains {}, not {ty}",
                                    plan.type_name
                                ),
                            )
                            .at(ty),
                        );
                        continue;
                    }
                    issues.extend(plan.problems.iter().cloned());
                    let mut w = walk::Walk::new(self, false);
                    w.resource(&plan, resource, ty, None);
                    issues.append(&mut w.issues);
                }
                // A profile named in meta.profile that we do not know cannot be checked: say so,
                // without failing the resource (it may come from an IG not loaded here).
                Err(e) if claimed => issues.push(Issue {
                    severity: Severity::Warning,
                    code: "not-found",
                    diagnostics: format!(
                        "{}; the resource was not checked against it",
                        e.issues
                            .first()
                            .map(|i| i.diagnostics.as_str())
                            .unwrap_or("unknown profile")
                    ),
                    expression: Some(format!("{ty}.meta.profile")),
                }),
                Err(e) => issues.extend(e.issues),
            }
        }
        Report { issues }
    }
}
