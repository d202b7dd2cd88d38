//! The one retry delay of the agent: exponential from `min` to `max`, each wait drawn from
//! `[d * (1 - jitter), d]` so that streams failing together do not retry in step.

use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Backoff {
    pub min: Duration,
    pub max: Duration,
    /// Fraction of each delay that is random, 0 (none) to 1.
    pub jitter: f64,
}

impl Backoff {
    /// Restarts of a crashed job, reconnects to a camera: 1 s doubling to 30 s, half random.
    pub const RESTART: Backoff = Backoff {
        min: Duration::from_secs(1),
        max: Duration::from_secs(30),
        jitter: 0.5,
    };

    pub fn start(self) -> Retry {
        Retry {
            policy: self,
            next: self.min,
        }
    }
}

/// One run of retries under a [`Backoff`].
#[derive(Clone, Debug)]
pub struct Retry {
    policy: Backoff,
    next: Duration,
}

impl Retry {
    /// The wait before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.policy.max);
        let jitter = self.policy.jitter.clamp(0.0, 1.0);
        let r = (getrandom::u64().unwrap_or(0) % 1_000_001) as f64 / 1_000_000.0;
        d.mul_f64(1.0 - jitter * r)
    }

    /// An attempt succeeded: the next failure waits `min` again.
    pub fn reset(&mut self) {
        self.next = self.policy.min;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_to_the_cap_within_the_jitter() {
        let mut r = Backoff::RESTART.start();
        let caps = [1, 2, 4, 8, 16, 30, 30];
        for cap in caps {
            let d = r.next_delay();
            let cap = Duration::from_secs(cap);
            assert!(
                d <= cap && d >= cap / 2,
                "{d:?} outside [{:?}, {cap:?}]",
                cap / 2
            );
        }
        r.reset();
        assert!(r.next_delay() <= Duration::from_secs(1));
    }

    #[test]
    fn no_jitter_is_exact() {
        let mut r = Backoff {
            min: Duration::from_millis(100),
            max: Duration::from_millis(250),
            jitter: 0.0,
        }
        .start();
        let got: Vec<_> = (0..4).map(|_| r.next_delay().as_millis()).collect();
        assert_eq!(got, [100, 200, 250, 250]);
    }
}
