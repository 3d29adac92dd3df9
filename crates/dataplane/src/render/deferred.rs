//! With flow logs on, an egress Allow need not log the packet itself: the
//! rule writes its identity into the packet's mark (`MARK_FLOW_ID`), and
//! whoever logs the packet next carries it to the collector. Between two
//! workloads of one node that is the destination's ingress verdict, so a
//! connection costs one NFLOG message instead of two; a packet leaving
//! the node (or going to the host) is logged once, just after its egress
//! walk, with the prefix `E|` and the identity in its mark.
//!
//! An identity is 12 bits, taken from a hash of the rule's chain and index:
//! the same rule has the same one whatever else changes, so a packet logged
//! just before a ruleset change is still named rightly after it. Two rules
//! whose hashes meet get none (both log as before), so adding a rule never
//! hands an existing identity to another rule.

use super::{policy_chain, profile_chain};
use crate::{FLOW_ID_SHIFT, MARK_FLOW_ID};
use calico_api::Action;
use calico_calc::DesiredState;
use sha1::{Digest, Sha1};
use std::collections::BTreeMap;

/// The prefix of the log that carries a deferred egress Allow out of the
/// node (the rule is named by the mark).
pub const DEFERRED_PREFIX: &str = "E|";

/// Identities per chain: rule index → identity.
pub(super) type ChainIds = BTreeMap<String, BTreeMap<usize, u16>>;

/// How many identities there are (1 to 4095; 0 is none).
const IDS: u16 = (MARK_FLOW_ID >> FLOW_ID_SHIFT) as u16;

fn hash_id(chain: &str, index: usize) -> u16 {
    let d = Sha1::digest(format!("{chain}/{index}").as_bytes());
    u16::from_be_bytes([d[0], d[1]]) % IDS + 1
}

/// Every egress Allow of the policies' and profiles' chains that gets an
/// identity.
pub(super) fn chain_ids(state: &DesiredState) -> ChainIds {
    let chains = state
        .policies
        .iter()
        .map(|(key, r)| (policy_chain(key, false), r))
        .chain(
            state
                .profiles
                .iter()
                .map(|(name, r)| (profile_chain(name, false), r)),
        );
    assign(chains.flat_map(|(chain, rules)| {
        rules
            .egress
            .iter()
            .enumerate()
            .filter(|(_, r)| r.action == Action::Allow)
            .map(move |(index, _)| (chain.clone(), index))
    }))
}

/// Each rule its hash's identity, unless another rule has the same one.
fn assign(rules: impl Iterator<Item = (String, usize)>) -> ChainIds {
    let mut claims: BTreeMap<u16, Vec<(String, usize)>> = BTreeMap::new();
    for (chain, index) in rules {
        claims
            .entry(hash_id(&chain, index))
            .or_default()
            .push((chain, index));
    }
    let mut ids = ChainIds::new();
    for (id, mut rules) in claims {
        if let (Some((chain, index)), true) = (rules.pop(), rules.is_empty()) {
            ids.entry(chain).or_default().insert(index, id);
        }
    }
    ids
}

/// The egress Allows whose verdict travels in the mark, by identity: the
/// prefix each would have logged (`A<index>|<chain>`), for the collector.
pub fn deferred_allows(state: &DesiredState) -> BTreeMap<u16, String> {
    chain_ids(state)
        .into_iter()
        .flat_map(|(chain, ids)| {
            ids.into_iter()
                .map(move |(index, id)| (id, format!("A{index}|{chain}")))
        })
        .collect()
}

/// The identity in a logged packet's mark (None for 0).
pub fn flow_id(mark: u32) -> Option<u16> {
    let id = ((mark & MARK_FLOW_ID) >> FLOW_ID_SHIFT) as u16;
    (id != 0).then_some(id)
}

/// An Allow that defers its log: its identity and the accept mark set
/// together (any identity before is replaced).
pub(super) fn deferred_allow(id: u16) -> String {
    let keep = !MARK_FLOW_ID;
    let set = (u32::from(id) << FLOW_ID_SHIFT) | crate::MARK_ACCEPT;
    format!("meta mark set meta mark & {keep:#x} | {set:#x} return")
}

/// Clears the identity (and the verdict marks) where a walk that may read
/// it starts.
pub(super) fn clear_all() -> String {
    let keep = !(MARK_FLOW_ID | crate::MARK_ACCEPT | crate::MARK_PASS);
    format!("meta mark set meta mark & {keep:#x}")
}

/// After an egress walk: a deferred Allow whose packet no ingress walk of
/// this node will log is logged here (`unless_to_workload`: not when the
/// packet goes to a workload, whose ingress walk logs it).
pub(super) fn log_deferred(unless_to_workload: bool) -> String {
    let id = format!("meta mark & {MARK_FLOW_ID:#x} != 0 ");
    let out = if unless_to_workload {
        format!(
            "oifname != \"{}*\" ",
            calico_calc::WORKLOAD_INTERFACE_PREFIX
        )
    } else {
        String::new()
    };
    format!(
        "{id}{out}log prefix \"{DEFERRED_PREFIX}\" group {}",
        super::flow_group(false)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_fill_twelve_bits_and_read_back() {
        for (chain, index) in [("p-abc-out", 0), ("r-def-out", 7), ("p-x-out", 4096)] {
            let id = hash_id(chain, index);
            assert!((1..=4095).contains(&id));
            let mark = (u32::from(id) << FLOW_ID_SHIFT) | crate::MARK_ACCEPT | 0x4000;
            assert_eq!(flow_id(mark), Some(id));
        }
        assert_eq!(flow_id(crate::MARK_ACCEPT | 0xffff), None);
    }

    #[test]
    fn rules_whose_hashes_meet_get_no_identity_and_the_others_keep_theirs() {
        let rules: Vec<(String, usize)> = (0..300).map(|i| (format!("p-{i}-out"), 0)).collect();
        let ids = assign(rules.iter().cloned());
        let mut by_id: BTreeMap<u16, usize> = BTreeMap::new();
        for (chain, index) in &rules {
            *by_id.entry(hash_id(chain, *index)).or_default() += 1;
        }
        let mut met = 0;
        for (chain, index) in &rules {
            let id = hash_id(chain, *index);
            let got = ids.get(chain).and_then(|c| c.get(index)).copied();
            if by_id[&id] > 1 {
                met += 1;
                assert_eq!(got, None, "{chain} shares {id}");
            } else {
                assert_eq!(got, Some(id), "{chain}");
            }
        }
        assert!(met > 0, "300 rules in 4095 identities: some meet");
        // One more rule takes nobody's identity: each keeps its own or,
        // met by the newcomer, loses it.
        let more = assign(rules.iter().cloned().chain([("p-new-out".to_string(), 3)]));
        for (chain, index) in &rules {
            let before = ids.get(chain).and_then(|c| c.get(index));
            let after = more.get(chain).and_then(|c| c.get(index));
            assert!(after.is_none() || after == before, "{chain}");
        }
    }
}
