//! The pods' server and the probe's client: TCP answers `ok` and closes,
//! UDP answers each datagram with `ok`. Both run inside a pod's namespace
//! (`calico-lab serve`, `calico-lab connect`).

use anyhow::{bail, Context, Result};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::Duration;

/// Serves the ports until killed; one thread per port.
pub fn serve(tcp: &[u16], udp: &[u16]) -> Result<()> {
    let mut threads = Vec::new();
    for &p in tcp {
        let l = TcpListener::bind(("0.0.0.0", p)).with_context(|| format!("TCP port {p}"))?;
        threads.push(std::thread::spawn(move || {
            for mut c in l.incoming().flatten() {
                let _ = c.write_all(b"ok");
            }
        }));
    }
    for &p in udp {
        let s = UdpSocket::bind(("0.0.0.0", p)).with_context(|| format!("UDP port {p}"))?;
        threads.push(std::thread::spawn(move || {
            let mut buf = [0u8; 64];
            while let Ok((_, from)) = s.recv_from(&mut buf) {
                let _ = s.send_to(b"ok", from);
            }
        }));
    }
    for t in threads {
        let _ = t.join();
    }
    Ok(())
}

/// Whether `addr` answers `ok` over `protocol` within the timeout (twice
/// tried for UDP, whose datagrams may be lost).
pub fn connect(addr: SocketAddr, protocol: &str, timeout: Duration) -> Result<bool> {
    match protocol {
        "TCP" => {
            let Ok(mut s) = TcpStream::connect_timeout(&addr, timeout) else {
                return Ok(false);
            };
            s.set_read_timeout(Some(timeout))?;
            let mut buf = [0u8; 2];
            Ok(s.read_exact(&mut buf).is_ok() && &buf == b"ok")
        }
        "UDP" => {
            let s = UdpSocket::bind(("0.0.0.0", 0))?;
            s.set_read_timeout(Some(timeout / 2))?;
            for _ in 0..2 {
                s.send_to(b"x", addr)?;
                let mut buf = [0u8; 2];
                if let Ok((n, _)) = s.recv_from(&mut buf) {
                    if &buf[..n] == b"ok" {
                        return Ok(true);
                    }
                }
            }
            Ok(false)
        }
        other => bail!("protocol {other:?}: TCP or UDP"),
    }
}
