//! Read-only views of the running balancer, for the admin API and the
//! dashboard: plain data, serializable, cheap to take.

use serde::Serialize;

use super::Shared;
use crate::router::affinity::AffinityMode;
use crate::router::remap::RemapSummary;
use crate::router::{BackendId, BackendState, Placement, StatsSnapshot};

/// One backend as operators see it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BackendView {
    /// Name.
    pub name: String,
    /// Address.
    pub addr: String,
    /// `up`, `down`, `draining`, `killed` or `removed`.
    pub state: BackendState,
    /// Takes or keeps sessions now.
    pub healthy: bool,
    /// e.g. `fall 2/3`, `checking 1/2`; empty when steady.
    pub health: String,
    /// Why its last check or connect failed, while failing (e.g. `connection refused`).
    pub failure: Option<String>,
    /// Demo backend (in-process) or external.
    pub demo: bool,
    /// Weight.
    pub weight: u32,
    /// Connections open to it now.
    pub active: u64,
    /// Requests routed to it.
    pub requests: u64,
    /// Live sessions it holds.
    pub sessions: u64,
    /// Its share of the ring for new keys now.
    pub ring_share: f64,
    /// Median time to response headers, ms (`None` before any request).
    pub p50_ms: Option<f64>,
    /// 99th percentile, ms.
    pub p99_ms: Option<f64>,
    /// Time from the last kill to detection, ms.
    pub detected_after_ms: Option<u64>,
    /// Seconds left in a drain.
    pub drain_left_secs: Option<u64>,
    /// Requests in flight to it now, under its cap.
    pub in_use: usize,
    /// Its cap on requests in flight.
    pub cap: usize,
    /// Requests waiting for a place now.
    pub queued: usize,
}

/// Balancer-wide figures.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StatsView {
    /// Router counters.
    #[serde(flatten)]
    pub router: StatsSnapshot,
    /// Answers by status class.
    pub responses: ResponsesView,
    /// Requests sent elsewhere after a failed connect, or resent after a
    /// backend failed them before answering.
    pub redispatched: u64,
    /// Tunnels opened.
    pub tunnels: u64,
    /// Requests refused for ambiguous framing (both framing headers).
    pub smuggling_refused: u64,
    /// Clients cut for a limit (head too slow, body stalled, answer not read).
    pub client_timeouts: u64,
    /// Times ringside ran out of its own resources (never a backend's fault).
    pub local_errors: u64,
    /// Requests that waited under a backend's cap.
    pub queued: u64,
    /// 503s because a backend's queue was full or the wait ran out.
    pub queue_timeouts: u64,
    /// Idle client connections parked (holding no buffer) now.
    pub parked_connections: u64,
    /// The cap on client connections.
    pub connection_cap: usize,
    /// The descriptor limit ringside runs with.
    pub fd_limit: u64,
    /// Requests that came back to ringside through one of its backends (508).
    pub loops_refused: u64,
    /// Client connections open now.
    pub client_connections: u64,
    /// Of those, how many each proxy thread serves.
    pub client_connections_per_thread: Vec<usize>,
    /// Connections closed at a drain's timeout.
    pub closed_by_drain: u64,
    /// Requests a backend failed after taking them, answered 502 and not
    /// resent because repeating them may not be safe.
    pub lost_in_flight: u64,
    /// The shared session store, when there is one.
    pub store: Option<crate::store::StoreView>,
    /// Events subscribers missed.
    pub dropped_events: u64,
    /// Per-request events left out by sampling.
    pub sampled_out_events: u64,
    /// Sessions the demo clients lost (401 after logging in).
    pub lost_sessions: u64,
    /// The last topology change.
    pub last_remap: Option<RemapSummary>,
    /// Summary text of the last change.
    pub last_remap_text: Option<String>,
    /// Seconds since start.
    pub uptime_secs: u64,
    /// Placement in force.
    pub placement: Placement,
    /// Affinity mode in force.
    pub affinity: AffinityMode,
}

/// Answers by status.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ResponsesView {
    /// All requests.
    pub total: u64,
    /// 2xx.
    pub ok_2xx: u64,
    /// 3xx.
    pub redirect_3xx: u64,
    /// 4xx.
    pub client_4xx: u64,
    /// 5xx.
    pub server_5xx: u64,
    /// ringside's 502s.
    pub bad_gateway_502: u64,
    /// ringside's 503s.
    pub unavailable_503: u64,
    /// ringside's 504s.
    pub gateway_timeout_504: u64,
    /// Requests refused as the client's fault (ringside's own 4xx).
    pub client_errors: u64,
}

