//! Packets nftables logs to NFLOG groups (`log group N prefix "..."`), read
//! through nfnetlink_log: the group, the rule's prefix and the packet's
//! first bytes (enough for the IP and transport headers).

use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
use netlink_packet_netfilter::nflog::{
    config_request, ConfigCmd, ConfigMode, ConfigNla, PacketNla, Timeout, ULogMessage,
};
use netlink_packet_netfilter::{NetfilterMessage, NetfilterMessageInner, NetfilterProtoFamily};
use netlink_sys::{constants::NETLINK_NETFILTER, Socket};
use std::os::fd::AsFd;
use std::time::Duration;

/// Bytes of each packet copied to us: the largest IPv6 header chain we
/// read plus the transport ports.
const COPY_RANGE: u32 = 128;
/// Packets the kernel gathers into one message at most.
const QUEUE_THRESHOLD: u32 = 64;
/// The kernel's buffer for such a message (our receive buffer is as big).
const BATCH_BYTES: u32 = 1 << 16;

#[derive(Debug, thiserror::Error)]
pub enum NflogError {
    #[error("NFLOG socket")]
    Socket(#[source] std::io::Error),
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
    /// The packet from its IP header on, at most 128 bytes.
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
        let _ = socket.set_rx_buf_sz(4 << 20);
        let mut me = Nflog {
            socket,
            buf: vec![0; 1 << 16],
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
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        let ms = u16::try_from(wait.as_millis()).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(self.socket.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(0) => return Ok(Vec::new()),
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => return Ok(Vec::new()),
            Err(e) => return Err(NflogError::Socket(e.into())),
        }
        let n = self
            .socket
            .recv(&mut &mut self.buf[..], 0)
            .map_err(NflogError::Socket)?;
        let mut out = Vec::new();
        let mut at = 0;
        while at < n {
            let Ok(m) = NetlinkMessage::<NetfilterMessage>::deserialize(&self.buf[at..n]) else {
                break;
            };
            let len = m.header.length as usize;
            if let NetlinkPayload::InnerMessage(NetfilterMessage {
                header,
                inner: NetfilterMessageInner::ULog(ULogMessage::Packet(nlas)),
                ..
            }) = m.payload
            {
                let mut prefix = String::new();
                let mut payload = Vec::new();
                for nla in nlas {
                    match nla {
                        PacketNla::Prefix(p) => prefix = p.to_string_lossy().into_owned(),
                        PacketNla::Payload(p) => payload = p,
                        _ => {}
                    }
                }
                out.push(Logged {
                    group: header.res_id,
                    prefix,
                    payload,
                });
            }
            if len == 0 {
                break;
            }
            at += len;
        }
        Ok(out)
    }
}
