//! Configuration: a TOML file (`--config`, commented example in
//! `assets/ringside.toml`) with command-line flags on top. Every field has a
//! default; an invalid one is refused with the file, the key and the reason.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::router::affinity::{AffinityMode, IpNet};
use crate::router::lb_cookie::{MIN_SECRET_LEN, Protection};
use crate::router::{BackendSpec, Placement, VnodeHash};

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has a field of the wrong type or name.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// toml's message: line, column, key and what was expected.
        message: String,
    },
    /// A value is out of range or inconsistent.
    #[error("{origin}: `{key}` {reason}")]
    Invalid {
        /// The file, or "command line".
        origin: String,
        /// The dotted key.
        key: &'static str,
        /// What is wrong and what would be right.
        reason: String,
    },
}

/// Everything ringside can be told.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where the proxy listens.
    pub listen: SocketAddr,
    /// External backends; with none, demo backends are started.
    pub backends: Vec<BackendEntry>,
    /// Hashing and placement.
    pub routing: RoutingConfig,
    /// Affinity keys and the balancer cookie.
    pub affinity: AffinitySection,
    /// Active health checks.
    pub health: HealthConfig,
    /// Graceful draining.
    pub drain: DrainConfig,
    /// Timeouts on the proxy path.
    pub proxy: ProxyConfig,
    /// Connection caps and queues.
    pub limits: LimitsConfig,
    /// The session table.
    pub sessions: SessionsConfig,
    /// The admin API.
    pub admin: AdminConfig,
    /// The embedded demo world.
    pub demo: DemoConfig,
    /// The synthetic clients.
    pub traffic: TrafficSection,
    /// Logging.
    pub log: LogConfig,
}

/// One external backend.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendEntry {
    /// Unique name.
    pub name: String,
    /// `IP:PORT`.
    pub addr: SocketAddr,
    /// 1–100.
    #[serde(default = "one")]
    pub weight: u32,
}

fn one() -> u32 {
    1
}

/// `[routing]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RoutingConfig {
    /// Placement for new sessions.
    pub placement: Placement,
    /// Virtual nodes per unit of weight.
    pub vnodes: u32,
    /// `mixed` or the article's `crc32`.
    pub vnode_hash: VnodeHash,
    /// Bounded-ring's c.
    pub bound_factor: f64,
}

impl Default for RoutingConfig {
    fn default() -> Self {
        RoutingConfig {
            placement: Placement::Ring,
            vnodes: 150,
            vnode_hash: VnodeHash::Mixed,
            bound_factor: 1.25,
        }
    }
}

/// `[affinity]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AffinitySection {
    /// What requests are routed by.
    pub mode: AffinityMode,
    /// The balancer cookie's name.
    pub cookie_name: String,
    /// How its value is protected.
    pub protection: Protection,
    /// Its key (≥ 32 bytes); also `RINGSIDE_COOKIE_SECRET`. None: random per start.
    pub secret: Option<String>,
    /// Add `Secure` (behind a TLS front end).
    pub secure: bool,
    /// Add `Max-Age`; none makes it a browser-session cookie.
    pub max_age_secs: Option<u64>,
    /// The application's session cookie.
    pub app_cookie: String,
    /// The session header.
    pub header: String,
    /// The session query parameter.
    pub query_param: String,
    /// Peers whose X-Forwarded-For is believed (addresses or CIDR blocks).
    pub trusted_proxies: Vec<String>,
}

impl Default for AffinitySection {
    fn default() -> Self {
        AffinitySection {
            mode: AffinityMode::LbCookie,
            cookie_name: crate::router::lb_cookie::DEFAULT_COOKIE_NAME.into(),
            protection: Protection::Private,
            secret: None,
            secure: false,
            max_age_secs: None,
            app_cookie: "session_id".into(),
            header: "X-Session-ID".into(),
            query_param: "session".into(),
            trusted_proxies: vec!["127.0.0.0/8".into(), "::1".into()],
        }
    }
}

