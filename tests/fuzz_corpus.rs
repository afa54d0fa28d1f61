//! Replays the saved fuzz corpora (and any crash artefacts) through the fuzz targets' code paths.
use std::path::Path;

fn replay(target: &str, run: fn(&[u8])) -> usize {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut n = 0;
    for dir in [
        root.join("corpus").join(target),
        root.join("artifacts").join(target),
    ] {
        let Ok(files) = std::fs::read_dir(&dir) else {
            continue;
        };
        for f in files.flatten() {
            run(&std::fs::read(f.path()).unwrap());
            n += 1;
        }
    }
    n
}

#[test]
fn resource_parse_corpus_replays_without_panic() {
    let n = replay("resource_parse", huitong::fuzzing::resource_parse);
    assert!(n >= 4, "the saved corpus has {n} inputs");
}

#[test]
fn validate_resource_corpus_replays_without_panic() {
    let n = replay("validate_resource", huitong::fuzzing::validate_resource);
    assert!(n >= 4, "the saved corpus has {n} inputs");
}

#[test]
fn profile_load_corpus_replays_without_panic() {
    let n = replay("profile_load", huitong::fuzzing::profile_load);
    assert!(n >= 3, "the saved corpus has {n} inputs");
}

#[test]
fn search_query_corpus_replays_without_panic() {
    let n = replay("search_query", huitong::fuzzing::search_query);
    assert!(n >= 6, "the saved corpus has {n} inputs");
}

#[test]
fn hl7v2_parse_corpus_replays_without_panic() {
    let n = replay("hl7v2_parse", huitong::fuzzing::hl7v2_parse);
    assert!(n >= 5, "the saved corpus has {n} inputs");
}

#[test]
fn mllp_frames_corpus_replays_without_panic() {
    let n = replay("mllp_frames", huitong::fuzzing::mllp_frames);
    assert!(n >= 3, "the saved corpus has {n} inputs");
}

#[test]
fn hl7v2_convert_corpus_replays_without_panic() {
    let n = replay("hl7v2_convert", huitong::fuzzing::hl7v2_convert);
    assert!(n >= 5, "the saved corpus has {n} inputs");
}

#[test]
fn auth_token_corpus_replays_without_panic() {
    let n = replay("auth_token", huitong::fuzzing::auth_token);
    assert!(n >= 5, "the saved corpus has {n} inputs");
}

#[test]
fn feed_csv_corpus_replays_without_panic() {
    let n = replay("feed_csv", huitong::fuzzing::feed_csv);
    assert!(n >= 5, "the saved corpus has {n} inputs");
}

#[test]
fn cda_read_corpus_replays_without_panic() {
    let n = replay("cda_read", huitong::fuzzing::cda_read);
    assert!(n >= 5, "the saved corpus has {n} inputs");
}

#[test]
fn hl7v3_dispatch_corpus_replays_without_panic() {
    let n = replay("hl7v3_dispatch", huitong::fuzzing::hl7v3_dispatch);
    assert!(n >= 5, "the saved corpus has {n} inputs");
}

#[test]
fn feed_map_corpus_replays_without_panic() {
    let n = replay("feed_map", huitong::fuzzing::feed_map);
    assert!(n >= 5, "the saved corpus has {n} inputs");
}
