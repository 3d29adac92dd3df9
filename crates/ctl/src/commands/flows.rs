//! `calicoctl flows`: flow records from the flow service's HTTP API
//! (`calico-flows`), filtered as the API filters, as a table or JSON;
//! `--follow` keeps printing new ones from the live stream.

use anyhow::{bail, Context, Result};
use calico_flows::query::Query;
use calico_flows::{Flow, TraceEntry};
use clap::{Args, ValueEnum};
use std::io::{BufRead, BufReader, Write};
use std::process::ExitCode;
use std::time::Duration;

#[derive(Args, Debug)]
pub struct FlowsArgs {
    /// The flow service's HTTP address.
    #[arg(
        long,
        env = "CALICO_FLOWS_URL",
        default_value = "http://127.0.0.1:8081"
    )]
    server: String,
    /// Either end's namespace.
    #[arg(long, short = 'n')]
    namespace: Option<String>,
    /// Either end's name (a pod, or pub/pvt for outside addresses).
    #[arg(long)]
    name: Option<String>,
    #[arg(long)]
    source_namespace: Option<String>,
    #[arg(long)]
    source_name: Option<String>,
    #[arg(long)]
    dest_namespace: Option<String>,
    #[arg(long)]
    dest_name: Option<String>,
    /// allow, deny or pass.
    #[arg(long)]
    action: Option<String>,
    /// src (the source's egress decided) or dst (the destination's ingress).
    #[arg(long)]
    reporter: Option<String>,
    /// A policy in the trace: NAMESPACE/NAME, a global policy's name, or
    /// `__PROFILE__.<profile>`.
    #[arg(long)]
    policy: Option<String>,
    #[arg(long)]
    tier: Option<String>,
    /// Destination port.
    #[arg(long)]
    port: Option<u16>,
    #[arg(long)]
    protocol: Option<String>,
    /// The reporting node.
    #[arg(long)]
    node: Option<String>,
    /// KEY=VALUE: a label of either end (repeatable; all must hold).
    #[arg(long = "label", short = 'l')]
    labels: Vec<String>,
    /// Only flows of the last DURATION (e.g. 15m, 2h).
    #[arg(long, value_parser = humantime::parse_duration)]
    since: Option<Duration>,
    /// At most this many flows (1 to 1000).
    #[arg(long, default_value_t = 100)]
    limit: u32,
    /// newest (default), oldest or packets.
    #[arg(long, default_value = "newest")]
    sort: String,
    /// After the latest flows, keep printing new ones as they arrive.
    #[arg(long, short = 'f')]
    follow: bool,
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Output::Table)]
    output: Output,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Output {
    Table,
    Wide,
    Json,
}

fn query(a: &FlowsArgs, now: u64) -> Result<Query> {
    let mut pairs: Vec<(&str, String)> = Vec::new();
    let mut put = |k, v: &Option<String>| {
        if let Some(v) = v {
            pairs.push((k, v.clone()));
        }
    };
    put("namespace", &a.namespace);
    put("name", &a.name);
    put("source_namespace", &a.source_namespace);
    put("source_name", &a.source_name);
    put("dest_namespace", &a.dest_namespace);
    put("dest_name", &a.dest_name);
    put("action", &a.action);
    put("reporter", &a.reporter);
    put("policy", &a.policy);
    put("tier", &a.tier);
    put("proto", &a.protocol);
    put("node", &a.node);
    put("port", &a.port.map(|p| p.to_string()));
    put(
        "from",
        &a.since.map(|d| now.saturating_sub(d.as_secs()).to_string()),
    );
    for l in &a.labels {
        pairs.push(("label", l.clone()));
    }
    pairs.push(("limit", a.limit.to_string()));
    pairs.push(("sort", a.sort.clone()));
    Ok(Query::from_pairs(pairs)?)
}

