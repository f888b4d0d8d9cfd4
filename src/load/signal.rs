//! Ctrl-C and SIGTERM: a signal during a run ends it early, the results so far reported and
//! written (exit 130 or 143); a signal before the run ends `load` at once, nothing measured.

use anyhow::Result;
use tokio::sync::watch;

/// A signal that ends a run early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// Ctrl-C (SIGINT).
    Interrupt,
    /// SIGTERM: CI cancellation, `timeout`, `docker stop`.
    Terminate,
}

/// Tells a run that a signal came ([`Signal::watch`]); `None` until one does.
pub type Interrupt = watch::Receiver<Option<Signal>>;

impl Signal {
    /// The shell's code for a process ended by this signal (128 + its number): 130 or 143.
    pub fn exit_code(self) -> u8 {
        match self {
            Signal::Interrupt => 130,
            Signal::Terminate => 143,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Signal::Interrupt => "SIGINT",
            Signal::Terminate => "SIGTERM",
        }
    }

    /// Handles Ctrl-C and SIGTERM from now on (called within a runtime): the first one is sent on
    /// the returned channel, and the process goes on to report what it measured.
    pub fn watch() -> std::io::Result<Interrupt> {
        use tokio::signal::unix::{SignalKind, signal};
        let mut interrupt = signal(SignalKind::interrupt())?;
        let mut terminate = signal(SignalKind::terminate())?;
        let (tx, rx) = watch::channel(None);
        tokio::spawn(async move {
            let which = tokio::select! {
                _ = interrupt.recv() => Signal::Interrupt,
                _ = terminate.recv() => Signal::Terminate,
            };
            let _ = tx.send(Some(which));
        });
        Ok(rx)
    }
}

/// Waits for a signal (forever, if none can come any more).
pub async fn signalled(mut rx: Interrupt) -> Signal {
    let signal = rx.wait_for(Option::is_some).await.ok().and_then(|s| *s);
    match signal {
        Some(signal) => signal,
        None => std::future::pending().await,
    }
}

/// A signal that came before the run started: nothing was measured, nothing is written.
#[derive(Debug, thiserror::Error)]
#[error("interrupted ({}) before the run started: nothing was measured", .0.name())]
pub struct InterruptedBeforeRun(pub Signal);

/// Runs `step` of the preparation unless a signal comes first (then nothing was measured).
pub async fn before_run<T>(
    interrupt: &Option<Interrupt>,
    step: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    let Some(rx) = interrupt.clone() else {
        return step.await;
    };
    tokio::select! {
        result = step => result,
        signal = signalled(rx) => Err(InterruptedBeforeRun(signal).into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_are_the_shells() {
        assert_eq!(Signal::Interrupt.exit_code(), 130);
        assert_eq!(Signal::Terminate.exit_code(), 143);
        assert_eq!(
            InterruptedBeforeRun(Signal::Terminate).to_string(),
            "interrupted (SIGTERM) before the run started: nothing was measured"
        );
    }

    #[tokio::test]
    async fn a_signal_before_the_run_stops_the_preparation() {
        let (tx, rx) = watch::channel(None);
        tx.send(Some(Signal::Interrupt)).unwrap();
        let e = before_run(&Some(rx), std::future::pending::<Result<()>>())
            .await
            .unwrap_err();
        assert!(matches!(
            e.downcast_ref::<InterruptedBeforeRun>(),
            Some(InterruptedBeforeRun(Signal::Interrupt))
        ));
        assert_eq!(before_run(&None, async { Ok(7) }).await.unwrap(), 7);
    }
}
