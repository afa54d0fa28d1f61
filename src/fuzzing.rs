//! Entry points shared by the cargo-fuzz targets in `fuzz/` and the corpus replay in `cargo test`, so
//! both exercise exactly the same code.

use crate::model::{self, ParseLimits};

/// Parses bytes as a resource with the default limits, and re-checks what it accepts.
pub fn resource_parse(data: &[u8]) {
    if let Ok(v) = model::parse_resource(data, None, ParseLimits::default()) {
        // Whatever the parser accepts must stay acceptable after a serialise/parse round trip.
        let again = serde_json::to_vec(&v).unwrap_or_default();
        assert!(model::parse_resource(&again, None, ParseLimits::default()).is_ok());
    }
}

/// A validator with one fixed profile (Patient with birthDate 1..1 and a fixed gender), built once.
fn fixed_validator() -> &'static crate::validation::Validator {
    use crate::registry::Registry;
    use std::sync::{Arc, OnceLock};
    static V: OnceLock<crate::validation::Validator> = OnceLock::new();
    V.get_or_init(|| {
        let registry = Arc::new(Registry::with_core(crate::definitions::Definitions::core()));
        let profile = serde_json::json!({"resourceType": "StructureDefinition",
            "url": "http://example.org/fuzz-patient", "name": "FuzzPatient", "status": "active",
            "kind": "resource", "abstract": false, "type": "Patient", "derivation": "constraint",
            "snapshot": {"element": [
                {"id": "Patient", "path": "Patient", "min": 0, "max": "*"},
                {"id": "Patient.gender", "path": "Patient.gender", "min": 1, "max": "1",
                 "type": [{"code": "code"}], "fixedCode": "female"},
                {"id": "Patient.birthDate", "path": "Patient.birthDate", "min": 1, "max": "1",
                 "type": [{"code": "date"}]}]}});
        let _ = registry.add(profile, "fuzz");
        let terminology = Arc::new(crate::terminology::Terminology::new(registry.clone()));
        crate::validation::Validator::new(registry, terminology)
    })
}

/// Validates arbitrary bytes as a resource against its core definition and the fixed profile.
pub fn validate_resource(data: &[u8]) {
    if let Ok(json) = model::parse_json(data) {
        let report = fixed_validator().validate(
            &json,
            &["http://example.org/fuzz-patient".to_string()],
            true,
        );
        // An empty report still renders a valid OperationOutcome.
        let _ = report.outcome();
    }
}

/// Loads arbitrary bytes as a StructureDefinition (through the registry and the plan compiler) and
/// validates a fixed Patient against it.
pub fn profile_load(data: &[u8]) {
    use crate::registry::Registry;
    use std::sync::Arc;
    let Ok(mut json) = model::parse_json(data) else {
        return;
    };
    if let Some(o) = json.as_object_mut() {
        o.insert("resourceType".into(), "StructureDefinition".into());
        o.entry("url")
            .or_insert_with(|| "http://example.org/fuzzed".into());
    }
    let url = json
        .get("url")
        .and_then(serde_json::Value::as_str)
        .unwrap_or("")
        .to_string();
    let registry = Arc::new(Registry::with_core(crate::definitions::Definitions::core()));
    if registry.add(json, "fuzz").is_err() {
        return;
    }
    let terminology = Arc::new(crate::terminology::Terminology::new(registry.clone()));
    let v = crate::validation::Validator::new(registry, terminology);
    let patient = serde_json::json!({"resourceType": "Patient", "id": "p", "gender": "male",
        "name": [{"family": "Li", "given": ["Wei"]}], "birthDate": "1980-01-01"});
    let _ = v.validate(&patient, &[url], true);
}

