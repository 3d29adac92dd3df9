//! Records to and from their gRPC form.

use crate::proto;
use crate::record::Flow;

fn endpoint(
    kind: &str,
    namespace: &str,
    name: &str,
    ip: Option<std::net::IpAddr>,
    labels: &std::collections::BTreeMap<String, String>,
) -> proto::Endpoint {
    proto::Endpoint {
        r#type: kind.to_string(),
        namespace: namespace.to_string(),
        name: name.to_string(),
        ip: ip.map(|ip| ip.to_string()).unwrap_or_default(),
        labels: labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
    }
}

pub fn to_wire(f: &Flow) -> proto::Flow {
    proto::Flow {
        start_time: f.start_time,
        end_time: f.end_time,
        reporter: f.reporter.clone(),
        action: f.action.clone(),
        proto: f.proto.clone(),
        source: Some(endpoint(
            &f.source_type,
            &f.source_namespace,
            &f.source_name,
            f.source_ip,
            &f.source_labels,
        )),
        dest: Some(endpoint(
            &f.dest_type,
            &f.dest_namespace,
            &f.dest_name,
            f.dest_ip,
            &f.dest_labels,
        )),
        dest_port: f.dest_port.map_or(0, u32::from),
        policies: f.policies.clone(),
        pending_policies: f.pending_policies.clone(),
        packets: f.packets,
        bytes: f.bytes,
        num_flows: f.num_flows,
        packets_in: f.packets_in,
        packets_out: f.packets_out,
        bytes_in: f.bytes_in,
        bytes_out: f.bytes_out,
        num_flows_started: f.num_flows_started,
        num_flows_completed: f.num_flows_completed,
        num_flows_live: f.num_flows_live,
        source_port: f.source_port.map_or(0, u32::from),
    }
}

/// Why a record on the wire is not a record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("no {0} endpoint")]
    Missing(&'static str),
    #[error("{0} address {1:?} is not an IP address")]
    Address(&'static str, String),
    #[error("{0} port {1} is out of range")]
    Port(&'static str, u32),
}

/// A record from node `node`.
pub fn from_wire(node: &str, f: proto::Flow) -> Result<Flow, WireError> {
    let source = f.source.ok_or(WireError::Missing("source"))?;
    let dest = f.dest.ok_or(WireError::Missing("destination"))?;
    let ip = |which, s: String| {
        if s.is_empty() {
            Ok(None)
        } else {
            s.parse()
                .map(Some)
                .map_err(|_| WireError::Address(which, s))
        }
    };
    let port = |which, p: u32| match p {
        0 => Ok(None),
        p => u16::try_from(p)
            .map(Some)
            .map_err(|_| WireError::Port(which, p)),
    };
    Ok(Flow {
        start_time: f.start_time,
        end_time: f.end_time,
        node: node.to_string(),
        reporter: f.reporter,
        action: f.action,
        proto: f.proto,
        source_ip: ip("source", source.ip)?,
        source_port: port("source", f.source_port)?,
        source_namespace: source.namespace,
        source_name: source.name,
        source_type: source.r#type,
        source_labels: source.labels.into_iter().collect(),
        dest_ip: ip("destination", dest.ip)?,
        dest_namespace: dest.namespace,
        dest_name: dest.name,
        dest_type: dest.r#type,
        dest_labels: dest.labels.into_iter().collect(),
        dest_port: port("destination", f.dest_port)?,
        policies: f.policies,
        pending_policies: f.pending_policies,
        packets: f.packets,
        bytes: f.bytes,
        num_flows: f.num_flows,
        packets_in: f.packets_in,
        packets_out: f.packets_out,
        bytes_in: f.bytes_in,
        bytes_out: f.bytes_out,
        num_flows_started: f.num_flows_started,
        num_flows_completed: f.num_flows_completed,
        num_flows_live: f.num_flows_live,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_comes_back_as_it_went_and_ports_past_u16_are_refused() {
        let f = Flow {
            start_time: 1,
            end_time: 2,
            node: "node-1".into(),
            reporter: "src".into(),
            action: "allow".into(),
            proto: "TCP".into(),
            source_ip: Some("10.0.0.1".parse().expect("ip")),
            source_port: Some(40_000),
            source_type: "wep".into(),
            source_name: "web".into(),
            dest_type: "net".into(),
            dest_name: "pub".into(),
            dest_port: Some(443),
            ..Flow::default()
        };
        assert_eq!(from_wire("node-1", to_wire(&f)), Ok(f.clone()));
        let without = Flow {
            source_port: None,
            ..f.clone()
        };
        assert_eq!(from_wire("node-1", to_wire(&without)), Ok(without));
        let mut w = to_wire(&f);
        w.source_port = 70_000;
        assert_eq!(
            from_wire("node-1", w),
            Err(WireError::Port("source", 70_000))
        );
    }
}
