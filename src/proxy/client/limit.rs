//! A cap on one backend's requests in flight, shared by every proxy thread
//! (HAProxy's server `maxconn`): past the cap, requests wait in a bounded
//! FIFO queue until a [`Permit`] is dropped or their queue timeout passes.
//! While nobody waits a permit costs one atomic step each way; the lock is
//! taken only when someone waits, for bookkeeping, never across an await. A
//! waiter that times out or is dropped leaves the queue.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
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
    shared: Arc<Shared>,
}

/// The count of permits out is an atomic: while nobody waits, a permit is
/// taken and given back with one atomic step each, no lock. The queue and
/// its bookkeeping sit behind the lock, taken only when someone waits.
#[derive(Debug)]
struct Shared {
    max: AtomicUsize,
    in_use: AtomicUsize,
    /// The queue's length, read without the lock.
    waiting: AtomicUsize,
    queue: Mutex<Queue>,
}

#[derive(Debug)]
struct Queue {
    max_queue: usize,
    /// Waiters in arrival order (ids ascend), with their wakers once polled.
    waiters: VecDeque<(u64, Option<Waker>)>,
    /// Waiters handed a permit they have not picked up yet.
    granted: Vec<u64>,
    next_id: u64,
}

impl Shared {
    /// Takes a permit if fewer than `max` are out.
    fn try_take(&self) -> bool {
        let max = self.max.load(Ordering::SeqCst);
        self.in_use
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| (n < max).then_some(n + 1))
            .is_ok()
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Hands free permits to the first waiters; returns their wakers, to be
    /// woken once the lock is let go.
    fn grant(&self, q: &mut Queue) -> Vec<Waker> {
        let mut woken = Vec::new();
        while !q.waiters.is_empty() && self.try_take() {
            if let Some((id, waker)) = q.waiters.pop_front() {
                q.granted.push(id);
                woken.extend(waker);
            }
        }
        self.waiting.store(q.waiters.len(), Ordering::SeqCst);
        woken
    }

    /// Gives back one permit; a waiter, if any, gets it.
    fn release(&self) {
        self.in_use.fetch_sub(1, Ordering::SeqCst);
        // Seen after the count went down: a waiter that queued before it is
        // granted here, one that queues after it finds the permit itself.
        if self.waiting.load(Ordering::SeqCst) > 0 {
            let woken = {
                let mut q = self.lock();
                self.grant(&mut q)
            };
            woken.into_iter().for_each(Waker::wake);
        }
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
            shared: Arc::new(Shared {
                max: AtomicUsize::new(max),
                in_use: AtomicUsize::new(0),
                waiting: AtomicUsize::new(0),
                queue: Mutex::new(Queue {
                    max_queue,
                    waiters: VecDeque::new(),
                    granted: Vec::new(),
                    next_id: 0,
                }),
            }),
        }
    }

    fn permit(&self) -> Permit {
        Permit {
            shared: Arc::clone(&self.shared),
        }
    }

    /// A permit: at once while fewer than `max` are out and nobody waits,
    /// else after the waiters before it, within `queue_timeout`. The future
    /// takes its place in the queue when first polled.
    pub async fn acquire(&self, queue_timeout: Duration) -> Result<Permit, QueueError> {
        let shared = &self.shared;
        if shared.waiting.load(Ordering::SeqCst) == 0 && shared.try_take() {
            return Ok(self.permit());
        }
        let (id, woken) = {
            let mut q = shared.lock();
            if q.waiters.is_empty() && shared.try_take() {
                return Ok(self.permit());
            }
            if q.waiters.len() >= q.max_queue {
                return Err(QueueError::Full);
            }
            let id = q.next_id;
            q.next_id += 1;
            q.waiters.push_back((id, None));
            // A permit given back since the try above finds no waiter
            // counted yet: hand it out now.
            (id, shared.grant(&mut q))
        };
        woken.into_iter().for_each(Waker::wake);
        let waiter = Waiter {
            shared: Arc::clone(shared),
            id,
            done: false,
        };
        tokio::time::timeout(queue_timeout, waiter)
            .await
            .map_err(|_| QueueError::TimedOut)
    }

    /// Changes the cap; waiters get the permits a raise frees at once.
    pub fn set_max(&self, max: usize) {
        self.shared.max.store(max, Ordering::SeqCst);
        let woken = {
            let mut q = self.shared.lock();
            self.shared.grant(&mut q)
        };
        woken.into_iter().for_each(Waker::wake);
    }

    /// The cap.
    pub fn max(&self) -> usize {
        self.shared.max.load(Ordering::Relaxed)
    }

    /// Permits out now.
    pub fn in_use(&self) -> usize {
        self.shared.in_use.load(Ordering::Relaxed)
    }

    /// Waiters now.
    pub fn queued(&self) -> usize {
        self.shared.waiting.load(Ordering::Relaxed)
    }
}

/// One request in flight on the backend; dropping it frees the place.
#[derive(Debug)]
pub struct Permit {
    shared: Arc<Shared>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.shared.release();
    }
}

/// A place in the queue.
struct Waiter {
    shared: Arc<Shared>,
    id: u64,
    done: bool,
}

impl Future for Waiter {
    type Output = Permit;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Permit> {
        let this = &mut *self;
        let mut q = this.shared.lock();
        if let Some(i) = q.granted.iter().position(|&g| g == this.id) {
            q.granted.swap_remove(i);
            drop(q);
            this.done = true;
            return Poll::Ready(Permit {
                shared: Arc::clone(&this.shared),
            });
        }
        if let Ok(i) = q.waiters.binary_search_by_key(&this.id, |e| e.0) {
            match &mut q.waiters[i].1 {
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
        let mut q = self.shared.lock();
        if let Some(i) = q.granted.iter().position(|&g| g == self.id) {
            // Granted but never picked up: pass the permit on.
            q.granted.swap_remove(i);
            drop(q);
            self.shared.release();
        } else if let Ok(i) = q.waiters.binary_search_by_key(&self.id, |e| e.0) {
            q.waiters.remove(i);
            self.shared.waiting.store(q.waiters.len(), Ordering::SeqCst);
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

    #[test]
    fn threads_racing_for_two_permits_never_hold_three_and_all_get_theirs() {
        let limit = ConnLimit::with_queue(2, 64);
        let holding = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (limit, holding, most) = (limit.clone(), Arc::clone(&holding), Arc::clone(&most));
                std::thread::spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .unwrap();
                    rt.block_on(async {
                        for _ in 0..2000 {
                            let permit = limit.acquire(LONG).await.expect("a permit within the bound");
                            let now = holding.fetch_add(1, Ordering::SeqCst) + 1;
                            most.fetch_max(now, Ordering::SeqCst);
                            tokio::task::yield_now().await;
                            holding.fetch_sub(1, Ordering::SeqCst);
                            drop(permit);
                        }
                    });
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert!(
            most.load(Ordering::SeqCst) <= 2,
            "{} held at once",
            most.load(Ordering::SeqCst)
        );
        assert_eq!((limit.in_use(), limit.queued()), (0, 0));
    }
}
