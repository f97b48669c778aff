//! Header work on the way through: hop-by-hop headers, forwarding headers,
//! the balancer's own cookie (stripped before the backend sees it, set on the
//! way back), and the application's session cookie read from responses.

use std::io::Write as _;
use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::router::affinity::trim_bytes;

/// Fields that describe one hop and are never forwarded (RFC 9110 §7.6.1);
/// `Upgrade` goes too unless the connection is being upgraded.
static HOP_BY_HOP: [HeaderName; 6] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRANSFER_ENCODING,
];

/// The tokens of every `Connection` field, as bytes.
fn connection_tokens(headers: &HeaderMap) -> impl Iterator<Item = &[u8]> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|v| list_tokens(v.as_bytes()))
}

/// The non-empty elements of one comma-separated field value, trimmed.
pub(crate) fn list_tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value.split(|&b| b == b',').map(trim_bytes).filter(|t| !t.is_empty())
}

/// What a head's `Connection` fields say, read in one pass.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionOptions {
    /// `close`: the sender closes after this message.
    pub close: bool,
    /// `keep-alive` (an HTTP/1.0 client asking to keep the connection).
    pub keep_alive: bool,
    /// `upgrade`: the `Upgrade` field is meant for this hop.
    pub upgrade: bool,
    /// Some other option: it may name a field that goes with the hop.
    pub names_fields: bool,
}

impl ConnectionOptions {
    /// The options of every `Connection` field of `headers`.
    pub fn of(headers: &HeaderMap) -> Self {
        let mut o = ConnectionOptions::default();
        for value in headers.get_all(header::CONNECTION) {
            o.add(value.as_bytes());
        }
        o
    }

    /// Takes in the options of one more `Connection` field's `value`.
    pub fn add(&mut self, value: &[u8]) {
        // Most fields hold one option and no space: no split needed.
        if value.eq_ignore_ascii_case(b"keep-alive") {
            self.keep_alive = true;
            return;
        }
        if value.eq_ignore_ascii_case(b"close") {
            self.close = true;
            return;
        }
        for token in list_tokens(value) {
            if token.eq_ignore_ascii_case(b"close") {
                self.close = true;
            } else if token.eq_ignore_ascii_case(b"keep-alive") {
                self.keep_alive = true;
            } else if token.eq_ignore_ascii_case(b"upgrade") {
                self.upgrade = true;
            } else {
                self.names_fields = true;
            }
        }
    }
}

/// Removes hop-by-hop fields, including those `Connection` names — but
/// never `Host`, which no hop may take away. An upgrade keeps
/// `Connection: upgrade` and `Upgrade`. `read`: the head's `Connection`
/// options when the caller has read them already (else read here as needed).
pub fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: bool, read: Option<&ConnectionOptions>) {
    // One pass over the names finds which are here, with no lookup (a
    // lookup hashes the name); most heads carry none, or only `Connection`.
    let mut present = [false; HOP_BY_HOP.len()];
    let mut has_upgrade = false;
    for name in headers.keys() {
        if *name == header::UPGRADE {
            has_upgrade = true;
        } else if let Some(i) = HOP_BY_HOP.iter().position(|hop| hop == name) {
            present[i] = true;
        }
    }
    if !has_upgrade && !present.contains(&true) {
        return;
    }
    if present[0] && read.is_none_or(|o| o.names_fields) {
        // (`HOP_BY_HOP[0]` is `Connection`.)
        // `keep-alive` and `upgrade` name fields handled below, and no
        // field may be named `close` (RFC 9110 §18.4): only other options
        // are looked up, and a head naming none allocates nothing.
        let named: Vec<HeaderName> = connection_tokens(headers)
            .filter(|t| !NAMES_NO_OTHER_FIELD.iter().any(|o| t.eq_ignore_ascii_case(o)))
            .filter_map(|t| HeaderName::from_bytes(t).ok())
            .filter(|n| *n != header::HOST)
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    for (hop, _) in HOP_BY_HOP.iter().zip(present).filter(|(_, here)| *here) {
        headers.remove(hop);
    }
    if upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    } else if has_upgrade {
        headers.remove(header::UPGRADE);
    }
}

