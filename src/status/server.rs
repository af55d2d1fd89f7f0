//! The status HTTP server (axum): the status page `GET /` (with `/app.js`, `/app.css`; see
//! `page`), `GET /metrics`, `GET /healthz`, `GET /status`, `GET /meter`, `POST /reconnect`, all
//! read from (or, for the reconnect, sent through) the [`StatusHub`]; `POST /extend`, `/start`,
//! `/stop` (lesson control, see `super::control`), sent to the service loop through it; `GET /snapshot.jpg`, the
//! running pipeline's picture (see `super::snapshot`); and the login `GET|POST /login`,
//! `POST /logout`.
//!
//! With a token, every route but the login form and its stylesheet needs one of:
//! - `Authorization: Bearer <token>` (programs: Prometheus, curl), compared in constant time
//!   over SHA-256 digests so not even the length leaks;
//! - the `polypush_session` cookie that `POST /login` (form field `token`) sets: `HttpOnly;
//!   SameSite=Lax; Path=/`, its value SHA-256("polypush-session\0" ‖ token) in hex, so it
//!   survives a restart and stops working when the token changes. A POST carrying it must come
//!   from the page itself (`Sec-Fetch-Site: same-origin`, or an `Origin` matching `Host`),
//!   else 403: no cross-site request forgery.
//!
//! Without either, a browser asking for a page (`/`, or `Accept: text/html`) is sent to
//! `/login` (303); anything else gets 401 with `WWW-Authenticate: Bearer`. A refused login
//! waits a second (refusals queue, so guesses run one a second) and is logged with the peer's
//! address. The token is never logged or returned. Without a token (loopback only) everything
//! is open and `/login` goes straight to the page.

use super::health::health;
use super::hub::{PictureSource, StatusHub};
use super::json::{meter_json, status_json};
use super::metrics;
use super::page::{self, lang_query, Lang};
use super::settings::{is_loopback, StatusSettings};
use super::snapshot::{Snapshots, Unavailable};
use crate::secret::Secret;
use crate::setting::InvalidSetting;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, Extensions, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use sha2::{Digest, Sha256};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
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
    /// What a request must present, if a token is configured.
    guard: Option<Arc<Guard>>,
    /// `/snapshot.jpg`'s cache.
    snapshots: Arc<Snapshots>,
}

/// The token's digests: the bearer token's and the session cookie's.
struct Guard {
    /// SHA-256 of the token.
    token: [u8; 32],
    /// The `polypush_session` cookie value: derived from the token, so it survives a restart
    /// and stops working when the token changes.
    session: String,
    /// SHA-256 of `session`, compared in constant time.
    session_digest: [u8; 32],
    /// Failed logins wait their turn here, one at a time, [`LOGIN_FAILURE_DELAY`] each.
    failures: tokio::sync::Mutex<()>,
}

impl Guard {
    fn new(token: &Secret) -> Guard {
        let token = token.expose().as_bytes();
        let mut h = Sha256::new();
        h.update(b"polypush-session\0");
        h.update(token);
        let session = hex::encode(h.finalize());
        Guard {
            token: digest(token),
            session_digest: digest(session.as_bytes()),
            session,
            failures: tokio::sync::Mutex::new(()),
        }
    }
}

/// The session cookie's name.
const SESSION_COOKIE: &str = "polypush_session";
/// How long a login lasts in the browser (30 days; the token's lifetime bounds it anyway).
const SESSION_MAX_AGE_S: u64 = 30 * 86_400;
/// How long a refused login waits before the answer (they queue: one guess per interval).
const LOGIN_FAILURE_DELAY: Duration = Duration::from_secs(1);

fn digest(s: &[u8]) -> [u8; 32] {
    Sha256::digest(s).into()
}

/// Equal without an early exit.
fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The router over `hub`, requiring `token` if given, with snapshots `snapshot_width` wide.
/// ([`serve`] binds and runs it.)
pub(super) fn router(hub: StatusHub, token: Option<Secret>, snapshot_width: u32) -> Router {
    let state = AppState {
        hub,
        guard: token.as_ref().map(|t| Arc::new(Guard::new(t))),
        snapshots: Arc::new(Snapshots::new(snapshot_width)),
    };
    Router::new()
        .route("/", get(index))
        .route("/app.js", get(app_js))
        .route("/app.css", get(app_css))
        .route("/login", get(login_form).post(login))
        .route("/logout", post(logout))
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(healthz))
        .route("/status", get(status))
        .route("/meter", get(meter))
        .route("/reconnect", post(reconnect))
        .route("/extend", post(extend))
        .route("/start", post(start_now))
        .route("/stop", post(stop_now))
        .route("/snapshot.jpg", get(snapshot_jpg))
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
    let app =
        router(hub, token, cfg.snapshot_width).into_make_service_with_connect_info::<SocketAddr>();
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

