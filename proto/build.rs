//! Generates the prost/tonic code without a system `protoc`: protox parses the .proto files
//! (it embeds the well-known types such as google/protobuf/empty.proto).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/kv.proto",
        "proto/peer.proto",
        "proto/cluster.proto",
        "proto/maintenance.proto",
        "proto/watch.proto",
        "proto/lease.proto",
    ];
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["proto"])?;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    // Kept for gRPC server reflection (`grpcurl` works without the .proto files).
    std::fs::write(out.join("mokv_descriptor.bin"), prost::Message::encode_to_vec(&fds))?;
    tonic_prost_build::configure().compile_fds(fds)?;
    Ok(())
}
