//! Where a stream's media lives: `{root}/streams/{dir}/{YYYY-MM-DD}/{start-ms}.mkv`.
//!
//! KVS stream names are 1-256 characters of `[a-zA-Z0-9_.-]`, so most are usable as a file name
//! as they are. The rest (`.`, `..`, names longer than a file name may safely be) are mapped to
//! `={prefix}={hash}`: `=` never occurs in a stream name, so a mapped name cannot collide with a
//! plain one, and the stream's name is kept in [`NAME_FILE`] inside its directory for a rebuild
//! of the catalog from the files.

use std::io;
use std::path::{Path, PathBuf};

use crate::path_error::{PathError, io_err};

/// The folder holding one directory per stream.
pub const STREAMS: &str = "streams";
/// Inside a mapped stream directory: the stream's name.
pub const NAME_FILE: &str = "stream-name";
/// Longest stream name used as a directory name unchanged (file systems allow 255 bytes).
const MAX_PLAIN: usize = 200;

/// Creates the recording directory (and its parents) if missing, readable by the agent's user
/// only: media and the catalog beside it are nobody else's.
pub fn create_root(root: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(root)
}

/// The directory of `stream`'s media, relative to the recording directory.
pub fn stream_dir(stream: &str) -> String {
    format!("{STREAMS}/{}", dir_name(stream))
}

/// The one path component naming `stream`'s directory.
pub fn dir_name(stream: &str) -> String {
    if is_plain(stream) {
        return stream.to_owned();
    }
    let prefix: String = stream.chars().take(100).collect();
    format!("={prefix}={:016x}", fnv1a(stream.as_bytes()))
}

/// Whether `stream` is its own directory name.
pub fn is_plain(stream: &str) -> bool {
    !stream.is_empty() && stream.len() <= MAX_PLAIN && stream != "." && stream != ".."
}

/// Whether `name` is one of the names [`dir_name`] maps to a directory (a KVS stream name).
pub fn valid_stream_name(name: &str) -> bool {
    name.len() <= 256 && crate::edge_config::validate::is_resource_name(name)
}

/// The stream a directory under `streams/` holds: its own name when plain, else the name kept
/// in its [`NAME_FILE`] (checked to map back to the directory). `None` for a directory that is
/// not a stream's.
pub fn stream_of_dir(dir: &Path) -> Option<String> {
    let name = dir.file_name()?.to_str()?;
    if !name.starts_with('=') {
        return (valid_stream_name(name) && is_plain(name)).then(|| name.to_owned());
    }
    let bytes =
        crate::input::file::read_regular_file(&dir.join(NAME_FILE), 512, "a stream name file")
            .ok()?;
    let stream = String::from_utf8(bytes).ok()?.trim_end().to_owned();
    (valid_stream_name(&stream) && dir_name(&stream) == name).then_some(stream)
}

/// Our segment file names: `{epoch-ms}.mkv` or `{epoch-ms}-{n}.mkv`.
pub fn is_segment_name(name: &str) -> bool {
    let Some(stem) = name.strip_suffix(".mkv") else {
        return false;
    };
    let (ms, n) = stem.split_once('-').unwrap_or((stem, "0"));
    [ms, n]
        .iter()
        .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

/// Our day directory names: `YYYY-MM-DD`.
pub fn is_day_name(name: &str) -> bool {
    let b = name.as_bytes();
    b.len() == 10
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            _ => c.is_ascii_digit(),
        })
}

/// A file (or whatever stands there) named like a segment in a stream's day directory.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct MediaFile {
    pub stream: String,
    /// Relative to the recording directory, as the catalog's `segment.path`.
    pub rel: String,
    pub path: PathBuf,
}

