fn main() -> Result<(), Box<dyn std::error::Error>> {
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // Values are shared between the snapshot and every client, not copied.
        .bytes(".calico.typha.v1.Kv.value")
        .compile_protos(&["proto/typha.proto"], &["proto"])?;
    Ok(())
}
