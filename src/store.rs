//! The shared session store: balancers that share a Redis server and a
//! cookie secret share one session table.
//!
//! The local table stays the cache every request reads; Redis is the source
//! of truth for sessions this balancer has not seen. The request path never
//! waits on Redis for a session it knows: changes are recorded in memory and
//! written in batches by a background task, and only a local miss asks Redis
//! (with a short timeout). Moves and logouts are also published, so other
//! balancers holding the same session follow them. When Redis is down or
//! slow the store is marked degraded, lookups stop, changes wait (bounded)
//! and are written when it returns, with every local session put back.
//!
//! In Redis: `ringside:session:<fingerprint>` → `<backend>\t<position>`
//! with the idle timeout as its expiry; moves and ends on the channel
//! `ringside:sessions`. The fingerprint is keyed by the shared secret and
//! nothing else of the key is stored, so Redis never holds a session id or
//! a client address; a balancer labels a session it learned from Redis by
//! its fingerprint.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use futures_util::StreamExt;
use redis::aio::MultiplexedConnection;
use serde::Serialize;
use tokio::sync::Notify;

use crate::bus::{BusEvent, EventBus};
use crate::router::hash::BuildIdentity;
use crate::router::{BackendId, KeyDomain, Router, SessionMirror, Timestamp};
use crate::shutdown::ShutdownSignal;

/// The channel moves and ends are published on.
const CHANNEL: &str = "ringside:sessions";
/// Changes waiting to be written, at most; beyond it they are dropped and
/// counted (the resync after an outage writes every local session anyway).
const MAX_PENDING: usize = 200_000;
const PENDING_SHARDS: usize = 16;
/// How often waiting changes are written.
const FLUSH_EVERY: Duration = Duration::from_millis(50);
/// Longest wait for a batch write or a reconnect.
const IO_TIMEOUT: Duration = Duration::from_secs(2);
/// Sessions per pipeline when putting the local table back.
const RESYNC_BATCH: usize = 1000;

/// The store's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreState {
    /// Not connected yet.
    Connecting,
    /// Connected: lookups and writes go to Redis.
    Ok,
    /// Redis is down or too slow: serving from the local table and cookies.
    Degraded,
}

/// The store's figures, for the admin API, `/metrics` and the dashboard.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoreView {
    /// The server, without any password.
    pub url: String,
    /// Its health now.
    pub state: StoreState,
    /// Times it became degraded.
    pub degraded_total: u64,
    /// Failed operations (connects, lookups, writes).
    pub errors: u64,
    /// Local misses asked of Redis.
    pub lookups: u64,
    /// Of those, found.
    pub hits: u64,
    /// Changes written.
    pub writes: u64,
    /// Changes dropped because too many were waiting.
    pub dropped_writes: u64,
    /// Moves and ends taken from other balancers.
    pub remote_updates: u64,
    /// Times the local table was put back after a reconnect.
    pub resyncs: u64,
    /// Changes waiting to be written now.
    pub pending: u64,
}

#[derive(Debug, Clone, Copy)]
enum Change {
    Stored { position: u32, backend: BackendId },
    Moved { position: u32, backend: BackendId },
    Ended,
}

/// A session as Redis has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSession {
    /// The backend's name.
    pub backend: String,
    /// The key's ring position.
    pub position: u32,
}

impl StoredSession {
    fn parse(value: &str) -> Option<StoredSession> {
        // Values written by earlier versions carry a third field, a label.
        let mut parts = value.splitn(3, '\t');
        let backend = parts.next().filter(|b| !b.is_empty())?.to_owned();
        let position = parts.next()?.parse().ok()?;
        Some(StoredSession { backend, position })
    }
}

#[derive(Debug, Default)]
struct Counters {
    degraded_total: AtomicU64,
    errors: AtomicU64,
    lookups: AtomicU64,
    hits: AtomicU64,
    writes: AtomicU64,
    dropped_writes: AtomicU64,
    remote_updates: AtomicU64,
    resyncs: AtomicU64,
}

/// A Redis-backed session store shared by balancers; see the module docs.
pub struct RedisStore {
    client: redis::Client,
    url: String,
    /// Tells this balancer's own messages apart.
    instance: u64,
    ttl_secs: u64,
    lookup_timeout: Duration,
    /// The connection while healthy; `None` while degraded.
    conn: ArcSwapOption<MultiplexedConnection>,
    state: AtomicU8,
    pending: Box<[Mutex<HashMap<u64, Change, BuildIdentity>>]>,
    pending_len: AtomicU64,
    counters: Counters,
    /// Rung by a failed lookup so the background task checks the server.
    trouble: Notify,
    bus: Arc<EventBus>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

/// An unusable store address.
#[derive(Debug, thiserror::Error)]
#[error("bad session store address {url:?}: {reason}")]
pub struct BadStoreUrl {
    url: String,
    reason: String,
}

/// Checks a store address without connecting.
pub fn check_url(url: &str) -> Result<(), BadStoreUrl> {
    crate::config::check_store_url(url).map_err(|reason| BadStoreUrl {
        url: url.to_owned(),
        reason,
    })
}

/// The address without its password, for display.
fn without_password(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => format!("{}***{}", &url[..scheme + 3], &url[at..]),
        _ => url.to_owned(),
    }
}

