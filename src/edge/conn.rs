//! Per-connection guards, applied where the proxy app takes a new client connection:
//! the connection limits (process-wide and per client address) and the deadlines of an
//! HTTP/1 connection, kept by a wrapper around its stream ([`Deadlines`]):
//!
//! * the request head: from accept for the first request, from the first byte of each next
//!   one; past it the connection is closed (slowloris, which Pingora's per-read timeouts
//!   let live);
//! * the keep-alive idle time, from the end of an answer to the next request's first byte;
//!   past it the connection ends cleanly, as an end of stream;
//! * the send timeout: the longest wait for a client to take the next response bytes
//!   (nginx's `send_timeout`, between two writes that make progress).
//!
//! The state moves with the request cycle ([`ConnClock`]): armed at accept, head again at
//! the first byte of each next request, done once the proxy has a complete head
//! ([`ConnClock::head_done`]), idle after each answer ([`ConnClock::idle`]). HTTP/2
//! connections are never armed (their streams have their own limits, send timeout and the
//! idle timeout).
//!
//! The timers cost nothing while a client keeps up: a deadline is taken (one clock read)
//! only when a read or write has to wait, and one timer per direction lives as long as the
//! connection, moved only when a deadline comes earlier than where it stands (a later
//! deadline is checked when the timer fires). Pingora's own keep-alive and write timeouts
//! would register a timer for every wait of every request.

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use async_trait::async_trait;
use pingora::protocols::{GetProxyDigest, GetSocketDigest, GetTimingDigest};
use pingora::protocols::{Peek, Shutdown, Ssl, Stream, UniqueID, UniqueIDType, ALPN};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

const IDLE: u32 = 0;
const HEAD: u32 = 1;
const BODY: u32 = 2;
const OFF: u32 = 3;
const STATE: u32 = 0xff;

/// Where a connection is in its request cycle, as its deadlines see it: the state in the
/// low byte, above it a count of changes, so each phase (each idle time, each head) is told
/// apart from the one before even when the state is the same.
#[derive(Debug, Default)]
pub struct ConnClock(AtomicU32);

impl ConnClock {
    fn new(state: u32) -> Self {
        ConnClock(AtomicU32::new(state))
    }

    /// The current phase: state and change count.
    fn phase(&self) -> u32 {
        self.0.load(Ordering::Relaxed)
    }

    /// Move to `to` when the state is one of `from`.
    fn moved(&self, from: &[u32], to: u32) {
        let _ = self
            .0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |w| {
                from.contains(&(w & STATE))
                    .then(|| (w & !STATE).wrapping_add(STATE + 1) | to)
            });
    }

    /// The request head is complete (read now, or pipelined behind the last answer): no
    /// deadline of ours while it is answered.
    pub fn head_done(&self) {
        self.moved(&[HEAD, IDLE], BODY);
    }

    /// The answer is written: the keep-alive idle time starts; the next byte starts the
    /// next head's deadline.
    pub fn idle(&self) {
        self.moved(&[BODY], IDLE);
    }
}

/// The deadlines of one client connection.
#[derive(Clone, Copy, Debug)]
pub struct ConnTimeouts {
    /// To receive a whole request head.
    pub head: Duration,
    /// Keep-alive idle time (`None`: no limit of ours).
    pub idle: Option<Duration>,
    /// Longest wait for a client to take response bytes (`None`: no limit of ours).
    pub send: Option<Duration>,
}

/// The counters of connections the deadlines closed.
#[derive(Clone)]
pub struct DeadlineCounters {
    pub head: prometheus::IntCounter,
    pub send: prometheus::IntCounter,
}

/// A deadline and the timer that wakes the connection for it. The timer is created at the
/// first wait and reused: a deadline later than the timer's is checked when it fires.
#[derive(Default)]
struct Timer {
    sleep: Option<Pin<Box<Sleep>>>,
    /// The waker the timer was last polled with: while the timer stands and has not fired,
    /// it will wake that task, so a wait of the same task need not poll it again (a keep-alive
    /// connection waits once per request; tokio's `Sleep::poll` costs some 130 instructions).
    polled_by: Option<Waker>,
}

impl Timer {
    /// Whether `deadline` has passed; if not, the task is woken when it does.
    fn expired(&mut self, deadline: Instant, cx: &mut Context<'_>) -> bool {
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if sleep.deadline() > deadline {
            sleep.as_mut().reset(deadline);
        } else if !sleep.is_elapsed() && wakes(&self.polled_by, cx) {
            // Armed for this task at or before `deadline`, not fired yet.
            return false;
        }
        while sleep.as_mut().poll(cx).is_ready() {
            if sleep.deadline() >= deadline {
                return true;
            }
            // It fired for an earlier deadline that has since moved later.
            sleep.as_mut().reset(deadline);
        }
        if !wakes(&self.polled_by, cx) {
            self.polled_by = Some(cx.waker().clone());
        }
        false
    }
}

