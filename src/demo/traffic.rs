//! The traffic generator: synthetic clients that log in, browse, fill a cart
//! and log out through the balancer — and notice when their session is lost
//! (the source material's "Sydney quits").
//!
//! Each client has its own cookie jar and keep-alive connection, sends its
//! session id as cookie, `X-Session-ID` header and `?session=` parameter (so
//! every affinity mode can route it), and presents a client address in
//! `X-Forwarded-For`: a share of them all behind one NAT address. The total
//! request rate is enforced centrally and can change at run time.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinHandle;

use super::registry::ClientRegistry;
use crate::router::{SessionKey, SessionName};

/// Settings of the synthetic clients.
#[derive(Debug, Clone, PartialEq)]
pub struct TrafficConfig {
    /// How many clients.
    pub clients: usize,
    /// Requests per second, all clients together.
    pub rate: f64,
    /// Share of clients behind the NAT address (0–1).
    pub nat_share: f64,
    /// The shared address.
    pub nat_addr: IpAddr,
    /// A request slower than this counts as an error.
    pub request_timeout: Duration,
    /// Seeds each client's choices.
    pub seed: u64,
}

impl Default for TrafficConfig {
    fn default() -> Self {
        TrafficConfig {
            clients: 20,
            rate: 50.0,
            nat_share: 0.3,
            nat_addr: IpAddr::V4(Ipv4Addr::new(203, 0, 113, 50)),
            request_timeout: Duration::from_secs(5),
            seed: 1,
        }
    }
}

/// Something a client noticed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrafficEvent {
    /// A logged-in client was told "who are you?": its session is gone.
    LostSession {
        /// The client's number.
        client: usize,
        /// The backend that did not know it.
        backend: Option<String>,
    },
    /// A client logged in.
    LoggedIn {
        /// The client's number.
        client: usize,
        /// Where its session lives.
        backend: Option<String>,
    },
}

/// The clients' figures so far.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct TrafficStats {
    /// Requests sent.
    pub requests: u64,
    /// 2xx answers.
    pub ok: u64,
    /// 4xx answers.
    pub status_4xx: u64,
    /// 5xx answers.
    pub status_5xx: u64,
    /// Connect failures and timeouts.
    pub errors: u64,
    /// Logins.
    pub logins: u64,
    /// Sessions lost.
    pub lost_sessions: u64,
}

#[derive(Debug, Default)]
struct Counters {
    requests: AtomicU64,
    ok: AtomicU64,
    status_4xx: AtomicU64,
    status_5xx: AtomicU64,
    errors: AtomicU64,
    logins: AtomicU64,
    lost_sessions: AtomicU64,
}

/// What a client sends that the balancer can route by: its address and its
/// cookie jar. Clients publish it when it changes, so views can tell which
/// client a session belongs to without touching the proxy's request path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIdentity {
    /// The client's number (`client-7`).
    pub number: usize,
    /// The address it presents in `X-Forwarded-For`.
    pub address: IpAddr,
    /// Its cookies.
    pub jar: BTreeMap<String, String>,
}

impl ClientIdentity {
    /// The headers and query its requests carry besides the method and path.
    pub fn request_parts(&self) -> (http::HeaderMap, Option<String>) {
        let mut headers = http::HeaderMap::new();
        let value = |v: &str| http::HeaderValue::from_str(v).ok();
        headers.insert(header::HOST, http::HeaderValue::from_static("ringside.demo"));
        if let Some(v) = value(&self.address.to_string()) {
            headers.insert("x-forwarded-for", v);
        }
        let session = self.jar.get("session_id");
        if let Some(v) = session.and_then(|id| value(id)) {
            headers.insert("x-session-id", v);
        }
        if !self.jar.is_empty() {
            let cookies: Vec<String> = self.jar.iter().map(|(k, v)| format!("{k}={v}")).collect();
            if let Some(v) = value(&cookies.join("; ")) {
                headers.insert(header::COOKIE, v);
            }
        }
        (headers, session.map(|id| format!("session={id}")))
    }

    /// The session `router` would route its next request by, under the
    /// mode in force (read from the very headers it sends, from a loopback
    /// peer); `None` without one.
    pub fn session(&self, router: &crate::router::Router) -> Option<SessionName> {
        let (headers, query) = self.request_parts();
        let view = crate::router::affinity::RequestView {
            headers: &headers,
            query: query.as_deref(),
            peer: IpAddr::V4(Ipv4Addr::LOCALHOST),
            verified: None,
        };
        let key = router.affinity().extract(&view, &router.topology()).key;
        Some(SessionName {
            fingerprint: router.fingerprint(key)?,
            address: match key {
                SessionKey::Source(ip) => Some(ip),
                _ => None,
            },
        })
    }
}

