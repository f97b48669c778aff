//! What the proxy keeps per backend: its connection pool, its latency, and
//! its run of failed connects (passive health).

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use arc_swap::ArcSwap;

use super::latency::Latency;
use super::pool::BackendPool;
use crate::router::{Backend, BackendId};

/// One backend's proxy-side state.
#[derive(Debug)]
pub struct Upstream {
    /// The router's backend.
    pub backend: Arc<Backend>,
    /// Keep-alive connections to it.
    pub pool: BackendPool,
    /// Time to response headers.
    pub latency: Latency,
    /// Failed connects in a row.
    pub connect_failures: AtomicU32,
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
}

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

    /// Registers a backend (call once per id, when it is added).
    pub fn register(&self, backend: &Arc<Backend>, max_idle: usize) -> Arc<Upstream> {
        let upstream = Arc::new(Upstream {
            pool: BackendPool::new(backend.addr, max_idle),
            backend: Arc::clone(backend),
            latency: Latency::default(),
            connect_failures: AtomicU32::new(0),
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
}
