//! External auth (auth-url): a sub-request to the auth service decides, with nginx
//! `auth_request` semantics as ingress-nginx configures them.
//!
//! * The sub-request: auth-method (GET by default), no body; the client's headers minus
//!   framing and hop-by-hop ones, `Host` of the auth URL, and `X-Original-URL`,
//!   `X-Original-Method`, `X-Sent-From: nginx-ingress-controller`, `X-Real-IP`,
//!   `X-Forwarded-For`, `X-Auth-Request-Redirect`, `X-Request-ID`; `X-Forwarded-Proto` is
//!   not sent. With auth-method set, also `X-Original-URI` and `X-Scheme` (as the
//!   ingress-nginx template does).
//! * The answer: 2xx passes, copying auth-response-headers into the upstream request (a
//!   header the auth service did not send is removed); 401 and 403 go to the client (401
//!   with the service's `WWW-Authenticate`), and with auth-signin a 401 becomes a 302 to
//!   the sign-in page; anything else, or no answer in time, is a 500.
//! * `Set-Cookie` of the auth answer reaches the client on a pass, and on a refusal too
//!   with auth-always-set-cookie.
//! * auth-cache-key: verdicts of the listed statuses are kept for auth-cache-duration,
//!   keyed by the rendered URL and key.

use std::num::NonZeroUsize;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use http::{HeaderName, HeaderValue};
use lru::LruCache;

use crate::translate::model::ExternalAuth;
use crate::translate::template::Vars;

/// What the auth service said.
#[derive(Debug, Clone)]
pub enum Verdict {
    /// Proxy, with these header changes upstream and cookies for the client.
    Pass {
        headers: Vec<(HeaderName, Option<HeaderValue>)>,
        cookies: Vec<HeaderValue>,
    },
    /// 401 or 403 to the client.
    Refuse {
        status: u16,
        www_authenticate: Option<HeaderValue>,
        cookies: Vec<HeaderValue>,
    },
    /// 302 to the sign-in page.
    SignIn {
        location: String,
        cookies: Vec<HeaderValue>,
    },
    /// 500: the auth service failed or did not answer; the reason is logged.
    Error(String),
}

/// The external-auth client and cache, shared by all routes.
pub struct Checker {
    client: reqwest::Client,
    cache: Mutex<LruCache<[u8; 32], (Instant, Verdict)>>,
}

/// Besides [`super::HOP_BY_HOP`]: the client's Host (the auth URL's is sent), its proxy
/// credentials, and X-Forwarded-Proto (as nginx's auth_request).
const NOT_SENT: &[&str] = &["host", "proxy-authorization", "x-forwarded-proto"];

impl Checker {
    pub fn new(connect_timeout: Duration) -> Checker {
        let client = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(connect_timeout)
            .pool_idle_timeout(Duration::from_secs(60))
            .build()
            .unwrap_or_default();
        Checker {
            client,
            cache: Mutex::new(LruCache::new(
                NonZeroUsize::new(10_000).unwrap_or(NonZeroUsize::MIN),
            )),
        }
    }

    /// Ask the auth service about a request, within `timeout`.
    pub async fn check(
        &self,
        ext: &ExternalAuth,
        v: &Vars<'_>,
        forwarded_for: Option<&HeaderValue>,
        timeout: Duration,
    ) -> Verdict {
        let url = ext.url.render(v);
        let cache_key = ext.cache.as_ref().map(|(key, _, _)| {
            let mut d = ring::digest::Context::new(&ring::digest::SHA256);
            for part in [url.as_bytes(), key.render(v).as_bytes()] {
                d.update(&(part.len() as u64).to_le_bytes());
                d.update(part);
            }
            let mut k = [0u8; 32];
            k.copy_from_slice(d.finish().as_ref());
            k
        });
        if let Some(k) = &cache_key {
            let hit = self.cache.lock().ok().and_then(|mut c| {
                let (until, verdict) = c.get(k)?;
                (Instant::now() < *until).then(|| verdict.clone())
            });
            if let Some(verdict) = hit {
                return verdict;
            }
        }
        let (verdict, status) = self.ask(ext, &url, v, forwarded_for, timeout).await;
        if let (Some(k), Some((_, codes, ttl)), Some(status)) = (cache_key, &ext.cache, status) {
            if codes.contains(&status) {
                if let Ok(mut c) = self.cache.lock() {
                    c.put(k, (Instant::now() + *ttl, verdict.clone()));
                }
            }
        }
        verdict
    }

