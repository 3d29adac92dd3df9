//! The agent's settings, resolved as Felix resolves them: environment (or
//! command line) first, then the FelixConfiguration named `node.<node>`,
//! then the one named `default`, then built-in defaults. Pure: the
//! resources come in as values.

use calico_api::FelixConfigurationSpec;
use std::time::Duration;

/// Settings given on the command line or in `FELIX_*` variables; these win.
#[derive(clap::Args, Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    #[arg(long, env = "FELIX_HEALTHENABLED")]
    pub health_enabled: Option<bool>,
    /// Address for /liveness, /readiness and /status.
    #[arg(long, env = "FELIX_HEALTHHOST")]
    pub health_host: Option<String>,
    #[arg(long, env = "FELIX_HEALTHPORT")]
    pub health_port: Option<u16>,
    #[arg(long, env = "FELIX_PROMETHEUSMETRICSENABLED")]
    pub prometheus_metrics_enabled: Option<bool>,
    #[arg(long, env = "FELIX_PROMETHEUSMETRICSHOST")]
    pub prometheus_metrics_host: Option<String>,
    #[arg(long, env = "FELIX_PROMETHEUSMETRICSPORT")]
    pub prometheus_metrics_port: Option<u16>,
    /// Trace, Debug, Info, Warning, Error, Fatal or Panic.
    #[arg(long, env = "FELIX_LOGSEVERITYSCREEN")]
    pub log_severity_screen: Option<String>,
    /// Seconds between read-backs of the nftables table (what differs is
    /// repaired by the difference).
    #[arg(long, env = "FELIX_NFTABLESREFRESHINTERVAL")]
    pub nftables_refresh_interval: Option<u64>,
    /// Seconds between full route resyncs.
    #[arg(long, env = "FELIX_ROUTEREFRESHINTERVAL")]
    pub route_refresh_interval: Option<u64>,
    /// The source address for traffic of `natOutgoing` pools leaving
    /// the pools (default: the outgoing interface's, masquerade).
    /// `natPortRange`: `32768:65535` (or one port).
    #[arg(long, env = "FELIX_NATPORTRANGE", value_parser = parse_port_range)]
    pub nat_port_range: Option<(u16, u16)>,
    #[arg(long, env = "FELIX_NATOUTGOINGADDRESS")]
    pub nat_outgoing_address: Option<std::net::IpAddr>,
    #[arg(long, env = "FELIX_ROUTESYNCDISABLED")]
    pub route_sync_disabled: Option<bool>,
    /// Build the VXLAN overlay where pools ask for it (default true).
    #[arg(long, env = "FELIX_VXLANENABLED")]
    pub vxlan_enabled: Option<bool>,
    #[arg(long, env = "FELIX_VXLANVNI")]
    pub vxlan_vni: Option<u32>,
    #[arg(long, env = "FELIX_VXLANPORT")]
    pub vxlan_port: Option<u16>,
    /// MTU of vxlan.calico (0: the underlay's less 50).
    #[arg(long, env = "FELIX_VXLANMTU")]
    pub vxlan_mtu: Option<u32>,
    /// MTU of vxlan-v6.calico (0: the underlay's less 70).
    #[arg(long, env = "FELIX_VXLANMTUV6")]
    pub vxlan_mtu_v6: Option<u32>,
    /// Regular expression naming the interfaces whose smallest MTU is the
    /// underlay's.
    #[arg(long, env = "FELIX_MTUIFACEPATTERN")]
    pub mtu_iface_pattern: Option<String>,
    /// Drop, Return or Accept: traffic from a workload to this host after
    /// its egress policy (default Drop).
    /// `failsafeInboundHostPorts`: `none`, or `proto:port` / `proto:net:port`
    /// items separated by commas (`tcp:22,udp:68,tcp:10.0.0.0/8:2379`).
    #[arg(long, env = "FELIX_FAILSAFEINBOUNDHOSTPORTS", value_parser = parse_failsafe)]
    pub failsafe_inbound_host_ports: Option<Failsafe>,
    /// `failsafeOutboundHostPorts`, as above.
    #[arg(long, env = "FELIX_FAILSAFEOUTBOUNDHOSTPORTS", value_parser = parse_failsafe)]
    pub failsafe_outbound_host_ports: Option<Failsafe>,
    #[arg(long, env = "FELIX_DEFAULTENDPOINTTOHOSTACTION")]
    pub default_endpoint_to_host_action: Option<String>,
    #[arg(long, env = "FELIX_ALLOWVXLANPACKETSFROMWORKLOADS")]
    pub allow_vxlan_packets_from_workloads: Option<bool>,
    #[arg(long, env = "FELIX_ALLOWIPIPPACKETSFROMWORKLOADS")]
    pub allow_ipip_packets_from_workloads: Option<bool>,
    /// Disabled or Any: whether workloads' allowSpoofedSourcePrefixes count.
    #[arg(long, env = "FELIX_WORKLOADSOURCESPOOFING")]
    pub workload_source_spoofing: Option<String>,
    /// Flow records of every connection policy decides on, written to files.
    #[arg(long, env = "FELIX_FLOWLOGSFILEENABLED")]
    pub flow_logs_file_enabled: Option<bool>,
    #[arg(long, env = "FELIX_FLOWLOGSFILEDIRECTORY")]
    pub flow_logs_file_directory: Option<String>,
    /// How allowed flows are aggregated: 0 every connection apart, 1
    /// source ports dropped, 2 (default) addresses dropped too and pods
    /// named by their prefix.
    #[arg(long, env = "FELIX_FLOWLOGSFILEAGGREGATIONKINDFORALLOWED", value_parser = clap::value_parser!(u8).range(0..=2))]
    pub flow_logs_file_aggregation_kind_for_allowed: Option<u8>,
    /// `Continuous` (default): flow records carry pending traces while
    /// policies are staged; `None`: they do not (and the agent keeps no
    /// pending model).
    #[arg(long, env = "FELIX_FLOWLOGSPOLICYEVALUATIONMODE", value_parser = ["None", "Continuous"])]
    pub flow_logs_policy_evaluation_mode: Option<String>,
    /// Every flow record flushed is also logged (info).
    #[arg(long, env = "FELIX_FLOWLOGSCOLLECTORDEBUGTRACE")]
    pub flow_logs_collector_debug_trace: Option<bool>,
    /// How denied flows are aggregated (default 1).
    #[arg(long, env = "FELIX_FLOWLOGSFILEAGGREGATIONKINDFORDENIED", value_parser = clap::value_parser!(u8).range(0..=2))]
    pub flow_logs_file_aggregation_kind_for_denied: Option<u8>,
    /// Seconds between flushes of the aggregated flow records.
    #[arg(long, env = "FELIX_FLOWLOGSFLUSHINTERVAL")]
    pub flow_logs_flush_interval: Option<u64>,
    /// `host:port` of the flow service's gRPC ingest: flow records are
    /// streamed there (Calico's Goldmane setting).
    #[arg(long, env = "FELIX_FLOWLOGSGOLDMANESERVER")]
    pub flow_logs_goldmane_server: Option<String>,
    /// mTLS to the flow service: the CA that signs its certificate, and
    /// this node's certificate and key (PEM). All three or none.
    #[arg(long, env = "FELIX_FLOWLOGSGOLDMANECAFILE", requires_all = ["flow_logs_goldmane_cert_file", "flow_logs_goldmane_key_file"])]
    pub flow_logs_goldmane_ca_file: Option<std::path::PathBuf>,
    #[arg(
        long,
        env = "FELIX_FLOWLOGSGOLDMANECERTFILE",
        requires = "flow_logs_goldmane_ca_file"
    )]
    pub flow_logs_goldmane_cert_file: Option<std::path::PathBuf>,
    #[arg(
        long,
        env = "FELIX_FLOWLOGSGOLDMANEKEYFILE",
        requires = "flow_logs_goldmane_ca_file"
    )]
    pub flow_logs_goldmane_key_file: Option<std::path::PathBuf>,
    /// Flow records buffered for the flow service at most while it is
    /// slow or away; older ones are dropped (and counted) beyond it.
    #[arg(long, env = "FELIX_FLOWLOGSGOLDMANEBUFFER", default_value_t = 100_000)]
    pub flow_logs_goldmane_buffer: usize,
}

