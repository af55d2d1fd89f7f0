//! The HTTP client for Polyv: builds signed requests with a fresh timestamp per attempt,
//! decodes the three reply shapes (flat login object, v3 and v4 envelopes) and classifies
//! failures into [`PlatformError`].
//!
//! Retries: transport errors, 5xx and plain 429 only, bounded, exponential backoff with full
//! jitter. A rejected password, appId or signature, a stale timestamp, a validation message
//! and Polyv's `qps exceeds` rate limit are never retried: the answer would not change, and
//! retrying into the rate limit extends the block.

use super::error::{PlatformError, Skew};
use super::sign::{self, SignMethod};
use super::types::*;
use crate::platform::{Endpoints, PolyvSettings};
use crate::secret::Secret;
use bytes::Bytes;
use reqwest::{header, Method, RequestBuilder, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A source of "now" in milliseconds since the epoch; injected in tests.
pub(super) type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// Wall-clock milliseconds since the Unix epoch: the 13-digit Polyv timestamp.
pub(super) fn system_clock() -> Clock {
    Arc::new(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    })
}

/// How often and how patiently to retry what may succeed later.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts in all, including the first (at least 1).
    pub max_attempts: u32,
    /// Backoff before the second attempt; doubles each time, capped at `max_delay`.
    pub base_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(8),
        }
    }
}

impl RetryPolicy {
    /// Full jitter: uniform in `[0, min(max, base * 2^retry)]`.
    pub fn delay(&self, retry: u32, unit: f64) -> Duration {
        let ceiling = self
            .base_delay
            .saturating_mul(1u32 << retry.min(16))
            .min(self.max_delay);
        ceiling.mul_f64(unit.clamp(0.0, 1.0))
    }
}

/// The channel credentials teacher_login needs.
#[derive(Debug, Clone)]
struct ChannelCreds {
    channel_id: String,
    password: Option<Secret>,
}

/// The account credentials the signed v3/v4 APIs need.
#[derive(Debug, Clone)]
struct AppCreds {
    app_id: String,
    secret: Secret,
}

/// The Polyv platform client. Cheap to clone.
#[derive(Clone)]
pub struct PolyvClient {
    http: reqwest::Client,
    endpoints: Endpoints,
    channel: ChannelCreds,
    app: Option<AppCreds>,
    retry: RetryPolicy,
    clock: Clock,
    sign_method: SignMethod,
}

impl std::fmt::Debug for PolyvClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolyvClient")
            .field("endpoints", &self.endpoints)
            .field("channel", &self.channel)
            .field("app", &self.app)
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

/// A raw answer: status, server time (from `Date`), body.
struct Answer {
    status: StatusCode,
    server_ms: Option<u64>,
    sent_ms: u64,
    body: Bytes,
}

