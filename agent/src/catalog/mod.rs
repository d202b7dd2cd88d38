//! The catalog: SQLite.

pub const FILE_NAME: &str = "kvs-edge-agent.db";
