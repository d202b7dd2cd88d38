//! GetDataEndpoint (APIName PUT_MEDIA), cached per stream.
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
}

impl EndpointCache {
    pub fn new(client: aws_sdk_kinesisvideo::Client, clock: Arc<dyn Clock>, ttl: Duration) -> Self {
        EndpointCache {
            client,
            clock,
            ttl,
            entries: Mutex::new(HashMap::new()),
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
        let mut req = self.client.get_data_endpoint().api_name(ApiName::PutMedia);
        req = match stream {
            StreamTarget::Name(n) => req.stream_name(n),
            StreamTarget::Arn { arn, .. } => req.stream_arn(arn),
        };
        let out = req.send().await.map_err(|e| {
            let code = e.code().map(str::to_owned);
            let message = e.message().map(str::to_owned);
            match code.as_deref() {
                Some("ResourceNotFoundException") => UploadError::StreamNotFound {
                    stream: key.to_owned(),
                },
                Some("NotAuthorizedException") => UploadError::NotAuthorized(
                    message.unwrap_or_else(|| "GetDataEndpoint not authorized".into()),
                ),
                _ => UploadError::Endpoint(format!(
                    "{}: {}",
                    code.unwrap_or_else(|| "GetDataEndpoint failed".into()),
                    message.unwrap_or_else(
                        || aws_sdk_kinesisvideo::error::DisplayErrorContext(&e).to_string()
                    )
                )),
            }
        })?;
        let url = out
            .data_endpoint()
            .filter(|u| !u.is_empty())
            .ok_or_else(|| UploadError::Endpoint("GetDataEndpoint returned no endpoint".into()))?
            .trim_end_matches('/')
            .to_owned();
        self.lock().insert(key.to_owned(), (url.clone(), now));
        Ok(url)
    }

    /// Forgets a stream's endpoint (after a connection failure or InvalidEndpointException).
    pub fn invalidate(&self, stream: &StreamTarget) {
        self.lock().remove(stream.key());
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (String, Duration)>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }
}
