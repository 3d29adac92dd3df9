//! Packets nftables logs to NFLOG groups (`log group N prefix "..."`), read
//! through nfnetlink_log: the group, the rule's prefix and the packet's
//! first bytes (enough for the IP and transport headers).

use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
use netlink_packet_netfilter::nflog::{config_request, ConfigCmd, ConfigMode, ConfigNla, Timeout};
use netlink_packet_netfilter::{NetfilterMessage, NetfilterProtoFamily};
use netlink_sys::{constants::NETLINK_NETFILTER, Socket};
use std::os::fd::AsFd;
use std::time::Duration;

/// Bytes of each packet copied to us: the largest IPv4 header (60 bytes)
/// plus the transport ports; an IPv6 header and its ports take 44.
const COPY_RANGE: u32 = 64;
/// Packets the kernel gathers into one message at most. A logged packet
/// takes about 230 bytes of message, so 256 of them about fill a batch.
/// Large batches matter: each message wakes the collector, and on a busy
/// node every wake-up takes a CPU from the traffic (the flow_logs
/// benchmark measures what is left; larger batches than this gained
/// nothing measurable).
const QUEUE_THRESHOLD: u32 = 256;
/// The kernel's buffer for such a message (our receive buffer is as big).
const BATCH_BYTES: u32 = 1 << 16;
/// The socket's receive buffer: batches waiting for the collector (about
/// 18,000 packets), set past `net.core.rmem_max` where we may.
const SOCKET_BYTES: usize = 4 << 20;

#[derive(Debug, thiserror::Error)]
pub enum NflogError {
    #[error("NFLOG socket")]
    Socket(#[source] std::io::Error),
    /// The kernel had more logged packets than the socket could hold:
    /// some were lost (how many, it does not say).
    #[error("NFLOG receive buffer overrun: logged packets were lost")]
    Overrun,
    #[error("binding NFLOG group {group}")]
    Bind {
        group: u16,
        #[source]
        cause: std::io::Error,
    },
}

/// One logged packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logged {
    pub group: u16,
    /// The logging rule's prefix.
    pub prefix: String,
    /// The packet's mark when it was logged (0 when it had none).
    pub mark: u32,
    /// The packet from its IP header on, at most 64 bytes.
    pub payload: Vec<u8>,
}

/// A subscription to some NFLOG groups of this network namespace.
pub struct Nflog {
    socket: Socket,
    buf: Vec<u8>,
}

impl std::fmt::Debug for Nflog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Nflog")
    }
}

impl Nflog {
    /// Subscribes to `groups`. A group has one listener at a time: binding
    /// one someone else holds fails.
    pub fn open(groups: &[u16]) -> Result<Self, NflogError> {
        let mut socket = Socket::new(NETLINK_NETFILTER).map_err(NflogError::Socket)?;
        socket.bind_auto().map_err(NflogError::Socket)?;
        receive_buffer(&socket, SOCKET_BYTES);
        let mut me = Nflog {
            socket,
            buf: vec![0; BATCH_BYTES as usize],
        };
        for &group in groups {
            // Batched: the kernel sends up to QUEUE_THRESHOLD packets in one
            // message (or what it has after 50 ms), so a burst of new
            // connections costs a wake-up per batch, not per packet.
            let timeout: Timeout = Duration::from_millis(50).into();
            let cmds = vec![
                ConfigCmd::Bind.into(),
                ConfigMode::new_packet(COPY_RANGE).into(),
                timeout.into(),
                ConfigNla::QThresh(QUEUE_THRESHOLD),
                ConfigNla::NlBufSiz(BATCH_BYTES),
            ];
            me.request(config_request(NetfilterProtoFamily::Unspec, group, cmds))
                .map_err(|cause| NflogError::Bind { group, cause })?;
        }
        Ok(me)
    }

    /// Sends a configuration request and waits for its acknowledgement.
    fn request(&mut self, msg: NetlinkMessage<NetfilterMessage>) -> std::io::Result<()> {
        let mut out = vec![0; msg.buffer_len()];
        msg.serialize(&mut out);
        self.socket.send(&out, 0)?;
        let n = self.socket.recv(&mut &mut self.buf[..], 0)?;
        match NetlinkMessage::<NetfilterMessage>::deserialize(&self.buf[..n]) {
            Ok(m) => match m.payload {
                NetlinkPayload::Error(e) => match e.code {
                    None => Ok(()),
                    Some(code) => Err(std::io::Error::from_raw_os_error(-code.get())),
                },
                _ => Ok(()),
            },
            Err(e) => Err(std::io::Error::other(e.to_string())),
        }
    }