/// `[health]`: the article's defaults (5 s, 3 s, rise 2, fall 3).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HealthConfig {
    /// The path checked with GET; 2xx is healthy.
    pub path: String,
    /// Between checks.
    pub interval_ms: u64,
    /// A check slower than this failed.
    pub timeout_ms: u64,
    /// Successes in a row to come up.
    pub rise: u32,
    /// Failures in a row to go down (checks or connects).
    pub fall: u32,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            path: "/health".into(),
            interval_ms: 5000,
            timeout_ms: 3000,
            rise: 2,
            fall: 3,
        }
    }
}

/// `[drain]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DrainConfig {
    /// How long a drain waits before closing what is left.
    pub timeout_secs: u64,
}

impl Default for DrainConfig {
    fn default() -> Self {
        DrainConfig { timeout_secs: 30 }
    }
}

/// `[proxy]`: every timeout is an inactivity limit (nothing moved for
/// that long), never a limit on a whole exchange.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProxyConfig {
    /// Connecting to a backend (HAProxy `timeout connect`, nginx
    /// `proxy_connect_timeout`).
    pub connect_timeout_ms: u64,
    /// A backend silent, or not reading, this long: 504 (HAProxy `timeout
    /// server`, nginx `proxy_read_timeout` / `proxy_send_timeout`).
    pub backend_timeout_ms: u64,
    /// A client's request head must arrive within this (HAProxy `timeout
    /// http-request`, nginx `client_header_timeout`).
    pub header_read_timeout_ms: u64,
    /// A keep-alive connection idle this long is closed; advertised as
    /// `Keep-Alive: timeout=` (HAProxy `timeout http-keep-alive`, nginx
    /// `keepalive_timeout`).
    pub keepalive_timeout_ms: u64,
    /// A client that sends nothing of its body (408) or reads nothing of its
    /// answer this long is cut, and its backend connection released (HAProxy
    /// `timeout client`, nginx `client_body_timeout` / `send_timeout`).
    pub client_timeout_ms: u64,
    /// A tunnel (WebSocket) idle this long is closed (HAProxy `timeout tunnel`).
    pub tunnel_timeout_ms: u64,
    /// Largest request head accepted (then 431).
    pub max_header_bytes: usize,
    /// Other backends tried when a connect fails.
    pub retries: u32,
    /// Idle keep-alive connections kept per backend (per proxy thread).
    pub pool_idle_per_backend: usize,
    /// Proxy threads, each with its own listener and connections; 0: one per core.
    pub threads: usize,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            connect_timeout_ms: 1000,
            backend_timeout_ms: 30_000,
            header_read_timeout_ms: 10_000,
            keepalive_timeout_ms: 60_000,
            client_timeout_ms: 30_000,
            tunnel_timeout_ms: 3_600_000,
            max_header_bytes: 16 * 1024,
            retries: 2,
            pool_idle_per_backend: 64,
            threads: 0,
        }
    }
}

/// `[limits]`: what ringside lets in at once. 0 means "derived from the
/// descriptor limit", which ringside raises to the hard limit at start.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Client connections at once (HAProxy global `maxconn`, nginx
    /// `worker_connections`); beyond it new ones wait in the kernel backlog.
    pub max_connections: usize,
    /// Requests in flight per backend (HAProxy server `maxconn`, nginx
    /// `max_conns`); beyond it they queue.
    pub max_conns_per_backend: usize,
    /// How long a request may wait in a backend's queue (then 503 +
    /// `Retry-After`; HAProxy `timeout queue`).
    pub queue_timeout_ms: u64,
    /// Requests waiting per backend at most (default: `max_connections`).
    pub max_queue: Option<usize>,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_connections: 0,
            max_conns_per_backend: 0,
            queue_timeout_ms: 1000,
            max_queue: None,
        }
    }
}

/// `[sessions]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SessionsConfig {
    /// Idle sessions expire after this.
    pub idle_timeout_secs: u32,
    /// The table's cap.
    pub max: usize,
    /// A shared session store (`redis://host:port`); `None` keeps the table
    /// in memory only.
    pub store: Option<String>,
    /// Longest wait for the store on a local miss, or before a response
    /// that creates, moves or ends a session, before going on without it.
    pub store_timeout_ms: u64,
    /// The most keys this balancer keeps in the store; beyond it new
    /// sessions stay local (counted as unshared) until keys expire.
    pub store_max: usize,
}

