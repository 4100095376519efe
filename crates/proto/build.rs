//! Generates the gRPC code from `proto/` with a protoc that comes from
//! crates.io, so no system protobuf compiler is needed on any machine.

use std::path::PathBuf;

const PROTOS: &[&str] = &["users.proto", "posts.proto", "search.proto"];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let protoc = protoc_bin_vendored::protoc_bin_path()?;

    let files: Vec<PathBuf> = PROTOS.iter().map(|p| root.join(p)).collect();
    for file in &files {
        println!("cargo:rerun-if-changed={}", file.display());
    }

    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc);
    tonic_prost_build::configure()
        .file_descriptor_set_path(
            PathBuf::from(std::env::var("OUT_DIR")?).join("platform_descriptor.bin"),
        )
        .compile_with_config(config, &files, &[root])?;
    Ok(())
}
