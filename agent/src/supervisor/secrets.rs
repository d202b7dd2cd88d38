//! Where a stream's media URI comes from: `MediaUriSecretArn` names a secret whose value is the
//! URI (with the camera's password). In local mode the secrets are a YAML file mapping each ARN
//! to its URI; in IoT and Greengrass modes AWS Secrets Manager is asked ([`crate::aws::secrets`]),
//! through the same [`SecretSource`] trait.
//!
//! The URI is a secret: it never reaches logs, status details or `reported` payloads; errors
//! name the ARN only.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// The secret does not exist: the configuration must change (fatal for the job).
    #[error("the secret {0} is not known to this agent")]
    NotFound(String),
    /// The secret exists but cannot be used as it is (no permission, no `MediaURI` key, not
    /// JSON): the user must fix it (fatal for the job).
    #[error("the secret {arn} cannot be used: {reason}")]
    Invalid { arn: String, reason: String },
    /// The source could not be asked now (network, file unreadable): retry later.
    #[error("cannot read the secret {arn}: {message}")]
    Unavailable { arn: String, message: String },
}

impl SecretError {
    pub fn is_fatal(&self) -> bool {
        matches!(self, SecretError::NotFound(_) | SecretError::Invalid { .. })
    }
}

/// Resolves a `MediaUriSecretArn` to the media URI.
pub trait SecretSource: Send + Sync {
    fn media_uri(&self, arn: &str) -> Result<String, SecretError>;

    /// The URI asked again of the secret store, bypassing any cache: the camera refused what
    /// the cache held, and the secret may have been rotated since.
    fn refresh(&self, arn: &str) -> Result<String, SecretError> {
        self.media_uri(arn)
    }
}

/// No secrets at all (local mode without a secrets file): every lookup says not found.
pub struct NoSecrets;

impl SecretSource for NoSecrets {
    fn media_uri(&self, arn: &str) -> Result<String, SecretError> {
        Err(SecretError::NotFound(arn.to_owned()))
    }
}

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
    pub fn load(&self) -> Result<BTreeMap<String, String>, String> {
        let text = crate::input::read_regular_text(&self.path, MAX_FILE_BYTES, "the secrets file")
            .map_err(|e| e.to_string())?;
        parse(&text).map_err(|e| format!("{}: {e}", self.path.display()))
    }
}

/// Parses the secrets YAML: a mapping of strings to strings (an empty file is no secrets).
pub fn parse(text: &str) -> Result<BTreeMap<String, String>, String> {
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
        format!("invalid secrets file: {safe}")
    })
}

impl SecretSource for LocalSecretsFile {
    fn media_uri(&self, arn: &str) -> Result<String, SecretError> {
        let map = self.load().map_err(|message| SecretError::Unavailable {
            arn: arn.to_owned(),
            message,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secrets.yaml");
        std::fs::write(
            &path,
            "# comment\na: rtsp://u:p@h/x\nb: clips/c.h264\nc: /abs/c.h264\n",
        )
        .unwrap();
        let s = LocalSecretsFile::new(&path);
        assert_eq!(s.media_uri("a").unwrap(), "rtsp://u:p@h/x");
        assert_eq!(
            s.media_uri("b").unwrap(),
            dir.path().join("clips/c.h264").display().to_string()
        );
        assert_eq!(s.media_uri("c").unwrap(), "/abs/c.h264");
        let e = s.media_uri("zz").unwrap_err();
        assert!(e.is_fatal());
        std::fs::write(&path, "- a list\n").unwrap();
        assert!(!s.media_uri("a").unwrap_err().is_fatal());
        std::fs::write(&path, "a: rtsp://u:hunter2@h/x\n  bad: [\n").unwrap();
        let e = s.media_uri("a").unwrap_err().to_string();
        assert!(!e.contains("hunter2"), "{e}");
        let missing = LocalSecretsFile::new(dir.path().join("none.yaml"));
        assert!(!missing.media_uri("a").unwrap_err().is_fatal());
        assert!(NoSecrets.media_uri("a").unwrap_err().is_fatal());
    }

    #[test]
    fn a_repeated_arn_is_refused_without_quoting_a_uri() {
        let e = parse("a: rtsp://u:hunter2@h/x\na: rtsp://u:hunter3@h/y\n").unwrap_err();
        assert!(e.starts_with("invalid secrets file"), "{e}");
        assert!(!e.contains("hunter"), "{e}");
    }

    #[test]
    fn empty_file_is_no_secrets() {
        assert!(parse("").unwrap().is_empty());
        assert!(parse("# only\n\n").unwrap().is_empty());
    }
}
