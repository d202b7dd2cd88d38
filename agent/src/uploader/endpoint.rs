//! GetDataEndpoint (APIName PUT_MEDIA), cached per stream, after DescribeStream.
//!
//! DescribeStream (in the Edge Agent's IAM policy) says whether the stream keeps data: with
//! DataRetentionInHours 0 the service never sends PERSISTED (seed: PutMedia, Persisted; PIC
//! waits for PERSISTED only when retention is not 0), so an upload could never be confirmed and
//! would be resent forever: such a stream is refused with a user error. A DescribeStream that
//! is not allowed is logged once and skipped, as the stream may still take uploads.
//!
//! The data endpoint of a stream rarely changes, and calling the control plane before every
//! PutMedia would add a round trip and count against its rate limit; the producer SDK caches it
//! for 40 minutes, and so does this. The SDK client honours `AWS_ENDPOINT_URL` and
//! `AWS_ENDPOINT_URL_KINESIS_VIDEO`, which is how tests and private endpoints reach it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_kinesisvideo::error::ProvideErrorMetadata;
use aws_sdk_kinesisvideo::types::ApiName;
use tracing::warn;

use super::{StreamTarget, UploadError};
use crate::clock::Clock;

/// How long a data endpoint is reused.
pub const ENDPOINT_TTL: Duration = Duration::from_secs(40 * 60);

pub struct EndpointCache {
    client: aws_sdk_kinesisvideo::Client,
    clock: Arc<dyn Clock>,
    ttl: Duration,
    /// Stream key -> (endpoint, monotonic time fetched).
    entries: Mutex<HashMap<String, (String, Duration)>>,
    /// Streams whose DescribeStream was refused (warned once).
    warned: Mutex<std::collections::HashSet<String>>,
}

impl EndpointCache {
    pub fn new(client: aws_sdk_kinesisvideo::Client, clock: Arc<dyn Clock>, ttl: Duration) -> Self {
        EndpointCache {
            client,
            clock,
            ttl,
            entries: Mutex::new(HashMap::new()),
            warned: Mutex::new(std::collections::HashSet::new()),
        }
    }

    /// The PutMedia endpoint of `stream`, from the cache while it is fresh.
    pub async fn get(&self, stream: &StreamTarget) -> Result<String, UploadError> {
        let key = stream.key();
        let now = self.clock.monotonic();
        if let Some((url, at)) = self.lock().get(key)
            && now.saturating_sub(*at) < self.ttl
        {
            return Ok(url.clone());
        }
        self.check_retention(stream).await?;
        let mut req = self.client.get_data_endpoint().api_name(ApiName::PutMedia);
        req = match stream {
            StreamTarget::Name(n) => req.stream_name(n),
            StreamTarget::Arn { arn, .. } => req.stream_arn(arn),
        };
        let out = req
            .send()
            .await
            .map_err(|e| control_error(key, "GetDataEndpoint", &e))?;
        let url = out
            .data_endpoint()
            .filter(|u| !u.is_empty())
            .ok_or_else(|| UploadError::Endpoint("GetDataEndpoint returned no endpoint".into()))?
            .trim_end_matches('/')
            .to_owned();
        self.lock().insert(key.to_owned(), (url.clone(), now));
        Ok(url)
    }

    /// Refuses a stream that keeps no data (see the module doc).
    async fn check_retention(&self, stream: &StreamTarget) -> Result<(), UploadError> {
        let key = stream.key();
        let mut req = self.client.describe_stream();
        req = match stream {
            StreamTarget::Name(n) => req.stream_name(n),
            StreamTarget::Arn { arn, .. } => req.stream_arn(arn),
        };
        match req.send().await {
            Ok(out) => {
                let hours = out.stream_info().and_then(|i| i.data_retention_in_hours());
                if hours == Some(0) {
                    return Err(UploadError::NoRetention {
                        stream: key.to_owned(),
                    });
                }
                Ok(())
            }
            Err(e) => match control_error(key, "DescribeStream", &e) {
                e @ UploadError::StreamNotFound { .. } => Err(e),
                UploadError::NotAuthorized(m) => {
                    let mut warned = self.lock_warned();
                    if warned.insert(key.to_owned()) {
                        warn!(
                            stream = key,
                            error = m,
                            "DescribeStream not allowed; retention not checked"
                        );
                    }
                    Ok(())
                }
                e => Err(e),
            },
        }
    }

    fn lock_warned(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<String>> {
        self.warned.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Forgets a stream's endpoint (after a connection failure or InvalidEndpointException).
    pub fn invalidate(&self, stream: &StreamTarget) {
        self.lock().remove(stream.key());
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (String, Duration)>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A control-plane call's failure, as the uploader classifies it.
fn control_error<E, R>(
    stream: &str,
    call: &str,
    e: &aws_sdk_kinesisvideo::error::SdkError<E, R>,
) -> UploadError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    let code = e.code().map(str::to_owned);
    let message = e.message().map(str::to_owned);
    match code.as_deref() {
        Some("ResourceNotFoundException") => UploadError::StreamNotFound {
            stream: stream.to_owned(),
        },
        Some("NotAuthorizedException" | "AccessDeniedException") => {
            UploadError::NotAuthorized(message.unwrap_or_else(|| format!("{call} not authorized")))
        }
        _ => UploadError::Endpoint(format!(
            "{}: {}",
            code.unwrap_or_else(|| format!("{call} failed")),
            message
                .unwrap_or_else(|| aws_sdk_kinesisvideo::error::DisplayErrorContext(e).to_string())
        )),
    }
}
