//! File-system steps shared by everything that touches media: directory fsync, and opens that
//! never follow a symbolic link in the last component (a link planted where a segment was must
//! not make the agent read, truncate or write another file).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::path_error::{PathError, io_err};

/// Makes the entries of `dir` (created, renamed or removed files) durable.
pub fn fsync_dir(dir: &Path) -> Result<(), PathError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("fsync directory", dir))
}

/// Like [`fsync_dir`], but a directory that is gone is nothing to sync.
pub fn fsync_dir_if_exists(dir: &Path) -> Result<(), PathError> {
    match File::open(dir) {
        Ok(d) => d.sync_all().map_err(io_err("fsync directory", dir)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err("fsync directory", dir)(e)),
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
