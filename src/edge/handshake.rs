//! The TLS handshake deadline (`pingress.edge.tls_handshake_timeout_ms`). Pingora gives
//! every handshake a fixed 60 s (its listening service's `timeout`), which lets a client
//! hold a connection and its task for a minute by sending nothing after the TCP handshake.
//!
//! Pingora's pre-TLS hook sees the accepted socket but not the handshake future, so the
//! deadline works on the socket:
//! - the hook ([`Handshakes::start`]) keeps a duplicate of the socket's descriptor, by the
//!   descriptor's number;
//! - the proxy app marks the handshake done ([`Handshakes::done`]) when it is handed the
//!   finished connection, by the connection's id (Pingora's id is the descriptor number),
//!   which lets the duplicate go;
//! - one sweeper task per listener set wakes while handshakes are pending, at the next
//!   deadline or every [`POLL`]: a socket still handshaking at its deadline is shut down
//!   through the duplicate (the handshake's next read sees the end of the stream, fails, and
//!   Pingora drops it).
//!
//! Shutting down through the duplicate can only touch this connection's socket, even when
//! its number has been reused since. A handshake that fails early closes Pingora's
//! descriptor while the duplicate still holds the socket open; the sweeper notices within
//! two [`POLL`]s (the number no longer names the same socket, by device and inode) and lets
//! the duplicate go, so such a client gets its FIN at once rather than at the deadline.
//!
//! A handshake that finishes costs two system calls (the duplicate and its close) and a map
//! entry: no task, timer or channel of its own, and no `fstat` (the socket's identity is
//! read from the duplicate only for a handshake still pending a [`POLL`] after it started).

use std::collections::HashMap;
use std::os::fd::{BorrowedFd, OwnedFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

/// How often the sweeper checks that Pingora still holds a pending handshake's socket.
pub const POLL: Duration = Duration::from_millis(250);

/// Handshakes under way on the HTTPS listeners, by descriptor number.
pub struct Handshakes {
    timeout: Duration,
    pending: Mutex<Pending>,
    /// `pingress_downstream_closed_total{reason="tls_handshake_timeout"}`.
    timeouts: prometheus::IntCounter,
}

#[derive(Default)]
struct Pending {
    by_fd: HashMap<RawFd, Handshake>,
    /// Whether a sweeper task is running (it ends when nothing is pending).
    sweeping: bool,
}

struct Handshake {
    deadline: Instant,
    /// Our own descriptor of the socket.
    dup: std::fs::File,
    /// The socket's device and inode, read from `dup` at the first sweep that finds the
    /// handshake still pending a [`POLL`] after it started.
    socket: Option<(u64, u64)>,
}

impl Handshakes {
    pub fn new(timeout: Duration, timeouts: prometheus::IntCounter) -> Arc<Self> {
        Arc::new(Handshakes {
            timeout,
            pending: Mutex::default(),
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
        let entry = Handshake {
            deadline: Instant::now() + self.timeout,
            dup: dup.into(),
            socket: None,
        };
        let mut pending = self.lock();
        // An entry left for this number belongs to a closed connection: replacing it lets
        // its duplicate go.
        let replaced = pending.by_fd.insert(fd, entry);
        if !pending.sweeping {
            pending.sweeping = true;
            let this = self.clone();
            tokio::spawn(async move { this.sweep().await });
        }
        drop(pending);
        drop(replaced);
    }

    /// The handshake on connection `id` is complete.
    pub fn done(&self, id: RawFd) {
        let finished = self.lock().by_fd.remove(&id);
        // The duplicate is closed here, outside the lock.
        drop(finished);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// While handshakes are pending: at each deadline shut the socket down, and every
    /// [`POLL`] let go of the sockets Pingora has closed (failed handshakes). Ends when
    /// none is pending; the next [`Handshakes::start`] starts it again.
    async fn sweep(&self) {
        // With a timeout under POLL, a handshake started between two sweeps would otherwise
        // be seen only after its deadline.
        let tick = POLL.min(self.timeout);
        let mut next = Instant::now() + tick;
        loop {
            tokio::time::sleep_until(next).await;
            let now = Instant::now();
            let (expired, check, more) = {
                let mut pending = self.lock();
                let expired: Vec<Handshake> = pending
                    .by_fd
                    .extract_if(|_, h| h.deadline <= now)
                    .map(|(_, h)| h)
                    .collect();
                let mut check = Vec::new();
                // Handshakes started less than a POLL ago are left for the next sweep: most
                // will be done by then, and need no system call of the sweeper's.
                let settled = now + self.timeout.saturating_sub(POLL);
                next = now + tick;
                for (fd, h) in pending.by_fd.iter_mut() {
                    next = next.min(h.deadline);
                    if h.deadline > settled {
                        continue;
                    }
                    if h.socket.is_none() {
                        h.socket = h.dup.metadata().ok().map(|m| (m.dev(), m.ino()));
                    }
                    check.extend(h.socket.map(|socket| (*fd, socket)));
                }
                let more = !pending.by_fd.is_empty();
                pending.sweeping = more;
                (expired, check, more)
            };
            for h in expired {
                let _ = std::net::TcpStream::from(OwnedFd::from(h.dup))
                    .shutdown(std::net::Shutdown::Both);
                self.timeouts.inc();
            }
            // Sockets Pingora closed (the handshake failed): checked outside the lock, then
            // let go unless the number was taken by a new handshake meanwhile.
            let gone: Vec<_> = check
                .into_iter()
                .filter(|&(fd, socket)| !holds(fd, socket))
                .collect();
            if !gone.is_empty() {
                let mut pending = self.lock();
                let left: Vec<Handshake> = gone
                    .into_iter()
                    .filter_map(|(fd, socket)| {
                        let same = pending.by_fd.get(&fd)?.socket == Some(socket);
                        if same {
                            pending.by_fd.remove(&fd)
                        } else {
                            None
                        }
                    })
                    .collect();
                drop(pending);
                drop(left);
            }
            if !more {
                return;
            }
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
        assert!(h.pending.lock().unwrap().by_fd.is_empty());
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

    /// The sweeper ends when nothing is pending and the next handshake starts it again.
    #[tokio::test]
    async fn deadlines_hold_after_the_sweeper_has_ended() {
        let timeouts = counter();
        let h = Handshakes::new(Duration::from_millis(300), timeouts.clone());
        let (_c, first) = pair().await;
        h.start(first.as_raw_fd());
        h.done(first.as_raw_fd());
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while h.pending.lock().unwrap().sweeping {
            assert!(
                std::time::Instant::now() < deadline,
                "the sweeper never ended"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let (mut client, server) = pair().await;
        h.start(server.as_raw_fd());
        assert!(
            read_eof(&mut client).await,
            "the second handshake was not shut down"
        );
        assert_eq!(timeouts.get(), 1);
        assert!(!h.pending.lock().unwrap().sweeping);
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
        while !h.pending.lock().unwrap().by_fd.is_empty() {
            assert!(
                std::time::Instant::now() < deadline,
                "the entry was never removed"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
