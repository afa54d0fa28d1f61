//! Profiling driver for the FHIRPath benchmark workload (same selection as `benches/fhirpath.rs`):
//! `cargo run --release --example fhirpath_profile -- PASSES` evaluates every pair PASSES times, so
//! it can run under `valgrind --tool=callgrind --toggle-collect='*run_pass*'`; `PER_EXPR=1` prints
//! time per expression, `ONLY=i` keeps
//! only expression i's evaluations, `DIGEST=1` a digest of every result (to check that results do not change).

use huitong::definitions::Definitions;
use huitong::fhirpath::{self, Environment, Expression};
use serde_json::Value as Json;
use std::time::Instant;

#[path = "../benches/common/fhirpath_workload.rs"]
mod workload;
use workload::{examples, workload};

fn main() {
    let passes: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1);
    let resources = examples().expect("R4 examples");
    let defs = Definitions::core();
    let (exprs, mut pairs) = workload(defs, &resources);
    // `ONLY=i` keeps the evaluations of expression i (per-expression instruction counts).
    if let Some(only) = std::env::var("ONLY")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    {
        pairs.retain(|p| p.1 == only);
    }
    let parsed: Vec<Expression> = exprs.iter().map(|e| fhirpath::parse(e).unwrap()).collect();
    let mut per = vec![(0u128, 0usize); exprs.len()];
    let timed = std::env::var_os("PER_EXPR").is_some();
    let start = Instant::now();
    let mut n = 0;
    for _ in 0..passes {
        n += run_pass(defs, &resources, &parsed, &pairs, &mut per, timed);
    }
    let el = start.elapsed();
    println!(
        "{} evaluations x {passes}: {:.0} ns/eval, {n} items",
        pairs.len(),
        el.as_nanos() as f64 / (pairs.len() * passes) as f64
    );
    if std::env::var_os("PER_EXPR").is_some() {
        let total: u128 = per.iter().map(|p| p.0).sum();
        for (i, e) in exprs.iter().enumerate() {
            println!(
                "{:5.1}% {:6} evals {:8.0} ns/eval  {}",
                per[i].0 as f64 * 100.0 / total as f64,
                per[i].1,
                per[i].0 as f64 / per[i].1.max(1) as f64,
                e
            );
        }
    }
    if std::env::var_os("DIGEST").is_some() {
        let mut digest = 0u64;
        let mut mix = |s: String| {
            for b in s.bytes() {
                digest = digest.wrapping_mul(31).wrapping_add(u64::from(b));
            }
        };
        for &(ri, ei) in &pairs {
            let env = Environment::with_definitions(&resources[ri], Some(defs));
            match parsed[ei].evaluate(&env) {
                Ok(r) => {
                    for v in &r {
                        mix(format!("{}:{};", v.type_name(), v.to_json()));
                    }
                }
                Err(e) => mix(format!("error {e}")),
            }
            mix("|".into());
        }
        println!("digest {digest:016x}");
    }
}

/// One pass over the workload (its own symbol, so callgrind can collect only this).
#[inline(never)]
fn run_pass(
    defs: &'static Definitions,
    resources: &[Json],
    parsed: &[Expression],
    pairs: &[(usize, usize)],
    per: &mut [(u128, usize)],
    timed: bool,
) -> usize {
    let mut n = 0;
    for &(ri, ei) in pairs {
        let t = timed.then(Instant::now);
        let env = Environment::with_definitions(&resources[ri], Some(defs));
        if let Ok(r) = parsed[ei].evaluate(&env) {
            n += r.len();
        }
        if let Some(t) = t {
            per[ei].0 += t.elapsed().as_nanos();
            per[ei].1 += 1;
        }
    }
    n
}
