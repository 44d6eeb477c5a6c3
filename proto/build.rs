//! Compiles the .proto files with `protox` (pure Rust), so no system `protoc` is needed.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = ["proto/archipel.proto"];
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    let descriptors = protox::compile(files, ["proto"])?;
    tonic_prost_build::configure()
        // Piece data read from a node stays in the buffer it was received
        // in instead of being copied into a Vec of its own.
        .bytes(".archipel.v1.PieceDownloadResponse.data")
        .compile_fds(descriptors)?;
    Ok(())
}