impl PolyvClient {
    /// A client for the channel and (if configured) the account in `cfg`.
    pub fn from_config(cfg: &PolyvSettings) -> Result<Self, PlatformError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(cfg.timeout_s))
            .connect_timeout(Duration::from_secs(cfg.timeout_s.min(10)))
            .user_agent(concat!("polypush/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| PlatformError::Transport {
                api: "client",
                host: String::new(),
                detail: e.to_string(),
                attempts: 0,
            })?;
        let app = match (&cfg.app_id, &cfg.app_secret) {
            (Some(id), Some(secret)) => Some(AppCreds {
                app_id: id.clone(),
                secret: secret.clone(),
            }),
            _ => None,
        };
        Ok(Self {
            http,
            endpoints: cfg.endpoints.clone(),
            channel: ChannelCreds {
                channel_id: cfg.channel_id.clone(),
                password: cfg.password.clone(),
            },
            app,
            retry: RetryPolicy::default(),
            clock: system_clock(),
            sign_method: SignMethod::Md5,
        })
    }

    /// Replaces the clock (tests inject skew with it).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    pub fn with_sign_method(mut self, method: SignMethod) -> Self {
        self.sign_method = method;
        self
    }

    pub fn channel_id(&self) -> &str {
        &self.channel.channel_id
    }

    /// Sends the request `build` makes (called again for every attempt, so each carries a
    /// fresh timestamp), retrying what may succeed later.
    async fn send(
        &self,
        api: &'static str,
        base: &str,
        build: impl Fn(&reqwest::Client, u64) -> RequestBuilder,
        decide: impl Fn(&Answer) -> Option<PlatformError>,
    ) -> Result<Answer, PlatformError> {
        let host = reqwest::Url::parse(base)
            .ok()
            .and_then(|u| u.host_str().map(str::to_string))
            .unwrap_or_else(|| base.to_string());
        let mut attempt = 0;
        loop {
            attempt += 1;
            let sent_ms = (self.clock)();
            tracing::debug!(api, attempt, host = %host, "polyv request");
            let result = build(&self.http, sent_ms).send().await;
            let err = match result {
                Ok(resp) => {
                    let status = resp.status();
                    let server_ms = resp
                        .headers()
                        .get(header::DATE)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|s| httpdate::parse_http_date(s).ok())
                        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                        .map(|d| d.as_millis() as u64);
                    match resp.bytes().await {
                        Ok(body) => {
                            tracing::debug!(
                                api,
                                status = status.as_u16(),
                                len = body.len(),
                                "polyv reply"
                            );
                            let answer = Answer {
                                status,
                                server_ms,
                                sent_ms,
                                body,
                            };
                            match decide(&answer) {
                                None => return Ok(answer),
                                Some(e) => e,
                            }
                        }
                        Err(e) => transport(api, &host, &e, attempt),
                    }
                }
                Err(e) => transport(api, &host, &e, attempt),
            };
            let err = with_attempts(err, attempt);
            if !err.is_retryable() || attempt >= self.retry.max_attempts.max(1) {
                return Err(err);
            }
            let delay = self.retry.delay(attempt - 1, rand::random::<f64>());
            tracing::debug!(api, attempt, delay_ms = delay.as_millis() as u64, error = %err, "polyv retry");
            tokio::time::sleep(delay).await;
        }
    }

    fn app(&self) -> Result<&AppCreds, PlatformError> {
        self.app.as_ref().ok_or_else(|| PlatformError::Validation {
            api: "admin",
            message: "no appId/appSecret configured (set app_id and app_secret_file under [polyv])"
                .into(),
        })
    }

    /// Query parameters of a signed v3/v4 request, `sign` appended.
    fn signed(&self, app: &AppCreds, ts: u64, extra: &[(&str, &str)]) -> Vec<(String, String)> {
        let ts = ts.to_string();
        let mut params: Vec<(String, String)> = vec![
            ("appId".into(), app.app_id.clone()),
            ("timestamp".into(), ts),
        ];
        if self.sign_method == SignMethod::Sha256 {
            params.push(("signatureMethod".into(), "SHA256".into()));
        }
        params.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let sign = sign::api_sign(app.secret.expose(), &params, self.sign_method);
        params.push(("sign".into(), sign));
        params
    }

    /// teacher_login: the push address for this channel. Call it for every new session and
    /// after a rejected publish: the address may change.
    pub async fn teacher_login(&self) -> Result<LoginReply, PlatformError> {
        const API: &str = "teacher_login";
        let password = self
            .channel
            .password
            .as_ref()
            .ok_or_else(|| PlatformError::Validation {
                api: API,
                message: "no channel password configured (set password_file under [polyv])".into(),
            })?;
        let passwd = sign::login_passwd(password.expose());
        let id = self.channel.channel_id.clone();
        let url = format!("{}/api/v2/teacher_login.json", trim(&self.endpoints.login));
        let answer = self
            .send(
                API,
                &self.endpoints.login,
                |http, ts| {
                    let sign = sign::login_sign(&id, &passwd, ts);
                    http.post(&url).form(&[
                        ("number", id.as_str()),
                        ("account", id.as_str()),
                        ("passwd", passwd.as_str()),
                        ("timestamp", &ts.to_string()),
                        ("sign", &sign),
                    ])
                },
                |a| check_flat(API, a, &["url", "stream"], &self.channel.channel_id),
            )
            .await?;
        decode(API, &answer)
    }

    /// notify_stream2: tells Polyv the stream is up and its video size.
    pub async fn notify_stream(
        &self,
        stream: &str,
        width: u32,
        height: u32,
    ) -> Result<(), PlatformError> {
        const API: &str = "notify_stream2";
        let id = self.channel.channel_id.clone();
        let url = format!(
            "{}/live/client/notify_stream2.json",
            trim(&self.endpoints.api)
        );
        self.send(
            API,
            &self.endpoints.api,
            |http, ts| {
                http.post(&url).form(&[
                    ("number", id.as_str()),
                    ("stream", stream),
                    ("timestamp", &ts.to_string()),
                    ("sign", &sign::notify_sign(&id, ts)),
                    ("videowidth", &width.to_string()),
                    ("videoheight", &height.to_string()),
                ])
            },
            |a| {
                if a.status.is_success() && a.body.trim_ascii() == b"1" {
                    None
                } else {
                    Some(classify_answer(API, a, &self.channel.channel_id))
                }
            },
        )
        .await
        .map(|_| ())
    }

    /// Renames the channel (scheme 2; no account credentials needed).
    pub async fn rename_channel(&self, name: &str) -> Result<(), PlatformError> {
        const API: &str = "channel rename";
        let id = self.channel.channel_id.clone();
        let url = format!("{}/v1/channels/{id}/update", trim(&self.endpoints.channel));
        let sign = sign::rename_sign(&id, name);
        self.send(
            API,
            &self.endpoints.channel,
            |http, ts| {
                http.post(&url)
                    .form(&[("name", name), ("ptime", &ts.to_string()), ("sign", &sign)])
            },
            |a| {
                let ok = serde_json::from_slice::<Value>(&a.body)
                    .ok()
                    .is_some_and(|v| v["status"] == "success");
                if a.status.is_success() && ok {
                    None
                } else {
                    Some(classify_answer(API, a, &self.channel.channel_id))
                }
            },
        )
        .await
        .map(|_| ())
    }

    /// Online viewers of the channel's chat room. Poll no more often than every 10 s.
    pub async fn viewers(&self) -> Result<Viewers, PlatformError> {
        const API: &str = "listUsers";
        let url = format!("{}/front/listUsers", trim(&self.endpoints.chat));
        let id = self.channel.channel_id.clone();
        let answer = self
            .send(
                API,
                &self.endpoints.chat,
                |http, _| http.get(&url).query(&[("roomId", id.as_str())]),
                |a| check_flat(API, a, &["count"], &self.channel.channel_id),
            )
            .await?;
        decode(API, &answer)
    }

    /// Sends a signed v3/v4 request and returns the envelope's `data`.
    async fn signed_call<T: DeserializeOwned>(
        &self,
        api: &'static str,
        method: Method,
        path: &str,
        params: &[(&str, &str)],
        json_body: Option<Vec<u8>>,
        form: bool,
    ) -> Result<T, PlatformError> {
        let app = self.app()?;
        let url = format!("{}{path}", trim(&self.endpoints.api));
        let answer = self
            .send(
                api,
                &self.endpoints.api,
                |http, ts| {
                    let signed = self.signed(app, ts, params);
                    let req = http.request(method.clone(), &url);
                    match (&json_body, form) {
                        (Some(body), _) => req
                            .query(&signed)
                            .header(header::CONTENT_TYPE, "application/json")
                            .body(body.clone()),
                        (None, true) => req.form(&signed),
                        (None, false) => req.query(&signed),
                    }
                },
                |a| check_envelope(api, a),
            )
            .await?;
        let v: Value = parse_json(api, &answer)?;
        serde_json::from_value(v["data"].clone()).map_err(|_| undecodable(api, &answer))
    }

    /// create-cpic-channel (v3).
    pub async fn create_channel(
        &self,
        req: &CreateChannel,
    ) -> Result<CreatedChannel, PlatformError> {
        let start = req.start_time_ms.map(|v| v.to_string()).unwrap_or_default();
        let end = req.end_time_ms.map(|v| v.to_string()).unwrap_or_default();
        let params = [
            ("name", req.name.as_str()),
            ("scene", req.scene.as_str()),
            (
                "channelObject",
                req.channel_object.map_or("", |o| o.as_str()),
            ),
            ("startTime", start.as_str()),
            ("endTime", end.as_str()),
        ];
        let params: Vec<(&str, &str)> = params.into_iter().filter(|(_, v)| !v.is_empty()).collect();
        self.signed_call(
            "create channel",
            Method::POST,
            "/live/v3/channel/create-cpic-channel",
            &params,
            None,
            true,
        )
        .await
    }

    /// basic/update (v3): signed URL, unsigned JSON body.
    pub async fn update_channel(
        &self,
        channel_id: &str,
        settings: &UpdateSettings,
    ) -> Result<(), PlatformError> {
        let body = serde_json::to_vec(settings).map_err(|e| PlatformError::Validation {
            api: "update channel",
            message: e.to_string(),
        })?;
        self.signed_call::<Value>(
            "update channel",
            Method::POST,
            "/live/v3/channel/basic/update",
            &[("channelId", channel_id)],
            Some(body),
            false,
        )
        .await
        .map(|_| ())
    }

    /// mr/create (v4): signed URL, JSON body.
    pub async fn create_mr_channel(
        &self,
        req: &CreateMrChannel,
    ) -> Result<MrChannel, PlatformError> {
        let body = serde_json::to_vec(req).map_err(|e| PlatformError::Validation {
            api: "create MR channel",
            message: e.to_string(),
        })?;
        self.signed_call(
            "create MR channel",
            Method::POST,
            "/live/v4/channel/mr/create",
            &[],
            Some(body),
            false,
        )
        .await
    }

    /// get-push-url (v3): the channel's full RTMP URL, as an admin sees it.
    pub async fn push_url(&self, channel_id: &str) -> Result<PushAddress, PlatformError> {
        let url: String = self
            .signed_call(
                "get push url",
                Method::GET,
                "/live/v3/channel/stream/get-push-url",
                &[("channelId", channel_id)],
                None,
                false,
            )
            .await?;
        Ok(PushAddress::from_url(&url))
    }

    /// live-status list (v4).
    pub async fn live_status(
        &self,
        channel_ids: &[String],
    ) -> Result<Vec<LiveStatus>, PlatformError> {
        let ids = channel_ids.join(",");
        self.signed_call(
            "live status",
            Method::GET,
            "/live/v4/channel/live-status/list",
            &[("channelIds", ids.as_str())],
            None,
            false,
        )
        .await
    }
}

