//! The connection tracker's table with its counters: what flow records
//! take their packet and byte counts from. Read with conntrack-tools'
//! `conntrack -L -o extended,id` in this process's network namespace
//! (accounting must be on: `net.netfilter.nf_conntrack_acct = 1`); every
//! line is parsed strictly, and a line that does not read is skipped and
//! counted, never guessed at.

use std::net::IpAddr;
use std::process::Command;

/// A connection's original-direction addresses and ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnTuple {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub proto: u8,
    pub sport: Option<u16>,
    pub dport: Option<u16>,
}

/// One tracked connection and its counters in each direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conn {
    pub id: u64,
    pub tuple: ConnTuple,
    /// Source to destination.
    pub orig_packets: u64,
    pub orig_bytes: u64,
    /// Destination back to source.
    pub reply_packets: u64,
    pub reply_bytes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ConntrackError {
    #[error("running conntrack")]
    Run(#[source] std::io::Error),
    #[error("conntrack -L failed: {0}")]
    Failed(String),
}

/// The table as listed, and how many lines did not read.
#[derive(Debug, Default)]
pub struct Table {
    pub conns: Vec<Conn>,
    pub unreadable: u64,
}

/// Lists this namespace's connections with their counters.
pub fn list() -> Result<Table, ConntrackError> {
    let out = Command::new("conntrack")
        .args(["-L", "-o", "extended,id"])
        .output()
        .map_err(ConntrackError::Run)?;
    if !out.status.success() {
        return Err(ConntrackError::Failed(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ));
    }
    Ok(parse(&String::from_utf8_lossy(&out.stdout)))
}

/// Reads `conntrack -L -o extended,id` output.
pub fn parse(text: &str) -> Table {
    let mut t = Table::default();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        match parse_line(line) {
            Some(c) => t.conns.push(c),
            None => t.unreadable += 1,
        }
    }
    t
}

/// `ipv4 2 tcp 6 117 TIME_WAIT src=… dst=… sport=… dport=… packets=… bytes=…
/// src=… dst=… sport=… dport=… packets=… bytes=… [ASSURED] mark=0 use=1 id=…`
fn parse_line(line: &str) -> Option<Conn> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let proto: u8 = words.get(3)?.parse().ok()?;
    let mut srcs = Vec::new();
    let mut dsts = Vec::new();
    let mut sports = Vec::new();
    let mut dports = Vec::new();
    let mut packets = Vec::new();
    let mut bytes = Vec::new();
    let mut id = None;
    for w in &words[4..] {
        let Some((k, v)) = w.split_once('=') else {
            continue;
        };
        match k {
            "src" => srcs.push(v.parse::<IpAddr>().ok()?),
            "dst" => dsts.push(v.parse::<IpAddr>().ok()?),
            "sport" => sports.push(v.parse::<u16>().ok()?),
            "dport" => dports.push(v.parse::<u16>().ok()?),
            "packets" => packets.push(v.parse::<u64>().ok()?),
            "bytes" => bytes.push(v.parse::<u64>().ok()?),
            "id" => id = Some(v.parse::<u64>().ok()?),
            _ => {}
        }
    }
    // Both directions' addresses, and counters for both (accounting on).
    if srcs.len() != 2 || dsts.len() != 2 || packets.len() != 2 || bytes.len() != 2 {
        return None;
    }
    let ports = sports.len() == 2 && dports.len() == 2;
    Some(Conn {
        id: id?,
        tuple: ConnTuple {
            src: srcs[0],
            dst: dsts[0],
            proto,
            sport: ports.then(|| sports[0]),
            dport: ports.then(|| dports[0]),
        },
        orig_packets: packets[0],
        orig_bytes: bytes[0],
        reply_packets: packets[1],
        reply_bytes: bytes[1],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_read_strictly() {
        let t = parse(
            "ipv4     2 tcp      6 117 TIME_WAIT src=10.244.0.1 dst=10.244.1.1 sport=40000 dport=80 packets=6 bytes=360 src=10.244.1.1 dst=10.244.0.1 sport=80 dport=40000 packets=4 bytes=280 [ASSURED] mark=0 use=1 id=3735928559\n\
             ipv4     2 udp      17 29 src=10.244.0.1 dst=10.96.0.10 sport=5353 dport=53 packets=1 bytes=60 src=10.96.0.10 dst=10.244.0.1 sport=53 dport=5353 packets=1 bytes=120 mark=0 use=1 id=7\n\
             ipv4     2 icmp     1 29 src=10.244.0.1 dst=10.244.1.1 type=8 code=0 id=9 packets=1 bytes=84 src=10.244.1.1 dst=10.244.0.1 type=0 code=0 id=9 packets=1 bytes=84 mark=0 use=1 id=11\n\
             ipv4     2 tcp      6 117 TIME_WAIT src=10.244.0.1 dst=10.244.1.1 sport=40000 dport=80 src=10.244.1.1 dst=10.244.0.1 sport=80 dport=40000 [ASSURED] mark=0 use=1 id=5\n\
             ipv4     2 tcp      6 117 TIME_WAIT src=10.244.0.1 dst=nonsense sport=1 dport=2 packets=1 bytes=1 src=1.1.1.1 dst=1.1.1.1 sport=2 dport=1 packets=1 bytes=1 id=6\n",
        );
        assert_eq!(t.conns.len(), 3, "{t:?}");
        assert_eq!(
            t.unreadable, 2,
            "no counters (accounting off), a bad address"
        );
        let c = t.conns[0];
        assert_eq!(
            (c.id, c.tuple.proto, c.tuple.sport, c.tuple.dport),
            (3_735_928_559, 6, Some(40000), Some(80))
        );
        assert_eq!(
            (c.orig_packets, c.orig_bytes, c.reply_packets, c.reply_bytes),
            (6, 360, 4, 280)
        );
        let icmp = t.conns[2];
        assert_eq!(
            (icmp.id, icmp.tuple.sport, icmp.orig_bytes),
            (11, None, 84),
            "the last id= is the connection's"
        );
    }
}