impl Default for SessionsConfig {
    fn default() -> Self {
        SessionsConfig {
            idle_timeout_secs: 1800,
            max: 1_000_000,
            store: None,
            store_timeout_ms: 50,
            store_max: 100_000,
        }
    }
}

/// `[admin]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// Where the admin API listens.
    pub listen: SocketAddr,
    /// Bearer token; required to listen anywhere but loopback.
    pub token: Option<String>,
    /// Host names the API answers to besides `localhost`, `127.0.0.1`,
    /// `[::1]` and its listen address (requests naming any other are refused).
    pub allowed_hosts: Vec<String>,
    /// `/api/events` streams open at once, at most.
    pub max_event_streams: usize,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8090)),
            token: None,
            allowed_hosts: Vec::new(),
            max_event_streams: 64,
        }
    }
}

/// `[demo]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DemoConfig {
    /// Demo backends started when no external backend is configured.
    pub backends: usize,
    /// The first one's port (the next ones count up); 0 lets the OS choose.
    pub base_port: u16,
    /// Health-check interval for demo backends, so a kill shows quickly.
    pub health_interval_ms: u64,
}

impl Default for DemoConfig {
    fn default() -> Self {
        DemoConfig {
            backends: 3,
            base_port: 8081,
            health_interval_ms: 1000,
        }
    }
}

/// `[traffic]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrafficSection {
    /// Run the synthetic clients (default: on in the dashboard, off headless).
    pub enabled: Option<bool>,
    /// How many clients.
    pub clients: usize,
    /// Requests per second, all clients together.
    pub rate: f64,
    /// Share of clients behind one NAT address (0–1).
    pub nat_share: f64,
}

impl Default for TrafficSection {
    fn default() -> Self {
        TrafficSection {
            enabled: None,
            clients: 20,
            rate: 50.0,
            nat_share: 0.3,
        }
    }
}

/// `[log]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// Where the dashboard's log goes (headless mode logs to stderr); by
    /// default one file per instance, see [`LogConfig::path`].
    pub file: Option<PathBuf>,
    /// A tracing filter, e.g. `info` or `ringside=debug`.
    pub level: String,
}

impl LogConfig {
    /// The log file of an instance whose proxy listens on `listen`: the
    /// configured one, or `ringside-PORT.log` in the temporary directory
    /// (`ringside-pidPID.log` when the OS chooses the port), so that two
    /// instances never share one.
    pub fn path(&self, listen: SocketAddr) -> PathBuf {
        self.file.clone().unwrap_or_else(|| {
            let name = match listen.port() {
                0 => format!("ringside-pid{}.log", std::process::id()),
                port => format!("ringside-{port}.log"),
            };
            std::env::temp_dir().join(name)
        })
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            file: None,
            level: "info".into(),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            backends: Vec::new(),
            routing: RoutingConfig::default(),
            affinity: AffinitySection::default(),
            health: HealthConfig::default(),
            drain: DrainConfig::default(),
            proxy: ProxyConfig::default(),
            limits: LimitsConfig::default(),
            sessions: SessionsConfig::default(),
            admin: AdminConfig::default(),
            demo: DemoConfig::default(),
            traffic: TrafficSection::default(),
            log: LogConfig::default(),
        }
    }
}