fn trim(base: &str) -> &str {
    base.trim_end_matches('/')
}

fn transport(api: &'static str, host: &str, e: &reqwest::Error, attempt: u32) -> PlatformError {
    // The URL can carry signed query parameters; the cause chain is what helps.
    let mut detail = if e.is_timeout() {
        "timed out".to_string()
    } else if e.is_connect() {
        "connection failed".to_string()
    } else {
        "request failed".to_string()
    };
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        detail.push_str(": ");
        detail.push_str(&s.to_string());
        source = s.source();
    }
    PlatformError::Transport {
        api,
        host: host.to_string(),
        detail,
        attempts: attempt,
    }
}

fn with_attempts(err: PlatformError, n: u32) -> PlatformError {
    match err {
        PlatformError::Server {
            api,
            status,
            message,
            ..
        } => PlatformError::Server {
            api,
            status,
            message,
            attempts: n,
        },
        PlatformError::Transport {
            api, host, detail, ..
        } => PlatformError::Transport {
            api,
            host,
            detail,
            attempts: n,
        },
        other => other,
    }
}

fn undecodable(api: &'static str, a: &Answer) -> PlatformError {
    let shown: String = String::from_utf8_lossy(&a.body[..a.body.len().min(80)])
        .chars()
        .filter(|c| !c.is_control())
        .collect();
    PlatformError::Undecodable {
        api,
        status: a.status.as_u16(),
        first_bytes: shown,
    }
}

