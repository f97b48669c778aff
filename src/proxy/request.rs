//! A client's request on its way to a backend: what is refused (RFC 9112
//! §3.2's Host rules, request-target forms, unknown transfer codings) and
//! how the rest is normalised (HTTP/1.1 upstream, hop-by-hop fields gone,
//! the absolute-form authority as `Host`, every forwarding hop kept, the
//! balancer's cookie removed, this proxy's `Via`, the body's framing).

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, StatusCode, Uri, Version};

use super::client::Framing;
use super::headers;

/// Why a request is answered by ringside itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The status.
    pub status: StatusCode,
    /// A short reason, in the body.
    pub reason: &'static str,
}

impl Refusal {
    fn bad(reason: &'static str) -> Self {
        Refusal {
            status: StatusCode::BAD_REQUEST,
            reason,
        }
    }
}

/// The methods `405` names in `Allow`.
pub const ALLOWED: &str = "GET, HEAD, POST, PUT, DELETE, OPTIONS, PATCH, TRACE";

/// Refuses what RFC 9112 and 9110 say a server must refuse, before anything
/// is routed: `CONNECT` (405: not a forward proxy), an authority-form
/// target, `*` with a method other than `OPTIONS`, more than one `Host`, no
/// `Host` on HTTP/1.1, a `Host` that is not `host[:port]`, and a transfer
/// coding other than `chunked` (501).
pub fn check(method: &Method, uri: &Uri, version: Version, headers: &HeaderMap) -> Result<(), Refusal> {
    if *method == Method::CONNECT {
        return Err(Refusal {
            status: StatusCode::METHOD_NOT_ALLOWED,
            reason: "CONNECT is not served: ringside is a reverse proxy, not a forward one",
        });
    }
    let asterisk = uri.path() == "*" && uri.authority().is_none();
    if asterisk && *method != Method::OPTIONS {
        return Err(Refusal::bad("the target * is for OPTIONS only"));
    }
    if uri.scheme().is_none() && uri.authority().is_some() {
        return Err(Refusal::bad("an authority-form target is for CONNECT only"));
    }
    let mut hosts = headers.get_all(header::HOST).iter();
    match (hosts.next(), hosts.next()) {
        (Some(_), Some(_)) => return Err(Refusal::bad("more than one Host field")),
        (Some(h), None) if !valid_host(h.as_bytes()) => return Err(Refusal::bad("the Host field is not host[:port]")),
        (None, _) if version >= Version::HTTP_11 && uri.authority().is_none() => {
            return Err(Refusal::bad("HTTP/1.1 requires a Host field"));
        }
        _ => {}
    }
    if headers.contains_key(header::TRANSFER_ENCODING) && !headers::other_codings(headers).is_empty() {
        return Err(Refusal {
            status: StatusCode::NOT_IMPLEMENTED,
            reason: "transfer codings other than chunked are not accepted",
        });
    }
    Ok(())
}

/// `uri-host [ ":" port ]` (RFC 9110 §7.2): a reg-name or IPv4 address, or
/// an IP literal in brackets; no space, slash, `@`, `?` or `#`.
fn valid_host(v: &[u8]) -> bool {
    let (host, port) = if v.first() == Some(&b'[') {
        match v.iter().position(|&b| b == b']') {
            Some(end) => (&v[..=end], &v[end + 1..]),
            None => return false,
        }
    } else {
        match v.iter().rposition(|&b| b == b':') {
            Some(i) => (&v[..i], &v[i..]),
            None => (v, &v[v.len()..]),
        }
    };
    let port_ok = match port {
        [] => true,
        [b':', digits @ ..] => digits.len() <= 5 && digits.iter().all(u8::is_ascii_digit),
        _ => false,
    };
    let reg_name = |b: &u8| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=%".contains(b);
    let host_ok = if host.first() == Some(&b'[') {
        host.len() > 2
            && host[1..host.len() - 1]
                .iter()
                .all(|b| b.is_ascii_hexdigit() || b":.".contains(b))
    } else {
        !host.is_empty() && host.iter().all(reg_name)
    };
    host_ok && port_ok
}

/// What the proxy needs to know of a request besides its head.
#[derive(Debug, Clone, Copy)]
pub struct Facts {
    /// How its body is framed upstream.
    pub framing: Framing,
    /// It asks to switch protocols.
    pub upgrade: bool,
    /// The client is HTTP/1.0 (no interim answers, no chunked answers).
    pub http10: bool,
    /// The client wants trailers (`TE: trailers`).
    pub trailers: bool,
    /// The client asked to close after this request.
    pub close: bool,
    /// Repeating it is harmless (RFC 9110 §9.2.2), were its body at hand.
    pub idempotent: bool,
}