/// Routes anyone may fetch: the login form and the stylesheet it uses.
fn is_public(method: &Method, path: &str) -> bool {
    path == "/login" || (method == Method::GET && path == "/app.css")
}

/// What the request presents.
enum Credentials {
    Bearer,
    Cookie,
    None,
}

fn credentials(guard: &Guard, headers: &HeaderMap) -> Credentials {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, rest) = v.trim().split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("bearer")
                .then(|| rest.trim().to_string())
        });
    if bearer.is_some_and(|p| constant_time_eq(&digest(p.as_bytes()), &guard.token)) {
        return Credentials::Bearer;
    }
    let cookie_ok = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .filter(|(k, _)| *k == SESSION_COOKIE)
        .any(|(_, v)| constant_time_eq(&digest(v.trim().as_bytes()), &guard.session_digest));
    if cookie_ok {
        Credentials::Cookie
    } else {
        Credentials::None
    }
}

/// A browser's request from our own pages: `Sec-Fetch-Site: same-origin`, or (browsers that
/// do not send it) an `Origin` whose host and port are the `Host` asked for.
fn same_origin(headers: &HeaderMap) -> bool {
    let get = |name| {
        headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    if let Some(site) = get(header::HeaderName::from_static("sec-fetch-site")) {
        return site.eq_ignore_ascii_case("same-origin");
    }
    match (get(header::ORIGIN), get(header::HOST)) {
        (Some(origin), Some(host)) => origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"))
            .is_some_and(|o| o.eq_ignore_ascii_case(host)),
        _ => false,
    }
}

/// A browser asking for a page (which should get the login form), not a program asking the
/// API (which should get the 401 challenge).
fn wants_html(method: &Method, path: &str, headers: &HeaderMap) -> bool {
    (method == Method::GET || method == Method::HEAD)
        && (path == "/"
            || path == "/app.js"
            || headers
                .get(header::ACCEPT)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|a| a.contains("text/html")))
}

fn see_other(location: &str) -> Response {
    let mut resp = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

async fn auth(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let Some(guard) = &state.guard else {
        return next.run(req).await;
    };
    if is_public(req.method(), req.uri().path()) {
        return next.run(req).await;
    }
    match credentials(guard, req.headers()) {
        Credentials::Bearer => next.run(req).await,
        Credentials::Cookie => {
            let safe = matches!(*req.method(), Method::GET | Method::HEAD);
            if safe || same_origin(req.headers()) {
                next.run(req).await
            } else {
                tracing::warn!(
                    method = %req.method(),
                    path = req.uri().path(),
                    "status server: refused a cross-site request carrying the session cookie"
                );
                text(
                    StatusCode::FORBIDDEN,
                    "forbidden: a request with the session cookie must come from this page (same origin); programs send Authorization: Bearer instead",
                )
            }
        }
        Credentials::None if wants_html(req.method(), req.uri().path(), req.headers()) => {
            let lang = lang_query(req.uri().query()).and_then(Lang::parse);
            see_other(&match lang {
                Some(l) => format!("/login?lang={}", l.tag()),
                None => "/login".to_string(),
            })
        }
        Credentials::None => {
            let mut resp = text(
                StatusCode::UNAUTHORIZED,
                "unauthorized: send Authorization: Bearer <the token in status.token_file>",
            );
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"polypush\""),
            );
            resp
        }
    }
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

async fn index(State(state): State<AppState>, uri: Uri, headers: HeaderMap) -> Response {
    let lang = Lang::negotiate(lang_query(uri.query()), &headers);
    page::index(lang, state.guard.is_some(), &headers)
}

async fn app_js(headers: HeaderMap) -> Response {
    page::app_js(&headers)
}

async fn app_css(headers: HeaderMap) -> Response {
    page::app_css(&headers)
}

async fn login_form(State(state): State<AppState>, uri: Uri, headers: HeaderMap) -> Response {
    if state.guard.is_none() {
        return see_other("/");
    }
    let query = uri.query();
    let chosen = lang_query(query).and_then(Lang::parse);
    let lang = Lang::negotiate(lang_query(query), &headers);
    let failed = query.is_some_and(|q| q.split('&').any(|kv| kv == "failed=1"));
    page::login(lang, failed, chosen, &headers)
}

