//! What the proxy keeps per backend: its keep-alive connections, its cap on
//! requests in flight with their queue, its latency, its run of failed
//! connects (passive health), and the signal that closes its tunnels.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;

use super::client::{ConnLimit, Pool, PoolConfig, Timeouts};
use super::latency::Latency;
use super::signal::{Fired, Signal};
use crate::router::{Backend, BackendId};

/// How the connections to backends are kept.
#[derive(Debug, Clone, Copy)]
pub struct UpstreamConfig {
    /// Idle keep-alive connections per backend and proxy thread.
    pub max_idle: usize,
    /// Limit on a TCP connect.
    pub connect_timeout: Duration,
    /// Requests in flight per backend, at most.
    pub max_conns: usize,
    /// Requests waiting for a place, at most (then 503 at once).
    pub max_queue: usize,
}

/// One backend's proxy-side state.
#[derive(Debug)]
pub struct Upstream {
    /// The router's backend.
    pub backend: Arc<Backend>,
    /// Keep-alive connections to it.
    pub pool: Pool,
    /// Requests in flight to it, capped, with a queue.
    pub limit: ConnLimit,
    /// Time to response headers.
    pub latency: Latency,
    /// Failed connects in a row.
    connect_failures: AtomicU32,
    /// Fired to cut its tunnels (a kill, a drain's end, a removal).
    closing: Arc<Signal>,
}

impl Upstream {
    /// Records a failed connect; returns the run length.
    pub fn connect_failed(&self) -> u32 {
        self.connect_failures.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Records a good connect.
    pub fn connect_ok(&self) {
        if self.connect_failures.load(Ordering::Relaxed) != 0 {
            self.connect_failures.store(0, Ordering::Relaxed);
        }
    }

    /// Closes every connection to it: idle ones now, busy ones when their
    /// exchange ends, tunnels now.
    pub fn close_all(&self) {
        self.pool.close_all();
        self.closing.fire();
    }

    /// Resolves at the next [`Upstream::close_all`] (tunnels wait on it).
    pub fn closing(&self) -> Fired {
        self.closing.wait()
    }
}

/// Idle backend connections close after this many purges, one a second
/// (HAProxy's `pool-purge-delay` is 5 s too).
pub const POOL_IDLE_PURGES: u32 = 5;

/// Every backend's upstream, by backend id, read without locks.
#[derive(Debug, Default)]
pub struct Upstreams {
    by_id: ArcSwap<Vec<Option<Arc<Upstream>>>>,
}

impl Upstreams {
    /// The upstream of `id`, if registered.
    pub fn get(&self, id: BackendId) -> Option<Arc<Upstream>> {
        self.by_id.load().get(id.index()).and_then(Clone::clone)
    }

    /// Closes the backend connections idle for [`POOL_IDLE_PURGES`] calls
    /// (seconds, called once a second); returns how many.
    pub fn purge_idle(&self) -> usize {
        self.by_id
            .load()
            .iter()
            .flatten()
            .map(|u| u.pool.purge_idle(POOL_IDLE_PURGES))
            .sum()
    }

    /// Every registered upstream.
    pub fn all(&self) -> Vec<Arc<Upstream>> {
        self.by_id.load().iter().flatten().cloned().collect()
    }

    /// Forgets a removed backend's upstream (its pool and latency go).
    pub fn unregister(&self, id: BackendId) {
        self.by_id.rcu(|v| {
            let mut v = (**v).clone();
            if let Some(slot) = v.get_mut(id.index()) {
                *slot = None;
            }
            v
        });
    }

    /// Forgets every backend's latency (a lesson starts afresh).
    pub fn reset_latency(&self) {
        for u in self.by_id.load().iter().flatten() {
            u.latency.reset();
        }
    }

    /// Registers a backend (when it is added; its id's slot is replaced).
    pub fn register(&self, backend: &Arc<Backend>, config: UpstreamConfig) -> Arc<Upstream> {
        let upstream = Arc::new(Upstream {
            pool: Pool::new(
                backend.addr,
                PoolConfig {
                    max_idle: config.max_idle,
                    connect_timeout: config.connect_timeout,
                    timeouts: Timeouts::default(),
                },
            ),
            limit: ConnLimit::with_queue(config.max_conns.max(1), config.max_queue),
            backend: Arc::clone(backend),
            latency: Latency::default(),
            connect_failures: AtomicU32::new(0),
            closing: Arc::default(),
        });
        self.by_id.rcu(|v| {
            let mut v = (**v).clone();
            if v.len() <= backend.id.index() {
                v.resize(backend.id.index() + 1, None);
            }
            v[backend.id.index()] = Some(Arc::clone(&upstream));
            v
        });
        upstream
    }

    /// Gives every backend the same cap on requests in flight.
    pub fn set_max_conns(&self, max: usize) {
        for u in self.by_id.load().iter().flatten() {
            u.limit.set_max(max.max(1));
        }
    }
}
