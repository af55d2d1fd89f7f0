//! The HTTP client for Polyv: builds signed requests with a fresh timestamp per attempt, sends
//! them where [`Endpoints`] says (teacher_login falling back to the older host), and hands the
//! answers to [`super::reply`] to decode or classify.
//!
//! Retries: transport errors, 5xx and plain 429 only, bounded, exponential backoff with full
//! jitter. A rejected password, appId or signature, a stale timestamp, a validation message,
//! a business refusal and Polyv's `qps exceeds` rate limit are never retried: the answer would
//! not change, and retrying into the rate limit extends the block.
//!
//! HTTP: one reqwest client per [`PolyvClient`], with the program's TLS trust store
//! ([`crate::tls`], handed to reqwest as a preconfigured rustls config), the `resolve`
//! overrides of `[polyv.endpoints]`, and bodies that declare UTF-8 as Polyv's Java SDK does
//! (`application/x-www-form-urlencoded;charset=UTF-8`, `application/json;charset=UTF-8`):
//! channel names are Chinese more often than not.
//!
//! The push-client calls (teacher_login, notify_stream2, rename, the viewer count) are here;
//! the signed v3/v4 APIs of `polypush channel …` are in `admin`.

use super::endpoints::{Endpoints, ONLINE_COUNT_PATH};
use super::error::PlatformError;
use super::reply::{check_flat, classify_answer, decode, Answer, LOGIN_API};
use super::sign::{self, SignMethod};
use super::types::*;
use crate::platform::PolyvSettings;
use crate::secret::Secret;
use reqwest::{header, Method, RequestBuilder, StatusCode};
use serde::Serialize;
use serde_json::Value;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

mod admin;

/// A source of "now" in milliseconds since the epoch; injected in tests.
pub(super) type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// The Content-Type of form bodies: UTF-8 declared, as Polyv's Java SDK sends it.
const FORM_UTF8: &str = "application/x-www-form-urlencoded;charset=UTF-8";
/// The Content-Type of JSON bodies.
const JSON_UTF8: &str = "application/json;charset=UTF-8";

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

    /// One attempt, no retry.
    fn once() -> Self {
        Self {
            max_attempts: 1,
            ..Self::default()
        }
    }
}

/// A reqwest client builder for Polyv's hosts: timeouts, user agent, the program's TLS trust
/// store and the `resolve` overrides. The selftest's clock check builds on it too, so it asks
/// the same host the same way.
pub fn http_client_builder(cfg: &PolyvSettings) -> Result<reqwest::ClientBuilder, PlatformError> {
    let tls = crate::tls::http_client_config().map_err(|e| PlatformError::Transport {
        api: "TLS setup",
        host: "this box's CA store".into(),
        detail: e.to_string(),
        attempts: 0,
    })?;
    let overrides = cfg
        .endpoints
        .dns_overrides()
        .map_err(|e| PlatformError::Transport {
            api: "DNS overrides",
            host: e.key.clone(),
            detail: e.message,
            attempts: 0,
        })?;
    let mut builder = reqwest::Client::builder()
        .timeout(Duration::from_secs(cfg.timeout_s))
        .connect_timeout(Duration::from_secs(cfg.timeout_s.min(10)))
        .user_agent(concat!("polypush/", env!("CARGO_PKG_VERSION")))
        // One trust store for RTMPS and the API; reqwest's own rustls setup would trust only
        // the Mozilla roots compiled into it and ignore SSL_CERT_FILE.
        .use_preconfigured_tls(tls);
    for (host, addr) in overrides {
        builder = builder.resolve(&host, addr);
    }
    Ok(builder)
}

