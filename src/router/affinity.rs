//! Affinity keys: what a request is routed by, read from its headers, query
//! string or address without allocating.
//!
//! One mode is in force at a time, and only its source is read:
//!
//! - `lb-cookie`: a valid balancer cookie routes to its session (or, if the
//!   table lost it, to the backend it names); an invalid one is counted as
//!   forged and ignored; with none, a new session is placed and the cookie set.
//! - `app-cookie`, `header`, `query`: the application's session id is the key;
//!   an id the table does not know is placed and stored; no id → placement,
//!   no session.
//! - `source-ip`: the client address; `X-Forwarded-For` counts only when the
//!   peer is a trusted proxy, and then its rightmost untrusted address wins.
//! - `none`: every request placed afresh.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::atomic::{AtomicU8, Ordering};

use http::HeaderMap;
use http::header::COOKIE;

use super::SessionKey;
use super::lb_cookie::CookieCodec;
use super::topology::Topology;

/// The affinity modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AffinityMode {
    /// The balancer's own cookie.
    #[default]
    LbCookie,
    /// The application's session cookie.
    AppCookie,
    /// A session header.
    Header,
    /// A query parameter.
    Query,
    /// The client address.
    SourceIp,
    /// No affinity.
    None,
}

impl AffinityMode {
    /// Every mode, in the order `m` cycles through them.
    pub const ALL: [AffinityMode; 6] = [
        AffinityMode::LbCookie,
        AffinityMode::AppCookie,
        AffinityMode::Header,
        AffinityMode::Query,
        AffinityMode::SourceIp,
        AffinityMode::None,
    ];

    /// The name used on the command line, in config files and in the UI.
    pub fn as_str(self) -> &'static str {
        match self {
            AffinityMode::LbCookie => "lb-cookie",
            AffinityMode::AppCookie => "app-cookie",
            AffinityMode::Header => "header",
            AffinityMode::Query => "query",
            AffinityMode::SourceIp => "source-ip",
            AffinityMode::None => "none",
        }
    }

    /// The next mode in [`AffinityMode::ALL`], wrapping.
    pub fn next(self) -> AffinityMode {
        AffinityMode::ALL[(self as usize + 1) % AffinityMode::ALL.len()]
    }
}

impl fmt::Display for AffinityMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for AffinityMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        AffinityMode::ALL
            .iter()
            .copied()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = AffinityMode::ALL.iter().map(|m| m.as_str()).collect();
                format!("unknown affinity mode {s:?}: expected one of {}", names.join(", "))
            })
    }
}

/// An address block such as `10.0.0.0/8`, `127.0.0.1` or `::1/128`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    /// Does the block contain `ip`?
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix)).unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for IpNet {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("{s:?} is not an address or CIDR block"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|&p| p <= max)
                .ok_or_else(|| format!("{s:?}: prefix length must be 0-{max}"))?,
            None => max,
        };
        Ok(IpNet { addr, prefix })
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// Names and trust settings for key extraction.
#[derive(Debug, Clone, PartialEq)]
pub struct AffinityConfig {
    /// The mode to start with.
    pub mode: AffinityMode,
    /// The application's session cookie name (`app-cookie`).
    pub app_cookie: String,
    /// The session header name (`header`).
    pub header: http::HeaderName,
    /// The query parameter name (`query`).
    pub query_param: String,
    /// Peers whose `X-Forwarded-For` is believed (`source-ip`).
    pub trusted_proxies: Vec<IpNet>,
}

impl Default for AffinityConfig {
    fn default() -> Self {
        AffinityConfig {
            mode: AffinityMode::LbCookie,
            app_cookie: "session_id".into(),
            header: http::HeaderName::from_static("x-session-id"),
            query_param: "session".into(),
            trusted_proxies: Vec::new(),
        }
    }
}

/// The parts of a request that keys come from.
#[derive(Debug, Clone, Copy)]
pub struct RequestView<'a> {
    /// The request headers.
    pub headers: &'a HeaderMap,
    /// The query string, without `?`.
    pub query: Option<&'a str>,
    /// The TCP peer's address.
    pub peer: IpAddr,
}

/// The key read from a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extracted<'a> {
    /// What to route by.
    pub key: SessionKey<'a>,
    /// A balancer cookie was present but none verified (count it).
    pub forged: bool,
}

/// Reads affinity keys; the mode can be switched at run time.
#[derive(Debug)]
pub struct Affinity {
    config: AffinityConfig,
    mode: AtomicU8,
    codec: CookieCodec,
}

impl Affinity {
    /// An extractor with `config`, verifying balancer cookies with `codec`.
    pub fn new(config: AffinityConfig, codec: CookieCodec) -> Self {
        Affinity {
            mode: AtomicU8::new(config.mode as u8),
            config,
            codec,
        }
    }

    /// The mode in force.
    pub fn mode(&self) -> AffinityMode {
        AffinityMode::ALL[self.mode.load(Ordering::Relaxed) as usize % AffinityMode::ALL.len()]
    }

    /// Switches the mode for the next requests.
    pub fn set_mode(&self, mode: AffinityMode) {
        self.mode.store(mode as u8, Ordering::Relaxed);
    }

    /// The settings.
    pub fn config(&self) -> &AffinityConfig {
        &self.config
    }

    /// The balancer-cookie codec.
    pub fn codec(&self) -> &CookieCodec {
        &self.codec
    }