#[derive(Debug)]
struct Shared {
    /// Bumped by a reset: every client forgets its cookies.
    epoch: AtomicU64,
    /// Requests per second × 1000.
    rate_milli: AtomicU64,
    running: AtomicBool,
    permits: Semaphore,
    counters: Counters,
    /// Each client's cookie jar, to tell sessions and clients apart.
    registry: Arc<ClientRegistry>,
}

/// The running clients.
#[derive(Debug)]
pub struct Traffic {
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Traffic {
    /// Starts the clients against `proxy` (running unless `paused`). Events
    /// go to `events` with `try_send`: a full channel drops them.
    pub fn start(
        proxy: SocketAddr,
        config: TrafficConfig,
        events: mpsc::Sender<TrafficEvent>,
        paused: bool,
    ) -> Traffic {
        let behind_nat = (config.clients as f64 * config.nat_share.clamp(0.0, 1.0)).round() as usize;
        let address_of = |i: usize| {
            if i < behind_nat {
                config.nat_addr
            } else {
                own_address(i)
            }
        };
        let shared = Arc::new(Shared {
            epoch: AtomicU64::new(0),
            rate_milli: AtomicU64::new(to_milli(config.rate)),
            running: AtomicBool::new(!paused),
            permits: Semaphore::new(0),
            counters: Counters::default(),
            registry: Arc::default(),
        });
        let (stop, stop_rx) = watch::channel(false);
        let mut tasks = vec![tokio::spawn(ticker(Arc::clone(&shared), stop_rx.clone()))];
        for i in 0..config.clients {
            let identity = ClientIdentity {
                number: i,
                address: address_of(i),
                jar: BTreeMap::new(),
            };
            shared.registry.record(&identity);
            let client = Client {
                number: i,
                proxy,
                identity,
                connection: None,
                rng: fastrand::Rng::with_seed(config.seed.wrapping_mul(1_000_003).wrapping_add(i as u64)),
                timeout: config.request_timeout,
                shared: Arc::clone(&shared),
                events: events.clone(),
            };
            tasks.push(tokio::spawn(client.run(stop_rx.clone())));
        }
        Traffic { shared, stop, tasks }
    }

    /// A handle on the clients' figures and state that views can keep.
    pub fn probe(&self) -> TrafficProbe {
        TrafficProbe(Arc::clone(&self.shared))
    }

    /// Sets the total request rate (requests per second).
    pub fn set_rate(&self, rate: f64) {
        self.shared.rate_milli.store(to_milli(rate), Ordering::Relaxed);
    }

    /// The total request rate.
    pub fn rate(&self) -> f64 {
        self.shared.rate_milli.load(Ordering::Relaxed) as f64 / 1000.0
    }

    /// Stops sending (clients finish the request in hand).
    pub fn pause(&self) {
        self.shared.running.store(false, Ordering::Relaxed);
    }

    /// Sends again.
    pub fn resume(&self) {
        self.shared.running.store(true, Ordering::Relaxed);
    }

    /// True while sending.
    pub fn is_running(&self) -> bool {
        self.shared.running.load(Ordering::Relaxed)
    }

    /// Starts over: every client forgets its cookies (a new visitor) and the
    /// figures return to zero.
    pub fn reset(&self) {
        self.shared.epoch.fetch_add(1, Ordering::Relaxed);
        let c = &self.shared.counters;
        for a in [
            &c.requests,
            &c.ok,
            &c.status_4xx,
            &c.status_5xx,
            &c.errors,
            &c.logins,
            &c.lost_sessions,
        ] {
            a.store(0, Ordering::Relaxed);
        }
    }

    /// The figures so far.
    pub fn stats(&self) -> TrafficStats {
        self.probe().stats()
    }

    /// Ends every client.
    pub async fn stop(self) {
        self.stop.send_replace(true);
        for t in self.tasks {
            t.abort();
            let _ = t.await;
        }
    }
}

/// Reads the clients' figures and state, for views.
#[derive(Debug, Clone)]
pub struct TrafficProbe(Arc<Shared>);

impl TrafficProbe {
    /// The figures so far.
    pub fn stats(&self) -> TrafficStats {
        let c = &self.0.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        TrafficStats {
            requests: get(&c.requests),
            ok: get(&c.ok),
            status_4xx: get(&c.status_4xx),
            status_5xx: get(&c.status_5xx),
            errors: get(&c.errors),
            logins: get(&c.logins),
            lost_sessions: get(&c.lost_sessions),
        }
    }

