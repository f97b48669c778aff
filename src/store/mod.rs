//! The shared session store: balancers that share a Redis server and a
//! cookie secret share one session table, and agree on every key in it.
//!
//! The local table stays the cache every request reads; Redis holds what a
//! balancer may need from another, one value per key:
//!
//! - A key the local table misses is proposed to Redis in one atomic step
//!   (a Lua script: set if absent, else read): the first balancer's backend
//!   wins, and every other balancer takes it and routes there.
//! - A response that creates, moves or ends a session leaves only once Redis
//!   has the change (waiting at most `store_timeout_ms`), so the client's
//!   next request may go to any balancer. A move is written only if the
//!   session is still where the mover found it, and announced on a channel;
//!   the loser of two moves takes the winner's. A session a backend's
//!   response set is written whatever was there: that backend holds it.
//! - Sessions in use are refreshed a few times per idle timeout in batches;
//!   moves made by topology changes are written at once, in one batch.
//! - In `lb-cookie` mode the signed or encrypted cookie routes on its own:
//!   only moves and ends are written. In the other modes a balancer writes
//!   at most `sessions.store_max` keys, each expiring after the idle timeout.
//! - When Redis is down or slow the store is marked degraded: lookups and
//!   waits stop, changes wait (bounded) and are written when it returns, and
//!   every local session is proposed again, so balancers that diverged
//!   meanwhile agree again.
//! - Another balancer's move or end of a key this one is looking up may
//!   arrive before the lookup's answer is in the table, where nothing would
//!   take it: it is kept while the lookup is in flight and taken after.
//!
//! In Redis: `ringside:session:<fingerprint>` →
//! `<backend>\t<position>\t<version>` with the idle timeout as its expiry;
//! moves and ends on the channel `ringside:sessions`, topology actions on
//! `ringside:events`. The version (the store's clock in milliseconds when
//! written, always above the one it replaces) lets a balancer ignore news
//! older than what it holds. The fingerprint is keyed by the shared secret
//! and nothing else of the key is stored, so Redis never holds a session id
//! or a client address; a balancer labels a session it learned from Redis
//! by its fingerprint.

mod keys;
mod write;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use futures_util::StreamExt;
use redis::aio::MultiplexedConnection;
use serde::Serialize;
use tokio::sync::Notify;

use crate::bus::{BusEvent, EventBus};
use crate::clock::Clock;
use crate::router::hash::BuildIdentity;
use crate::router::{
    BackendId, KeyDomain, Proposal, RequestKey, Route, Router, RouterError, SessionMirror, Stored, Timestamp, newer,
};
use crate::shutdown::ShutdownSignal;
use keys::KeyBudget;
use write::Change;

/// The channel moves and ends are published on.
const CHANNEL: &str = "ringside:sessions";
/// The channel topology actions are told on, for the other balancers' logs.
const EVENTS: &str = "ringside:events";
/// Topology actions waiting to be told, at most (the oldest go first).
const MAX_ANNOUNCEMENTS: usize = 64;
/// Changes waiting to be written, at most; beyond it they are dropped and
/// counted (the resync after an outage writes every local session anyway).
const MAX_PENDING: usize = 200_000;
const PENDING_SHARDS: usize = 16;
/// How often waiting refreshes are written (moves and ends go at once).
const FLUSH_EVERY: Duration = Duration::from_millis(50);
/// Longest wait for a batch write or a reconnect.
const IO_TIMEOUT: Duration = Duration::from_secs(2);

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
    /// Of those, found there.
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
    /// Responses held until Redis had the session they created, moved or ended.
    pub waits: u64,
    /// Writes that found another balancer's value first (it was taken).
    pub conflicts: u64,
    /// Keys this balancer wrote that are still in Redis.
    pub keys: u64,
    /// The most keys it writes (`sessions.store_max`).
    pub keys_max: u64,
    /// Sessions not written because `keys` had reached `keys_max`.
    pub unshared: u64,
}

/// A session as Redis has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSession {
    /// The backend's name.
    pub backend: String,
    /// The key's ring position.
    pub position: u32,
    /// Its version (0 in values written by earlier versions of ringside,
    /// whose third field was a label).
    pub version: u32,
}