/// `tier/policy rule N → action` for each entry of a trace.
fn trace(t: &[String]) -> String {
    if t.is_empty() {
        return "-".into();
    }
    t.iter()
        .map(|e| TraceEntry::parse(e).map_or_else(|| e.clone(), |e| e.readable()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `namespace/name`, with the address (and the source port, where the
/// node kept them) after it: `shop/web(10.0.0.1:40000)`.
fn endpoint(
    namespace: &str,
    name: &str,
    ip: Option<std::net::IpAddr>,
    port: Option<u16>,
) -> String {
    let id = if namespace == "-" || namespace.is_empty() {
        name.to_string()
    } else {
        format!("{namespace}/{name}")
    };
    match (ip, port) {
        (Some(ip), Some(p)) => format!("{id}({})", std::net::SocketAddr::new(ip, p)),
        (Some(ip), None) => format!("{id}({ip})"),
        (None, Some(p)) => format!("{id}(:{p})"),
        (None, None) => id,
    }
}

fn clock(t: u64) -> String {
    let s = t % 86_400;
    format!("{:02}:{:02}:{:02}", s / 3600, s % 3600 / 60, s % 60)
}

fn cells(f: &Flow, wide: bool) -> Vec<String> {
    let port = match f.dest_port {
        Some(p) => format!("{}/{p}", f.proto),
        None => f.proto.clone(),
    };
    let mut row = vec![
        endpoint(
            &f.source_namespace,
            &f.source_name,
            f.source_ip,
            f.source_port,
        ),
        endpoint(&f.dest_namespace, &f.dest_name, f.dest_ip, None),
        port,
        f.action.to_uppercase(),
        f.reporter.clone(),
        trace(&f.policies),
    ];
    if wide {
        row.splice(
            0..0,
            [
                format!("{}-{} UTC", clock(f.start_time), clock(f.end_time)),
                f.node.clone(),
            ],
        );
        row.extend([
            format!("{}/{}", f.packets_in, f.packets_out),
            format!("{}/{}", f.bytes_in, f.bytes_out),
            f.num_flows.to_string(),
            trace(&f.pending_policies),
        ]);
    }
    row
}

fn header(wide: bool) -> Vec<String> {
    let mut h = vec![
        "SOURCE",
        "DESTINATION",
        "PORT",
        "ACTION",
        "REPORTER",
        "POLICIES",
    ];
    if wide {
        h.splice(0..0, ["TIME", "NODE"]);
        h.extend(["PACKETS IN/OUT", "BYTES IN/OUT", "CONNECTIONS", "PENDING"]);
    }
    h.into_iter().map(String::from).collect()
}

/// Rows aligned in columns, three spaces apart.
fn table(rows: &[Vec<String>]) -> String {
    let n = rows.first().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..n)
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(line.join("   ").trim_end());
        out.push('\n');
    }
    out
}

fn agent(timeout: Option<Duration>) -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(timeout)
        .timeout_connect(Some(Duration::from_secs(5)))
        .build()
        .into()
}

fn get(server: &str, path: &str, q: &Query, timeout: Option<Duration>) -> Result<ureq::Body> {
    let url = format!(
        "{}{path}?{}",
        server.trim_end_matches('/'),
        q.to_query_string()
    );
    let mut r = agent(timeout)
        .get(&url)
        .call()
        .with_context(|| format!("reaching the flow service at {server}"))?;
    if !r.status().is_success() {
        let body = r.body_mut().read_to_string().unwrap_or_default();
        let why = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["error"].as_str().map(String::from))
            .unwrap_or(body);
        bail!("the flow service says {}: {why}", r.status());
    }
    Ok(r.into_body())
}

#[allow(clippy::disallowed_methods)] // the command's own clock, for --since
fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

pub fn run(a: &FlowsArgs) -> Result<ExitCode> {
    let mut q = query(a, now())?;
    let wide = a.output == Output::Wide;
    let body = get(
        &a.server,
        "/api/v1/flows",
        &q,
        Some(Duration::from_secs(60)),
    )?;
    let page: serde_json::Value =
        serde_json::from_reader(body.into_reader()).context("reading the flow service's answer")?;
    let mut flows: Vec<Flow> = serde_json::from_value(page["flows"].clone())
        .context("reading the flow service's answer")?;
    let mut out = std::io::stdout().lock();
    if a.follow {
        // Oldest first, then new ones as they come.
        flows.reverse();
    }
    match a.output {
        Output::Json if !a.follow => {
            writeln!(out, "{}", serde_json::to_string_pretty(&flows)?)?;
        }
        Output::Json => {
            for f in &flows {
                writeln!(out, "{}", serde_json::to_string(f)?)?;
            }
        }
        _ => {
            let mut rows = vec![header(wide)];
            rows.extend(flows.iter().map(|f| cells(f, wide)));
            write!(out, "{}", table(&rows))?;
        }
    }
    out.flush()?;
    if !a.follow {
        return Ok(ExitCode::SUCCESS);
    }
    q.filter.from = None;
    let stream = get(&a.server, "/api/v1/flows/stream", &q, None)?;
    let mut event = String::new();
    for line in BufReader::new(stream.into_reader()).lines() {
        let line = line.context("reading the live stream")?;
        if let Some(e) = line.strip_prefix("event: ") {
            event = e.to_string();
        } else if let Some(data) = line.strip_prefix("data: ") {
            match event.as_str() {
                "flow" => {
                    let f: Flow =
                        serde_json::from_str(data).context("a flow from the live stream")?;
                    if a.output == Output::Json {
                        writeln!(out, "{data}")?;
                    } else {
                        // Columns are not aligned across rows here: they arrive one by one.
                        writeln!(out, "{}", cells(&f, wide).join("   "))?;
                    }
                    out.flush()?;
                }
                "lagged" => eprintln!("(missed {data} flows: this reader fell behind)"),
                _ => {}
            }
        }
    }
    bail!("the flow service ended the live stream")
}
