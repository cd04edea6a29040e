//! Compiles `proto/berth/provider/v1/provider.proto` in pure Rust (protox): no system `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let file = root.join("berth/provider/v1/provider.proto");
    println!("cargo:rerun-if-changed={}", file.display());
    let fds = protox::compile([&file], [&root])?;
    tonic_prost_build::configure()
        // An instance may carry a root password: its Debug is written by hand (redacted).
        .skip_debug(["berth.provider.v1.Instance"])
        .compile_fds(fds)?;
    Ok(())
}
