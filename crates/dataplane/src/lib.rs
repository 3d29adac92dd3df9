//! The nftables dataplane.
//!
//! `render` turns the desired state (what the calculation graph's intents
//! describe) into one `inet calico` table; `calico-kernel`'s `Firewall`
//! loads it in a single `nft -f` transaction that replaces only that
//! table, so no packet ever sees half a policy and other tables are never
//! touched.
//!
//! Layout (forward hook; the input hook runs the same from-workload part):
//!
//! ```text
//! input:   VXLAN (with a tunnel) from anyone but the other nodes: drop;
//!          then as forward's first half
//! forward: ct established,related accept; ct invalid drop
//!          clear marks; iifname vmap @from-wl      (egress of the sender)
//!          unknown/denied cali* from here: drop
//!          clear marks; oifname vmap @to-wl        (ingress of the receiver)
//!          unknown/denied cali* to here: drop; accept
//! fw-<if>/tw-<if>: per endpoint and direction: each tier in order
//!          (fw-<if>/t<n> jumps to each policy chain; a policy's Allow sets
//!          the accept mark and returns, Pass the pass mark, Deny drops),
//!          then the tier's end (drop, or pass); no tier decided: drop;
//!          passed past the last tier, or no policy at all: the profiles.
//! p-<hash>-in/-out, r-<hash>-in/-out: compiled policy and profile rules.
//! sets: one v4 and one v6 set per selector; named ports as addr . proto . port.
//! host endpoints (render/host.rs, only on a node with any): hi-/ho-<if>
//!          in input/output, hfi-/hfo-<if> in forward, hp-<if> in prerouting
//!          (mangle), hui-/huo-<if> in prerouting/output (raw); failsafe-*.
//! ```

mod readback;
mod render;
mod table;

pub use readback::ReadBackError;
pub use render::{
    build, build_with, deferred_allows, endpoint_walks, flow_group, flow_id, host_endpoint_walks,
    policy_chain, profile_chain, render, EndpointToHost, NatOutgoing, NodeRules, VxlanSources,
    DEFERRED_PREFIX,
};
pub use table::{rule_tag, Chain, Collection, Table};

/// The one table calico-rs owns (`inet calico`).
pub const TABLE: &str = "calico";

/// Marks used between chains (bits 16 and 17, clear of kube-proxy's).
pub const MARK_ACCEPT: u32 = 0x1_0000;
pub const MARK_PASS: u32 = 0x2_0000;
/// Set by an untracked (doNotTrack) policy's allow in the raw hooks: the
/// rest of host endpoint policy is skipped (never a workload's).
pub const MARK_UNTRACKED: u32 = 0x4_0000;
/// Set by a preDNAT policy's allow: normal host endpoint policy is skipped.
pub const MARK_PREDNAT: u32 = 0x8_0000;
/// With flow logs, the egress Allow that let a packet out of a workload
/// (bits 20 to 31: an identity from `deferred_allows`), read from the log
/// of its next verdict (see `render/deferred.rs`).
pub const MARK_FLOW_ID: u32 = 0xfff0_0000;
pub const FLOW_ID_SHIFT: u32 = 20;
