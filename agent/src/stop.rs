//! Asking a job to stop, and waiting unless asked (as Moonfire NVR's `base/shutdown.rs`).
//!
//! One rule for every loop: a job stops when its [`Stopper`] says so or is dropped (its owner
//! is gone, so nobody could ask any more). Waits go through [`Stop::sleep_or_stop`] on the
//! job's [`Clock`], so the loop runs on simulated time in tests.

use std::time::Duration;

use tokio::sync::watch;

use crate::clock::Clock;

/// The asking side: [`Stopper::stop`] or dropping it stops every [`Stop`] made from it.
#[derive(Debug)]
pub struct Stopper(watch::Sender<bool>);

/// The job's side; cheap to clone.
#[derive(Clone, Debug)]
pub struct Stop(watch::Receiver<bool>);

/// A new pair.
pub fn channel() -> (Stopper, Stop) {
    let (tx, rx) = watch::channel(false);
    (Stopper(tx), Stop(rx))
}

impl Stopper {
    pub fn stop(&self) {
        self.0.send_replace(true);
    }

    /// Resolves when every [`Stop`] is dropped (every job that listens has ended).
    pub async fn closed(&self) {
        self.0.closed().await
    }
}

impl Stop {
    /// Whether stopping was asked for (or the stopper is gone).
    pub fn is_stopped(&self) -> bool {
        *self.0.borrow() || self.0.has_changed().is_err()
    }

    /// Resolves once stopping is asked for (or the stopper is gone).
    pub async fn stopped(&mut self) {
        let _ = self.0.wait_for(|s| *s).await;
    }

    /// Waits `d` on `clock` unless stopped first; true when stopped.
    pub async fn sleep_or_stop(&mut self, clock: &dyn Clock, d: Duration) -> bool {
        if self.is_stopped() {
            return true;
        }
        tokio::select! {
            () = clock.sleep(d) => self.is_stopped(),
            () = self.stopped() => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{PausedClock, SimulatedClock};

    fn clock() -> SimulatedClock {
        SimulatedClock::new("2026-03-29T00:30:00Z".parse().unwrap())
    }

    #[tokio::test]
    async fn sleeps_when_not_stopped() {
        let (_stopper, mut stop) = channel();
        let c = clock();
        assert!(!stop.sleep_or_stop(&c, Duration::from_secs(7)).await);
        assert_eq!(c.monotonic(), Duration::from_secs(7));
    }

    #[tokio::test]
    async fn asked_or_dropped_both_stop() {
        let (stopper, mut stop) = channel();
        stopper.stop();
        assert!(stop.is_stopped());
        assert!(stop.sleep_or_stop(&clock(), Duration::from_secs(7)).await);
        let (stopper, mut stop) = channel();
        drop(stopper);
        assert!(stop.is_stopped());
        assert!(stop.sleep_or_stop(&clock(), Duration::from_secs(7)).await);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stop_during_the_sleep_ends_it() {
        let (stopper, mut stop) = channel();
        let c = PausedClock::new("2026-03-29T00:30:00Z".parse().unwrap());
        let c2 = c.clone();
        let waiter =
            tokio::spawn(async move { stop.sleep_or_stop(&c2, Duration::from_secs(3600)).await });
        c.sleep(Duration::from_secs(10)).await;
        stopper.stop();
        assert!(waiter.await.unwrap());
        assert!(c.monotonic() < Duration::from_secs(3600));
    }
}
