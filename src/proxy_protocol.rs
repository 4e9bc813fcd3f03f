//! PROXY protocol v1 and v2 on the listeners configured for it (`pingress.proxy_protocol`):
//! the header an L4 load balancer sends before anything else is read and removed, and the
//! address it carries becomes the connection's peer address, so the rest of pingress sees
//! the real client. Parsing is the `ppp` crate's.
//!
//! On such a listener every connection must start with a header, read within
//! [`HEADER_TIMEOUT`], from a peer in `trusted_proxies` when that list is set; otherwise the
//! connection is closed before any HTTP or TLS. `PROXY UNKNOWN` (v1) and the v2 LOCAL
//! command (load balancer health checks) keep the socket's own peer address.
//!
//! Pingora runs [`ProxyProtocol::read`] through two hooks: its pre-TLS callback on HTTPS
//! listeners ([`PreTls`], which also starts the TLS handshake deadline), and the proxy
//! app's `process_new` wrapper on plain ones. Bytes read past the header are handed back to
//! the stream (Pingora's `rewind`), so nothing is lost.

use std::net::{IpAddr, SocketAddr};
use std::os::unix::io::AsRawFd;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::listeners::PreTlsProcess;
use pingora::protocols::l4::socket::SocketAddr as PSocketAddr;
use pingora::protocols::l4::stream::Stream as L4Stream;
use pingora::protocols::{GetSocketDigest, SocketDigest};
use ppp::{HeaderResult, PartialResult};
use prometheus::IntCounterVec;
use tokio::io::AsyncReadExt;

use crate::client::Trust;

/// How long a connection may take to send its PROXY header.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// Longest header accepted: v1 is at most 107 bytes; v2 carries TLVs, kept to this.
const MAX_HEADER: usize = 4096;

/// Longest v1 header line, CRLF included (the spec's figure).
const V1_MAX: usize = 107;

/// Which listeners expect a PROXY header, and from whom.
pub struct ProxyProtocol {
    listeners: Vec<SocketAddr>,
    trust: Arc<Trust>,
    rejected: IntCounterVec,
}

/// Why a connection was closed.
#[derive(Debug, PartialEq)]
pub enum Refused {
    /// The peer is not in `trusted_proxies`.
    Untrusted(IpAddr),
    /// No complete header in time.
    Timeout,
    /// Not a PROXY header.
    Malformed(String),
    /// The connection closed or failed first.
    Io(String),
}

impl Refused {
    fn reason(&self) -> &'static str {
        match self {
            Refused::Untrusted(_) => "untrusted",
            Refused::Timeout => "timeout",
            Refused::Malformed(_) => "malformed",
            Refused::Io(_) => "io",
        }
    }
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refused::Untrusted(ip) => write!(
                f,
                "PROXY header from {ip}, which is not in pingress.trusted_proxies"
            ),
            Refused::Timeout => write!(f, "no PROXY header within {HEADER_TIMEOUT:?}"),
            Refused::Malformed(e) => write!(f, "not a PROXY protocol header: {e}"),
            Refused::Io(e) => write!(f, "reading the PROXY header: {e}"),
        }
    }
}

