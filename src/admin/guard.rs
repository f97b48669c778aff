//! Who may use the admin API: a request is refused, before anything else,
//! when a web page could have sent it — its `Host` is not one of the API's
//! own names (DNS rebinding), its `Origin` is another site's, the browser
//! says it is cross-site, or it carries a body that is not JSON (a form or a
//! `no-cors` fetch) — and, when a token is configured, without the token.
//! No CORS allowance is ever given.

use std::net::{IpAddr, SocketAddr};

use http::{HeaderMap, Method, header};
use subtle::ConstantTimeEq;

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// 403: a page could have sent it.
    Forbidden(String),
    /// 401: the token is missing or wrong.
    Unauthorized,
}

/// The names and the token the admin API accepts.
#[derive(Debug, Clone)]
pub struct Guard {
    /// Host names (lower case, no port) it answers to.
    hosts: Vec<String>,
    port: u16,
    token: Option<String>,
}

impl Guard {
    /// For an API listening on `listen`, answering to `localhost`,
    /// `127.0.0.1`, `[::1]`, the listen address and `extra` names.
    pub fn new(listen: SocketAddr, extra: &[String], token: Option<String>) -> Self {
        let mut hosts: Vec<String> = ["localhost", "127.0.0.1", "[::1]"].map(String::from).to_vec();
        if !listen.ip().is_unspecified() {
            hosts.push(host_of(listen.ip()));
        }
        hosts.extend(extra.iter().map(|h| h.trim().to_ascii_lowercase()));
        Guard {
            hosts,
            port: listen.port(),
            token,
        }
    }

    /// Checks a request's head; `Ok` when it may go on.
    pub fn check(&self, method: &Method, headers: &HeaderMap) -> Result<(), Refusal> {
        let forbidden = |why: String| Err(Refusal::Forbidden(why));
        let mut hosts = headers.get_all(header::HOST).iter();
        let host = match (hosts.next(), hosts.next()) {
            (Some(h), None) => h.to_str().unwrap_or(""),
            (None, _) => return forbidden("a Host header is required".into()),
            (Some(_), Some(_)) => return forbidden("one Host header, please".into()),
        };
        if !self.is_own(host) {
            return forbidden(format!(
                "Host {host:?} is not one of this API's names (add it to admin.allowed_hosts if it should be)"
            ));
        }
        if let Some(origin) = headers.get(header::ORIGIN) {
            let origin = origin.to_str().unwrap_or("");
            let own = origin
                .strip_prefix("http://")
                .or_else(|| origin.strip_prefix("https://"))
                .is_some_and(|authority| self.is_own(authority));
            if !own {
                return forbidden(format!("requests from the web page at {origin:?} are not accepted"));
            }
        }
        if let Some(site) = headers.get("sec-fetch-site")
            && (site.as_bytes().eq_ignore_ascii_case(b"cross-site")
                || site.as_bytes().eq_ignore_ascii_case(b"same-site"))
        {
            return forbidden("cross-site requests are not accepted".into());
        }
        if carries_body(method, headers) && !is_json(headers) {
            return forbidden("a request with a body must send Content-Type: application/json".into());
        }
        if let Some(token) = &self.token {
            let given = headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "));
            let ok = given.is_some_and(|g| bool::from(g.ct_eq(token.as_bytes())));
            if !ok {
                return Err(Refusal::Unauthorized);
            }
        }
        Ok(())
    }

    /// Whether `authority` (`name` or `name:port`) names this API.
    fn is_own(&self, authority: &str) -> bool {
        let authority = authority.trim().to_ascii_lowercase();
        let (name, port) = split_port(&authority);
        if port.is_some_and(|p| p != self.port) {
            return false;
        }
        self.hosts.iter().any(|h| *h == name)
    }
}

/// `name:port` → (`name`, port); `[v6]:port` keeps its brackets.
fn split_port(authority: &str) -> (&str, Option<u16>) {
    let colon = if authority.starts_with('[') {
        authority
            .find(']')
            .and_then(|end| authority[end..].find(':').map(|c| end + c))
    } else {
        authority.rfind(':')
    };
    match colon {
        Some(i) => match authority[i + 1..].parse::<u16>() {
            Ok(port) => (&authority[..i], Some(port)),
            Err(_) => (authority, Some(0)),
        },
        None => (authority, None),
    }
}

