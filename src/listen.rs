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
//!   own file descriptors (`/proc/net/tcp{,6}` rows whose inode is one of `/proc/self/fd`),
//!   so traffic is not sent before the listener exists. Once confirmed it stays confirmed.

use std::net::SocketAddr;
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
                .filter(|a| !own.contains(a))
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
fn own_listeners() -> Option<Vec<SocketAddr>> {
    let mut inodes = std::collections::HashSet::new();
    for fd in std::fs::read_dir("/proc/self/fd").ok()?.flatten() {
        if let Ok(target) = std::fs::read_link(fd.path()) {
            let t = target.to_string_lossy();
            if let Some(inode) = t.strip_prefix("socket:[").and_then(|t| t.strip_suffix(']')) {
                inodes.insert(inode.to_string());
            }
        }
    }
    let mut out = Vec::new();
    for table in ["/proc/self/net/tcp", "/proc/self/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        out.extend(
            parse_listeners(&text)
                .into_iter()
                .filter(|(_, inode)| inodes.contains(*inode))
                .map(|(addr, _)| addr),
        );
    }
    Some(out)
}

/// `(local address, inode)` of the LISTEN rows of a `/proc/net/tcp` or `tcp6` table.
fn parse_listeners(text: &str) -> Vec<(SocketAddr, &str)> {
    const LISTEN: &str = "0A";
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 10 || f[3] != LISTEN {
                return None;
            }
            Some((parse_hex_addr(f[1])?, f[9]))
        })
        .collect()
}

/// `0100007F:1F90` (IPv4) or 32 hex digits and a port (IPv6): each 32-bit word of the
/// address is in the kernel's (little-endian on x86/arm) byte order, the port is plain hex.
fn parse_hex_addr(s: &str) -> Option<SocketAddr> {
    let (ip, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let mut bytes = Vec::with_capacity(16);
    for i in (0..ip.len()).step_by(8) {
        let word = u32::from_str_radix(ip.get(i..i + 8)?, 16).ok()?;
        bytes.extend_from_slice(&word.to_ne_bytes());
    }
    let ip = match bytes.len() {
        4 => std::net::IpAddr::from(<[u8; 4]>::try_from(bytes).ok()?),
        16 => std::net::IpAddr::from(<[u8; 16]>::try_from(bytes).ok()?),
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_net_tcp_rows_are_parsed() {
        let v4 = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0 100 0 0 10 0\n\
   1: 0100007F:1F91 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 4243 1 0 100 0 0 10 0\n";
        let rows = parse_listeners(v4);
        if cfg!(target_endian = "little") {
            assert_eq!(rows, vec![("127.0.0.1:8080".parse().unwrap(), "4242")]);
        }
        let v6 = "header\n   0: 00000000000000000000000001000000:01BB 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 77 1 0 100 0 0 10 0\n";
        if cfg!(target_endian = "little") {
            assert_eq!(
                parse_listeners(v6),
                vec![("[::1]:443".parse().unwrap(), "77")]
            );
        }
    }

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
