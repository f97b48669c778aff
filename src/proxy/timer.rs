//! Inactivity timeouts at the cost of one timer per connection, for the
//! upstream client (the backend, the client's body) and for a client
//! connection's own limits (`ClientIo`).
//!
//! Nothing is done per read or write: a side's idle period starts when the
//! exchange first has to wait for it (`Idle::waiting`) and is forgotten on
//! progress (`Idle::active`). The timer is allocated the first time a
//! connection waits, and moved only when it fires before the deadline the
//! latest progress allows (activity since it was set) or when a shorter
//! deadline is needed.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

/// When one side (the backend, or the client's body) started keeping us waiting.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Idle {
    since: Option<Instant>,
}

impl Idle {
    /// The side made progress: its idle period, if any, is over.
    pub fn active(&mut self) {
        self.since = None;
    }

    /// We wait on this side now: its deadline after `limit` of inactivity.
    pub fn waiting(&mut self, now: &mut Option<Instant>, limit: Duration) -> Instant {
        let since = *self.since.get_or_insert_with(|| *now.get_or_insert_with(Instant::now));
        // A limit too large to add means no limit (a year is as good).
        since
            .checked_add(limit)
            .unwrap_or_else(|| since + Duration::from_secs(365 * 86400))
    }
}

/// One lazily armed timer.
#[derive(Debug, Default)]
pub(crate) struct Timer {
    sleep: Option<Pin<Box<Sleep>>>,
}

impl Timer {
    /// Ready once `deadline` has passed; else registers the task's waker.
    pub fn poll_until(&mut self, cx: &mut Context<'_>, deadline: Instant) -> Poll<()> {
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        loop {
            if sleep.deadline() > deadline {
                sleep.as_mut().reset(deadline);
            }
            match sleep.as_mut().poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(()) if sleep.deadline() >= deadline => return Poll::Ready(()),
                // Fired for an older deadline: activity since moved it.
                Poll::Ready(()) => sleep.as_mut().reset(deadline),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Waker;

    fn poll(timer: &mut Timer, deadline: Instant) -> Poll<()> {
        timer.poll_until(&mut Context::from_waker(Waker::noop()), deadline)
    }

    async fn advance_ms(ms: u64) {
        tokio::time::advance(Duration::from_millis(ms)).await;
    }

    #[tokio::test(start_paused = true)]
    async fn fires_at_the_latest_deadline_not_the_first() {
        let mut timer = Timer::default();
        let start = Instant::now();
        assert!(poll(&mut timer, start + Duration::from_millis(100)).is_pending());
        advance_ms(60).await;
        // Activity moved the deadline; the timer keeps its first one.
        let moved = start + Duration::from_millis(160);
        assert!(poll(&mut timer, moved).is_pending());
        advance_ms(50).await;
        assert!(poll(&mut timer, moved).is_pending(), "fired at 100 ms, re-armed");
        advance_ms(49).await;
        assert!(poll(&mut timer, moved).is_pending());
        advance_ms(2).await;
        assert!(poll(&mut timer, moved).is_ready());
    }

    #[tokio::test(start_paused = true)]
    async fn a_shorter_deadline_takes_effect() {
        let mut timer = Timer::default();
        let start = Instant::now();
        assert!(poll(&mut timer, start + Duration::from_secs(60)).is_pending());
        let short = start + Duration::from_millis(10);
        assert!(poll(&mut timer, short).is_pending());
        advance_ms(11).await;
        assert!(poll(&mut timer, short).is_ready());
    }

    #[test]
    fn idle_counts_from_the_first_wait() {
        let mut idle = Idle::default();
        let t0 = Instant::now();
        let mut now = Some(t0);
        assert_eq!(
            idle.waiting(&mut now, Duration::from_secs(1)),
            t0 + Duration::from_secs(1)
        );
        let mut later = Some(t0 + Duration::from_millis(500));
        assert_eq!(
            idle.waiting(&mut later, Duration::from_secs(1)),
            t0 + Duration::from_secs(1)
        );
        idle.active();
        assert_eq!(
            idle.waiting(&mut later, Duration::from_secs(1)),
            t0 + Duration::from_millis(1500)
        );
        idle.active();
        assert!(idle.waiting(&mut later, Duration::MAX) > t0 + Duration::from_secs(86400));
    }
}