/// `natPortRange` from the environment, as FelixConfiguration spells it.
pub fn parse_port_range(text: &str) -> Result<(u16, u16), String> {
    calico_api::port_range(&serde_json::Value::String(text.to_string()))
        .ok_or_else(|| format!("natPortRange {text:?}: a port or low:high, 1-65535"))
}

/// A failsafe port list given on the command line or in the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failsafe(pub Vec<calico_api::ProtoPort>);

/// Felix's environment spelling of failsafe ports: `none`, or a comma
/// list of `port` (TCP), `proto:port` or `proto:net:port` (an IPv6 net in
/// brackets or not: the port is after the last colon). Anything else is
/// refused at start-up, never half-read.
pub fn parse_failsafe(text: &str) -> Result<Failsafe, String> {
    let text = text.trim();
    if text.eq_ignore_ascii_case("none") {
        return Ok(Failsafe(Vec::new()));
    }
    let mut out = Vec::new();
    for item in text.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let bad = |why: &str| format!("failsafe port {item:?}: {why}");
        let (head, port) = match item.rsplit_once(':') {
            Some((head, port)) => (Some(head), port),
            None => (None, item),
        };
        let port: u16 = port
            .parse()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| bad("the port must be 1-65535"))?;
        let (proto, net) = match head {
            None => ("tcp", None),
            Some(head) => match head.split_once(':') {
                Some((proto, net)) => (
                    proto,
                    Some(net.trim_start_matches('[').trim_end_matches(']')),
                ),
                None => (head, None),
            },
        };
        let protocol = match proto.to_ascii_lowercase().as_str() {
            "tcp" => 6,
            "udp" => 17,
            "sctp" => 132,
            _ => return Err(bad("the protocol must be tcp, udp or sctp")),
        };
        let net = net
            .map(|n| calico_net::parse_cidr_or_ip(n).map_err(|e| bad(&e.to_string())))
            .transpose()?;
        out.push(calico_api::ProtoPort {
            protocol,
            port,
            net,
        });
    }
    Ok(Failsafe(out))
}

