//! BGP-4 messages as values, and the bytes they travel as.
//!
//! [`frame`] finds a whole message in a byte stream; [`decode`] turns one
//! into a [`Message`] and [`encode`] back. Decoding never panics: bad bytes
//! come back as the [`Notification`] RFC 4271 §6 says to send (code,
//! subcode and data), so the session can answer a peer's mistake exactly.
//!
//! Covered: OPEN with capabilities (multiprotocol, route refresh, 4-octet
//! AS, graceful restart, others kept as bytes), UPDATE with the well-known
//! and common optional attributes (ORIGIN, AS_PATH, NEXT_HOP, MED,
//! LOCAL_PREF, ATOMIC_AGGREGATE, AGGREGATOR, COMMUNITIES, ORIGINATOR_ID,
//! CLUSTER_LIST, MP_REACH_NLRI, MP_UNREACH_NLRI; others kept as bytes and
//! passed on when transitive), NOTIFICATION, KEEPALIVE and ROUTE-REFRESH.
//! Not covered: extended messages (RFC 8654), ADD-PATH, AS4_PATH merging on
//! 2-octet sessions (AS4_PATH is kept as an unknown transitive attribute).

mod attrs;
mod error;
mod message;
mod wire;

pub use attrs::{pass_on, AsPath, AsSegment, Attributes, MpReach, MpUnreach, Origin, RawAttribute};
pub use error::{cease, update_error, ErrorCode, Notification};
pub use message::{
    decode, encode, frame, Afi, Capability, Context, GracefulRestart, Message, Open, RouteRefresh,
    Safi, Update, AS_TRANS, HEADER_LEN, MAX_LEN,
};
