//! `MediaUriSecretArn` resolved with AWS Secrets Manager `GetSecretValue` (IoT and Greengrass
//! modes). The secret string is JSON with the key `MediaURI` ([`crate::secrets::media_uri_of`]).
//! Answers are cached ([`crate::secrets::Cache`]), so the round trip happens once per stream.
//!
//! Errors name the ARN, never the value. A missing secret, key or permission is the user's to fix
//! (USER_ERROR); network and throttling errors are retried by the caller.

use aws_sdk_secretsmanager::error::{DisplayErrorContext, ProvideErrorMetadata};
use aws_sdk_secretsmanager::operation::get_secret_value::GetSecretValueError;

use crate::secrets::{Cache, Lookup, SecretError, SecretSource, media_uri_of};

pub struct SecretsManagerSource {
    client: aws_sdk_secretsmanager::Client,
    cache: Cache,
}

impl SecretsManagerSource {
    /// A source using the region, credentials and endpoint of `sdk` (so
    /// `AWS_ENDPOINT_URL_SECRETS_MANAGER` applies when `sdk` came from `aws_config`).
    pub fn new(sdk: &aws_config::SdkConfig) -> Self {
        SecretsManagerSource {
            client: aws_sdk_secretsmanager::Client::new(sdk),
            cache: Cache::new("AWS Secrets Manager"),
        }
    }
}

impl SecretSource for SecretsManagerSource {
    fn media_uri<'a>(&'a self, arn: &'a str) -> Lookup<'a> {
        Box::pin(self.cache.media_uri(arn, fetch(&self.client, arn)))
    }

    fn refresh<'a>(&'a self, arn: &'a str) -> Lookup<'a> {
        Box::pin(self.cache.refresh(arn, fetch(&self.client, arn)))
    }
}

async fn fetch(client: &aws_sdk_secretsmanager::Client, arn: &str) -> Result<String, SecretError> {
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
    media_uri_of(text).map_err(|e| invalid(e.to_string()))
}