impl StoredSession {
    fn parse(value: &str) -> Option<StoredSession> {
        let mut parts = value.splitn(3, '\t');
        let backend = parts.next().filter(|b| !b.is_empty())?.to_owned();
        let position = parts.next()?.parse().ok()?;
        let version = parts.next().and_then(|v| v.parse().ok()).unwrap_or(0);
        Some(StoredSession {
            backend,
            position,
            version,
        })
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
    waits: AtomicU64,
    conflicts: AtomicU64,
    unshared: AtomicU64,
}

fn inc(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// Another balancer's move or end of one session.
#[derive(Debug, Clone)]
enum News {
    /// It lives on `backend` now.
    Moved { backend: String, version: u32 },
    /// It ended.
    Ended { version: u32 },
}

impl News {
    /// A message's value: a stored session, or `\t\t<version>` for an end.
    fn parse(value: &str) -> Option<News> {
        match (StoredSession::parse(value), value.strip_prefix("\t\t")) {
            (Some(s), _) => Some(News::Moved {
                backend: s.backend,
                version: s.version,
            }),
            (None, Some(version)) => Some(News::Ended {
                version: version.parse().unwrap_or(0),
            }),
            (None, None) => None,
        }
    }

    fn version(&self) -> u32 {
        match *self {
            News::Moved { version, .. } | News::Ended { version } => version,
        }
    }
}

/// The lookups of one key in flight, and the newest news of it heard meanwhile.
#[derive(Debug, Default)]
struct InFlight {
    lookups: u32,
    news: Option<News>,
}

/// A lookup in flight: news of its key heard from now on is kept until it
/// is dropped.
struct Watch<'a> {
    store: &'a RedisStore,
    fingerprint: u64,
}

impl Watch<'_> {
    /// The newest news of the key heard since the watch began.
    fn news(&self) -> Option<News> {
        let in_flight = self.store.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        in_flight.get(&self.fingerprint).and_then(|w| w.news.clone())
    }
}

impl Drop for Watch<'_> {
    fn drop(&mut self) {
        let mut in_flight = self.store.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        if let std::collections::hash_map::Entry::Occupied(mut w) = in_flight.entry(self.fingerprint) {
            w.get_mut().lookups -= 1;
            if w.get().lookups == 0 {
                w.remove();
            }
        }
    }
}

/// How a store is made.
#[derive(Debug, Clone)]
pub struct StoreSettings {
    /// `redis://host:port`.
    pub url: String,
    /// Sessions idle this long expire, in Redis as in the tables.
    pub idle_timeout_secs: u32,
    /// Longest wait on Redis for a request or a response.
    pub timeout: Duration,
    /// The most keys this balancer writes (`sessions.store_max`).
    pub max_keys: usize,
    /// The router's clock.
    pub clock: Clock,
    /// How the other balancers call this one (its proxy address).
    pub label: String,
}

