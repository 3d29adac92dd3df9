//! One module per calicoctl command group.

pub mod edit;
pub mod get;
pub mod ipam;
pub mod manifest;
pub mod node;
pub mod selector;
pub mod version;
