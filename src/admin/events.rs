//! `/api/events`: newline-delimited JSON events, streamed. Subscribers are
//! capped; each stream wakes at most ten times a second and writes what
//! arrived as one chunk, with JSON lines serialized once for all streams;
//! every stream ends at shutdown.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::stream::{self, Stream};
use hyper::body::Frame;

use crate::bus::Subscription;
use crate::engine::Shared;
use crate::shutdown::ShutdownSignal;

/// The shortest time between two chunks of one stream.
const BATCH: Duration = Duration::from_millis(100);

/// Counts open streams against the cap.
#[derive(Debug, Default)]
pub struct Streams {
    open: AtomicUsize,
}

/// Holds one place under the cap until dropped.
#[derive(Debug)]
pub struct Place(Arc<Streams>);

impl Drop for Place {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Streams {
    /// A place for one more stream, or `None` when `max` are open.
    pub fn take(self: &Arc<Self>, max: usize) -> Option<Place> {
        self.open
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| (n < max).then_some(n + 1))
            .ok()
            .map(|_| Place(Arc::clone(self)))
    }

    /// Streams open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }
}

struct State {
    shared: Arc<Shared>,
    sub: Subscription,
    shutdown: ShutdownSignal,
    _place: Place,
    pending: Vec<Arc<crate::bus::Published>>,
    first: bool,
}

/// The stream of one subscriber's event lines.
pub fn stream(
    shared: Arc<Shared>,
    place: Place,
    shutdown: ShutdownSignal,
) -> impl Stream<Item = Result<Frame<Bytes>, Infallible>> + Send {
    let sub = shared.bus.subscribe();
    let state = State {
        shared,
        sub,
        shutdown,
        _place: place,
        pending: Vec::new(),
        first: true,
    };
    stream::unfold(state, |mut st| async move {
        if !st.first {
            tokio::select! {
                _ = tokio::time::sleep(BATCH) => {}
                _ = st.shutdown.stopped() => return None,
            }
        }
        st.first = false;
        let first = tokio::select! {
            e = st.sub.recv() => e?,
            _ = st.shutdown.stopped() => return None,
        };
        st.pending.push(first);
        st.sub.drain_into(&mut st.pending);
        let topo = st.shared.router.topology();
        let mut chunk = BytesMut::new();
        for e in st.pending.drain(..) {
            chunk.extend_from_slice(&e.json_line(&topo));
        }
        Some((Ok(Frame::data(chunk.freeze())), st))
    })
}
