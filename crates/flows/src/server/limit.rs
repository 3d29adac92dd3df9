//! The gRPC listener's guard: at most `MAX_CONNECTIONS` connections at
//! once (more are closed as they arrive); a connection that sends nothing
//! within `FIRST_BYTES` of being accepted is closed, and so is one that
//! then goes silent for `IDLE` (a client that sends the first bytes of its
//! preface and stops: HTTP/2 keepalives start only once the handshake is
//! done). Live clients answer the server's keepalive pings (every 30 s),
//! so they are never silent that long. Silent clients cannot hold slots.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::transport::server::{Connected, TcpConnectInfo};

/// Connections served at once at most (a node keeps one).
pub const MAX_CONNECTIONS: usize = 8192;
/// A connection must send its first bytes within this time.
pub const FIRST_BYTES: Duration = Duration::from_secs(10);
/// A connection silent this long after its first bytes is closed.
pub const IDLE: Duration = Duration::from_secs(120);

/// An accepted connection holding its slot until it closes.
#[derive(Debug)]
pub struct Limited {
    stream: TcpStream,
    /// When the connection is given up unless bytes arrive before.
    deadline: Pin<Box<tokio::time::Sleep>>,
    /// Silence allowed once the first bytes came.
    idle: Duration,
    _slot: OwnedSemaphorePermit,
}

impl Connected for Limited {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.stream.connect_info()
    }
}

impl AsyncRead for Limited {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        match &polled {
            Poll::Ready(Ok(())) if buf.filled().len() > before => {
                let next = tokio::time::Instant::now() + self.idle;
                self.deadline.as_mut().reset(next);
            }
            Poll::Pending if self.deadline.as_mut().poll(cx).is_ready() => {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the client went silent",
                )));
            }
            _ => {}
        }
        polled
    }
}

impl AsyncWrite for Limited {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// The listener's connections, each with its slot and deadline; over the
/// limit a connection is closed at once.
pub fn incoming(
    listener: TcpListener,
) -> impl futures_util::Stream<Item = io::Result<Limited>> + Send + 'static {
    incoming_with(listener, FIRST_BYTES, IDLE)
}

/// The same with other deadlines.
pub fn incoming_with(
    listener: TcpListener,
    first_bytes: Duration,
    idle: Duration,
) -> impl futures_util::Stream<Item = io::Result<Limited>> + Send + 'static {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    futures_util::stream::unfold((listener, slots), move |(listener, slots)| async move {
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(c) => c,
                // A failed accept (out of descriptors, a reset) is not the
                // end of the service.
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                drop(stream);
                continue;
            };
            let _ = stream.set_nodelay(true);
            let conn = Limited {
                stream,
                deadline: Box::pin(tokio::time::sleep(first_bytes)),
                idle,
                _slot: slot,
            };
            return Some((Ok(conn), (listener, slots)));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// What reading the server side of a connection ends with, and when.
    async fn served(conn: &mut Limited) -> (io::Result<usize>, std::time::Duration) {
        let t = std::time::Instant::now();
        let mut buf = [0u8; 64];
        loop {
            match conn.read(&mut buf).await {
                Ok(0) => return (Ok(0), t.elapsed()),
                Ok(_) => {}
                Err(e) => return (Err(e), t.elapsed()),
            }
        }
    }

    #[tokio::test]
    async fn a_client_that_goes_silent_after_its_first_bytes_is_closed_a_talking_one_is_not() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let idle = Duration::from_millis(400);
        let mut conns = Box::pin(incoming_with(listener, Duration::from_secs(5), idle));

        // The first bytes of a preface, then nothing.
        let mut quiet = tokio::net::TcpStream::connect(addr).await.expect("connect");
        quiet.write_all(b"PRI * HTTP/2.0").await.expect("write");
        let mut conn = conns.next().await.expect("conn").expect("ok");
        let (end, after) = tokio::time::timeout(Duration::from_secs(10), served(&mut conn))
            .await
            .expect("the silent client was never cut off");
        assert_eq!(end.expect_err("cut off").kind(), io::ErrorKind::TimedOut);
        assert!(after >= idle && after < idle * 5, "after {after:?}");

        // A byte every 100 ms for well over the idle time: kept.
        let mut talking = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let mut conn = conns.next().await.expect("conn").expect("ok");
        let talker = tokio::spawn(async move {
            for _ in 0..15 {
                talking.write_all(b"x").await.expect("write");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            drop(talking);
        });
        let (end, after) = served(&mut conn).await;
        assert_eq!(end.expect("closed by the client, not cut off"), 0);
        assert!(after >= Duration::from_millis(1400), "after {after:?}");
        talker.await.expect("talker");
    }
}
