//! A workaround, from outside Pingora, for a race in Pingora 0.9's HTTP/1 proxy loop that
//! tears a WebSocket down right after its 101 (cloudflare/pingora#946, open as of 0.9.1).
//!
//! An upgrade request has no body, so the proxy's downstream half queues one end-of-body
//! task for the upstream half. The upstream half waits for that task and for the pod's
//! response at once; when the 101 is read first (a fast pod, a busy proxy), the end of the
//! request body that follows is taken for the end of the tunnel, and both connections are
//! closed: the client sees the 101, then the end of the stream.
//!
//! The end-of-body task ends in a flush of the pod connection (`finish_body`), the second
//! flush of the request after the head's own. So an upgrade request with an empty body gets
//! a new connection to the pod (a unique pool group: no pooled connection can be picked)
//! through [`UpgradeConnect`], whose socket holds back reads between the head's flush and
//! the body's: the 101 can then only be read after the end of the request body, the order
//! Pingora handles. Nothing is read late by more than the time the proxy takes to handle a
//! task it already has; TLS and HTTP/2 pod connections are not gated (the race needs a
//! plain HTTP/1 pod, which is what WebSocket pods are in practice).

use std::fmt;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use async_trait::async_trait;
use pingora::connectors::L4Connect;
use pingora::protocols::l4::socket::SocketAddr;
use pingora::protocols::l4::stream::Stream;
use pingora::protocols::l4::virt::{VirtualSockOpt, VirtualSocket, VirtualSocketStream};
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorType, Result};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Pool groups for upgrade connections: each one its own, so none is reused.
static GROUPS: AtomicU64 = AtomicU64::new(1 << 63);

/// Route `peer` (a plain HTTP/1 pod) for an upgrade request with an empty body through a
/// new gated connection.
pub fn gate(peer: &mut HttpPeer) {
    peer.group_key = GROUPS.fetch_add(1, Ordering::Relaxed);
    let timeout = peer.options.connection_timeout;
    peer.options.custom_l4 = Some(std::sync::Arc::new(UpgradeConnect { timeout }));
}

/// Connects to a pod over TCP and hands Pingora the [`Gated`] socket.
#[derive(Debug)]
pub struct UpgradeConnect {
    /// The peer's connect timeout (Pingora applies it only to its own connector).
    timeout: Option<Duration>,
}

#[async_trait]
impl L4Connect for UpgradeConnect {
    async fn connect(&self, addr: &SocketAddr) -> Result<Stream> {
        let SocketAddr::Inet(addr) = addr else {
            return Error::e_explain(ErrorType::ConnectError, "upgrade to a non-TCP address");
        };
        // Pingora's own connect, so a failure has the error type (refused, no route, ...)
        // its retry logic expects; the peer's connect timeout is ours to apply here.
        let connecting = pingora::protocols::l4::ext::connect(addr, None);
        let tcp = match self.timeout {
            Some(t) => match tokio::time::timeout(t, connecting).await {
                Ok(r) => r?,
                Err(_) => {
                    return Error::e_explain(
                        ErrorType::ConnectTimedout,
                        format!("timeout {t:?} connecting to {addr}"),
                    )
                }
            },
            None => connecting.await?,
        };
        let gated = Gated {
            tcp,
            flushes: 0,
            reader: None,
        };
        Ok(VirtualSocketStream::new(Box::new(gated)).into())
    }
}

/// A pod socket whose reads wait between the request head's flush and the next one.
pub struct Gated {
    tcp: TcpStream,
    /// Flushes done, counted up to 2 (0: head not sent; 1: reads held; 2: open).
    flushes: u8,
    /// A read that waited for the gate.
    reader: Option<Waker>,
}

impl fmt::Debug for Gated {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Gated")
            .field("tcp", &self.tcp)
            .field("flushes", &self.flushes)
            .finish()
    }
}

impl VirtualSocket for Gated {
    fn set_socket_option(&self, opt: VirtualSockOpt) -> std::io::Result<()> {
        match opt {
            VirtualSockOpt::NoDelay => self.tcp.set_nodelay(true),
            // Pod connections carry no TCP keep-alive setting of ours.
            _ => Ok(()),
        }
    }
}

impl AsyncRead for Gated {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.flushes == 1 {
            self.reader = Some(cx.waker().clone());
            return Poll::Pending;
        }
        Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for Gated {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let r = Pin::new(&mut self.tcp).poll_flush(cx);
        if matches!(r, Poll::Ready(Ok(()))) && self.flushes < 2 {
            self.flushes += 1;
            if self.flushes == 2 {
                if let Some(w) = self.reader.take() {
                    w.wake();
                }
            }
        }
        r
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Reads wait from the head's flush to the next flush, and only then.
    #[tokio::test]
    async fn reads_wait_between_the_first_and_the_second_flush() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let pod = tokio::spawn(async move {
            let (mut c, _) = listener.accept().await.unwrap();
            c.write_all(b"early").await.unwrap();
            c
        });
        let mut g = Gated {
            tcp: TcpStream::connect(addr).await.unwrap(),
            flushes: 0,
            reader: None,
        };
        let _pod = pod.await.unwrap();
        g.write_all(b"head").await.unwrap();
        g.flush().await.unwrap();
        let mut b = [0u8; 5];
        let held = tokio::time::timeout(Duration::from_millis(200), g.read(&mut b)).await;
        assert!(held.is_err(), "read before the body's flush: {held:?}");
        g.flush().await.unwrap();
        g.read_exact(&mut b).await.unwrap();
        assert_eq!(&b, b"early");
    }
}
