//! The status HTTP server (axum): `GET /metrics`, `GET /healthz`, `GET /status`,
//! `GET /meter`, `POST /reconnect`, all read from (or, for the reconnect, sent through) the [`StatusHub`].
//!
//! With a token, every request needs `Authorization: Bearer <token>` (compared in constant
//! time, over SHA-256 digests so not even the length leaks); anything else gets 401 with
//! `WWW-Authenticate: Bearer`. The token is never logged or returned.

use super::health::health;
use super::hub::StatusHub;
use super::json::{meter_json, status_json};
use super::metrics;
use super::settings::{is_loopback, StatusSettings};
use crate::secret::Secret;
use crate::setting::InvalidSetting;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use sha2::{Digest, Sha256};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Why the status server cannot start. Every message names the key to change.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error(transparent)]
    Address(InvalidSetting),
    #[error("status.listen: cannot listen on {addr}: {source}; pick a free port or another address for listen under [status] (or set enabled = false)")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("status.token_file: required because status.listen ({addr}) is not a loopback address: set token_file under [status] to a root-only file holding a random token, or listen on 127.0.0.1")]
    TokenRequired { addr: SocketAddr },
}

#[derive(Clone)]
struct AppState {
    hub: StatusHub,
    /// SHA-256 of the token, if one is required.
    token: Option<Arc<[u8; 32]>>,
}

fn digest(s: &[u8]) -> [u8; 32] {
    Sha256::digest(s).into()
}

/// Equal without an early exit.
fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The router over `hub`, requiring `token` if given. ([`serve`] binds and runs it.)
pub(super) fn router(hub: StatusHub, token: Option<Secret>) -> Router {
    let state = AppState {
        hub,
        token: token.map(|t| Arc::new(digest(t.expose().as_bytes()))),
    };
    Router::new()
        .route("/", get(index))
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(healthz))
        .route("/status", get(status))
        .route("/meter", get(meter))
        .route("/reconnect", post(reconnect))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), auth))
        .with_state(state)
}

/// Binds `cfg.listen` (port 0 picks a free one) and serves until `shutdown` completes, on a
/// spawned task. Returns the bound address and the task. Serves whatever `cfg.enabled` says:
/// the caller decides whether to call this. Refuses a non-loopback address without a token.
pub async fn serve(
    cfg: &StatusSettings,
    hub: StatusHub,
    token: Option<Secret>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(SocketAddr, JoinHandle<()>), StatusError> {
    let addr = cfg.listen_addr().map_err(StatusError::Address)?;
    if token.is_none() && !is_loopback(&addr) {
        return Err(StatusError::TokenRequired { addr });
    }
    let auth = token.is_some();
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| StatusError::Bind { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| StatusError::Bind { addr, source })?;
    let app = router(hub, token);
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::warn!(error = %e, "status server stopped");
        }
    });
    tracing::info!(addr = %bound, auth, "status server listening");
    Ok((bound, task))
}

async fn auth(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if let Some(expected) = &state.token {
        let presented = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                let (scheme, rest) = v.trim().split_once(' ')?;
                scheme
                    .eq_ignore_ascii_case("bearer")
                    .then(|| rest.trim().to_string())
            });
        let ok = presented.is_some_and(|p| constant_time_eq(&digest(p.as_bytes()), expected));
        if !ok {
            let mut resp = text(
                StatusCode::UNAUTHORIZED,
                "unauthorized: send Authorization: Bearer <the token in status.token_file>",
            );
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"polypush\""),
            );
            return resp;
        }
    }
    next.run(req).await
}

fn text(code: StatusCode, body: impl Into<String>) -> Response {
    let mut body = body.into();
    body.push('\n');
    (
        code,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

async fn index() -> Response {
    text(
        StatusCode::OK,
        concat!(
            "polypush ",
            env!("CARGO_PKG_VERSION"),
            "\nGET /metrics    Prometheus metrics\nGET /healthz    200 when the daemon is where it should be, 503 with the reason\nGET /status     JSON snapshot\nGET /meter      audio levels and media alarms now (JSON)\nPOST /reconnect reconnect the running broadcast now, with a fresh push address"
        ),
    )
}

async fn not_found() -> Response {
    text(
        StatusCode::NOT_FOUND,
        "not found: try /metrics, /healthz, /status or POST /reconnect",
    )
}

async fn metrics_handler(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let snap = state.hub.snapshot();
    let open = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(metrics::wants_openmetrics);
    let (body, ty) = if open {
        (
            metrics::openmetrics(&snap),
            metrics::OPENMETRICS_CONTENT_TYPE,
        )
    } else {
        (metrics::text(&snap), metrics::TEXT_CONTENT_TYPE)
    };
    (StatusCode::OK, [(header::CONTENT_TYPE, ty)], body).into_response()
}

async fn healthz(State(state): State<AppState>) -> Response {
    let h = health(&state.hub.snapshot(), Instant::now());
    let code = if h.healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    text(code, h.message)
}

async fn status(State(state): State<AppState>) -> Response {
    let v = status_json(&state.hub.snapshot(), Instant::now());
    (
        [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
        Json(v),
    )
        .into_response()
}

/// `GET /meter`: the audio levels and active alarms now, straight from the pipeline (cheap:
/// a copy of the last report; the status page polls it every 250 ms).
async fn meter(State(state): State<AppState>) -> Response {
    let report = state.hub.media_now();
    (
        [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
        Json(meter_json(report.as_ref())),
    )
        .into_response()
}

async fn reconnect(State(state): State<AppState>) -> Response {
    if state.hub.reconnect_now() {
        tracing::info!("reconnect asked over HTTP");
        text(
            StatusCode::ACCEPTED,
            "reconnecting now, with a fresh push address",
        )
    } else {
        text(
            StatusCode::CONFLICT,
            "no broadcast is running: nothing to reconnect",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_comparison() {
        let a = digest(b"secret");
        assert!(constant_time_eq(&a, &digest(b"secret")));
        assert!(!constant_time_eq(&a, &digest(b"secreT")));
        assert!(!constant_time_eq(&a, &digest(b"")));
    }

    #[test]
    fn errors_name_the_key() {
        let e = StatusError::TokenRequired {
            addr: "0.0.0.0:9464".parse().unwrap(),
        };
        assert!(e.to_string().starts_with("status.token_file: required"));
        let e = StatusError::Bind {
            addr: "127.0.0.1:9464".parse().unwrap(),
            source: std::io::Error::from(std::io::ErrorKind::AddrInUse),
        };
        assert!(e
            .to_string()
            .starts_with("status.listen: cannot listen on 127.0.0.1:9464"));
    }
}