impl Shared {
    /// Every backend that is not removed, in id order.
    pub fn backends_view(&self) -> Vec<BackendView> {
        let topo = self.router.topology();
        let runtimes = self.runtimes();
        let config = self.config();
        let (rise, fall) = (config.health.rise, config.health.fall);
        topo.members()
            .map(|b| {
                let id = b.id;
                let state = topo.state(id);
                let runtime = runtimes.get(&id).cloned().unwrap_or_default();
                let serving = state.keeps_sessions();
                let health = if runtime.checking && !serving {
                    format!("checking {}/{rise}", runtime.health.successes)
                } else {
                    runtime.health.describe(serving, rise, fall)
                };
                let upstream = self.upstreams.get(id);
                let latency = upstream.as_ref().filter(|u| u.latency.count() > 0);
                let ms = |q: f64| latency.map(|u| u.latency.quantile(q).as_secs_f64() * 1000.0);
                BackendView {
                    name: b.name.to_string(),
                    addr: b.addr.to_string(),
                    state,
                    healthy: serving,
                    health,
                    failure: runtime.last_failure.filter(|_| !serving || runtime.health.failures > 0),
                    demo: runtime.demo,
                    weight: topo.weight(id),
                    active: b.counters.active(),
                    requests: b.counters.requests(),
                    sessions: self.router.sessions_on(b),
                    ring_share: topo.effective_share(id),
                    p50_ms: ms(0.5),
                    p99_ms: ms(0.99),
                    detected_after_ms: runtime.detected_after.map(|d| d.as_millis() as u64),
                    drain_left_secs: runtime
                        .drain_deadline
                        .map(|d| d.saturating_duration_since(tokio::time::Instant::now()).as_secs()),
                    in_use: upstream.as_ref().map_or(0, |u| u.limit.in_use()),
                    cap: upstream.as_ref().map_or(0, |u| u.limit.max()),
                    queued: upstream.as_ref().map_or(0, |u| u.limit.queued()),
                }
            })
            .collect()
    }

    /// One backend by name.
    pub fn backend_view(&self, name: &str) -> Option<BackendView> {
        self.backends_view().into_iter().find(|b| b.name == name)
    }

    /// Balancer-wide figures.
    pub fn stats_view(&self) -> StatsView {
        let p = self.proxy.stats();
        let get = |c: &crate::counter::Counter| c.get();
        let last_remap = self.router.last_remap();
        StatsView {
            router: self.router.stats_snapshot(),
            responses: ResponsesView {
                total: get(&p.requests),
                ok_2xx: get(&p.by_class[2]),
                redirect_3xx: get(&p.by_class[3]),
                client_4xx: get(&p.by_class[4]),
                server_5xx: get(&p.by_class[5]),
                bad_gateway_502: get(&p.bad_gateway),
                unavailable_503: get(&p.unavailable),
                gateway_timeout_504: get(&p.gateway_timeout),
                client_errors: get(&p.client_errors),
            },
            redispatched: get(&p.redispatched),
            tunnels: get(&p.tunnels),
            smuggling_refused: get(&p.smuggling_refused),
            client_timeouts: get(&p.client_timeouts),
            local_errors: get(&p.local_errors),
            queued: get(&p.queued),
            queue_timeouts: get(&p.queue_timeouts),
            parked_connections: p.parked_connections.get(),
            connection_cap: self.proxy.connection_cap(),
            fd_limit: crate::limits::fd_limit(),
            loops_refused: get(&p.loops_refused),
            client_connections: p.client_connections.get(),
            client_connections_per_thread: self.proxy.connections_per_thread(),
            closed_by_drain: get(&p.closed_by_drain),
            lost_in_flight: get(&p.lost_in_flight),
            store: self.store.as_ref().map(|s| s.view()),
            dropped_events: self.bus.dropped(),
            sampled_out_events: self.bus.sampled_out(),
            lost_sessions: self.traffic().map_or(0, |t| t.stats().lost_sessions),
            last_remap_text: last_remap.as_ref().map(ToString::to_string),
            last_remap,
            uptime_secs: self.clock.uptime_secs(),
            placement: self.router.placement(),
            affinity: self.router.affinity().mode(),
        }
    }

    /// The name of backend `id` (for events), or `?` when unknown.
    pub fn backend_name(&self, id: BackendId) -> String {
        let topo = self.router.topology();
        if id.index() < topo.backend_count() {
            topo.backend(id).name.to_string()
        } else {
            "?".into()
        }
    }
}
