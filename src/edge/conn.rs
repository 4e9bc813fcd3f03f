//! Per-connection guards, applied where the proxy app takes a new client connection:
//! the connection limits (process-wide and per client address) and the request-head
//! deadline that closes slow clients (slowloris) which Pingora's per-read timeouts let live.
//!
//! The deadline is a wrapper around the connection's stream. Its state moves with the
//! HTTP/1 request cycle: armed at accept, and again by the first byte of each next request
//! on a keep-alive connection; disarmed by the proxy once a head is complete
//! ([`HeadClock::head_done`]), idle after each answer ([`HeadClock::idle`]), when the
//! keep-alive timeout is Pingora's. HTTP/2 connections are never armed (their streams have
//! their own limits and the idle timeout).

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use pingora::protocols::{GetProxyDigest, GetSocketDigest, GetTimingDigest};
use pingora::protocols::{Peek, Shutdown, Ssl, Stream, UniqueID, UniqueIDType, ALPN};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

const IDLE: u8 = 0;
const HEAD: u8 = 1;
const BODY: u8 = 2;
const OFF: u8 = 3;

/// Where a connection is in its request cycle, as the deadline sees it.
#[derive(Debug, Default)]
pub struct HeadClock(AtomicU8);

impl HeadClock {
    /// The request head is complete: no deadline while it is answered.
    pub fn head_done(&self) {
        let _ = self
            .0
            .compare_exchange(HEAD, BODY, Ordering::Relaxed, Ordering::Relaxed);
    }

    /// The answer is written: the next byte starts the next head's deadline.
    pub fn idle(&self) {
        let _ = self
            .0
            .compare_exchange(BODY, IDLE, Ordering::Relaxed, Ordering::Relaxed);
    }
}

/// A client stream with a request-head deadline.
pub struct HeadDeadline {
    inner: Stream,
    clock: Arc<HeadClock>,
    timeout: Duration,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    timeouts: prometheus::IntCounter,
}

impl HeadDeadline {
    /// Wrap `inner`; the first head's deadline starts now, unless the connection is
    /// HTTP/2 by ALPN.
    pub fn new(inner: Stream, timeout: Duration, timeouts: prometheus::IntCounter) -> Self {
        let h2 = matches!(inner.selected_alpn_proto(), Some(ALPN::H2));
        HeadDeadline {
            inner,
            clock: Arc::new(HeadClock(AtomicU8::new(if h2 { OFF } else { HEAD }))),
            timeout,
            sleep: (!h2).then(|| Box::pin(tokio::time::sleep(timeout))),
            timeouts,
        }
    }

    /// The clock of the connection under `stream`, when it is one of ours.
    pub fn clock_of(stream: &Stream) -> Option<&HeadClock> {
        stream
            .as_any()
            .downcast_ref::<HeadDeadline>()
            .map(|d| &*d.clock)
    }
}

impl std::fmt::Debug for HeadDeadline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeadDeadline")
            .field("inner", &self.inner)
            .field("state", &self.clock.0.load(Ordering::Relaxed))
            .finish()
    }
}

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0";

impl AsyncRead for HeadDeadline {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        let state = this.clock.0.load(Ordering::Relaxed);
        if state == HEAD {
            let timeout = this.timeout;
            let sleep = this
                .sleep
                .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
            if sleep.as_mut().poll(cx).is_ready() {
                this.timeouts.inc();
                return Poll::Ready(Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "request head timeout",
                )));
            }
        } else if this.sleep.is_some() {
            this.sleep = None;
        }
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = r {
            let read = &buf.filled()[before..];
            if !read.is_empty() {
                if state == IDLE {
                    this.clock.0.store(HEAD, Ordering::Relaxed);
                } else if state == HEAD && before == 0 && read.starts_with(H2_PREFACE) {
                    // HTTP/2 with prior knowledge (h2c).
                    this.clock.0.store(OFF, Ordering::Relaxed);
                }
            }
        }
        r
    }
}

impl AsyncWrite for HeadDeadline {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[async_trait]
impl Shutdown for HeadDeadline {
    async fn shutdown(&mut self) {
        self.inner.shutdown().await
    }
}

impl UniqueID for HeadDeadline {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for HeadDeadline {
    fn get_ssl(&self) -> Option<&pingora::protocols::tls::TlsRef> {
        self.inner.get_ssl()
    }

    fn get_ssl_digest(&self) -> Option<Arc<pingora::protocols::tls::SslDigest>> {
        self.inner.get_ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for HeadDeadline {
    fn get_timing_digest(&self) -> Vec<Option<pingora::protocols::TimingDigest>> {
        self.inner.get_timing_digest()
    }

    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }

    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for HeadDeadline {
    fn get_proxy_digest(&self) -> Option<Arc<pingora::protocols::raw_connect::ProxyDigest>> {
        self.inner.get_proxy_digest()
    }
}

impl GetSocketDigest for HeadDeadline {
    fn get_socket_digest(&self) -> Option<Arc<pingora::protocols::SocketDigest>> {
        self.inner.get_socket_digest()
    }
}

#[async_trait]
impl Peek for HeadDeadline {
    async fn try_peek(&mut self, buf: &mut [u8]) -> std::io::Result<bool> {
        self.inner.try_peek(buf).await
    }
}

/// Open connections per client address, against a per-client maximum.
#[derive(Default)]
pub struct PerClient {
    open: Mutex<HashMap<IpAddr, usize>>,
}

impl PerClient {
    /// Count one more connection from `ip`, unless it already has `max`.
    pub fn try_open(self: &Arc<Self>, ip: IpAddr, max: usize) -> Option<ClientSlot> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let n = open.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(ClientSlot(self.clone(), ip))
    }

    /// Connections open from `ip`.
    pub fn open(&self, ip: IpAddr) -> usize {
        let open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.get(&ip).copied().unwrap_or(0)
    }
}

/// One counted connection of a client; uncounted on drop.
pub struct ClientSlot(Arc<PerClient>, IpAddr);

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut open = self.0.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = open.get_mut(&self.1) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_client_slots_are_counted_and_released() {
        let pc = Arc::new(PerClient::default());
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let a = pc.try_open(ip, 2).unwrap();
        let _b = pc.try_open(ip, 2).unwrap();
        assert!(pc.try_open(ip, 2).is_none());
        assert!(pc.try_open("192.0.2.2".parse().unwrap(), 2).is_some());
        drop(a);
        assert_eq!(pc.open(ip), 1);
        assert!(pc.try_open(ip, 2).is_some());
    }
}
