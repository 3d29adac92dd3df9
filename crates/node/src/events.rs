//! Reading datastore events, shared by the policy agent and the BGP agent.

use calico_api::Resource;
use calico_datastore::Event;
use calico_ipam::model::{parse_affinity_key, Affinity, AffinityState, HOST_PREFIX};
use calico_net::IpNet;

/// A stored resource (its JSON value) as a typed resource.
pub fn decode(value: &[u8]) -> Result<Resource, String> {
    let v: serde_json::Value = serde_json::from_slice(value).map_err(|e| e.to_string())?;
    calico_api::decode_resource(v)
}

/// For an event on one of `node`'s block affinities: the block, and whether
/// it is now confirmed (a delete, or any other state, is not). None for
/// every other key.
pub fn own_block(node: &str, ev: &Event) -> Option<(IpNet, bool)> {
    let key = ev.key();
    if !key.starts_with(HOST_PREFIX) {
        return None;
    }
    let (owner, block) = parse_affinity_key(key)?;
    if owner != node {
        return None;
    }
    let confirmed = match ev {
        Event::Put(kv) => serde_json::from_slice::<Affinity>(&kv.value)
            .is_ok_and(|a| a.state == AffinityState::Confirmed && !a.deleted),
        Event::Delete { .. } => false,
    };
    Some((block, confirmed))
}
