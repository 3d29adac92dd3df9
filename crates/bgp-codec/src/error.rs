//! NOTIFICATION codes (RFC 4271 §4.5, RFC 4486, RFC 5492, RFC 7313).

use std::fmt;

/// The error codes of RFC 4271 §4.5 (and ROUTE-REFRESH's, RFC 7313).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ErrorCode {
    MessageHeader = 1,
    Open = 2,
    Update = 3,
    HoldTimerExpired = 4,
    Fsm = 5,
    Cease = 6,
    RouteRefresh = 7,
}

/// A NOTIFICATION: what went wrong, as the peer is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    pub code: u8,
    pub subcode: u8,
    pub data: Vec<u8>,
}

impl Notification {
    pub fn new(code: ErrorCode, subcode: u8, data: Vec<u8>) -> Self {
        Notification {
            code: code as u8,
            subcode,
            data,
        }
    }

    // Message header errors.
    pub fn not_synchronized() -> Self {
        Self::new(ErrorCode::MessageHeader, 1, Vec::new())
    }
    pub fn bad_length(len: u16) -> Self {
        Self::new(ErrorCode::MessageHeader, 2, len.to_be_bytes().to_vec())
    }
    pub fn bad_type(t: u8) -> Self {
        Self::new(ErrorCode::MessageHeader, 3, vec![t])
    }

    // OPEN errors.
    pub fn unsupported_version(supported: u16) -> Self {
        Self::new(ErrorCode::Open, 1, supported.to_be_bytes().to_vec())
    }
    pub fn bad_peer_as() -> Self {
        Self::new(ErrorCode::Open, 2, Vec::new())
    }
    pub fn bad_bgp_id() -> Self {
        Self::new(ErrorCode::Open, 3, Vec::new())
    }
    pub fn unsupported_optional_parameter() -> Self {
        Self::new(ErrorCode::Open, 4, Vec::new())
    }
    pub fn unacceptable_hold_time() -> Self {
        Self::new(ErrorCode::Open, 6, Vec::new())
    }
    pub fn unsupported_capability(cap: Vec<u8>) -> Self {
        Self::new(ErrorCode::Open, 7, cap)
    }

    pub fn hold_timer_expired() -> Self {
        Self::new(ErrorCode::HoldTimerExpired, 0, Vec::new())
    }
    /// A message that is not allowed in the session's state (RFC 6608
    /// subcodes: 1 OpenSent, 2 OpenConfirm, 3 Established).
    pub fn fsm(state_subcode: u8) -> Self {
        Self::new(ErrorCode::Fsm, state_subcode, Vec::new())
    }

    pub fn is_cease(&self) -> bool {
        self.code == ErrorCode::Cease as u8
    }

    fn code_name(&self) -> &'static str {
        match self.code {
            1 => "message header error",
            2 => "OPEN message error",
            3 => "UPDATE message error",
            4 => "hold timer expired",
            5 => "finite state machine error",
            6 => "cease",
            7 => "ROUTE-REFRESH message error",
            _ => "unknown error",
        }
    }

    fn subcode_name(&self) -> &'static str {
        match (self.code, self.subcode) {
            (1, 1) => "connection not synchronized",
            (1, 2) => "bad message length",
            (1, 3) => "bad message type",
            (2, 1) => "unsupported version number",
            (2, 2) => "bad peer AS",
            (2, 3) => "bad BGP identifier",
            (2, 4) => "unsupported optional parameter",
            (2, 6) => "unacceptable hold time",
            (2, 7) => "unsupported capability",
            (3, 1) => "malformed attribute list",
            (3, 2) => "unrecognized well-known attribute",
            (3, 3) => "missing well-known attribute",
            (3, 4) => "attribute flags error",
            (3, 5) => "attribute length error",
            (3, 6) => "invalid ORIGIN attribute",
            (3, 8) => "invalid NEXT_HOP attribute",
            (3, 9) => "optional attribute error",
            (3, 10) => "invalid network field",
            (3, 11) => "malformed AS_PATH",
            (6, 1) => "maximum number of prefixes reached",
            (6, 2) => "administrative shutdown",
            (6, 3) => "peer de-configured",
            (6, 4) => "administrative reset",
            (6, 5) => "connection rejected",
            (6, 6) => "other configuration change",
            (6, 7) => "connection collision resolution",
            (6, 8) => "out of resources",
            (6, 9) => "hard reset",
            (7, 1) => "invalid message length",
            _ => "",
        }
    }
}

impl fmt::Display for Notification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}", self.code_name(), self.code)?;
        match self.subcode_name() {
            "" => write!(f, "/{})", self.subcode),
            s => write!(f, "/{}: {s})", self.subcode),
        }
    }
}

impl std::error::Error for Notification {}

/// UPDATE message error with `subcode` and `data` (RFC 4271 §6.3).
pub fn update_error(subcode: u8, data: Vec<u8>) -> Notification {
    Notification::new(ErrorCode::Update, subcode, data)
}

/// Cease with `subcode` (RFC 4486).
pub fn cease(subcode: u8) -> Notification {
    Notification::new(ErrorCode::Cease, subcode, Vec::new())
}