/// Parse a complete header at the start of `buf`: its length and the source address it
/// carries (None for LOCAL / UNKNOWN). `Ok(None)` means more bytes are needed.
pub fn parse(buf: &[u8]) -> Result<Option<(usize, Option<SocketAddr>)>, String> {
    let header = HeaderResult::parse(buf);
    if header.is_incomplete() {
        // `ppp` calls a v1 line with missing fields incomplete even once its CRLF is in:
        // a v1 header is one line of at most 107 bytes.
        if let HeaderResult::V1(Err(e)) = &header {
            if buf.windows(2).any(|w| w == b"\r\n") || buf.len() > V1_MAX {
                return Err(format!("{e:?}"));
            }
        }
        // A v2 header's length is known from its first 16 bytes.
        return if buf.len() >= MAX_HEADER {
            Err(format!("longer than {MAX_HEADER} bytes"))
        } else {
            Ok(None)
        };
    }
    match header {
        HeaderResult::V1(Ok(h)) => {
            let source = match h.addresses {
                ppp::v1::Addresses::Tcp4(a) => {
                    Some(SocketAddr::new(a.source_address.into(), a.source_port))
                }
                ppp::v1::Addresses::Tcp6(a) => {
                    Some(SocketAddr::new(a.source_address.into(), a.source_port))
                }
                ppp::v1::Addresses::Unknown => None,
            };
            Ok(Some((h.header.len(), source)))
        }
        HeaderResult::V2(Ok(h)) => {
            let source = match (h.command, h.addresses) {
                (ppp::v2::Command::Local, _) => None,
                (_, ppp::v2::Addresses::IPv4(a)) => {
                    Some(SocketAddr::new(a.source_address.into(), a.source_port))
                }
                (_, ppp::v2::Addresses::IPv6(a)) => {
                    Some(SocketAddr::new(a.source_address.into(), a.source_port))
                }
                _ => None,
            };
            Ok(Some((h.len(), source)))
        }
        HeaderResult::V1(Err(e)) => Err(format!("{e:?}")),
        HeaderResult::V2(Err(e)) => Err(format!("{e:?}")),
    }
}

impl ProxyProtocol {
    /// `listeners`: the addresses configured for it (as bound: `0.0.0.0:80` matches any
    /// local address on port 80).
    pub fn new(listeners: Vec<SocketAddr>, trust: Arc<Trust>, rejected: IntCounterVec) -> Self {
        ProxyProtocol {
            listeners,
            trust,
            rejected,
        }
    }

    /// Whether a connection accepted on local address `local` must send a header.
    pub fn expects(&self, local: Option<SocketAddr>) -> bool {
        let Some(local) = local else {
            return false;
        };
        self.listeners.iter().any(|l| {
            l.port() == local.port()
                && (l.ip().is_unspecified()
                    || crate::client::canonical(l.ip()) == crate::client::canonical(local.ip()))
        })
    }

    /// The stream's local address.
    pub fn local_addr(stream: &L4Stream) -> Option<SocketAddr> {
        stream
            .get_socket_digest()
            .and_then(|d| d.local_addr().and_then(|a| a.as_inet()).copied())
    }

    /// Read and remove the header, and make its source the stream's peer address.
    pub async fn read(&self, stream: &mut L4Stream) -> Result<(), Refused> {
        let digest = stream.get_socket_digest();
        let peer = digest
            .as_ref()
            .and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).copied());
        if let Some(p) = peer {
            if self.trust.any() && !self.trust.trusts(p.ip()) {
                return Err(Refused::Untrusted(p.ip()));
            }
        }
        let mut buf = Vec::with_capacity(256);
        let (len, source) = tokio::time::timeout(HEADER_TIMEOUT, async {
            let mut chunk = [0u8; 512];
            loop {
                let n = stream
                    .read(&mut chunk)
                    .await
                    .map_err(|e| Refused::Io(e.to_string()))?;
                if n == 0 {
                    return Err(Refused::Io("connection closed".into()));
                }
                buf.extend_from_slice(&chunk[..n]);
                if let Some(done) = parse(&buf).map_err(Refused::Malformed)? {
                    return Ok(done);
                }
            }
        })
        .await
        .map_err(|_| Refused::Timeout)??;
        if len < buf.len() {
            stream.rewind(&buf[len..]);
        }
        if let Some(source) = source {
            let d = SocketDigest::from_raw_fd(stream.as_raw_fd());
            let _ = d.peer_addr.set(Some(PSocketAddr::Inet(source)));
            if let Some(local) = digest.as_ref().and_then(|d| d.local_addr().cloned()) {
                let _ = d.local_addr.set(Some(local));
            }
            stream.set_socket_digest(d);
        }
        Ok(())
    }

    /// [`read`](Self::read) when the listener expects a header; a refusal is counted and
    /// logged, and closes the connection.
    pub async fn accept(&self, stream: &mut L4Stream) -> Result<(), Refused> {
        if !self.expects(Self::local_addr(stream)) {
            return Ok(());
        }
        let r = self.read(stream).await;
        if let Err(e) = &r {
            self.rejected.with_label_values(&[e.reason()]).inc();
            tracing::debug!(error = %e, "connection closed");
        }
        r
    }
}

