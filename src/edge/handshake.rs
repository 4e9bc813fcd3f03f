//! The TLS handshake deadline (`pingress.edge.tls_handshake_timeout_ms`). Pingora gives
//! every handshake a fixed 60 s (its listening service's `timeout`), which lets a client
//! hold a connection and its task for a minute by sending nothing after the TCP handshake.
//!
//! Pingora's pre-TLS hook sees the accepted socket but not the handshake future, so the
//! deadline works on the socket:
//! - the hook ([`Handshakes::start`]) keeps a duplicate of the socket's descriptor and
//!   starts a timer;
//! - the proxy app marks the handshake done ([`Handshakes::done`]) when it is handed the
//!   finished connection, by the connection's id (Pingora's id is the descriptor number);
//! - at the deadline a socket still handshaking is shut down through the duplicate: the
//!   handshake's next read sees the end of the stream, fails, and Pingora drops it.
//!
//! Shutting down through the duplicate can only touch this connection's socket, even when
//! its number has been reused since. A handshake that fails early closes Pingora's
//! descriptor while the duplicate still holds the socket open; the timer notices within
//! [`POLL`] (the number no longer names the same socket, by device and inode) and lets the
//! duplicate go, so such a client gets its FIN at once rather than at the deadline.

use std::collections::HashMap;
use std::os::fd::{BorrowedFd, OwnedFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

/// How often a waiting timer checks that Pingora still holds its socket.
pub const POLL: Duration = Duration::from_millis(250);

/// Handshakes under way on the HTTPS listeners, by descriptor number.
pub struct Handshakes {
    timeout: Duration,
    pending: Mutex<HashMap<RawFd, (u64, oneshot::Sender<()>)>>,
    serial: AtomicU64,
    /// `pingress_downstream_closed_total{reason="tls_handshake_timeout"}`.
    timeouts: prometheus::IntCounter,
}

impl Handshakes {
    pub fn new(timeout: Duration, timeouts: prometheus::IntCounter) -> Arc<Self> {
        Arc::new(Handshakes {
            timeout,
            pending: Mutex::default(),
            serial: AtomicU64::new(0),
            timeouts,
        })
    }

    /// A TLS connection was accepted on socket `fd` (open for the whole call): its
    /// handshake must be done within the timeout.
    pub fn start(self: &Arc<Self>, fd: RawFd) {
        if fd < 0 {
            return;
        }
        let Ok(dup) = duplicate(fd) else {
            return;
        };
        let dup = std::fs::File::from(dup);
        let Ok(socket) = dup.metadata().map(|m| (m.dev(), m.ino())) else {
            return;
        };
        let dup = OwnedFd::from(dup);
        let (tx, rx) = oneshot::channel();
        let serial = self.serial.fetch_add(1, Ordering::Relaxed);
        // An entry left for this number belongs to a closed connection: replacing it drops
        // its sender, which ends its timer.
        self.pending.lock().unwrap().insert(fd, (serial, tx));
        let this = self.clone();
        tokio::spawn(async move { this.watch(fd, serial, socket, dup, rx).await });
    }

    /// The handshake on connection `id` is complete.
    pub fn done(&self, id: RawFd) {
        if let Some((_, tx)) = self.pending.lock().unwrap().remove(&id) {
            let _ = tx.send(());
        }
    }

    async fn watch(
        &self,
        fd: RawFd,
        serial: u64,
        socket: (u64, u64),
        dup: OwnedFd,
        mut finished: oneshot::Receiver<()>,
    ) {
        let deadline = Instant::now() + self.timeout;
        loop {
            let now = Instant::now();
            if now >= deadline {
                let _ = std::net::TcpStream::from(dup).shutdown(std::net::Shutdown::Both);
                self.timeouts.inc();
                break;
            }
            tokio::select! {
                // Done, or the entry was replaced (the connection is gone): nothing to do.
                _ = &mut finished => return,
                _ = tokio::time::sleep(POLL.min(deadline - now)) => {}
            }
            if !holds(fd, socket) {
                // Pingora closed it: the handshake failed.
                break;
            }
        }
        let mut pending = self.pending.lock().unwrap();
        if pending.get(&fd).is_some_and(|(s, _)| *s == serial) {
            pending.remove(&fd);
        }
    }
}

/// A descriptor of our own for the socket `fd`, so that the deadline can shut it down
/// whatever happens to the number `fd`.
#[allow(unsafe_code)]
fn duplicate(fd: RawFd) -> std::io::Result<OwnedFd> {
    // SAFETY: `fd` is the accepted socket of the stream Pingora's pre-TLS hook lends us;
    // the stream owns it and is alive for the whole call (`Handshakes::start`), and the
    // borrow ends inside this expression.
    unsafe { BorrowedFd::borrow_raw(fd) }.try_clone_to_owned()
}

/// Whether the number `fd` still names `socket` (device, inode) in this process. Read
/// through /proc, which needs no access to the number itself; when /proc cannot say, the
/// answer is yes (the timer then waits for its deadline).
fn holds(fd: RawFd, socket: (u64, u64)) -> bool {
    match std::fs::metadata(format!("/proc/self/fd/{fd}")) {
        Ok(m) => (m.dev(), m.ino()) == socket,
        Err(e) => e.kind() != std::io::ErrorKind::NotFound || !proc_fds(),
    }
}

/// Whether this process's descriptors are listed in /proc.
fn proc_fds() -> bool {
    static PROC: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *PROC.get_or_init(|| std::path::Path::new("/proc/self/fd").is_dir())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;
    use tokio::io::AsyncReadExt;

    fn counter() -> prometheus::IntCounter {
        prometheus::IntCounter::new("t", "t").unwrap()
    }

    async fn pair() -> (tokio::net::TcpStream, tokio::net::TcpStream) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let c = tokio::net::TcpStream::connect(l.local_addr().unwrap())
            .await
            .unwrap();
        let (s, _) = l.accept().await.unwrap();
        (c, s)
    }

    async fn read_eof(c: &mut tokio::net::TcpStream) -> bool {
        let mut b = [0u8; 16];
        matches!(
            tokio::time::timeout(Duration::from_secs(30), c.read(&mut b)).await,
            Ok(Ok(0)) | Ok(Err(_))
        )
    }

    #[tokio::test]
    async fn a_handshake_past_the_deadline_is_shut_down() {
        let timeouts = counter();
        let h = Handshakes::new(Duration::from_millis(300), timeouts.clone());
        let (mut client, server) = pair().await;
        h.start(server.as_raw_fd());
        assert!(
            read_eof(&mut client).await,
            "the server side was not shut down"
        );
        assert_eq!(timeouts.get(), 1);
        drop(server);
    }

    #[tokio::test]
    async fn a_finished_handshake_is_left_alone() {
        let timeouts = counter();
        let h = Handshakes::new(Duration::from_millis(300), timeouts.clone());
        let (mut client, server) = pair().await;
        h.start(server.as_raw_fd());
        h.done(server.as_raw_fd());
        assert!(h.pending.lock().unwrap().is_empty());
        // Past the deadline the connection still carries data.
        tokio::time::sleep(Duration::from_millis(900)).await;
        let mut s = tokio::io::BufStream::new(server);
        tokio::io::AsyncWriteExt::write_all(&mut s, b"hi")
            .await
            .unwrap();
        tokio::io::AsyncWriteExt::flush(&mut s).await.unwrap();
        let mut b = [0u8; 2];
        client.read_exact(&mut b).await.unwrap();
        assert_eq!(&b, b"hi");
        assert_eq!(timeouts.get(), 0);
    }

    #[tokio::test]
    async fn a_failed_handshake_lets_the_socket_close_before_the_deadline() {
        let timeouts = counter();
        let h = Handshakes::new(Duration::from_secs(3600), timeouts.clone());
        let (mut client, server) = pair().await;
        h.start(server.as_raw_fd());
        // Pingora drops the stream after a failed handshake; the duplicate must not keep
        // the socket open for the hour.
        drop(server);
        assert!(
            read_eof(&mut client).await,
            "the duplicate held the socket open"
        );
        assert_eq!(timeouts.get(), 0);
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !h.pending.lock().unwrap().is_empty() {
            assert!(
                std::time::Instant::now() < deadline,
                "the entry was never removed"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
