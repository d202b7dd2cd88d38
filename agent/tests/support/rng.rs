//! A seeded RNG for the reliability suite: small, replayable (RELIABILITY_SEED), good enough to
//! pick kill instants.

use std::time::Duration;

/// splitmix64: small, seedable, good enough to pick kill instants.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..hi` (hi exclusive; `lo` when the range is empty).
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            return lo;
        }
        lo + self.next_u64() % (hi - lo)
    }

    pub fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(self.range(lo, hi))
    }
}

/// RELIABILITY_SEED when set (to replay a run), else a fresh seed.
pub fn seed() -> u64 {
    if let Some(s) = std::env::var_os("RELIABILITY_SEED") {
        let s = s.to_string_lossy();
        return s
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("RELIABILITY_SEED={s:?} is not a u64"));
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    Rng::new(nanos ^ (u64::from(std::process::id()) << 32)).next_u64()
}

/// RELIABILITY_LONG=1: more faults, longer runs (for humans, not CI).
pub fn long_mode() -> bool {
    std::env::var("RELIABILITY_LONG").is_ok_and(|v| v == "1")
}
