//! Opening the datastore and reading manifest files.

use anyhow::{Context, Result};
use calico_backend::{open_existing_store, open_store, DatastoreConfig};
use calico_client::Client;
use std::io::Read;
use std::path::Path;
use std::sync::Arc;

/// A client for the configured datastore.
pub fn client(config: &Path) -> Result<Client> {
    let cfg = DatastoreConfig::resolve(Some(config), &|k| std::env::var(k).ok())?;
    let store = open_store(&cfg).with_context(|| format!("cannot open the {}", cfg.describe()))?;
    Ok(Client::new(store, Arc::new(calico_client::SystemClock)))
}

/// A client for a datastore that must exist already (commands that read,
/// change or delete what is there): a wrong path is an error, not an
/// empty datastore.
pub fn existing_client(config: &Path) -> Result<Client> {
    let cfg = DatastoreConfig::resolve(Some(config), &|k| std::env::var(k).ok())?;
    let store =
        open_existing_store(&cfg).with_context(|| format!("cannot open the {}", cfg.describe()))?;
    Ok(Client::new(store, Arc::new(calico_client::SystemClock)))
}

/// The text of a manifest file, or of standard input for `-`; at most
/// one byte more than a manifest may have is read (the decoder refuses
/// it then), so a huge input never sits whole in memory.
pub fn read_manifest(path: &str) -> Result<String> {
    let limit = calico_api::strict::MAX_MANIFEST_BYTES as u64 + 1;
    let mut text = String::new();
    if path == "-" {
        std::io::stdin()
            .take(limit)
            .read_to_string(&mut text)
            .context("cannot read standard input")?;
    } else {
        std::fs::File::open(path)
            .and_then(|f| f.take(limit).read_to_string(&mut text))
            .with_context(|| format!("cannot read {path}"))?;
    }
    Ok(text)
}