/// Parses bytes as a search query string on Observation (and a system search), then generates the
/// SQL of whatever parses: invalid queries are errors with a 4xx status, never a panic.
pub fn search_query(data: &[u8]) {
    use crate::search::{Catalogue, ParseOptions, parse, sql};
    use std::sync::OnceLock;
    static CATALOGUE: OnceLock<Catalogue> = OnceLock::new();
    let catalogue = CATALOGUE.get_or_init(Catalogue::new);
    let params: Vec<(String, String)> = form_urlencoded::parse(data).into_owned().collect();
    for types in [
        vec!["Observation".to_string()],
        vec!["Patient".to_string(), "Practitioner".to_string()],
    ] {
        for lenient in [false, true] {
            let opts = ParseOptions {
                lenient,
                ..ParseOptions::default()
            };
            match parse(&types, &params, catalogue, &opts) {
                Ok(plan) => {
                    let q = sql::page(&plan, &sql::SQLITE, plan.count + 1);
                    assert!(q.sql.starts_with("SELECT"));
                    let _ = sql::count(&plan, &sql::SQLITE);
                }
                Err(e) => assert!((400..500).contains(&e.status), "status {}", e.status),
            }
        }
    }
}

/// Parses bytes as an HL7 v2 message and reads every field, repetition, component and
/// sub-component with escapes decoded: may reject, never panic.
pub fn hl7v2_parse(data: &[u8]) {
    use crate::ingest::hl7v2::{Charset, parse};
    let charset = if data.first().is_some_and(|b| b % 2 == 0) {
        Charset::Ascii
    } else {
        Charset::from_msh18("GB 18030-2000").unwrap_or(Charset::Ascii)
    };
    if let Ok(m) = parse(data, charset) {
        let _ = m.message_type();
        for s in m.segments() {
            for f in 0..=s.field_count() + 1 {
                for rep in s.field(f).parts() {
                    for comp in rep.parts() {
                        for sub in comp.parts() {
                            let _ = sub.text();
                        }
                        let _ = comp.text();
                    }
                }
            }
        }
    }
}

/// Feeds bytes to the MLLP frame decoder in two chunks: never panics, and every message it
/// returns is within the limit.
pub fn mllp_frames(data: &[u8]) {
    use crate::ingest::hl7v2::mllp::{Frame, FrameDecoder};
    let mut d = FrameDecoder::new(64);
    let cut = data.len() / 2;
    for part in [&data[..cut], &data[cut..]] {
        for f in d.push(part) {
            if let Frame::Message(m) = f {
                assert!(m.len() <= 64);
            }
        }
    }
}

/// Parses and maps bytes with the shipped mappings (loaded once): never panics.
pub fn hl7v2_convert(data: &[u8]) {
    use std::sync::OnceLock;
    static MAPS: OnceLock<Option<crate::mapping::Mappings>> = OnceLock::new();
    let maps = MAPS.get_or_init(|| {
        crate::mapping::Mappings::load(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("mappings"),
        )
        .ok()
    });
    let Some(maps) = maps else { return };
    if let Ok(m) = crate::ingest::hl7v2::parse(data, crate::ingest::hl7v2::Charset::Ascii) {
        let _ = crate::mapping::convert(&m, maps, &crate::mapping::Options::default());
    }
}

/// Bearer-token handling on arbitrary input: the JWT verifier (against a fixed P-256 JWKS) and the
/// SMART scope parser must refuse, never panic; a scope that parses keeps its permission bits.
pub fn auth_token(data: &[u8]) {
    use std::sync::OnceLock;
    static KEYS: OnceLock<Vec<crate::security::jwt::Jwk>> = OnceLock::new();
    let keys = KEYS.get_or_init(|| {
        // A fixed public point (the P-256 generator) is enough: no fuzz input can sign for it.
        let jwk = serde_json::json!({"kty": "EC", "crv": "P-256", "kid": "k",
            "x": "axfR8uEsQkf4vOblY6RA8ncDfYEt6zOg9KE5RdiYwpY",
            "y": "T-NC4v4af5uO5-tKfA-eFivOM1drMV7Oy7ZAaDe_UfU"});
        crate::security::jwt::jwk_from_json(&jwk)
            .into_iter()
            .collect()
    });
    let text = String::from_utf8_lossy(data);
    let exp = crate::security::jwt::Expectations {
        audience: Some("fuzz"),
        issuer: None,
        now_secs: 0,
        leeway_secs: 0,
    };
    assert!(crate::security::jwt::verify(&text, keys, &exp).is_err());
    for s in crate::security::scopes::parse_all(&text) {
        assert!(s.perms != 0 && s.perms <= crate::security::scopes::ALL);
    }
    let _ = crate::security::jwt::jwks_from_json(data);
}

