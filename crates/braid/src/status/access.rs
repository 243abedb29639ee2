//! Who may read the HTTP status API, checked on every request before it reaches a handler.
//!
//! The API lists every connection of the LAN with its destination, so besides the listener's
//! source filter (loopback and its LAN, or `control_allow_from`; see [`crate::allow_from`]),
//! which resets other sources before a byte of HTTP:
//! - **Host header** (DNS rebinding): a page on `evil.example` can point its own name at the
//!   router's address and read the API from a LAN browser, with `Host: evil.example`. The API
//!   answers only to an IP address, `localhost`, a single-label name (resolved on the LAN, not by
//!   a stranger's DNS) and the names in `control_hosts`; anything else gets 421.
//! - **Token** (optional, `control_token`): `/api/status` and `/metrics` need
//!   `Authorization: Bearer TOKEN`, or the `braid_token` cookie that opening the dashboard as
//!   `/?token=TOKEN` sets (same-site only, so other sites' pages cannot use it). The dashboard
//!   page itself holds no data and needs none.

use std::net::IpAddr;

use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use sha2::{Digest, Sha256};

use crate::allow_from::AllowFrom;

/// The cookie that carries the token for the dashboard's own requests.
const COOKIE: &str = "braid_token";

/// The access rules of one status API.
#[derive(Debug, Clone, Default)]
pub struct Access {
    /// Sources the listener serves (loopback always); others are reset at accept.
    pub allow_from: AllowFrom,
    /// `control_token`.
    pub token: Option<String>,
    /// `control_hosts`, lowercase.
    pub hosts: Vec<String>,
}

/// A request turned away: the status and a one-line reason with the fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied {
    /// 421 or 401.
    pub status: StatusCode,
    /// Shown as the body.
    pub reason: String,
}

/// What an admitted request needs on its way out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Admitted {
    /// A `Set-Cookie` value, when the dashboard was opened with `?token=`.
    pub set_cookie: Option<HeaderValue>,
}

impl Access {
    /// Sources `allow_from`, with the token and host names of `cfg`.
    pub fn new(allow_from: AllowFrom, cfg: &crate::config::ControlAccess) -> Access {
        Access {
            allow_from,
            token: cfg.token.as_ref().map(|t| t.as_str().to_string()),
            hosts: cfg.hosts.clone(),
        }
    }

    /// Checks one request for `uri` with `headers`.
    pub fn check(&self, uri: &Uri, headers: &HeaderMap) -> Result<Admitted, Denied> {
        if let Some(host) = headers.get(header::HOST) {
            let host = host.to_str().unwrap_or("");
            if !self.host_allowed(host) {
                return Err(Denied {
                    status: StatusCode::MISDIRECTED_REQUEST,
                    reason: format!(
                        "this status API answers to its IP address, localhost and the names in control_hosts, not to {:?} (a protection against DNS rebinding); fix: add the name to control_hosts",
                        braid_proto::logsafe::escaped(host).to_string()
                    ),
                });
            }
        }
        let Some(token) = &self.token else {
            return Ok(Admitted::default());
        };
        let offered = query_token(uri);
        if uri.path() == "/" {
            // The page holds no data; a token in its URL becomes the cookie for its requests.
            let set_cookie = offered.filter(|t| same(t, token)).and_then(|t| {
                HeaderValue::from_str(&format!("{COOKIE}={t}; HttpOnly; SameSite=Strict; Path=/"))
                    .ok()
            });
            return Ok(Admitted { set_cookie });
        }
        let given = bearer(headers).or_else(|| cookie(headers)).or(offered);
        if given.is_some_and(|g| same(&g, token)) {
            Ok(Admitted::default())
        } else {
            Err(Denied {
                status: StatusCode::UNAUTHORIZED,
                reason: "this status API needs its token (control_token): send `Authorization: Bearer TOKEN`, or open the dashboard as /?token=TOKEN".into(),
            })
        }
    }

    fn host_allowed(&self, host: &str) -> bool {
        let name = strip_port(host).to_ascii_lowercase();
        let bare = name.trim_start_matches('[').trim_end_matches(']');
        bare.parse::<IpAddr>().is_ok()
            || name == "localhost"
            || (!name.is_empty() && !name.contains('.'))
            || self.hosts.contains(&name)
    }
}

/// `host:port` → `host`; `[v6]:port` → `[v6]`; a bare IPv6 address stays whole.
fn strip_port(host: &str) -> &str {
    if let Some(end) = host.find(']') {
        return &host[..=end];
    }
    match host.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') && p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_string())
}

