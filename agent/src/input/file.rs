//! Reading a file an operator named (settings, secrets, requests, clips, certificates). Only a
//! regular file is read, and at most a bound: `/dev/zero` would otherwise be read until memory
//! runs out (its size reads 0), and opening a FIFO would block its thread until some writer
//! came. The file is opened without blocking (`O_NONBLOCK`, which a FIFO honours) and the
//! opened descriptor is checked, so a symlink to a device or a file swapped after a check is
//! refused all the same.

use std::fs::OpenOptions;
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use rustix::fs::OFlags;

use super::cut;

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("cannot read {what} {}: {source}", cut(&path.display().to_string()))]
    Io {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("{what} {} is a {kind}, not a regular file", cut(&path.display().to_string()))]
    NotRegular {
        what: &'static str,
        path: PathBuf,
        kind: &'static str,
    },
    #[error("{what} {} is larger than {max} bytes", cut(&path.display().to_string()))]
    TooLarge {
        what: &'static str,
        path: PathBuf,
        max: u64,
    },
    #[error("{what} {} is not UTF-8 text", cut(&path.display().to_string()))]
    NotText { what: &'static str, path: PathBuf },
}

/// The whole of `path`, a regular file of at most `max_bytes`; `what` names it in errors ("the
/// settings file"). Blocking: async callers run it on a blocking thread they can abandon.
pub fn read_regular_file(
    path: &Path,
    max_bytes: u64,
    what: &'static str,
) -> Result<Vec<u8>, ReadError> {
    let io_error = |source| ReadError::Io {
        what,
        path: path.to_owned(),
        source,
    };
    let flags = OFlags::NONBLOCK | OFlags::NOCTTY;
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(flags.bits() as i32)
        .open(path)
        .map_err(io_error)?;
    let meta = file.metadata().map_err(io_error)?;
    let t = meta.file_type();
    if !t.is_file() {
        let kind = if t.is_dir() {
            "directory"
        } else if t.is_fifo() {
            "FIFO (named pipe)"
        } else if t.is_char_device() {
            "character device"
        } else if t.is_block_device() {
            "block device"
        } else if t.is_socket() {
            "socket"
        } else {
            "special file"
        };
        return Err(ReadError::NotRegular {
            what,
            path: path.to_owned(),
            kind,
        });
    }
    if meta.len() > max_bytes {
        return Err(too_large(what, path, max_bytes));
    }
    read_bounded(file, meta.len(), max_bytes, what, path)
}

/// [`read_regular_file`] for text.
pub fn read_regular_text(
    path: &Path,
    max_bytes: u64,
    what: &'static str,
) -> Result<String, ReadError> {
    text(read_regular_file(path, max_bytes, what)?, what, path)
}

/// At most `max_bytes` of standard input, as text (`-` for a file argument).
pub fn read_stdin_text(max_bytes: u64, what: &'static str) -> Result<String, ReadError> {
    let path = Path::new("(standard input)");
    text(
        read_bounded(io::stdin().lock(), 0, max_bytes, what, path)?,
        what,
        path,
    )
}

fn read_bounded(
    reader: impl Read,
    expected: u64,
    max_bytes: u64,
    what: &'static str,
    path: &Path,
) -> Result<Vec<u8>, ReadError> {
    // The size was checked, but the file can grow while it is read.
    let mut bytes = Vec::with_capacity(expected.min(max_bytes) as usize);
    reader
        .take(max_bytes.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|source| ReadError::Io {
            what,
            path: path.to_owned(),
            source,
        })?;
    if bytes.len() as u64 > max_bytes {
        return Err(too_large(what, path, max_bytes));
    }
    Ok(bytes)
}

fn too_large(what: &'static str, path: &Path, max: u64) -> ReadError {
    ReadError::TooLarge {
        what,
        path: path.to_owned(),
        max,
    }
}

fn text(bytes: Vec<u8>, what: &'static str, path: &Path) -> Result<String, ReadError> {
    String::from_utf8(bytes).map_err(|_| ReadError::NotText {
        what,
        path: path.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    /// Runs `f` on a thread and waits for it at most 5 s: the old reads never returned.
    fn within_5s<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(f());
        });
        rx.recv_timeout(Duration::from_secs(5))
            .expect("the read returns instead of blocking or reading for ever")
    }

    fn mkfifo(path: &Path) {
        rustix::fs::mknodat(
            rustix::fs::CWD,
            path,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
    }

    #[test]
    fn refuses_devices_fifos_and_directories_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        mkfifo(&fifo);
        let link = dir.path().join("zero-link");
        std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
        for (path, kind) in [
            (PathBuf::from("/dev/zero"), "character device"),
            (link, "character device"),
            (fifo, "FIFO (named pipe)"),
            (dir.path().to_owned(), "directory"),
        ] {
            let p = path.clone();
            let e = within_5s(move || read_regular_file(&p, 1 << 20, "the test file")).unwrap_err();
            assert_eq!(
                e.to_string(),
                format!(
                    "the test file {} is a {kind}, not a regular file",
                    path.display()
                )
            );
        }
    }

    #[test]
    fn bounds_the_size_and_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("big.json");
        std::fs::write(&p, vec![b' '; 1001]).unwrap();
        let e = read_regular_file(&p, 1000, "the request").unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("the request {} is larger than 1000 bytes", p.display())
        );
        assert_eq!(
            read_regular_file(&p, 1001, "the request").unwrap().len(),
            1001
        );
        std::fs::write(&p, b"\xff").unwrap();
        assert!(matches!(
            read_regular_text(&p, 10, "the request"),
            Err(ReadError::NotText { .. })
        ));
        let e = read_regular_file(Path::new("/nonexistent/x"), 10, "the request").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("cannot read the request /nonexistent/x: "),
            "{e}"
        );
        let long = dir.path().join("x".repeat(300));
        let e = read_regular_file(&long, 10, "the request")
            .unwrap_err()
            .to_string();
        assert!(e.len() < 200, "the path is cut: {e}");
    }
}
