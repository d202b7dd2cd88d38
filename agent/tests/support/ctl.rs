//! `kvs-edge-agent ctl`, the control plane's command-line client, and what it printed.

use std::process::Output;

use serde_json::Value;

use crate::bin::BIN;

/// Runs `kvs-edge-agent ctl --broker URL ARGS...`.
pub async fn ctl(broker: &str, args: &[&str]) -> Output {
    let mut cmd = tokio::process::Command::new(BIN);
    cmd.arg("ctl").args(args).arg("--broker").arg(broker);
    if !args.contains(&"--wait-seconds") {
        cmd.arg("--wait-seconds").arg("30");
    }
    cmd.output().await.expect("run ctl")
}

/// `ctl start-edge-configuration-update --cli-input-json REQ` (a `file://` URL).
#[allow(dead_code, reason = "for some of the tests that run ctl only")]
pub async fn ctl_start(broker: &str, req: &str) -> Output {
    ctl(
        broker,
        &["start-edge-configuration-update", "--cli-input-json", req],
    )
    .await
}

#[allow(dead_code, reason = "for some of the tests that run ctl only")]
pub fn stdout_json(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "ctl printed no JSON ({e}): status {:?}\nstdout: {}\nstderr: {}",
            o.status,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    })
}

#[allow(dead_code, reason = "for some of the tests that run ctl only")]
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}
