//! The agent's upload bandwidth budget (`uploader.max_kbps`, `uploader.bandwidth_windows`):
//! one token bucket that every stream's sessions draw from, byte by byte as they send, at the
//! cap in force at the time. Pure: times come from the caller.
//!
//! No crate fits: governor and the like limit cells per period without an overdraft or a rate
//! that changes with a schedule; the per-stream [`super::pacer`] bucket is reused.
//!
//! Fairness: each sender takes a chunk worth [`CHUNK_SECS`] of the rate at a time and waits
//! for it before taking the next, so the streams take turns chunk by chunk and none waits more
//! than one chunk per other stream. The bucket holds one chunk, so over any window of a second
//! or more the bytes sent stay within a few percent of the cap.

use std::time::Duration;

use jiff::Timestamp;

use super::pacer::Bucket;
use crate::schedule::Windows;

/// A sender takes this much of the rate at a time (50 ms of sending).
pub const CHUNK_SECS: f64 = 0.05;
/// Bounds of a chunk, whatever the rate.
const MIN_CHUNK: usize = 1024;
pub const MAX_CHUNK: usize = 256 << 10;

/// A window with a cap of its own (e.g. 2000 kbit/s on weekdays 08:00-18:00).
#[derive(Clone, Debug)]
pub struct CapWindow {
    pub windows: Windows,
    pub kbps: u32,
}

/// The caps: `default_kbps` (0: none) outside the windows; inside, the smallest cap of the
/// windows open.
#[derive(Clone, Debug, Default)]
pub struct Caps {
    pub default_kbps: u32,
    pub windows: Vec<CapWindow>,
}

impl Caps {
    pub fn is_unlimited(&self) -> bool {
        self.default_kbps == 0 && self.windows.is_empty()
    }

    /// The cap in bytes per second at `t` (`None`: none), and when it may change next.
    pub fn at(&self, t: Timestamp) -> (Option<f64>, Option<Timestamp>) {
        let mut cap: Option<u32> = None;
        let mut changes: Option<Timestamp> = None;
        let mut sooner = |at: Timestamp| {
            changes = Some(changes.map_or(at, |c| c.min(at)));
        };
        for w in &self.windows {
            match w.windows.window_at(t) {
                Some(open) => {
                    cap = Some(cap.map_or(w.kbps, |c| c.min(w.kbps)));
                    sooner(open.end);
                }
                None => {
                    if let Some(next) = w.windows.next_window_after(t) {
                        sooner(next.start);
                    }
                }
            }
        }
        let kbps = cap.or((self.default_kbps > 0).then_some(self.default_kbps));
        (kbps.map(|k| f64::from(k) * 1000.0 / 8.0), changes)
    }
}

/// The shared bucket, at the rate of the cap in force.
#[derive(Debug)]
pub struct Budget {
    caps: Caps,
    bucket: Option<Bucket>,
    rate: Option<f64>,
    /// When the cap is to be looked up again (wall time).
    recheck: Option<Timestamp>,
    looked: bool,
}

impl Budget {
    pub fn new(caps: Caps) -> Budget {
        Budget {
            caps,
            bucket: None,
            rate: None,
            recheck: None,
            looked: false,
        }
    }

    /// Whether any cap may ever apply (without one, senders skip the budget).
    pub fn is_unlimited(&self) -> bool {
        self.caps.is_unlimited()
    }

    /// The cap in force (bytes per second), as of the last take.
    pub fn rate(&self) -> Option<f64> {
        self.rate
    }

    /// How many bytes a sender takes at a time at `wall`.
    pub fn chunk(&mut self, wall: Timestamp, mono: Duration) -> usize {
        self.refresh(wall, mono);
        match self.rate {
            Some(r) => ((r * CHUNK_SECS) as usize).clamp(MIN_CHUNK, MAX_CHUNK),
            None => MAX_CHUNK,
        }
    }

    /// Takes `n` bytes (possibly overdrawing) and returns how long to wait before sending them.
    pub fn take(&mut self, wall: Timestamp, mono: Duration, n: usize) -> Duration {
        self.refresh(wall, mono);
        match &mut self.bucket {
            Some(b) => b.reserve(mono, n as f64),
            None => Duration::ZERO,
        }
    }

