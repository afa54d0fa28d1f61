//! Validation throughput (issue 4): every resource of the Synthea bundles validated against its
//! core definition, then against core plus the US Core 3.1.0 profile for its type, and a
//! 1,000-entry and a 10,000-entry Bundle (to show the cost is linear in bundle size).
//!
//! Single-threaded, so the figures are per core. Writes the resources as NDJSON
//! (`validate-bench-resources.ndjson`) and the figures (`validate-bench-rust.json`) into the target
//! directory, so `scripts/bench-validate.sh` can run the same resources through Medplum's
//! `validateResource` and print the ratio.

use huitong::definitions::Definitions;
use huitong::registry::Registry;
use huitong::terminology::Terminology;
use huitong::validation::Validator;
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

fn corpora() -> PathBuf {
    std::env::var_os("HUITONG_CORPORA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/corpora")))
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/target")))
}

fn synthea_resources() -> Option<Vec<Value>> {
    let file = std::fs::File::open(corpora().join("synthea/synthea-r4-bundles.tgz")).ok()?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let mut out = Vec::new();
    for entry in archive.entries().ok()? {
        let Ok(mut entry) = entry else { continue };
        let mut text = String::new();
        if entry.read_to_string(&mut text).is_err() {
            continue;
        }
        let Ok(bundle) = serde_json::from_str::<Value>(&text) else {
            continue;
        };
        for e in bundle["entry"].as_array().into_iter().flatten() {
            if let Some(r) = e.get("resource") {
                out.push(r.clone());
            }
        }
    }
    Some(out)
}

/// The US Core profile named after a resource type (`us-core-patient` for Patient), if any;
/// profiles chosen by code (vital signs, lab results) need slicing and are left out.
fn us_core_profile(reg: &Registry, ty: &str) -> Option<String> {
    let own = format!(
        "http://hl7.org/fhir/us/core/StructureDefinition/us-core-{}",
        ty.to_lowercase()
    );
    reg.catalogue()
        .resource("StructureDefinition", &own)
        .map(|_| own)
}

fn time<F: FnMut() -> usize>(label: &str, n: usize, rounds: usize, mut f: F) -> f64 {
    let _ = f(); // warm: plans compiled, caches filled
    let start = Instant::now();
    let mut errors = 0;
    for _ in 0..rounds {
        errors = f();
    }
    let secs = start.elapsed().as_secs_f64() / rounds as f64;
    println!(
        "{label}: {n} resources in {:.3} s = {:.0} resources/s ({errors} with errors)",
        secs,
        n as f64 / secs
    );
    secs
}

fn main() {
    // `cargo bench` passes `--bench`; any other argument is a filter we do not use.
    let Some(resources) = synthea_resources() else {
        println!(
            "skipped: synthea bundles not found under {}",
            corpora().display()
        );
        return;
    };
    let core_only = Arc::new(Registry::with_core(Definitions::core()));
    let us_core = Arc::new(core_only.fork());
    let problems = us_core.load_dir(&corpora().join("us-core-3.1.0"));
    assert!(problems.is_empty(), "{problems:?}");
    let v_core = Validator::new(core_only.clone(), Arc::new(Terminology::new(core_only)));
    let v_us = Validator::new(us_core.clone(), Arc::new(Terminology::new(us_core.clone())));
    let n = resources.len();
    let rounds = 3;

    let core_secs = time("core", n, rounds, || {
        resources
            .iter()
            .filter(|r| v_core.validate_parsed(r, &[], false).has_errors())
            .count()
    });
    let profiles: Vec<Vec<String>> = resources
        .iter()
        .map(|r| {
            us_core_profile(&us_core, r["resourceType"].as_str().unwrap_or(""))
                .into_iter()
                .collect()
        })
        .collect();
    let profiled = profiles.iter().filter(|p| !p.is_empty()).count();
    println!("{profiled} of {n} resources have a US Core profile for their type");
    let us_secs = time("core + US Core", n, rounds, || {
        resources
            .iter()
            .zip(&profiles)
            .filter(|(r, p)| v_us.validate_parsed(r, p, false).has_errors())
            .count()
    });
    let bundle = |size: usize| -> Value {
        let entries: Vec<Value> = resources
            .iter()
            .cycle()
            .take(size)
            .enumerate()
            .map(|(i, r)| json!({"fullUrl": format!("urn:uuid:00000000-0000-0000-0000-{i:012}"), "resource": r}))
            .collect();
        json!({"resourceType": "Bundle", "type": "collection", "entry": entries})
    };
    let b1k = bundle(1_000);
    let b10k = bundle(10_000);
    let s1k = time("bundle of 1,000 entries", 1_000, rounds, || {
        usize::from(v_core.validate_parsed(&b1k, &[], false).has_errors())
    });
    let s10k = time("bundle of 10,000 entries", 10_000, rounds, || {
        usize::from(v_core.validate_parsed(&b10k, &[], false).has_errors())
    });
    println!(
        "10,000-entry bundle / 1,000-entry bundle: {:.1}x",
        s10k / s1k
    );

    let dir = target_dir();
    let _ = std::fs::create_dir_all(&dir);
    if let Ok(f) = std::fs::File::create(dir.join("validate-bench-resources.ndjson")) {
        let mut f = std::io::BufWriter::new(f);
        for r in &resources {
            let _ = writeln!(f, "{r}");
        }
    }
    let figures = json!({
        "resources": n,
        "core_per_second": n as f64 / core_secs,
        "us_core_per_second": n as f64 / us_secs,
        "bundle_1k_seconds": s1k,
        "bundle_10k_seconds": s10k,
    });
    let _ = std::fs::write(dir.join("validate-bench-rust.json"), figures.to_string());
}