    /// True while sending.
    pub fn is_running(&self) -> bool {
        self.0.running.load(Ordering::Relaxed)
    }

    /// The total request rate.
    pub fn rate(&self) -> f64 {
        self.0.rate_milli.load(Ordering::Relaxed) as f64 / 1000.0
    }

    /// Which client holds which session.
    pub fn registry(&self) -> &Arc<ClientRegistry> {
        &self.0.registry
    }
}

fn to_milli(rate: f64) -> u64 {
    (rate.clamp(0.0, 1_000_000.0) * 1000.0) as u64
}

/// A distinct documentation-range address for client `i`.
fn own_address(i: usize) -> IpAddr {
    let net = if i < 254 { [198, 51, 100] } else { [192, 0, 2] };
    IpAddr::V4(Ipv4Addr::new(net[0], net[1], net[2], (i % 254 + 1) as u8))
}

/// Grants request permits at the configured rate, with at most a tenth of
/// a second of burst.
async fn ticker(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    const TICK: Duration = Duration::from_millis(10);
    let mut interval = tokio::time::interval(TICK);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut owed = 0.0f64;
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = stop.changed() => return,
        }
        if !shared.running.load(Ordering::Relaxed) {
            owed = 0.0;
            continue;
        }
        let rate = shared.rate_milli.load(Ordering::Relaxed) as f64 / 1000.0;
        owed += rate * TICK.as_secs_f64();
        let burst = (rate / 10.0).max(1.0) as usize;
        let whole = owed.floor() as usize;
        owed -= whole as f64;
        let room = burst.saturating_sub(shared.permits.available_permits());
        if whole.min(room) > 0 {
            shared.permits.add_permits(whole.min(room));
        }
    }
}

struct Client {
    number: usize,
    proxy: SocketAddr,
    /// Its address and cookie jar, as its requests present them.
    identity: ClientIdentity,
    connection: Option<SendRequest<Empty<Bytes>>>,
    rng: fastrand::Rng,
    timeout: Duration,
    shared: Arc<Shared>,
    events: mpsc::Sender<TrafficEvent>,
}

/// What one request came back with.
struct Outcome {
    status: Option<StatusCode>,
    backend: Option<String>,
}

