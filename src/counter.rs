//! Counters that every proxy thread updates without contention: each thread
//! adds to a cache line of its own, and a reader sums the lines. A relaxed
//! add on a line no other core writes costs a few nanoseconds; the same add
//! on a line shared by two busy cores costs a cache miss every time.

use std::cell::Cell;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// Lines per counter: proxy threads beyond this share lines (still correct).
pub const SLOTS: usize = 8;

thread_local! {
    static SLOT: Cell<usize> = const { Cell::new(0) };
}

/// Gives the current thread its own line (proxy thread `i` uses `i + 1`;
/// every other thread shares line 0).
pub fn set_slot(i: usize) {
    SLOT.with(|s| s.set(i % SLOTS));
}

/// This thread's line.
pub fn slot() -> usize {
    SLOT.with(Cell::get)
}

#[derive(Debug, Default)]
#[repr(align(128))]
struct Line(AtomicU64);

#[derive(Debug, Default)]
#[repr(align(128))]
struct SignedLine(AtomicI64);

/// A count that only grows (and can be reset).
#[derive(Debug, Default)]
pub struct Counter {
    lines: [Line; SLOTS],
}

impl Counter {
    /// Adds `n` on this thread's line.
    pub fn add(&self, n: u64) {
        self.lines[slot()].0.fetch_add(n, Ordering::Relaxed);
    }

    /// Adds one.
    pub fn incr(&self) {
        self.add(1);
    }

    /// The sum of every line.
    pub fn get(&self) -> u64 {
        self.lines.iter().map(|l| l.0.load(Ordering::Relaxed)).sum()
    }

    /// Back to zero (a lesson starts afresh).
    pub fn reset(&self) {
        for l in &self.lines {
            l.0.store(0, Ordering::Relaxed);
        }
    }
}

/// A level that goes up and down, possibly on different threads.
#[derive(Debug, Default)]
pub struct Gauge {
    lines: [SignedLine; SLOTS],
}

impl Gauge {
    /// One more.
    pub fn incr(&self) {
        self.lines[slot()].0.fetch_add(1, Ordering::Relaxed);
    }

    /// One fewer.
    pub fn decr(&self) {
        self.lines[slot()].0.fetch_sub(1, Ordering::Relaxed);
    }

    /// Sets the level (every line but one cleared).
    pub fn set(&self, n: u64) {
        for (i, l) in self.lines.iter().enumerate() {
            l.0.store(if i == 0 { n as i64 } else { 0 }, Ordering::Relaxed);
        }
    }

    /// The level now (never below zero).
    pub fn get(&self) -> u64 {
        let sum: i64 = self.lines.iter().map(|l| l.0.load(Ordering::Relaxed)).sum();
        sum.max(0) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threads_add_to_lines_of_their_own_and_reads_sum_them() {
        let c = std::sync::Arc::new(Counter::default());
        let g = std::sync::Arc::new(Gauge::default());
        let threads: Vec<_> = (0..4)
            .map(|i| {
                let (c, g) = (c.clone(), g.clone());
                std::thread::spawn(move || {
                    set_slot(i + 1);
                    for _ in 0..1000 {
                        c.incr();
                        g.incr();
                    }
                    // Taken up on one thread, put down on another.
                    set_slot(0);
                    for _ in 0..500 {
                        g.decr();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(c.get(), 4000);
        assert_eq!(g.get(), 2000);
        c.reset();
        assert_eq!(c.get(), 0);
        assert_eq!(std::mem::align_of::<Line>(), 128);
    }
}