impl Config {
    /// Reads and validates a TOML file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let config = Config::parse(&text, path)?;
        config.validate(&path.display().to_string())?;
        Ok(config)
    }

    /// Parses TOML text (`path` only names it in errors).
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })
    }

    /// Checks ranges and consistency, section by section; `origin` names
    /// the source in errors.
    pub fn validate(&self, origin: &str) -> Result<(), ConfigError> {
        self.check().map_err(|Invalid(key, reason)| ConfigError::Invalid {
            origin: origin.to_owned(),
            key,
            reason,
        })
    }

    fn check(&self) -> Result<(), Invalid> {
        check_backends(&self.backends)?;
        self.routing.check()?;
        self.affinity.check()?;
        self.health.check()?;
        if self.drain.timeout_secs == 0 || self.drain.timeout_secs > 86_400 {
            return Err(Invalid(
                "drain.timeout_secs",
                format!("is {}; use 1 to 86400", self.drain.timeout_secs),
            ));
        }
        self.proxy.check()?;
        self.limits.check()?;
        self.sessions.check(self.affinity.secret.is_some())?;
        self.admin.check()?;
        if self.backends.is_empty() && !(1..=64).contains(&self.demo.backends) {
            return Err(Invalid(
                "demo.backends",
                format!("is {}; use 1 to 64", self.demo.backends),
            ));
        }
        in_range(
            "demo.health_interval_ms",
            self.demo.health_interval_ms,
            10,
            3_600_000,
            "milliseconds",
        )?;
        self.traffic.check()
    }

    /// The affinity extractor's settings (names checked by [`Config::validate`]).
    pub fn affinity_config(&self) -> crate::router::affinity::AffinityConfig {
        let a = &self.affinity;
        crate::router::affinity::AffinityConfig {
            mode: a.mode,
            app_cookie: a.app_cookie.clone(),
            header: http::HeaderName::from_bytes(a.header.as_bytes())
                .unwrap_or(http::HeaderName::from_static("x-session-id")),
            query_param: a.query_param.clone(),
            trusted_proxies: a
                .trusted_proxies
                .iter()
                .filter_map(|p| p.parse::<IpNet>().ok())
                .collect(),
        }
    }

    /// The backend timeout.
    pub fn backend_timeout(&self) -> Duration {
        Duration::from_millis(self.proxy.backend_timeout_ms)
    }
}