fn parse_json(api: &'static str, a: &Answer) -> Result<Value, PlatformError> {
    serde_json::from_slice(&a.body).map_err(|_| undecodable(api, a))
}

fn decode<T: DeserializeOwned>(api: &'static str, a: &Answer) -> Result<T, PlatformError> {
    serde_json::from_slice(&a.body).map_err(|_| undecodable(api, a))
}

/// Polyv's message, wherever this endpoint puts it.
fn message_of(v: &Value) -> String {
    for ptr in ["/error/desc", "/message", "/msg", "/result"] {
        if let Some(s) = v.pointer(ptr).and_then(Value::as_str) {
            if !s.is_empty() {
                return s.to_string();
            }
        }
    }
    String::new()
}

/// A flat reply (login, listUsers) is fine when it carries the expected fields.
fn check_flat(
    api: &'static str,
    a: &Answer,
    fields: &[&str],
    channel: &str,
) -> Option<PlatformError> {
    if a.status.is_success() {
        if let Ok(v) = serde_json::from_slice::<Value>(&a.body) {
            if fields.iter().all(|f| !v[f].is_null()) {
                return None;
            }
        }
    }
    Some(classify_answer(api, a, channel))
}

/// v3 `{code, status, message, data}` and v4 `{code, status, success, error, data}`.
fn check_envelope(api: &'static str, a: &Answer) -> Option<PlatformError> {
    if let Ok(v) = serde_json::from_slice::<Value>(&a.body) {
        let code_ok = v["code"].as_i64() == Some(200);
        let status_ok = v["status"] == "success";
        let success_ok = v.get("success").is_none_or(|s| s == true);
        if a.status.is_success() && code_ok && status_ok && success_ok {
            return None;
        }
    }
    Some(classify_answer(api, a, ""))
}

