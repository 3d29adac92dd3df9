//! NetworkSet and GlobalNetworkSet: named lists of CIDRs selectable by label.

use crate::types::Cidr;
use crate::validate::Errors;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NetworkSetSpec {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nets: Vec<Cidr>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_egress_domains: Vec<String>,
}

impl NetworkSetSpec {
    pub(crate) fn check(&self, _: &mut Errors) {}
}
