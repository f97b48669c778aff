//! Idle connections to one backend, kept per thread: the proxy runs one
//! current-thread runtime per thread, and a connection's socket and timer
//! belong to the runtime that made them, so only that thread reuses it.
//!
//! Idle lists are LIFO (the warmest connection first) and capped. A
//! connection the backend closed while idle is found on checkout by one
//! non-blocking read. [`Pool::close_all`] drops the idle connections and
//! bumps a generation, so the connections out in exchanges close instead
//! of coming back. [`Pool::purge_idle`], called once a second, closes the
//! connections idle for longer than a few calls, as HAProxy purges idle
//! server connections, so a burst's connections and buffers do not stay.
//! No lock is held across an await.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use super::Timeouts;
use super::conn::Connection;
use super::error::ConnectError;

/// Idle lists; threads share one only past this many.
const SLOTS: usize = 64;

static NEXT_THREAD: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// This thread's number, for idle lists.
    static THREAD: u64 = NEXT_THREAD.fetch_add(1, Ordering::Relaxed);
}

fn this_thread() -> u64 {
    THREAD.with(|t| *t)
}

/// Settings of a pool.
#[derive(Debug, Clone, Copy)]
pub struct PoolConfig {
    /// Idle connections kept per thread.
    pub max_idle: usize,
    /// Limit on a TCP connect.
    pub connect_timeout: Duration,
    /// Inactivity limits given to every connection.
    pub timeouts: Timeouts,
}

/// The keep-alive connections of one backend; clones share it.
#[derive(Debug, Clone)]
pub struct Pool {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    addr: SocketAddr,
    config: PoolConfig,
    /// Bumped by `close_all`: connections of an older generation close.
    generation: AtomicU64,
    /// Idle connections by slot (thread number modulo [`SLOTS`]), each on
    /// a cache line of its own: two threads' slots never share one.
    idle: Box<[Slot]>,
    /// Calls of `purge_idle` so far (wrapping): a connection's idle age in purges.
    purges: AtomicU32,
}

/// Where a connection returns.
#[derive(Debug)]
pub(super) struct Home {
    shared: Weak<Shared>,
    generation: u64,
    thread: u64,
}

/// One thread's idle list.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Slot(Mutex<Vec<Connection>>);

impl Shared {
    fn slot(&self, thread: u64) -> MutexGuard<'_, Vec<Connection>> {
        self.idle[(thread % SLOTS as u64) as usize]
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }
}

impl Pool {
    /// A pool for the backend at `addr`.
    pub fn new(addr: SocketAddr, config: PoolConfig) -> Self {
        Pool {
            shared: Arc::new(Shared {
                addr,
                config,
                generation: AtomicU64::new(0),
                idle: (0..SLOTS).map(|_| Slot::default()).collect(),
                purges: AtomicU32::new(0),
            }),
        }
    }

    /// The backend's address.
    pub fn addr(&self) -> SocketAddr {
        self.shared.addr
    }

    /// An idle connection of this thread that is still open, else a new one
    /// ([`Connection::is_reused`] tells which).
    pub async fn checkout(&self) -> Result<Connection, ConnectError> {
        match self.take_idle() {
            Some(conn) => Ok(conn),
            None => self.connect().await,
        }
    }

    /// The most recently returned idle connection of this thread that is
    /// still open; those found closed are dropped.
    pub fn take_idle(&self) -> Option<Connection> {
        let me = this_thread();
        loop {
            let conn = {
                let mut idle = self.shared.slot(me);
                let i = idle
                    .iter()
                    .rposition(|c| c.home.as_ref().is_some_and(|h| h.thread == me))?;
                idle.remove(i)
            };
            let current = self.shared.generation.load(Ordering::Acquire);
            if conn.home.as_ref().is_some_and(|h| h.generation == current) && conn.is_alive() {
                return Some(conn);
            }
        }
    }

    /// A new connection that returns to this pool.
    pub async fn connect(&self) -> Result<Connection, ConnectError> {
        let config = &self.shared.config;
        let mut conn = Connection::connect(self.shared.addr, config.connect_timeout).await?;
        conn.set_timeouts(config.timeouts);
        conn.home = Some(Home {
            shared: Arc::downgrade(&self.shared),
            generation: self.shared.generation.load(Ordering::Acquire),
            thread: this_thread(),
        });
        Ok(conn)
    }

    /// Closes the idle connections; those in exchanges now close at their
    /// end instead of returning (a killed backend, a drain that timed out).
    pub fn close_all(&self) {
        self.shared.generation.fetch_add(1, Ordering::AcqRel);
        for slot in self.shared.idle.iter() {
            let closing = std::mem::take(&mut *slot.0.lock().unwrap_or_else(|e| e.into_inner()));
            drop(closing);
        }
    }

    /// Closes the connections that went idle `after` or more calls ago;
    /// returns how many.
    pub fn purge_idle(&self, after: u32) -> usize {
        let now = self.shared.purges.fetch_add(1, Ordering::Relaxed).wrapping_add(1);
        let stale = |c: &Connection| now.wrapping_sub(c.idle_since_purge) >= after;
        let mut closed = Vec::new();
        for slot in self.shared.idle.iter() {
            let mut idle = slot.0.lock().unwrap_or_else(|e| e.into_inner());
            if idle.first().is_some_and(stale) {
                // The list is oldest first: the stale ones lead it.
                let n = idle.partition_point(stale);
                closed.extend(idle.drain(..n));
            }
        }
        // Closed with no lock held.
        closed.len()
    }

    /// Idle connections now, all threads.
    pub fn idle(&self) -> usize {
        self.shared
            .idle
            .iter()
            .map(|s| s.0.lock().unwrap_or_else(|e| e.into_inner()).len())
            .sum()
    }
}

impl Connection {
    /// Back to its pool after a complete exchange; closed instead when it
    /// has no pool, its pool closed it, it is on another thread, or the
    /// idle list is full.
    pub(super) fn release(mut self) {
        let Some(home) = &self.home else { return };
        let Some(shared) = home.shared.upgrade() else { return };
        if home.thread != this_thread() {
            return;
        }
        let generation = home.generation;
        let mut idle = shared.slot(home.thread);
        // Checked under the lock: a `close_all` either sees this connection
        // in the list or has already bumped the generation.
        if generation == shared.generation.load(Ordering::Acquire) && idle.len() < shared.config.max_idle {
            self.served = self.served.saturating_add(1);
            self.idle_since_purge = shared.purges.load(Ordering::Relaxed);
            idle.push(self);
        } else {
            drop(idle);
        }
    }
}
