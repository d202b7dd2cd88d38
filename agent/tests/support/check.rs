//! `kvs-edge-agent check [--repair]` on an agent's store, and which of its problems a crash may
//! leave behind.

use std::path::Path;
use std::process::Command;

use crate::agent::Agent;
use crate::bin::BIN;
use crate::snapshot::Snapshot;

impl Agent {
    /// `kvs-edge-agent check [--repair]` on this agent's store.
    pub fn check(&self, repair: bool) -> Check {
        let mut c = Command::new(BIN);
        c.arg("check")
            .arg("--recording-dir")
            .arg(&self.rec)
            .arg("--catalog")
            .arg(self.catalog())
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", &self.dir)
            .env("RUST_LOG", "warn");
        if repair {
            c.arg("--repair");
        }
        let out = c.output().expect("run check");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        Check {
            ok: out.status.success(),
            problems: stdout
                .lines()
                .filter_map(|l| l.strip_prefix("problem: "))
                .map(str::to_owned)
                .collect(),
            agree: stdout.contains("catalog and disk agree"),
            output: format!("{stdout}{}", String::from_utf8_lossy(&out.stderr)),
        }
    }
}

/// What `check` said.
#[derive(Debug, Clone)]
pub struct Check {
    /// Exit status 0.
    pub ok: bool,
    pub agree: bool,
    #[allow(dead_code, reason = "for the crash tests, which sort the problems")]
    pub problems: Vec<String>,
    pub output: String,
}

impl Check {
    /// Problems other than those a crash (or a frozen agent) may leave on the newest segment:
    /// the unindexed tail of the OPEN segment (written and fsynced, row not yet committed), and a
    /// file created but not yet indexed, newer than every row. Recovery repairs both.
    #[allow(dead_code, reason = "for the crash tests")]
    pub fn unexpected(&self, snap: &Snapshot) -> Vec<String> {
        self.problems
            .iter()
            .filter(|p| !crash_residue(p, snap))
            .cloned()
            .collect()
    }
}

#[allow(dead_code, reason = "for the crash tests")]
fn crash_residue(problem: &str, snap: &Snapshot) -> bool {
    let Some((path, what)) = problem.split_once(": ") else {
        return false;
    };
    if what.contains("past the indexed size") {
        return snap.segments.get(path).is_some_and(|s| s.state == "OPEN");
    }
    if what == "file with no catalog row" {
        let Some(start) = file_start_ms(path) else {
            return false;
        };
        let newest = snap.segments.values().map(|s| s.start_ms).max();
        return newest.is_none_or(|n| start >= n);
    }
    false
}

/// The start time in a segment file's name (`{ms}.mkv` or `{ms}-{n}.mkv`).
pub fn file_start_ms(path: &str) -> Option<i64> {
    let name = Path::new(path)
        .file_name()?
        .to_str()?
        .strip_suffix(".mkv")?;
    name.split('-').next()?.parse().ok()
}