    fn refresh(&mut self, wall: Timestamp, mono: Duration) {
        if self.looked && self.recheck.is_none_or(|r| wall < r) {
            return;
        }
        let (rate, recheck) = self.caps.at(wall);
        self.looked = true;
        self.recheck = recheck;
        if rate == self.rate {
            return;
        }
        self.rate = rate;
        self.bucket = rate.map(|r| {
            let capacity = (r * CHUNK_SECS).clamp(MIN_CHUNK as f64, MAX_CHUNK as f64);
            // A new cap starts full: what was owed under the old one is forgiven, at most one
            // chunk, so a switch never stalls a sender for long.
            Bucket::new(r, capacity, mono)
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::CronSchedule;

    const T0: &str = "2026-01-05T07:59:00Z";

    fn window(expr: &str, secs: u64, kbps: u32) -> CapWindow {
        CapWindow {
            windows: Windows::new(
                CronSchedule::parse(expr).unwrap(),
                Duration::from_secs(secs),
                jiff::tz::TimeZone::UTC,
            ),
            kbps,
        }
    }

    /// Sends `secs` seconds' worth of chunks as a sender does (waiting each delay), from wall
    /// time `start`; returns the bytes sent in each whole second.
    fn simulate(b: &mut Budget, start: Timestamp, secs: u64) -> Vec<u64> {
        let mut mono = Duration::ZERO;
        let mut per_sec = vec![0u64; secs as usize];
        while mono < Duration::from_secs(secs) {
            let wall = start + jiff::SignedDuration::try_from(mono).unwrap();
            let n = b.chunk(wall, mono);
            mono += b.take(wall, mono, n);
            if let Some(s) = per_sec.get_mut(mono.as_secs() as usize) {
                *s += n as u64;
            }
            // Sending takes a little time of its own.
            mono += Duration::from_micros(200);
        }
        per_sec
    }

    #[test]
    fn the_default_cap_holds_within_a_few_percent_every_ten_seconds() {
        let mut b = Budget::new(Caps {
            default_kbps: 2000,
            windows: vec![],
        });
        let per_sec = simulate(&mut b, T0.parse().unwrap(), 60);
        let want = 2000.0 * 1000.0 / 8.0 * 10.0;
        for w in per_sec.windows(10) {
            let got: u64 = w.iter().sum();
            assert!(
                (got as f64 - want).abs() / want < 0.05,
                "{got} against {want}"
            );
        }
    }

    #[test]
    fn a_window_has_its_own_cap_and_switches_at_its_edges() {
        // 08:00:00-08:00:30 every minute of hour 8 on weekdays: 400 kbit/s; else 4000.
        let caps = Caps {
            default_kbps: 4000,
            windows: vec![window("0 * 8 ? * MON-FRI", 30, 400)],
        };
        let t0: Timestamp = T0.parse().unwrap();
        let (rate, change) = caps.at(t0);
        assert_eq!(rate, Some(500_000.0));
        assert_eq!(change, Some("2026-01-05T08:00:00Z".parse().unwrap()));
        let inside: Timestamp = "2026-01-05T08:00:10Z".parse().unwrap();
        assert_eq!(
            caps.at(inside),
            (
                Some(50_000.0),
                Some("2026-01-05T08:00:30Z".parse().unwrap())
            )
        );
        let mut b = Budget::new(caps);
        let per_sec = simulate(&mut b, t0, 120);
        let sum = |r: std::ops::Range<usize>| per_sec[r].iter().sum::<u64>() as f64;
        // 07:59:00-08:00:00 at 4000, 08:00:00-08:00:30 at 400, then 4000 again until 08:01.
        assert!(
            (sum(0..60) / 60.0 - 500_000.0).abs() < 25_000.0,
            "{per_sec:?}"
        );
        assert!(
            (sum(61..90) / 29.0 - 50_000.0).abs() < 2_500.0,
            "{per_sec:?}"
        );
        assert!(
            (sum(91..120) / 29.0 - 500_000.0).abs() < 25_000.0,
            "{per_sec:?}"
        );
    }

    #[test]
    fn the_smallest_open_cap_wins_and_no_cap_is_unlimited() {
        let caps = Caps {
            default_kbps: 0,
            windows: vec![
                window("* * * * * ?", 3600, 800),
                window("* * * * * ?", 3600, 300),
            ],
        };
        assert_eq!(caps.at(T0.parse().unwrap()).0, Some(37_500.0));
        let none = Caps::default();
        assert!(none.is_unlimited());
        let mut b = Budget::new(none);
        assert_eq!(
            b.take(T0.parse().unwrap(), Duration::ZERO, 1 << 30),
            Duration::ZERO
        );
        assert_eq!(b.chunk(T0.parse().unwrap(), Duration::ZERO), MAX_CHUNK);
    }

    #[test]
    fn chunks_are_fifty_milliseconds_of_the_rate_within_bounds() {
        let t: Timestamp = T0.parse().unwrap();
        let chunk = |kbps| {
            Budget::new(Caps {
                default_kbps: kbps,
                windows: vec![],
            })
            .chunk(t, Duration::ZERO)
        };
        assert_eq!(chunk(2000), 12_500);
        assert_eq!(chunk(8), MIN_CHUNK);
        assert_eq!(chunk(1_000_000), MAX_CHUNK);
    }
}
