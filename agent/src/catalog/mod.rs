//! The catalog: one SQLite database (WAL) holding the edge configurations, their job status, and
//! the index of every segment file and fragment on disk.
//!
//! Crash-safety contract (the media side is kept by the recorder and janitor, see DESIGN.md):
//! a fragment row is committed only after its cluster is written and fsynced, so every row
//! describes bytes that are durably on disk; a file may hold bytes past its indexed size (the
//! fragment in flight at a crash), which recovery truncates. `synchronous=FULL` makes each
//! commit durable before it returns, so a row the recorder was told is committed survives a
//! power cut.
//!
//! One connection behind a mutex serves the agent: every statement is short, and SQLite
//! serialises writers anyway. Other processes (`recordings`, `check`) open their own
//! connection; WAL lets them read while the agent writes.

/// Declares an enum kept as text in a column whose CHECK constraint lists the same names.
macro_rules! text_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $name {
            $($variant),+
        }

        impl $name {
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }

            /// Reads the column's text back; anything else means the row was not written by us.
            pub fn parse(s: &str) -> rusqlite::Result<$name> {
                match s {
                    $($text => Ok($name::$variant),)+
                    other => Err(rusqlite::Error::InvalidColumnType(
                        0,
                        format!(concat!(stringify!($name), " {:?}"), other),
                        rusqlite::types::Type::Text,
                    )),
                }
            }
        }
    };
}

mod config;
mod media;
mod quarantine;
mod requests;
mod upgrade;

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use rusqlite::{Connection, OpenFlags};

pub use config::{Job, JobStatusRow, StoredConfig};
pub use media::{
    Backlog, FragmentRow, FragmentTime, NewFragment, NewSegment, RangeCounts, SegmentId,
    SegmentRow, SegmentState, SegmentSummary, UploadState,
};
pub use quarantine::QuarantineRow;
pub use requests::{Added, KEEP_ENDED, NewRequest, RequestKind, RequestRow, RequestState};
pub use upgrade::CURRENT_VERSION;

/// The catalog's file name inside the state directory.
pub const FILE_NAME: &str = "kvs-edge-agent.db";

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("catalog {path}: {source}")]
    Open {
        path: String,
        source: rusqlite::Error,
    },
    #[error(
        "catalog {path} has schema version {found}, newer than the {supported} this kvs-edge-agent \
         understands; run the newer kvs-edge-agent, or move the file aside to start afresh"
    )]
    TooNew {
        path: String,
        found: i32,
        supported: i32,
    },
    #[error(
        "catalog {path} has schema version {found}; start the agent once to upgrade it to \
         {supported}"
    )]
    TooOld {
        path: String,
        found: i32,
        supported: i32,
    },
    #[error(
        "catalog {path} is damaged: {}; restore it from a backup, or move it aside and rebuild \
         it from the media with `kvs-edge-agent check --repair --reindex`",
        .problems.join("; ")
    )]
    Damaged { path: String, problems: Vec<String> },
    #[error(
        "catalog {path} does not exist (a mistyped path, or a lost catalog?); to rebuild one from \
         the media on disk run `kvs-edge-agent check --repair --reindex`"
    )]
    Missing { path: String },
    #[error("catalog: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("catalog: stored configuration of stream {stream} is unreadable: {message}")]
    Corrupt { stream: String, message: String },
    #[error("catalog: no {what} {key}")]
    NotFound { what: &'static str, key: String },
}

pub type Result<T, E = CatalogError> = std::result::Result<T, E>;

pub struct Catalog {
    conn: Mutex<Connection>,
    commits: Commits,
    /// Per stream, a counter bumped when an upload request is added or ends.
    request_events: Commits,
}

/// Per stream, the id of the last fragment committed through this catalog: what a live upload
/// session waits on, as Moonfire's `Database::on_flush` wakes its live viewers. In-process only:
/// another process's commits are not seen, which is why the uploader also looks again on its own
/// (uploader/feed.rs).
#[derive(Default)]
struct Commits(
    std::sync::Mutex<std::collections::HashMap<String, tokio::sync::watch::Sender<i64>>>,
);

impl Commits {
    fn sender<T>(&self, stream: &str, f: impl FnOnce(&tokio::sync::watch::Sender<i64>) -> T) -> T {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let tx = map
            .entry(stream.to_owned())
            .or_insert_with(|| tokio::sync::watch::channel(0).0);
        f(tx)
    }
}

impl Catalog {
    /// Changes whenever a fragment of `stream` is committed (the value: its id).
    pub fn committed(&self, stream: &str) -> tokio::sync::watch::Receiver<i64> {
        self.commits.sender(stream, |tx| tx.subscribe())
    }

    fn announce_commit(&self, stream: &str, fragment: i64) {
        self.commits.sender(stream, |tx| {
            tx.send_replace(fragment);
        });
    }