/// A Redis-backed session store shared by balancers; see the module docs.
pub struct RedisStore {
    client: redis::Client,
    url: String,
    /// Tells this balancer's own messages apart.
    instance: u64,
    label: String,
    /// Topology actions to tell the other balancers.
    announcements: Mutex<std::collections::VecDeque<String>>,
    ttl_secs: u64,
    timeout: Duration,
    clock: Clock,
    /// The connection while healthy; `None` while degraded.
    conn: ArcSwapOption<MultiplexedConnection>,
    /// The script's digest, once Redis has it.
    script: OnceLock<String>,
    state: AtomicU8,
    pending: Box<[Mutex<HashMap<u64, Change, BuildIdentity>>]>,
    pending_len: AtomicU64,
    /// Keys being looked up, with the news of them heard meanwhile.
    in_flight: Mutex<HashMap<u64, InFlight, BuildIdentity>>,
    keys: KeyBudget,
    counters: Counters,
    /// Rung by a failed lookup so the background task checks the server.
    trouble: Notify,
    /// Rung by a move or an end: written without waiting for the next batch.
    urgent: Notify,
    /// True while a batch is being written.
    flushing: AtomicBool,
    /// Rung when a batch has been written.
    flushed: Notify,
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
    /// A store as `settings` say; nothing is connected until [`RedisStore::run`].
    pub fn new(settings: StoreSettings, bus: Arc<EventBus>) -> Result<Arc<Self>, BadStoreUrl> {
        let url = settings.url.as_str();
        check_url(url)?;
        let client = redis::Client::open(url).map_err(|e| BadStoreUrl {
            url: url.to_owned(),
            reason: e.to_string(),
        })?;
        let ttl = settings.idle_timeout_secs.max(1);
        Ok(Arc::new(RedisStore {
            client,
            url: without_password(url),
            instance: fastrand::u64(..),
            label: settings.label,
            announcements: Mutex::default(),
            ttl_secs: u64::from(ttl),
            timeout: settings.timeout,
            clock: settings.clock,
            conn: ArcSwapOption::empty(),
            script: OnceLock::new(),
            state: AtomicU8::new(StoreState::Connecting as u8),
            pending: (0..PENDING_SHARDS).map(|_| Mutex::default()).collect(),
            pending_len: AtomicU64::new(0),
            in_flight: Mutex::default(),
            keys: KeyBudget::new(settings.max_keys, ttl),
            counters: Counters::default(),
            trouble: Notify::new(),
            urgent: Notify::new(),
            flushing: AtomicBool::new(false),
            flushed: Notify::new(),
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

    /// Whether requests ask Redis now.
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
            waits: get(&c.waits),
            conflicts: get(&c.conflicts),
            keys: self.keys.len(self.clock.now().secs()) as u64,
            keys_max: self.keys.max() as u64,
            unshared: get(&c.unshared),
        }
    }

    fn degrade(&self, why: &str) {
        inc(&self.counters.errors);
        self.conn.store(None);
        let was = self.state.swap(StoreState::Degraded as u8, Ordering::Relaxed);
        if was != StoreState::Degraded as u8 {
            inc(&self.counters.degraded_total);
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
            let mut conn = self.client.get_multiplexed_async_connection().await?;
            let digest: String = redis::cmd("SCRIPT")
                .arg("LOAD")
                .arg(write::SCRIPT)
                .query_async(&mut conn)
                .await?;
            let mut pubsub = self.client.get_async_pubsub().await?;
            pubsub.subscribe(&[CHANNEL, EVENTS]).await?;
            Ok::<_, redis::RedisError>((conn, pubsub, digest))
        };
        match tokio::time::timeout(IO_TIMEOUT, connect).await {
            Ok(Ok((conn, pubsub, digest))) => {
                let _ = self.script.set(digest);
                Ok((conn, pubsub))
            }
            Ok(Err(e)) => Err(format!("cannot connect: {e}")),
            Err(_) => Err("connecting timed out".into()),
        }
    }

    /// Writes changes (refreshes every [`FLUSH_EVERY`], moves and ends at
    /// once) and applies other balancers' messages, until Redis fails (the
    /// reason is returned) or `shutdown`.
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
                _ = self.urgent.notified() => {
                    if let Err(e) = self.flush(router, &mut conn).await {
                        return e;
                    }
                }
                message = messages.next() => match message {
                    Some(m) if m.get_channel_name() == EVENTS => self.hear(m.get_payload_bytes()),
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

    /// Queues a topology action made here, to be told to the other
    /// balancers' event logs with the next write.
    pub fn announce(&self, text: &str) {
        let mut queue = self.announcements.lock().unwrap_or_else(|e| e.into_inner());
        if queue.len() == MAX_ANNOUNCEMENTS {
            queue.pop_front();
        }
        queue.push_back(format!("{:016x}\t{}\t{text}", self.instance, self.label));
        drop(queue);
        self.urgent.notify_one();
    }

    /// The topology actions waiting to be told.
    fn take_announcements(&self) -> Vec<String> {
        let mut queue = self.announcements.lock().unwrap_or_else(|e| e.into_inner());
        queue.drain(..).collect()
    }

    /// Shows another balancer's topology action in this one's event log.
    fn hear(&self, payload: &[u8]) {
        let Ok(text) = std::str::from_utf8(payload) else { return };
        let mut parts = text.splitn(3, '\t');
        let (Some(instance), Some(label), Some(text)) = (parts.next(), parts.next(), parts.next()) else {
            return;
        };
        if u64::from_str_radix(instance, 16) != Ok(self.instance) {
            self.bus.publish(BusEvent::Command(format!("balancer {label}: {text}")));
        }
    }

    /// Applies another balancer's move or end, if newer than what the table
    /// holds, and keeps it for the lookups of its key in flight; garbage is
    /// ignored.
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
        let Some(news) = News::parse(value) else { return };
        // Kept first: a lookup whose answer is not in the table yet takes it after.
        self.hold(fingerprint, &news);
        if self.take_news(router, fingerprint, &news) {
            inc(&self.counters.remote_updates);
        }
    }

    /// Keeps `news` for the lookups of its key in flight, if any, unless
    /// they kept newer.
    fn hold(&self, fingerprint: u64, news: &News) {
        let mut in_flight = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(w) = in_flight.get_mut(&fingerprint)
            && w.news.as_ref().is_none_or(|kept| newer(news.version(), kept.version()))
        {
            w.news = Some(news.clone());
        }
    }

    /// Applies `news` to the table, if newer than what it holds. Returns
    /// whether the table changed.
    fn take_news(&self, router: &Router, fingerprint: u64, news: &News) -> bool {
        match news {
            News::Moved { backend, version } => router.follow(fingerprint, backend, *version),
            News::Ended { version } => router.forget(fingerprint, *version),
        }
    }

    /// Keeps the news of `fingerprint` heard from now until the watch drops.
    fn watch(&self, fingerprint: u64) -> Watch<'_> {
        let mut in_flight = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        in_flight.entry(fingerprint).or_default().lookups += 1;
        Watch {
            store: self,
            fingerprint,
        }
    }

    /// Routes a request whose key the local table missed, as Redis agrees
    /// (then [`Router::route_agreed`]). Another balancer's move or end of
    /// the key may arrive while the lookup is in flight, before its answer
    /// is in the table, where it changes nothing: it is kept, and taken
    /// once the answer is there if newer; the request follows a move.
    pub async fn route_missed(
        &self,
        router: &Router,
        request: &RequestKey<'_>,
        now: Timestamp,
        proposal: &Proposal,
    ) -> Result<Route, RouterError> {
        let watch = self.watch(proposal.fingerprint);
        let agreement = self.agree(router, proposal).await;
        let route = router.route_agreed(request, now, proposal, agreement)?;
        match watch.news() {
            Some(news) if self.take_news(router, proposal.fingerprint, &news) => {
                inc(&self.counters.remote_updates);
                Ok(router.rehome(route))
            }
            _ => Ok(route),
        }
    }
}

impl SessionMirror for RedisStore {
    fn stored(&self, domain: KeyDomain, fingerprint: u64, position: u32, backend: BackendId, why: Stored) {
        let change = match why {
            Stored::Learned => Change::Asserted {
                domain,
                position,
                backend,
            },
            // A balancer cookie routes on its own: only its moves are shared.
            _ if domain == KeyDomain::Cookie => return,
            _ => Change::Stored {
                domain,
                position,
                backend,
            },
        };
        self.record(fingerprint, change);
    }

    fn moved(&self, domain: KeyDomain, fingerprint: u64, position: u32, from: Option<BackendId>, to: BackendId) {
        let change = match from {
            Some(from) => Change::Moved {
                domain,
                position,
                from,
                to,
            },
            None => Change::Asserted {
                domain,
                position,
                backend: to,
            },
        };
        self.record(fingerprint, change);
        self.urgent.notify_one();
    }

    fn ended(&self, _domain: KeyDomain, fingerprint: u64) {
        self.record(fingerprint, Change::Ended);
        self.urgent.notify_one();
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
            version: 0,
        });
        assert_eq!(StoredSession::parse("api-2\t12345"), api2);
        assert_eq!(StoredSession::parse("api-2\t12345\tan old label"), api2);
        let versioned = StoredSession::parse("api-2\t12345\t4000000000").unwrap();
        assert_eq!((versioned.position, versioned.version), (12345, 4_000_000_000));
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
