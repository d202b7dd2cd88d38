//! Which catalog a recording directory belongs to (Moonfire NVR's "db uuid mismatch" rule).
//!
//! The directory holds [`META_FILE`], naming its own UUID and its catalog's; the catalog's
//! `meta` row holds the same pair. [`bind`] compares them before anything reads, writes or
//! deletes media, and refuses a directory that another catalog indexes, or one holding media
//! that a brand-new catalog knows nothing of: either means the catalog was lost, replaced or
//! mistyped, and treating the media as "never indexed" would destroy it. The operator's way
//! out is explicit: `check --repair --reindex` adopts the directory and rebuilds the rows from
//! the files ([`Bind::Adopt`]).
//!
//! Crash ordering of a first bind: the meta file is written (atomically, fsynced) before the
//! catalog records the directory's UUID. A crash in between leaves a meta file naming this
//! catalog while the catalog names no directory, which the next bind completes.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tracing::info;

use super::{fsx, layout};
use crate::catalog::{Catalog, CatalogError};
use crate::path_error::PathError;

/// The identity file at the top of the recording directory.
pub const META_FILE: &str = "kvs-edge-agent.dir";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Meta {
    catalog_uuid: String,
    directory_uuid: String,
}

/// How far [`bind`] may go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bind {
    /// Check only; never write (read-only verbs beside a running agent).
    Verify,
    /// Check, and bind a directory that no catalog has bound yet (the agent, `record`).
    Open,
    /// Take the directory over whatever it says (`check --repair --reindex`).
    Adopt,
}

#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error(
        "recording directory {dir} belongs to catalog {dir_catalog}, not to {catalog_path} \
         (catalog {catalog}): a lost, replaced or mistyped catalog? Nothing was touched. Point \
         the agent at the right catalog, or rebuild this one from the media with \
         `kvs-edge-agent check --repair --reindex`"
    )]
    OtherCatalog {
        dir: PathBuf,
        dir_catalog: String,
        catalog_path: PathBuf,
        catalog: String,
    },
    #[error(
        "catalog {catalog_path} indexes recording directory {expected}, but {dir} is {found}: \
         a mistyped path, or a replaced disk? Nothing was touched. Point the agent at the right \
         directory, or adopt this one with `kvs-edge-agent check --repair --reindex`"
    )]
    OtherDirectory {
        dir: PathBuf,
        catalog_path: PathBuf,
        expected: String,
        found: String,
    },
    #[error(
        "recording directory {dir} holds {files} segment file(s) that catalog {catalog_path} \
         does not index (a lost catalog?). Nothing was touched. Rebuild the catalog from them \
         with `kvs-edge-agent check --repair --reindex`, or move them away"
    )]
    UnindexedMedia {
        dir: PathBuf,
        catalog_path: PathBuf,
        files: usize,
    },
    #[error(
        "recording directory {dir}: {META_FILE} is unreadable ({message}); nothing was touched"
    )]
    BadMeta { dir: PathBuf, message: String },
    #[error(transparent)]
    Io(#[from] PathError),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
}

/// What [`bind`] found or did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bound {
    /// Catalog and directory already name each other.
    Agreed,
    /// A new binding was written.
    Bound,
    /// A directory never bound (only with [`Bind::Verify`]).
    Unbound,
    /// The directory was taken over from catalog `from` (None: it had no meta file).
    Adopted { from: Option<String> },
}

