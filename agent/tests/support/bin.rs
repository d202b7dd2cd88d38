//! The built binary, for its one-shot verbs (`check-config`, `record`, `check`, `ctl`...).

use std::path::Path;
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

/// [`command`] for a store at `rec`: its recording directory, logs under it, warnings only.
#[allow(dead_code, reason = "for the tests of a store's one-shot verbs")]
pub fn on_store(rec: &Path) -> Command {
    let mut c = command();
    c.env("AWS_KVS_EDGE_RECORDING_DIRECTORY", rec)
        .env("AWS_KVS_EDGE_LOG_OUTPUT_DIRECTORY", rec.join("log"))
        .env("RUST_LOG", "warn");
    c
}
