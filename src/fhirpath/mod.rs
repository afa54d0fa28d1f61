//! FHIRPath (N1, 2.0.0 as used by FHIR R4) over resources held as JSON.
//!
//! One engine for validation invariants, search-parameter extraction, mapping conditions and
//! conformance assertions. Parse once with [`parse`] (the [`Expression`] is immutable and cheap to
//! share, so it can live in a cache; [`parse_cached`] keeps one in a process-wide moka cache) and
//! evaluate it many times with [`Expression::evaluate`] and an [`Environment`] that carries
//! `%resource`, user variables, the core definitions for type information and the hooks the
//! server fills (`resolve()`, `memberOf()`, `conformsTo()`).
//!
//! Invariants: no input (expression text or resource) can make the engine panic; expression trees
//! are at most [`parser::MAX_DEPTH`] deep, so evaluation recursion is bounded; decimals are exact
//! (no binary floating point anywhere).

mod ast;
mod datetime;
mod error;
mod eval;
mod functions;
#[doc(hidden)]
pub mod fuzzing;
mod hoist;
mod lexer;
mod model;
mod parser;
mod quantity;
mod value;

pub use ast::{BinOp, Expr, Literal, TypeSpec};
pub use datetime::{Precision, Temporal, TemporalKind};
pub use error::{EvalError, FhirPathError, Pos, SyntaxError};
pub use quantity::Quantity;
pub use value::{Collection, Node, Value};

/// The root node of a resource, typed from its `resourceType`.
pub fn resource_node_of<'a>(json: &'a Json, defs: Option<&'static Definitions>) -> Node<'a> {
    model::resource_node(json, defs)
}

/// True when FHIR type `ty` is `target` or derives from it.
pub fn is_subtype(ty: &str, target: &str, defs: Option<&'static Definitions>) -> bool {
    model::fhir_subtype(ty, target, defs)
}

use crate::definitions::Definitions;
use serde_json::Value as Json;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

/// Finds resources that references point at, beyond contained resources and Bundle entries
/// (the server implements it over the store).
pub trait ReferenceResolver {
    /// The resource `reference` (`Patient/1`, an absolute URL) points at.
    fn resolve(&self, reference: &str) -> Option<&Json>;
}

/// Answers `memberOf()` (the terminology module implements it).
pub trait Terminology {
    /// Whether `value` (a code, Coding or CodeableConcept as JSON; `type_name` says which) is in
    /// the value set; `Ok(None)` when unknown.
    fn member_of(
        &self,
        value: &Json,
        type_name: &str,
        value_set: &str,
    ) -> Result<Option<bool>, String>;
}

/// Answers `conformsTo()` (the validator implements it).
pub trait ProfileValidator {
    /// Whether `resource` conforms to the profile with canonical `url`.
    fn conforms_to(&self, resource: &Json, url: &str) -> Result<bool, String>;
}

/// Receives `trace(name)` output: the name and the traced collection.
pub type TraceFn<'a> = dyn Fn(&str, &Collection<'a>) + 'a;

/// What an evaluation can see besides its input.
pub struct Environment<'a> {
    /// `%context`: the evaluation's input.
    pub context: Collection<'a>,
    /// `%resource`.
    pub resource: Option<Value<'a>>,
    /// `%rootResource` (defaults to `%resource`).
    pub root_resource: Option<Value<'a>>,
    /// User-supplied `%name` variables.
    pub variables: HashMap<String, Collection<'a>>,
    /// Type information; `None` evaluates structurally (no choice-type checks, no subtype tests).
    pub definitions: Option<&'static Definitions>,
    /// Report names the model does not define (`name.given1`, `Encounter.x` on a Patient) as errors
    /// instead of empty results; the official suite expects this, search expressions spanning
    /// several resource types need it off.
    pub strict: bool,
    pub resolver: Option<&'a dyn ReferenceResolver>,
    pub terminology: Option<&'a dyn Terminology>,
    pub profiles: Option<&'a dyn ProfileValidator>,
    /// Receives `trace()` output.
    pub trace: Option<&'a TraceFn<'a>>,
    /// The instant `now()`, `today()` and `timeOfDay()` report: read from the clock on first
    /// use, then fixed for every evaluation in this environment. Few expressions ask, and reading
    /// the clock for each environment cost more than many whole evaluations.
    now: std::cell::OnceCell<Temporal>,
}

impl<'a> Environment<'a> {
    /// An environment for evaluating over `resource` with the embedded core definitions.
    pub fn for_resource(resource: &'a Json) -> Environment<'a> {
        Self::with_definitions(resource, Some(Definitions::core()))
    }

    /// An environment for `resource` with the given definitions (`None`: structural only).
    pub fn with_definitions(
        resource: &'a Json,
        definitions: Option<&'static Definitions>,
    ) -> Environment<'a> {
        let root = Value::Node(model::resource_node(resource, definitions));
        Environment {
            context: vec![root.clone()],
            resource: Some(root.clone()),
            root_resource: Some(root),
            variables: HashMap::new(),
            definitions,
            strict: false,
            resolver: None,
            terminology: None,
            profiles: None,
            trace: None,
            now: std::cell::OnceCell::new(),
        }
    }

