//! The power-cut file system (tests/powercut/powercut.py): a FUSE file system that keeps what
//! was not made durable in memory, so that cutting its power loses exactly that. Its own suite
//! (tests/powercut/test_powercut.py) shows each durability rule, SQLite in WAL mode on it, and
//! its stall. Without FUSE (/dev/fuse, fusermount3) or the mfusepy binding the test is skipped,
//! except under CI.

#[path = "support/peer.rs"]
mod peer;
#[path = "support/powercut.rs"]
mod powercut;
#[path = "support/process.rs"]
mod process;

use std::process::Command;

use powercut::have_fuse;

const REPO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

#[test]
fn powercut_fs_self_test() {
    if !have_fuse() {
        return;
    }
    let out = Command::new("python3")
        .arg("tests/powercut/test_powercut.py")
        .current_dir(REPO)
        .output()
        .expect("python3");
    process::assert_success(&out);
}
