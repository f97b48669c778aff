//! Header work on the way through: hop-by-hop headers, forwarding headers,
//! the balancer's own cookie (stripped before the backend sees it, set on the
//! way back), and the application's session cookie read from responses.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::router::affinity::trim_bytes;

/// Headers that describe one hop and are never forwarded (RFC 9110 §7.6.1).
const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

/// True when the request asks to switch protocols (WebSocket and the like).
pub fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

/// Removes hop-by-hop headers, including those the `Connection` header
/// names. An upgrade keeps `Connection: upgrade` and `Upgrade`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .filter(|n| !(upgrade && *n == header::UPGRADE))
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
    if upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    } else {
        headers.remove(header::UPGRADE);
    }
}

/// The peer's address as a header value, made once per client connection
/// so that [`add_forwarded`] does not format it for every request.
pub fn peer_value(peer: IpAddr) -> HeaderValue {
    HeaderValue::from_str(&peer.to_string()).expect("an IP address is a valid header value")
}

/// Appends the peer (see [`peer_value`]) to `X-Forwarded-For` and sets
/// `X-Forwarded-Proto`.
pub fn add_forwarded(headers: &mut HeaderMap, peer: &HeaderValue) {
    let xff = HeaderName::from_static("x-forwarded-for");
    let value = match headers.get(&xff).and_then(|v| v.to_str().ok()) {
        Some(prior) => {
            let mut joined = Vec::with_capacity(prior.len() + 2 + peer.len());
            joined.extend_from_slice(prior.as_bytes());
            joined.extend_from_slice(b", ");
            joined.extend_from_slice(peer.as_bytes());
            HeaderValue::from_bytes(&joined).ok()
        }
        None => Some(peer.clone()),
    };
    if let Some(v) = value {
        headers.insert(xff, v);
    }
    headers.insert(
        HeaderName::from_static("x-forwarded-proto"),
        HeaderValue::from_static("http"),
    );
}

/// Removes the cookie `name` from every `Cookie` header (HAProxy's
/// `indirect`): the backend never sees the balancer's cookie. The rest of
/// each header is left byte for byte — spacing, order, non-ASCII values.
/// Allocates only when the cookie is present.
pub fn strip_cookie(headers: &mut HeaderMap, name: &str) {
    let name = name.as_bytes();
    let named = |pair: &[u8]| {
        let n = pair.iter().position(|&b| b == b'=').map_or(pair, |eq| &pair[..eq]);
        trim_bytes(n) == name
    };
    let present = headers
        .get_all(header::COOKIE)
        .iter()
        .any(|v| v.as_bytes().split(|&b| b == b';').any(named));
    if !present {
        return;
    }
    let kept: Vec<HeaderValue> = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| {
            let pairs: Vec<&[u8]> = v.as_bytes().split(|&b| b == b';').filter(|p| !named(p)).collect();
            let joined = pairs.join(&b';');
            let rest = trim_bytes(&joined);
            (!rest.is_empty()).then(|| HeaderValue::from_bytes(rest).ok()).flatten()
        })
        .collect();
    headers.remove(header::COOKIE);
    for v in kept {
        headers.append(header::COOKIE, v);
    }
}

/// Attributes of the balancer's `Set-Cookie`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CookieAttributes {
    /// Add `Secure`.
    pub secure: bool,
    /// Add `Max-Age`.
    pub max_age_secs: Option<u64>,
}

/// `NAME=VALUE; Path=/; HttpOnly; SameSite=Lax[; Secure][; Max-Age=N]`.
pub fn set_cookie_value(name: &str, value: &str, attrs: &CookieAttributes) -> Option<HeaderValue> {
    let mut s = format!("{name}={value}; Path=/; HttpOnly; SameSite=Lax");
    if attrs.secure {
        s.push_str("; Secure");
    }
    if let Some(age) = attrs.max_age_secs {
        s.push_str(&format!("; Max-Age={age}"));
    }
    HeaderValue::from_str(&s).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::testing::headers as map;

    #[test]
    fn hop_by_hop_headers_go_and_named_ones_too() {
        let mut h = map(&[
            ("connection", "keep-alive, x-private"),
            ("keep-alive", "timeout=5"),
            ("x-private", "secret"),
            ("te", "trailers"),
            ("upgrade", "websocket"),
            ("host", "example"),
        ]);
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("host"));
        let mut up = map(&[("connection", "Upgrade"), ("upgrade", "websocket")]);
        assert!(is_upgrade(&up));
        strip_hop_by_hop(&mut up, true);
        assert_eq!(up.get("upgrade").unwrap(), "websocket");
        assert_eq!(up.get("connection").unwrap(), "upgrade");
    }

    #[test]
    fn forwarded_headers_append() {
        let mut h = map(&[("x-forwarded-for", "203.0.113.50")]);
        let peer = peer_value("127.0.0.1".parse().unwrap());
        add_forwarded(&mut h, &peer);
        assert_eq!(h.get("x-forwarded-for").unwrap(), "203.0.113.50, 127.0.0.1");
        assert_eq!(h.get("x-forwarded-proto").unwrap(), "http");
        let mut fresh = HeaderMap::new();
        add_forwarded(&mut fresh, &peer_value("::1".parse().unwrap()));
        assert_eq!(fresh.get("x-forwarded-for").unwrap(), "::1");
    }

    #[test]
    fn the_balancer_cookie_is_stripped_and_nothing_else() {
        let mut h = map(&[("cookie", "a=1; SERVERID=xyz; b=2"), ("cookie", "SERVERID=abc")]);
        strip_cookie(&mut h, "SERVERID");
        let all: Vec<&str> = h.get_all("cookie").iter().map(|v| v.to_str().unwrap()).collect();
        assert_eq!(all, ["a=1; b=2"]);
        let mut untouched = map(&[("cookie", "SERVERIDX=1;a=2")]);
        strip_cookie(&mut untouched, "SERVERID");
        assert_eq!(untouched.get("cookie").unwrap(), "SERVERIDX=1;a=2");
        let mut tight = map(&[("cookie", "a=1;b=2;SERVERID=x")]);
        strip_cookie(&mut tight, "SERVERID");
        assert_eq!(tight.get("cookie").unwrap(), "a=1;b=2");
        let mut h = HeaderMap::new();
        h.append(
            "cookie",
            HeaderValue::from_bytes("SERVERID=x; city=Zürich".as_bytes()).unwrap(),
        );
        strip_cookie(&mut h, "SERVERID");
        assert_eq!(h.get("cookie").unwrap().as_bytes(), "city=Zürich".as_bytes());
    }

    #[test]
    fn set_cookie_attributes() {
        let v = set_cookie_value("SERVERID", "abc", &CookieAttributes::default()).unwrap();
        assert_eq!(v, "SERVERID=abc; Path=/; HttpOnly; SameSite=Lax");
        let attrs = CookieAttributes {
            secure: true,
            max_age_secs: Some(3600),
        };
        let v = set_cookie_value("SERVERID", "abc", &attrs).unwrap();
        assert_eq!(v, "SERVERID=abc; Path=/; HttpOnly; SameSite=Lax; Secure; Max-Age=3600");
    }
}
