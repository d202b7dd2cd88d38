//! The read-only HTTP server (`http.listen`): what an operator on site needs to see the box
//! without the cloud. Changes stay on MQTT and `ctl`; nothing here writes.
//!
//! - `GET /healthz`: 200 while the supervisor and the catalog answer (the systemd watchdog's
//!   check, [`crate::service::AgentHealth`]), else 503 with the reason.
//! - `GET /metrics`: Prometheus (OpenMetrics) text ([`metrics`]).
//! - `GET /api/v1/streams`, `/api/v1/streams/{name}`, `/api/v1/streams/{name}/recordings`
//!   ([`api`]).
//! - `GET /api/v1/streams/{name}/export.mp4` and `.mkv`: a range as a file ([`export`]).
//!
//! - `GET /`: a page showing each stream's state and a 24-hour timeline; a click plays that
//!   minute from the export endpoint (`page.html`, in the binary).
//!
//! Errors are JSON `{"message": ...}` with a 4xx or 5xx status. With a token (required off
//! loopback), every request must carry `Authorization: Bearer <token>` (or, for the page and
//! its video, which cannot set a header, `?access_token=<token>`, RFC 6750 2.3); the page and
//! `/healthz` included, since even what is recorded when is the site's business.
//!
//! Never a secret: responses are built from the catalog's configurations (secret ARNs, never
//! the media URIs they name), counters and the file system; no handler sees a secret source.

pub mod api;
pub mod export;
pub mod metrics;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;
use tracing::{info, warn};

use crate::clock::Clock;
use crate::service::{AgentHealth, Health};
use crate::stop::Stop;
use crate::supervisor::Supervisor;

/// The query parameter that may carry the token instead of the `Authorization` header.
pub(crate) const ACCESS_TOKEN: &str = "access_token";

/// How long `/healthz` waits for the supervisor and the catalog before calling them stuck.
const HEALTH_WITHIN: Duration = Duration::from_secs(2);

/// What the server is configured with.
#[derive(Clone, Debug)]
pub struct HttpConfig {
    pub listen: SocketAddr,
    /// The bearer token every request must carry.
    pub token: Option<String>,
    /// The longest export.
    pub max_export: Duration,
    /// The agent's thing (`ThingName` of the seed's metrics).
    pub thing: String,
}

/// Why the server cannot start.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("http.listen: cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("http.token_file {path}: {why}")]
    Token { path: String, why: String },
}

/// Reads the bearer token from `path`: one line, at least 16 characters, printable.
pub fn read_token(path: &std::path::Path) -> Result<String, HttpError> {
    let err = |why: String| HttpError::Token {
        path: path.display().to_string(),
        why,
    };
    let text = crate::input::read_regular_text(path, 4096, "the token file")
        .map_err(|e| err(e.to_string()))?;
    let token = text.trim();
    if token.len() < 16 {
        return Err(err(format!(
            "holds {} characters; a token needs at least 16",
            token.len()
        )));
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(err(
            "holds spaces or characters that are not printable ASCII".into(),
        ));
    }
    Ok(token.to_owned())
}

/// What every handler shares.
#[derive(Clone)]
pub(crate) struct AppState {
    pub supervisor: Supervisor,
    pub clock: Arc<dyn Clock>,
    /// One health check at a time: a check stuck on the catalog is awaited again by the next
    /// rather than piling up blocking threads.
    pub health: Arc<tokio::sync::Mutex<AgentHealth>>,
    pub token: Option<Arc<str>>,
    pub max_export_ms: i64,
    /// The agent's thing, for the metrics.
    pub thing: String,
}

/// An error response: a status and a message naming what was wrong.
#[derive(Debug)]
pub(crate) struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::NOT_FOUND,
            message: message.into(),
        }
    }

    pub fn internal(message: impl std::fmt::Display) -> ApiError {
        ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: message.to_string(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = axum::Json(serde_json::json!({ "message": self.message }));
        (self.status, body).into_response()
    }
}

impl From<crate::catalog::CatalogError> for ApiError {
    fn from(e: crate::catalog::CatalogError) -> ApiError {
        ApiError::internal(format!("the catalog: {e}"))
    }
}