/// A form POST whose body declares UTF-8.
fn post_form<T: Serialize + ?Sized>(http: &reqwest::Client, url: &str, form: &T) -> RequestBuilder {
    http.post(url)
        .header(header::CONTENT_TYPE, FORM_UTF8)
        .form(form)
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

impl PolyvClient {
    /// A client for the channel and (if configured) the account in `cfg`.
    pub fn from_config(cfg: &PolyvSettings) -> Result<Self, PlatformError> {
        let http = http_client_builder(cfg)?
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
    /// fresh timestamp), retrying what may succeed later, as `retry` allows.
    async fn send(
        &self,
        api: &'static str,
        url: &str,
        retry: RetryPolicy,
        build: impl Fn(&reqwest::Client, u64) -> RequestBuilder,
        decide: impl Fn(&Answer) -> Option<PlatformError>,
    ) -> Result<Answer, PlatformError> {
        let host = host_of(url);
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
            if !err.is_retryable() || attempt >= retry.max_attempts.max(1) {
                return Err(err);
            }
            let delay = retry.delay(attempt - 1, rand::random::<f64>());
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

    /// teacher_login: the push address for this channel. Call it for every new session and
    /// after a rejected publish: the address may change.
    ///
    /// Goes to `login` first; when that cannot be reached (after its retries) or answers
    /// HTTP 404, to the login fallback, if there is one. An answer from the fallback counts,
    /// refusals included; when the fallback cannot be reached either, the error is the
    /// default host's. [`LoginReply::answered_by`] says which URL answered.
    pub async fn teacher_login(&self) -> Result<LoginReply, PlatformError> {
        let password = self
            .channel
            .password
            .as_ref()
            .ok_or_else(|| PlatformError::Validation {
                api: LOGIN_API,
                message: "no channel password configured (set password_file under [polyv])".into(),
            })?;
        let passwd = sign::login_passwd(password.expose());
        let primary = Endpoints::login_url(&self.endpoints.login);
        let first = self.login_at(&primary, &passwd).await;
        let unanswered = |r: &Result<Answer, PlatformError>| match r {
            Ok(a) => a.status == StatusCode::NOT_FOUND,
            Err(e) => matches!(e, PlatformError::Transport { .. }),
        };
        let fallback = self
            .endpoints
            .login_fallback()
            .map(Endpoints::login_url)
            .filter(|_| unanswered(&first));
        let (answer, url) = match fallback {
            None => (first?, primary),
            Some(fallback) => {
                let why = match &first {
                    Ok(a) => format!("HTTP {}", a.status.as_u16()),
                    Err(e) => e.to_string(),
                };
                let second = self.login_at(&fallback, &passwd).await;
                if unanswered(&second) {
                    tracing::debug!(default = %primary, %fallback, "the login fallback did not answer either");
                    return Err(match first {
                        Ok(a) => classify_answer(LOGIN_API, &a, &self.channel.channel_id),
                        Err(PlatformError::Transport {
                            api,
                            host,
                            detail,
                            attempts,
                        }) => PlatformError::Transport {
                            api,
                            host: format!("{host} (and the fallback {})", host_of(&fallback)),
                            detail,
                            attempts,
                        },
                        Err(e) => e,
                    });
                }
                tracing::info!(
                    default = %primary,
                    reason = %why,
                    answered_by = %fallback,
                    "the default login host did not answer; the login fallback did"
                );
                (second?, fallback)
            }
        };
        if answer.status == StatusCode::NOT_FOUND {
            return Err(classify_answer(
                LOGIN_API,
                &answer,
                &self.channel.channel_id,
            ));
        }
        tracing::debug!(answered_by = %url, "teacher_login answered");
        let mut reply: LoginReply = decode(LOGIN_API, &answer)?;
        reply.answered_by = url;
        Ok(reply)
    }

    /// One teacher_login at `url`. A 404 is returned as an answer (not an error) so the
    /// caller can try the fallback.
    async fn login_at(&self, url: &str, passwd: &str) -> Result<Answer, PlatformError> {
        let id = self.channel.channel_id.as_str();
        self.send(
            LOGIN_API,
            url,
            self.retry,
            |http, ts| {
                let sign = sign::login_sign(id, passwd, ts);
                post_form(
                    http,
                    url,
                    &[
                        ("number", id),
                        ("account", id),
                        ("passwd", passwd),
                        ("timestamp", &ts.to_string()),
                        ("sign", &sign),
                    ],
                )
            },
            |a| {
                if a.status == StatusCode::NOT_FOUND {
                    None
                } else {
                    check_flat(LOGIN_API, a, &["url", "stream"], id)
                }
            },
        )
        .await
    }

    /// notify_stream2: tells Polyv the stream is up and its video size.
    pub async fn notify_stream(
        &self,
        stream: &str,
        width: u32,
        height: u32,
    ) -> Result<(), PlatformError> {
        const API: &str = "notify_stream2";
        let id = self.channel.channel_id.as_str();
        let url = self.endpoints.notify_url();
        self.send(
            API,
            &url,
            self.retry,
            |http, ts| {
                post_form(
                    http,
                    &url,
                    &[
                        ("number", id),
                        ("stream", stream),
                        ("timestamp", &ts.to_string()),
                        ("sign", &sign::notify_sign(id, ts)),
                        ("videowidth", &width.to_string()),
                        ("videoheight", &height.to_string()),
                    ],
                )
            },
            |a| {
                if a.status.is_success() && a.body.trim_ascii() == b"1" {
                    None
                } else {
                    Some(classify_answer(API, a, id))
                }
            },
        )
        .await
        .map(|_| ())
    }

    /// Renames the channel (scheme 2; no account credentials needed).
    pub async fn rename_channel(&self, name: &str) -> Result<(), PlatformError> {
        const API: &str = "channel rename";
        let id = self.channel.channel_id.as_str();
        let url = self.endpoints.rename_url(id);
        let sign = sign::rename_sign(id, name);
        self.send(
            API,
            &url,
            self.retry,
            |http, ts| {
                post_form(
                    http,
                    &url,
                    &[("name", name), ("ptime", &ts.to_string()), ("sign", &sign)],
                )
            },
            |a| {
                let ok = serde_json::from_slice::<Value>(&a.body)
                    .ok()
                    .is_some_and(|v| v["status"] == "success");
                if a.status.is_success() && ok {
                    None
                } else {
                    Some(classify_answer(API, a, id))
                }
            },
        )
        .await
        .map(|_| ())
    }

    /// Online viewers of the channel. Poll no more often than every 10 s.
    ///
    /// With appId and appSecret configured: the signed `count-online-user` (polyv-live-cli's
    /// way), and when that fails, one try of the chat room's unsigned `listUsers` (every iOS
    /// SDK's way); the error is the signed call's when both fail. Without them: `listUsers`.
    pub async fn viewers(&self) -> Result<Viewers, PlatformError> {
        if self.app.is_none() {
            return self.list_users(self.retry).await;
        }
        match self.online_count().await {
            Ok(count) => Ok(Viewers {
                count,
                userlist: Vec::new(),
            }),
            Err(signed) => {
                tracing::debug!(error = %signed, "count-online-user failed; trying listUsers once");
                self.list_users(RetryPolicy::once()).await.map_err(|e| {
                    tracing::debug!(error = %e, "listUsers failed too");
                    signed
                })
            }
        }
    }

    /// `GET /live/v3/channel/chat/count-online-user?channelId=` (scheme 3): `data` is the count.
    async fn online_count(&self) -> Result<u64, PlatformError> {
        const API: &str = "count-online-user";
        let data: Value = self
            .signed_call(
                API,
                Method::GET,
                ONLINE_COUNT_PATH,
                &[("channelId", self.channel.channel_id.as_str())],
                None,
                false,
            )
            .await?;
        match &data {
            Value::Number(n) => n.as_u64(),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        }
        .ok_or_else(|| PlatformError::Undecodable {
            api: API,
            status: 200,
            first_bytes: data.to_string().chars().take(80).collect(),
        })
    }

    /// `GET /front/listUsers?roomId=`: unsigned; `{count, userlist}`.
    async fn list_users(&self, retry: RetryPolicy) -> Result<Viewers, PlatformError> {
        const API: &str = "listUsers";
        let url = self.endpoints.list_users_url();
        let id = self.channel.channel_id.as_str();
        let answer = self
            .send(
                API,
                &url,
                retry,
                |http, _| http.get(&url).query(&[("roomId", id)]),
                |a| check_flat(API, a, &["count"], id),
            )
            .await?;
        decode(API, &answer)
    }
}

/// The host of a URL, for messages.
fn host_of(url: &str) -> String {
    reqwest::Url::parse(url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_string))
        .unwrap_or_else(|| url.to_string())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delay_is_bounded_full_jitter() {
        let p = RetryPolicy::default();
        assert_eq!(p.delay(0, 1.0), Duration::from_millis(500));
        assert_eq!(p.delay(3, 1.0), Duration::from_secs(4));
        assert_eq!(p.delay(30, 1.0), Duration::from_secs(8));
        assert_eq!(p.delay(5, 0.0), Duration::ZERO);
    }

    fn client() -> PolyvClient {
        PolyvClient::from_config(&PolyvSettings {
            channel_id: "153884".into(),
            app_id: Some("g4rqgmmjuo".into()),
            app_secret: Some(Secret::new("fsq2k5weced1h8vui657xtdva66whf0g")),
            endpoints: Endpoints::all("http://127.0.0.1:9"),
            ..PolyvSettings::default()
        })
        .unwrap()
    }

    fn content_type(req: RequestBuilder) -> (String, Vec<u8>) {
        let req = req.build().unwrap();
        let ct = req.headers().get_all(header::CONTENT_TYPE);
        assert_eq!(ct.iter().count(), 1, "exactly one Content-Type");
        let ct = ct.iter().next().unwrap().to_str().unwrap().to_string();
        let body = req
            .body()
            .and_then(|b| b.as_bytes())
            .unwrap_or_default()
            .to_vec();
        (ct, body)
    }

    /// Form and JSON bodies declare UTF-8 (Polyv's Java SDK `Constant.java`); a Chinese name
    /// travels as percent-encoded UTF-8.
    #[test]
    fn bodies_declare_utf8() {
        let c = client();
        let (ct, body) = content_type(post_form(
            &c.http,
            "http://127.0.0.1:9/v1/channels/1/update",
            &[("name", "小程序推流测试test")],
        ));
        assert_eq!(ct, "application/x-www-form-urlencoded;charset=UTF-8");
        assert_eq!(
            String::from_utf8(body).unwrap(),
            "name=%E5%B0%8F%E7%A8%8B%E5%BA%8F%E6%8E%A8%E6%B5%81%E6%B5%8B%E8%AF%95test"
        );
        let app = c.app().unwrap();
        let (ct, body) = content_type(c.signed_request(
            &c.http,
            app,
            &Method::POST,
            "http://127.0.0.1:9/live/v4/channel/mr/create",
            1,
            &[],
            Some("{\"name\":\"物理\"}".as_bytes()),
            false,
        ));
        assert_eq!(ct, "application/json;charset=UTF-8");
        assert_eq!(String::from_utf8(body).unwrap(), "{\"name\":\"物理\"}");
        let (ct, body) = content_type(c.signed_request(
            &c.http,
            app,
            &Method::POST,
            "http://127.0.0.1:9/live/v3/channel/create-cpic-channel",
            1,
            &[("name", "物理")],
            None,
            true,
        ));
        assert_eq!(ct, "application/x-www-form-urlencoded;charset=UTF-8");
        assert!(String::from_utf8(body)
            .unwrap()
            .contains("name=%E7%89%A9%E7%90%86"));
    }

    #[test]
    fn a_bad_dns_override_is_an_error_not_a_panic() {
        let mut cfg = PolyvSettings::default();
        cfg.endpoints
            .resolve
            .insert("api.polyv.net".into(), "nowhere".into());
        let e = PolyvClient::from_config(&cfg).unwrap_err().to_string();
        assert!(e.contains("polyv.endpoints.resolve"), "{e}");
        assert!(e.contains("not an IP address"), "{e}");
    }
}
