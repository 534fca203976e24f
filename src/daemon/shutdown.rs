//! Graceful shutdown: SIGTERM or SIGINT stops new work; whoever holds a
//! [`Shutdown`] finishes what it is doing and returns.

use tokio::sync::watch;

/// Fires a shutdown; held by the code that listens for signals.
pub struct Trigger {
    tx: watch::Sender<bool>,
}

/// A handle to learn that shutdown has begun; cheap to clone.
#[derive(Clone)]
pub struct Shutdown {
    rx: watch::Receiver<bool>,
}

/// A connected trigger and handle.
pub fn channel() -> (Trigger, Shutdown) {
    let (tx, rx) = watch::channel(false);
    (Trigger { tx }, Shutdown { rx })
}

impl Trigger {
    pub fn fire(&self) {
        self.tx.send_replace(true);
    }
}

impl Shutdown {
    pub fn is_started(&self) -> bool {
        *self.rx.borrow()
    }

    /// Resolves once shutdown has begun (at once if it already has; also when the
    /// trigger is gone, since nobody can fire it any more).
    pub async fn wait(&mut self) {
        let _ = self.rx.wait_for(|started| *started).await;
    }
}

/// Waits for SIGTERM (what Kubernetes sends) or SIGINT (Ctrl-C).
pub async fn signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waiters_wake_when_fired() {
        let (trigger, shutdown) = channel();
        let mut waiter = shutdown.clone();
        let task = tokio::spawn(async move { waiter.wait().await });
        assert!(!shutdown.is_started());
        trigger.fire();
        task.await.expect("waiter finished");
        assert!(shutdown.is_started());
    }
}