    /// The instant `now()` reports in this environment.
    pub fn now(&self) -> Temporal {
        *self.now.get_or_init(datetime::now)
    }

    /// Fixes the instant `now()` reports (when not yet read).
    pub fn set_now(&mut self, now: Temporal) {
        self.now = std::cell::OnceCell::from(now);
    }

    /// Sets `%name`.
    pub fn set_variable(&mut self, name: &str, value: Collection<'a>) {
        self.variables.insert(name.to_string(), value);
    }
}

/// A parsed expression: immutable, `Send + Sync`, cheap to clone (cache it).
#[derive(Debug, Clone)]
pub struct Expression {
    source: Arc<str>,
    ast: Arc<Expr>,
    /// The subexpressions of `ast` evaluated once per evaluation.
    hoisted: Arc<hoist::Hoisted>,
}

impl Expression {
    /// The text it was parsed from.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The syntax tree.
    pub fn ast(&self) -> &Expr {
        &self.ast
    }

    /// Evaluates over the environment's `%context`.
    pub fn evaluate<'a>(&self, env: &Environment<'a>) -> Result<Collection<'a>, EvalError> {
        let ev = eval::Evaluator {
            env,
            depth: std::cell::Cell::new(0),
            steps: model::StepCache::default(),
            spare: std::cell::RefCell::new(Vec::new()),
            hoisted: &self.hoisted,
            memo: std::cell::RefCell::new(vec![None; self.hoisted.slots()]),
        };
        let frame = eval::Frame {
            this: &env.context,
            index: None,
            total: None,
        };
        ev.eval(&self.ast, &frame)
    }

    /// Evaluates as an invariant: `Ok(None)` for an empty result, `Ok(Some(b))` for one Boolean (or
    /// one other item, which counts as true), an error for several items.
    pub fn evaluate_boolean(&self, env: &Environment<'_>) -> Result<Option<bool>, EvalError> {
        let r = self.evaluate(env)?;
        eval::to_bool(&r, "result")
    }
}

/// Parses an expression.
pub fn parse(expression: &str) -> Result<Expression, SyntaxError> {
    let ast = Arc::new(parser::parse(expression)?);
    let hoisted = Arc::new(hoist::Hoisted::of(&ast));
    Ok(Expression {
        source: Arc::from(expression),
        ast,
        hoisted,
    })
}

/// Most distinct expression texts [`parse_cached`] keeps (the R4 core has about 1,100 constraint
/// expressions; search parameters and mappings add a few hundred).
const PARSED_CACHE_CAPACITY: u64 = 10_000;

static PARSED: std::sync::OnceLock<moka::sync::Cache<String, Result<Expression, SyntaxError>>> =
    std::sync::OnceLock::new();

/// [`parse`] through a process-wide moka cache keyed by the expression text: the same invariants
/// recur in every profile and resource type, and a hit costs a lookup instead of a parse. Syntax
/// errors are cached too, so a broken expression is not re-parsed on every use.
pub fn parse_cached(expression: &str) -> Result<Expression, SyntaxError> {
    let cache = PARSED.get_or_init(|| moka::sync::Cache::new(PARSED_CACHE_CAPACITY));
    if let Some(hit) = cache.get(expression) {
        return hit;
    }
    let parsed = parse(expression);
    cache.insert(expression.to_string(), parsed.clone());
    parsed
}

/// Parses and evaluates `expression` over `resource` with the core definitions, returning the result
/// as JSON values.
pub fn evaluate_json(expression: &str, resource: &Json) -> Result<Vec<Json>, FhirPathError> {
    let expr = parse_cached(expression)?;
    let env = Environment::for_resource(resource);
    Ok(expr.evaluate(&env)?.iter().map(Value::to_json).collect())
}

/// The result collection as a JSON array of `{"type": ..., "value": ...}` (what the CLI prints).
pub fn collection_to_typed_json(c: &Collection) -> Json {
    Json::Array(
        c.iter()
            .map(|v| {
                let ty = match v {
                    Value::Node(_) => v.type_name().to_string(),
                    _ => format!("System.{}", v.type_name()),
                };
                serde_json::json!({ "type": ty, "value": v.to_json() })
            })
            .collect(),
    )
}

/// `huitong fhirpath 'EXPR' FILE.json`: evaluates over the resource in the file and returns the
/// result collection as pretty JSON with types.
pub fn run_cli(expr: &str, file: &Path) -> Result<String, FhirPathError> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| FhirPathError::Input(format!("{}: {e}", file.display())))?;
    let resource: Json = serde_json::from_str(&text)
        .map_err(|e| FhirPathError::Input(format!("{}: {e}", file.display())))?;
    let expression = parse(expr)?;
    let env = Environment::for_resource(&resource);
    let result = expression.evaluate(&env)?;
    serde_json::to_string_pretty(&collection_to_typed_json(&result))
        .map_err(|e| FhirPathError::Input(e.to_string()))
}

#[cfg(test)]
mod tests;
