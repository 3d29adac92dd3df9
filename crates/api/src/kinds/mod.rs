//! One module per group of kinds; each spec knows its defaults and checks.

pub mod endpoint;
pub mod felix;
pub mod ippool;
pub mod kubecontrollers;
pub mod netset;
pub mod node;
pub mod policy;
pub mod staged;
