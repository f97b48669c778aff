//! A cap on one backend's requests in flight, shared by every proxy thread
//! (HAProxy's server `maxconn`): past the cap, requests wait in a bounded
//! FIFO queue until a [`Permit`] is dropped or their queue timeout passes.
//! The lock is held only for bookkeeping, never across an await; a waiter
//! that times out or is dropped leaves the queue.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

/// Waiters a queue holds unless told otherwise.
const DEFAULT_MAX_QUEUE: usize = 1024;

/// Why no permit was had.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum QueueError {
    /// The queue was full: answer at once (503).
    #[error("the backend's queue is full")]
    Full,
    /// No permit came within the queue timeout.
    #[error("no connection to the backend came free within the queue timeout")]
    TimedOut,
}

/// The cap of one backend; clones share it.
#[derive(Debug, Clone)]
pub struct ConnLimit {
    state: Arc<Mutex<State>>,
}

#[derive(Debug)]
struct State {
    max: usize,
    max_queue: usize,
    in_use: usize,
    /// Waiters in arrival order (ids ascend), with their wakers once polled.
    queue: VecDeque<(u64, Option<Waker>)>,
    /// Waiters handed a permit they have not picked up yet.
    granted: Vec<u64>,
    next_id: u64,
}

impl State {
    /// Hands a free permit, if any, to the first waiter; returns its waker
    /// (`None` when nothing was granted, `Some(None)` for a waiter not
    /// polled yet).
    fn grant(&mut self) -> Option<Option<Waker>> {
        if self.in_use >= self.max {
            return None;
        }
        let (id, waker) = self.queue.pop_front()?;
        self.in_use += 1;
        self.granted.push(id);
        Some(waker)
    }
}

impl ConnLimit {
    /// At most `max` permits out, at most 1024 waiters.
    pub fn new(max: usize) -> Self {
        Self::with_queue(max, DEFAULT_MAX_QUEUE)
    }