/// A key and what is wrong with its value.
struct Invalid(&'static str, String);

fn in_range(key: &'static str, v: u64, lo: u64, hi: u64, unit: &str) -> Result<(), Invalid> {
    if (lo..=hi).contains(&v) {
        Ok(())
    } else {
        Err(Invalid(key, format!("is {v}; use {lo} to {hi} {unit}")))
    }
}

fn check_backends(backends: &[BackendEntry]) -> Result<(), Invalid> {
    let mut names = std::collections::HashSet::new();
    if backends.len() > crate::router::MAX_BACKENDS {
        return Err(Invalid(
            "backends",
            format!("lists {}; at most {}", backends.len(), crate::router::MAX_BACKENDS),
        ));
    }
    for b in backends {
        BackendSpec::new(&b.name, b.addr, b.weight).map_err(|e| Invalid("backends", e.to_string()))?;
        if !names.insert(b.name.as_str()) {
            return Err(Invalid(
                "backends",
                format!("name {:?} appears twice: names must be unique", b.name),
            ));
        }
    }
    Ok(())
}

impl RoutingConfig {
    fn check(&self) -> Result<(), Invalid> {
        in_range("routing.vnodes", u64::from(self.vnodes), 1, 10_000, "")?;
        if !(self.bound_factor > 1.0 && self.bound_factor <= 10.0) {
            return Err(Invalid(
                "routing.bound_factor",
                format!(
                    "is {}; use a number above 1 and at most 10 (1.25 is usual)",
                    self.bound_factor
                ),
            ));
        }
        Ok(())
    }
}

impl AffinitySection {
    fn check(&self) -> Result<(), Invalid> {
        if let Some(secret) = &self.secret
            && secret.len() < MIN_SECRET_LEN
        {
            return Err(Invalid(
                "affinity.secret",
                format!(
                    "has {} bytes; use at least {MIN_SECRET_LEN} (e.g. `openssl rand -hex 32`)",
                    secret.len()
                ),
            ));
        }
        if !is_cookie_name(&self.cookie_name) {
            return Err(Invalid(
                "affinity.cookie_name",
                format!("{:?} is not a valid cookie name", self.cookie_name),
            ));
        }
        if !is_cookie_name(&self.app_cookie) {
            return Err(Invalid(
                "affinity.app_cookie",
                format!("{:?} is not a valid cookie name", self.app_cookie),
            ));
        }
        if http::HeaderName::from_bytes(self.header.as_bytes()).is_err() {
            return Err(Invalid(
                "affinity.header",
                format!("{:?} is not a valid header name", self.header),
            ));
        }
        if self.query_param.is_empty() || self.query_param.contains(['&', '=', ' ']) {
            return Err(Invalid(
                "affinity.query_param",
                format!("{:?} is not a usable parameter name", self.query_param),
            ));
        }
        for p in &self.trusted_proxies {
            p.parse::<IpNet>().map_err(|e| Invalid("affinity.trusted_proxies", e))?;
        }
        Ok(())
    }
}

impl HealthConfig {
    fn check(&self) -> Result<(), Invalid> {
        if !self.path.starts_with('/') {
            return Err(Invalid("health.path", format!("{:?} must start with '/'", self.path)));
        }
        in_range("health.interval_ms", self.interval_ms, 10, 3_600_000, "milliseconds")?;
        in_range("health.timeout_ms", self.timeout_ms, 10, 3_600_000, "milliseconds")?;
        in_range("health.rise", u64::from(self.rise), 1, 100, "")?;
        in_range("health.fall", u64::from(self.fall), 1, 100, "")
    }
}

impl ProxyConfig {
    fn check(&self) -> Result<(), Invalid> {
        in_range(
            "proxy.connect_timeout_ms",
            self.connect_timeout_ms,
            10,
            3_600_000,
            "milliseconds",
        )?;
        in_range(
            "proxy.backend_timeout_ms",
            self.backend_timeout_ms,
            10,
            3_600_000,
            "milliseconds",
        )?;
        for (key, v) in [
            ("proxy.header_read_timeout_ms", self.header_read_timeout_ms),
            ("proxy.keepalive_timeout_ms", self.keepalive_timeout_ms),
            ("proxy.client_timeout_ms", self.client_timeout_ms),
            ("proxy.tunnel_timeout_ms", self.tunnel_timeout_ms),
        ] {
            in_range(key, v, 10, 86_400_000, "milliseconds")?;
        }
        in_range(
            "proxy.max_header_bytes",
            self.max_header_bytes as u64,
            8192,
            1024 * 1024,
            "bytes",
        )?;
        if self.threads > 64 {
            return Err(Invalid(
                "proxy.threads",
                format!("is {}; use 0 (one per core) to 64", self.threads),
            ));
        }
        in_range("proxy.retries", u64::from(self.retries), 0, 10, "")
    }
}

impl LimitsConfig {
    fn check(&self) -> Result<(), Invalid> {
        if self.max_connections != 0 {
            in_range("limits.max_connections", self.max_connections as u64, 1, 1_000_000, "")?;
        }
        if self.max_conns_per_backend != 0 {
            in_range(
                "limits.max_conns_per_backend",
                self.max_conns_per_backend as u64,
                1,
                1_000_000,
                "",
            )?;
        }
        in_range(
            "limits.queue_timeout_ms",
            self.queue_timeout_ms,
            1,
            3_600_000,
            "milliseconds",
        )?;
        if let Some(q) = self.max_queue {
            in_range("limits.max_queue", q as u64, 1, 1_000_000, "")?;
        }
        Ok(())
    }
}

impl SessionsConfig {
    fn check(&self, has_secret: bool) -> Result<(), Invalid> {
        if self.idle_timeout_secs == 0 {
            return Err(Invalid("sessions.idle_timeout_secs", "is 0; use at least 1".into()));
        }
        in_range("sessions.max", self.max as u64, 1, 100_000_000, "")?;
        if let Some(url) = &self.store {
            check_store_url(url).map_err(|reason| Invalid("sessions.store", reason))?;
            if !has_secret {
                return Err(Invalid(
                    "sessions.store",
                    "needs a cookie secret (affinity.secret or RINGSIDE_COOKIE_SECRET), the same on every balancer that shares the store".into(),
                ));
            }
        }
        in_range(
            "sessions.store_timeout_ms",
            self.store_timeout_ms,
            1,
            10_000,
            "milliseconds",
        )?;
        in_range("sessions.store_max", self.store_max as u64, 1, 100_000_000, "keys")
    }
}

/// Checks a session store address without connecting.
pub fn check_store_url(url: &str) -> Result<(), String> {
    if url.starts_with("rediss://") {
        return Err(format!(
            "{url:?}: TLS to Redis is not supported; use redis:// on a trusted network"
        ));
    }
    if !url.starts_with("redis://") {
        return Err(format!("{url:?}: use redis://host:port"));
    }
    redis::Client::open(url).map(drop).map_err(|e| format!("{url:?}: {e}"))
}

impl AdminConfig {
    fn check(&self) -> Result<(), Invalid> {
        if self.token.is_none() && !self.listen.ip().is_loopback() {
            return Err(Invalid(
                "admin.listen",
                format!(
                    "is {} without a token: set admin.token to expose the admin API beyond loopback",
                    self.listen
                ),
            ));
        }
        if self.token.as_deref().is_some_and(|t| t.len() < 16) {
            return Err(Invalid("admin.token", "is shorter than 16 characters".into()));
        }
        for h in &self.allowed_hosts {
            let ok = !h.is_empty()
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'[' | b']' | b':'));
            if !ok {
                return Err(Invalid(
                    "admin.allowed_hosts",
                    format!("{h:?} is not a host name (no port, no scheme)"),
                ));
            }
        }
        in_range("admin.max_event_streams", self.max_event_streams as u64, 1, 4096, "")
    }
}

