//! The gRPC listener's guard: at most `MAX_CONNECTIONS` connections at
//! once (more are closed as they arrive), and a connection that sends
//! nothing within `FIRST_BYTES` of being accepted is closed, so silent
//! clients cannot hold the slots.

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

/// An accepted connection holding its slot until it closes.
#[derive(Debug)]
pub struct Limited {
    stream: TcpStream,
    /// Until the first bytes arrive: when the connection is given up.
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
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
        if let Poll::Ready(Ok(())) = &polled {
            if buf.filled().len() > before {
                self.deadline = None;
            }
            return polled;
        }
        if polled.is_pending() {
            if let Some(d) = self.deadline.as_mut() {
                if d.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "nothing sent within the first-bytes deadline",
                    )));
                }
            }
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
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    futures_util::stream::unfold((listener, slots), |(listener, slots)| async move {
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
                deadline: Some(Box::pin(tokio::time::sleep(FIRST_BYTES))),
                _slot: slot,
            };
            return Some((Ok(conn), (listener, slots)));
        }
    })
}
