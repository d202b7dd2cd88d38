//! Time as a dependency, so schedules, retention and backoff can be tested with a simulated
//! clock (as Moonfire NVR's `base/clock.rs`).
//!
//! Wall-clock time (`now`) is what schedules, retention and fragment timecodes are measured in;
//! it can jump (NTP step, suspend). Monotonic time (`monotonic`) never goes backwards and is what
//! timeouts and backoff are measured in.
//!
//! Every wait in the agent is a [`Clock::sleep`], so a job's loop runs on simulated time in
//! tests: [`SimulatedClock`] moves when slept on (one task's loop, as Moonfire's), and
//! [`PausedClock`] follows tokio's paused timer, which moves only when every task is idle (many
//! tasks at once: the supervisor's jobs).

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;

/// A wait on a clock.
pub type Sleep = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

pub trait Clock: Send + Sync + 'static {
    /// Wall-clock time.
    fn now(&self) -> Timestamp;
    /// Time since an arbitrary fixed origin; never decreases.
    fn monotonic(&self) -> Duration;
    /// Waits `d` of monotonic time.
    fn sleep(&self, d: Duration) -> Sleep;
    /// Whether the wall clock is synchronised to a time source (NTP, PTP, an RTC the kernel
    /// trusts); `None` when that cannot be known.
    fn synchronized(&self) -> Option<bool> {
        None
    }
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

    fn sleep(&self, d: Duration) -> Sleep {
        Box::pin(tokio::time::sleep(d))
    }

    fn synchronized(&self) -> Option<bool> {
        kernel_synchronized()
    }
}

/// The kernel's view (`adjtimex` with no modes, which only reads): unsynchronised when its
/// status has STA_UNSYNC, which it keeps until a time daemon (chrony, ntpd,
/// systemd-timesyncd) disciplines the clock. A read only: no crate offers it, so libc.
#[cfg(target_os = "linux")]
fn kernel_synchronized() -> Option<bool> {
    // SAFETY: `timex` is plain data; adjtimex with modes 0 only fills it in.
    let mut tx: libc::timex = unsafe { std::mem::zeroed() };
    let state = unsafe { libc::adjtimex(&mut tx) };
    if state < 0 {
        return None;
    }
    Some(tx.status & libc::STA_UNSYNC == 0 && state != libc::TIME_ERROR)
}

#[cfg(not(target_os = "linux"))]
fn kernel_synchronized() -> Option<bool> {
    None
}

/// A clock that moves only when told to or slept on (a sleep returns at once, the clock moved
/// by its length); `jump` moves the wall clock alone, as an NTP step does. For one task's loop:
/// two tasks sleeping on it would each move it.
#[derive(Clone, Debug)]
pub struct SimulatedClock(Arc<Mutex<SimulatedState>>);

#[derive(Debug)]
struct SimulatedState {
    wall: Timestamp,
    mono: Duration,
    synchronized: Option<bool>,
}

impl SimulatedClock {
    pub fn new(start: Timestamp) -> Self {
        SimulatedClock(Arc::new(Mutex::new(SimulatedState {
            wall: start,
            mono: Duration::ZERO,
            synchronized: Some(true),
        })))
    }

    /// Sets what [`Clock::synchronized`] says.
    pub fn set_synchronized(&self, synchronized: Option<bool>) {
        self.0.lock().expect("clock lock").synchronized = synchronized;
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

    fn sleep(&self, d: Duration) -> Sleep {
        self.advance(d);
        Box::pin(std::future::ready(()))
    }

    fn synchronized(&self) -> Option<bool> {
        self.0.lock().expect("clock lock").synchronized
    }
}

/// Simulated time for many tasks at once: monotonic time is tokio's timer, which under
/// `#[tokio::test(start_paused = true)]` stands still while any task has work and jumps to the
/// next timer when all are idle; wall time is `start` plus that, moved further by `jump`.
#[derive(Clone, Debug)]
pub struct PausedClock(Arc<Mutex<PausedState>>);

#[derive(Debug)]
struct PausedState {
    origin: tokio::time::Instant,
    /// Wall time at `origin`, moved by `jump`.
    wall_origin: Timestamp,
    synchronized: Option<bool>,
}

impl PausedClock {
    pub fn new(start: Timestamp) -> Self {
        PausedClock(Arc::new(Mutex::new(PausedState {
            origin: tokio::time::Instant::now(),
            wall_origin: start,
            synchronized: Some(true),
        })))
    }

    /// Sets what [`Clock::synchronized`] says.
    pub fn set_synchronized(&self, synchronized: Option<bool>) {
        self.0.lock().expect("clock lock").synchronized = synchronized;
    }

    /// Steps the wall clock to `to` without monotonic time passing.
    pub fn jump(&self, to: Timestamp) {
        let mut s = self.0.lock().expect("clock lock");
        let elapsed = jiff::SignedDuration::try_from(s.origin.elapsed()).expect("in range");
        s.wall_origin = to.checked_sub(elapsed).expect("timestamp in range");
    }
}

impl Clock for PausedClock {
    fn now(&self) -> Timestamp {
        let s = self.0.lock().expect("clock lock");
        let elapsed = jiff::SignedDuration::try_from(s.origin.elapsed()).expect("in range");
        s.wall_origin
            .checked_add(elapsed)
            .expect("timestamp in range")
    }

    fn monotonic(&self) -> Duration {
        self.0.lock().expect("clock lock").origin.elapsed()
    }

    fn sleep(&self, d: Duration) -> Sleep {
        Box::pin(tokio::time::sleep(d))
    }

    fn synchronized(&self) -> Option<bool> {
        self.0.lock().expect("clock lock").synchronized
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kernel_says_whether_the_clock_is_synchronised() {
        // Either answer is right on some machine; an answer there must be.
        #[cfg(target_os = "linux")]
        assert!(RealClock.synchronized().is_some());
        let c = SimulatedClock::new(Timestamp::UNIX_EPOCH);
        assert_eq!(c.synchronized(), Some(true));
        c.set_synchronized(Some(false));
        assert_eq!(c.synchronized(), Some(false));
    }

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

    #[tokio::test]
    async fn simulated_clock_moves_when_slept_on() {
        let c = SimulatedClock::new("2026-03-29T00:30:00Z".parse().unwrap());
        c.sleep(Duration::from_secs(5)).await;
        assert_eq!(c.monotonic(), Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn paused_clock_follows_the_paused_timer() {
        let c = PausedClock::new("2026-03-29T00:30:00Z".parse().unwrap());
        c.sleep(Duration::from_secs(3600)).await;
        assert_eq!(c.monotonic(), Duration::from_secs(3600));
        assert_eq!(
            c.now(),
            "2026-03-29T01:30:00Z".parse::<Timestamp>().unwrap()
        );
        c.jump("2026-03-28T00:00:00Z".parse().unwrap());
        assert_eq!(
            c.now(),
            "2026-03-28T00:00:00Z".parse::<Timestamp>().unwrap()
        );
        assert_eq!(c.monotonic(), Duration::from_secs(3600));
    }

    #[test]
    fn real_clock_is_monotonic() {
        let a = RealClock.monotonic();
        let b = RealClock.monotonic();
        assert!(b >= a);
    }
}
