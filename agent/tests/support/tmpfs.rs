//! A small tmpfs, for a full disk (ENOSPC) on demand.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A tmpfs mounted for one test, unmounted on drop (also when the test fails).
pub struct Tmpfs(PathBuf);

impl Tmpfs {
    /// `Ok(None)` (with a notice) when mounting is not permitted here, unless under CI.
    pub fn mount(path: &Path, size: &str) -> Result<Option<Tmpfs>, String> {
        std::fs::create_dir_all(path).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .output()
            .map_err(|e| format!("mount: {e}"))?;
        if out.status.success() {
            return Ok(Some(Tmpfs(path.to_owned())));
        }
        let err = String::from_utf8_lossy(&out.stderr).to_lowercase();
        let denied = ["permission denied", "not permitted", "superuser"]
            .iter()
            .any(|m| err.contains(m));
        if denied && std::env::var_os("CI").is_none() {
            eprintln!(
                "NOTICE: cannot mount a tmpfs here ({}); skipping",
                err.trim()
            );
            return Ok(None);
        }
        Err(format!("mount -t tmpfs {}: {err}", path.display()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.0)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            // Still busy (a failed test left a file open): detach it now, freed when closed.
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}