/// Turns a failed answer into the error that tells the user what to do.
fn classify_answer(api: &'static str, a: &Answer, channel: &str) -> PlatformError {
    let status = a.status.as_u16();
    let Ok(v) = serde_json::from_slice::<Value>(&a.body) else {
        return if status >= 500 || status == 429 {
            PlatformError::Server {
                api,
                status,
                message: "no readable body".into(),
                attempts: 1,
            }
        } else {
            undecodable(api, a)
        };
    };
    let message = message_of(&v);
    let lower = message.to_ascii_lowercase();
    let code = v["code"].as_i64().unwrap_or(0);
    if lower.contains("qps exceeds") {
        PlatformError::RateLimited { api, message }
    } else if lower.contains("invalid signature") || code == 403 || status == 403 {
        PlatformError::SignatureRejected { api, message }
    } else if lower.contains("invalid timestamp") {
        let skew = a.server_ms.map(|server| a.sent_ms as i64 - server as i64);
        PlatformError::StaleTimestamp {
            api,
            skew: Skew(skew),
        }
    } else if lower.contains("application not found") {
        PlatformError::AppRejected { message }
    } else if lower.contains("password") && (api == "teacher_login" || lower.contains("channel id"))
    {
        PlatformError::CredentialsRejected {
            channel_id: channel.to_string(),
            message,
        }
    } else if status >= 500 || code >= 500 || status == 429 {
        PlatformError::Server {
            api,
            status,
            message: if message.is_empty() {
                "no message".into()
            } else {
                message
            },
            attempts: 1,
        }
    } else if message.is_empty() {
        undecodable(api, a)
    } else {
        PlatformError::Validation { api, message }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, body: &str) -> Answer {
        Answer {
            status: StatusCode::from_u16(status).unwrap(),
            server_ms: Some(1_000_000),
            sent_ms: 1_200_000,
            body: Bytes::from(body.to_string()),
        }
    }

    #[test]
    fn classification_of_documented_errors() {
        let c = |s, b| classify_answer("x", &answer(s, b), "153884");
        assert!(matches!(
            c(
                403,
                r#"{"code":403,"status":"error","message":"invalid signature.","data":""}"#
            ),
            PlatformError::SignatureRejected { .. }
        ));
        match c(
            400,
            r#"{"code":400,"status":"error","message":"invalid timestamp.","data":""}"#,
        ) {
            PlatformError::StaleTimestamp { skew, .. } => assert_eq!(skew, Skew(Some(200_000))),
            e => panic!("{e}"),
        }
        assert!(matches!(
            c(
                400,
                r#"{"code":400,"status":"error","message":"qps exceeds number of calls"}"#
            ),
            PlatformError::RateLimited { .. }
        ));
        assert!(matches!(
            c(
                400,
                r#"{"code":400,"status":"error","error":{"code":20001,"desc":"application not found."},"success":false}"#
            ),
            PlatformError::AppRejected { .. }
        ));
        assert!(matches!(
            c(
                400,
                r#"{"code":400,"status":"error","message":"scene not right.","data":""}"#
            ),
            PlatformError::Validation { .. }
        ));
        assert!(matches!(
            c(502, "<html>bad gateway</html>"),
            PlatformError::Server { .. }
        ));
        match c(200, "<html>captive portal login</html>") {
            PlatformError::Undecodable { first_bytes, .. } => {
                assert!(first_bytes.starts_with("<html>captive"))
            }
            e => panic!("{e}"),
        }
        assert!(matches!(
            classify_answer(
                "teacher_login",
                &answer(
                    200,
                    r#"{"status":"error","msg":"channel id or password error"}"#
                ),
                "1"
            ),
            PlatformError::CredentialsRejected { .. }
        ));
    }

    #[test]
    fn retry_delay_is_bounded_full_jitter() {
        let p = RetryPolicy::default();
        assert_eq!(p.delay(0, 1.0), Duration::from_millis(500));
        assert_eq!(p.delay(3, 1.0), Duration::from_secs(4));
        assert_eq!(p.delay(30, 1.0), Duration::from_secs(8));
        assert_eq!(p.delay(5, 0.0), Duration::ZERO);
    }
}