/// Calico's default for `mtuIfacePattern`.
pub const DEFAULT_MTU_IFACE_PATTERN: &str = "^((en|wl|ww|sl|ib)[Pcopsvx].*|(eth|wlan|wwan).*)";

/// The settings in effect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub health_enabled: bool,
    pub health_host: String,
    pub health_port: u16,
    pub metrics_enabled: bool,
    pub metrics_host: String,
    pub metrics_port: u16,
    pub log_level: String,
    pub nftables_refresh: Duration,
    pub route_refresh: Duration,
    pub route_sync_disabled: bool,
    pub vxlan_enabled: bool,
    pub vxlan_vni: u32,
    pub vxlan_port: u16,
    /// 0: detected.
    pub vxlan_mtu: u32,
    pub vxlan_mtu_v6: u32,
    pub mtu_iface_pattern: String,
    pub endpoint_to_host: calico_dataplane::EndpointToHost,
    pub allow_vxlan_from_workloads: bool,
    pub allow_ipip_from_workloads: bool,
    /// `workloadSourceSpoofing: Any`.
    pub source_spoofing: bool,
    /// Flow records (`flowLogsFileEnabled`): where and how often.
    pub flow_logs: Option<FlowLogs>,
    /// `natOutgoingAddress`: SNAT to it instead of masquerading.
    pub nat_outgoing_address: Option<std::net::IpAddr>,
    /// `natPortRange`: the source ports outgoing NAT uses.
    pub nat_port_range: Option<(u16, u16)>,
    /// `failsafeInboundHostPorts` / `failsafeOutboundHostPorts`.
    pub failsafe_in: Vec<calico_api::ProtoPort>,
    pub failsafe_out: Vec<calico_api::ProtoPort>,
}

