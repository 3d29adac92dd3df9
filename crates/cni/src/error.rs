//! CNI errors: the spec's JSON, with its reserved codes.

use serde::Serialize;

/// Reserved codes from the CNI specification.
pub mod code {
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    pub const UNSUPPORTED_FIELD: u32 = 2;
    pub const UNKNOWN_CONTAINER: u32 = 3;
    pub const INVALID_ENV: u32 = 4;
    pub const IO_FAILURE: u32 = 5;
    pub const DECODE_FAILURE: u32 = 6;
    pub const INVALID_CONFIG: u32 = 7;
    pub const TRY_AGAIN_LATER: u32 = 11;
    pub const NOT_AVAILABLE: u32 = 50;
    /// Plugin-specific: the datastore refused or failed.
    pub const DATASTORE: u32 = 100;
    /// Plugin-specific: address management failed.
    pub const IPAM: u32 = 101;
    /// Plugin-specific: the kernel refused a change.
    pub const KERNEL: u32 = 102;
    /// Plugin-specific: CHECK found a difference.
    pub const CHECK_FAILED: u32 = 103;
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{msg}{}", if .details.is_empty() { String::new() } else { format!(": {}", .details) })]
pub struct CniError {
    #[serde(rename = "cniVersion")]
    pub cni_version: String,
    pub code: u32,
    pub msg: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub details: String,
}

impl CniError {
    pub fn new(code: u32, msg: impl Into<String>, details: impl Into<String>) -> Self {
        CniError {
            cni_version: crate::LATEST.into(),
            code,
            msg: msg.into(),
            details: details.into(),
        }
    }

    pub fn with_version(mut self, v: &str) -> Self {
        v.clone_into(&mut self.cni_version);
        self
    }
}
