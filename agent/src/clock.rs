//! Time as a dependency, so schedules, retention and backoff can be tested with a simulated
//! clock (as Moonfire NVR's `base/clock.rs`).
//!
//! Wall-clock time (`now`) is what schedules, retention and fragment timecodes are measured in;
//! it can jump (NTP step, suspend). Monotonic time (`monotonic`) never goes backwards and is what
//! timeouts and backoff are measured in.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;

pub trait Clock: Send + Sync + 'static {
    /// Wall-clock time.
    fn now(&self) -> Timestamp;
    /// Time since an arbitrary fixed origin; never decreases.
    fn monotonic(&self) -> Duration;
}

/// The system clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct RealClock;

impl Clock for RealClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }

    fn monotonic(&self) -> Duration {
        static ORIGIN: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
        ORIGIN.get_or_init(std::time::Instant::now).elapsed()
    }
}

/// A clock that moves only when told to; `jump` moves the wall clock alone, as an NTP step does.
#[derive(Clone, Debug)]
pub struct SimulatedClock(Arc<Mutex<SimulatedState>>);

#[derive(Debug)]
struct SimulatedState {
    wall: Timestamp,
    mono: Duration,
}

impl SimulatedClock {
    pub fn new(start: Timestamp) -> Self {
        SimulatedClock(Arc::new(Mutex::new(SimulatedState {
            wall: start,
            mono: Duration::ZERO,
        })))
    }

    /// Lets time pass: both clocks move forward by `d`.
    pub fn advance(&self, d: Duration) {
        let mut s = self.0.lock().expect("clock lock");
        s.wall = s
            .wall
            .checked_add(jiff::SignedDuration::try_from(d).expect("duration in range"))
            .expect("timestamp in range");
        s.mono += d;
    }

    /// Steps the wall clock to `to` (forwards or backwards) without monotonic time passing.
    pub fn jump(&self, to: Timestamp) {
        self.0.lock().expect("clock lock").wall = to;
    }
}

impl Clock for SimulatedClock {
    fn now(&self) -> Timestamp {
        self.0.lock().expect("clock lock").wall
    }

    fn monotonic(&self) -> Duration {
        self.0.lock().expect("clock lock").mono
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simulated_clock_advances_and_jumps() {
        let start: Timestamp = "2026-03-29T00:30:00Z".parse().unwrap();
        let c = SimulatedClock::new(start);
        c.advance(Duration::from_secs(90));
        assert_eq!(
            c.now(),
            "2026-03-29T00:31:30Z".parse::<Timestamp>().unwrap()
        );
        assert_eq!(c.monotonic(), Duration::from_secs(90));
        c.jump("2026-03-28T00:00:00Z".parse().unwrap());
        assert_eq!(
            c.now(),
            "2026-03-28T00:00:00Z".parse::<Timestamp>().unwrap()
        );
        assert_eq!(
            c.monotonic(),
            Duration::from_secs(90),
            "a wall-clock step is not elapsed time"
        );
    }

    #[test]
    fn real_clock_is_monotonic() {
        let a = RealClock.monotonic();
        let b = RealClock.monotonic();
        assert!(b >= a);
    }
}
