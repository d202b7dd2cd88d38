//! Where a stream's media URI comes from: `MediaUriSecretArn` names a secret whose value is the
//! URI (with the camera's password). In local mode the secrets are a YAML file mapping each ARN
//! to its URI ([`LocalSecretsFile`]); in IoT and Greengrass modes AWS Secrets Manager or the
//! Greengrass nucleus is asked (in `crate::aws`), through the same [`SecretSource`] trait.
//!
//! The trait is async because its network implementations are: a lookup that hangs (Secrets
//! Manager unreachable) holds up only the stream that asked, never a thread or the other
//! streams. The URI is a secret: it never reaches logs, status details or `reported` payloads;
//! errors name the ARN only.

mod cache;
mod local;

use std::future::Future;
use std::pin::Pin;

use crate::edge_config::{JobError, JobStatus};

pub use cache::{ANSWER_WITHIN, CACHE_FOR, Cache};
pub use local::{LocalSecretsFile, SecretsFileError, parse};

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// The secret does not exist: the configuration must change (USER_ERROR).
    #[error("the secret {0} is not known to this agent")]
    NotFound(String),
    /// The secret exists but cannot be used as it is (no permission, no `MediaURI` key, not
    /// JSON): the user must fix it (USER_ERROR).
    #[error("the secret {arn} cannot be used: {reason}")]
    Invalid { arn: String, reason: String },
    /// The source could not be asked now (network, file unreadable): retried.
    #[error("cannot read the secret {arn}: {message}")]
    Unavailable { arn: String, message: String },
}

impl JobError for SecretError {
    fn job_status(&self) -> JobStatus {
        match self {
            SecretError::NotFound(_) | SecretError::Invalid { .. } => JobStatus::UserError,
            SecretError::Unavailable { .. } => JobStatus::SystemError,
        }
    }
}

/// A lookup's answer, to come.
pub type Lookup<'a> = Pin<Box<dyn Future<Output = Result<String, SecretError>> + Send + 'a>>;

/// Resolves a `MediaUriSecretArn` to the media URI.
pub trait SecretSource: Send + Sync {
    fn media_uri<'a>(&'a self, arn: &'a str) -> Lookup<'a>;

    /// The URI asked again of the secret store, bypassing any cache: the camera refused what
    /// the cache held, and the secret may have been rotated since.
    fn refresh<'a>(&'a self, arn: &'a str) -> Lookup<'a> {
        self.media_uri(arn)
    }
}

/// No secrets at all (local mode without a secrets file): every lookup says not found.
pub struct NoSecrets;

impl SecretSource for NoSecrets {
    fn media_uri<'a>(&'a self, arn: &'a str) -> Lookup<'a> {
        Box::pin(std::future::ready(Err(SecretError::NotFound(
            arn.to_owned(),
        ))))
    }
}

/// Why a secret's value is not a usable media URI; never quotes the value.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadSecretValue(String);

/// The JSON key of the media URI in a Secrets Manager secret string.
pub const MEDIA_URI_KEY: &str = "MediaURI";

/// The `MediaURI` of a secret string (`{"MediaURI": "rtsp://..."}`, the key case-sensitive as
/// the AWS setup guide warns).
pub fn media_uri_of(secret_string: &str) -> Result<String, BadSecretValue> {
    let bad = |s: String| BadSecretValue(s);
    let value: serde_json::Value = crate::input::json::from_str(secret_string).map_err(|e| {
        bad(if e.is_data() {
            // A repeated key: the message names the key, never a value.
            format!("its value is ambiguous JSON: {e}")
        } else {
            format!("its value is not JSON; store it as key/value with the key {MEDIA_URI_KEY}")
        })
    })?;
    let map = value.as_object().ok_or_else(|| {
        bad(format!(
            "its value is not a JSON object; store it as key/value with the key {MEDIA_URI_KEY}"
        ))
    })?;
    match map.get(MEDIA_URI_KEY) {
        Some(serde_json::Value::String(uri)) if !uri.trim().is_empty() => Ok(uri.trim().to_owned()),
        Some(_) => Err(bad(format!(
            "its key {MEDIA_URI_KEY} is not a non-empty string"
        ))),
        None => Err(bad(format!(
            "it has no key {MEDIA_URI_KEY} (the key is case-sensitive)"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_uri_key_is_case_sensitive_and_never_quoted() {
        assert_eq!(
            media_uri_of(r#"{"MediaURI":" rtsp://u:p@h/x "}"#).unwrap(),
            "rtsp://u:p@h/x"
        );
        let e = media_uri_of(r#"{"MediaUri":"rtsp://u:hunter2@h/x"}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("no key MediaURI"), "{e}");
        assert!(!e.contains("hunter2"), "{e}");
        let e = media_uri_of("rtsp://u:hunter2@h/x")
            .unwrap_err()
            .to_string();
        assert!(e.contains("not JSON") && !e.contains("hunter2"), "{e}");
        let e = media_uri_of(r#"["rtsp://u:hunter2@h/x"]"#)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("not a JSON object") && !e.contains("hunter2"),
            "{e}"
        );
        assert!(media_uri_of(r#"{"MediaURI":7}"#).is_err());
        assert!(media_uri_of(r#"{"MediaURI":""}"#).is_err());
        let e = media_uri_of(r#"{"MediaURI":"rtsp://u:hunter2@h/x","MediaURI":"rtsp://h/y"}"#)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(r#"duplicate key "MediaURI""#) && !e.contains("hunter2"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn no_secrets_knows_none() {
        assert!(NoSecrets.media_uri("a").await.unwrap_err().is_user_error());
    }
}
