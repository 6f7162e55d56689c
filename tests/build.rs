//! Generates a client from the ORIGINAL mökv proto text (`proto/original_kv.proto`), without a
//! system `protoc` (protox parses it, as in `proto/build.rs`). The e2e tests use it to show that
//! a client built from the original API works against mokvd unchanged.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let file = "proto/original_kv.proto";
    println!("cargo:rerun-if-changed={file}");
    let fds = protox::compile([file], ["proto"])?;
    tonic_prost_build::configure().build_server(false).compile_fds(fds)?;
    Ok(())
}