    /// Runs `f` on tokio's blocking pool: the one way async code reaches SQLite, so that a
    /// durable commit (an fsync) never stalls the runtime's workers, which every stream's jobs
    /// share.
    pub async fn blocking<T, F>(
        self: &std::sync::Arc<Self>,
        f: F,
    ) -> std::result::Result<T, tokio::task::JoinError>
    where
        T: Send + 'static,
        F: FnOnce(&Catalog) -> T + Send + 'static,
    {
        let catalog = std::sync::Arc::clone(self);
        tokio::task::spawn_blocking(move || f(&catalog)).await
    }

    /// Opens (creating if needed) the catalog at `path` and brings its schema up to date.
    /// Opening an up-to-date catalog changes nothing.
    pub fn open(path: &Path) -> Result<Catalog> {
        let wrap = |source| CatalogError::Open {
            path: path.display().to_string(),
            source,
        };
        let conn = Connection::open(path).map_err(wrap)?;
        Self::init(conn, &path.display().to_string()).map_err(|e| match e {
            CatalogError::Sqlite(source) => wrap(source),
            other => other,
        })
    }

    /// Opens the catalog at `path` like [`Catalog::open`], but refuses to create one: for verbs
    /// that must not mistake a mistyped path for an empty catalog.
    pub fn open_existing(path: &Path) -> Result<Catalog> {
        if !path.exists() {
            return Err(CatalogError::Missing {
                path: path.display().to_string(),
            });
        }
        Self::open(path)
    }

    /// Opens an existing catalog without writing to it (for operator commands that must not
    /// disturb a running agent); the schema must be current.
    pub fn open_read_only(path: &Path) -> Result<Catalog> {
        let name = path.display().to_string();
        if !path.exists() {
            return Err(CatalogError::Missing { path: name });
        }
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|source| CatalogError::Open {
            path: name.clone(),
            source,
        })?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let version: i32 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        verify_schema(&conn, version, &name)?;
        if version > CURRENT_VERSION {
            return Err(CatalogError::TooNew {
                path: name,
                found: version,
                supported: CURRENT_VERSION,
            });
        }
        if version < CURRENT_VERSION {
            return Err(CatalogError::TooOld {
                path: name,
                found: version,
                supported: CURRENT_VERSION,
            });
        }
        Ok(Catalog {
            conn: Mutex::new(conn),
            commits: Commits::default(),
            request_events: Commits::default(),
        })
    }

    pub fn open_in_memory() -> Result<Catalog> {
        Self::init(Connection::open_in_memory()?, ":memory:")
    }

    fn init(mut conn: Connection, name: &str) -> Result<Catalog> {
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "wal")?;
        conn.pragma_update(None, "synchronous", "full")?;
        conn.pragma_update(None, "foreign_keys", "on")?;
        // Every write transaction takes the write lock when it begins. A deferred one that
        // reads first and then writes cannot wait for the lock (SQLite skips the busy handler
        // when a read transaction upgrades, as waiting could deadlock), so a reader in another
        // connection briefly holding it (WAL recovery, `recordings list`, the HTTP API) failed
        // the write at once with "database is locked".
        conn.set_transaction_behavior(rusqlite::TransactionBehavior::Immediate);
        let tx = conn.transaction()?;
        let version: i32 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
        verify_schema(&tx, version, name)?;
        if version > CURRENT_VERSION {
            return Err(CatalogError::TooNew {
                path: name.to_owned(),
                found: version,
                supported: CURRENT_VERSION,
            });
        }
        if version < CURRENT_VERSION {
            upgrade::run(&tx, version)?;
        }
        tx.commit()?;
        Ok(Catalog {
            conn: Mutex::new(conn),
            commits: Commits::default(),
            request_events: Commits::default(),
        })
    }

    /// This catalog's UUID and the recording directory's it is bound to (None: not yet).
    pub fn identity(&self) -> Result<(String, Option<String>)> {
        Ok(self.conn().query_row(
            "select catalog_uuid, directory_uuid from meta where id = 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?)
    }

    /// Binds the catalog to the recording directory with `uuid` (see `store::directory`).
    pub fn set_directory_uuid(&self, uuid: &str) -> Result<()> {
        self.conn()
            .execute("update meta set directory_uuid = ?1 where id = 1", [uuid])?;
        Ok(())
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves SQLite itself consistent (an open transaction is
        // rolled back when dropped), so a poisoned lock is still safe to use.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The schema version of the open catalog.
    pub fn schema_version(&self) -> Result<i32> {
        Ok(self
            .conn()
            .pragma_query_value(None, "user_version", |r| r.get(0))?)
    }
}

/// Refuses a catalog whose tables are not the ones its version claims (a dropped table, an
/// edited schema): an agent writing media it cannot index would break the core invariant. A
/// version this build does not know is left to the version checks.
fn verify_schema(conn: &Connection, version: i32, name: &str) -> Result<()> {
    if !(0..=CURRENT_VERSION).contains(&version) {
        return Ok(());
    }
    let problems = upgrade::schema_differences(conn, version)?;
    if problems.is_empty() {
        Ok(())
    } else {
        Err(CatalogError::Damaged {
            path: name.to_owned(),
            problems,
        })
    }
}

#[cfg(test)]
mod tests;