    async fn ask(
        &self,
        ext: &ExternalAuth,
        url: &str,
        v: &Vars<'_>,
        forwarded_for: Option<&HeaderValue>,
        timeout: Duration,
    ) -> (Verdict, Option<u16>) {
        let mut headers = http::HeaderMap::new();
        for (name, value) in v.headers {
            if !super::HOP_BY_HOP.contains(&name.as_str()) && !NOT_SENT.contains(&name.as_str()) {
                headers.append(name.clone(), value.clone());
            }
        }
        let mut set = |name: &'static str, value: String| {
            if let Ok(val) = HeaderValue::try_from(value) {
                headers.insert(HeaderName::from_static(name), val);
            }
        };
        set(
            "x-original-url",
            format!("{}://{}{}", v.scheme, v.host, v.request_uri),
        );
        set("x-original-method", v.method.to_string());
        set("x-sent-from", "nginx-ingress-controller".into());
        if let Some(ip) = v.remote_addr {
            set("x-real-ip", ip.to_string());
        }
        let redirect = match &ext.request_redirect {
            Some(t) => t.render(v),
            None => v.request_uri.to_string(),
        };
        set("x-auth-request-redirect", redirect);
        if let Some(id) = v.request_id {
            set("x-request-id", id.to_string());
        }
        if ext.method_set {
            set("x-original-uri", v.request_uri.to_string());
            set("x-scheme", v.scheme.to_string());
        }
        if let Some(xff) = forwarded_for {
            headers.insert(HeaderName::from_static("x-forwarded-for"), xff.clone());
        }
        let sent = self
            .client
            .request(ext.method.clone(), url)
            .headers(headers)
            .timeout(timeout)
            .send()
            .await;
        let resp = match sent {
            Ok(r) => r,
            Err(e) => {
                let why = if e.is_timeout() {
                    format!("auth service {url} did not answer within {timeout:?}")
                } else {
                    format!("auth service {url}: {e}")
                };
                return (Verdict::Error(why), None);
            }
        };
        let status = resp.status().as_u16();
        let h = resp.headers();
        let cookies: Vec<HeaderValue> = h
            .get_all(http::header::SET_COOKIE)
            .iter()
            .cloned()
            .collect();
        let verdict = match status {
            200..=299 => Verdict::Pass {
                headers: ext
                    .response_headers
                    .iter()
                    .map(|n| (n.clone(), h.get(n).cloned()))
                    .collect(),
                cookies,
            },
            401 if ext.signin.is_some() => {
                let signin = ext.signin.as_ref().map(|t| t.render(v)).unwrap_or_default();
                let cookies = if ext.always_set_cookie {
                    cookies
                } else {
                    Vec::new()
                };
                Verdict::SignIn {
                    location: signin_location(&signin, &ext.signin_param, v),
                    cookies,
                }
            }
            401 | 403 => Verdict::Refuse {
                status,
                www_authenticate: h.get(http::header::WWW_AUTHENTICATE).cloned(),
                cookies: if ext.always_set_cookie {
                    cookies
                } else {
                    Vec::new()
                },
            },
            other => Verdict::Error(format!("auth service {url} answered {other}")),
        };
        // Drain nothing: the body is dropped (the connection is then not reused for a
        // large body, which auth answers do not have).
        (verdict, Some(status))
    }
}

/// The sign-in URL with `param=<scheme>://<host><escaped request uri>` added, unless it
/// carries that parameter already (ingress-nginx's `buildAuthSignURL`).
pub fn signin_location(signin: &str, param: &str, v: &Vars<'_>) -> String {
    let query = signin.split_once('?').map(|(_, q)| q).unwrap_or("");
    let has = query
        .split('&')
        .any(|kv| kv.split('=').next() == Some(param));
    if has {
        return signin.to_string();
    }
    let escaped =
        percent_encoding::utf8_percent_encode(v.request_uri, crate::translate::template::COMPONENT);
    let back = format!("{}://{}{escaped}", v.scheme, v.host);
    let sep = if signin.contains('?') { '&' } else { '?' };
    format!("{signin}{sep}{param}={back}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signin_urls_get_the_way_back_once() {
        let h = http::HeaderMap::new();
        let v = Vars {
            host: "app.example.com",
            scheme: "https",
            method: "GET",
            request_uri: "/a b?x=1",
            headers: &h,
            remote_addr: None,
            request_id: None,
            server_port: None,
        };
        assert_eq!(
            signin_location("https://auth.example.com/start", "rd", &v),
            "https://auth.example.com/start?rd=https://app.example.com%2Fa%20b%3Fx%3D1"
        );
        assert_eq!(
            signin_location("https://auth.example.com/start?x=1", "next", &v),
            "https://auth.example.com/start?x=1&next=https://app.example.com%2Fa%20b%3Fx%3D1"
        );
        assert_eq!(
            signin_location("https://a.test/s?rd=/home", "rd", &v),
            "https://a.test/s?rd=/home"
        );
    }
}