/// The catalog from a handler, on the blocking pool.
pub(crate) async fn db<T, F>(state: &AppState, f: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce(&crate::catalog::Catalog) -> Result<T, crate::catalog::CatalogError> + Send + 'static,
{
    match state.supervisor.catalog().blocking(f).await {
        Ok(r) => Ok(r?),
        Err(e) => Err(ApiError::internal(format!("a catalog read failed: {e}"))),
    }
}

pub(crate) fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/streams", get(api::streams))
        .route("/streams/:name", get(api::stream))
        .route("/streams/:name/recordings", get(api::recordings))
        .route("/streams/:name/export.mp4", get(export::mp4))
        .route("/streams/:name/export.mkv", get(export::mkv));
    Router::new()
        .route("/", get(page))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics::metrics))
        .nest("/api/v1", api)
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            authorize,
        ))
        .with_state(state)
}

/// The page: one file in the binary, nothing fetched from elsewhere (sites are offline).
async fn page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; script-src 'self' 'unsafe-inline'; \
                 style-src 'self' 'unsafe-inline'",
            ),
        ],
        include_str!("page.html"),
    )
        .into_response()
}

async fn not_found(req: Request) -> ApiError {
    ApiError::not_found(format!(
        "no such endpoint: {}",
        crate::input::quote(req.uri().path())
    ))
}

/// Compares in time independent of where the first difference is.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn authorize(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let Some(token) = &state.token else {
        return next.run(req).await;
    };
    let header = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|v| v.trim().to_owned());
    // RFC 6750 2.3: the page's own requests (its video above all) cannot set a header.
    let given = header.or_else(|| {
        url::form_urlencoded::parse(req.uri().query().unwrap_or_default().as_bytes())
            .find(|(k, _)| k == ACCESS_TOKEN)
            .map(|(_, v)| v.into_owned())
    });
    match given {
        Some(g) if same(g.as_bytes(), token.as_bytes()) => next.run(req).await,
        _ => {
            let mut r = ApiError {
                status: StatusCode::UNAUTHORIZED,
                message: "this listener needs `Authorization: Bearer <token>` or \
                          `?access_token=<token>` (http.token_file)"
                    .into(),
            }
            .into_response();
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            r
        }
    }
}

async fn healthz(State(state): State<AppState>) -> Response {
    let mut health = state.health.lock().await;
    let deadline = tokio::time::Instant::now() + HEALTH_WITHIN;
    match health.check(deadline).await {
        Ok(streams) => {
            axum::Json(serde_json::json!({ "status": "ok", "streams": streams })).into_response()
        }
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(serde_json::json!({ "status": "unhealthy", "message": e.to_string() })),
        )
            .into_response(),
    }
}

/// Binds the listener (before the agent says it is ready, so a taken port is known at once).
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, HttpError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| HttpError::Bind { addr, source })
}

/// Serves until `stop`; requests in progress (an export) are cut then.
pub async fn serve(
    listener: TcpListener,
    cfg: HttpConfig,
    supervisor: Supervisor,
    clock: Arc<dyn Clock>,
    mut stop: Stop,
) {
    let addr = listener.local_addr().ok();
    let state = AppState {
        health: Arc::new(tokio::sync::Mutex::new(AgentHealth::new(
            supervisor.clone(),
        ))),
        supervisor,
        clock,
        token: cfg.token.map(Arc::from),
        max_export_ms: i64::try_from(cfg.max_export.as_millis()).unwrap_or(i64::MAX),
        thing: cfg.thing,
    };
    info!(
        listen = ?addr,
        token = state.token.is_some(),
        "HTTP server listening"
    );
    let app = router(state);
    let served = axum::serve(listener, app).with_graceful_shutdown(async move {
        stop.stopped().await;
    });
    if let Err(e) = served.await {
        warn!(error = %e, "the HTTP server stopped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_whole() {
        assert!(same(b"abcdefghijklmnop", b"abcdefghijklmnop"));
        assert!(!same(b"abcdefghijklmnop", b"abcdefghijklmnoq"));
        assert!(!same(b"abcdefghijklmnop", b"abcdefghijklmno"));
        assert!(!same(b"", b"x"));
    }

    #[test]
    fn a_token_file_is_checked() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("token");
        std::fs::write(&p, "short\n").unwrap();
        let e = read_token(&p).unwrap_err().to_string();
        assert!(
            e.contains("http.token_file") && e.contains("at least 16"),
            "{e}"
        );
        std::fs::write(&p, "has a space in it, long enough\n").unwrap();
        assert!(
            read_token(&p)
                .unwrap_err()
                .to_string()
                .contains("printable")
        );
        std::fs::write(&p, "0123456789abcdef0123\n").unwrap();
        assert_eq!(read_token(&p).unwrap(), "0123456789abcdef0123");
        let missing = read_token(&dir.path().join("none"))
            .unwrap_err()
            .to_string();
        assert!(missing.contains("http.token_file"), "{missing}");
    }
}