/// Every entry named like a segment under `{root}/streams/{dir}/{day}/`, and under
/// `{root}/{stream}/{day}/` where versions before `streams/` recorded; for one stream or all.
/// Directories are entered only when they are real directories (never through a link).
pub fn media_files(root: &Path, stream: Option<&str>) -> Result<Vec<MediaFile>, PathError> {
    let mut dirs: Vec<(String, String)> = Vec::new();
    match stream {
        Some(s) => {
            dirs.push((s.to_owned(), stream_dir(s)));
            if is_plain(s) {
                dirs.push((s.to_owned(), s.to_owned()));
            }
        }
        None => {
            for (name, path) in real_dirs(&root.join(STREAMS))? {
                if let Some(s) = stream_of_dir(&path) {
                    dirs.push((s, format!("{STREAMS}/{name}")));
                }
            }
            for (name, _) in real_dirs(root)? {
                if name != STREAMS
                    && name != super::quarantine::QUARANTINE
                    && valid_stream_name(&name)
                    && is_plain(&name)
                {
                    dirs.push((name.clone(), name));
                }
            }
        }
    }
    let mut out = Vec::new();
    for (stream, rel_dir) in dirs {
        for (day, day_path) in real_dirs(&root.join(&rel_dir))? {
            if !is_day_name(&day) {
                continue;
            }
            for (name, path) in entries(&day_path)? {
                if is_segment_name(&name) {
                    out.push(MediaFile {
                        stream: stream.clone(),
                        rel: format!("{rel_dir}/{day}/{name}"),
                        path,
                    });
                }
            }
        }
    }
    out.sort();
    Ok(out)
}

/// The entries of `dir` when it is a real directory (not a link to one); none otherwise.
fn entries(dir: &Path) -> Result<Vec<(String, PathBuf)>, PathError> {
    if !std::fs::symlink_metadata(dir).is_ok_and(|m| m.is_dir()) {
        return Ok(Vec::new());
    }
    let list = match std::fs::read_dir(dir) {
        Ok(l) => l,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err("list", dir)(e)),
    };
    let mut out = Vec::new();
    for entry in list {
        let entry = entry.map_err(io_err("list", dir))?;
        if let Some(name) = entry.file_name().to_str() {
            out.push((name.to_owned(), entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

fn real_dirs(dir: &Path) -> Result<Vec<(String, PathBuf)>, PathError> {
    Ok(entries(dir)?
        .into_iter()
        .filter(|(_, p)| std::fs::symlink_metadata(p).is_ok_and(|m| m.is_dir()))
        .collect())
}

/// FNV-1a, 64 bits: a stable hash for directory names (std's hashers are not stable across
/// releases, and no cryptographic strength is needed to tell stream names apart).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_names_are_their_directory() {
        assert_eq!(stream_dir("cam-1"), "streams/cam-1");
        assert_eq!(stream_dir("log"), "streams/log");
        assert_eq!(stream_dir("kvs-edge-agent.db"), "streams/kvs-edge-agent.db");
    }

    #[test]
    fn unsafe_names_are_mapped_apart() {
        let long = "a".repeat(256);
        let longer_twin = format!("{}b", "a".repeat(255));
        for name in [".", "..", long.as_str(), longer_twin.as_str()] {
            let d = dir_name(name);
            assert!(d.starts_with('=') && d.len() < 255, "{d}");
            assert!(d != "." && d != "..");
        }
        assert_ne!(dir_name(&long), dir_name(&longer_twin));
        assert_ne!(dir_name("."), dir_name(".."));
        assert_eq!(dir_name(&long), dir_name(&long));
    }

    #[test]
    fn mapped_directories_name_their_stream() {
        let root = tempfile::tempdir().unwrap();
        let name = "x".repeat(250);
        let dir = root.path().join(dir_name(&name));
        std::fs::create_dir(&dir).unwrap();
        assert_eq!(stream_of_dir(&dir), None);
        std::fs::write(dir.join(NAME_FILE), &name).unwrap();
        assert_eq!(stream_of_dir(&dir), Some(name));
        std::fs::write(dir.join(NAME_FILE), "other").unwrap();
        assert_eq!(stream_of_dir(&dir), None);
        assert_eq!(
            stream_of_dir(&root.path().join("cam")),
            Some("cam".to_owned())
        );
    }

    #[test]
    fn names() {
        assert!(is_segment_name("1764028800000.mkv"));
        assert!(is_segment_name("1764028800000-2.mkv"));
        assert!(!is_segment_name("holiday.mkv"));
        assert!(!is_segment_name("1-.mkv"));
        assert!(is_day_name("2026-12-02"));
        assert!(!is_day_name("2026-12-2"));
        assert!(!is_day_name("log"));
    }
}
