//! Required peers: tools, Python modules, servers. Without one a test is skipped with a notice,
//! except under CI (`CI` set), where it fails.

use std::process::{Command, Stdio};

/// `present`, or (when not) a failure under CI and a notice naming `what` and `hint` elsewhere.
pub fn required(what: &str, present: bool, hint: &str) -> bool {
    if !present {
        assert!(
            std::env::var_os("CI").is_none(),
            "{what} is required when CI is set ({hint})"
        );
        eprintln!("NOTICE: {what} not available ({hint}); skipping");
    }
    present
}

/// Whether `tool probe...` runs and succeeds.
#[allow(dead_code, reason = "for the tests that run a tool")]
pub fn require(tool: &str, probe: &[&str]) -> bool {
    let ok = Command::new(tool)
        .args(probe)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    required(tool, ok, "see tests/ci.sh for the Debian packages")
}

/// Whether `name` is a file on PATH (for tools with no harmless argument to probe).
#[allow(dead_code, reason = "for the tests that look a tool up on PATH")]
pub fn on_path(name: &str) -> bool {
    let found = std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(name).is_file()));
    required(name, found, "install it, see tests/ci.sh")
}

/// Whether python3 can import `module`; `install` says how to get it.
#[allow(dead_code, reason = "for the tests with a Python peer")]
pub fn python(module: &str, install: &str) -> bool {
    let ok = Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    required(&format!("python3 with {module}"), ok, install)
}
