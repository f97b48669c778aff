//! Affinity-key extraction with balancer-cookie decoding: any headers, any
//! query, every mode and every cookie protection; nothing may panic, and a
//! forged cookie never routes to a backend.
#![no_main]

use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, OnceLock};

use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use ringside::router::affinity::{
    Affinity, AffinityConfig, AffinityMode, RequestView, client_ip, cookie_values, query_value,
};
use ringside::router::lb_cookie::{CookieCodec, Protection};
use ringside::router::{BackendSpec, NullSink, Router, RouterConfig, SessionKey};

const SECRET: &[u8] = b"fuzzing secret, fuzzing secret, fuzzing!";
const PROTECTIONS: [Protection; 4] = [
    Protection::Private,
    Protection::Signed,
    Protection::Hashed,
    Protection::Plain,
];

fn router() -> &'static Router {
    static ROUTER: OnceLock<Router> = OnceLock::new();
    ROUTER.get_or_init(|| {
        let r = Router::new(RouterConfig::default(), Arc::new(NullSink));
        for i in 1..=3 {
            let spec = BackendSpec::new(&format!("api-{i}"), ([127, 0, 0, 1], 9000 + i).into(), 1).unwrap();
            r.add_backend(&spec).unwrap();
        }
        r
    })
}

fn affinities() -> &'static Vec<Affinity> {
    static ALL: OnceLock<Vec<Affinity>> = OnceLock::new();
    ALL.get_or_init(|| {
        PROTECTIONS
            .iter()
            .map(|&p| {
                let mut config = AffinityConfig::default();
                config.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()];
                Affinity::new(config, CookieCodec::new("SERVERID", p, Some(SECRET)).unwrap())
            })
            .collect()
    })
}

/// Splits the input into header lines `name: value`, values as raw bytes.
fn headers_from(data: &[u8]) -> (HeaderMap, Option<&str>) {
    let mut headers = HeaderMap::new();
    let mut query = None;
    for line in data.split(|&b| b == b'\n') {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        if name == b"?" {
            query = std::str::from_utf8(value).ok();
            continue;
        }
        let name = match name {
            b"c" => HeaderName::from_static("cookie"),
            b"x" => HeaderName::from_static("x-forwarded-for"),
            b"s" => HeaderName::from_static("x-session-id"),
            other => match HeaderName::from_bytes(other) {
                Ok(n) => n,
                Err(_) => continue,
            },
        };
        if let Ok(v) = HeaderValue::from_bytes(value) {
            headers.append(name, v);
        }
    }
    (headers, query)
}

fuzz_target!(|data: &[u8]| {
    let (headers, query) = headers_from(data);
    let topo = router().topology();
    let peers = [
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V4(Ipv4Addr::new(203, 0, 113, 9)),
    ];
    for affinity in affinities() {
        for mode in AffinityMode::ALL {
            affinity.set_mode(mode);
            for peer in peers {
                let view = RequestView {
                    headers: &headers,
                    query,
                    peer,
                };
                let extracted = affinity.extract(&view, &topo);
                if extracted.forged {
                    assert!(
                        !matches!(extracted.key, SessionKey::Cookie { backend: Some(_), .. }),
                        "a forged cookie named a backend"
                    );
                }
            }
        }
        if let Ok(text) = std::str::from_utf8(data) {
            let _ = affinity.codec().decode(text);
        }
    }
    for value in cookie_values(&headers, "SERVERID") {
        for affinity in affinities() {
            let _ = affinity.codec().decode(value);
        }
    }
    if let Some(q) = query {
        let _ = query_value(q, "session");
    }
    let trusted = ["127.0.0.0/8".parse().unwrap()];
    let _ = client_ip(peers[0], &headers, &trusted);
});
