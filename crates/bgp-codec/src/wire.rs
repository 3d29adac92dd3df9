//! A bounds-checked reader over a byte slice: every read that would run
//! past the end returns the error the caller chose.

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use std::net::{Ipv4Addr, Ipv6Addr};

pub(crate) struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
    pub fn remaining(&self) -> usize {
        self.buf.len()
    }
    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.buf)
    }
    pub fn take<E>(&mut self, n: usize, err: impl FnOnce() -> E) -> Result<&'a [u8], E> {
        if n > self.buf.len() {
            return Err(err());
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }
    pub fn u8<E>(&mut self, err: impl FnOnce() -> E) -> Result<u8, E> {
        Ok(self.take(1, err)?[0])
    }
    pub fn u16<E>(&mut self, err: impl FnOnce() -> E) -> Result<u16, E> {
        let b = self.take(2, err)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    pub fn u32<E>(&mut self, err: impl FnOnce() -> E) -> Result<u32, E> {
        let b = self.take(4, err)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    pub fn ipv4<E>(&mut self, err: impl FnOnce() -> E) -> Result<Ipv4Addr, E> {
        let b = self.take(4, err)?;
        Ok(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
    }
    pub fn ipv6<E>(&mut self, err: impl FnOnce() -> E) -> Result<Ipv6Addr, E> {
        let b = self.take(16, err)?;
        let mut a = [0u8; 16];
        a.copy_from_slice(b);
        Ok(Ipv6Addr::from(a))
    }
}

/// Reads prefixes (length byte, then just enough bytes) until the input
/// ends. Host bits beyond the length must be zero on the wire only by
/// convention; they are cleared here.
pub(crate) fn read_prefixes<E: Clone>(buf: &[u8], v6: bool, err: E) -> Result<Vec<IpNet>, E> {
    let mut r = Reader::new(buf);
    let mut out = Vec::new();
    let max = if v6 { 128 } else { 32 };
    while !r.is_empty() {
        let len = r.u8(|| err.clone())?;
        if len > max {
            return Err(err);
        }
        let bytes = r.take(usize::from(len).div_ceil(8), || err.clone())?;
        let net = if v6 {
            let mut a = [0u8; 16];
            a[..bytes.len()].copy_from_slice(bytes);
            Ipv6Net::new(Ipv6Addr::from(a), len)
                .map(|n| IpNet::V6(n.trunc()))
                .map_err(|_| err.clone())?
        } else {
            let mut a = [0u8; 4];
            a[..bytes.len()].copy_from_slice(bytes);
            Ipv4Net::new(Ipv4Addr::from(a), len)
                .map(|n| IpNet::V4(n.trunc()))
                .map_err(|_| err.clone())?
        };
        out.push(net);
    }
    Ok(out)
}

pub(crate) fn write_prefix(out: &mut Vec<u8>, net: &IpNet) {
    let len = net.prefix_len();
    out.push(len);
    let n = usize::from(len).div_ceil(8);
    match net.network() {
        std::net::IpAddr::V4(a) => out.extend_from_slice(&a.octets()[..n]),
        std::net::IpAddr::V6(a) => out.extend_from_slice(&a.octets()[..n]),
    }
}
