//! A fault-injection hook for tests of the shipped (release) binary: no real input is known to
//! panic a job, yet the supervisor's promise that one job's panic neither stops the agent nor
//! the other jobs must hold in the binary that is deployed, not only in debug builds.
//!
//! Armed only by `KVS_EDGE_AGENT_FAULT=panic-<job>:<stream>[,...]`, job `recorder`, `janitor`,
//! `uploader`, `apply` (the handling of a `desired` request) or `control:agent` (the control
//! plane itself). Deliberately not in `settings::VARIABLES`: it is not an operator setting. The
//! first run of that job of that stream in the process panics; the restarted one runs normally.
//! Unset, it does nothing.

use std::sync::Mutex;
use std::sync::OnceLock;

/// The variable that arms the hook.
pub const VARIABLE: &str = "KVS_EDGE_AGENT_FAULT";

/// The (job, stream) pairs still to panic, read from the environment once.
fn armed() -> &'static Mutex<Vec<(String, String)>> {
    static ARMED: OnceLock<Mutex<Vec<(String, String)>>> = OnceLock::new();
    ARMED.get_or_init(|| {
        let spec = std::env::var(VARIABLE).unwrap_or_default();
        let pairs = spec
            .split(',')
            .filter_map(|f| f.strip_prefix("panic-")?.split_once(':'))
            .map(|(job, stream)| (job.to_owned(), stream.to_owned()))
            .collect();
        Mutex::new(pairs)
    })
}

/// Panics once if the hook is armed for this job of `stream`.
pub fn job_started(job: &str, stream: &str) {
    let mut armed = armed().lock().unwrap_or_else(|p| p.into_inner());
    if let Some(i) = armed.iter().position(|(j, s)| j == job && s == stream) {
        armed.remove(i);
        drop(armed);
        panic!("{VARIABLE}: injected panic in the {job} of {stream}");
    }
}
