//! Every FHIRPath invariant of the R4 core definitions parses, and evaluates without an evaluation
//! error on every resource of the R4 examples package (read in place), at every element it applies to.

use huitong::definitions::Definitions;
use huitong::fhirpath::{self, Environment, Expression, Value};
use serde_json::Value as Json;
use std::collections::HashMap;
use std::io::Read;
use std::path::PathBuf;

fn examples_package() -> Option<PathBuf> {
    let dir = std::env::var_os("HUITONG_CORPORA")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/corpora"))
        });
    let tgz = dir.join("fhir-r4-examples/hl7.fhir.r4.examples-4.0.1.tgz");
    if tgz.exists() {
        return Some(tgz);
    }
    if std::env::var("HUITONG_REQUIRE_CORPORA").as_deref() == Ok("1") {
        panic!("{} missing and HUITONG_REQUIRE_CORPORA=1", tgz.display());
    }
    None
}

/// Parsed constraints (key, expression) by element path.
type ByPath = HashMap<String, Vec<(String, Expression)>>;

/// Every constraint of the core definitions, parsed, by element path.
fn parsed_constraints(defs: &Definitions) -> (ByPath, usize, Vec<String>) {
    let mut by_path: HashMap<String, Vec<(String, Expression)>> = HashMap::new();
    let mut count = 0;
    let mut errors = Vec::new();
    for sd in &defs.artefact().structures {
        for el in &sd.elements {
            for c in &el.constraints {
                let Some(expr) = &c.expression else { continue };
                count += 1;
                match fhirpath::parse(expr) {
                    Ok(e) => by_path
                        .entry(el.path.clone())
                        .or_default()
                        .push((c.key.clone(), e)),
                    Err(e) => errors.push(format!("{} {} `{expr}`: {e}", el.path, c.key)),
                }
            }
        }
    }
    (by_path, count, errors)
}

#[test]
fn every_core_constraint_parses() {
    let (_, count, errors) = parsed_constraints(Definitions::core());
    println!(
        "{count} constraint expressions, {} syntax errors",
        errors.len()
    );
    assert!(
        count > 500,
        "expected the core's constraints, found {count}"
    );
    assert!(
        errors.is_empty(),
        "constraints that do not parse:\n{}",
        errors.join("\n")
    );
}

struct Run<'d> {
    defs: &'static Definitions,
    constraints: &'d ByPath,
    children: Expression,
    evaluations: usize,
    errors: Vec<String>,
}

impl Run<'_> {
    /// Checks every node of `resource` (nested resources become `%resource` for their subtree).
    fn resource(&mut self, file: &str, resource: &Json, root: &Json) {
        let mut env = Environment::with_definitions(resource, Some(self.defs));
        env.root_resource = Environment::with_definitions(root, Some(self.defs)).resource;
        let Some(start) = env.resource.clone() else {
            return;
        };
        let mut stack = vec![start];
        let mut nested: Vec<&Json> = Vec::new();
        while let Some(node) = stack.pop() {
            let Value::Node(n) = &node else { continue };
            if let Some(path) = n.path {
                for (key, expr) in self.constraints.get(path).into_iter().flatten() {
                    env.context = vec![node.clone()];
                    self.evaluations += 1;
                    if let Err(e) = expr.evaluate(&env) {
                        self.errors
                            .push(format!("{file} {path} {key} `{}`: {e}", expr.source()));
                    }
                }
            }
            env.context = vec![node.clone()];
            let kids = self.children.evaluate(&env).unwrap_or_default();
            for k in kids {
                if let Value::Node(kn) = &k
                    && let Some(j) = kn.json.filter(|j| j.get("resourceType").is_some())
                {
                    nested.push(j);
                    continue;
                }
                stack.push(k);
            }
        }
        for j in nested {
            self.resource(file, j, root);
        }
    }
}

#[test]
fn core_constraints_evaluate_on_every_example() {
    let Some(tgz) = examples_package() else {
        println!("skipped: examples package not found (set HUITONG_CORPORA)");
        return;
    };
    let defs = Definitions::core();
    let (constraints, _, _) = parsed_constraints(defs);
    let mut run = Run {
        defs,
        constraints: &constraints,
        children: fhirpath::parse("children()").expect("parses"),
        evaluations: 0,
        errors: Vec::new(),
    };
    let file = std::fs::File::open(&tgz).expect("open examples package");
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let mut resources = 0;
    for entry in archive.entries().expect("read examples package") {
        let Ok(mut entry) = entry else { continue };
        let name = entry
            .path()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        if !name.ends_with(".json") || name.ends_with("package.json") || name.contains(".index.") {
            continue;
        }
        let mut text = String::new();
        if entry.read_to_string(&mut text).is_err() {
            continue;
        }
        let Ok(json) = serde_json::from_str::<Json>(&text) else {
            continue;
        };
        if json.get("resourceType").is_none() {
            continue;
        }
        resources += 1;
        run.resource(&name, &json, &json);
    }
    println!(
        "{resources} resources, {} constraint evaluations, {} errors",
        run.evaluations,
        run.errors.len()
    );
    for e in run.errors.iter().take(50) {
        println!("  {e}");
    }
    assert!(
        resources > 2000,
        "expected the whole examples package, read {resources}"
    );
    assert!(
        run.errors.is_empty(),
        "{} constraint evaluations failed",
        run.errors.len()
    );
}
