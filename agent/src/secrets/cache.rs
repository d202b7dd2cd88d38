//! The cache in front of a network secret store (Secrets Manager, the Greengrass nucleus): a
//! fetched URI is reused for [`CACHE_FOR`], so the round trip happens once per stream, and a
//! rotated camera password applies at the next recorder restart after that (or at once through
//! [`Cache::refresh`], when the camera refused the cached one). Errors are not cached.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::SecretError;

/// How long a fetched URI is reused.
pub const CACHE_FOR: Duration = Duration::from_secs(600);
/// The longest one lookup waits for the store (the SDK's and the IPC client's own timeouts are
/// shorter); past it the lookup is Unavailable, retried by the recorder.
pub const ANSWER_WITHIN: Duration = Duration::from_secs(60);

pub struct Cache {
    entries: Mutex<HashMap<String, (Instant, String)>>,
    /// Who answers, for the errors ("AWS Secrets Manager").
    service: &'static str,
}

impl Cache {
    pub fn new(service: &'static str) -> Self {
        Cache {
            entries: Mutex::new(HashMap::new()),
            service,
        }
    }

    /// The cached URI of `arn`, or `fetch`'s answer (cached when it is one).
    pub async fn media_uri<F>(&self, arn: &str, fetch: F) -> Result<String, SecretError>
    where
        F: Future<Output = Result<String, SecretError>>,
    {
        let now = Instant::now();
        if let Some((at, uri)) = self.lock().get(arn)
            && now.duration_since(*at) < CACHE_FOR
        {
            return Ok(uri.clone());
        }
        let uri = tokio::time::timeout(ANSWER_WITHIN, fetch)
            .await
            .map_err(|_| SecretError::Unavailable {
                arn: arn.to_owned(),
                message: format!("{} did not answer in time", self.service),
            })??;
        self.lock().insert(arn.to_owned(), (now, uri.clone()));
        Ok(uri)
    }

    /// Forgets the cached URI of `arn` and asks `fetch`.
    pub async fn refresh<F>(&self, arn: &str, fetch: F) -> Result<String, SecretError>
    where
        F: Future<Output = Result<String, SecretError>>,
    {
        self.lock().remove(arn);
        self.media_uri(arn, fetch).await
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Instant, String)>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test]
    async fn answers_are_reused_errors_are_not() {
        let cache = Cache::new("test");
        let asked = AtomicU32::new(0);
        let asked = &asked;
        let fetch = |answer: Result<&'static str, SecretError>| async move {
            asked.fetch_add(1, Ordering::SeqCst);
            answer.map(str::to_owned)
        };
        let unavailable = SecretError::Unavailable {
            arn: "a".into(),
            message: "down".into(),
        };
        assert!(cache.media_uri("a", fetch(Err(unavailable))).await.is_err());
        assert_eq!(cache.media_uri("a", fetch(Ok("u1"))).await.unwrap(), "u1");
        assert_eq!(cache.media_uri("a", fetch(Ok("u2"))).await.unwrap(), "u1");
        assert_eq!(cache.refresh("a", fetch(Ok("u3"))).await.unwrap(), "u3");
        assert_eq!(
            asked.load(Ordering::SeqCst),
            3,
            "the cached answer asked nobody"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_hanging_store_is_unavailable_after_the_bound() {
        let cache = Cache::new("the test store");
        let e = cache
            .media_uri("a", std::future::pending())
            .await
            .unwrap_err();
        assert!(e.to_string().contains("did not answer in time"), "{e}");
    }
}
