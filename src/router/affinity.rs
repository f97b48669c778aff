//! Affinity: what a request is routed by, and what a response teaches —
//! routing policy, decided here and tested without sockets; the proxy only
//! carries bytes and asks.
//!
//! One mode is in force at a time, and only its key routes:
//!
//! - `lb-cookie`: a valid balancer cookie routes to its session (or, if the
//!   table lost it, to the backend it names); an invalid one is counted as
//!   forged and ignored; with none, a new session is placed and the cookie set.
//! - `app-cookie`, `header`, `query`: the application's session id is the key;
//!   an id the table does not know is placed and stored; no id → placement,
//!   no session.
//! - `source-ip`: the client address; `X-Forwarded-For` counts only when the
//!   peer is a trusted proxy, and then its rightmost untrusted address wins.
//! - `none`: every request placed afresh; no session is kept or learned.
//!
//! What is learned, per mode: every mode but `none` learns where the
//! application keeps its sessions from its own `Set-Cookie` (and forgets one
//! when the cookie is deleted — a logout). In `app-cookie`, `header` and
//! `query` those are the sessions that route; in `lb-cookie` and `source-ip`
//! they are kept aside, uncounted, so that switching to an application-key
//! mode keeps every logged-in user where their session lives, and a new
//! balancer-cookie or address session is placed where the client's
//! application session already is. A logout only ever ends the application
//! session, never an address's or a balancer cookie's.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::atomic::{AtomicU8, Ordering};

use http::HeaderMap;
use http::header::{COOKIE, SET_COOKIE};

use super::SessionKey;
use super::hash::KeyDomain;
use super::lb_cookie::{CookieCodec, VerifiedCookie};
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

    /// The session table whose sessions route in this mode (`None`: no sessions).
    pub fn domain(self) -> Option<KeyDomain> {
        match self {
            AffinityMode::LbCookie => Some(KeyDomain::Cookie),
            AffinityMode::AppCookie | AffinityMode::Header | AffinityMode::Query => Some(KeyDomain::Text),
            AffinityMode::SourceIp => Some(KeyDomain::Ip),
            AffinityMode::None => None,
        }
    }

    /// Whether the application's own `Set-Cookie` is learned in this mode.
    pub fn learns_app_sessions(self) -> bool {
        self != AffinityMode::None
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
    /// The connection's last verified balancer cookie, if it keeps one.
    pub verified: Option<&'a VerifiedCookie>,
}

/// The key read from a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extracted<'a> {
    /// What to route by.
    pub key: SessionKey<'a>,
    /// A balancer cookie was present but none verified (count it).
    pub forged: bool,
    /// The application's session id as this request carries it (its cookie,
    /// or the mode's header or parameter); `None` in mode `none`.
    pub app_session: Option<&'a [u8]>,
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

    /// Switches the mode for the next requests (the router does it, with its tables).
    pub(super) fn set_mode(&self, mode: AffinityMode) {
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
        let mode = self.mode();
        let app_cookie = || cookie_values(req.headers, self.config.app_cookie.as_bytes()).find(|v| !v.is_empty());
        let (key, forged, app_session) = match mode {
            AffinityMode::LbCookie => {
                // One pass over the cookies for both the balancer's and the
                // application's (the two names may be the same).
                let (lb_name, app_name) = (self.codec.name().as_bytes(), self.config.app_cookie.as_bytes());
                let (mut seen, mut claim, mut app_id) = (false, None, None);
                for (name, value) in cookie_pairs(req.headers) {
                    if name == lb_name {
                        seen = true;
                        if claim.is_none() {
                            claim = self.codec.decode_remembered(value, req.verified);
                        }
                    }
                    if name == app_name && app_id.is_none() && !value.is_empty() {
                        app_id = Some(value);
                    }
                }
                match claim {
                    Some(c) => (
                        SessionKey::Cookie {
                            session: c.session,
                            backend: topo.by_tag(c.tag),
                        },
                        false,
                        app_id,
                    ),
                    None => (SessionKey::NewCookie, seen, app_id),
                }
            }
            AffinityMode::AppCookie => {
                let id = app_cookie();
                (id.map_or(SessionKey::None, SessionKey::Text), false, id)
            }
            AffinityMode::Header => {
                let id = req
                    .headers
                    .get(&self.config.header)
                    .map(|v| trim_bytes(v.as_bytes()))
                    .filter(|v| !v.is_empty());
                (id.map_or(SessionKey::None, SessionKey::Text), false, id)
            }
            AffinityMode::Query => {
                let id = req
                    .query
                    .and_then(|q| query_value(q, &self.config.query_param))
                    .map(str::as_bytes);
                (id.map_or(SessionKey::None, SessionKey::Text), false, id)
            }
            AffinityMode::SourceIp => (
                SessionKey::Source(client_ip(req.peer, req.headers, &self.config.trusted_proxies)),
                false,
                app_cookie(),
            ),
            AffinityMode::None => (SessionKey::None, false, None),
        };
        Extracted {
            key,
            forged,
            app_session,
        }
    }
}

/// What a backend's response says about the application's session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lesson<'a> {
    /// A session with this id now lives on the backend that answered.
    Bind(&'a [u8]),
    /// The request's session ended (its cookie was deleted: a logout).
    End,
}

