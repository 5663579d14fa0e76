//! Compiles the repository's default model into `$OUT_DIR/default.kiln` for `src/main.rs` to embed.
//!
//! `kiln::Build` prints `cargo:rerun-if-changed` for every file of the model, so Cargo runs this script
//! again only when one of them changes; and if it does run with unchanged inputs, the content hash
//! stored in the existing artifact tells `Build` there is nothing to do.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let out = PathBuf::from(std::env::var("OUT_DIR")?).join("default.kiln");
    let model = manifest_dir.join("../../models/default");
    let outcome = kiln::Build::new(&model).pipeline("default").target("cpu").compile_to(&out)?;
    if let kiln::BuildOutcome::Compiled(summary) = outcome {
        println!("cargo:warning=compiled {} into {} bytes", model.display(), summary.artifact.bytes);
    }
    Ok(())
}
