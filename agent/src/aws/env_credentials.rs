//! Environment credentials that carry an expiry (`AWS_CREDENTIAL_EXPIRATION`, RFC 3339).
//!
//! botocore and other SDKs read the variable beside `AWS_ACCESS_KEY_ID`; the Rust SDK's
//! environment provider does not, so credentials handed to the agent by a wrapper that knows
//! they expire would be used past their end. With the expiry known, an upload session rotates
//! before it (uploader/putmedia.rs) instead of being cut by the service.

use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;

/// The variable naming when the environment's credentials expire.
pub const EXPIRATION: &str = "AWS_CREDENTIAL_EXPIRATION";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EnvCredentialsError {
    #[error("{EXPIRATION} is not an RFC 3339 time (such as 2026-12-02T18:00:00Z): {0}")]
    Expiration(String),
    #[error("{EXPIRATION} is set but {0} is not")]
    Missing(&'static str),
}

/// The environment's credentials with their expiry, when `AWS_CREDENTIAL_EXPIRATION` is set;
/// `None` otherwise (the SDK's own chain then applies). `var` reads a variable.
pub fn with_expiry(
    var: impl Fn(&str) -> Option<String>,
) -> Result<Option<Credentials>, EnvCredentialsError> {
    let Some(expiration) = var(EXPIRATION).filter(|v| !v.trim().is_empty()) else {
        return Ok(None);
    };
    let at: jiff::Timestamp = expiration
        .trim()
        .parse()
        .map_err(|e: jiff::Error| EnvCredentialsError::Expiration(e.to_string()))?;
    let expiry = u64::try_from(at.as_millisecond())
        .map(|ms| SystemTime::UNIX_EPOCH + Duration::from_millis(ms))
        .map_err(|_| EnvCredentialsError::Expiration("before 1970".into()))?;
    let key = var("AWS_ACCESS_KEY_ID").ok_or(EnvCredentialsError::Missing("AWS_ACCESS_KEY_ID"))?;
    let secret = var("AWS_SECRET_ACCESS_KEY")
        .ok_or(EnvCredentialsError::Missing("AWS_SECRET_ACCESS_KEY"))?;
    Ok(Some(Credentials::new(
        key,
        secret,
        var("AWS_SESSION_TOKEN").filter(|t| !t.is_empty()),
        Some(expiry),
        "EnvironmentWithExpiry",
    )))
}

/// The SDK configuration from the environment, with [`with_expiry`]'s credentials when the
/// expiry is given.
pub async fn sdk_config() -> Result<aws_config::SdkConfig, EnvCredentialsError> {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
    if let Some(c) = with_expiry(|k| std::env::var(k).ok())? {
        loader = loader.credentials_provider(c);
    }
    Ok(loader.load().await)
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_credential_types::provider::ProvideCredentials;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn without_the_variable_the_sdk_chain_applies() {
        assert_eq!(with_expiry(env(&[("AWS_ACCESS_KEY_ID", "AK")])), Ok(None));
    }

    #[tokio::test]
    async fn the_expiry_is_carried() {
        let c = with_expiry(env(&[
            ("AWS_ACCESS_KEY_ID", "AK"),
            ("AWS_SECRET_ACCESS_KEY", "SK"),
            ("AWS_SESSION_TOKEN", "TOKEN"),
            (EXPIRATION, "2026-12-02T18:00:00Z"),
        ]))
        .unwrap()
        .unwrap();
        let c = c.provide_credentials().await.unwrap();
        assert_eq!(c.access_key_id(), "AK");
        assert_eq!(c.session_token(), Some("TOKEN"));
        let want: jiff::Timestamp = "2026-12-02T18:00:00Z".parse().unwrap();
        let got = c
            .expiry()
            .unwrap()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap();
        assert_eq!(got.as_millis() as i64, want.as_millisecond());
    }

    #[test]
    fn bad_values_name_the_variable() {
        let e = with_expiry(env(&[
            ("AWS_ACCESS_KEY_ID", "AK"),
            ("AWS_SECRET_ACCESS_KEY", "SK"),
            (EXPIRATION, "tomorrow"),
        ]))
        .unwrap_err();
        assert!(e.to_string().starts_with(EXPIRATION), "{e}");
        let e = with_expiry(env(&[(EXPIRATION, "2026-12-02T18:00:00Z")])).unwrap_err();
        assert_eq!(e, EnvCredentialsError::Missing("AWS_ACCESS_KEY_ID"));
    }
}
