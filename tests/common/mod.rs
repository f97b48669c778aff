//! Shared test helpers: start ringside in-process on loopback ports chosen by
//! the OS, and a small HTTP/1.1 client with a cookie jar.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use ringside::app::{Handle, StartOptions};
use ringside::config::Config;
use tokio::net::TcpStream;

/// A config for tests: every port chosen by the OS, fast health checks.
pub fn test_config() -> Config {
    let mut c = Config {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        ..Config::default()
    };
    c.admin.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    c.demo.base_port = 0;
    c.demo.health_interval_ms = 100;
    c.health.interval_ms = 100;
    c.health.timeout_ms = 200;
    c.affinity.secret = Some("test secret test secret test secret!".into());
    c.proxy.connect_timeout_ms = 300;
    c
}

/// A running balancer with its admin API served.
pub struct Lb {
    pub handle: Handle,
    pub proxy: SocketAddr,
    pub admin: SocketAddr,
}

impl Lb {
    pub async fn start(config: Config) -> Lb {
        let handle = ringside::app::bind_and_start(config, StartOptions::default())
            .await
            .expect("start ringside");
        Lb {
            proxy: handle.proxy_addr(),
            admin: handle.admin_addr(),
            handle,
        }
    }

    /// The state of a backend, by name.
    pub fn state(&self, name: &str) -> String {
        self.handle
            .backends_view()
            .into_iter()
            .find(|b| b.name == name)
            .map(|b| b.state.to_string())
            .unwrap_or_else(|| "absent".into())
    }

    /// Waits up to `within` for `name` to reach `state`.
    pub async fn wait_state(&self, name: &str, state: &str, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        while self.state(name) != state {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{name} did not become {state} within {within:?} (is {})",
                self.state(name)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// One answer.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Answer {
    /// The backend that answered (the demo backends' `x-backend` header).
    pub fn backend(&self) -> Option<&str> {
        self.headers.get("x-backend").and_then(|v| v.to_str().ok())
    }

    /// The `Set-Cookie` values.
    pub fn set_cookies(&self) -> Vec<String> {
        self.headers
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_owned))
            .collect()
    }
}

/// A client with a cookie jar, like `curl -c jar -b jar`; one connection per request.
#[derive(Debug, Default, Clone)]
pub struct Client {
    pub jar: BTreeMap<String, String>,
    pub headers: Vec<(String, String)>,
}

impl Client {
    pub async fn get(&mut self, addr: SocketAddr, path: &str) -> Answer {
        self.send(addr, Method::GET, path).await
    }

    pub async fn post(&mut self, addr: SocketAddr, path: &str) -> Answer {
        self.send(addr, Method::POST, path).await
    }

    pub async fn send(&mut self, addr: SocketAddr, method: Method, path: &str) -> Answer {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "ringside.test");
        if !self.jar.is_empty() {
            let cookie: Vec<String> = self.jar.iter().map(|(k, v)| format!("{k}={v}")).collect();
            req = req.header("cookie", cookie.join("; "));
        }
        for (k, v) in &self.headers {
            req = req.header(k.as_str(), v.as_str());
        }
        let answer = raw(addr, req.body(Empty::<Bytes>::new()).unwrap()).await;
        for c in answer.set_cookies() {
            let first = c.split(';').next().unwrap_or("");
            if let Some((k, v)) = first.split_once('=') {
                let deleted = v.is_empty() || c.to_ascii_lowercase().contains("max-age=0");
                if deleted {
                    self.jar.remove(k.trim());
                } else {
                    self.jar.insert(k.trim().to_owned(), v.trim().to_owned());
                }
            }
        }
        answer
    }
}

/// Sends one request on a fresh connection and reads the whole answer.
pub async fn raw(addr: SocketAddr, req: Request<Empty<Bytes>>) -> Answer {
    let fut = async {
        let stream = TcpStream::connect(addr).await.expect("connect");
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("handshake");
        tokio::spawn(conn);
        let resp = sender.send_request(req).await.expect("response");
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        Answer {
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    };
    tokio::time::timeout(Duration::from_secs(10), fut)
        .await
        .expect("answer within 10 s")
}

/// JSON from the admin API.
pub async fn admin_json(
    addr: SocketAddr,
    method: Method,
    path: &str,
    body: Option<&str>,
) -> (StatusCode, serde_json::Value) {
    let fut = async {
        let stream = TcpStream::connect(addr).await.expect("connect admin");
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("handshake");
        tokio::spawn(conn);
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", addr.to_string())
            .header("content-type", "application/json")
            .body(http_body_util::Full::new(Bytes::from(body.unwrap_or("").to_owned())))
            .unwrap();
        let resp = sender.send_request(req).await.expect("admin response");
        let status = resp.status();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let value = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
        (status, value)
    };
    tokio::time::timeout(Duration::from_secs(10), fut)
        .await
        .expect("admin answer within 10 s")
}