/// What a response teaches in `mode`, read from its `Set-Cookie` headers for
/// the application's cookie `app_cookie`; `None` when nothing is learned.
pub fn lesson<'h>(mode: AffinityMode, headers: &'h HeaderMap, app_cookie: &str) -> Option<Lesson<'h>> {
    if !mode.learns_app_sessions() {
        return None;
    }
    match app_set_cookie(headers, app_cookie.as_bytes())? {
        SetCookie::Set(id) => Some(Lesson::Bind(id)),
        SetCookie::Deleted => Some(Lesson::End),
    }
}

/// What a response's `Set-Cookie` headers say about one cookie.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetCookie<'a> {
    /// Set to this value.
    Set(&'a [u8]),
    /// Deleted (empty value, `Max-Age=0` or negative).
    Deleted,
}

/// The last `Set-Cookie` for the cookie `name` in `headers`, read as bytes.
pub fn app_set_cookie<'h>(headers: &'h HeaderMap, name: &[u8]) -> Option<SetCookie<'h>> {
    headers
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| {
            let mut parts = v.as_bytes().split(|&b| b == b';');
            let first = parts.next()?;
            let eq = first.iter().position(|&b| b == b'=')?;
            if trim_bytes(&first[..eq]) != name {
                return None;
            }
            let value = trim_bytes(&first[eq + 1..]);
            let deleted = value.is_empty()
                || parts.any(|a| {
                    let a = trim_bytes(a);
                    a.len() >= 8
                        && a[..8].eq_ignore_ascii_case(b"max-age=")
                        && matches!(trim_bytes(&a[8..]).first(), Some(b'0' | b'-'))
                });
            Some(if deleted {
                SetCookie::Deleted
            } else {
                SetCookie::Set(value)
            })
        })
        .next_back()
}

/// The values of every cookie called `name` in the request's `Cookie`
/// headers, in order, read as bytes: a cookie with non-ASCII bytes elsewhere
/// in the header does not hide the others. Surrounding quotes are removed.
pub fn cookie_values<'h, 'n>(headers: &'h HeaderMap, name: &'n [u8]) -> impl Iterator<Item = &'h [u8]> + use<'h, 'n> {
    cookie_pairs(headers).filter_map(move |(n, v)| (n == name).then_some(v))
}

/// Every `name=value` pair in the request's `Cookie` headers, in order, as
/// bytes: the name trimmed, the value trimmed and unquoted (as in
/// [`cookie_values`]); a pair without `=` is skipped.
pub fn cookie_pairs(headers: &HeaderMap) -> impl Iterator<Item = (&[u8], &[u8])> {
    headers
        .get_all(COOKIE)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b';'))
        .filter_map(|pair| {
            let eq = memchr::memchr(b'=', pair)?;
            let v = trim_bytes(&pair[eq + 1..]);
            let v = v.strip_prefix(b"\"").and_then(|v| v.strip_suffix(b"\"")).unwrap_or(v);
            Some((trim_bytes(&pair[..eq]), v))
        })
}

/// `s` without leading and trailing spaces and tabs.
pub fn trim_bytes(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
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

    use crate::testing::headers;

    #[test]
    fn cookie_values_handle_spacing_quotes_and_repeats() {
        let h = headers(&[("cookie", "a=1; session_id=\"abc\" ;b=2"), ("cookie", "session_id=def")]);
        let got: Vec<&[u8]> = cookie_values(&h, b"session_id").collect();
        assert_eq!(got, vec![b"abc".as_slice(), b"def"]);
        assert_eq!(cookie_values(&h, b"missing").count(), 0);
    }

    #[test]
    fn a_non_ascii_cookie_hides_no_other() {
        let mut h = HeaderMap::new();
        h.append(
            COOKIE,
            http::HeaderValue::from_bytes("city=Zürich; session_id=ok".as_bytes()).unwrap(),
        );
        assert_eq!(
            cookie_values(&h, b"session_id").collect::<Vec<_>>(),
            vec![b"ok".as_slice()]
        );
        assert_eq!(
            cookie_values(&h, b"city").collect::<Vec<_>>(),
            vec!["Zürich".as_bytes()]
        );
    }

    #[test]
    fn responses_teach_by_mode() {
        let set = headers(&[
            ("set-cookie", "theme=dark"),
            ("set-cookie", "session_id=abc; Path=/; HttpOnly"),
        ]);
        for mode in AffinityMode::ALL {
            let expected = (mode != AffinityMode::None).then_some(Lesson::Bind(b"abc"));
            assert_eq!(lesson(mode, &set, "session_id"), expected, "{mode}");
        }
        let gone = headers(&[("set-cookie", "session_id=; Path=/; Max-Age=0")]);
        assert_eq!(lesson(AffinityMode::SourceIp, &gone, "session_id"), Some(Lesson::End));
        assert_eq!(lesson(AffinityMode::LbCookie, &set, "other"), None);
        let aged = headers(&[("set-cookie", "session_id=x; max-age=-1")]);
        assert_eq!(app_set_cookie(&aged, b"session_id"), Some(SetCookie::Deleted));
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
