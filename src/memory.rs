//! Memory given back to the system after a crowd of connections leaves.
//!
//! glibc's allocator keeps what connections freed in its arenas, where it
//! counts as ringside's resident memory long after they closed (10,000
//! keep-alive clients left about 30 MB behind). `malloc_trim` returns the
//! free pages; it walks every arena under its lock, so it runs only when
//! the open connections, or the busy ones among them (not parked, holding
//! hyper's buffers), fell by at least [`TRIM_AFTER_DROP`] since the last
//! trim, or when [`TRIM_AFTER_PURGE`] idle backend connections were closed
//! — on a blocking thread, never on a proxy thread.

/// Connections fewer by this than their peak since the last trim: trim.
pub const TRIM_AFTER_DROP: u64 = 1000;

/// Idle backend connections (each with its read buffer) closed at once.
pub const TRIM_AFTER_PURGE: usize = 100;

/// Watches open and busy connections and says when to trim.
#[derive(Debug, Default)]
pub struct Trimmer {
    open_peak: u64,
    busy_peak: u64,
}

impl Trimmer {
    /// Told the client connections open and busy now and the idle backend
    /// connections just purged (once a second); whether a trim is due.
    pub fn due(&mut self, open: u64, busy: u64, purged: usize) -> bool {
        self.open_peak = self.open_peak.max(open);
        self.busy_peak = self.busy_peak.max(busy);
        if self.open_peak - open >= TRIM_AFTER_DROP
            || self.busy_peak - busy >= TRIM_AFTER_DROP
            || purged >= TRIM_AFTER_PURGE
        {
            (self.open_peak, self.busy_peak) = (open, busy);
            return true;
        }
        false
    }
}

/// Gives free heap pages back to the system (glibc only; elsewhere the
/// allocator does it itself or not at all).
pub fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let started = std::time::Instant::now();
        // SAFETY: malloc_trim only takes the allocator's own locks.
        unsafe { libc::malloc_trim(0) };
        tracing::debug!("gave free memory back to the system in {:?}", started.elapsed());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trim_is_due_once_per_large_drop_of_connections() {
        let mut t = Trimmer::default();
        assert!(!t.due(5000, 5000, 0));
        assert!(!t.due(5000, 4500, 99));
        assert!(t.due(5000, 3900, 0), "busy ones parked");
        assert!(!t.due(5000, 3900, 0));
        assert!(!t.due(4200, 3000, 0));
        assert!(t.due(3900, 2000, 0), "open ones closed");
        assert!(!t.due(9000, 2100, 0));
        assert!(t.due(0, 0, 0));
        assert!(t.due(0, 0, 100), "backend connections purged");
        trim();
    }
}
