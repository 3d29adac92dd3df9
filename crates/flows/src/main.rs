//! `calico-flows`: the flow service. Nodes stream their flow records to
//! its gRPC ingest; it keeps them in a SQLite file and serves the query
//! API, a live stream, metrics and the web UI over HTTP.

use calico_flows::server::{run_until_signal, Config, ServerTls};
use clap::Parser;
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(name = "calico-flows", version, about)]
struct Args {
    /// gRPC ingest (the nodes' `flowLogsGoldmaneServer`).
    #[arg(long, env = "CALICO_FLOWS_GRPC", default_value = "0.0.0.0:7443")]
    grpc: SocketAddr,
    /// HTTP API and web UI.
    #[arg(long, env = "CALICO_FLOWS_HTTP", default_value = "0.0.0.0:8081")]
    http: SocketAddr,
    /// The flow store (created if missing).
    #[arg(
        long,
        env = "CALICO_FLOWS_DB",
        default_value = "/var/lib/calico/flows.db"
    )]
    db: PathBuf,
    /// How long raw records are kept before they are rolled up into hours.
    #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
    raw_retention: std::time::Duration,
    /// How long hourly roll-ups are kept.
    #[arg(long, default_value = "7d", value_parser = humantime::parse_duration)]
    hourly_retention: std::time::Duration,
    /// Serve gRPC over TLS with this certificate (PEM); needs --tls-key and --tls-client-ca.
    #[arg(long, requires_all = ["tls_key", "tls_client_ca"])]
    tls_cert: Option<PathBuf>,
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Nodes must present a certificate signed by this CA.
    #[arg(long, requires = "tls_cert")]
    tls_client_ca: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(tracing::Level::INFO)
        .init();
    let a = Args::parse();
    let tls = match (a.tls_cert, a.tls_key, a.tls_client_ca) {
        (Some(cert), Some(key), Some(client_ca)) => Some(ServerTls {
            cert,
            key,
            client_ca,
        }),
        _ => None,
    };
    let config = Config {
        grpc: a.grpc,
        http: a.http,
        db: a.db,
        raw_retention: a.raw_retention,
        hourly_retention: a.hourly_retention,
        tls,
    };
    run_until_signal(config, 2)
}
