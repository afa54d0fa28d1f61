//! Replays the saved fuzz corpus and any crash artefacts through the code paths the fuzz targets
//! use, so a fixed crash stays fixed without a nightly toolchain.

use huitong::fhirpath::fuzzing::{evaluate_bytes, parse_bytes};
use std::path::Path;

fn files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(files(&p));
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

#[test]
fn replay_fuzz_corpus_and_artifacts() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut replayed = 0;
    for target in ["fhirpath_parse", "fhirpath_eval"] {
        for dir in [
            root.join("corpus").join(target),
            root.join("artifacts").join(target),
        ] {
            for f in files(&dir) {
                let data = std::fs::read(&f).expect("read corpus file");
                parse_bytes(&data);
                evaluate_bytes(&data);
                replayed += 1;
            }
        }
    }
    println!("replayed {replayed} fuzz inputs");
    assert!(
        replayed >= 20,
        "expected the saved seed corpus, found {replayed} files"
    );
}
