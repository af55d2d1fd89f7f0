//! The network checks (`login`, `ingest`, `clock`): Polyv's `teacher_login`, an RTMP handshake
//! and `connect` to the push address, and this box's clock against Polyv's.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::{Check, SIGNING_WINDOW_S};
use crate::config::Config;
use crate::exit::ExitCode;
use crate::platform::{Endpoints, RetryPolicy};
use crate::platform::{PlatformError, PolyvClient};
use crate::rtmp::{ConnectOptions, Phase, RtmpError, RtmpUrl};

/// TCP connect, and handshake plus `connect`, are each bounded by this (or the configured
/// timeouts, when shorter).
const RTMP_LIMIT: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------------------------
// Polyv

pub(super) struct Login {
    pub(super) check: Check,
    pub(super) url: Option<RtmpUrl>,
    /// Polyv answered (whatever it said): the clock check can ask it the time.
    pub(super) reachable: bool,
    /// The teacher_login URL that answered with a push address.
    pub(super) answered_by: Option<String>,
}

/// What Polyv's refusal means, without the advice (that goes to `fix`).
fn platform_detail(e: &PlatformError) -> String {
    match e {
        PlatformError::CredentialsRejected {
            channel_id,
            message,
        } => format!("Polyv rejected the channel password of channel {channel_id} ({message})"),
        PlatformError::StaleTimestamp { skew, .. } => {
            format!("Polyv rejected the request's timestamp: {skew}")
        }
        PlatformError::Transport {
            host,
            detail,
            attempts: _,
            ..
        } => format!("cannot reach Polyv at {host}: {detail}"),
        other => other.to_string(),
    }
}

fn platform_fix(e: &PlatformError) -> String {
    match e {
        PlatformError::CredentialsRejected { .. } => "check polyv.channel_id and the channel password in polyv.password_file (or the polyv-password systemd credential): it is the password of the channel's web broadcast login".into(),
        PlatformError::AppRejected { .. } => "check polyv.app_id against the API settings of your Polyv account".into(),
        PlatformError::SignatureRejected { .. } => "check that polyv.app_secret_file holds the appSecret of polyv.app_id".into(),
        PlatformError::StaleTimestamp { .. } => "enable NTP: timedatectl set-ntp true (this box's clock is off; see the clock check)".into(),
        PlatformError::LoginRefused { reason, .. } => {
            crate::platform::login_refusal_advice(reason).into()
        }
        PlatformError::Validation { .. } => "correct what Polyv names in [polyv]".into(),
        PlatformError::RateLimited { .. } => "wait at least 5 minutes: Polyv blocks this address for about 5 minutes".into(),
        PlatformError::Server { .. } => "try again later; if it persists, check Polyv's status".into(),
        PlatformError::Transport { .. } => "check the network, DNS (polyv.endpoints.resolve can pin Polyv's hosts to addresses), polyv.endpoints.login and login_fallback, and the CA store if TLS failed (SSL_CERT_FILE); try `curl -sI` on the login URL from this box".into(),
        PlatformError::Undecodable { .. } => "a proxy or captive portal may be in the way, or polyv.endpoints.login points at no Polyv login: check the network and polyv.endpoints".into(),
    }
}