    /// Reads the key of a request under the mode in force.
    pub fn extract<'a>(&self, req: &RequestView<'a>, topo: &Topology) -> Extracted<'a> {
        let key = |key| Extracted { key, forged: false };
        match self.mode() {
            AffinityMode::LbCookie => {
                let mut seen = false;
                for value in cookie_values(req.headers, self.codec.name()) {
                    seen = true;
                    if let Some(claim) = self.codec.decode(value) {
                        return key(SessionKey::Cookie {
                            session: claim.session,
                            backend: topo.by_tag(claim.tag),
                        });
                    }
                }
                Extracted {
                    key: SessionKey::NewCookie,
                    forged: seen,
                }
            }
            AffinityMode::AppCookie => key(cookie_values(req.headers, &self.config.app_cookie)
                .find(|v| !v.is_empty())
                .map_or(SessionKey::None, SessionKey::Text)),
            AffinityMode::Header => key(req
                .headers
                .get(&self.config.header)
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map_or(SessionKey::None, SessionKey::Text)),
            AffinityMode::Query => key(req
                .query
                .and_then(|q| query_value(q, &self.config.query_param))
                .map_or(SessionKey::None, SessionKey::Text)),
            AffinityMode::SourceIp => key(SessionKey::Source(client_ip(
                req.peer,
                req.headers,
                &self.config.trusted_proxies,
            ))),
            AffinityMode::None => key(SessionKey::None),
        }
    }
}

/// The values of every cookie called `name` in the request's `Cookie`
/// headers, in order. Headers that are not text are skipped.
pub fn cookie_values<'h, 'n>(headers: &'h HeaderMap, name: &'n str) -> impl Iterator<Item = &'h str> + use<'h, 'n> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(move |pair| {
            let (n, v) = pair.split_once('=')?;
            (n.trim() == name).then(|| {
                let v = v.trim();
                v.strip_prefix('"').and_then(|v| v.strip_suffix('"')).unwrap_or(v)
            })
        })
}

/// The first non-empty value of `name` in a query string.
pub fn query_value<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(n, v)| *n == name && !v.is_empty())
        .map(|(_, v)| v)
}

/// The client's address: the peer, unless the peer is a trusted proxy; then
/// the rightmost `X-Forwarded-For` address that is not itself trusted.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(peer) {
        return peer;
    }
    let hops = headers
        .get_all("x-forwarded-for")
        .iter()
        .rev()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.rsplit(','));
    let mut client = peer;
    for hop in hops {
        match hop.trim().parse::<IpAddr>() {
            Ok(ip) => {
                client = ip;
                if !is_trusted(ip) {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    client
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn cookie_values_handle_spacing_quotes_and_repeats() {
        let h = headers(&[("cookie", "a=1; session_id=\"abc\" ;b=2"), ("cookie", "session_id=def")]);
        let got: Vec<&str> = cookie_values(&h, "session_id").collect();
        assert_eq!(got, vec!["abc", "def"]);
        assert_eq!(cookie_values(&h, "missing").count(), 0);
    }

    #[test]
    fn non_utf8_cookie_headers_are_skipped() {
        let mut h = HeaderMap::new();
        h.append(COOKIE, HeaderValue::from_bytes(b"session_id=\xff\xfe").unwrap());
        h.append(COOKIE, HeaderValue::from_static("session_id=ok"));
        assert_eq!(cookie_values(&h, "session_id").collect::<Vec<_>>(), vec!["ok"]);
    }

    #[test]
    fn query_values() {
        assert_eq!(query_value("a=1&session=xyz&b=2", "session"), Some("xyz"));
        assert_eq!(query_value("session=&session=2", "session"), Some("2"));
        assert_eq!(query_value("sessionx=1", "session"), None);
        assert_eq!(query_value("", "session"), None);
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_peers() {
        let trusted: Vec<IpNet> = vec!["127.0.0.0/8".parse().unwrap(), "10.1.0.0/16".parse().unwrap()];
        let h = headers(&[("x-forwarded-for", "203.0.113.9, 198.51.100.7, 10.1.2.3")]);
        let untrusted_peer: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(client_ip(untrusted_peer, &h, &trusted), untrusted_peer);
        // From a trusted peer: skip trusted hops from the right.
        let peer: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(client_ip(peer, &h, &trusted), "198.51.100.7".parse::<IpAddr>().unwrap());
        // Garbage stops the walk at the last good hop.
        let h = headers(&[("x-forwarded-for", "evil, 10.1.9.9")]);
        assert_eq!(client_ip(peer, &h, &trusted), "10.1.9.9".parse::<IpAddr>().unwrap());
        assert_eq!(client_ip(peer, &HeaderMap::new(), &trusted), peer);
    }

    #[test]
    fn ip_nets_parse_and_match() {
        let net: IpNet = "10.0.0.0/8".parse().unwrap();
        assert!(net.contains("10.200.1.1".parse().unwrap()));
        assert!(!net.contains("11.0.0.1".parse().unwrap()));
        assert!(!net.contains("::1".parse().unwrap()));
        let all: IpNet = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("8.8.8.8".parse().unwrap()));
        let v6: IpNet = "::1".parse().unwrap();
        assert!(v6.contains("::1".parse().unwrap()));
        assert!("10.0.0.0/33".parse::<IpNet>().is_err());
        assert!("nonsense".parse::<IpNet>().is_err());
    }

    #[test]
    fn modes_round_trip_and_cycle() {
        for m in AffinityMode::ALL {
            assert_eq!(m.as_str().parse::<AffinityMode>(), Ok(m));
        }
        assert_eq!(AffinityMode::None.next(), AffinityMode::LbCookie);
    }
}
