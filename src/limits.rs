//! Ringside's own resources: the descriptor limit raised at start, and the
//! budget derived from it — how many clients at once, how many requests in
//! flight per backend, how many idle connections kept — so that ringside
//! runs out of nothing it would then blame on a backend.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::config::Config;

/// Descriptors kept for listeners, health checks, the admin API, logs and
/// the session store.
const RESERVED: u64 = 64;

/// The soft limit is raised no higher than this (a "hard" limit may be
/// effectively infinite).
const HIGHEST: u64 = 1 << 20;

static FD_LIMIT: AtomicU64 = AtomicU64::new(0);

/// Raises the soft `RLIMIT_NOFILE` to the hard limit; returns the soft
/// limit in force afterwards.
pub fn raise_fd_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed.
    let limit = unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return fd_limit();
        }
        let target = lim.rlim_max.min(HIGHEST as libc::rlim_t);
        if lim.rlim_cur < target {
            let raised = libc::rlimit {
                rlim_cur: target,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim.rlim_cur = target;
            }
        }
        to_u64(lim.rlim_cur)
    };
    FD_LIMIT.store(limit, Ordering::Relaxed);
    limit
}

/// The soft descriptor limit (as raised at start, or as found).
pub fn fd_limit() -> u64 {
    match FD_LIMIT.load(Ordering::Relaxed) {
        0 => {
            let mut lim = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            // SAFETY: getrlimit only writes the struct passed.
            if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 {
                to_u64(lim.rlim_cur)
            } else {
                1024
            }
        }
        n => n,
    }
}

/// `rlim_t` is `u64` on Linux, and may not be elsewhere.
#[allow(clippy::unnecessary_cast)]
fn to_u64(v: libc::rlim_t) -> u64 {
    v as u64
}

/// How ringside spends its descriptors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// The soft descriptor limit.
    pub fd_limit: u64,
    /// Client connections open at once, at most.
    pub max_connections: usize,
    /// Requests in flight per backend, at most.
    pub max_conns_per_backend: usize,
    /// Requests waiting for a place per backend, at most.
    pub max_queue: usize,
    /// Idle keep-alive connections per backend and proxy thread.
    pub max_idle: usize,
}

/// The budget for `config` with `backends` backends on `threads` proxy
/// threads, given `fd_limit` descriptors. Settings in `[limits]` win over
/// what is derived.
pub fn budget(config: &Config, fd_limit: u64, backends: usize, threads: usize) -> Budget {
    let backends = backends.max(1) as u64;
    let threads = threads.max(1) as u64;
    let available = fd_limit.saturating_sub(RESERVED + 2 * backends).max(16);
    // Idle connections take at most a quarter of what is left.
    let max_idle = (config.proxy.pool_idle_per_backend as u64)
        .min(available / (4 * threads * backends))
        .max(1);
    let for_requests = available - (max_idle * threads * backends).min(available / 4);
    // A client connection and the backend connection its request needs —
    // and, for in-process demo backends, their side of it too.
    let per_client = if config.backends.is_empty() { 3 } else { 2 };
    let derived_clients = (for_requests / per_client).max(4);
    let max_connections = match config.limits.max_connections {
        0 => derived_clients,
        n => n as u64,
    };
    let upstream = for_requests.saturating_sub(max_connections).max(backends) / (per_client - 1);
    let max_conns_per_backend = match config.limits.max_conns_per_backend {
        0 => (upstream / backends).max(1),
        n => n as u64,
    };
    Budget {
        fd_limit,
        max_connections: max_connections as usize,
        max_conns_per_backend: max_conns_per_backend as usize,
        max_queue: config.limits.max_queue.unwrap_or(max_connections as usize).max(1),
        max_idle: max_idle as usize,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_limit_is_shared_out_and_settings_win() {
        let config = Config::default();
        let b = budget(&config, 1024, 3, 2);
        assert!(b.max_connections >= 100 && b.max_connections < 400, "{b:?}");
        let fds = b.max_connections + b.max_conns_per_backend * 3 * 2 + b.max_idle * 3 * 2;
        assert!(fds as u64 <= 1024, "{b:?} uses {fds}");
        let mut set = Config::default();
        set.limits.max_connections = 50;
        set.limits.max_conns_per_backend = 7;
        let b = budget(&set, 1024, 3, 2);
        assert_eq!((b.max_connections, b.max_conns_per_backend), (50, 7));
        let big = budget(&config, 1 << 20, 3, 2);
        assert!(big.max_connections > 100_000, "{big:?}");
    }

    #[test]
    fn the_soft_limit_is_raised_to_the_hard_one() {
        let raised = raise_fd_limit();
        assert!(raised >= 256, "{raised}");
        assert_eq!(fd_limit(), raised);
    }
}
