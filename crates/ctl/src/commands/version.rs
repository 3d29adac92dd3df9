//! calicoctl version: the client's version, and the cluster's if reachable.

use crate::input::existing_client as client;
use anyhow::Result;
use calico_api::{Kind, Resource};
use std::path::Path;
use std::process::ExitCode;

pub fn run(config: &Path) -> Result<ExitCode> {
    println!("Client Version:    v{}", env!("CARGO_PKG_VERSION"));
    println!("Release:           calico-rs");
    let cluster =
        client(config).and_then(|c| Ok(c.get(Kind::ClusterInformation, None, "default")?));
    match cluster {
        Ok(Resource::ClusterInformation(ci)) => {
            let or_unknown = |s: &str| {
                if s.is_empty() {
                    "unknown".to_string()
                } else {
                    s.to_string()
                }
            };
            println!("Cluster Version:   {}", or_unknown(&ci.spec.calico_version));
            println!("Cluster Type:      {}", or_unknown(&ci.spec.cluster_type));
        }
        Ok(_) | Err(_) => {
            println!("Cluster Version:   unknown (no ClusterInformation in the datastore)")
        }
    }
    Ok(ExitCode::SUCCESS)
}