/// Where flow records go and how often they are flushed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowLogs {
    /// `flowLogsFileDirectory` (default `/var/log/calico/flowlogs`); the
    /// records are JSON lines in `flows.log` there. None when only
    /// streamed.
    pub directory: Option<std::path::PathBuf>,
    /// `flowLogsGoldmaneServer`: the flow service to stream them to.
    pub server: Option<String>,
    /// mTLS to the flow service (CA, certificate, key).
    pub tls: Option<(std::path::PathBuf, std::path::PathBuf, std::path::PathBuf)>,
    /// Records buffered for the flow service at most.
    pub buffer: usize,
    /// `flowLogsFlushInterval` (default 15 s).
    pub flush: Duration,
    /// `flowLogsFileAggregationKindForAllowed` / `…ForDenied`: what records keep.
    pub aggregation: crate::flows::Aggregation,
    /// `flowLogsPolicyEvaluationMode: Continuous` (default): pending traces.
    pub pending_traces: bool,
    /// `flowLogsCollectorDebugTrace`: every record flushed is logged too.
    pub debug_trace: bool,
}

/// FelixConfiguration fields this agent acts on; any other field that is
/// set is reported once at start-up as not implemented.
const HONOURED: &[&str] = &[
    "healthEnabled",
    "healthHost",
    "healthPort",
    "prometheusMetricsEnabled",
    "prometheusMetricsHost",
    "prometheusMetricsPort",
    "logSeverityScreen",
    "nftablesRefreshInterval",
    "routeRefreshInterval",
    "routeSyncDisabled",
    "vxlanEnabled",
    "vxlanVNI",
    "vxlanPort",
    "vxlanMTU",
    "vxlanMTUV6",
    "mtuIfacePattern",
    "defaultEndpointToHostAction",
    "allowVXLANPacketsFromWorkloads",
    "allowIPIPPacketsFromWorkloads",
    "workloadSourceSpoofing",
    "flowLogsFileEnabled",
    "flowLogsFileDirectory",
    "flowLogsFileAggregationKindForAllowed",
    "flowLogsFileAggregationKindForDenied",
    "flowLogsPolicyEvaluationMode",
    "flowLogsCollectorDebugTrace",
    "flowLogsLocalReporter",
    "flowLogsFlushInterval",
    "flowLogsGoldmaneServer",
    "natOutgoingAddress",
    "natPortRange",
    "failsafeInboundHostPorts",
    "failsafeOutboundHostPorts",
    // Accepted and matching what this agent does anyway.
    "nftablesMode",
    "bpfEnabled",
    "ipv6Support",
];