fn key_of(fingerprint: u64) -> String {
    format!("ringside:session:{fingerprint:016x}")
}

impl RedisStore {
    /// A store at `url`; nothing is connected until [`RedisStore::run`].
    pub fn new(
        url: &str,
        idle_timeout_secs: u32,
        lookup_timeout: Duration,
        bus: Arc<EventBus>,
    ) -> Result<Arc<Self>, BadStoreUrl> {
        check_url(url)?;
        let client = redis::Client::open(url).map_err(|e| BadStoreUrl {
            url: url.to_owned(),
            reason: e.to_string(),
        })?;
        Ok(Arc::new(RedisStore {
            client,
            url: without_password(url),
            instance: fastrand::u64(..),
            ttl_secs: u64::from(idle_timeout_secs.max(1)),
            lookup_timeout,
            conn: ArcSwapOption::empty(),
            state: AtomicU8::new(StoreState::Connecting as u8),
            pending: (0..PENDING_SHARDS).map(|_| Mutex::default()).collect(),
            pending_len: AtomicU64::new(0),
            counters: Counters::default(),
            trouble: Notify::new(),
            bus,
        }))
    }

    /// Its health now.
    pub fn state(&self) -> StoreState {
        match self.state.load(Ordering::Relaxed) {
            1 => StoreState::Ok,
            2 => StoreState::Degraded,
            _ => StoreState::Connecting,
        }
    }

    /// Whether lookups go to Redis now.
    pub fn is_available(&self) -> bool {
        self.conn.load().is_some()
    }

    /// Its figures.
    pub fn view(&self) -> StoreView {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let c = &self.counters;
        StoreView {
            url: self.url.clone(),
            state: self.state(),
            degraded_total: get(&c.degraded_total),
            errors: get(&c.errors),
            lookups: get(&c.lookups),
            hits: get(&c.hits),
            writes: get(&c.writes),
            dropped_writes: get(&c.dropped_writes),
            remote_updates: get(&c.remote_updates),
            resyncs: get(&c.resyncs),
            pending: get(&self.pending_len),
        }
    }

    /// What Redis knows of a session this balancer does not have. `None`
    /// at once while degraded; a failure or a timeout degrades the store.
    pub async fn lookup(&self, fingerprint: u64) -> Option<StoredSession> {
        let conn = self.conn.load_full()?;
        self.counters.lookups.fetch_add(1, Ordering::Relaxed);
        let mut conn = MultiplexedConnection::clone(&conn);
        let mut get = redis::cmd("GET");
        get.arg(key_of(fingerprint));
        match tokio::time::timeout(self.lookup_timeout, get.query_async::<Option<String>>(&mut conn)).await {
            Ok(Ok(found)) => {
                let session = found.as_deref().and_then(StoredSession::parse);
                if session.is_some() {
                    self.counters.hits.fetch_add(1, Ordering::Relaxed);
                }
                session
            }
            Ok(Err(e)) => {
                self.degrade(&format!("lookup failed: {e}"));
                None
            }
            Err(_) => {
                self.degrade(&format!("lookup took over {} ms", self.lookup_timeout.as_millis()));
                None
            }
        }
    }