    /// At most `max` permits out and `max_queue` waiters.
    pub fn with_queue(max: usize, max_queue: usize) -> Self {
        ConnLimit {
            state: Arc::new(Mutex::new(State {
                max,
                max_queue,
                in_use: 0,
                queue: VecDeque::new(),
                granted: Vec::new(),
                next_id: 0,
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// A permit: at once while fewer than `max` are out and nobody waits,
    /// else after the waiters before it, within `queue_timeout`. The future
    /// takes its place in the queue when first polled.
    pub async fn acquire(&self, queue_timeout: Duration) -> Result<Permit, QueueError> {
        let id = {
            let mut s = self.lock();
            if s.queue.is_empty() && s.in_use < s.max {
                s.in_use += 1;
                return Ok(Permit {
                    state: Arc::clone(&self.state),
                });
            }
            if s.queue.len() >= s.max_queue {
                return Err(QueueError::Full);
            }
            let id = s.next_id;
            s.next_id += 1;
            s.queue.push_back((id, None));
            id
        };
        let waiter = Waiter {
            state: Arc::clone(&self.state),
            id,
            done: false,
        };
        tokio::time::timeout(queue_timeout, waiter)
            .await
            .map_err(|_| QueueError::TimedOut)
    }

    /// Changes the cap; waiters get the permits a raise frees at once.
    pub fn set_max(&self, max: usize) {
        self.lock().max = max;
        // One at a time, each waker woken outside the lock.
        while let Some(waker) = self.lock().grant() {
            waker.into_iter().for_each(Waker::wake);
        }
    }

    /// The cap.
    pub fn max(&self) -> usize {
        self.lock().max
    }

    /// Permits out now.
    pub fn in_use(&self) -> usize {
        self.lock().in_use
    }

    /// Waiters now.
    pub fn queued(&self) -> usize {
        self.lock().queue.len()
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

/// Gives back one permit and wakes the waiter it goes to.
fn release(state: &Mutex<State>) {
    let granted = {
        let mut s = lock(state);
        s.in_use = s.in_use.saturating_sub(1);
        s.grant()
    };
    if let Some(Some(waker)) = granted {
        waker.wake();
    }
}

/// One request in flight on the backend; dropping it frees the place.
#[derive(Debug)]
pub struct Permit {
    state: Arc<Mutex<State>>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        release(&self.state);
    }
}

/// A place in the queue.
struct Waiter {
    state: Arc<Mutex<State>>,
    id: u64,
    done: bool,
}

impl Future for Waiter {
    type Output = Permit;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Permit> {
        let this = &mut *self;
        let mut s = lock(&this.state);
        if let Some(i) = s.granted.iter().position(|&g| g == this.id) {
            s.granted.swap_remove(i);
            drop(s);
            this.done = true;
            return Poll::Ready(Permit {
                state: Arc::clone(&this.state),
            });
        }
        if let Ok(i) = s.queue.binary_search_by_key(&this.id, |e| e.0) {
            match &mut s.queue[i].1 {
                Some(w) if w.will_wake(cx.waker()) => {}
                slot => *slot = Some(cx.waker().clone()),
            }
        }
        Poll::Pending
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let mut s = lock(&self.state);
        if let Some(i) = s.granted.iter().position(|&g| g == self.id) {
            // Granted but never picked up: pass the permit on.
            s.granted.swap_remove(i);
            drop(s);
            release(&self.state);
        } else if let Ok(i) = s.queue.binary_search_by_key(&self.id, |e| e.0) {
            s.queue.remove(i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::pin::pin;
    use std::task::Waker;

    const LONG: Duration = Duration::from_secs(60);

    fn poll_once<F: Future>(f: Pin<&mut F>) -> Poll<F::Output> {
        f.poll(&mut Context::from_waker(Waker::noop()))
    }

    #[tokio::test(start_paused = true)]
    async fn the_third_waits_for_a_permit_dropped() {
        let limit = ConnLimit::new(2);
        let a = limit.acquire(LONG).await.unwrap();
        let _b = limit.acquire(LONG).await.unwrap();
        assert_eq!((limit.in_use(), limit.queued(), limit.max()), (2, 0, 2));
        let mut third = pin!(limit.acquire(LONG));
        assert!(poll_once(third.as_mut()).is_pending());
        assert_eq!((limit.in_use(), limit.queued()), (2, 1));
        drop(a);
        assert_eq!((limit.in_use(), limit.queued()), (2, 0), "handed over, not freed");
        let c = third.await.unwrap();
        drop(c);
        assert_eq!(limit.in_use(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_times_out_and_leaves_the_queue() {
        let limit = ConnLimit::new(1);
        let _a = limit.acquire(LONG).await.unwrap();
        let started = tokio::time::Instant::now();
        let err = limit.acquire(Duration::from_millis(300)).await.unwrap_err();
        assert_eq!(err, QueueError::TimedOut);
        assert_eq!(started.elapsed(), Duration::from_millis(300));
        assert_eq!((limit.in_use(), limit.queued()), (1, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn waiters_are_served_in_order_and_the_queue_is_bounded() {
        let limit = ConnLimit::with_queue(1, 2);
        let first = limit.acquire(LONG).await.unwrap();
        // A request joins the queue when first polled.
        let mut w1 = pin!(limit.acquire(LONG));
        let mut w2 = pin!(limit.acquire(LONG));
        assert!(poll_once(w1.as_mut()).is_pending());
        assert!(poll_once(w2.as_mut()).is_pending());
        assert_eq!(limit.acquire(LONG).await.unwrap_err(), QueueError::Full);
        drop(first);
        assert!(poll_once(w2.as_mut()).is_pending());
        let p1 = match poll_once(w1.as_mut()) {
            Poll::Ready(p) => p.unwrap(),
            Poll::Pending => panic!("the first waiter gets the permit"),
        };
        drop(p1);
        w2.await.unwrap();
        assert_eq!((limit.in_use(), limit.queued()), (0, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn a_dropped_waiter_leaves_the_queue_or_passes_its_permit_on() {
        let limit = ConnLimit::new(1);
        let first = limit.acquire(LONG).await.unwrap();
        {
            let mut gone = pin!(limit.acquire(LONG));
            assert!(poll_once(gone.as_mut()).is_pending());
            assert_eq!(limit.queued(), 1);
        }
        assert_eq!(limit.queued(), 0);
        let mut granted = Box::pin(limit.acquire(LONG));
        assert!(poll_once(granted.as_mut()).is_pending());
        let mut next = pin!(limit.acquire(LONG));
        assert!(poll_once(next.as_mut()).is_pending());
        drop(first); // goes to `granted`, which never picks it up
        drop(granted);
        let _next = next.await.unwrap();
        assert_eq!((limit.in_use(), limit.queued()), (1, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn raising_the_cap_lets_waiters_in() {
        let limit = ConnLimit::new(1);
        let _a = limit.acquire(LONG).await.unwrap();
        let mut w1 = pin!(limit.acquire(LONG));
        let mut w2 = pin!(limit.acquire(LONG));
        assert!(poll_once(w1.as_mut()).is_pending());
        assert!(poll_once(w2.as_mut()).is_pending());
        limit.set_max(3);
        let (_p1, _p2) = (w1.await.unwrap(), w2.await.unwrap());
        assert_eq!((limit.in_use(), limit.max()), (3, 3));
        limit.set_max(1);
        assert_eq!(limit.in_use(), 3, "permits out are not revoked");
    }

    #[test]
    fn a_permit_dropped_on_another_thread_wakes_the_waiter() {
        let limit = ConnLimit::new(1);
        let permit = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(limit.acquire(LONG))
            .unwrap();
        let (queued_tx, queued_rx) = std::sync::mpsc::channel();
        let waiter = {
            let limit = limit.clone();
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async {
                    let mut acquire = pin!(limit.acquire(LONG));
                    std::future::poll_fn(|cx| {
                        assert!(acquire.as_mut().poll(cx).is_pending());
                        Poll::Ready(())
                    })
                    .await;
                    queued_tx.send(()).unwrap();
                    acquire.await.unwrap()
                })
            })
        };
        queued_rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(limit.queued(), 1);
        drop(permit);
        let got = waiter.join().unwrap();
        assert_eq!(limit.in_use(), 1);
        drop(got);
        assert_eq!(limit.in_use(), 0);
    }
}
