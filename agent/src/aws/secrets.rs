//! `MediaUriSecretArn` resolved with AWS Secrets Manager `GetSecretValue` (IoT and Greengrass
//! modes). The secret string is JSON with the key `MediaURI` (case-sensitive, as the AWS setup
//! guide warns), e.g. `{"MediaURI": "rtsp://user:pass@10.0.0.2/live"}`.
//!
//! [`SecretSource`] is synchronous (the supervisor asks it at apply time and at each recorder
//! start), while the SDK is async: a worker thread with its own small runtime owns the client and
//! the caller waits for its answer. Answers are cached for [`CACHE_FOR`], so the wait (one HTTPS
//! round trip) happens once per stream, and a changed camera password applies at the next
//! recorder restart after that.
//!
//! Errors name the ARN, never the value. A missing secret, key or permission is the user's to fix
//! (fatal for the job: USER_ERROR); network and throttling errors are retried by the caller.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use aws_sdk_secretsmanager::error::{DisplayErrorContext, ProvideErrorMetadata};
use aws_sdk_secretsmanager::operation::get_secret_value::GetSecretValueError;

use crate::supervisor::secrets::{SecretError, SecretSource};

/// How long a fetched URI is reused.
pub const CACHE_FOR: Duration = Duration::from_secs(600);
/// The longest a caller waits for an answer (the SDK's and the IPC client's own timeouts are
/// shorter).
const ANSWER_WITHIN: Duration = Duration::from_secs(60);
/// The JSON key of the media URI in the secret string.
pub const MEDIA_URI_KEY: &str = "MediaURI";

pub(crate) type Answer = Result<String, SecretError>;

pub struct SecretsManagerSource {
    worker: CachedWorker,
}

impl SecretsManagerSource {
    /// A source using the region, credentials and endpoint of `sdk` (so
    /// `AWS_ENDPOINT_URL_SECRETS_MANAGER` applies when `sdk` came from `aws_config`).
    pub fn new(sdk: &aws_config::SdkConfig) -> std::io::Result<Self> {
        let client = aws_sdk_secretsmanager::Client::new(sdk);
        let worker = CachedWorker::spawn("secretsmanager", "AWS Secrets Manager", move |arn| {
            let client = client.clone();
            async move { fetch(&client, &arn).await }
        })?;
        Ok(SecretsManagerSource { worker })
    }
}

impl SecretSource for SecretsManagerSource {
    fn media_uri(&self, arn: &str) -> Result<String, SecretError> {
        self.worker.media_uri(arn)
    }

    fn refresh(&self, arn: &str) -> Result<String, SecretError> {
        self.worker.refresh(arn)
    }
}

/// The synchronous, cached face of an async fetch (shared by the Secrets Manager and the
/// Greengrass IPC sources): a worker thread with its own small runtime runs `fetch` and the
/// caller waits for its answer, so it may be asked from inside another runtime. Successful
/// answers are reused for [`CACHE_FOR`]; errors are not cached.
pub(crate) struct CachedWorker {
    requests: tokio::sync::mpsc::UnboundedSender<(String, std::sync::mpsc::Sender<Answer>)>,
    cache: Mutex<HashMap<String, (Instant, String)>>,
    /// Who answers, for the errors ("AWS Secrets Manager").
    service: &'static str,
}

impl CachedWorker {
    pub(crate) fn spawn<F, Fut>(
        thread: &str,
        service: &'static str,
        fetch: F,
    ) -> std::io::Result<Self>
    where
        F: Fn(String) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Answer>,
    {
        let (tx, mut rx) =
            tokio::sync::mpsc::unbounded_channel::<(String, std::sync::mpsc::Sender<Answer>)>();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        std::thread::Builder::new()
            .name(thread.into())
            .spawn(move || {
                // Ends when the source (the only sender) is dropped.
                rt.block_on(async move {
                    while let Some((arn, reply)) = rx.recv().await {
                        let _ = reply.send(fetch(arn).await);
                    }
                })
            })?;
        Ok(CachedWorker {
            requests: tx,
            cache: Mutex::new(HashMap::new()),
            service,
        })
    }