impl Config {
    /// Resolves the settings from the overrides and the two
    /// FelixConfiguration resources (`node.<node>` and `default`), and lists
    /// the set fields that are not implemented (`name.field`).
    pub fn resolve(
        o: &Overrides,
        node: Option<&FelixConfigurationSpec>,
        global: Option<&FelixConfigurationSpec>,
    ) -> (Config, Vec<String>) {
        let layers: Vec<&FelixConfigurationSpec> = node.into_iter().chain(global).collect();
        let b = |f: &str| layers.iter().find_map(|s| s.get_bool(f));
        let s = |f: &str| layers.iter().find_map(|s| s.get_str(f).map(str::to_string));
        let port = |f: &str| {
            layers
                .iter()
                .find_map(|s| s.get_int(f).and_then(|p| u16::try_from(p).ok()))
        };
        let int = |f: &str| {
            layers
                .iter()
                .find_map(|s| s.get_int(f).and_then(|v| u32::try_from(v).ok()))
        };
        let d = |f: &str| layers.iter().find_map(|s| s.get_duration(f));
        let secs = |v: Option<u64>| v.map(Duration::from_secs);
        let addr = |f: &str| {
            layers.iter().find_map(|s| {
                s.get_str(f)
                    .and_then(|v| v.parse::<std::net::IpAddr>().ok())
            })
        };
        let failsafe = |o: &Option<Failsafe>, f: &str, inbound: bool| {
            o.as_ref()
                .map(|f| f.0.clone())
                .or_else(|| layers.iter().find_map(|s| s.get_proto_ports(f)))
                .unwrap_or_else(|| calico_api::failsafe_defaults(inbound))
        };
        let config = Config {
            failsafe_in: failsafe(
                &o.failsafe_inbound_host_ports,
                "failsafeInboundHostPorts",
                true,
            ),
            failsafe_out: failsafe(
                &o.failsafe_outbound_host_ports,
                "failsafeOutboundHostPorts",
                false,
            ),
            nat_outgoing_address: o.nat_outgoing_address.or(addr("natOutgoingAddress")),
            nat_port_range: o
                .nat_port_range
                .or_else(|| layers.iter().find_map(|s| s.get_port_range("natPortRange"))),
            health_enabled: o.health_enabled.or(b("healthEnabled")).unwrap_or(true),
            health_host: o
                .health_host
                .clone()
                .or(s("healthHost"))
                .unwrap_or_else(|| "localhost".into()),
            health_port: o.health_port.or(port("healthPort")).unwrap_or(9099),
            metrics_enabled: o
                .prometheus_metrics_enabled
                .or(b("prometheusMetricsEnabled"))
                .unwrap_or(false),
            metrics_host: o
                .prometheus_metrics_host
                .clone()
                .or(s("prometheusMetricsHost"))
                .unwrap_or_default(),
            metrics_port: o
                .prometheus_metrics_port
                .or(port("prometheusMetricsPort"))
                .unwrap_or(9091),
            log_level: o
                .log_severity_screen
                .clone()
                .or(s("logSeverityScreen"))
                .unwrap_or_else(|| "Info".into()),
            nftables_refresh: secs(o.nftables_refresh_interval)
                .or(d("nftablesRefreshInterval"))
                .unwrap_or(Duration::from_secs(90)),
            route_refresh: secs(o.route_refresh_interval)
                .or(d("routeRefreshInterval"))
                .unwrap_or(Duration::from_secs(90)),
            route_sync_disabled: o
                .route_sync_disabled
                .or(b("routeSyncDisabled"))
                .unwrap_or(false),
            vxlan_enabled: o.vxlan_enabled.or(b("vxlanEnabled")).unwrap_or(true),
            vxlan_vni: o
                .vxlan_vni
                .or(int("vxlanVNI"))
                .unwrap_or(calico_calc::overlay::DEFAULT_VNI),
            vxlan_port: o
                .vxlan_port
                .or(port("vxlanPort"))
                .unwrap_or(calico_calc::overlay::DEFAULT_PORT),
            vxlan_mtu: o.vxlan_mtu.or(int("vxlanMTU")).unwrap_or(0),
            vxlan_mtu_v6: o.vxlan_mtu_v6.or(int("vxlanMTUV6")).unwrap_or(0),
            mtu_iface_pattern: o
                .mtu_iface_pattern
                .clone()
                .or(s("mtuIfacePattern"))
                .unwrap_or_else(|| DEFAULT_MTU_IFACE_PATTERN.into()),
            // A value the API would refuse (only possible through the
            // environment) falls back to the closed choice.
            endpoint_to_host: match o
                .default_endpoint_to_host_action
                .clone()
                .or(s("defaultEndpointToHostAction"))
                .as_deref()
            {
                Some("Accept") => calico_dataplane::EndpointToHost::Accept,
                Some("Return") => calico_dataplane::EndpointToHost::Return,
                _ => calico_dataplane::EndpointToHost::Drop,
            },
            allow_vxlan_from_workloads: o
                .allow_vxlan_packets_from_workloads
                .or(b("allowVXLANPacketsFromWorkloads"))
                .unwrap_or(false),
            allow_ipip_from_workloads: o
                .allow_ipip_packets_from_workloads
                .or(b("allowIPIPPacketsFromWorkloads"))
                .unwrap_or(false),
            source_spoofing: o
                .workload_source_spoofing
                .clone()
                .or(s("workloadSourceSpoofing"))
                .is_some_and(|v| v == "Any"),
            flow_logs: {
                let file = o
                    .flow_logs_file_enabled
                    .or(b("flowLogsFileEnabled"))
                    .unwrap_or(false);
                let server = o
                    .flow_logs_goldmane_server
                    .clone()
                    .or(s("flowLogsGoldmaneServer"))
                    .filter(|v| !v.is_empty());
                (file || server.is_some()).then(|| FlowLogs {
                    directory: file.then(|| {
                        o.flow_logs_file_directory
                            .clone()
                            .or(s("flowLogsFileDirectory"))
                            .unwrap_or_else(|| "/var/log/calico/flowlogs".into())
                            .into()
                    }),
                    tls: match (
                        &o.flow_logs_goldmane_ca_file,
                        &o.flow_logs_goldmane_cert_file,
                        &o.flow_logs_goldmane_key_file,
                    ) {
                        (Some(ca), Some(cert), Some(key)) => {
                            Some((ca.clone(), cert.clone(), key.clone()))
                        }
                        _ => None,
                    },
                    server,
                    buffer: o.flow_logs_goldmane_buffer,
                    flush: secs(o.flow_logs_flush_interval)
                        .or(d("flowLogsFlushInterval"))
                        .unwrap_or(Duration::from_secs(15)),
                    pending_traces: o
                        .flow_logs_policy_evaluation_mode
                        .clone()
                        .or(s("flowLogsPolicyEvaluationMode"))
                        .is_none_or(|m| m != "None"),
                    debug_trace: o
                        .flow_logs_collector_debug_trace
                        .or(b("flowLogsCollectorDebugTrace"))
                        .unwrap_or(false),
                    aggregation: {
                        let level = |o: Option<u8>, f: &str, default| {
                            o.map(i64::from)
                                .or_else(|| layers.iter().find_map(|s| s.get_int(f)))
                                .map_or(default, crate::flows::Level::of)
                        };
                        crate::flows::Aggregation {
                            allowed: level(
                                o.flow_logs_file_aggregation_kind_for_allowed,
                                "flowLogsFileAggregationKindForAllowed",
                                crate::flows::Level::PodPrefix,
                            ),
                            denied: level(
                                o.flow_logs_file_aggregation_kind_for_denied,
                                "flowLogsFileAggregationKindForDenied",
                                crate::flows::Level::SourcePort,
                            ),
                        }
                    },
                })
            },
        };
        let mut ignored = Vec::new();
        for (name, spec) in [("node", node), ("default", global)] {
            for field in spec.iter().flat_map(|s| s.fields.keys()) {
                if !HONOURED.contains(&field.as_str()) {
                    ignored.push(format!("{name}.{field}"));
                }
            }
        }
        (config, ignored)
    }