impl Client {
    async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let mut steps_left = 0u32;
        let mut epoch = self.shared.epoch.load(Ordering::Relaxed);
        loop {
            tokio::select! {
                permit = self.shared.permits.acquire() => match permit {
                    Ok(p) => p.forget(),
                    Err(_) => return,
                },
                _ = stop.changed() => return,
            }
            let now = self.shared.epoch.load(Ordering::Relaxed);
            if now != epoch {
                epoch = now;
                self.identity.jar.clear();
                self.file_jar();
                self.connection = None;
            }
            let logged_in = self.identity.jar.contains_key("session_id");
            if !logged_in {
                let user = format!("client-{}", self.number);
                let out = self.request(Method::POST, "/login", &format!("user={user}")).await;
                if out.status == Some(StatusCode::OK) && self.identity.jar.contains_key("session_id") {
                    self.shared.counters.logins.fetch_add(1, Ordering::Relaxed);
                    let _ = self.events.try_send(TrafficEvent::LoggedIn {
                        client: self.number,
                        backend: out.backend,
                    });
                    steps_left = self.rng.u32(2..=6);
                }
                continue;
            }
            let (method, path, query) = if steps_left == 0 {
                (Method::POST, "/logout", String::new())
            } else {
                steps_left -= 1;
                match self.rng.u8(0..3) {
                    0 => (Method::GET, "/profile", String::new()),
                    1 => (Method::POST, "/cart", format!("item=item-{}", self.rng.u8(0..100))),
                    _ => (Method::GET, "/cart", String::new()),
                }
            };
            let out = self.request(method, path, &query).await;
            if out.status == Some(StatusCode::UNAUTHORIZED) {
                self.shared.counters.lost_sessions.fetch_add(1, Ordering::Relaxed);
                let _ = self.events.try_send(TrafficEvent::LostSession {
                    client: self.number,
                    backend: out.backend,
                });
                self.identity.jar.remove("session_id");
                self.file_jar();
            }
        }
    }

    /// Tells the registry what the jar holds now.
    fn file_jar(&self) {
        self.shared.registry.record(&self.identity);
    }

    async fn request(&mut self, method: Method, path: &str, query: &str) -> Outcome {
        let shared = Arc::clone(&self.shared);
        let c = &shared.counters;
        c.requests.fetch_add(1, Ordering::Relaxed);
        let (headers, session_query) = self.identity.request_parts();
        let uri = match [(!query.is_empty()).then_some(query), session_query.as_deref()] {
            [Some(q), Some(s)] => format!("{path}?{q}&{s}"),
            [Some(q), None] | [None, Some(q)] => format!("{path}?{q}"),
            [None, None] => path.to_owned(),
        };
        let mut req = Request::builder().method(method).uri(uri);
        if let Some(h) = req.headers_mut() {
            *h = headers;
        }
        let Ok(req) = req.body(Empty::new()) else {
            c.errors.fetch_add(1, Ordering::Relaxed);
            return Outcome {
                status: None,
                backend: None,
            };
        };
        match tokio::time::timeout(self.timeout, self.send(req)).await {
            Ok(Some((status, headers))) => {
                match status.as_u16() / 100 {
                    2 => c.ok.fetch_add(1, Ordering::Relaxed),
                    4 => c.status_4xx.fetch_add(1, Ordering::Relaxed),
                    5 => c.status_5xx.fetch_add(1, Ordering::Relaxed),
                    _ => 0,
                };
                let mut changed = false;
                for value in headers.get_all(header::SET_COOKIE) {
                    if let Ok(v) = value.to_str() {
                        update_jar(&mut self.identity.jar, v);
                        changed = true;
                    }
                }
                if changed {
                    self.file_jar();
                }
                Outcome {
                    status: Some(status),
                    backend: headers
                        .get("x-backend")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned),
                }
            }
            _ => {
                c.errors.fetch_add(1, Ordering::Relaxed);
                self.connection = None;
                Outcome {
                    status: None,
                    backend: None,
                }
            }
        }
    }

    /// Sends on the client's connection, (re)connecting when needed, and
    /// reads the whole answer.
    async fn send(&mut self, req: Request<Empty<Bytes>>) -> Option<(StatusCode, http::HeaderMap)> {
        if self.connection.as_ref().is_none_or(|c| c.is_closed()) {
            let stream = TcpStream::connect(self.proxy).await.ok()?;
            let _ = stream.set_nodelay(true);
            let (sender, conn) = http1::handshake(TokioIo::new(stream)).await.ok()?;
            tokio::spawn(conn);
            self.connection = Some(sender);
        }
        let sender = self.connection.as_mut()?;
        if sender.ready().await.is_err() {
            self.connection = None;
            return None;
        }
        let resp = match sender.send_request(req).await {
            Ok(r) => r,
            Err(_) => {
                self.connection = None;
                return None;
            }
        };
        let status = resp.status();
        let (parts, body) = resp.into_parts();
        if body.collect().await.is_err() {
            self.connection = None;
        }
        Some((status, parts.headers))
    }
}

/// Applies one `Set-Cookie` to a jar: an empty value or `Max-Age=0` deletes.
pub fn update_jar(jar: &mut BTreeMap<String, String>, set_cookie: &str) {
    let mut parts = set_cookie.split(';');
    let Some((name, value)) = parts.next().and_then(|p| p.split_once('=')) else {
        return;
    };
    let (name, value) = (name.trim(), value.trim());
    let expired = parts.any(|a| {
        let a = a.trim().to_ascii_lowercase();
        a.strip_prefix("max-age=")
            .is_some_and(|v| v.trim().starts_with(['0', '-']))
    });
    if value.is_empty() || expired {
        jar.remove(name);
    } else {
        jar.insert(name.to_owned(), value.to_owned());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_jar_sets_and_deletes() {
        let mut jar = BTreeMap::new();
        update_jar(&mut jar, "session_id=abc; Path=/; HttpOnly");
        update_jar(&mut jar, "SERVERID=xyz; Path=/; HttpOnly; SameSite=Lax");
        assert_eq!(jar.len(), 2);
        update_jar(&mut jar, "session_id=; Path=/; Max-Age=0");
        assert!(!jar.contains_key("session_id"));
        update_jar(&mut jar, "SERVERID=new; Max-Age=3600");
        assert_eq!(jar["SERVERID"], "new");
        update_jar(&mut jar, "garbage");
        assert_eq!(jar.len(), 1);
    }

    #[test]
    fn addresses_are_distinct_documentation_ranges() {
        let a: std::collections::HashSet<IpAddr> = (0..500).map(own_address).collect();
        assert_eq!(a.len(), 500);
    }
}