    fn ask(&self, arn: &str) -> Answer {
        let unavailable = |message: String| SecretError::Unavailable {
            arn: arn.to_owned(),
            message,
        };
        let (reply, answer) = std::sync::mpsc::channel();
        self.requests
            .send((arn.to_owned(), reply))
            .map_err(|_| unavailable(format!("the {} worker stopped", self.service)))?;
        answer
            .recv_timeout(ANSWER_WITHIN)
            .map_err(|_| unavailable(format!("{} did not answer in time", self.service)))?
    }

    pub(crate) fn media_uri(&self, arn: &str) -> Answer {
        let now = Instant::now();
        let cache = || self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((at, uri)) = cache().get(arn)
            && now.duration_since(*at) < CACHE_FOR
        {
            return Ok(uri.clone());
        }
        let uri = self.ask(arn)?;
        cache().insert(arn.to_owned(), (now, uri.clone()));
        Ok(uri)
    }

    /// Forgets the cached URI and asks again.
    pub(crate) fn refresh(&self, arn: &str) -> Answer {
        self.cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(arn);
        self.media_uri(arn)
    }
}

async fn fetch(client: &aws_sdk_secretsmanager::Client, arn: &str) -> Answer {
    let invalid = |reason: String| SecretError::Invalid {
        arn: arn.to_owned(),
        reason,
    };
    let out = match client.get_secret_value().secret_id(arn).send().await {
        Ok(out) => out,
        Err(e) => {
            return Err(match e.as_service_error() {
                Some(GetSecretValueError::ResourceNotFoundException(_)) => invalid(
                    "it does not exist in AWS Secrets Manager (check the ARN and the region)"
                        .into(),
                ),
                Some(se) if se.code() == Some("AccessDeniedException") => invalid(
                    "access denied: the agent's role needs secretsmanager:GetSecretValue on it"
                        .into(),
                ),
                Some(se) if se.code() == Some("DecryptionFailure") => invalid(
                    "it cannot be decrypted: the agent's role needs kms:Decrypt on its key".into(),
                ),
                _ => SecretError::Unavailable {
                    arn: arn.to_owned(),
                    message: DisplayErrorContext(&e).to_string(),
                },
            });
        }
    };
    let text = out
        .secret_string()
        .ok_or_else(|| invalid("it has no secret string (a binary secret?)".into()))?;
    media_uri_of(text).map_err(invalid)
}

/// The `MediaURI` of a secret string; the error never quotes the string.
pub fn media_uri_of(secret_string: &str) -> Result<String, String> {
    let value: serde_json::Value = crate::input::json::from_str(secret_string).map_err(|e| {
        if e.is_data() {
            // A repeated key: the message names the key, never a value.
            format!("its value is ambiguous JSON: {e}")
        } else {
            format!("its value is not JSON; store it as key/value with the key {MEDIA_URI_KEY}")
        }
    })?;
    let map = value.as_object().ok_or_else(|| {
        format!(
            "its value is not a JSON object; store it as key/value with the key {MEDIA_URI_KEY}"
        )
    })?;
    match map.get(MEDIA_URI_KEY) {
        Some(serde_json::Value::String(uri)) if !uri.trim().is_empty() => Ok(uri.trim().to_owned()),
        Some(_) => Err(format!("its key {MEDIA_URI_KEY} is not a non-empty string")),
        None => Err(format!(
            "it has no key {MEDIA_URI_KEY} (the key is case-sensitive)"
        )),
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
        let e = media_uri_of(r#"{"MediaUri":"rtsp://u:hunter2@h/x"}"#).unwrap_err();
        assert!(e.contains("no key MediaURI"), "{e}");
        assert!(!e.contains("hunter2"), "{e}");
        let e = media_uri_of("rtsp://u:hunter2@h/x").unwrap_err();
        assert!(e.contains("not JSON") && !e.contains("hunter2"), "{e}");
        let e = media_uri_of(r#"["rtsp://u:hunter2@h/x"]"#).unwrap_err();
        assert!(
            e.contains("not a JSON object") && !e.contains("hunter2"),
            "{e}"
        );
        assert!(media_uri_of(r#"{"MediaURI":7}"#).is_err());
        assert!(media_uri_of(r#"{"MediaURI":""}"#).is_err());
        let e = media_uri_of(r#"{"MediaURI":"rtsp://u:hunter2@h/x","MediaURI":"rtsp://h/y"}"#)
            .unwrap_err();
        assert!(
            e.contains(r#"duplicate key "MediaURI""#) && !e.contains("hunter2"),
            "{e}"
        );
    }
}