/// Whether `waker` wakes the task polling with `cx`.
fn wakes(waker: &Option<Waker>, cx: &Context<'_>) -> bool {
    waker.as_ref().is_some_and(|w| w.will_wake(cx.waker()))
}

/// A client stream with its connection's deadlines.
///
/// Laid out by use, from a cache-line boundary: a keep-alive connection is touched again
/// only after the other connections' requests have had the caches, so each line its reads
/// and writes reach is a miss. Every read and write reaches the first line; the wait for
/// the next request also the second; the rest only a write that waits and the close.
#[repr(C, align(64))]
pub struct Deadlines {
    // First line.
    inner: Stream,
    clock: ConnClock,
    /// The phase whose read deadline is taken, and that deadline.
    read_phase: Option<(u32, Instant)>,
    /// Since a write has been waiting: its deadline.
    write_deadline: Option<Instant>,
    // Second line.
    read_timer: Timer,
    head_timeout: Duration,
    idle_timeout: Option<Duration>,
    // The rest.
    send_timeout: Option<Duration>,
    write_timer: Timer,
    counters: DeadlineCounters,
    /// Released when the connection's stream is dropped.
    _held: Held,
}

/// What a client connection holds while it is open.
pub struct Held {
    pub open: OpenConn,
    pub slot: Option<ClientSlot>,
}

/// One open client connection in the connections gauge; uncounted on drop.
pub struct OpenConn(pub prometheus::IntGauge);

impl Drop for OpenConn {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl Deadlines {
    /// Wrap `inner`, which holds `held` until it is dropped; the first head's deadline
    /// starts now, unless the connection is HTTP/2 by ALPN.
    pub fn new(
        inner: Stream,
        timeouts: ConnTimeouts,
        counters: DeadlineCounters,
        held: Held,
    ) -> Self {
        let h2 = matches!(inner.selected_alpn_proto(), Some(ALPN::H2));
        let clock = ConnClock::new(if h2 { OFF } else { HEAD });
        Deadlines {
            read_phase: (!h2).then(|| (clock.phase(), Instant::now() + timeouts.head)),
            clock,
            inner,
            write_deadline: None,
            read_timer: Timer::default(),
            head_timeout: timeouts.head,
            idle_timeout: timeouts.idle,
            send_timeout: timeouts.send,
            write_timer: Timer::default(),
            counters,
            _held: held,
        }
    }

    /// The clock of the connection under `stream`, when it is one of ours.
    pub fn clock_of(stream: &Stream) -> Option<&ConnClock> {
        stream
            .as_any()
            .downcast_ref::<Deadlines>()
            .map(|d| &d.clock)
    }

    /// A read has to wait in `phase`: its deadline, if the phase has one, is checked.
    fn read_waits(&mut self, phase: u32, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let timeout = match phase & STATE {
            HEAD => Some(self.head_timeout),
            IDLE => self.idle_timeout,
            _ => None,
        };
        let Some(timeout) = timeout else {
            return Poll::Pending;
        };
        let deadline = match self.read_phase {
            Some((p, d)) if p == phase => d,
            _ => {
                let d = Instant::now() + timeout;
                self.read_phase = Some((phase, d));
                d
            }
        };
        if !self.read_timer.expired(deadline, cx) {
            return Poll::Pending;
        }
        if phase & STATE == IDLE {
            // The keep-alive time is over: the connection ends as if the client closed it
            // (Pingora closes it without an answer, as at its own keep-alive timeout).
            return Poll::Ready(Ok(()));
        }
        self.counters.head.inc();
        Poll::Ready(Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "request head timeout",
        )))
    }

    /// What a write's poll says, with the send timeout: a write that waits past it fails,
    /// one that makes progress ends the wait.
    fn written<T>(
        &mut self,
        r: Poll<std::io::Result<T>>,
        progress: impl Fn(&T) -> bool,
        cx: &mut Context<'_>,
    ) -> Poll<std::io::Result<T>> {
        match &r {
            Poll::Pending => {
                let Some(timeout) = self.send_timeout else {
                    return r;
                };
                if self.clock.phase() & STATE == OFF {
                    return r;
                }
                let deadline = *self
                    .write_deadline
                    .get_or_insert_with(|| Instant::now() + timeout);
                if self.write_timer.expired(deadline, cx) {
                    self.counters.send.inc();
                    return Poll::Ready(Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "send timeout: the client does not read",
                    )));
                }
            }
            // Read before written: the line stays clean while no write waits.
            Poll::Ready(Ok(v)) if progress(v) && self.write_deadline.is_some() => {
                self.write_deadline = None
            }
            Poll::Ready(_) => {}
        }
        r
    }
}

impl std::fmt::Debug for Deadlines {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deadlines")
            .field("inner", &self.inner)
            .field("phase", &self.clock.phase())
            .finish()
    }
}

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0";

