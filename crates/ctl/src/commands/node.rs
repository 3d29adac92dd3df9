//! `calicoctl node status`: the BGP sessions of the node this runs on, read
//! from calico-node's status socket, printed as Calico prints them (plus
//! prefixes received and advertised).

use anyhow::{Context, Result};
use serde_json::Value;
use std::io::Read;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(clap::Subcommand, Debug)]
pub enum NodeCommand {
    /// BGP sessions of the calico-node running here.
    Status(StatusArgs),
}

#[derive(clap::Args, Debug)]
pub struct StatusArgs {
    /// calico-node's BGP status socket.
    #[arg(
        long,
        env = "CALICO_BGP_STATUS_SOCKET",
        default_value = "/var/run/calico/bgp.sock"
    )]
    pub socket: String,
    /// Print the status as JSON.
    #[arg(short = 'o', long = "output", default_value = "table", value_parser = ["table", "json"])]
    pub output: String,
}

pub fn run(cmd: &NodeCommand) -> Result<ExitCode> {
    match cmd {
        NodeCommand::Status(a) => status(a),
    }
}

fn read(socket: &str) -> Result<Option<Value>> {
    let Ok(mut conn) = std::os::unix::net::UnixStream::connect(socket) else {
        return Ok(None);
    };
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut text = String::new();
    conn.read_to_string(&mut text)
        .with_context(|| format!("reading {socket}"))?;
    Ok(Some(
        serde_json::from_str(&text).with_context(|| format!("status from {socket}"))?,
    ))
}

/// HH:MM:SS (UTC) within the last day, else the date.
fn since(secs: u64) -> String {
    let at = UNIX_EPOCH + Duration::from_secs(secs);
    let text = humantime::format_rfc3339_seconds(at).to_string();
    let recent = SystemTime::now()
        .duration_since(at)
        .is_ok_and(|d| d < Duration::from_secs(86_400));
    if recent {
        text.get(11..19).unwrap_or(&text).to_string()
    } else {
        text.get(..10).unwrap_or(&text).to_string()
    }
}

fn table(rows: &[Vec<String>]) -> String {
    let header = [
        "PEER ADDRESS",
        "PEER TYPE",
        "STATE",
        "SINCE",
        "INFO",
        "RECEIVED",
        "ADVERTISED",
    ];
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    let line: String = widths
        .iter()
        .map(|w| format!("+{}", "-".repeat(w + 2)))
        .collect::<String>()
        + "+\n";
    let row = |cells: &[String]| {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("| {c:<w$} "))
            .collect::<String>()
            + "|\n"
    };
    let mut out = line.clone();
    out += &row(&header.map(str::to_string));
    out += &line;
    for r in rows {
        out += &row(r);
    }
    out + &line
}

fn status(a: &StatusArgs) -> Result<ExitCode> {
    let Some(v) = read(&a.socket)? else {
        println!("Calico process is not running.");
        return Ok(ExitCode::FAILURE);
    };
    if a.output == "json" {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("Calico process is running.\n");
    let peers = v["status"]["peers"].as_array().cloned().unwrap_or_default();
    for (family, v6) in [("IPv4", false), ("IPv6", true)] {
        println!("{family} BGP status");
        let rows: Vec<Vec<String>> = peers
            .iter()
            .filter(|p| p["address"].as_str().is_some_and(|s| s.contains(':') == v6))
            .map(|p| {
                let state = p["state"].as_str().unwrap_or("");
                let kind = match p["kind"].as_str().unwrap_or("") {
                    "node-to-node-mesh" => "node-to-node mesh",
                    "global" => "global",
                    _ => "node specific",
                };
                let info = match (state, p["info"].as_str().unwrap_or("")) {
                    (s, "") => s.to_string(),
                    (_, i) => i.to_string(),
                };
                vec![
                    p["address"].as_str().unwrap_or("").to_string(),
                    kind.to_string(),
                    if state == "Established" {
                        "up"
                    } else {
                        "start"
                    }
                    .to_string(),
                    since(p["since"].as_u64().unwrap_or(0)),
                    info,
                    p["received"].as_u64().unwrap_or(0).to_string(),
                    p["advertised"].as_u64().unwrap_or(0).to_string(),
                ]
            })
            .collect();
        if rows.is_empty() {
            println!("No {family} peers found.\n");
        } else {
            println!("{}", table(&rows));
        }
    }
    Ok(ExitCode::SUCCESS)
}