/// Pingora's pre-TLS hook (HTTPS listeners).
pub struct PreTls {
    /// The TLS handshake deadline, started before the PROXY header is read so that it
    /// covers both.
    pub handshakes: Arc<crate::edge::handshake::Handshakes>,
    pub proxy: Option<Arc<ProxyProtocol>>,
}

#[async_trait]
impl PreTlsProcess for PreTls {
    async fn process(&self, stream: &mut L4Stream) -> pingora::Result<()> {
        self.handshakes.start(stream.as_raw_fd());
        let Some(pp) = &self.proxy else {
            return Ok(());
        };
        pp.accept(stream)
            .await
            .map_err(|e| pingora::Error::explain(pingora::ErrorType::AcceptError, e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_headers_give_their_length_and_source() {
        let h = b"PROXY TCP4 203.0.113.9 10.0.0.1 51234 80\r\nGET / HTTP/1.1\r\n";
        let (len, src) = parse(h).unwrap().unwrap();
        assert_eq!(&h[len..len + 3], b"GET");
        assert_eq!(src, Some("203.0.113.9:51234".parse().unwrap()));
        let h = b"PROXY TCP6 2001:db8::9 2001:db8::1 51234 443\r\n";
        assert_eq!(
            parse(h).unwrap().unwrap().1,
            Some("[2001:db8::9]:51234".parse().unwrap())
        );
        assert_eq!(parse(b"PROXY UNKNOWN\r\n").unwrap().unwrap().1, None);
        // Not complete yet.
        assert_eq!(parse(b"PROXY TCP4 203.0").unwrap(), None);
        assert_eq!(parse(b"PRO").unwrap(), None);
    }

    #[test]
    fn v2_headers_give_their_length_and_source() {
        let h = ppp::v2::Builder::with_addresses(
            ppp::v2::Version::Two | ppp::v2::Command::Proxy,
            ppp::v2::Protocol::Stream,
            (
                "198.51.100.4:4000".parse::<SocketAddr>().unwrap(),
                "10.0.0.1:443".parse::<SocketAddr>().unwrap(),
            ),
        )
        .build()
        .unwrap();
        let mut bytes = h.clone();
        bytes.extend_from_slice(b"\x16\x03\x01");
        let (len, src) = parse(&bytes).unwrap().unwrap();
        assert_eq!(len, h.len());
        assert_eq!(src, Some("198.51.100.4:4000".parse().unwrap()));
        // Incomplete v2: the signature alone.
        assert_eq!(parse(&h[..14]).unwrap(), None);
        let local = ppp::v2::Builder::with_addresses(
            ppp::v2::Version::Two | ppp::v2::Command::Local,
            ppp::v2::Protocol::Stream,
            ppp::v2::Addresses::Unspecified,
        )
        .build()
        .unwrap();
        assert_eq!(parse(&local).unwrap().unwrap().1, None);
    }

    #[test]
    fn anything_else_is_malformed() {
        for bad in [
            &b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"[..],
            b"PROXY TCP4 nonsense here\r\n",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
        ] {
            assert!(parse(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        // No line end within the limit.
        let mut long = b"PROXY TCP4 ".to_vec();
        long.resize(MAX_HEADER, b'1');
        assert!(parse(&long).is_err());
    }
}