/// Checks (and, as `mode` allows, makes) the binding of `catalog` to the recording directory
/// `root`. `catalog_path` is for messages.
pub fn bind(
    catalog: &Catalog,
    catalog_path: &Path,
    root: &Path,
    mode: Bind,
) -> Result<Bound, BindError> {
    let (catalog_uuid, dir_uuid) = catalog.identity()?;
    let meta = read_meta(root)?;
    let refuse_other = |m: &Meta| BindError::OtherCatalog {
        dir: root.to_owned(),
        dir_catalog: m.catalog_uuid.clone(),
        catalog_path: catalog_path.to_owned(),
        catalog: catalog_uuid.clone(),
    };
    match (&meta, &dir_uuid) {
        (Some(m), Some(d)) if m.catalog_uuid == catalog_uuid && m.directory_uuid == *d => {
            Ok(Bound::Agreed)
        }
        // A first bind interrupted between the meta file and the catalog's row.
        (Some(m), None) if m.catalog_uuid == catalog_uuid => {
            if mode != Bind::Verify {
                catalog.set_directory_uuid(&m.directory_uuid)?;
            }
            Ok(Bound::Bound)
        }
        (Some(m), _) if mode == Bind::Adopt => {
            write_binding(catalog, root, &catalog_uuid)?;
            Ok(Bound::Adopted {
                from: Some(m.catalog_uuid.clone()),
            })
        }
        (Some(m), Some(d)) if m.catalog_uuid == catalog_uuid => Err(BindError::OtherDirectory {
            dir: root.to_owned(),
            catalog_path: catalog_path.to_owned(),
            expected: d.clone(),
            found: format!("directory {}", m.directory_uuid),
        }),
        (Some(m), _) => Err(refuse_other(m)),
        (None, _) if mode == Bind::Adopt => {
            write_binding(catalog, root, &catalog_uuid)?;
            Ok(Bound::Adopted { from: None })
        }
        (None, Some(d)) => Err(BindError::OtherDirectory {
            dir: root.to_owned(),
            catalog_path: catalog_path.to_owned(),
            expected: d.clone(),
            found: format!("not one (it has no {META_FILE})"),
        }),
        (None, None) => {
            // Never bound: a new box, or one recorded by a version before binding. Media the
            // catalog does not index means the catalog is not the one that recorded it.
            if catalog.segments(None)?.is_empty() {
                let files = layout::media_files(root, None)?.len();
                if files > 0 {
                    return Err(BindError::UnindexedMedia {
                        dir: root.to_owned(),
                        catalog_path: catalog_path.to_owned(),
                        files,
                    });
                }
            }
            if mode == Bind::Verify {
                return Ok(Bound::Unbound);
            }
            write_binding(catalog, root, &catalog_uuid)?;
            Ok(Bound::Bound)
        }
    }
}

fn write_binding(catalog: &Catalog, root: &Path, catalog_uuid: &str) -> Result<(), BindError> {
    std::fs::create_dir_all(root).map_err(crate::path_error::io_err("create directory", root))?;
    let meta = Meta {
        catalog_uuid: catalog_uuid.to_owned(),
        directory_uuid: new_uuid()?,
    };
    let mut json = serde_json::to_vec_pretty(&meta).expect("meta serializes");
    json.push(b'\n');
    fsx::write_small_file(&root.join(META_FILE), &json)?;
    catalog.set_directory_uuid(&meta.directory_uuid)?;
    info!(dir = %root.display(), catalog = catalog_uuid, directory = %meta.directory_uuid, "recording directory bound to the catalog");
    Ok(())
}

fn read_meta(root: &Path) -> Result<Option<Meta>, BindError> {
    let path = root.join(META_FILE);
    if fsx::entry(&path)? == fsx::Entry::Missing {
        return Ok(None);
    }
    let bad = |message: String| BindError::BadMeta {
        dir: root.to_owned(),
        message,
    };
    let bytes = crate::input::file::read_regular_file(&path, 4096, "the meta file")
        .map_err(|e| bad(e.to_string()))?;
    crate::input::json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| bad(e.to_string()))
}