impl TrafficSection {
    fn check(&self) -> Result<(), Invalid> {
        if !(self.rate > 0.0 && self.rate <= 100_000.0) {
            return Err(Invalid(
                "traffic.rate",
                format!("is {}; use a rate above 0 and at most 100000", self.rate),
            ));
        }
        if !(0.0..=1.0).contains(&self.nat_share) {
            return Err(Invalid(
                "traffic.nat_share",
                format!("is {}; use 0 to 1", self.nat_share),
            ));
        }
        in_range("traffic.clients", self.clients as u64, 1, 10_000, "")
    }
}

fn is_cookie_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes().all(|b| {
            b.is_ascii_graphic()
                && !matches!(
                    b,
                    b'(' | b')'
                        | b'<'
                        | b'>'
                        | b'@'
                        | b','
                        | b';'
                        | b':'
                        | b'\\'
                        | b'"'
                        | b'/'
                        | b'['
                        | b']'
                        | b'?'
                        | b'='
                        | b'{'
                        | b'}'
                )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        let c = Config::parse(text, Path::new("test.toml"))?;
        c.validate("test.toml")?;
        Ok(c)
    }

    #[test]
    fn defaults_are_valid() {
        Config::default().validate("defaults").unwrap();
        assert_eq!(parse("").unwrap(), Config::default());
    }

    #[test]
    fn a_full_file_parses() {
        let c = parse(
            r#"
            listen = "127.0.0.1:9080"
            [[backends]]
            name = "api-1"
            addr = "127.0.0.1:9001"
            weight = 2
            [routing]
            placement = "bounded-ring"
            vnode_hash = "crc32"
            [affinity]
            mode = "app-cookie"
            protection = "signed"
            secret = "0123456789abcdef0123456789abcdef"
            [health]
            rise = 1
            "#,
        )
        .unwrap();
        assert_eq!(c.backends[0].weight, 2);
        assert_eq!(c.routing.placement, Placement::BoundedRing);
        assert_eq!(c.affinity.protection, Protection::Signed);
        assert_eq!(c.health.fall, 3);
    }

    #[test]
    fn errors_name_the_file_the_key_and_the_reason() {
        let cases = [
            ("listen = 5", "listen"),
            ("[routing]\nplacement = \"modulo\"", "placement"),
            ("[routing]\nvnodes = 0", "`routing.vnodes` is 0"),
            ("unknown = 1", "unknown"),
            ("[affinity]\nsecret = \"short\"", "`affinity.secret` has 5 bytes"),
            ("[affinity]\ntrusted_proxies = [\"10.0.0.0/99\"]", "prefix length"),
            ("[health]\nfall = 0", "`health.fall` is 0"),
            ("[admin]\nlisten = \"0.0.0.0:8090\"", "without a token"),
            (
                "[[backends]]\nname = \"a b\"\naddr = \"127.0.0.1:1\"",
                "bad backend name",
            ),
            (
                "[[backends]]\nname = \"a\"\naddr = \"127.0.0.1:1\"\n[[backends]]\nname = \"a\"\naddr = \"127.0.0.1:2\"",
                "appears twice",
            ),
            ("[traffic]\nnat_share = 2.0", "`traffic.nat_share`"),
        ];
        for (text, needle) in cases {
            let err = parse(text).unwrap_err().to_string();
            assert!(err.starts_with("test.toml"), "{err}");
            assert!(err.contains(needle), "{text:?} → {err}");
        }
    }

    #[test]
    fn every_checked_key_is_named_when_wrong() {
        let cases = [
            (
                "[[backends]]\nname = \"a\"\naddr = \"127.0.0.1:1\"\nweight = 0",
                "backends",
            ),
            ("[[backends]]\nname = \"a\"\naddr = \"nowhere\"", "addr"),
            ("[routing]\nvnodes = 10001", "routing.vnodes"),
            ("[routing]\nbound_factor = 1.0", "routing.bound_factor"),
            ("[routing]\nvnode_hash = \"md5\"", "vnode_hash"),
            ("[affinity]\nmode = \"magic\"", "mode"),
            ("[affinity]\nprotection = \"rot13\"", "protection"),
            ("[affinity]\ncookie_name = \"a;b\"", "affinity.cookie_name"),
            ("[affinity]\napp_cookie = \"\"", "affinity.app_cookie"),
            ("[affinity]\nheader = \"x y\"", "affinity.header"),
            ("[affinity]\nquery_param = \"a=b\"", "affinity.query_param"),
            ("[health]\npath = \"health\"", "health.path"),
            ("[health]\ninterval_ms = 5", "health.interval_ms"),
            ("[health]\ntimeout_ms = 0", "health.timeout_ms"),
            ("[health]\nrise = 101", "health.rise"),
            ("[health]\nfall = -1", "fall"),
            ("[proxy]\nconnect_timeout_ms = 3600001", "proxy.connect_timeout_ms"),
            ("[proxy]\nbackend_timeout_ms = 1", "proxy.backend_timeout_ms"),
            ("[proxy]\nheader_read_timeout_ms = 9", "proxy.header_read_timeout_ms"),
            ("[proxy]\nmax_header_bytes = 100", "proxy.max_header_bytes"),
            ("[proxy]\nthreads = 65", "proxy.threads"),
            ("[proxy]\nretries = 11", "proxy.retries"),
            ("[proxy]\nturbo = true", "turbo"),
            ("[drain]\ntimeout_secs = 0", "drain.timeout_secs"),
            ("[sessions]\nidle_timeout_secs = 0", "sessions.idle_timeout_secs"),
            ("[sessions]\nmax = 0", "sessions.max"),
            ("[admin]\ntoken = \"short\"", "admin.token"),
            ("[demo]\nbackends = 65", "demo.backends"),
            ("[demo]\nhealth_interval_ms = 0", "demo.health_interval_ms"),
            ("[traffic]\nrate = 0.0", "traffic.rate"),
            ("[traffic]\nclients = 0", "traffic.clients"),
            ("[traffic]\nrate = \"fast\"", "rate"),
            ("[sessions]\nstore = \"memcached://x\"", "sessions.store"),
            (
                "[sessions]\nstore = \"redis://127.0.0.1:6379\"",
                "needs a cookie secret",
            ),
            ("[sessions]\nstore_timeout_ms = 0", "sessions.store_timeout_ms"),
            ("[sessions]\nstore_max = 0", "sessions.store_max"),
            ("[sessions]\nstore_max = -5", "store_max"),
        ];
        for (text, needle) in cases {
            let err = parse(text).unwrap_err().to_string();
            assert!(err.starts_with("test.toml"), "{err}");
            assert!(err.contains(needle), "{text:?} → {err}");
        }
    }
}
