//! Generates the Open Inference Protocol's gRPC code from `proto/inference.proto`, with the
//! `protoc` that `protoc-bin-vendored` ships: nothing is downloaded at build time.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    tonic_prost_build::configure()
        .build_client(true)
        .compile_with_config(config, &["proto/inference.proto"], &["proto"])?;
    println!("cargo:rerun-if-changed=proto/inference.proto");
    Ok(())
}
