//! One shutdown signal that every server, stream and task honours.

use tokio::sync::watch;

/// Starts the shutdown; clones share it.
#[derive(Debug, Clone)]
pub struct Shutdown {
    tx: std::sync::Arc<watch::Sender<bool>>,
}

/// Learns of the shutdown; clone one per task.
#[derive(Debug, Clone)]
pub struct ShutdownSignal {
    rx: watch::Receiver<bool>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Shutdown::new()
    }
}

impl Shutdown {
    /// A signal not yet given.
    pub fn new() -> Self {
        let (tx, _) = watch::channel(false);
        Shutdown {
            tx: std::sync::Arc::new(tx),
        }
    }

    /// Gives the signal (again is harmless).
    pub fn trigger(&self) {
        self.tx.send_replace(true);
    }

    /// Whether it has been given.
    pub fn is_triggered(&self) -> bool {
        *self.tx.borrow()
    }

    /// A receiver of the signal.
    pub fn signal(&self) -> ShutdownSignal {
        ShutdownSignal {
            rx: self.tx.subscribe(),
        }
    }
}

impl ShutdownSignal {
    /// Resolves once the shutdown has started (at once if it has).
    pub async fn stopped(&mut self) {
        let _ = self.rx.wait_for(|s| *s).await;
    }

    /// Whether the shutdown has started.
    pub fn is_stopped(&self) -> bool {
        *self.rx.borrow()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_receiver_learns_of_the_shutdown() {
        let shutdown = Shutdown::new();
        let mut a = shutdown.signal();
        let b = shutdown.signal();
        assert!(!b.is_stopped());
        let waiter = tokio::spawn(async move { a.stopped().await });
        shutdown.trigger();
        waiter.await.unwrap();
        assert!(b.is_stopped());
        // A receiver made after the fact resolves at once.
        shutdown.signal().stopped().await;
    }
}
