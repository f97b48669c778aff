//! `/metrics`: the figures in Prometheus' text exposition format, written
//! by hand (a few dozen lines, no registry to keep in step with the counters).

use std::fmt::Write as _;

use crate::engine::Shared;

/// The Prometheus text exposition of the figures.
pub fn exposition(shared: &Shared) -> String {
    let s = shared.stats_view();
    let mut out = String::new();
    let mut counter = |name: &str, help: &str, value: u64| {
        let _ = writeln!(
            out,
            "# HELP ringside_{name} {help}\n# TYPE ringside_{name} counter\nringside_{name} {value}"
        );
    };
    counter("requests_total", "Requests answered by the proxy.", s.responses.total);
    counter("sessions_created_total", "Sessions created.", s.router.created);
    counter(
        "sessions_expired_total",
        "Sessions expired after their idle timeout.",
        s.router.expired,
    );
    counter(
        "sessions_evicted_total",
        "Sessions evicted from a full table.",
        s.router.evicted,
    );
    counter(
        "sessions_reassigned_total",
        "Sessions moved because their backend left.",
        s.router.reassigned,
    );
    counter(
        "forged_cookies_total",
        "Balancer cookies that failed verification.",
        s.router.forged_cookies,
    );
    counter(
        "redispatched_total",
        "Requests sent to another backend after a failed connect, or resent after a backend failed them before answering.",
        s.redispatched,
    );
    counter(
        "smuggling_refused_total",
        "Requests refused for carrying both Content-Length and Transfer-Encoding.",
        s.smuggling_refused,
    );
    counter(
        "loops_refused_total",
        "Requests that came back through one of ringside's own backends (508).",
        s.loops_refused,
    );
    counter(
        "closed_by_drain_total",
        "Backend connections closed at a drain's timeout.",
        s.closed_by_drain,
    );
    counter(
        "lost_in_flight_total",
        "Requests a backend failed after taking them, answered 502 and not resent (not idempotent).",
        s.lost_in_flight,
    );
    counter("dropped_events_total", "Events subscribers missed.", s.dropped_events);
    counter(
        "lost_sessions_total",
        "Sessions the demo clients lost.",
        s.lost_sessions,
    );
    let _ = writeln!(out, "# HELP ringside_responses_total Answers by status class.");
    let _ = writeln!(out, "# TYPE ringside_responses_total counter");
    for (class, v) in [
        ("2xx", s.responses.ok_2xx),
        ("3xx", s.responses.redirect_3xx),
        ("4xx", s.responses.client_4xx),
        ("5xx", s.responses.server_5xx),
    ] {
        let _ = writeln!(out, "ringside_responses_total{{class=\"{class}\"}} {v}");
    }
    let _ = writeln!(
        out,
        "# HELP ringside_sessions Live sessions.\n# TYPE ringside_sessions gauge"
    );
    let _ = writeln!(out, "ringside_sessions {}", s.router.sessions);
    let _ = writeln!(
        out,
        "# HELP ringside_client_connections Client connections open.\n# TYPE ringside_client_connections gauge\nringside_client_connections {}",
        s.client_connections
    );
    let _ = writeln!(
        out,
        "# HELP ringside_proxy_thread_connections Client connections open, by proxy thread.\n# TYPE ringside_proxy_thread_connections gauge"
    );
    for (thread, n) in s.client_connections_per_thread.iter().enumerate() {
        let _ = writeln!(out, "ringside_proxy_thread_connections{{thread=\"{thread}\"}} {n}");
    }
    if let Some(store) = &s.store {
        let _ = writeln!(
            out,
            "# HELP ringside_store_up 1 when the session store is connected.\n# TYPE ringside_store_up gauge\nringside_store_up {}",
            u8::from(store.state == crate::store::StoreState::Ok)
        );
        for (name, help, value) in [
            (
                "store_degraded_total",
                "Times the session store became degraded.",
                store.degraded_total,
            ),
            ("store_errors_total", "Failed session store operations.", store.errors),
            (
                "store_lookups_total",
                "Local misses asked of the session store.",
                store.lookups,
            ),
            (
                "store_hits_total",
                "Session store lookups that found a session.",
                store.hits,
            ),
            (
                "store_writes_total",
                "Session changes written to the store.",
                store.writes,
            ),
            (
                "store_dropped_writes_total",
                "Session changes dropped while the store was away.",
                store.dropped_writes,
            ),
            (
                "store_remote_updates_total",
                "Moves and ends taken from other balancers.",
                store.remote_updates,
            ),
            (
                "store_waits_total",
                "Responses held until the store had the session they changed.",
                store.waits,
            ),
            (
                "store_conflicts_total",
                "Writes that found another balancer's value first.",
                store.conflicts,
            ),
            (
                "store_unshared_total",
                "Sessions not written because the key cap was reached.",
                store.unshared,
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP ringside_{name} {help}\n# TYPE ringside_{name} counter\nringside_{name} {value}"
            );
        }
    }
    if let Some(store) = &s.store {
        let _ = writeln!(
            out,
            "# HELP ringside_store_keys Keys this balancer keeps in the session store.\n# TYPE ringside_store_keys gauge\nringside_store_keys {}\n# HELP ringside_store_keys_max The most keys it keeps there.\n# TYPE ringside_store_keys_max gauge\nringside_store_keys_max {}",
            store.keys, store.keys_max
        );
    }
    let backends = shared.backends_view();
    for (metric, help) in [
        ("backend_up", "1 when the backend takes or keeps sessions."),
        ("backend_active_connections", "Connections open to the backend."),
        ("backend_sessions", "Live sessions on the backend."),
        ("backend_requests_total", "Requests routed to the backend."),
    ] {
        let kind = if metric.ends_with("_total") { "counter" } else { "gauge" };
        let _ = writeln!(out, "# HELP ringside_{metric} {help}\n# TYPE ringside_{metric} {kind}");
        for b in &backends {
            let v = match metric {
                "backend_up" => u64::from(b.healthy),
                "backend_active_connections" => b.active,
                "backend_sessions" => b.sessions,
                _ => b.requests,
            };
            let _ = writeln!(out, "ringside_{metric}{{backend=\"{}\"}} {v}", b.name);
        }
    }
    out
}
