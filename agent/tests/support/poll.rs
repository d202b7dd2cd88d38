//! The one polling helper, for state that has no event to await (the catalog, a log file, a
//! counter, a port).

use std::time::{Duration, Instant};

const INTERVAL: Duration = Duration::from_millis(10);

/// `Err` says what was not seen in time.
pub type Waited = Result<(), String>;

/// `what` to wait for, until `limit` from now.
struct Deadline<'a> {
    what: &'a str,
    limit: Duration,
    at: Instant,
}

impl<'a> Deadline<'a> {
    fn new(what: &'a str, limit: Duration) -> Deadline<'a> {
        Deadline {
            what,
            limit,
            at: Instant::now() + limit,
        }
    }

    /// Whether to poll again: `cond` does not hold yet; `Err` once the deadline has passed.
    fn pending(&self, cond: &mut impl FnMut() -> bool) -> Result<bool, String> {
        if cond() {
            return Ok(false);
        }
        if Instant::now() < self.at {
            return Ok(true);
        }
        Err(format!(
            "timed out after {:?} waiting for {}",
            self.limit, self.what
        ))
    }
}

/// Polls `cond` until it holds; `Err` naming `what` after `limit`.
pub fn wait_until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) -> Waited {
    let deadline = Deadline::new(what, limit);
    while deadline.pending(&mut cond)? {
        std::thread::sleep(INTERVAL);
    }
    Ok(())
}

/// [`wait_until`], failing the test on timeout.
#[allow(dead_code, reason = "for the tests that fail at the first timeout")]
pub fn wait_for(what: &str, limit: Duration, cond: impl FnMut() -> bool) {
    if let Err(e) = wait_until(what, limit, cond) {
        panic!("{e}");
    }
}

/// [`wait_until`] from async code: sleeps on the runtime's timer between polls.
#[allow(dead_code, reason = "for the async tests only")]
pub async fn wait_until_async(
    what: &str,
    limit: Duration,
    mut cond: impl FnMut() -> bool,
) -> Waited {
    let deadline = Deadline::new(what, limit);
    while deadline.pending(&mut cond)? {
        tokio::time::sleep(INTERVAL).await;
    }
    Ok(())
}