fn cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|kv| {
            let (k, v) = kv.trim().split_once('=')?;
            (k == COOKIE).then(|| v.to_string())
        })
}

/// `token=…` from the query, with `%XX` decoded (and `+` kept: base64 tokens contain it).
fn query_token(uri: &Uri) -> Option<String> {
    let raw = uri
        .query()?
        .split('&')
        .find_map(|kv| kv.strip_prefix("token="))?;
    let b = raw.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |j: usize| b.get(j).and_then(|c| (*c as char).to_digit(16));
        match (b[i], hex(i + 1), hex(i + 2)) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// Compares two tokens in time that does not depend on where they differ.
fn same(a: &str, b: &str) -> bool {
    let (x, y) = (Sha256::digest(a.as_bytes()), Sha256::digest(b.as_bytes()));
    x.iter()
        .zip(y.iter())
        .fold(0u8, |acc, (p, q)| acc | (p ^ q))
        == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(
        host: Option<&str>,
        uri: &str,
        extra: &[(header::HeaderName, &str)],
    ) -> (Uri, HeaderMap) {
        let mut h = HeaderMap::new();
        if let Some(host) = host {
            h.insert(header::HOST, HeaderValue::from_str(host).unwrap());
        }
        for (k, v) in extra {
            h.append(k.clone(), HeaderValue::from_str(v).unwrap());
        }
        (uri.parse().unwrap(), h)
    }

    #[test]
    fn rebinding_host_is_misdirected_and_own_names_are_served() {
        let a = Access {
            hosts: vec!["router.lan".into()],
            ..Default::default()
        };
        for ok in [
            "192.168.1.1:9090",
            "127.0.0.1",
            "[::1]:9090",
            "::1",
            "localhost:9090",
            "router",
            "ROUTER.lan:9090",
        ] {
            let (u, h) = req(Some(ok), "/api/status", &[]);
            assert!(a.check(&u, &h).is_ok(), "{ok}");
        }
        for bad in [
            "evil.example:9090",
            "evil.example",
            "192.168.1.1.evil.example",
            "localhost.evil.example",
        ] {
            let (u, h) = req(Some(bad), "/api/status", &[]);
            let e = a.check(&u, &h).unwrap_err();
            assert_eq!(e.status, StatusCode::MISDIRECTED_REQUEST, "{bad}");
            assert!(e.reason.contains("control_hosts"), "{}", e.reason);
        }
        // A client that sends no Host (HTTP/1.0 tools) is no browser.
        let (u, h) = req(None, "/api/status", &[]);
        assert!(a.check(&u, &h).is_ok());
    }

    #[test]
    fn token_is_needed_for_data_by_header_cookie_or_query() {
        let a = Access {
            token: Some("s3cr3t+t/ken=0123".into()),
            ..Default::default()
        };
        let (u, h) = req(Some("127.0.0.1"), "/api/status", &[]);
        assert_eq!(
            a.check(&u, &h).unwrap_err().status,
            StatusCode::UNAUTHORIZED
        );
        let (u, h) = req(
            Some("127.0.0.1"),
            "/api/status",
            &[(header::AUTHORIZATION, "Bearer wrong")],
        );
        assert!(a.check(&u, &h).is_err());
        let (u, h) = req(
            Some("127.0.0.1"),
            "/metrics",
            &[(header::AUTHORIZATION, "Bearer s3cr3t+t/ken=0123")],
        );
        assert!(a.check(&u, &h).is_ok());
        let (u, h) = req(
            Some("127.0.0.1"),
            "/api/status",
            &[(header::COOKIE, "x=1; braid_token=s3cr3t+t/ken=0123")],
        );
        assert!(a.check(&u, &h).is_ok());
        // The page is served without it, and turns a right token in its URL into the cookie.
        let (u, h) = req(Some("127.0.0.1"), "/", &[]);
        assert_eq!(a.check(&u, &h).unwrap().set_cookie, None);
        let (u, h) = req(Some("127.0.0.1"), "/?token=s3cr3t%2Bt/ken=0123", &[]);
        let set = a.check(&u, &h).unwrap().set_cookie.unwrap();
        assert!(
            set.to_str()
                .unwrap()
                .starts_with("braid_token=s3cr3t+t/ken=0123;"),
            "{set:?}"
        );
        assert!(set.to_str().unwrap().contains("SameSite=Strict"));
        let (u, h) = req(Some("127.0.0.1"), "/?token=nope", &[]);
        assert_eq!(a.check(&u, &h).unwrap().set_cookie, None);
    }
}
