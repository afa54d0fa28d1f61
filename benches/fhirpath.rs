//! Parse+evaluate throughput of the 20 most common resource-level constraint expressions over the
//! R4 examples package, with a cached AST and with parsing per evaluation.
//!
//! Besides criterion's report it writes the workload (`fhirpath-bench-workload.json`) and its own
//! per-evaluation figures (`fhirpath-bench-rust.json`) into the target directory, so
//! `scripts/bench-fhirpath.sh` can run the same evaluations through fhirpath.js and print the ratio.

use criterion::{Criterion, black_box};
use huitong::definitions::Definitions;
use huitong::fhirpath::{self, Environment, Expression};
use serde_json::{Value as Json, json};
use std::collections::HashMap;
use std::time::{Duration, Instant};

#[path = "common/fhirpath_workload.rs"]
mod workload;
use workload::{examples, target_dir, workload};

fn run_cached(
    defs: &'static Definitions,
    resources: &[Json],
    parsed: &[Expression],
    pairs: &[(usize, usize)],
) -> usize {
    let mut n = 0;
    for &(ri, ei) in pairs {
        let env = Environment::with_definitions(&resources[ri], Some(defs));
        if let Ok(r) = parsed[ei].evaluate(&env) {
            n += r.len();
        }
    }
    n
}

fn run_uncached(
    defs: &'static Definitions,
    resources: &[Json],
    exprs: &[String],
    pairs: &[(usize, usize)],
) -> usize {
    let mut n = 0;
    for &(ri, ei) in pairs {
        let env = Environment::with_definitions(&resources[ri], Some(defs));
        if let Ok(e) = fhirpath::parse(&exprs[ei])
            && let Ok(r) = e.evaluate(&env)
        {
            n += r.len();
        }
    }
    n
}

/// Mean nanoseconds per evaluation over repeated passes for at least `min`.
fn time_per_eval(min: Duration, pairs: usize, mut pass: impl FnMut() -> usize) -> f64 {
    pass();
    let start = Instant::now();
    let mut passes = 0u32;
    while start.elapsed() < min || passes < 3 {
        black_box(pass());
        passes += 1;
    }
    start.elapsed().as_nanos() as f64 / (f64::from(passes) * pairs as f64)
}

fn main() {
    let Some(resources) = examples() else {
        println!("skipped: R4 examples package not found (set HUITONG_CORPORA)");
        return;
    };
    let defs = Definitions::core();
    let (exprs, pairs) = workload(defs, &resources);
    let parsed: Vec<Expression> = exprs
        .iter()
        .filter_map(|e| fhirpath::parse(e).ok())
        .collect();
    assert_eq!(
        parsed.len(),
        exprs.len(),
        "every benchmarked constraint parses"
    );

    let target = target_dir();
    let _ = std::fs::create_dir_all(&target);
    let used: Vec<usize> = {
        let mut u: Vec<usize> = pairs.iter().map(|p| p.0).collect();
        u.sort_unstable();
        u.dedup();
        u
    };
    let index: HashMap<usize, usize> = used.iter().enumerate().map(|(i, r)| (*r, i)).collect();
    let workload = json!({
        "expressions": exprs,
        "resources": used.iter().map(|r| resources[*r].clone()).collect::<Vec<_>>(),
        "pairs": pairs.iter().map(|(r, e)| json!([index[r], e])).collect::<Vec<_>>(),
    });
    let _ = std::fs::write(
        target.join("fhirpath-bench-workload.json"),
        workload.to_string(),
    );

    let mut c = Criterion::default()
        .configure_from_args()
        .sample_size(10)
        .measurement_time(Duration::from_secs(10));
    let mut g = c.benchmark_group("fhirpath constraints");
    g.throughput(criterion::Throughput::Elements(pairs.len() as u64));
    g.bench_function("evaluate (cached AST)", |b| {
        b.iter(|| run_cached(defs, &resources, &parsed, &pairs))
    });
    g.bench_function("parse + evaluate", |b| {
        b.iter(|| run_uncached(defs, &resources, &exprs, &pairs))
    });
    g.finish();

    let cached = time_per_eval(Duration::from_secs(3), pairs.len(), || {
        run_cached(defs, &resources, &parsed, &pairs)
    });
    let uncached = time_per_eval(Duration::from_secs(3), pairs.len(), || {
        run_uncached(defs, &resources, &exprs, &pairs)
    });
    println!(
        "huitong: {} evaluations of {} expressions over {} examples",
        pairs.len(),
        exprs.len(),
        used.len()
    );
    println!(
        "huitong: {cached:.0} ns per evaluation (cached AST), {uncached:.0} ns per parse+evaluate"
    );
    let _ = std::fs::write(
        target.join("fhirpath-bench-rust.json"),
        json!({"cached_ns": cached, "uncached_ns": uncached, "evaluations": pairs.len()})
            .to_string(),
    );
}
