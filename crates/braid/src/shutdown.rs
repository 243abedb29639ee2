//! Shutdown on SIGINT/SIGTERM, passed to the daemons as a value so tests can trigger it too.

use tokio::sync::watch;

/// A receiver that completes when shutdown is requested. Cheap to clone.
#[derive(Clone)]
pub struct Shutdown(watch::Receiver<bool>);

/// The sending side.
pub struct Trigger(watch::Sender<bool>);

/// A linked trigger and receiver.
pub fn channel() -> (Trigger, Shutdown) {
    let (tx, rx) = watch::channel(false);
    (Trigger(tx), Shutdown(rx))
}

impl Trigger {
    /// Asks every holder of the receiver to stop.
    pub fn fire(&self) {
        let _ = self.0.send(true);
    }
}

impl Shutdown {
    /// Completes once shutdown was requested (or the trigger was dropped).
    pub async fn wait(&mut self) {
        let _ = self.0.wait_for(|v| *v).await;
    }

    /// Whether shutdown was requested already.
    pub fn requested(&self) -> bool {
        *self.0.borrow()
    }
}

/// A receiver fired by the first SIGINT or SIGTERM.
pub fn on_signals() -> std::io::Result<Shutdown> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut int = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    let (trigger, shutdown) = channel();
    tokio::spawn(async move {
        tokio::select! {
            _ = int.recv() => tracing::info!("SIGINT: shutting down"),
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        }
        crate::systemd::notify("STOPPING=1");
        trigger.fire();
        // Keep the sender alive so receivers see `true`, not a closed channel.
        std::future::pending::<()>().await;
    });
    Ok(shutdown)
}
