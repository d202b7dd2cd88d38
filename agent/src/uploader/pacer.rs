//! Pacing to the PutMedia service limits: at most 5 fragments/s and 12.5 MB/s per stream.
//!
//! Two token buckets on monotonic time. A reservation may overdraw a bucket (a 10 MB fragment
//! is still sent), and the caller then waits for the returned delay before sending, so the
//! long-run rate never exceeds the limit and nothing is ever refused. The fragment bucket holds
//! a single token: fragments go out at least 200 ms apart, so a backlog is never sent as a burst
//! the service would count against the per-second limit. Pure: time comes from the caller.

use std::time::Duration;

/// The service limits (PutMedia page): fragments per second and bytes per second per stream.
pub const MAX_FRAGMENTS_PER_SEC: f64 = 5.0;
pub const MAX_BYTES_PER_SEC: f64 = 12_500_000.0;
/// Pacing runs 1 % under the limits: the service counts arrival times, which network jitter
/// can bunch closer together than the sending times were.
const MARGIN: f64 = 0.99;
/// Burst allowance of the byte bucket: 64 KiB, so the rate holds over any window longer than
/// a few milliseconds and not just on average.
const BYTE_BURST: f64 = 65_536.0;

#[derive(Clone, Debug)]
pub(super) struct Bucket {
    rate: f64,
    capacity: f64,
    tokens: f64,
    last: Duration,
}

impl Bucket {
    pub(super) fn new(rate: f64, capacity: f64, now: Duration) -> Self {
        Bucket {
            rate,
            capacity,
            tokens: capacity,
            last: now,
        }
    }

    /// Takes `n` tokens (possibly overdrawing) and returns how long to wait before using them.
    pub(super) fn reserve(&mut self, now: Duration, n: f64) -> Duration {
        if now > self.last {
            let refill = (now - self.last).as_secs_f64() * self.rate;
            self.tokens = (self.tokens + refill).min(self.capacity);
            self.last = now;
        }
        self.tokens -= n;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.rate)
        }
    }
}

/// Per-stream pacer; `None` limits (benchmarks) make every delay zero.
#[derive(Clone, Debug)]
pub struct Pacer {
    buckets: Option<(Bucket, Bucket)>,
}

impl Pacer {
    /// Pacing to the service limits, starting at monotonic time `now`.
    pub fn new(now: Duration) -> Self {
        Self::with_limits(
            now,
            MAX_FRAGMENTS_PER_SEC * MARGIN,
            MAX_BYTES_PER_SEC * MARGIN,
        )
    }

    pub fn with_limits(now: Duration, fragments_per_sec: f64, bytes_per_sec: f64) -> Self {
        Pacer {
            buckets: Some((
                Bucket::new(fragments_per_sec, 1.0, now),
                Bucket::new(bytes_per_sec, BYTE_BURST.min(bytes_per_sec), now),
            )),
        }
    }

    /// No pacing at all (benchmarks only: the service would throttle).
    pub fn unlimited() -> Self {
        Pacer { buckets: None }
    }

    /// Call before starting a fragment; wait the returned delay before its first byte.
    pub fn fragment(&mut self, now: Duration) -> Duration {
        match &mut self.buckets {
            Some((f, _)) => f.reserve(now, 1.0),
            None => Duration::ZERO,
        }
    }

    /// Call before sending `n` bytes; wait the returned delay before sending them.
    pub fn bytes(&mut self, now: Duration, n: u64) -> Duration {
        match &mut self.buckets {
            Some((_, b)) => b.reserve(now, n as f64),
            None => Duration::ZERO,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{Clock, SimulatedClock};

    fn clock() -> SimulatedClock {
        SimulatedClock::new("2026-01-01T00:00:00Z".parse().unwrap())
    }

    /// Sends `count` fragments of `size` bytes in 256 KiB chunks as the sender does (waiting each
    /// delay on the simulated clock) and returns the start time of each fragment.
    fn simulate(p: &mut Pacer, c: &SimulatedClock, count: usize, size: u64) -> Vec<Duration> {
        let mut starts = Vec::new();
        for _ in 0..count {
            let d = p.fragment(c.monotonic());
            c.advance(d);
            starts.push(c.monotonic());
            let mut left = size;
            while left > 0 {
                let n = left.min(256 << 10);
                let d = p.bytes(c.monotonic(), n);
                c.advance(d);
                left -= n;
            }
        }
        starts
    }

    #[test]
    fn small_fragments_go_out_at_five_per_second() {
        let c = clock();
        let mut p = Pacer::new(c.monotonic());
        let starts = simulate(&mut p, &c, 26, 10_000);
        assert_eq!(
            starts[0],
            Duration::ZERO,
            "the first fragment is not delayed"
        );
        for w in starts.windows(2) {
            assert!(w[1] - w[0] >= Duration::from_millis(200), "{w:?}");
        }
        let span = (*starts.last().unwrap() - starts[0]).as_secs_f64();
        let rate = (starts.len() - 1) as f64 / span;
        assert!(rate <= 5.0 && rate > 4.9, "rate {rate}");
    }

    #[test]
    fn large_fragments_are_held_to_the_byte_rate() {
        let c = clock();
        let mut p = Pacer::new(c.monotonic());
        let size = 10_000_000u64;
        let count = 10;
        simulate(&mut p, &c, count, size);
        let secs = c.monotonic().as_secs_f64();
        let rate = (size * count as u64) as f64 / secs;
        // The initial 64 KiB burst stays within the 1 % margin.
        assert!(rate <= MAX_BYTES_PER_SEC, "rate {rate}");
        assert!(rate > MAX_BYTES_PER_SEC * 0.95, "rate {rate}");
    }

    #[test]
    fn idle_time_does_not_bank_a_burst() {
        let c = clock();
        let mut p = Pacer::new(c.monotonic());
        c.advance(Duration::from_secs(3600));
        let starts = simulate(&mut p, &c, 3, 1000);
        assert!(starts[1] - starts[0] >= Duration::from_millis(199));
        assert!(starts[2] - starts[1] >= Duration::from_millis(199));
    }

    #[test]
    fn unlimited_never_waits() {
        let c = clock();
        let mut p = Pacer::unlimited();
        simulate(&mut p, &c, 100, 50_000_000);
        assert_eq!(c.monotonic(), Duration::ZERO);
    }
}