/// `Connection` options that name no field beyond [`HOP_BY_HOP`] and `Upgrade`.
const NAMES_NO_OTHER_FIELD: [&[u8]; 3] = [b"keep-alive", b"close", b"upgrade"];

/// True when a `TE` field asks for trailers.
pub fn te_trailers(headers: &HeaderMap) -> bool {
    headers.get_all(header::TE).iter().any(|v| {
        v.as_bytes()
            .split(|&b| b == b',')
            .any(|t| trim_bytes(t.split(|&b| b == b';').next().unwrap_or_default()).eq_ignore_ascii_case(b"trailers"))
    })
}

/// The transfer codings a `Transfer-Encoding` field lists, but `chunked`.
pub fn other_codings(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .flat_map(|v| list_tokens(v.as_bytes()))
        .filter(|c| !c.eq_ignore_ascii_case(b"chunked"))
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect()
}

/// The peer's address as a header value, made once per client connection
/// so that [`add_forwarded`] does not format it for every request.
pub fn peer_value(peer: IpAddr) -> HeaderValue {
    HeaderValue::from_str(&peer.to_string()).expect("an IP address is a valid header value")
}

/// `X-Forwarded-For`.
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

/// Adds the peer (see [`peer_value`]) to `X-Forwarded-For` — every hop the
/// request already lists is kept, in order, in one field — and sets
/// `X-Forwarded-Proto`; `present`: the request has the field already.
pub fn add_forwarded(headers: &mut HeaderMap, peer: &HeaderValue, present: bool) {
    let xff = X_FORWARDED_FOR;
    if !present {
        headers.insert(xff, peer.clone());
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
        return;
    }
    let mut prior = headers.get_all(&xff).iter();
    let value = match (prior.next(), prior.next()) {
        (None, _) => Some(peer.clone()),
        (Some(one), None) => join(&[one.as_bytes(), peer.as_bytes()]),
        (Some(_), Some(_)) => {
            let hops: Vec<&[u8]> = headers
                .get_all(&xff)
                .iter()
                .map(|v| trim_bytes(v.as_bytes()))
                .chain([peer.as_bytes()])
                .collect();
            join(&hops)
        }
    };
    if let Some(v) = value {
        headers.insert(xff, v);
    }
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
}

fn join(parts: &[&[u8]]) -> Option<HeaderValue> {
    let mut joined = Vec::with_capacity(parts.iter().map(|p| p.len() + 2).sum());
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            joined.extend_from_slice(b", ");
        }
        joined.extend_from_slice(p);
    }
    HeaderValue::from_bytes(&joined).ok()
}

/// Makes a response no shared cache may keep (it carries one client's
/// balancer cookie): `Cache-Control: private`, replacing `public`, as
/// HAProxy's `cookie … nocache` does; `no-store` and `private` stay.
pub fn make_private(headers: &mut HeaderMap) {
    if !headers.contains_key(header::CACHE_CONTROL) {
        // The usual case: nothing to keep, nothing to build.
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("private"));
        return;
    }
    let directives: Vec<String> = headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .map(|d| String::from_utf8_lossy(trim_bytes(d)).into_owned())
        .filter(|d| !d.is_empty())
        .collect();
    let already = directives.iter().any(|d| {
        let name = d.split('=').next().unwrap_or("").trim();
        name.eq_ignore_ascii_case("private") || name.eq_ignore_ascii_case("no-store")
    });
    if already {
        return;
    }
    let mut kept: Vec<String> = directives
        .into_iter()
        .filter(|d| {
            let name = d.split('=').next().unwrap_or("").trim();
            !name.eq_ignore_ascii_case("public") && !name.eq_ignore_ascii_case("s-maxage")
        })
        .collect();
    kept.insert(0, "private".into());
    if let Ok(v) = HeaderValue::from_str(&kept.join(", ")) {
        headers.insert(header::CACHE_CONTROL, v);
    }
}