    fn record(&self, fingerprint: u64, change: Change) {
        let mut shard = self.pending[(fingerprint >> 60) as usize % PENDING_SHARDS]
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let total = self.pending_len.load(Ordering::Relaxed) as usize;
        match shard.get_mut(&fingerprint) {
            Some(slot) => *slot = change,
            None if total >= MAX_PENDING => {
                self.counters.dropped_writes.fetch_add(1, Ordering::Relaxed);
            }
            None => {
                shard.insert(fingerprint, change);
                self.pending_len.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Takes every waiting change.
    fn take_pending(&self) -> Vec<(u64, Change)> {
        let mut all = Vec::new();
        for shard in self.pending.iter() {
            let taken = std::mem::take(&mut *shard.lock().unwrap_or_else(|e| e.into_inner()));
            self.pending_len.fetch_sub(taken.len() as u64, Ordering::Relaxed);
            all.extend(taken);
        }
        all
    }

    /// Puts back changes a failed write took, unless newer ones arrived.
    fn restore_pending(&self, changes: Vec<(u64, Change)>) {
        for (fingerprint, change) in changes {
            let mut shard = self.pending[(fingerprint >> 60) as usize % PENDING_SHARDS]
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if let std::collections::hash_map::Entry::Vacant(slot) = shard.entry(fingerprint) {
                slot.insert(change);
                self.pending_len.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn degrade(&self, why: &str) {
        self.counters.errors.fetch_add(1, Ordering::Relaxed);
        self.conn.store(None);
        let was = self.state.swap(StoreState::Degraded as u8, Ordering::Relaxed);
        if was != StoreState::Degraded as u8 {
            self.counters.degraded_total.fetch_add(1, Ordering::Relaxed);
            tracing::warn!("session store {} degraded: {why}", self.url);
            self.bus.publish(BusEvent::Command(format!(
                "session store degraded ({why}): serving from the local table"
            )));
        }
        self.trouble.notify_one();
    }

    fn healthy(&self, conn: MultiplexedConnection) {
        self.conn.store(Some(Arc::new(conn)));
        let was = self.state.swap(StoreState::Ok as u8, Ordering::Relaxed);
        if was != StoreState::Ok as u8 {
            tracing::info!("session store {} connected", self.url);
            self.bus
                .publish(BusEvent::Command(format!("session store {} connected", self.url)));
        }
    }

    /// Connects, puts the local table back, then writes changes and follows
    /// other balancers until `shutdown`; reconnects with backoff whenever
    /// Redis fails.
    pub async fn run(self: Arc<Self>, router: Arc<Router>, mut shutdown: ShutdownSignal) {
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.connect().await {
                Ok((mut conn, pubsub)) => match self.resync(&router, &mut conn).await {
                    Ok(()) => {
                        backoff = Duration::from_millis(100);
                        self.healthy(conn.clone());
                        let why = self.serve(&router, conn, pubsub, &mut shutdown).await;
                        if shutdown.is_stopped() {
                            return;
                        }
                        self.degrade(&why);
                    }
                    Err(e) => self.degrade(&format!("resync failed: {e}")),
                },
                Err(e) => self.degrade(&e),
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = shutdown.stopped() => return,
            }
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }

    async fn connect(&self) -> Result<(MultiplexedConnection, redis::aio::PubSub), String> {
        let connect = async {
            let conn = self.client.get_multiplexed_async_connection().await?;
            let mut pubsub = self.client.get_async_pubsub().await?;
            pubsub.subscribe(CHANNEL).await?;
            Ok::<_, redis::RedisError>((conn, pubsub))
        };
        match tokio::time::timeout(IO_TIMEOUT, connect).await {
            Ok(Ok(pair)) => Ok(pair),
            Ok(Err(e)) => Err(format!("cannot connect: {e}")),
            Err(_) => Err("connecting timed out".into()),
        }
    }

    /// Writes what waited, then every local session Redis does not have
    /// (`SET NX`: a newer entry from another balancer wins).
    async fn resync(&self, router: &Router, conn: &mut MultiplexedConnection) -> Result<(), String> {
        self.flush(router, conn).await?;
        let topo = router.topology();
        let mut batch = redis::pipe();
        let mut queued = 0;
        let mut value = String::new();
        for domain in KeyDomain::ALL {
            let table = router.table(domain);
            for i in 0..table.shard_count() {
                let sessions: Vec<_> = table.shard(i).iter().collect();
                for s in sessions {
                    value.clear();
                    let _ = write!(value, "{}\t{}", topo.backend(s.backend).name, s.position);
                    batch
                        .cmd("SET")
                        .arg(key_of(s.fingerprint))
                        .arg(&value)
                        .arg("NX")
                        .arg("EX")
                        .arg(self.ttl_secs)
                        .ignore();
                    queued += 1;
                    if queued == RESYNC_BATCH {
                        self.send(conn, &batch).await?;
                        batch = redis::pipe();
                        queued = 0;
                    }
                }
            }
        }
        if queued > 0 {
            self.send(conn, &batch).await?;
        }
        self.counters.resyncs.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    async fn send(&self, conn: &mut MultiplexedConnection, batch: &redis::Pipeline) -> Result<(), String> {
        match tokio::time::timeout(IO_TIMEOUT, batch.query_async::<()>(conn)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer in {} s", IO_TIMEOUT.as_secs())),
        }
    }

    /// Writes the waiting changes in one pipeline; on failure they wait again.
    async fn flush(&self, router: &Router, conn: &mut MultiplexedConnection) -> Result<(), String> {
        let changes = self.take_pending();
        if changes.is_empty() {
            return Ok(());
        }
        let topo = router.topology();
        let mut batch = redis::pipe();
        let mut value = String::new();
        for (fingerprint, change) in &changes {
            let key = key_of(*fingerprint);
            value.clear();
            match *change {
                Change::Stored { position, backend } | Change::Moved { position, backend } => {
                    let _ = write!(value, "{}\t{position}", topo.backend(backend).name);
                    batch
                        .cmd("SET")
                        .arg(&key)
                        .arg(&value)
                        .arg("EX")
                        .arg(self.ttl_secs)
                        .ignore();
                }
                Change::Ended => {
                    batch.cmd("DEL").arg(&key).ignore();
                }
            }
            if !matches!(change, Change::Stored { .. }) {
                let message = format!("{:016x}\t{fingerprint:016x}\t{value}", self.instance);
                batch.cmd("PUBLISH").arg(CHANNEL).arg(message).ignore();
            }
        }
        match self.send(conn, &batch).await {
            Ok(()) => {
                self.counters.writes.fetch_add(changes.len() as u64, Ordering::Relaxed);
                Ok(())
            }
            Err(e) => {
                self.restore_pending(changes);
                Err(format!("write failed: {e}"))
            }
        }
    }

    /// Writes changes every [`FLUSH_EVERY`] and applies other balancers'
    /// messages, until Redis fails (the reason is returned) or `shutdown`.
    async fn serve(
        &self,
        router: &Router,
        mut conn: MultiplexedConnection,
        mut pubsub: redis::aio::PubSub,
        shutdown: &mut ShutdownSignal,
    ) -> String {
        let mut tick = tokio::time::interval(FLUSH_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut messages = pubsub.on_message();
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    if let Err(e) = self.flush(router, &mut conn).await {
                        return e;
                    }
                }
                message = messages.next() => match message {
                    Some(m) => self.apply(router, m.get_payload_bytes()),
                    None => return "the subscription closed".into(),
                },
                _ = self.trouble.notified() => {
                    // A lookup failed: is the server still there?
                    let ping = redis::cmd("PING");
                    match tokio::time::timeout(IO_TIMEOUT, ping.query_async::<String>(&mut conn)).await {
                        Ok(Ok(_)) => self.healthy(conn.clone()),
                        Ok(Err(e)) => return format!("ping failed: {e}"),
                        Err(_) => return "ping timed out".into(),
                    }
                }
                _ = shutdown.stopped() => {
                    let _ = self.flush(router, &mut conn).await;
                    return "shutting down".into();
                }
            }
        }
    }

    /// Applies another balancer's move or end; garbage is ignored.
    fn apply(&self, router: &Router, payload: &[u8]) {
        let Ok(text) = std::str::from_utf8(payload) else { return };
        let mut parts = text.splitn(3, '\t');
        let (Some(instance), Some(fingerprint), Some(value)) = (parts.next(), parts.next(), parts.next()) else {
            return;
        };
        let (Ok(instance), Ok(fingerprint)) = (u64::from_str_radix(instance, 16), u64::from_str_radix(fingerprint, 16))
        else {
            return;
        };
        if instance == self.instance {
            return;
        }
        let changed = match StoredSession::parse(value) {
            Some(session) => router.follow(fingerprint, &session.backend),
            None if value.is_empty() => router.forget(fingerprint),
            None => false,
        };
        if changed {
            self.counters.remote_updates.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Asks the store about a key the local table missed and takes in what
    /// it knows. Returns whether the table changed.
    pub async fn fill(&self, router: &Router, domain: KeyDomain, fingerprint: u64, now: Timestamp) -> bool {
        match self.lookup(fingerprint).await {
            Some(s) => router.adopt(domain, fingerprint, s.position, &s.backend, now),
            None => false,
        }
    }
}

impl SessionMirror for RedisStore {
    fn stored(&self, _domain: KeyDomain, fingerprint: u64, position: u32, backend: BackendId) {
        self.record(fingerprint, Change::Stored { position, backend });
    }

    fn moved(&self, _domain: KeyDomain, fingerprint: u64, position: u32, backend: BackendId) {
        self.record(fingerprint, Change::Moved { position, backend });
    }

    fn ended(&self, _domain: KeyDomain, fingerprint: u64) {
        self.record(fingerprint, Change::Ended);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_values_parse_and_garbage_does_not() {
        let api2 = Some(StoredSession {
            backend: "api-2".into(),
            position: 12345,
        });
        assert_eq!(StoredSession::parse("api-2\t12345"), api2);
        assert_eq!(StoredSession::parse("api-2\t12345\tan old label"), api2);
        for bad in ["", "api-2", "api-2\tx\ty", "\t1\tz", "api-2\t99999999999\t"] {
            assert_eq!(StoredSession::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn addresses_are_checked_and_passwords_hidden() {
        assert!(check_url("redis://127.0.0.1:6379").is_ok());
        assert!(check_url("http://127.0.0.1:6379").is_err());
        assert!(check_url("rediss://127.0.0.1:6379").is_err());
        assert_eq!(
            without_password("redis://:hunter2@10.0.0.1:6379/0"),
            "redis://***@10.0.0.1:6379/0"
        );
        assert_eq!(without_password("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
    }
}
