//! The proxy's counters, each updated by every proxy thread on lines of its
//! own (see [`crate::counter`]).

use crate::counter::{Counter, Gauge};

/// Answers by kind, for the header, the API and `/metrics`.
#[derive(Debug, Default)]
pub struct ProxyStats {
    /// Requests answered.
    pub requests: Counter,
    /// By class: 1xx … 5xx at index 1 … 5.
    pub by_class: [Counter; 6],
    /// 502 answers of ringside's own (a backend failed).
    pub bad_gateway: Counter,
    /// 503 answers (no backend available, a backend's queue ran out, or
    /// ringside's own limits).
    pub unavailable: Counter,
    /// 504 answers (a backend silent for its timeout).
    pub gateway_timeout: Counter,
    /// Requests sent to another backend after a failed connect, or resent
    /// after a backend failed them before answering.
    pub redispatched: Counter,
    /// Upgraded connections (tunnels) opened.
    pub tunnels: Counter,
    /// Requests refused for carrying both `Content-Length` and
    /// `Transfer-Encoding` (or arriving after bytes that did not frame).
    pub smuggling_refused: Counter,
    /// Requests that came back through one of ringside's own backends (508).
    pub loops_refused: Counter,
    /// Backend connections still open at a drain's timeout, and closed.
    pub closed_by_drain: Counter,
    /// Requests a backend failed after taking them, answered 502 rather
    /// than resent: repeating them may not be harmless (RFC 9112 §9.3.1).
    pub lost_in_flight: Counter,
    /// Requests refused as the client's fault (a bad head or body, an
    /// aborted upload): 4xx answers of ringside's own.
    pub client_errors: Counter,
    /// Clients cut for a limit: a head too slow, a body stalled (408), an
    /// answer not read, a keep-alive connection idle too long.
    pub client_timeouts: Counter,
    /// Times ringside ran out of its own resources (descriptors, socket
    /// memory, local ports): never counted against a backend.
    pub local_errors: Counter,
    /// Requests that waited for a place under a backend's connection cap.
    pub queued: Counter,
    /// Requests answered 503 because a backend's queue was full or the
    /// wait ran out.
    pub queue_timeouts: Counter,
    /// Client connections open now.
    pub client_connections: Gauge,
    /// Client connections parked (idle, hyper's buffers given back) now.
    pub parked_connections: Gauge,
}

impl ProxyStats {
    /// Counts an answer by its status class.
    pub fn answered(&self, status: http::StatusCode) {
        if let Some(c) = self.by_class.get(usize::from(status.as_u16() / 100)) {
            c.incr();
        }
    }

    /// Zeroes the counters (a lesson starts afresh); gauges stay.
    pub fn reset(&self) {
        for c in self.by_class.iter().chain([
            &self.requests,
            &self.bad_gateway,
            &self.unavailable,
            &self.gateway_timeout,
            &self.redispatched,
            &self.tunnels,
            &self.smuggling_refused,
            &self.loops_refused,
            &self.closed_by_drain,
            &self.lost_in_flight,
            &self.client_errors,
            &self.client_timeouts,
            &self.local_errors,
            &self.queued,
            &self.queue_timeouts,
        ]) {
            c.reset();
        }
    }
}