/// Removes the cookie `name` from every `Cookie` header (HAProxy's
/// `indirect`): the backend never sees the balancer's cookie. The rest of
/// each header is left byte for byte — spacing, order, non-ASCII values.
/// Allocates only when the cookie is present with others.
pub fn strip_cookie(headers: &mut HeaderMap, name: &str) {
    let name = name.as_bytes();
    let named = |pair: &[u8]| {
        let n = pair.iter().position(|&b| b == b'=').map_or(pair, |eq| &pair[..eq]);
        trim_bytes(n) == name
    };
    // The common case of a client that keeps no other cookie here: one
    // field, holding the balancer's cookie alone, goes whole.
    let mut fields = headers.get_all(header::COOKIE).iter();
    if let (Some(only), None) = (fields.next(), fields.next())
        && !only.as_bytes().contains(&b';')
    {
        if named(only.as_bytes()) {
            headers.remove(header::COOKIE);
        }
        return;
    }
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

/// `NAME=VALUE; Path=/; HttpOnly; SameSite=Lax[; Secure][; Max-Age=N]`,
/// with the value `write_value` appends: built in one buffer, which the
/// header value then owns.
pub fn set_cookie_value(
    name: &str,
    attrs: &CookieAttributes,
    write_value: impl FnOnce(&mut Vec<u8>),
) -> Option<HeaderValue> {
    let mut s = Vec::with_capacity(160);
    s.extend_from_slice(name.as_bytes());
    s.push(b'=');
    write_value(&mut s);
    s.extend_from_slice(b"; Path=/; HttpOnly; SameSite=Lax");
    if attrs.secure {
        s.extend_from_slice(b"; Secure");
    }
    if let Some(age) = attrs.max_age_secs {
        let _ = write!(s, "; Max-Age={age}");
    }
    HeaderValue::from_maybe_shared(bytes::Bytes::from(s)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::testing::headers as map;

    #[test]
    fn hop_by_hop_headers_go_and_named_ones_too_but_never_host() {
        let mut h = map(&[
            ("connection", "keep-alive, x-private, host"),
            ("keep-alive", "timeout=5"),
            ("x-private", "secret"),
            ("te", "trailers"),
            ("upgrade", "websocket"),
            ("host", "example"),
            ("trailer", "x-checksum"),
        ]);
        strip_hop_by_hop(&mut h, false, None);
        assert_eq!(h.len(), 2, "{h:?}");
        assert!(h.contains_key("host"));
        assert!(h.contains_key("trailer"), "Trailer describes the message, not the hop");
        let mut up = map(&[("connection", "Upgrade"), ("upgrade", "websocket")]);
        assert!(ConnectionOptions::of(&up).upgrade);
        strip_hop_by_hop(&mut up, true, None);
        assert_eq!(up.get("upgrade").unwrap(), "websocket");
        assert_eq!(up.get("connection").unwrap(), "upgrade");
    }

    #[test]
    fn options_in_every_connection_field_count_and_close_names_no_field() {
        let mut h = map(&[
            ("connection", "close"),
            ("x-a", "1"),
            ("connection", "X-A , upgrade"),
            ("upgrade", "h2c"),
            ("x-b", "kept"),
        ]);
        strip_hop_by_hop(&mut h, false, None);
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(h.get("x-b").unwrap(), "kept");
        let mut alone = map(&[("proxy-authorization", "Basic eA=="), ("x-b", "kept")]);
        strip_hop_by_hop(&mut alone, false, None);
        assert_eq!(alone.len(), 1, "{alone:?}");
        let mut none = map(&[("x-b", "kept"), ("cookie", "a=1")]);
        strip_hop_by_hop(&mut none, false, None);
        assert_eq!(none.len(), 2, "{none:?}");
    }

    #[test]
    fn connection_options_are_read_in_one_pass_and_spare_the_named_field_pass() {
        let h = map(&[("connection", "Keep-Alive"), ("connection", " CLOSE ,upgrade")]);
        let read = ConnectionOptions::of(&h);
        assert_eq!(
            read,
            ConnectionOptions {
                close: true,
                keep_alive: true,
                upgrade: true,
                names_fields: false,
            }
        );
        assert!(ConnectionOptions::of(&map(&[("connection", "close, x-a")])).names_fields);
        let alone = |value| ConnectionOptions::of(&map(&[("connection", value)]));
        assert_eq!(
            alone("keep-alive"),
            ConnectionOptions {
                keep_alive: true,
                ..ConnectionOptions::default()
            }
        );
        assert_eq!(
            alone("Close"),
            ConnectionOptions {
                close: true,
                ..ConnectionOptions::default()
            }
        );
        assert_eq!(
            ConnectionOptions::of(&map(&[("x", "close")])),
            ConnectionOptions::default()
        );
        // Options read by the caller: the fields they name still go.
        let mut h = map(&[("connection", "keep-alive, x-a"), ("x-a", "1"), ("x-b", "kept")]);
        let read = ConnectionOptions::of(&h);
        strip_hop_by_hop(&mut h, false, Some(&read));
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(h.get("x-b").unwrap(), "kept");
    }

    #[test]
    fn every_forwarded_hop_is_kept_in_one_field() {
        let mut h = map(&[("x-forwarded-for", "192.0.2.1"), ("x-forwarded-for", " 192.0.2.2 ")]);
        add_forwarded(&mut h, &peer_value("127.0.0.1".parse().unwrap()), true);
        let all: Vec<&str> = h
            .get_all("x-forwarded-for")
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        assert_eq!(all, ["192.0.2.1, 192.0.2.2, 127.0.0.1"]);
    }

    #[test]
    fn a_session_answer_is_made_private() {
        let mut public = map(&[("cache-control", "public, max-age=60")]);
        make_private(&mut public);
        assert_eq!(public.get("cache-control").unwrap(), "private, max-age=60");
        let mut none = HeaderMap::new();
        make_private(&mut none);
        assert_eq!(none.get("cache-control").unwrap(), "private");
        let mut no_store = map(&[("cache-control", "no-store")]);
        make_private(&mut no_store);
        assert_eq!(no_store.get("cache-control").unwrap(), "no-store");
    }

    #[test]
    fn codings_and_trailers_are_read() {
        assert!(te_trailers(&map(&[("te", "gzip;q=0.5, trailers")])));
        assert!(!te_trailers(&map(&[("te", "gzip")])));
        assert_eq!(other_codings(&map(&[("transfer-encoding", "gzip, chunked")])), ["gzip"]);
        assert!(other_codings(&map(&[("transfer-encoding", "Chunked")])).is_empty());
    }

    #[test]
    fn forwarded_headers_append() {
        let mut h = map(&[("x-forwarded-for", "203.0.113.50")]);
        let peer = peer_value("127.0.0.1".parse().unwrap());
        add_forwarded(&mut h, &peer, true);
        assert_eq!(h.get("x-forwarded-for").unwrap(), "203.0.113.50, 127.0.0.1");
        assert_eq!(h.get("x-forwarded-proto").unwrap(), "http");
        let mut fresh = HeaderMap::new();
        add_forwarded(&mut fresh, &peer_value("::1".parse().unwrap()), false);
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
        let mut alone = map(&[("cookie", " SERVERID=xyz "), ("x-kept", "1")]);
        strip_cookie(&mut alone, "SERVERID");
        assert!(alone.get("cookie").is_none() && alone.len() == 1, "{alone:?}");
        let mut other = map(&[("cookie", "session_id=s1")]);
        strip_cookie(&mut other, "SERVERID");
        assert_eq!(other.get("cookie").unwrap(), "session_id=s1");
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
        let abc = |out: &mut Vec<u8>| out.extend_from_slice(b"abc");
        let v = set_cookie_value("SERVERID", &CookieAttributes::default(), abc).unwrap();
        assert_eq!(v, "SERVERID=abc; Path=/; HttpOnly; SameSite=Lax");
        let attrs = CookieAttributes {
            secure: true,
            max_age_secs: Some(3600),
        };
        let v = set_cookie_value("SERVERID", &attrs, abc).unwrap();
        assert_eq!(v, "SERVERID=abc; Path=/; HttpOnly; SameSite=Lax; Secure; Max-Age=3600");
    }
}