impl AsyncRead for Deadlines {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        let phase = this.clock.phase();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        match r {
            Poll::Ready(Ok(())) => {
                let read = &buf.filled()[before..];
                if !read.is_empty() {
                    if phase & STATE == IDLE {
                        // The next request's first byte: its head deadline starts.
                        this.clock.moved(&[IDLE], HEAD);
                    } else if phase & STATE == HEAD && before == 0 && read.starts_with(H2_PREFACE) {
                        // HTTP/2 with prior knowledge (h2c).
                        this.clock.moved(&[HEAD], OFF);
                    }
                }
                r
            }
            Poll::Pending => this.read_waits(phase, cx),
            Poll::Ready(Err(_)) => r,
        }
    }
}

impl AsyncWrite for Deadlines {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.written(r, |n| *n > 0, cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.written(r, |n| *n > 0, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_flush(cx);
        self.written(r, |_| true, cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[async_trait]
impl Shutdown for Deadlines {
    async fn shutdown(&mut self) {
        self.inner.shutdown().await
    }
}

impl UniqueID for Deadlines {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for Deadlines {
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

impl GetTimingDigest for Deadlines {
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

impl GetProxyDigest for Deadlines {
    fn get_proxy_digest(&self) -> Option<Arc<pingora::protocols::raw_connect::ProxyDigest>> {
        self.inner.get_proxy_digest()
    }
}

impl GetSocketDigest for Deadlines {
    fn get_socket_digest(&self) -> Option<Arc<pingora::protocols::SocketDigest>> {
        self.inner.get_socket_digest()
    }
}

#[async_trait]
impl Peek for Deadlines {
    async fn try_peek(&mut self, buf: &mut [u8]) -> std::io::Result<bool> {
        self.inner.try_peek(buf).await
    }
}

/// Open connections per client address, against a per-client maximum. Looked up twice per
/// connection (open, close): hashed with foldhash, randomly seeded per map (std's SipHash
/// cost some 390 instructions a connection here; the keys are client addresses, which a
/// client cannot pick freely, and the seed defeats precomputed collisions).
#[derive(Default)]
pub struct PerClient {
    open: Mutex<HashMap<IpAddr, usize, foldhash::fast::RandomState>>,
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
    use std::sync::atomic::AtomicUsize;
    use std::task::Wake;

    #[test]
    fn what_each_request_reaches_lies_in_the_first_two_cache_lines() {
        fn size<T>(_: fn(&Deadlines) -> &T) -> usize {
            std::mem::size_of::<T>()
        }
        // Where a field starts and ends.
        macro_rules! span {
            ($f:ident) => {{
                let start = std::mem::offset_of!(Deadlines, $f);
                (start, start + size(|d| &d.$f))
            }};
        }
        assert_eq!(std::mem::align_of::<Deadlines>(), 64);
        let first = [
            span!(inner),
            span!(clock),
            span!(read_phase),
            span!(write_deadline),
        ];
        assert!(
            first.iter().all(|(_, end)| *end <= 64),
            "first line: {first:?}"
        );
        let second = [span!(read_timer), span!(head_timeout), span!(idle_timeout)];
        assert!(
            second
                .iter()
                .all(|(start, end)| *start >= 64 && *end <= 128),
            "second line: {second:?}"
        );
    }

    #[derive(Default)]
    struct Wakes(AtomicUsize);

    impl Wake for Wakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Polls the runtime (its timer driver) until `woken` has counted `n` wake-ups.
    async fn until_woken(woken: &Wakes, n: usize) {
        let end = Instant::now() + Duration::from_secs(20);
        while woken.0.load(Ordering::SeqCst) < n {
            assert!(Instant::now() < end, "timer never woke the task");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn a_timer_polled_again_by_its_task_still_wakes_it_and_follows_a_new_task() {
        let (a, b) = (Arc::new(Wakes::default()), Arc::new(Wakes::default()));
        let (wa, wb) = (Waker::from(a.clone()), Waker::from(b.clone()));
        let mut timer = Timer::default();
        // Task a waits twice for the same deadline (the second wait is not polled again).
        let first = Instant::now() + Duration::from_millis(50);
        assert!(!timer.expired(first, &mut Context::from_waker(&wa)));
        assert!(!timer.expired(first, &mut Context::from_waker(&wa)));
        until_woken(&a, 1).await;
        assert!(timer.expired(first, &mut Context::from_waker(&wa)));
        // A later deadline, armed by a, then waited for by another task b: b is woken.
        let second = Instant::now() + Duration::from_millis(50);
        assert!(!timer.expired(second, &mut Context::from_waker(&wa)));
        assert!(!timer.expired(second, &mut Context::from_waker(&wb)));
        assert!(!timer.expired(second, &mut Context::from_waker(&wb)));
        until_woken(&b, 1).await;
        assert!(timer.expired(second, &mut Context::from_waker(&wb)));
        assert_eq!(a.0.load(Ordering::SeqCst), 1, "a was replaced by b");
    }

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
