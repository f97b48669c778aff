//! What every session-table change must keep in step besides the table
//! itself: the router's statistics, the event sink, the store mirror, and
//! which table is the active one (only its sessions are counted and shown).

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use super::hash::KeyDomain;
use super::{EventSink, RouterStats, SessionMirror};

/// Shared by the router and its session tables.
pub struct Ledger {
    /// Router-wide counters (the active table's sessions only).
    pub stats: RouterStats,
    /// Where events go.
    pub events: Arc<dyn EventSink>,
    mirror: Option<Arc<dyn SessionMirror>>,
    /// The active table's domain index + 1; 0 when no table is active
    /// (affinity `none`).
    active: AtomicU8,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger")
            .field("active", &self.active())
            .finish_non_exhaustive()
    }
}

impl Ledger {
    pub(super) fn new(events: Arc<dyn EventSink>, mirror: Option<Arc<dyn SessionMirror>>) -> Self {
        Ledger {
            stats: RouterStats::default(),
            events,
            mirror,
            active: AtomicU8::new(0),
        }
    }

    /// The store mirror, when the table is shared.
    pub fn mirror(&self) -> Option<&Arc<dyn SessionMirror>> {
        self.mirror.as_ref()
    }

    /// The domain whose table is active now, if any.
    pub fn active(&self) -> Option<KeyDomain> {
        match self.active.load(Ordering::Relaxed) {
            0 => None,
            i => KeyDomain::ALL.get(usize::from(i) - 1).copied(),
        }
    }

    /// Whether `domain`'s table is the active one.
    pub fn is_active(&self, domain: KeyDomain) -> bool {
        self.active.load(Ordering::Relaxed) == domain.index() as u8 + 1
    }

    pub(super) fn set_active(&self, domain: Option<KeyDomain>) {
        self.active
            .store(domain.map_or(0, |d| d.index() as u8 + 1), Ordering::Relaxed);
    }
}
