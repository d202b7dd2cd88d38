//! The local secrets file of local mode.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::{Lookup, SecretError, SecretSource};

/// Largest local secrets file read (a line per secret).
const MAX_FILE_BYTES: u64 = 1 << 20;

/// The local secrets file, re-read at every lookup so that an edited file applies when the
/// configuration is sent again:
///
/// ```yaml
/// arn:aws:secretsmanager:us-east-1:123456789012:secret:front-door: rtsp://user:pass@10.0.0.2/live
/// arn:aws:secretsmanager:us-east-1:123456789012:secret:demo: ../samples/clip.h264
/// ```
///
/// A value that is a relative path (no `scheme://`) is taken relative to the file's directory.
pub struct LocalSecretsFile {
    path: PathBuf,
}

impl LocalSecretsFile {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        LocalSecretsFile { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads and checks the whole file (for startup, so a broken file is noticed early).
    pub fn load(&self) -> Result<BTreeMap<String, String>, SecretsFileError> {
        let text = crate::input::read_regular_text(&self.path, MAX_FILE_BYTES, "the secrets file")
            .map_err(|e| SecretsFileError::Read(e.to_string()))?;
        parse(&text).map_err(|e| SecretsFileError::Parse {
            path: self.path.clone(),
            reason: e,
        })
    }

    fn lookup(&self, arn: &str) -> Result<String, SecretError> {
        let map = self.load().map_err(|e| SecretError::Unavailable {
            arn: arn.to_owned(),
            message: e.to_string(),
        })?;
        let value = map
            .get(arn)
            .ok_or_else(|| SecretError::NotFound(arn.to_owned()))?
            .trim();
        if value.contains("://") || value.starts_with('/') {
            return Ok(value.to_owned());
        }
        let base = self.path.parent().unwrap_or(Path::new("."));
        let joined = base.join(value);
        let abs = std::path::absolute(&joined).unwrap_or(joined);
        Ok(abs.display().to_string())
    }
}

/// Why the secrets file cannot be used; never quotes a value.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SecretsFileError {
    #[error("{0}")]
    Read(String),
    #[error("{}: {reason}", path.display())]
    Parse {
        path: PathBuf,
        reason: InvalidSecretsFile,
    },
}

/// The secrets YAML is not a mapping of ARNs to URIs; says where, never what.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid secrets file: {0}")]
pub struct InvalidSecretsFile(String);

/// Parses the secrets YAML: a mapping of strings to strings (an empty file is no secrets).
pub fn parse(text: &str) -> Result<BTreeMap<String, String>, InvalidSecretsFile> {
    if text
        .lines()
        .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'))
    {
        return Ok(BTreeMap::new());
    }
    // Errors of the YAML parser may quote the document; keep only their position.
    serde_saphyr::from_str::<BTreeMap<String, String>>(text).map_err(|e| {
        let msg = e.to_string();
        let first = msg.lines().next().unwrap_or("").to_owned();
        let safe = if first.contains("://") {
            "not a mapping of secret ARNs to URIs".to_owned()
        } else {
            first
        };
        InvalidSecretsFile(safe)
    })
}

/// Read at every lookup (a small local file), so an edited file applies at once.
impl SecretSource for LocalSecretsFile {
    fn media_uri<'a>(&'a self, arn: &'a str) -> Lookup<'a> {
        Box::pin(std::future::ready(self.lookup(arn)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::edge_config::JobError;
    use crate::secrets::NoSecrets;

    #[tokio::test]
    async fn local_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secrets.yaml");
        std::fs::write(
            &path,
            "# comment\na: rtsp://u:p@h/x\nb: clips/c.h264\nc: /abs/c.h264\n",
        )
        .unwrap();
        let s = LocalSecretsFile::new(&path);
        assert_eq!(s.media_uri("a").await.unwrap(), "rtsp://u:p@h/x");
        assert_eq!(
            s.media_uri("b").await.unwrap(),
            dir.path().join("clips/c.h264").display().to_string()
        );
        assert_eq!(s.media_uri("c").await.unwrap(), "/abs/c.h264");
        let e = s.media_uri("zz").await.unwrap_err();
        assert!(e.is_user_error());
        std::fs::write(&path, "- a list\n").unwrap();
        assert!(!s.media_uri("a").await.unwrap_err().is_user_error());
        std::fs::write(&path, "a: rtsp://u:hunter2@h/x\n  bad: [\n").unwrap();
        let e = s.media_uri("a").await.unwrap_err().to_string();
        assert!(!e.contains("hunter2"), "{e}");
        let missing = LocalSecretsFile::new(dir.path().join("none.yaml"));
        assert!(!missing.media_uri("a").await.unwrap_err().is_user_error());
        assert!(NoSecrets.media_uri("a").await.unwrap_err().is_user_error());
    }

    #[test]
    fn a_repeated_arn_is_refused_without_quoting_a_uri() {
        let e = parse("a: rtsp://u:hunter2@h/x\na: rtsp://u:hunter3@h/y\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("invalid secrets file"), "{e}");
        assert!(!e.contains("hunter"), "{e}");
    }

    #[test]
    fn empty_file_is_no_secrets() {
        assert!(parse("").unwrap().is_empty());
        assert!(parse("# only\n\n").unwrap().is_empty());
    }
}