    /// The node's part of the nft table: tunnels from workloads, source
    /// spoofing, workload-to-host traffic, and who may send VXLAN.
    pub fn node_rules(
        &self,
        vxlan: calico_dataplane::VxlanSources,
        mut nat: calico_dataplane::NatOutgoing,
    ) -> calico_dataplane::NodeRules {
        nat.to = self.nat_outgoing_address;
        nat.ports = self.nat_port_range;
        calico_dataplane::NodeRules {
            vxlan,
            nat,
            workload_vxlan_drop: (!self.allow_vxlan_from_workloads).then_some(self.vxlan_port),
            workload_ipip_drop: !self.allow_ipip_from_workloads,
            source_spoofing: self.source_spoofing,
            endpoint_to_host: self.endpoint_to_host,
            flow_logs: self.flow_logs.is_some(),
            failsafe_in: self.failsafe_in.clone(),
            failsafe_out: self.failsafe_out.clone(),
            interface_addresses: Vec::new(),
        }
    }

    /// `host:port` for the health server (an empty host means all addresses).
    pub fn health_addr(&self) -> String {
        listen_addr(&self.health_host, self.health_port)
    }

    pub fn metrics_addr(&self) -> String {
        listen_addr(&self.metrics_host, self.metrics_port)
    }

    /// The tracing level for `logSeverityScreen`.
    pub fn level(&self) -> tracing::Level {
        match self.log_level.as_str() {
            "Trace" => tracing::Level::TRACE,
            "Debug" => tracing::Level::DEBUG,
            "Warning" => tracing::Level::WARN,
            "Error" | "Fatal" | "Panic" => tracing::Level::ERROR,
            _ => tracing::Level::INFO,
        }
    }
}

