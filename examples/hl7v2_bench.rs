//! Throughput of HL7 v2 parsing and parse+map+validate over a message corpus repeated to N
//! messages (used by `scripts/bench-hl7v2.sh`, which runs the Python peers on the same input).
//!
//!   cargo run --release --example hl7v2_bench -- DIR N
use std::time::Instant;

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = args
        .next()
        .unwrap_or_else(|| "../shared/corpora/hl7v2-samples/messages".into());
    let n: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(100_000);
    let mut corpus: Vec<Vec<u8>> = Vec::new();
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{dir}: {e}"))
        .flatten()
        .map(|e| e.path())
        .collect();
    paths.sort();
    for p in paths {
        let bytes = std::fs::read(&p).unwrap_or_default();
        for m in huitong::ingest::hl7v2::split_messages(&bytes) {
            corpus.push(m.to_vec());
        }
    }
    let msgs: Vec<&[u8]> = corpus.iter().map(Vec::as_slice).cycle().take(n).collect();
    let bytes: usize = msgs.iter().map(|m| m.len()).sum();
    let charset = huitong::ingest::hl7v2::Charset::Ascii;

    let t = Instant::now();
    let mut fields = 0usize;
    for m in &msgs {
        if let Ok(p) = huitong::ingest::hl7v2::parse(m, charset) {
            // Touch every field so lazy splitting is not a free lunch.
            for s in p.segments() {
                for f in 1..=s.field_count() {
                    fields += s.field(f).parts().count();
                }
            }
        }
    }
    let parse_s = t.elapsed().as_secs_f64();

    let maps = huitong::mapping::Mappings::load(std::path::Path::new("mappings"))
        .unwrap_or_else(|e| panic!("{e:?}"));
    let registry = std::sync::Arc::new(huitong::registry::Registry::with_core(
        huitong::definitions::Definitions::core(),
    ));
    let terminology = std::sync::Arc::new(huitong::terminology::Terminology::new(registry.clone()));
    let validator = huitong::validation::Validator::new(registry, terminology);
    let opts = huitong::mapping::Options::default();
    let t = Instant::now();
    let (mut resources, mut invalid) = (0usize, 0usize);
    for m in &msgs {
        if let Ok(p) = huitong::ingest::hl7v2::parse(m, charset)
            && let Ok(c) = huitong::mapping::convert(&p, &maps, &opts)
        {
            for r in &c.resources {
                resources += 1;
                if validator.validate(r, &[], false).has_errors() {
                    invalid += 1;
                }
            }
        }
    }
    let full_s = t.elapsed().as_secs_f64();
    println!(
        "HL7V2-BENCH messages={n} distinct={} bytes={bytes} fields={fields}",
        corpus.len()
    );
    println!(
        "HL7V2-BENCH huitong_parse msgs_per_s={:.0} secs={parse_s:.3}",
        n as f64 / parse_s
    );
    println!(
        "HL7V2-BENCH huitong_parse_map_validate msgs_per_s={:.0} secs={full_s:.3} resources={resources} invalid={invalid}",
        n as f64 / full_s
    );
}
