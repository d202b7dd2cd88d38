//! Child processes of the tests: killed when dropped, signalled, and read until they say they
//! are ready.

use std::io::BufRead;
use std::process::{Child, Command, Output, Stdio};

/// A peer process, killed and reaped when dropped (so a failing test leaves none behind).
#[allow(dead_code, reason = "for the tests that start a peer process")]
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `kill -SIG pid`, which must succeed.
#[allow(dead_code, reason = "for the tests that signal a process")]
pub fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .arg(sig)
        .arg(pid.to_string())
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig} {pid}");
}

/// `kill -SIG pid`, whatever comes of it (the process may be gone).
#[allow(dead_code, reason = "for the tests that signal a process")]
pub fn signal_quiet(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .arg(sig)
        .arg(pid.to_string())
        .stderr(Stdio::null())
        .status();
}

/// The command exited 0; its stderr says why not.
#[allow(dead_code, reason = "for the tests that run a command to its end")]
pub fn assert_success(out: &Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Reads lines until `ready` picks something out of one; panics naming `what` at the end of
/// the stream (the peer exited first).
#[allow(dead_code, reason = "for the tests whose peer prints a ready line")]
pub fn ready_line<T>(
    out: &mut impl BufRead,
    what: &str,
    mut ready: impl FnMut(&str) -> Option<T>,
) -> T {
    let mut line = String::new();
    loop {
        line.clear();
        let n = out.read_line(&mut line).unwrap();
        assert!(n > 0, "{what} exited before it was ready");
        if let Some(t) = ready(line.trim()) {
            return t;
        }
    }
}
