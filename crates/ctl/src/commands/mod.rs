//! One module per calicoctl command group.

pub mod edit;
pub mod flows;
pub mod get;
pub mod ipam;
pub mod manifest;
pub mod node;
pub mod policy;
pub mod selector;
pub mod version;
