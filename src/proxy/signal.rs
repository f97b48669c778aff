//! A signal that many long-lived tasks wait on — the proxy's shutdown for
//! client connections, a pool's close for backend connections and tunnels.
//!
//! Waiting costs one atomic load per poll: a waiter registers its task's
//! waker once and again only if the waker changes. (`watch` and `Notify`
//! lock a mutex shared by every waiter on every poll, and these futures are
//! polled each time their connection wakes.)

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

/// Fired any number of times; each [`Fired`] resolves at the first firing
/// after it was made.
#[derive(Debug, Default)]
pub struct Signal {
    /// Firings so far.
    generation: AtomicU64,
    next_id: AtomicU64,
    waiters: Mutex<HashMap<u64, Waker>>,
}

impl Signal {
    /// Wakes every waiter; each resolves.
    pub fn fire(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        for waker in self.lock().values() {
            waker.wake_by_ref();
        }
    }

    /// Whether it has fired at all.
    pub fn fired(&self) -> bool {
        self.generation() > 0
    }

    /// Firings so far.
    fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// A future that resolves once the signal fires after this call.
    pub fn wait(self: &Arc<Self>) -> Fired {
        Fired {
            seen: self.generation(),
            signal: Arc::clone(self),
            registered: None,
        }
    }

    /// Waiters registered now.
    pub fn waiters(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Waker>> {
        self.waiters.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Resolves when its [`Signal`] fires.
#[derive(Debug)]
#[must_use = "futures do nothing unless polled"]
pub struct Fired {
    signal: Arc<Signal>,
    seen: u64,
    /// The id and waker it is registered with.
    registered: Option<(u64, Waker)>,
}

impl Future for Fired {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        if this.signal.generation() != this.seen {
            return Poll::Ready(());
        }
        match &mut this.registered {
            Some((_, waker)) if waker.will_wake(cx.waker()) => return Poll::Pending,
            Some((id, waker)) => {
                waker.clone_from(cx.waker());
                this.signal.lock().insert(*id, cx.waker().clone());
            }
            None => {
                let id = this.signal.next_id.fetch_add(1, Ordering::Relaxed);
                this.signal.lock().insert(id, cx.waker().clone());
                this.registered = Some((id, cx.waker().clone()));
            }
        }
        // A firing between the first check and the registration would
        // have missed this waker.
        if this.signal.generation() != this.seen {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

impl Drop for Fired {
    fn drop(&mut self) {
        if let Some((id, _)) = &self.registered {
            self.signal.lock().remove(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::poll_fn;
    use std::time::Duration;

    /// Polls `fired` once from the current task.
    async fn poll_once(fired: &mut Fired) -> Poll<()> {
        poll_fn(|cx| Poll::Ready(Pin::new(&mut *fired).poll(cx))).await
    }

    #[tokio::test]
    async fn every_waiter_resolves_at_the_next_firing_and_leaves_no_trace() {
        let signal = Arc::new(Signal::default());
        let waiters: Vec<_> = (0..3)
            .map(|_| {
                let fired = signal.wait();
                tokio::spawn(fired)
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(signal.waiters(), 3, "each waiter registered once");
        assert!(waiters.iter().all(|w| !w.is_finished()));
        signal.fire();
        for w in waiters {
            tokio::time::timeout(Duration::from_secs(5), w)
                .await
                .expect("woken")
                .unwrap();
        }
        assert_eq!(signal.waiters(), 0);
    }

    #[tokio::test]
    async fn a_firing_before_the_wait_began_does_not_count() {
        let signal = Arc::new(Signal::default());
        signal.fire();
        let mut fired = signal.wait();
        assert!(poll_once(&mut fired).await.is_pending());
        signal.fire();
        tokio::time::timeout(Duration::from_secs(5), fired)
            .await
            .expect("the second firing wakes it");
    }

    #[tokio::test]
    async fn a_waiter_polled_by_another_task_is_woken_there() {
        let signal = Arc::new(Signal::default());
        let mut fired = signal.wait();
        assert!(poll_once(&mut fired).await.is_pending());
        let moved = tokio::spawn(fired);
        tokio::time::sleep(Duration::from_millis(20)).await;
        signal.fire();
        tokio::time::timeout(Duration::from_secs(5), moved)
            .await
            .expect("woken in its new task")
            .unwrap();
    }
}
