//! Schema upgrades, one file per step (as Moonfire NVR's `db/upgrade/vN_to_vM.rs`).
//!
//! The schema version is SQLite's `user_version`. Every step runs inside the one transaction
//! that also bumps the version, so a crash mid-upgrade leaves the previous version intact.

use rusqlite::{Connection, Transaction};

mod v0_to_v1;
mod v1_to_v2;
mod v2_to_v3;
mod v3_to_v4;

/// The schema version this build writes.
pub const CURRENT_VERSION: i32 = 4;

type Step = fn(&Transaction<'_>) -> rusqlite::Result<()>;

/// `STEPS[n]` upgrades version n to n + 1.
const STEPS: [Step; CURRENT_VERSION as usize] =
    [v0_to_v1::run, v1_to_v2::run, v2_to_v3::run, v3_to_v4::run];

/// Brings the schema from `from` to [`CURRENT_VERSION`].
pub fn run(tx: &Transaction<'_>, from: i32) -> rusqlite::Result<()> {
    run_to(tx, from, CURRENT_VERSION)
}

/// Brings the schema from `from` to `to` (tests build older catalogs with it).
pub fn run_to(tx: &Transaction<'_>, from: i32, to: i32) -> rusqlite::Result<()> {
    for step in &STEPS[from as usize..to as usize] {
        step(tx)?;
    }
    tx.pragma_update(None, "user_version", to)
}

/// The schema objects (tables, indexes, triggers) a catalog of `version` has, as
/// `(type, name, sql)`: built by running the steps on an empty in-memory database, so the
/// expectation is exactly what the steps create.
pub fn expected_schema(version: i32) -> rusqlite::Result<Vec<(String, String, String)>> {
    let mut conn = Connection::open_in_memory()?;
    let tx = conn.transaction()?;
    for step in &STEPS[..version.clamp(0, CURRENT_VERSION) as usize] {
        step(&tx)?;
    }
    schema(&tx)
}

/// The schema objects of an open database, in the form of [`expected_schema`].
pub fn schema(conn: &Connection) -> rusqlite::Result<Vec<(String, String, String)>> {
    let mut stmt = conn.prepare(
        "select type, name, coalesce(sql, '') from sqlite_master \
         where name not like 'sqlite_%' order by type, name",
    )?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
    rows.collect()
}

/// What differs between a catalog's schema and the one its version claims, as one readable
/// sentence per difference; empty when they agree.
pub fn schema_differences(conn: &Connection, version: i32) -> rusqlite::Result<Vec<String>> {
    let expected = expected_schema(version)?;
    let found = schema(conn)?;
    let mut out = Vec::new();
    for (kind, name, sql) in &expected {
        match found.iter().find(|(k, n, _)| k == kind && n == name) {
            None => out.push(format!("{kind} {name} is missing")),
            Some((_, _, s)) if normalize(s) != normalize(sql) => out.push(format!(
                "{kind} {name} differs from what version {version} defines"
            )),
            Some(_) => {}
        }
    }
    for (kind, name, _) in &found {
        if !expected.iter().any(|(k, n, _)| k == kind && n == name) {
            out.push(format!("{kind} {name} is not part of version {version}"));
        }
    }
    Ok(out)
}

fn normalize(sql: &str) -> String {
    sql.split_whitespace().collect::<Vec<_>>().join(" ")
}
