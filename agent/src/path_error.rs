//! An I/O error that names what was being done and to which path: every file error the agent
//! reports says both, so an operator can act on it.

use std::io;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
#[error("{op} {path}: {source}")]
pub struct PathError {
    pub op: &'static str,
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

impl PathError {
    pub fn new(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> PathError {
        PathError {
            op,
            path: path.into(),
            source,
        }
    }
}

/// For `map_err`: names an `io::Error` from doing `op` to `path`.
pub fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> PathError {
    let path = path.to_owned();
    move |source| PathError { op, path, source }
}
