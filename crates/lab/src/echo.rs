//! The pods' server and the probe's client: TCP answers `ok` and closes,
//! UDP answers each datagram with `ok`. Both run inside a pod's namespace
//! (`calico-lab serve`, `calico-lab connect`).

use anyhow::{bail, Context, Result};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::Duration;

/// The answer: `ok`, or with `tell_peer` `ok <the address it came from>`.
fn answer(tell_peer: bool, from: Option<SocketAddr>) -> Vec<u8> {
    match (tell_peer, from) {
        (true, Some(a)) => format!("ok {}", a.ip().to_canonical()).into_bytes(),
        _ => b"ok".to_vec(),
    }
}

/// Serves the ports until killed; one thread per port.
pub fn serve(tcp: &[u16], udp: &[u16], tell_peer: bool) -> Result<()> {
    let mut threads = Vec::new();
    for &p in tcp {
        // Both families on one socket (a v4 peer reads back as itself).
        let l = TcpListener::bind(("::", p)).with_context(|| format!("TCP port {p}"))?;
        threads.push(std::thread::spawn(move || {
            for mut c in l.incoming().flatten() {
                let _ = c.write_all(&answer(tell_peer, c.peer_addr().ok()));
            }
        }));
    }
    for &p in udp {
        let s = UdpSocket::bind(("::", p)).with_context(|| format!("UDP port {p}"))?;
        threads.push(std::thread::spawn(move || {
            let mut buf = [0u8; 64];
            while let Ok((_, from)) = s.recv_from(&mut buf) {
                let _ = s.send_to(&answer(tell_peer, Some(from)), from);
            }
        }));
    }
    for t in threads {
        let _ = t.join();
    }
    Ok(())
}

/// What a probe saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The server answered `ok`.
    Allowed,
    /// Nothing listens there: a TCP reset or an ICMP port unreachable came
    /// back (so the packet was not dropped on the way).
    Refused,
    /// Nothing came back within the timeout: dropped.
    Denied,
}

impl Outcome {
    pub fn word(self) -> &'static str {
        match self {
            Outcome::Allowed => "allowed",
            Outcome::Refused => "refused",
            Outcome::Denied => "denied",
        }
    }

    /// The `calico-lab connect` exit code: 0, 2, 1.
    pub fn code(self) -> u8 {
        match self {
            Outcome::Allowed => 0,
            Outcome::Denied => 1,
            Outcome::Refused => 2,
        }
    }

    pub fn from_code(code: i32) -> Option<Outcome> {
        match code {
            0 => Some(Outcome::Allowed),
            1 => Some(Outcome::Denied),
            2 => Some(Outcome::Refused),
            _ => None,
        }
    }
}

fn refused(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::ConnectionRefused
}

/// An answer read: allowed if it is `ok`, with the address the server
/// says it saw (`ok <address>`) if it says one.
fn read_answer(buf: &[u8]) -> Option<Option<String>> {
    let rest = buf.strip_prefix(b"ok")?;
    let seen = std::str::from_utf8(rest).ok()?.trim();
    if seen.is_empty() {
        return Some(None);
    }
    seen.parse::<std::net::IpAddr>()
        .ok()
        .map(|a| Some(a.to_string()))
}

/// Whether `addr` answers `ok` over `protocol` within the timeout, refuses
/// (reset, port unreachable), or says nothing (twice tried for UDP, whose
/// datagrams may be lost); and the address the server saw, when it says.
pub fn connect(
    addr: SocketAddr,
    protocol: &str,
    timeout: Duration,
) -> Result<(Outcome, Option<String>)> {
    match protocol {
        "TCP" => {
            let mut s = match TcpStream::connect_timeout(&addr, timeout) {
                Ok(s) => s,
                Err(e) if refused(&e) => return Ok((Outcome::Refused, None)),
                Err(_) => return Ok((Outcome::Denied, None)),
            };
            s.set_read_timeout(Some(timeout))?;
            let mut buf = Vec::new();
            let read = (&mut s).take(64).read_to_end(&mut buf);
            Ok(match read {
                Ok(_) => match read_answer(&buf) {
                    Some(seen) => (Outcome::Allowed, seen),
                    None => (Outcome::Denied, None),
                },
                Err(e) if refused(&e) || e.kind() == std::io::ErrorKind::ConnectionReset => {
                    (Outcome::Refused, None)
                }
                _ => (Outcome::Denied, None),
            })
        }
        "UDP" => {
            let s = if addr.is_ipv4() {
                UdpSocket::bind(("0.0.0.0", 0))?
            } else {
                UdpSocket::bind(("::", 0))?
            };
            // Connected, so that an ICMP port unreachable comes back as an error.
            s.connect(addr)?;
            s.set_read_timeout(Some(timeout / 2))?;
            for _ in 0..2 {
                match s.send(b"x") {
                    Err(e) if refused(&e) => return Ok((Outcome::Refused, None)),
                    _ => {}
                }
                let mut buf = [0u8; 64];
                match s.recv(&mut buf) {
                    Ok(n) => {
                        if let Some(seen) = read_answer(&buf[..n]) {
                            return Ok((Outcome::Allowed, seen));
                        }
                    }
                    Err(e) if refused(&e) => return Ok((Outcome::Refused, None)),
                    _ => {}
                }
            }
            Ok((Outcome::Denied, None))
        }
        other => bail!("protocol {other:?}: TCP or UDP"),
    }
}