    /// The packets logged since the last call, waiting up to `wait` for
    /// the first. Messages that are not logged packets are skipped.
    pub fn recv(&mut self, wait: Duration) -> Result<Vec<Logged>, NflogError> {
        let mut out = Vec::new();
        self.recv_each(wait, |p| {
            out.push(Logged {
                group: p.group,
                prefix: p.prefix.to_string(),
                mark: p.mark,
                payload: p.payload.to_vec(),
            });
        })?;
        Ok(out)
    }

    /// Hands each packet logged since the last call to `each`, borrowed
    /// from the receive buffer (nothing is copied or allocated per
    /// packet), waiting up to `wait` for the first; returns how many.
    /// Messages that are not logged packets, and attributes that do not
    /// read, are skipped.
    pub fn recv_each(
        &mut self,
        wait: Duration,
        mut each: impl FnMut(LoggedRef<'_>),
    ) -> Result<usize, NflogError> {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        let ms = u16::try_from(wait.as_millis()).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(self.socket.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(0) => return Ok(0),
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => return Ok(0),
            Err(e) => return Err(NflogError::Socket(e.into())),
        }
        let n = match self.socket.recv(&mut &mut self.buf[..], 0) {
            Ok(n) => n,
            Err(e) if e.raw_os_error() == Some(nix::libc::ENOBUFS) => {
                return Err(NflogError::Overrun)
            }
            Err(e) => return Err(NflogError::Socket(e)),
        };
        Ok(read_messages(&self.buf[..n.min(self.buf.len())], &mut each))
    }
}

/// Sets the socket's receive buffer to `bytes`: forced past
/// `net.core.rmem_max` (which needs CAP_NET_ADMIN, as the agent has),
/// else as large as that allows.
fn receive_buffer(socket: &Socket, bytes: usize) {
    use nix::sys::socket::{setsockopt, sockopt};
    if setsockopt(socket, sockopt::RcvBufForce, &bytes).is_err() {
        let _ = setsockopt(socket, sockopt::RcvBuf, &bytes);
    }
}

/// One logged packet, borrowed from the buffer it was received into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoggedRef<'a> {
    pub group: u16,
    /// The logging rule's prefix ("" if it was not UTF-8).
    pub prefix: &'a str,
    /// The packet's mark when it was logged (0 when it had none, or the
    /// attribute did not read).
    pub mark: u32,
    /// The packet from its IP header on, at most 64 bytes.
    pub payload: &'a [u8],
}

impl<'a> From<&'a Logged> for LoggedRef<'a> {
    fn from(p: &'a Logged) -> Self {
        LoggedRef {
            group: p.group,
            prefix: &p.prefix,
            mark: p.mark,
            payload: &p.payload,
        }
    }
}

/// `nfnetlink` message type of a logged packet: subsystem ULOG, message
/// PACKET.
const PACKET_MESSAGE: u16 =
    ((nix::libc::NFNL_SUBSYS_ULOG as u16) << 8) | nix::libc::NFULNL_MSG_PACKET as u16;

