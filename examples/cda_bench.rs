//! Throughput of CDA conversion + validation without storage, over the WS/T 500 samples
//! repeated to N documents (used by `scripts/bench-cda.sh`, which also measures end to end over
//! HTTP into the embedded store).
//!
//!   cargo run --release --example cda_bench -- DIR N
use std::time::Instant;

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = args
        .next()
        .unwrap_or_else(|| "../shared/corpora/cn-hie/cda".into());
    let n: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(50_000);
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{dir}: {e}"))
        .flatten()
        .map(|e| e.path())
        .collect();
    paths.sort();
    let corpus: Vec<Vec<u8>> = paths
        .iter()
        .map(|p| std::fs::read(p).unwrap_or_default())
        .collect();
    let docs: Vec<&[u8]> = corpus.iter().map(Vec::as_slice).cycle().take(n).collect();
    let bytes: usize = docs.iter().map(|m| m.len()).sum();
    let tables = huitong::ingest::cda::table::Tables::load(std::path::Path::new("mappings"))
        .unwrap_or_else(|e| panic!("{e:?}"));
    let registry = std::sync::Arc::new(huitong::registry::Registry::with_core(
        huitong::definitions::Definitions::core(),
    ));
    let terminology = std::sync::Arc::new(huitong::terminology::Terminology::new(registry.clone()));
    let validator = huitong::validation::Validator::new(registry, terminology);
    let limits = huitong::xml::Limits::default();
    let t = Instant::now();
    let (mut converted, mut resources, mut invalid) = (0usize, 0usize, 0usize);
    for d in &docs {
        if let Ok(c) =
            huitong::ingest::cda::convert::convert(d, &tables, &limits, "2024-01-01T00:00:00Z")
        {
            converted += 1;
            for r in &c.resources {
                resources += 1;
                if validator.validate(r, &[], false).has_errors() {
                    invalid += 1;
                }
            }
        }
    }
    let s = t.elapsed().as_secs_f64();
    println!(
        "CDA-BENCH documents={n} distinct={} bytes={bytes}",
        corpus.len()
    );
    println!(
        "CDA-BENCH huitong_convert_validate docs_per_s={:.0} secs={s:.3} converted={converted} resources={resources} invalid={invalid}",
        n as f64 / s
    );
}