/// Normalises a request for the backend, in place; `fallback_host` names
/// ringside when an HTTP/1.0 request has no `Host`. Returns its facts.
pub fn normalise(
    parts: &mut http::request::Parts,
    cookie_name: &str,
    forwarded_for: &HeaderValue,
    via: &HeaderValue,
    fallback_host: &HeaderValue,
) -> Facts {
    let h = &mut parts.headers;
    let seen = Present::of(h);
    let length = if seen.content_length {
        h.get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
    } else {
        None
    };
    let connection = if seen.connection {
        headers::ConnectionOptions::of(h)
    } else {
        headers::ConnectionOptions::default()
    };
    let facts = Facts {
        framing: match (seen.transfer_encoding, length) {
            (true, _) => Framing::Chunked,
            (false, Some(n)) => Framing::Length(n),
            (false, None) => Framing::None,
        },
        upgrade: seen.upgrade && connection.upgrade,
        http10: parts.version == Version::HTTP_10,
        trailers: seen.te && headers::te_trailers(h),
        close: connection.close || (parts.version == Version::HTTP_10 && !connection.keep_alive),
        idempotent: matches!(
            parts.method,
            Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
        ),
    };
    headers::strip_hop_by_hop(h, facts.upgrade, Some(&connection));
    if seen.content_length {
        h.remove(header::CONTENT_LENGTH);
    }
    if seen.cookie {
        headers::strip_cookie(h, cookie_name);
    }
    headers::add_forwarded(h, forwarded_for, seen.forwarded_for);
    h.append(header::VIA, via.clone());
    if facts.trailers {
        h.insert(header::TE, HeaderValue::from_static("trailers"));
    }
    if let Some(authority) = parts.uri.authority() {
        // RFC 9112 §3.2.2: the absolute-form's authority replaces Host.
        if let Ok(v) = HeaderValue::from_str(authority.as_str()) {
            h.insert(header::HOST, v);
        }
    } else if !seen.host {
        h.insert(header::HOST, fallback_host.clone());
    }
    parts.version = Version::HTTP_11;
    facts
}

/// Which of the fields `normalise` reads or rewrites a head has, found in
/// one pass over its names: a lookup hashes the name, a comparison of
/// well-known names does not.
#[derive(Debug, Default)]
struct Present {
    connection: bool,
    upgrade: bool,
    te: bool,
    transfer_encoding: bool,
    content_length: bool,
    cookie: bool,
    host: bool,
    forwarded_for: bool,
}

impl Present {
    fn of(h: &http::HeaderMap) -> Present {
        let mut p = Present::default();
        for name in h.keys() {
            match name {
                n if *n == header::CONNECTION => p.connection = true,
                n if *n == header::UPGRADE => p.upgrade = true,
                n if *n == header::TE => p.te = true,
                n if *n == header::TRANSFER_ENCODING => p.transfer_encoding = true,
                n if *n == header::CONTENT_LENGTH => p.content_length = true,
                n if *n == header::COOKIE => p.cookie = true,
                n if *n == header::HOST => p.host = true,
                n if *n == headers::X_FORWARDED_FOR => p.forwarded_for = true,
                _ => {}
            }
        }
        p
    }
}

/// The origin-form target the backend gets (`*` stays `*`).
pub fn target(uri: &Uri) -> &str {
    uri.path_and_query().map_or("/", |pq| pq.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::headers;

    fn verdict(line: (&str, &str), fields: &[(&'static str, &'static str)]) -> Result<(), StatusCode> {
        let method: Method = line.0.parse().unwrap();
        let uri: Uri = line.1.parse().unwrap();
        check(&method, &uri, Version::HTTP_11, &headers(fields)).map_err(|r| r.status)
    }

    #[test]
    fn what_a_server_must_refuse_is_refused() {
        let host = [("host", "app.example")];
        assert_eq!(verdict(("GET", "/"), &host), Ok(()));
        assert_eq!(verdict(("OPTIONS", "*"), &host), Ok(()));
        assert_eq!(verdict(("GET", "*"), &host), Err(StatusCode::BAD_REQUEST));
        assert_eq!(
            verdict(("CONNECT", "app.example:443"), &host),
            Err(StatusCode::METHOD_NOT_ALLOWED)
        );
        assert_eq!(verdict(("GET", "app.example:80"), &host), Err(StatusCode::BAD_REQUEST));
        assert_eq!(verdict(("GET", "/"), &[]), Err(StatusCode::BAD_REQUEST));
        assert_eq!(verdict(("GET", "http://app.example/"), &[]), Ok(()));
        let two = [("host", "a"), ("host", "b")];
        assert_eq!(verdict(("GET", "/"), &two), Err(StatusCode::BAD_REQUEST));
        for bad in ["a b", "evil.com/x@a", "a:port", "[::1", "x:123456", ""] {
            let h = [("host", bad)];
            assert_eq!(verdict(("GET", "/"), &h), Err(StatusCode::BAD_REQUEST), "{bad:?}");
        }
        for good in ["a", "a:80", "127.0.0.1:8080", "[::1]:8080", "xn--bcher-kva.example"] {
            let h = [("host", good)];
            assert_eq!(verdict(("GET", "/"), &h), Ok(()), "{good:?}");
        }
        let gzip = [("host", "a"), ("transfer-encoding", "gzip, chunked")];
        assert_eq!(verdict(("POST", "/"), &gzip), Err(StatusCode::NOT_IMPLEMENTED));
    }
}
