//! File-system steps shared by everything that touches media: directory fsync, and opens that
//! never follow a symbolic link in the last component (a link planted where a segment was must
//! not make the agent read, truncate or write another file).

use std::fs::{DirBuilder, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

use crate::path_error::{PathError, io_err};

/// Makes the entries of `dir` (created, renamed or removed files) durable. The one directory
/// fsync of the agent: every crash-ordering rule of the store ends its step with it.
pub fn fsync_dir(dir: &Path) -> Result<(), PathError> {
    sync_dir(dir).map_err(io_err("fsync directory", dir))
}

/// Like [`fsync_dir`], but a directory that is gone is nothing to sync.
pub fn fsync_dir_if_exists(dir: &Path) -> Result<(), PathError> {
    match sync_dir(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        r => r.map_err(io_err("fsync directory", dir)),
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Creates `dir` and any missing parents with mode 0700, fsyncing each new entry into its
/// parent so the file's path survives a power cut.
pub fn ensure_dir(dir: &Path) -> Result<(), PathError> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        ensure_dir(parent)?;
    }
    match DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(()),
        Err(e) => return Err(io_err("create directory", dir)(e)),
    }
    match dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(parent) => fsync_dir(parent),
        None => Ok(()),
    }
}

const NOFOLLOW: i32 = rustix::fs::OFlags::NOFOLLOW.bits() as i32;

fn no_follow(o: &mut OpenOptions) -> &mut OpenOptions {
    o.custom_flags(NOFOLLOW)
}

/// Removes a `{stream}/{YYYY-MM-DD}` directory once its last segment is gone, so a box that
/// records for years does not collect thousands of empty directories.
pub fn remove_empty_day_dir(root: &Path, dir: &Path) -> Result<(), PathError> {
    if dir == root || dir.parent() == Some(root) {
        return Ok(());
    }
    match std::fs::remove_dir(dir) {
        Ok(()) => dir.parent().map_or(Ok(()), fsync_dir_if_exists),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::DirectoryNotEmpty | io::ErrorKind::NotFound
            ) =>
        {
            Ok(())
        }
        Err(e) => Err(io_err("remove directory", dir)(e)),
    }
}

/// Opens a media file for reading; a symbolic link fails (ELOOP).
pub fn open_media(path: &Path) -> io::Result<File> {
    no_follow(OpenOptions::new().read(true)).open(path)
}

/// [`open_media`] for async readers (the uploader).
pub async fn open_media_async(path: &Path) -> io::Result<tokio::fs::File> {
    tokio::fs::OpenOptions::new()
        .read(true)
        .custom_flags(NOFOLLOW)
        .open(path)
        .await
}

/// Opens a media file for reading and writing (repair); a symbolic link fails (ELOOP).
pub fn open_media_rw(path: &Path) -> io::Result<File> {
    no_follow(OpenOptions::new().read(true).write(true)).open(path)
}

/// What stands at a media path, looked at without following a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry {
    Missing,
    File(u64),
    /// A directory, symbolic link, device, FIFO or socket: never media.
    Other(&'static str),
}

pub fn entry(path: &Path) -> Result<Entry, PathError> {
    match std::fs::symlink_metadata(path) {
        Ok(m) => {
            let t = m.file_type();
            Ok(if t.is_file() {
                Entry::File(m.len())
            } else if t.is_dir() {
                Entry::Other("a directory")
            } else if t.is_symlink() {
                Entry::Other("a symbolic link")
            } else {
                Entry::Other("a special file")
            })
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Entry::Missing),
        Err(e) => Err(io_err("stat", path)(e)),
    }
}

/// Writes a small file atomically and durably: a temporary beside it, fsync, rename over,
/// fsync the directory. A crash leaves the old content or the new, never a torn file.
pub fn write_small_file(path: &Path, content: &[u8]) -> Result<(), PathError> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = no_follow(OpenOptions::new().write(true).create_new(true).mode(0o600))
        .open(&tmp)
        .map_err(io_err("create", &tmp))?;
    f.write_all(content)
        .and_then(|()| f.sync_all())
        .map_err(io_err("write", &tmp))?;
    std::fs::rename(&tmp, path).map_err(io_err("rename", &tmp))?;
    fsync_dir(
        path.parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new(".")),
    )
}
