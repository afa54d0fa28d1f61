//! Compresses the compact core definitions and the core profiles so the binary embeds them
//! (`include_bytes!`) and runs with no files beside it.
use std::io::Write;

fn main() {
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR set by cargo"));
    for name in ["r4-core.json", "r4-profiles.json"] {
        let src = format!("profiles/core/{name}");
        println!("cargo:rerun-if-changed={src}");
        let json = std::fs::read(&src)
            .unwrap_or_else(|e| panic!("{src}: {e}; run scripts/import-core.sh"));
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        enc.write_all(&json).expect("compress core definitions");
        std::fs::write(
            out.join(format!("{name}.gz")),
            enc.finish().expect("finish gzip"),
        )
        .expect("write OUT_DIR artefact");
    }
}