fn host_of(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    }
}

/// Whether the request has (or says it has) a body, or names a type for one.
fn carries_body(method: &Method, headers: &HeaderMap) -> bool {
    let length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(0);
    let writes = !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
    length > 0
        || headers.contains_key(header::TRANSFER_ENCODING)
        || (writes && headers.contains_key(header::CONTENT_TYPE))
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::testing::headers;

    fn guard() -> Guard {
        Guard::new("127.0.0.1:8090".parse().unwrap(), &["admin.lab".into()], None)
    }

    #[test]
    fn own_names_pass_and_others_are_refused() {
        let g = guard();
        for host in [
            "127.0.0.1:8090",
            "localhost:8090",
            "LOCALHOST",
            "[::1]:8090",
            "admin.lab",
        ] {
            assert_eq!(g.check(&Method::GET, &headers(&[("host", host)])), Ok(()), "{host}");
        }
        for host in [
            "evil.example:8090",
            "127.0.0.1:9999",
            "127.0.0.1.evil.example",
            "localhost:x",
            "",
        ] {
            assert!(g.check(&Method::GET, &headers(&[("host", host)])).is_err(), "{host}");
        }
        assert!(g.check(&Method::GET, &HeaderMap::new()).is_err(), "no Host");
        let two = headers(&[("host", "localhost"), ("host", "localhost")]);
        assert!(g.check(&Method::GET, &two).is_err(), "two Hosts");
    }

    #[test]
    fn browser_shaped_cross_site_requests_are_refused() {
        let g = guard();
        let cases = [
            vec![("host", "127.0.0.1:8090"), ("origin", "https://evil.example")],
            vec![("host", "127.0.0.1:8090"), ("origin", "null")],
            vec![("host", "127.0.0.1:8090"), ("sec-fetch-site", "cross-site")],
            vec![("host", "127.0.0.1:8090"), ("sec-fetch-site", "same-site")],
            vec![
                ("host", "127.0.0.1:8090"),
                ("content-type", "text/plain"),
                ("content-length", "5"),
            ],
            vec![
                ("host", "127.0.0.1:8090"),
                ("content-type", "application/x-www-form-urlencoded"),
            ],
            vec![("host", "127.0.0.1:8090"), ("content-length", "2")],
        ];
        for case in cases {
            let h = headers(&case);
            assert!(
                matches!(g.check(&Method::POST, &h), Err(Refusal::Forbidden(_))),
                "{case:?}"
            );
        }
        let own_page = headers(&[
            ("host", "127.0.0.1:8090"),
            ("origin", "http://127.0.0.1:8090"),
            ("sec-fetch-site", "same-origin"),
            ("content-type", "application/json; charset=utf-8"),
            ("content-length", "2"),
        ]);
        assert_eq!(g.check(&Method::POST, &own_page), Ok(()));
        let curl = headers(&[("host", "127.0.0.1:8090")]);
        assert_eq!(g.check(&Method::POST, &curl), Ok(()), "a bodiless POST from curl");
    }

    #[test]
    fn a_token_is_required_when_set() {
        let g = Guard::new(
            "0.0.0.0:8090".parse().unwrap(),
            &[],
            Some("s3cret-s3cret-s3cret".into()),
        );
        let no = headers(&[("host", "localhost:8090")]);
        assert_eq!(g.check(&Method::GET, &no), Err(Refusal::Unauthorized));
        let wrong = headers(&[("host", "localhost:8090"), ("authorization", "Bearer nope")]);
        assert_eq!(g.check(&Method::GET, &wrong), Err(Refusal::Unauthorized));
        let right = headers(&[
            ("host", "localhost:8090"),
            ("authorization", "Bearer s3cret-s3cret-s3cret"),
        ]);
        assert_eq!(g.check(&Method::GET, &right), Ok(()));
    }
}
