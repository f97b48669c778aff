//! New client connections spread over the proxy threads.
//!
//! Every proxy thread accepts from the one listening socket, and a burst of
//! new connections goes to whichever thread is awake first: it accepts the
//! whole burst while the others sleep (measured with wrk's 64 connections
//! and two threads: 59, 61 and 63 of them on one thread), and that thread
//! then does nearly all the work. So the thread that accepts a connection
//! hands it to the thread with the fewest open ones, as HAProxy does with
//! its per-thread accept queues. A connection moves at most once, before
//! its first byte is read; its requests then stay on that thread.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::mpsc;

use super::{OpenConnection, OpenHere};

/// A connection on its way to another proxy thread, counted there already.
pub(super) struct Handoff {
    pub stream: std::net::TcpStream,
    pub peer: SocketAddr,
    pub counted: OpenConnection,
}

/// One proxy thread's tally of open connections and its inbox.
struct Lane {
    open: Arc<OpenHere>,
    inbox: mpsc::UnboundedSender<Handoff>,
}

/// Every proxy thread's lane.
pub(super) struct Lanes {
    lanes: Box<[Lane]>,
}

impl Lanes {
    /// Lanes for `threads` proxy threads, and each one's inbox.
    pub fn new(threads: usize) -> (Arc<Self>, Vec<mpsc::UnboundedReceiver<Handoff>>) {
        let (lanes, inboxes): (Vec<Lane>, Vec<_>) = (0..threads.max(1))
            .map(|_| {
                let (tx, rx) = mpsc::unbounded_channel();
                (
                    Lane {
                        open: Arc::default(),
                        inbox: tx,
                    },
                    rx,
                )
            })
            .unzip();
        (
            Arc::new(Lanes {
                lanes: lanes.into_boxed_slice(),
            }),
            inboxes,
        )
    }

    /// Thread `i`'s tally of open connections.
    pub fn open(&self, i: usize) -> &Arc<OpenHere> {
        &self.lanes[i].open
    }

    /// Open connections per thread.
    pub fn counts(&self) -> Vec<usize> {
        self.lanes
            .iter()
            .map(|l| l.open.count.load(Ordering::Relaxed))
            .collect()
    }

    /// The thread with the fewest open connections; `me` on a tie.
    pub fn fewest_open(&self, me: usize) -> usize {
        let count = |i: usize| self.lanes[i].open.count.load(Ordering::Relaxed);
        (0..self.lanes.len()).fold(me, |best, i| if count(i) < count(best) { i } else { best })
    }

    /// Sends a connection to thread `to`; gives it back if that thread has
    /// stopped taking connections (it is shutting down).
    pub fn hand(&self, to: usize, handoff: Handoff) -> Result<(), Handoff> {
        self.lanes[to].inbox.send(handoff).map_err(|e| e.0)
    }
}
