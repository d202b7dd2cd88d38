//! The one polling helper, for state that has no event to await (the catalog, a log file, a
//! counter, a port).

use std::time::{Duration, Instant};

const INTERVAL: Duration = Duration::from_millis(10);

/// Polls `cond` until it holds; `Err` naming `what` after `limit`.
pub fn wait_until(
    what: &str,
    limit: Duration,
    mut cond: impl FnMut() -> bool,
) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    loop {
        if cond() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(timed_out(what, limit));
        }
        std::thread::sleep(INTERVAL);
    }
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
) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    loop {
        if cond() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(timed_out(what, limit));
        }
        tokio::time::sleep(INTERVAL).await;
    }
}

fn timed_out(what: &str, limit: Duration) -> String {
    format!("timed out after {limit:?} waiting for {what}")
}