pub(super) async fn check_login(cfg: &Config) -> Login {
    let unreachable = |check| Login {
        check,
        url: None,
        reachable: false,
        answered_by: None,
    };
    if let Err(e) = cfg.polyv.password() {
        return unreachable(Check::fail(
            "login",
            ExitCode::Config,
            format!("no channel password: {e}"),
            "set password_file under [polyv] (a root-only file with the channel password) or provide the systemd credential polyv-password",
        ));
    }
    let client = match PolyvClient::from_config(&cfg.polyv) {
        Ok(c) => c.with_retry(RetryPolicy {
            max_attempts: 1,
            ..RetryPolicy::default()
        }),
        Err(e) => {
            return unreachable(Check::fail(
                "login",
                e.exit_code(),
                platform_detail(&e),
                platform_fix(&e),
            ))
        }
    };
    // One attempt at the default host, and one at the fallback when the default is down.
    let hosts = 1 + u32::from(cfg.polyv.endpoints.login_fallback().is_some());
    let limit = Duration::from_secs(cfg.polyv.timeout_s) * hosts + Duration::from_secs(1);
    let reply = match tokio::time::timeout(limit, client.teacher_login()).await {
        Ok(Ok(reply)) => reply,
        Ok(Err(e)) => {
            let reachable = e.exit_code() == ExitCode::Refused;
            return Login {
                check: Check::fail("login", e.exit_code(), platform_detail(&e), platform_fix(&e)),
                url: None,
                reachable,
                answered_by: None,
            };
        }
        Err(_) => {
            return unreachable(Check::fail(
                "login",
                ExitCode::Unavailable,
                format!(
                    "Polyv did not answer teacher_login within {} s",
                    limit.as_secs()
                ),
                "check the network, DNS and polyv.endpoints.login; raise polyv.timeout_s on a slow uplink",
            ))
        }
    };
    let url = match RtmpUrl::parse(&reply.push_address().reveal()) {
        Ok(url) => url,
        Err(e) => {
            return Login {
                check: Check::fail(
                    "login",
                    ExitCode::Unavailable,
                    format!("Polyv returned a push address polypush cannot use: {e}"),
                    "try again later; if it persists, report it to Polyv with `polypush login`",
                ),
                url: None,
                reachable: true,
                answered_by: Some(reply.answered_by),
            }
        }
    };
    let mut detail = format!("channel {}: push address {url}", cfg.polyv.channel_id);
    if let Some(max) = reply.max_rate.filter(|&m| m > 0) {
        if max < cfg.video.bitrate_kbps {
            detail.push_str(&format!(
                "; Polyv caps this channel at {max} kbit/s, so the video is encoded at that instead of {} kbit/s",
                cfg.video.bitrate_kbps
            ));
        } else {
            detail.push_str(&format!(" (channel maximum {max} kbit/s)"));
        }
    }
    let fallback = cfg
        .polyv
        .endpoints
        .login_fallback()
        .is_some_and(|f| Endpoints::login_url(f) == reply.answered_by);
    detail.push_str(&format!("; answered by {}", reply.answered_by));
    if fallback {
        detail.push_str(" (the login fallback: the default login host did not answer)");
    }
    Login {
        check: Check::pass("login", detail),
        url: Some(url),
        reachable: true,
        answered_by: Some(reply.answered_by),
    }
}

/// The base URL of the login host that answered (the default when none did).
fn answering_base<'a>(endpoints: &'a Endpoints, answered_by: Option<&str>) -> &'a str {
    match endpoints.login_fallback() {
        Some(f) if answered_by == Some(Endpoints::login_url(f).as_str()) => f,
        _ => &endpoints.login,
    }
}

/// This box's clock against the `Date` header of Polyv's login host (the one that answered
/// the login), asked through the same TLS trust store and DNS overrides as every Polyv call.
pub(super) async fn check_clock(cfg: &Config, answered_by: Option<&str>) -> Check {
    let base = answering_base(&cfg.polyv.endpoints, answered_by).to_string();
    let fail_net = |detail: String| {
        Check::fail(
            "clock",
            ExitCode::Unavailable,
            detail,
            "check the network, DNS and polyv.endpoints.login",
        )
    };
    let http = match crate::platform::http_client_builder(&cfg.polyv).and_then(|b| {
        b.redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("polypush/", env!("CARGO_PKG_VERSION"), " selftest"))
            .build()
            .map_err(|e| PlatformError::Transport {
                api: "clock",
                host: String::new(),
                detail: e.to_string(),
                attempts: 0,
            })
    }) {
        Ok(h) => h,
        Err(e) => return fail_net(format!("cannot make an HTTP client: {e}")),
    };
    let sent = SystemTime::now();
    let started = Instant::now();
    let resp = match http.get(&base).send().await {
        Ok(r) => r,
        Err(e) => return fail_net(format!("cannot ask Polyv ({base}) for its time: {e}")),
    };
    let rtt = started.elapsed();
    let date = resp
        .headers()
        .get(reqwest::header::DATE)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| httpdate::parse_http_date(s).ok());
    drop(resp);
    let Some(server) = date else {
        return fail_net(format!(
            "{base} sent no usable Date header, so the clocks cannot be compared"
        ));
    };
    let ms = |t: SystemTime| match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs_f64() * 1000.0,
        Err(e) => -(e.duration().as_secs_f64() * 1000.0),
    };
    // `Date` has whole seconds: Polyv's time is in [Date, Date + 1 s) when it answered,
    // which was about half a round trip after we asked.
    let local_ms = ms(sent) + rtt.as_secs_f64() * 500.0;
    let server_ms = ms(server) + 500.0;
    let offset_s = (local_ms - server_ms) / 1000.0;
    let uncertainty_s = 0.5 + rtt.as_secs_f64() / 2.0;
    let dir = if offset_s >= 0.0 {
        "ahead of"
    } else {
        "behind"
    };
    let detail = format!(
        "this box's clock is {:.1} s {dir} Polyv's (±{uncertainty_s:.1} s, Date header of {base}); Polyv accepts up to {SIGNING_WINDOW_S:.0} s",
        offset_s.abs()
    );
    if offset_s.abs() >= SIGNING_WINDOW_S {
        Check::fail(
            "clock",
            ExitCode::Refused,
            detail,
            "enable NTP: timedatectl set-ntp true (then `timedatectl` should say \"System clock synchronized: yes\")",
        )
    } else if offset_s.abs() >= 30.0 {
        Check::pass(
            "clock",
            format!(
                "{detail}; within the window, but drifting: enable NTP (timedatectl set-ntp true)"
            ),
        )
    } else {
        Check::pass("clock", detail)
    }
}