#[derive(serde::Deserialize)]
struct LoginForm {
    token: String,
    #[serde(default)]
    lang: String,
}

/// `POST /login`: the right token sets the session cookie and goes to the page; a wrong one
/// waits (failures queue one at a time) and goes back to the form. Logged without the token.
async fn login(
    State(state): State<AppState>,
    ext: Extensions,
    Form(form): Form<LoginForm>,
) -> Response {
    let Some(guard) = &state.guard else {
        return see_other("/");
    };
    let peer = ext
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_string())
        .unwrap_or_default();
    let lang = Lang::parse(&form.lang);
    let with_lang = |path: &str, sep: char| match lang {
        Some(l) => format!("{path}{sep}lang={}", l.tag()),
        None => path.to_string(),
    };
    if constant_time_eq(&digest(form.token.trim().as_bytes()), &guard.token) {
        tracing::info!(peer, "status page: logged in");
        let mut resp = see_other(&with_lang("/", '?'));
        let cookie = format!(
            "{SESSION_COOKIE}={}; Path=/; HttpOnly; SameSite=Lax; Max-Age={SESSION_MAX_AGE_S}",
            guard.session
        );
        if let Ok(v) = HeaderValue::from_str(&cookie) {
            resp.headers_mut().insert(header::SET_COOKIE, v);
        }
        return resp;
    }
    {
        let _turn = guard.failures.lock().await;
        tokio::time::sleep(LOGIN_FAILURE_DELAY).await;
    }
    tracing::warn!(peer, "status page: login refused (wrong token)");
    see_other(&with_lang("/login?failed=1", '&'))
}

/// `POST /logout`: forgets the cookie in this browser.
async fn logout(State(state): State<AppState>) -> Response {
    if state.guard.is_none() {
        return see_other("/");
    }
    let mut resp = see_other("/login");
    resp.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("polypush_session=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0"),
    );
    resp
}

async fn not_found() -> Response {
    text(
        StatusCode::NOT_FOUND,
        "not found: try / (the status page), /metrics, /healthz, /status, /snapshot.jpg, POST /reconnect, /extend, /start or /stop",
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

/// `X-Polypush-Picture`: `live`, or `still` while the camera is reconnecting (the darkened
/// picture the stream shows meanwhile).
pub(super) const PICTURE_HEADER: &str = "x-polypush-picture";
/// `X-Polypush-Captured-At`: when the picture was taken, milliseconds since the Unix epoch.
pub(super) const CAPTURED_AT_HEADER: &str = "x-polypush-captured-at";

async fn snapshot_jpg(State(state): State<AppState>) -> Response {
    let source = state.hub.picture_source();
    let result = state
        .snapshots
        .get(move |width| match source {
            PictureSource::NoBroadcast => Err(Unavailable::NoBroadcast),
            PictureSource::CaptureDown(reason) => Err(Unavailable::CaptureDown(reason)),
            PictureSource::Pipeline(p) => Ok(p.request_picture(width)),
        })
        .await;
    match result {
        Ok(jpeg) => (
            [
                (header::CONTENT_TYPE, HeaderValue::from_static("image/jpeg")),
                (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
                (
                    header::HeaderName::from_static(PICTURE_HEADER),
                    HeaderValue::from_static(jpeg.kind.as_str()),
                ),
                (
                    header::HeaderName::from_static(CAPTURED_AT_HEADER),
                    HeaderValue::from(jpeg.taken_at_ms() as u64),
                ),
            ],
            jpeg.bytes.clone(),
        )
            .into_response(),
        Err(why) => {
            let mut resp = text(StatusCode::SERVICE_UNAVAILABLE, why.to_string());
            resp.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            resp
        }
    }
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

async fn extend(State(state): State<AppState>, uri: Uri, body: axum::body::Bytes) -> Response {
    super::control::handle(&state.hub, "extend", &uri, &body).await
}

async fn start_now(State(state): State<AppState>, uri: Uri, body: axum::body::Bytes) -> Response {
    super::control::handle(&state.hub, "start", &uri, &body).await
}

async fn stop_now(State(state): State<AppState>, uri: Uri, body: axum::body::Bytes) -> Response {
    super::control::handle(&state.hub, "stop", &uri, &body).await
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