fn new_uuid() -> Result<String, BindError> {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).map_err(|e| {
        PathError::new(
            "random bytes for",
            META_FILE,
            std::io::Error::other(e.to_string()),
        )
    })?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(dir: &Path) -> Catalog {
        Catalog::open(&dir.join("c.db")).unwrap()
    }

    #[test]
    fn a_new_directory_is_bound_once_and_then_agrees() {
        let d = tempfile::tempdir().unwrap();
        let c = open(d.path());
        let p = d.path().join("c.db");
        assert_eq!(
            bind(&c, &p, d.path(), Bind::Verify).unwrap(),
            Bound::Unbound
        );
        assert_eq!(bind(&c, &p, d.path(), Bind::Open).unwrap(), Bound::Bound);
        assert_eq!(bind(&c, &p, d.path(), Bind::Open).unwrap(), Bound::Agreed);
        assert_eq!(bind(&c, &p, d.path(), Bind::Verify).unwrap(), Bound::Agreed);
    }

    #[test]
    fn another_catalog_is_refused_until_adopted() {
        let d = tempfile::tempdir().unwrap();
        let media = d.path().join("media");
        let first = Catalog::open(&d.path().join("first.db")).unwrap();
        bind(&first, Path::new("first.db"), &media, Bind::Open).unwrap();
        let second = Catalog::open(&d.path().join("second.db")).unwrap();
        for mode in [Bind::Verify, Bind::Open] {
            let e = bind(&second, Path::new("second.db"), &media, mode).unwrap_err();
            assert!(matches!(e, BindError::OtherCatalog { .. }), "{e}");
            assert!(e.to_string().contains("--reindex"), "{e}");
        }
        let from = first.identity().unwrap().0;
        assert_eq!(
            bind(&second, Path::new("second.db"), &media, Bind::Adopt).unwrap(),
            Bound::Adopted { from: Some(from) }
        );
        assert!(matches!(
            bind(&first, Path::new("first.db"), &media, Bind::Open).unwrap_err(),
            BindError::OtherCatalog { .. }
        ));
    }

    #[test]
    fn a_bound_catalog_refuses_a_directory_without_meta() {
        let d = tempfile::tempdir().unwrap();
        let c = open(d.path());
        bind(&c, Path::new("c.db"), &d.path().join("a"), Bind::Open).unwrap();
        let e = bind(&c, Path::new("c.db"), &d.path().join("b"), Bind::Open).unwrap_err();
        assert!(matches!(e, BindError::OtherDirectory { .. }), "{e}");
    }

    #[test]
    fn unindexed_media_under_a_new_catalog_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let day = d.path().join("streams/cam/2026-01-01");
        std::fs::create_dir_all(&day).unwrap();
        std::fs::write(day.join("1767225600000.mkv"), b"x").unwrap();
        let c = open(d.path());
        let e = bind(&c, Path::new("c.db"), d.path(), Bind::Open).unwrap_err();
        assert!(
            matches!(e, BindError::UnindexedMedia { files: 1, .. }),
            "{e}"
        );
        assert!(day.join("1767225600000.mkv").exists());
    }

    #[test]
    fn an_interrupted_first_bind_completes() {
        let d = tempfile::tempdir().unwrap();
        let c = open(d.path());
        let uuid = c.identity().unwrap().0;
        let meta = format!("{{\"catalog_uuid\":\"{uuid}\",\"directory_uuid\":\"abc\"}}");
        std::fs::write(d.path().join(META_FILE), meta).unwrap();
        assert_eq!(
            bind(&c, Path::new("c.db"), d.path(), Bind::Open).unwrap(),
            Bound::Bound
        );
        assert_eq!(c.identity().unwrap().1.as_deref(), Some("abc"));
    }

    #[test]
    fn a_damaged_meta_file_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let c = open(d.path());
        std::fs::write(d.path().join(META_FILE), b"\0\0garbage").unwrap();
        let e = bind(&c, Path::new("c.db"), d.path(), Bind::Open).unwrap_err();
        assert!(matches!(e, BindError::BadMeta { .. }), "{e}");
        std::fs::remove_file(d.path().join(META_FILE)).unwrap();
        std::os::unix::fs::symlink("/dev/zero", d.path().join(META_FILE)).unwrap();
        assert!(bind(&c, Path::new("c.db"), d.path(), Bind::Open).is_err());
    }
}
