//! Where an agent's view of the datastore comes from: the fan-out service
//! when one is configured (Felix's `FELIX_TYPHAADDR` and friends), the
//! datastore itself otherwise; and `calico-node typha`, the service.

use anyhow::{Context, Result};
use calico_datastore::Store;
use calico_syncer::typha::client::{ClientConfig, ClientTls};
use calico_syncer::typha::server::{Running, ServerConfig, ServerTls};
use calico_syncer::{direct, Syncer, SyncerType};
use std::path::PathBuf;
use std::sync::Arc;

/// How an agent reaches the fan-out (Felix's names).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct TyphaArgs {
    /// `host:port` of the fan-out service; without it the agent reads the
    /// datastore directly.
    #[arg(long = "typha-addr", env = "FELIX_TYPHAADDR")]
    pub addr: Option<String>,
    /// The CA the service's certificate must chain to (with cert and key: mTLS).
    #[arg(long = "typha-ca-file", env = "FELIX_TYPHACAFILE", requires_all = ["cert", "key"])]
    pub ca: Option<PathBuf>,
    #[arg(long = "typha-cert-file", env = "FELIX_TYPHACERTFILE", requires = "ca")]
    pub cert: Option<PathBuf>,
    #[arg(long = "typha-key-file", env = "FELIX_TYPHAKEYFILE", requires = "ca")]
    pub key: Option<PathBuf>,
    /// The name the service's certificate must carry.
    #[arg(long = "typha-cn", env = "FELIX_TYPHACN")]
    pub cn: Option<String>,
}

/// The agent's syncer: through the fan-out if configured, else direct.
pub fn source(
    node: &str,
    ty: SyncerType,
    store: &Arc<dyn Store>,
    typha: &TyphaArgs,
) -> Result<Syncer> {
    let Some(addr) = &typha.addr else {
        return Ok(direct::start(Arc::clone(store), ty));
    };
    let tls = match (&typha.ca, &typha.cert, &typha.key) {
        (Some(ca), Some(cert), Some(key)) => Some(ClientTls {
            ca: ca.clone(),
            cert: cert.clone(),
            key: key.clone(),
            server_name: typha.cn.clone(),
        }),
        _ => None,
    };
    calico_syncer::typha::client::start(ClientConfig {
        addr: addr.clone(),
        node: node.to_string(),
        syncer: ty,
        tls,
    })
    .context("starting the fan-out client")
}

/// `calico-node typha`: Typha's settings, by Typha's names.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Address to serve on (Typha's port: 5473).
    #[arg(long, env = "TYPHA_LISTEN", default_value = "0.0.0.0:5473")]
    pub listen: std::net::SocketAddr,
    /// Server certificate (with key and CA: clients must present a
    /// certificate the CA signed).
    #[arg(long, env = "TYPHA_SERVERCERTFILE", requires_all = ["key", "ca"])]
    pub cert: Option<PathBuf>,
    #[arg(long, env = "TYPHA_SERVERKEYFILE", requires = "cert")]
    pub key: Option<PathBuf>,
    #[arg(long, env = "TYPHA_CAFILE", requires = "cert")]
    pub ca: Option<PathBuf>,
    /// Changes a client may fall behind before it is disconnected (it
    /// reconnects and takes a fresh snapshot).
    #[arg(long, env = "TYPHA_QUEUE", default_value_t = 256)]
    pub queue: usize,
    /// Clients served at once at most.
    #[arg(long, env = "TYPHA_MAXCONNECTIONSUPPERLIMIT", default_value_t = 10_000)]
    pub max_clients: usize,
}

pub fn run_typha(args: &Args) -> Result<()> {
    crate::stderr_logging();
    let (store, _) = crate::datastore()?;
    let mut config = ServerConfig::new(args.listen);
    config.queue = args.queue.max(1);
    config.max_clients = args.max_clients;
    if let (Some(cert), Some(key), Some(ca)) = (&args.cert, &args.key, &args.ca) {
        config.tls = Some(ServerTls {
            cert: cert.clone(),
            key: key.clone(),
            client_ca: ca.clone(),
        });
    }
    let running = Running::start(&store, &config)?;
    tracing::info!("fan-out serving on {}", running.addr);
    // Until killed.
    loop {
        std::thread::park();
    }
}
