//! A periodic wake-up on a [`Clock`], as `tokio::time::interval` with
//! `MissedTickBehavior::Delay` (the first tick at once, later ones on schedule; after a tick
//! handled late, the next a period later), so periodic jobs run on simulated time in tests.

use std::sync::Arc;
use std::time::Duration;

use crate::clock::Clock;

/// How late a tick may be and still keep the schedule (tokio's interval allows the same).
const LATE: Duration = Duration::from_millis(5);

pub struct Ticker {
    clock: Arc<dyn Clock>,
    period: Duration,
    /// Monotonic time of the next tick.
    due: Duration,
}

impl Ticker {
    /// Ticks every `period` (at least a millisecond), the first at once.
    pub fn new(clock: Arc<dyn Clock>, period: Duration) -> Ticker {
        Ticker {
            due: clock.monotonic(),
            clock,
            period: period.max(Duration::from_millis(1)),
        }
    }

    /// Waits for the next tick. Cancel-safe: a wait dropped before its end leaves the schedule
    /// as it was.
    pub async fn tick(&mut self) {
        let wait = self.due.saturating_sub(self.clock.monotonic());
        if !wait.is_zero() {
            self.clock.sleep(wait).await;
        }
        let now = self.clock.monotonic();
        self.due = if now > self.due + LATE {
            now + self.period
        } else {
            self.due + self.period
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::SimulatedClock;

    #[tokio::test]
    async fn keeps_its_schedule_unless_late() {
        let clock = SimulatedClock::new("2026-03-29T00:30:00Z".parse().unwrap());
        let mut t = Ticker::new(Arc::new(clock.clone()), Duration::from_secs(10));
        let mut at = Vec::new();
        for _ in 0..3 {
            t.tick().await;
            at.push(clock.monotonic().as_secs());
            clock.advance(Duration::from_secs(3));
        }
        assert_eq!(at, [0, 10, 20], "handling time does not shift the schedule");
        clock.advance(Duration::from_secs(30));
        t.tick().await;
        t.tick().await;
        assert_eq!(
            clock.monotonic().as_secs(),
            63,
            "a late tick at once, the next a period after it"
        );
    }
}
