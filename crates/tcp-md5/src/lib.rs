//! TCP MD5 signatures (RFC 2385), as BGP passwords use them: a key per
//! peer address on a socket (a listening socket answers only peers whose
//! segments carry the key; a connecting socket signs its segments).
//!
//! Linux's `struct tcp_md5sig` is written byte by byte here, so the only
//! unsafe code is the `setsockopt` call itself.

use std::io;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, BorrowedFd};

/// The longest key Linux takes (`TCP_MD5SIG_MAXKEYLEN`).
pub const MAX_KEY_LEN: usize = 80;
const TCP_MD5SIG: nix::libc::c_int = 14;
/// sockaddr_storage (128) + flags, prefixlen (1 + 1) + keylen (2) +
/// ifindex (4) + key (80).
const STRUCT_LEN: usize = 216;

fn encode(peer: IpAddr, key: &[u8]) -> [u8; STRUCT_LEN] {
    let mut b = [0u8; STRUCT_LEN];
    match peer {
        IpAddr::V4(a) => {
            b[..2].copy_from_slice(&(nix::libc::AF_INET as u16).to_ne_bytes());
            // sin_port (2 bytes, zero), then sin_addr.
            b[4..8].copy_from_slice(&a.octets());
        }
        IpAddr::V6(a) => {
            b[..2].copy_from_slice(&(nix::libc::AF_INET6 as u16).to_ne_bytes());
            // sin6_port (2), sin6_flowinfo (4), then sin6_addr.
            b[8..24].copy_from_slice(&a.octets());
        }
    }
    // flags 0, prefixlen 0 (the key is for this one address).
    let keylen = u16::try_from(key.len()).unwrap_or(0);
    b[130..132].copy_from_slice(&keylen.to_ne_bytes());
    b[136..136 + key.len()].copy_from_slice(key);
    b
}

fn setsockopt(fd: BorrowedFd<'_>, value: &[u8; STRUCT_LEN]) -> io::Result<()> {
    // SAFETY: `value` is a live, initialised buffer of exactly the length
    // passed, laid out as Linux's struct tcp_md5sig; the kernel only reads
    // it during the call, and `fd` is a valid descriptor for its duration.
    #[allow(unsafe_code)]
    let rc = unsafe {
        nix::libc::setsockopt(
            fd.as_raw_fd(),
            nix::libc::IPPROTO_TCP,
            TCP_MD5SIG,
            value.as_ptr().cast(),
            STRUCT_LEN as nix::libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Signs (and requires signatures on) TCP segments to and from `peer` on
/// this socket with `key`: 1 to 80 bytes.
pub fn set_key(fd: BorrowedFd<'_>, peer: IpAddr, key: &[u8]) -> io::Result<()> {
    if key.is_empty() || key.len() > MAX_KEY_LEN {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "a TCP MD5 key is 1 to {MAX_KEY_LEN} bytes, not {}",
                key.len()
            ),
        ));
    }
    setsockopt(fd, &encode(peer, key))
}

/// Removes `peer`'s key from this socket (no error when it had none).
pub fn clear_key(fd: BorrowedFd<'_>, peer: IpAddr) -> io::Result<()> {
    match setsockopt(fd, &encode(peer, &[])) {
        Err(e) if e.raw_os_error() == Some(nix::libc::ENOENT) => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn layout_and_limits() {
        let b = encode("10.1.2.3".parse().expect("ip"), b"pw");
        assert_eq!(&b[4..8], &[10, 1, 2, 3]);
        assert_eq!(u16::from_ne_bytes([b[130], b[131]]), 2);
        assert_eq!(&b[136..138], b"pw");
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let peer: IpAddr = "127.0.0.2".parse().expect("ip");
        set_key(l.as_fd(), peer, b"secret").expect("set");
        clear_key(l.as_fd(), peer).expect("clear");
        clear_key(l.as_fd(), peer).expect("clear twice");
        assert!(set_key(l.as_fd(), peer, &[b'x'; 81]).is_err());
        assert!(set_key(l.as_fd(), peer, b"").is_err());
    }
}
