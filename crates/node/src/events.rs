//! Reading datastore events, shared by the policy agent and the BGP agent.

use calico_api::Resource;
use calico_datastore::Event;
use calico_ipam::model::{parse_affinity_key, Affinity, AffinityState, HOST_PREFIX};
use calico_net::IpNet;

/// Why a stored value is not a resource.
#[derive(Debug, thiserror::Error)]
pub enum StoredError {
    #[error("{0} bytes; a resource may be at most {max}", max = calico_api::strict::MAX_DOCUMENT_BYTES)]
    TooLarge(usize),
    #[error("not JSON")]
    Json(#[from] serde_json::Error),
    #[error(transparent)]
    Resource(#[from] calico_api::DecodeError),
}

/// A stored resource (its JSON value) as a typed resource.
pub fn decode(value: &[u8]) -> Result<Resource, StoredError> {
    if value.len() > calico_api::strict::MAX_DOCUMENT_BYTES {
        return Err(StoredError::TooLarge(value.len()));
    }
    let v: serde_json::Value = serde_json::from_slice(value)?;
    Ok(calico_api::decode_resource(v)?)
}

/// A workload endpoint's addresses.
pub fn workload_ips(w: &calico_api::WorkloadEndpointSpec) -> Vec<IpNet> {
    w.ip_networks.iter().map(calico_api::Cidr::net).collect()
}

/// For an event on a block affinity: the node, the block, and whether the
/// affinity is now confirmed (a delete, or any other state, is not). None
/// for every other key.
pub fn block_affinity(ev: &Event) -> Option<(String, IpNet, bool)> {
    let key = ev.key();
    if !key.starts_with(HOST_PREFIX) {
        return None;
    }
    let (owner, block) = parse_affinity_key(key)?;
    let confirmed = match ev {
        Event::Put(kv) => serde_json::from_slice::<Affinity>(&kv.value)
            .is_ok_and(|a| a.state == AffinityState::Confirmed && !a.deleted),
        Event::Delete { .. } => false,
    };
    Some((owner, block, confirmed))
}

/// For an event on one of `node`'s block affinities: the block, and whether
/// it is now confirmed. None for every other key.
pub fn own_block(node: &str, ev: &Event) -> Option<(IpNet, bool)> {
    block_affinity(ev)
        .filter(|(owner, _, _)| owner == node)
        .map(|(_, block, confirmed)| (block, confirmed))
}
