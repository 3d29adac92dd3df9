//! NetworkSet and GlobalNetworkSet: named lists of CIDRs selectable by label.

use crate::validate::Errors;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NetworkSetSpec {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nets: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_egress_domains: Vec<String>,
}

impl NetworkSetSpec {
    pub(crate) fn check(&self, e: &mut Errors) {
        e.nets("spec.nets", &self.nets);
    }
}