fn listen_addr(host: &str, port: u16) -> String {
    let host = match host {
        "" => "0.0.0.0",
        "localhost" => "127.0.0.1",
        h => h,
    };
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nat_port_range_reads_both_spellings_and_refuses_the_rest() {
        assert_eq!(parse_port_range("32768:65535"), Ok((32768, 65535)));
        assert_eq!(parse_port_range("40000"), Ok((40000, 40000)));
        for bad in ["0:10", "10:5", "1:65536", "a:b", "", "1-2"] {
            assert!(parse_port_range(bad).is_err(), "{bad}");
        }
        let (c, ignored) = Config::resolve(
            &Overrides::default(),
            None,
            Some(&spec(serde_json::json!({"natPortRange": "40000:40009"}))),
        );
        assert_eq!(c.nat_port_range, Some((40000, 40009)));
        assert!(ignored.is_empty(), "{ignored:?}");
        let (c, _) = Config::resolve(
            &Overrides::default(),
            None,
            Some(&spec(serde_json::json!({"natPortRange": 40000}))),
        );
        assert_eq!(c.nat_port_range, Some((40000, 40000)));
    }

    #[test]
    fn failsafe_ports_read_as_felix_writes_them() {
        let p = |protocol, port, net: Option<&str>| calico_api::ProtoPort {
            protocol,
            port,
            net: net.map(|n| n.parse().expect("net")),
        };
        assert_eq!(parse_failsafe("none"), Ok(Failsafe(vec![])));
        assert_eq!(
            parse_failsafe("22, udp:68,TCP:10.0.0.0/8:2379,tcp:[fd00::/8]:179,tcp:fd00::/8:6443"),
            Ok(Failsafe(vec![
                p(6, 22, None),
                p(17, 68, None),
                p(6, 2379, Some("10.0.0.0/8")),
                p(6, 179, Some("fd00::/8")),
                p(6, 6443, Some("fd00::/8")),
            ]))
        );
        for bad in ["tcp:0", "icmp:22", "tcp:65536", "tcp:nonsense:22", "tcp:"] {
            assert!(parse_failsafe(bad).is_err(), "{bad}");
        }
        // Unset: Felix's defaults; a resource's list (even empty) wins.
        let (c, _) = Config::resolve(&Overrides::default(), None, None);
        assert_eq!(c.failsafe_in, calico_api::failsafe_defaults(true));
        let (c, _) = Config::resolve(
            &Overrides::default(),
            None,
            Some(&spec(
                serde_json::json!({"failsafeInboundHostPorts": [], "failsafeOutboundHostPorts": [{"protocol": "udp", "port": 53, "net": "10.0.0.0/8"}]}),
            )),
        );
        assert!(c.failsafe_in.is_empty());
        assert_eq!(c.failsafe_out, vec![p(17, 53, Some("10.0.0.0/8"))]);
    }

    #[test]
    fn flow_log_aggregation_levels_default_to_calicos_and_follow_the_layers() {
        use crate::flows::{Aggregation, Level};
        let on = serde_json::json!({"flowLogsFileEnabled": true});
        let (c, _) = Config::resolve(&Overrides::default(), None, Some(&spec(on.clone())));
        assert_eq!(
            c.flow_logs.map(|f| f.aggregation),
            Some(Aggregation {
                allowed: Level::PodPrefix,
                denied: Level::SourcePort
            })
        );
        let global = spec(serde_json::json!({
            "flowLogsFileEnabled": true,
            "flowLogsFileAggregationKindForAllowed": 1,
            "flowLogsFileAggregationKindForDenied": 2
        }));
        let node = spec(serde_json::json!({
            "flowLogsFileAggregationKindForAllowed": 0,
            "flowLogsPolicyEvaluationMode": "None",
            "flowLogsCollectorDebugTrace": true,
            "flowLogsLocalReporter": "Disabled"
        }));
        let (c, ignored) = Config::resolve(&Overrides::default(), Some(&node), Some(&global));
        assert!(ignored.is_empty(), "{ignored:?}");
        let f = c.flow_logs.clone().expect("on");
        assert_eq!((f.pending_traces, f.debug_trace), (false, true));
        let (c, _) = Config::resolve(&Overrides::default(), None, Some(&global));
        let f = c.flow_logs.clone().expect("on");
        assert_eq!(
            (f.pending_traces, f.debug_trace),
            (true, false),
            "Calico's defaults"
        );
        let (c, _) = Config::resolve(&Overrides::default(), Some(&node), Some(&global));
        assert_eq!(
            c.flow_logs.map(|f| f.aggregation),
            Some(Aggregation {
                allowed: Level::None,
                denied: Level::PodPrefix
            })
        );
        let env = Overrides {
            flow_logs_file_aggregation_kind_for_denied: Some(0),
            ..Overrides::default()
        };
        let (c, _) = Config::resolve(&env, Some(&node), Some(&global));
        assert_eq!(c.flow_logs.map(|f| f.aggregation.denied), Some(Level::None));
        // The environment is held to the API's range.
        use clap::Parser;
        let args = |v: &str| {
            #[derive(clap::Parser)]
            struct Args {
                #[command(flatten)]
                o: Overrides,
            }
            Args::try_parse_from(["x", "--flow-logs-file-aggregation-kind-for-allowed", v])
                .map(|a| a.o)
        };
        assert!(args("3").is_err());
        assert_eq!(
            args("1")
                .map(|o| o.flow_logs_file_aggregation_kind_for_allowed)
                .ok(),
            Some(Some(1))
        );
    }

    fn spec(json: serde_json::Value) -> FelixConfigurationSpec {
        serde_json::from_value(json).expect("spec")
    }

    #[test]
    fn environment_beats_node_beats_default_beats_builtin() {
        let global = spec(serde_json::json!({
            "healthPort": 9100, "prometheusMetricsEnabled": true,
            "logSeverityScreen": "Warning", "routeRefreshInterval": "0.5m",
            "vxlanVNI": 4097, "vxlanMTU": 1400, "wireguardMTU": 1400
        }));
        // Go's syntax, fractions included (what validation accepts is used).
        let node =
            spec(serde_json::json!({"healthPort": 9200, "nftablesRefreshInterval": "1m30s"}));
        let (c, ignored) = Config::resolve(&Overrides::default(), None, None);
        assert_eq!(
            (c.health_port, c.metrics_enabled, c.metrics_port),
            (9099, false, 9091)
        );
        assert_eq!(c.health_addr(), "127.0.0.1:9099");
        assert!(ignored.is_empty());

        let (c, ignored) = Config::resolve(&Overrides::default(), Some(&node), Some(&global));
        assert_eq!(c.health_port, 9200);
        assert!(c.metrics_enabled);
        assert_eq!(c.level(), tracing::Level::WARN);
        assert_eq!(c.route_refresh, Duration::from_secs(30));
        assert_eq!(c.nftables_refresh, Duration::from_secs(90));
        assert_eq!(ignored, vec!["default.wireguardMTU"]);
        assert_eq!((c.vxlan_vni, c.vxlan_port), (4097, 4789));
        assert_eq!((c.vxlan_mtu, c.vxlan_mtu_v6), (1400, 0));
        assert_eq!(c.mtu_iface_pattern, DEFAULT_MTU_IFACE_PATTERN);

        let o = Overrides {
            health_port: Some(9300),
            prometheus_metrics_enabled: Some(false),
            route_refresh_interval: Some(5),
            vxlan_mtu: Some(1300),
            ..Overrides::default()
        };
        let (c, _) = Config::resolve(&o, Some(&node), Some(&global));
        assert_eq!(c.health_port, 9300);
        assert!(!c.metrics_enabled);
        assert_eq!(c.route_refresh, Duration::from_secs(5));
        assert_eq!(c.vxlan_mtu, 1300);
        assert_eq!(c.metrics_addr(), "0.0.0.0:9091");
    }
}
