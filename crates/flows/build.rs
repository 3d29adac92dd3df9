fn main() -> Result<(), Box<dyn std::error::Error>> {
    #[cfg(feature = "service")]
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_protos(&["proto/flows.proto"], &["proto"])?;
    Ok(())
}
