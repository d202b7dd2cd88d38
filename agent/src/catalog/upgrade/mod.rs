//! Schema upgrades, one file per step (as Moonfire NVR's `db/upgrade/vN_to_vM.rs`).
//!
//! The schema version is SQLite's `user_version`. Every step runs inside the one transaction
//! that also bumps the version, so a crash mid-upgrade leaves the previous version intact.

use rusqlite::Transaction;

mod v0_to_v1;

/// The schema version this build writes.
pub const CURRENT_VERSION: i32 = 1;

type Step = fn(&Transaction<'_>) -> rusqlite::Result<()>;

/// `STEPS[n]` upgrades version n to n + 1.
const STEPS: [Step; CURRENT_VERSION as usize] = [v0_to_v1::run];

/// Brings the schema from `from` to [`CURRENT_VERSION`].
pub fn run(tx: &Transaction<'_>, from: i32) -> rusqlite::Result<()> {
    for step in &STEPS[from as usize..] {
        step(tx)?;
    }
    tx.pragma_update(None, "user_version", CURRENT_VERSION)
}