// ---------------------------------------------------------------------------------------------
// Ingest

fn ingest_fix(e: &RtmpError, url: &RtmpUrl, from_polyv: bool) -> String {
    let hostport = format!("{}:{}", url.host(), url.port());
    let polyv = if from_polyv {
        " (the address is Polyv's: if this persists, contact Polyv)"
    } else {
        ""
    };
    match e {
        RtmpError::Refused { .. } => format!(
            "nothing accepts connections at {hostport}: start the RTMP server, or correct the host and port of the push address{polyv}"
        ),
        RtmpError::Timeout {
            phase: Phase::Tcp, ..
        } => format!(
            "check that this box may open TCP connections to {hostport} (firewall, proxy, uplink){polyv}"
        ),
        RtmpError::Timeout { .. } => format!(
            "{hostport} accepts TCP but does not speak RTMP in time: check it is an RTMP port (not RTMPS or HTTP) and not overloaded{polyv}"
        ),
        RtmpError::Resolve { host, .. } => format!(
            "check DNS on this box (`resolvectl query {host}`) and the host in the push address"
        ),
        RtmpError::Closed {
            phase: Phase::Connect,
            ..
        }
        | RtmpError::ConnectRejected { .. } => format!(
            "check the application part ({:?}) of the push address; nginx-rtmp drops unknown applications{polyv}",
            url.app()
        ),
        RtmpError::BadUrl { .. } => "give the push address as rtmp://host[:port]/app/stream-key".into(),
        _ => format!(
            "check that {hostport} is an RTMP ingest (not RTMPS or HTTP) and the network path to it{polyv}"
        ),
    }
}

pub(super) async fn check_ingest(cfg: &Config, url: &RtmpUrl, from_polyv: bool) -> Check {
    let opts = ConnectOptions {
        connect_timeout: Duration::from_secs(cfg.target.connect_timeout_s).min(RTMP_LIMIT),
        setup_timeout: Duration::from_secs(cfg.target.handshake_timeout_s).min(RTMP_LIMIT),
        ..ConnectOptions::default()
    };
    let limit = opts.connect_timeout + opts.setup_timeout + Duration::from_secs(1);
    let result = match tokio::time::timeout(limit, crate::rtmp::probe(url, &opts)).await {
        Ok(r) => r,
        Err(_) => Err(RtmpError::Timeout {
            addr: format!("{}:{}", url.host(), url.port()),
            phase: Phase::Connect,
            after: limit,
        }),
    };
    match result {
        Ok(p) => Check::pass(
            "ingest",
            format!(
                "{url}: {} answered the RTMP handshake in {} ms and accepted connect to {:?} in {} ms; closed without publishing",
                p.peer,
                p.handshake.as_millis(),
                url.app(),
                p.connected.as_millis()
            ),
        ),
        Err(e) => {
            Check::fail("ingest", e.exit_code(), format!("{url}: {e}"), ingest_fix(&e, url, from_polyv))
        }
    }
}
