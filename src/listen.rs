//! The proxy's listening addresses: checked before start-up, and confirmed for readiness.
//!
//! Pingora binds each service's listeners on its own thread after the server starts, and
//! when an address is taken it retries for 30 s and then gives up on that listener while
//! the rest of the process keeps running. Two guards make that visible instead:
//!
//! * [`check_free`] binds every configured address once before the server starts (not
//!   during a graceful upgrade, when the old process holds them), so a taken port is an
//!   error naming the key and address, and the process exits.
//! * [`Listening`] tells `/readyz` whether this process really listens on every proxy
//!   address: on Linux it looks for a listening socket on each address among the process's
//!   own file descriptors (`/proc/self/fd`, each asked with `getsockopt(SO_ACCEPTCONN)` and
//!   `getsockname`), so traffic is not sent before the listener exists. Once confirmed it
//!   stays confirmed.

use std::net::SocketAddr;
use std::os::fd::{BorrowedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};

/// Bind (and release) each `(key, address)` to find taken or unusable addresses early.
pub fn check_free<'a>(addrs: impl IntoIterator<Item = (&'a str, &'a str)>) -> anyhow::Result<()> {
    for (key, addr) in addrs {
        let parsed = crate::config::parse_listen(addr)
            .map_err(|e| anyhow::anyhow!("pingress.{key}: {e}"))?;
        std::net::TcpListener::bind(parsed)
            .map_err(|e| anyhow::anyhow!("cannot listen on {addr} (pingress.{key}): {e}"))?;
    }
    Ok(())
}

/// Whether the process listens on all of its proxy addresses yet.
pub struct Listening {
    addrs: Vec<SocketAddr>,
    confirmed: AtomicBool,
}

impl Listening {
    pub fn new(addrs: Vec<SocketAddr>) -> Listening {
        Listening {
            confirmed: AtomicBool::new(addrs.is_empty()),
            addrs,
        }
    }

    /// The addresses not listened on yet (empty once all are).
    pub fn missing(&self) -> Vec<SocketAddr> {
        if self.confirmed.load(Ordering::Acquire) {
            return Vec::new();
        }
        let missing = match own_listeners() {
            Some(own) => self
                .addrs
                .iter()
                // Address and port: an IPv6 socket's flow label and scope are not part of
                // what the config names.
                .filter(|a| !own.iter().any(|o| (o.ip(), o.port()) == (a.ip(), a.port())))
                .copied()
                .collect(),
            // No /proc to ask (not Linux): trust Pingora.
            None => Vec::new(),
        };
        if missing.is_empty() {
            self.confirmed.store(true, Ordering::Release);
        }
        missing
    }
}

/// Addresses of the TCP sockets in LISTEN state that this process holds; None without /proc.
///
/// Each descriptor number in `/proc/self/fd` is asked directly whether it is a listening
/// socket (`SO_ACCEPTCONN`; not a socket or already closed is a no) and where it is bound,
/// so the cost follows this process's descriptors alone. (`/proc/net/tcp` lists every TCP
/// socket of the network namespace: with `hostNetwork` that is the whole node's, tens of
/// megabytes read per readiness probe once a busy node has a few hundred thousand
/// connections in TIME_WAIT.)
fn own_listeners() -> Option<Vec<SocketAddr>> {
    let fds = std::fs::read_dir("/proc/self/fd").ok()?;
    Some(
        fds.flatten()
            .filter_map(|entry| entry.file_name().to_str()?.parse::<RawFd>().ok())
            .filter_map(listening_on)
            .collect(),
    )
}

/// The address the descriptor `fd` listens on, if it is a listening socket.
#[allow(unsafe_code)]
fn listening_on(fd: RawFd) -> Option<SocketAddr> {
    // SAFETY: only `getsockopt` and `getsockname` are called on the borrowed number, and
    // the borrow ends in this function. Another thread may close the number meanwhile (or
    // reuse it): the calls then fail with EBADF or describe the new descriptor, and neither
    // reads nor writes memory of ours.
    let fd = unsafe { BorrowedFd::borrow_raw(fd) };
    let socket = socket2::SockRef::from(&fd);
    if !socket.is_listener().ok()? {
        return None;
    }
    socket.local_addr().ok()?.as_socket()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_listener_is_found_and_a_foreign_address_is_missing() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let free = {
            let t = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            t.local_addr().unwrap()
        };
        let listening = Listening::new(vec![addr, free]);
        assert_eq!(listening.missing(), vec![free]);
        assert_eq!(
            Listening::new(vec![addr]).missing(),
            Vec::<SocketAddr>::new()
        );
    }

    #[test]
    fn a_connection_on_the_address_is_not_a_listener() {
        // An accepted connection has the listener's local address; once the listener is
        // closed, the address is no longer listened on, though a socket of ours still has it.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let _client = std::net::TcpStream::connect(addr).unwrap();
        let (accepted, _) = l.accept().unwrap();
        assert_eq!(accepted.local_addr().unwrap(), addr);
        assert!(Listening::new(vec![addr]).missing().is_empty());
        drop(l);
        assert_eq!(Listening::new(vec![addr]).missing(), vec![addr]);
    }

    #[test]
    fn an_ipv6_listener_is_found() {
        let Ok(l) = std::net::TcpListener::bind("[::1]:0") else {
            return; // no IPv6 loopback on this machine
        };
        let addr = l.local_addr().unwrap();
        assert!(Listening::new(vec![addr]).missing().is_empty());
    }

    #[test]
    fn a_taken_address_is_an_error_naming_key_and_address() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let e = check_free([("https_listen", addr.as_str())]).unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains(&addr) && text.contains("pingress.https_listen"),
            "{text}"
        );
        assert!(check_free([("admin_listen", "nonsense")]).is_err());
    }
}
