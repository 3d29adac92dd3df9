//! Datastore keys, exactly as Calico lays them out in etcd v3 mode:
//! `/calico/resources/v3/projectcalico.org/<plural>/[<namespace>/]<name>`.

use calico_api::Kind;

pub const RESOURCE_PREFIX: &str = "/calico/resources/v3/projectcalico.org/";

/// The key of one resource.
pub fn resource_key(kind: Kind, namespace: Option<&str>, name: &str) -> String {
    match (kind.namespaced(), namespace) {
        (true, Some(ns)) => format!("{RESOURCE_PREFIX}{}/{ns}/{name}", kind.plural()),
        (true, None) => format!("{RESOURCE_PREFIX}{}/default/{name}", kind.plural()),
        (false, _) => format!("{RESOURCE_PREFIX}{}/{name}", kind.plural()),
    }
}

/// The prefix holding every resource of a kind, or of a kind in one namespace.
pub fn kind_prefix(kind: Kind, namespace: Option<&str>) -> String {
    match (kind.namespaced(), namespace) {
        (true, Some(ns)) => format!("{RESOURCE_PREFIX}{}/{ns}/", kind.plural()),
        _ => format!("{RESOURCE_PREFIX}{}/", kind.plural()),
    }
}

/// Splits a key back into kind, namespace and name.
pub fn parse_resource_key(key: &str) -> Option<(Kind, Option<String>, String)> {
    let rest = key.strip_prefix(RESOURCE_PREFIX)?;
    let (plural, rest) = rest.split_once('/')?;
    let kind = Kind::from_plural(plural)?;
    if kind.namespaced() {
        let (ns, name) = rest.split_once('/')?;
        Some((kind, Some(ns.to_string()), name.to_string()))
    } else {
        Some((kind, None, rest.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout() {
        assert_eq!(
            resource_key(Kind::IPPool, None, "p1"),
            "/calico/resources/v3/projectcalico.org/ippools/p1"
        );
        assert_eq!(
            resource_key(Kind::NetworkPolicy, Some("shop"), "knp.default.x"),
            "/calico/resources/v3/projectcalico.org/networkpolicies/shop/knp.default.x"
        );
        assert_eq!(
            kind_prefix(Kind::WorkloadEndpoint, None),
            "/calico/resources/v3/projectcalico.org/workloadendpoints/"
        );
        let key = resource_key(Kind::NetworkSet, Some("ns1"), "set");
        assert_eq!(
            parse_resource_key(&key),
            Some((Kind::NetworkSet, Some("ns1".into()), "set".into()))
        );
        assert_eq!(parse_resource_key("/calico/ipam/v2/handle/x"), None);
    }
}