/// Walks the netlink messages in `buf`; returns how many packets it handed
/// on. A message that does not fit ends the batch.
fn read_messages(buf: &[u8], each: &mut impl FnMut(LoggedRef<'_>)) -> usize {
    let mut count = 0;
    for msg in crate::nla::messages(buf) {
        let Some((kind, payload)) = msg else { break };
        if kind == PACKET_MESSAGE {
            if let Some(p) = read_packet(payload) {
                each(p);
                count += 1;
            }
        }
    }
    count
}

/// A PACKET message's body: the `nfgenmsg` header (family, version, the
/// group in network order), then attributes, of which three are read: the
/// prefix, the mark (network order; the kernel sends it when not 0) and
/// the payload. An attribute that does not fit its message drops the
/// packet; a mark of another size reads as 0.
fn read_packet(body: &[u8]) -> Option<LoggedRef<'_>> {
    let (header, attributes) = body.split_at_checked(4)?;
    let mut p = LoggedRef {
        group: u16::from_be_bytes([header[2], header[3]]),
        prefix: "",
        mark: 0,
        payload: &[],
    };
    for a in crate::nla::attributes(attributes) {
        let (kind, value) = a?;
        match kind {
            k if k == nix::libc::NFULA_PREFIX as u16 => {
                let text = value.strip_suffix(&[0]).unwrap_or(value);
                p.prefix = std::str::from_utf8(text).unwrap_or_default();
            }
            k if k == nix::libc::NFULA_PAYLOAD as u16 => p.payload = value,
            k if k == nix::libc::NFULA_MARK as u16 => {
                p.mark = <[u8; 4]>::try_from(value).map_or(0, u32::from_be_bytes);
            }
            _ => {}
        }
    }
    Some(p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// An attribute: length, type, value, padding to 4 bytes.
    fn nla(kind: u16, value: &[u8]) -> Vec<u8> {
        let len = u16::try_from(4 + value.len()).expect("small");
        let mut v = [len.to_ne_bytes(), kind.to_ne_bytes()].concat();
        v.extend_from_slice(value);
        v.resize(v.len().next_multiple_of(4), 0);
        v
    }

    /// A netlink message of `kind` with an `nfgenmsg` for `group`.
    fn message(kind: u16, group: u16, attributes: &[Vec<u8>]) -> Vec<u8> {
        let mut body = vec![2, 0];
        body.extend_from_slice(&group.to_be_bytes());
        for a in attributes {
            body.extend_from_slice(a);
        }
        let len = u32::try_from(16 + body.len()).expect("small");
        let mut m = len.to_ne_bytes().to_vec();
        m.extend_from_slice(&kind.to_ne_bytes());
        m.extend_from_slice(&[0; 10]);
        m.extend_from_slice(&body);
        m
    }

    fn read(buf: &[u8]) -> Vec<Logged> {
        let mut out = Vec::new();
        read_messages(buf, &mut |p: LoggedRef<'_>| {
            out.push(Logged {
                group: p.group,
                prefix: p.prefix.to_string(),
                mark: p.mark,
                payload: p.payload.to_vec(),
            });
        });
        out
    }

    const PREFIX: u16 = nix::libc::NFULA_PREFIX as u16;
    const PAYLOAD: u16 = nix::libc::NFULA_PAYLOAD as u16;
    const MARK: u16 = nix::libc::NFULA_MARK as u16;

    #[test]
    fn packets_of_a_batch_are_read_in_place() {
        let mut buf = message(
            PACKET_MESSAGE,
            1,
            &[
                nla(1, &[0; 4]),
                nla(MARK, &0x0051_0000u32.to_be_bytes()),
                nla(PREFIX, b"A0|p-abc-in\0"),
                nla(PAYLOAD, &[0x45, 0, 0, 20, 9]),
            ],
        );
        // Not a packet (a configuration answer): skipped.
        buf.extend(message(0x0401, 1, &[nla(PREFIX, b"x\0")]));
        buf.extend(message(PACKET_MESSAGE, 2, &[nla(PAYLOAD, &[0x60])]));
        let got = read(&buf);
        assert_eq!(
            got,
            vec![
                Logged {
                    group: 1,
                    prefix: "A0|p-abc-in".into(),
                    mark: 0x0051_0000,
                    payload: vec![0x45, 0, 0, 20, 9],
                },
                Logged {
                    group: 2,
                    prefix: String::new(),
                    mark: 0,
                    payload: vec![0x60],
                },
            ]
        );
    }

    #[test]
    fn a_broken_message_ends_the_batch_and_a_broken_attribute_its_packet() {
        let good = message(PACKET_MESSAGE, 1, &[nla(PREFIX, b"A0|x\0")]);
        // An attribute claiming more bytes than the message holds.
        let mut bad_nla = message(PACKET_MESSAGE, 1, &[nla(PREFIX, b"A1|y\0")]);
        let at = 16 + 4;
        bad_nla[at..at + 2].copy_from_slice(&200u16.to_ne_bytes());
        let mut buf = bad_nla.clone();
        buf.extend(&good);
        assert_eq!(read(&buf).len(), 1, "the next message is still read");
        assert_eq!(read(&buf)[0].prefix, "A0|x");
        // A message claiming more than was received.
        let mut cut = good.clone();
        cut[0..4].copy_from_slice(&1000u32.to_ne_bytes());
        assert!(read(&cut).is_empty());
        // Not UTF-8: an empty prefix, which no chain has.
        let odd = message(PACKET_MESSAGE, 1, &[nla(PREFIX, &[0xff, 0xfe, 0])]);
        assert_eq!(read(&odd)[0].prefix, "");
        // A mark of the wrong size: none.
        let short = message(PACKET_MESSAGE, 1, &[nla(MARK, &[1, 2])]);
        assert_eq!(read(&short)[0].mark, 0);
    }

    proptest! {
        /// Whatever the kernel (or anyone) puts in the buffer, reading it
        /// neither panics nor hands on more packets than messages fit.
        #[test]
        fn any_bytes_read_without_panic(buf in proptest::collection::vec(any::<u8>(), 0..512)) {
            let n = read(&buf).len();
            prop_assert!(n <= buf.len() / 16);
        }

        #[test]
        fn mutated_batches_read_without_panic(
            flips in proptest::collection::vec((0usize..200, any::<u8>()), 0..8)
        ) {
            let mut buf = message(PACKET_MESSAGE, 1, &[nla(PREFIX, b"A0|p-abc-in\0"), nla(PAYLOAD, &[0x45; 40])]);
            buf.extend(message(PACKET_MESSAGE, 2, &[nla(PREFIX, b"D1|p-abc-out\0")]));
            for (i, b) in flips {
                if let Some(x) = buf.get_mut(i) {
                    *x = b;
                }
            }
            let _ = read(&buf);
        }
    }
}
