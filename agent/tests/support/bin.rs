//! The built binary, for its one-shot verbs (`check-config`, `record`, `check`, `ctl`...).

use std::process::Command;

pub const BIN: &str = env!("CARGO_BIN_EXE_kvs-edge-agent");

/// The binary in a clean environment of the agent's own variables (none of the test's AWS,
/// Greengrass, logging or systemd settings).
#[allow(dead_code, reason = "for the tests that run one-shot verbs")]
pub fn command() -> Command {
    let mut c = Command::new(BIN);
    for (k, _) in std::env::vars() {
        if k.starts_with("AWS_")
            || k.starts_with("GREENGRASS")
            || k.starts_with("WATCHDOG_")
            || k == "SVCUID"
            || k == "RUST_LOG"
            || k == "NOTIFY_SOCKET"
        {
            c.env_remove(k);
        }
    }
    c
}