/// Reads arbitrary bytes as a CDA document and converts it with the tables of `mappings/cda/`;
/// whatever converts must give a Bundle whose first entry is the Composition.
pub fn cda_read(data: &[u8]) {
    use std::sync::OnceLock;
    static TABLES: OnceLock<Option<crate::ingest::cda::table::Tables>> = OnceLock::new();
    let tables = TABLES.get_or_init(|| {
        crate::ingest::cda::table::Tables::load(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("mappings"),
        )
        .ok()
    });
    let Some(tables) = tables else { return };
    let limits = crate::xml::Limits {
        max_bytes: 1 << 20,
        max_depth: 64,
        max_nodes: 100_000,
    };
    if let Ok(c) =
        crate::ingest::cda::convert::convert(data, tables, &limits, "2024-01-01T00:00:00Z")
    {
        assert_eq!(
            c.bundle["entry"][0]["resource"]["resourceType"],
            "Composition"
        );
    }
}

/// Dispatches arbitrary bytes as an HL7 v3 message (parse, interaction, mapping; no store);
/// every outcome, accepted or refused, renders a well-formed acknowledgement.
pub fn hl7v3_dispatch(data: &[u8]) {
    use std::sync::OnceLock;
    static SERVICE: OnceLock<crate::ingest::hl7v3::Hl7v3Service> = OnceLock::new();
    let service = SERVICE.get_or_init(|| {
        crate::ingest::hl7v3::Hl7v3Service::start(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("mappings"),
            1 << 20,
        )
    });
    let ack = service.dispatch(data);
    assert!(
        roxmltree::Document::parse(&ack).is_ok(),
        "ack is not well-formed: {ack}"
    );
}

/// Feeds arbitrary bytes to the streaming CSV reader in uneven chunks (UTF-8 and GB 18030): it
/// may refuse, never panic, and never holds a row longer than its bound.
pub fn feed_csv(data: &[u8]) {
    use crate::ingest::feed::csv::{CsvCharset, CsvReader};
    for charset in [CsvCharset::Utf8, CsvCharset::Gb18030] {
        let mut r = CsvReader::new(charset, 4096);
        let mut rows = 0usize;
        let cut = data.first().map(|b| usize::from(*b % 7) + 1).unwrap_or(1);
        let chunks: Vec<&[u8]> = data.chunks(cut).collect();
        let mut ok = true;
        for (i, c) in chunks.iter().enumerate() {
            if r.push(c, i + 1 == chunks.len(), &mut |_| rows += 1)
                .is_err()
            {
                ok = false;
                break;
            }
        }
        if ok && chunks.is_empty() {
            let _ = r.push(b"", true, &mut |_| rows += 1);
        }
        assert!(r.peak_row_bytes() <= 4096);
    }
}

/// Maps arbitrary bytes (as a JSON record) through every shipped feed; an input may be refused
/// with errors, never panic, and every error names a JSON Pointer (or the whole record).
pub fn feed_map(data: &[u8]) {
    use std::sync::OnceLock;
    static FEEDS: OnceLock<
        Option<std::collections::BTreeMap<String, std::sync::Arc<crate::ingest::feed::load::Feed>>>,
    > = OnceLock::new();
    let feeds = FEEDS.get_or_init(|| {
        crate::ingest::feed::load::load_all(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("mappings/feeds"),
        )
        .ok()
    });
    let Some(feeds) = feeds else { return };
    let Ok(record) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let lookup = crate::ingest::feed::map::NoLookup;
    for feed in feeds.values() {
        match crate::ingest::feed::map::map_record(feed, &record, &lookup, &Default::default()) {
            Ok(m) => {
                for r in &m.resources {
                    assert!(crate::model::primitives::is_id(&r.id));
                }
            }
            Err(errors) => {
                assert!(!errors.is_empty());
                for e in errors {
                    assert!(e.pointer.is_empty() || e.pointer.starts_with('/'), "{e:?}");
                }
            }
        }
    }
}
