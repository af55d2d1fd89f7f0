//! The status server over a hub filled by hand: every endpoint's codes and bodies, the health
//! transitions, the bearer token, `promtool check metrics` over `/metrics`, and the viewer
//! poller against the real simulator.

mod common;

use common::status::broadcast;
use common::*;
use polypush::platform::PolyvClient;
use polypush::platform::{Endpoints, PolyvSettings};
use polypush::rtmp::SenderControl;
use polypush::rtmp::SenderPhase;
use polypush::secret::Secret;
use polypush::status::StatusSettings as StatusConfig;
use polypush::status::{
    serve, spawn_viewer_poller, DaemonState, ScheduleStatus, StatusError, StatusHub,
};
use std::io::Write;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};
use tokio::time::Instant;

/// A server on a free loopback port; stops when dropped.
struct Server {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Server {
    async fn start(hub: &StatusHub, token: Option<&str>) -> Server {
        let cfg = StatusConfig {
            listen: "127.0.0.1:0".into(),
            ..StatusConfig::default()
        };
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let (addr, task) = serve(&cfg, hub.clone(), token.map(Secret::new), async move {
            let _ = rx.await;
        })
        .await
        .expect("status server starts");
        Server {
            addr,
            stop: Some(tx),
            task: Some(task),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(10), self.task.take().unwrap())
            .await
            .expect("server stops on shutdown")
            .unwrap();
    }
}

async fn get(url: &str) -> (u16, String) {
    let r = reqwest::get(url).await.expect("GET");
    (r.status().as_u16(), r.text().await.unwrap())
}

async fn post(url: &str) -> (u16, String) {
    let r = reqwest::Client::new().post(url).send().await.expect("POST");
    (r.status().as_u16(), r.text().await.unwrap())
}

fn scheduled(in_window: bool) -> ScheduleStatus {
    let now = SystemTime::now();
    ScheduleStatus {
        configured: true,
        in_window,
        window_start: in_window.then(|| now - Duration::from_secs(1800)),
        window_end: in_window.then(|| now + Duration::from_secs(1800)),
        next_start: Some(now + Duration::from_secs(86_400)),
        next_end: Some(now + Duration::from_secs(86_400 + 3600)),
        title: Some("Physics".into()),
        ..ScheduleStatus::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_and_health_transitions() {
    let hub = StatusHub::new();
    hub.set_schedule(scheduled(false));
    hub.set_state(DaemonState::Idle);
    let srv = Server::start(&hub, None).await;

    // Idle outside a window: healthy.
    assert_eq!(get(&srv.url("/healthz")).await, (200, "ok: idle\n".into()));
    let (code, body) = get(&srv.url("/status")).await;
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["state"], "idle");
    assert_eq!(v["health"]["healthy"], true);
    assert_eq!(v["schedule"]["configured"], true);
    assert_eq!(v["schedule"]["in_window"], false);
    assert_eq!(v["schedule"]["title"], "Physics");
    let next = v["schedule"]["next_start"].as_str().unwrap();
    assert!(
        next.len() == 20 && next.ends_with('Z') && &next[10..11] == "T",
        "RFC 3339: {next}"
    );
    assert!(v["broadcast"].is_null());
    assert!(v["viewers"].is_null());
    assert_eq!(v["broadcasts"], 0);

    // No broadcast: nothing to reconnect; GET is not the way to ask.
    let (code, body) = post(&srv.url("/reconnect")).await;
    assert_eq!(code, 409, "{body}");
    assert!(body.contains("no broadcast is running"), "{body}");
    assert_eq!(get(&srv.url("/reconnect")).await.0, 405);
    assert_eq!(get(&srv.url("/nope")).await.0, 404);

    // The window opens; the broadcast starts but has not published yet: grace.
    hub.set_schedule(scheduled(true));
    hub.set_state(DaemonState::Live);
    let control = SenderControl::new();
    hub.broadcast_started(control.clone());
    hub.update_broadcast(broadcast(
        Instant::now(),
        SenderPhase::Connecting,
        Some("connection refused"),
    ));
    let (code, body) = get(&srv.url("/healthz")).await;
    assert_eq!(code, 200, "{body}");
    assert!(body.starts_with("ok: live"), "{body}");

    // Still not publishing 60 s after the start: unhealthy, with the reason.
    let long_ago = Instant::now()
        .checked_sub(Duration::from_secs(60))
        .expect("uptime over 60 s");
    hub.update_broadcast(broadcast(
        long_ago,
        SenderPhase::Waiting,
        Some("connection refused"),
    ));
    let (code, body) = get(&srv.url("/healthz")).await;
    assert_eq!(code, 503, "{body}");
    assert!(
        body.starts_with(
            "inside a window but not publishing: reconnecting (connection refused) for "
        ),
        "{body}"
    );

    // Publishing: healthy; /reconnect goes to the sender.
    hub.update_broadcast(broadcast(long_ago, SenderPhase::Publishing, None));
    hub.set_viewers(Some(42));
    assert_eq!(get(&srv.url("/healthz")).await, (200, "ok: live\n".into()));
    let mut asked = control.subscribe();
    let _ = asked.borrow_and_update();
    let (code, body) = post(&srv.url("/reconnect")).await;
    assert_eq!(code, 202, "{body}");

    let (_, body) = get(&srv.url("/status")).await;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["state"], "live");
    assert_eq!(v["viewers"], 42);
    assert_eq!(v["broadcasts"], 1);
    let b = &v["broadcast"];
    assert_eq!(b["publishing"], true);
    assert_eq!(b["sender_state"], "publishing");
    assert_eq!(b["bytes_sent"], 5_000_000);
    assert_eq!(b["bytes_acknowledged"], 4_900_000);
    assert_eq!(b["target_kbps"], 1800);
    assert_eq!(b["configured_kbps"], 2500);
    // Media health: an active alarm is a warning, not unhealthy (/healthz was 200 above).
    assert_eq!(v["media"]["active"], serde_json::json!(["clipping"]));
    assert_eq!(v["media"]["alarms"]["clipping"]["for_s"], 3.0);
    assert_eq!(v["media"]["audio"]["channels"][1]["peak_dbfs"], -18.1);
    assert_eq!(v["media"]["video"]["capture_fps"], 25.0);
    // /meter: the levels and active alarms alone.
    let (code, body) = get(&srv.url("/meter")).await;
    assert_eq!(code, 200, "{body}");
    let m: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(m["channels"][0]["rms_dbfs"], -21.0, "{m}");
    assert_eq!(m["alarms"], serde_json::json!(["clipping"]));
    assert_eq!(b["queue_delay_ms"], 120);
    assert_eq!(b["video"]["frames_encoded"], 1500);
    assert!(b["uptime_s"].as_f64().unwrap() >= 60.0);
    assert_eq!(v["totals"]["bytes_sent"], 5_000_000);
    assert_eq!(v["totals"]["frames_dropped"]["encoder_behind"], 3);

    // Rejected credentials: unhealthy at once.
    hub.update_broadcast(broadcast(
        Instant::now(),
        SenderPhase::CredentialsRejected,
        Some("the channel password was rejected"),
    ));
    let (code, body) = get(&srv.url("/healthz")).await;
    assert_eq!(code, 503);
    assert!(body.starts_with("credentials rejected"), "{body}");

    // The broadcast fails: unhealthy with the reason; counters stay in the metrics.
    hub.broadcast_ended(Some("camera /dev/video0 is gone".into()), true);
    hub.set_state(DaemonState::Failed {
        reason: "camera /dev/video0 is gone".into(),
    });
    let (code, body) = get(&srv.url("/healthz")).await;
    assert_eq!(
        (code, body.as_str()),
        (503, "broadcast failed: camera /dev/video0 is gone\n")
    );
    let (code, body) = get(&srv.url("/metrics")).await;
    assert_eq!(code, 200);
    for line in [
        "polypush_state{state=\"failed\"} 1",
        "polypush_sent_bytes_total 5000000",
        "polypush_capture_errors_total 1",
        "polypush_broadcasts_total 1",
    ] {
        assert!(
            body.lines().any(|l| l == line),
            "missing {line:?} in\n{body}"
        );
    }
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_guards_every_endpoint() {
    const TOKEN: &str = "7f3a9c2e-status-token";
    let hub = StatusHub::new();
    hub.set_state(DaemonState::Idle);
    hub.set_schedule(scheduled(false));
    let srv = Server::start(&hub, Some(TOKEN)).await;
    let http = no_redirects();
    for (method, path) in [
        ("GET", "/metrics"),
        ("GET", "/healthz"),
        ("GET", "/status"),
        ("GET", "/meter"),
        ("POST", "/reconnect"),
        ("POST", "/logout"),
        ("GET", "/"),
        ("GET", "/app.js"),
    ] {
        let m: reqwest::Method = method.parse().unwrap();
        for auth in [
            None,
            Some("Bearer wrong"),
            Some("Basic 7f3a9c2e-status-token"),
        ] {
            let mut req = http.request(m.clone(), srv.url(path));
            if let Some(a) = auth {
                req = req.header("Authorization", a);
            }
            let r = req.send().await.unwrap();
            if path == "/" || path == "/app.js" {
                // A page: the browser is sent to the login form.
                assert_eq!(r.status().as_u16(), 303, "{method} {path} with {auth:?}");
                assert_eq!(r.headers()["location"], "/login");
            } else {
                assert_eq!(r.status().as_u16(), 401, "{method} {path} with {auth:?}");
                let challenge = r.headers()["www-authenticate"]
                    .to_str()
                    .unwrap()
                    .to_string();
                assert!(challenge.starts_with("Bearer"), "{challenge}");
            }
            assert!(!r.text().await.unwrap().contains(TOKEN));
        }
        let r = http
            .request(m, srv.url(path))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        let code = r.status().as_u16();
        let body = r.text().await.unwrap();
        let want = match path {
            "/reconnect" => 409,
            "/logout" => 303,
            _ => 200,
        };
        assert_eq!(code, want, "{method} {path}: {body}");
        assert!(!body.contains(TOKEN), "{path} shows the token");
    }
    // A browser opening the API in a tab is sent to the form too; a program is not.
    let r = http
        .get(srv.url("/status"))
        .header("Accept", "text/html,application/xhtml+xml,*/*;q=0.8")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 303);
    // The login form and its stylesheet are open.
    assert_eq!(
        http.get(srv.url("/login")).send().await.unwrap().status(),
        200
    );
    assert_eq!(
        http.get(srv.url("/app.css")).send().await.unwrap().status(),
        200
    );
    srv.stop().await;
}

/// A client that shows redirects instead of following them, and keeps no cookies.
fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Every header value and the body, for "the token is nowhere in it".
async fn whole(r: reqwest::Response) -> (u16, reqwest::header::HeaderMap, String) {
    let code = r.status().as_u16();
    let headers = r.headers().clone();
    (code, headers, r.text().await.unwrap())
}

fn assert_no_token(token: &str, what: &str, headers: &reqwest::header::HeaderMap, body: &str) {
    assert!(!body.contains(token), "{what}: the token in the body");
    for (k, v) in headers {
        assert!(
            !String::from_utf8_lossy(v.as_bytes()).contains(token),
            "{what}: the token in {k}"
        );
    }
}

/// The browser's way in: the form (in the negotiated language), a refused token (slowed, back
/// to the form with the error), the right one (a session cookie that is not the token and
/// opens the page, the API and the actions), cross-site POSTs with the cookie refused, logout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_login_form_sets_a_session_cookie_that_opens_the_page() {
    const TOKEN: &str = "c0ffee-login-token-42";
    let hub = StatusHub::new();
    hub.set_state(DaemonState::Idle);
    hub.set_schedule(scheduled(false));
    let srv = Server::start(&hub, Some(TOKEN)).await;
    let http = no_redirects();

    // The form, in Chinese for a Chinese browser, in English with ?lang=en.
    let (code, h, body) = whole(
        http.get(srv.url("/login"))
            .header("Accept-Language", "zh-CN,zh;q=0.9,en;q=0.8")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(code, 200);
    assert!(
        body.contains("<html lang=\"zh-CN\">") && body.contains("令牌"),
        "{body}"
    );
    assert_eq!(h["vary"], "Accept-Language");
    let (_, _, body) = whole(
        http.get(srv.url("/login?lang=en"))
            .header("Accept-Language", "zh-CN")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert!(
        body.contains("<html lang=\"en\">") && body.contains("Log in"),
        "{body}"
    );

    // A wrong token: slowed, back to the form, no cookie.
    let t0 = std::time::Instant::now();
    let (code, h, body) = whole(
        http.post(srv.url("/login"))
            .form(&[("token", "guess"), ("lang", "zh-CN")])
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert!(
        t0.elapsed() >= Duration::from_millis(900),
        "{:?}",
        t0.elapsed()
    );
    assert_eq!(code, 303, "{body}");
    assert_eq!(h["location"], "/login?failed=1&lang=zh-CN");
    assert!(h.get("set-cookie").is_none());
    let (code, _, body) = whole(
        http.get(srv.url("/login?failed=1&lang=zh-CN"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(code, 401);
    assert!(body.contains("令牌不正确"), "{body}");

    // The right token: a cookie (not the token) and the page.
    let (code, h, body) = whole(
        http.post(srv.url("/login"))
            .form(&[("token", TOKEN), ("lang", "")])
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(code, 303, "{body}");
    assert_eq!(h["location"], "/");
    assert_no_token(TOKEN, "POST /login", &h, &body);
    let set_cookie = h["set-cookie"].to_str().unwrap().to_string();
    for attr in ["HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(set_cookie.contains(attr), "{set_cookie}");
    }
    let cookie = set_cookie.split(';').next().unwrap().to_string();
    let (name, value) = cookie.split_once('=').unwrap();
    assert_eq!(name, "polypush_session");
    assert_eq!(value.len(), 64, "a SHA-256 in hex: {value}");

    // The same token gives the same cookie (it survives a restart); another token does not
    // accept it.
    let other = Server::start(&hub, Some(TOKEN)).await;
    let r = http
        .get(other.url("/status"))
        .header("Cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    other.stop().await;
    let changed = Server::start(&hub, Some("another-token")).await;
    let r = http
        .get(changed.url("/status"))
        .header("Cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    changed.stop().await;

    // With the cookie: the page (English for an English browser), the API, the assets.
    let page = |path: &str| {
        http.get(srv.url(path))
            .header("Cookie", format!("theme=dark; {cookie}"))
            .header("Accept-Language", "en-US,en;q=0.9")
    };
    let (code, h, body) = whole(page("/").send().await.unwrap()).await;
    assert_eq!(code, 200);
    assert!(body.contains("<html lang=\"en\">") && body.contains("Reconnect now"));
    assert!(h["content-type"].to_str().unwrap().starts_with("text/html"));
    assert_no_token(TOKEN, "GET /", &h, &body);
    let etag = h["etag"].clone();
    let r = page("/")
        .header("If-None-Match", etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 304);
    for path in ["/status", "/metrics", "/healthz", "/app.js"] {
        let (code, h, body) = whole(page(path).send().await.unwrap()).await;
        assert_eq!(code, 200, "{path}: {body}");
        assert_no_token(TOKEN, path, &h, &body);
    }

    // Actions with the cookie: from the page itself, yes; from anywhere else, no.
    let post = |path: &str| http.post(srv.url(path)).header("Cookie", &cookie);
    let host = srv.addr.to_string();
    for (what, req) in [
        ("no origin at all", post("/reconnect")),
        (
            "another site",
            post("/reconnect").header("Origin", "http://evil.example"),
        ),
        (
            "a cross-site fetch",
            post("/reconnect")
                .header("Sec-Fetch-Site", "cross-site")
                .header("Origin", format!("http://{host}")),
        ),
        ("a null origin", post("/reconnect").header("Origin", "null")),
        (
            "logout from elsewhere",
            post("/logout").header("Sec-Fetch-Site", "same-site"),
        ),
    ] {
        let (code, _, body) = whole(req.send().await.unwrap()).await;
        assert_eq!(code, 403, "{what}: {body}");
        assert!(body.contains("same origin"), "{body}");
    }
    let (code, _, body) = whole(
        post("/reconnect")
            .header("Origin", format!("http://{host}"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(code, 409, "same origin by Origin: {body}");
    let (code, _, body) = whole(
        post("/reconnect")
            .header("Sec-Fetch-Site", "same-origin")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(code, 409, "same origin by Sec-Fetch-Site: {body}");
    // A program with the bearer token needs no origin.
    let r = http
        .post(srv.url("/reconnect"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 409);

    // Logout clears the cookie and goes to the form.
    let (code, h, _) = whole(
        post("/logout")
            .header("Sec-Fetch-Site", "same-origin")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(code, 303);
    assert_eq!(h["location"], "/login");
    assert!(h["set-cookie"].to_str().unwrap().contains("Max-Age=0"));
    srv.stop().await;
}

/// On loopback without a token, the page is open and /login goes straight to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_token_the_page_is_open() {
    let hub = StatusHub::new();
    hub.set_state(DaemonState::Idle);
    let srv = Server::start(&hub, None).await;
    let http = no_redirects();
    let (code, h, body) = whole(
        http.get(srv.url("/"))
            .header("Accept-Language", "fr-FR,zh;q=0.5,en;q=0.4")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(code, 200);
    assert!(body.contains("<html lang=\"zh-CN\">") && body.contains("data-auth=\"0\""));
    assert_eq!(h["cache-control"], "private, no-cache");
    assert_eq!(h["x-frame-options"], "DENY");
    let r = http.get(srv.url("/login")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 303);
    assert_eq!(r.headers()["location"], "/");
    let r = http.get(srv.url("/app.css")).send().await.unwrap();
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/css"));
    assert!(r.headers()["cache-control"]
        .to_str()
        .unwrap()
        .contains("max-age"));
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_errors_name_the_key() {
    let hub = StatusHub::new();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let cfg = StatusConfig {
        listen: taken.local_addr().unwrap().to_string(),
        ..StatusConfig::default()
    };
    let err = serve(&cfg, hub.clone(), None, std::future::pending())
        .await
        .unwrap_err();
    assert!(matches!(err, StatusError::Bind { .. }), "{err}");
    assert!(
        err.to_string()
            .starts_with("status.listen: cannot listen on"),
        "{err}"
    );

    let cfg = StatusConfig {
        listen: "0.0.0.0:0".into(),
        ..StatusConfig::default()
    };
    let err = serve(&cfg, hub.clone(), None, std::future::pending())
        .await
        .unwrap_err();
    assert!(
        err.to_string().starts_with("status.token_file: required"),
        "{err}"
    );

    let cfg = StatusConfig {
        listen: "localhost".into(),
        ..StatusConfig::default()
    };
    let err = serve(&cfg, hub, None, std::future::pending())
        .await
        .unwrap_err();
    assert!(
        err.to_string().starts_with("status.listen: \"localhost\""),
        "{err}"
    );
}

/// `promtool` from `scripts/promtool.sh` (which fetches Debian's package without installing
/// it), or `None` with a message when the script cannot provide one.
fn promtool() -> Option<String> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/promtool.sh");
    let out = Command::new(script)
        .stderr(Stdio::piped())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {script}: {e}"));
    if !out.status.success() {
        eprintln!(
            "SKIPPED promtool check: scripts/promtool.sh failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        return None;
    }
    Some(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// `promtool check metrics < body`: exit 0 and nothing printed (it lints names and units).
fn promtool_check(promtool: &str, body: &str) {
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool check metrics: {:?}\n{said}\n--- body:\n{body}",
        out.status
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_pass_promtool() {
    let Some(promtool) = promtool() else { return };
    let hub = StatusHub::new();
    hub.set_schedule(scheduled(false));
    hub.set_state(DaemonState::Idle);
    let srv = Server::start(&hub, None).await;

    let (code, idle) = get(&srv.url("/metrics")).await;
    assert_eq!(code, 200);
    promtool_check(&promtool, &idle);
    assert!(
        idle.contains("polypush_schedule_next_start_timestamp_seconds "),
        "{idle}"
    );

    hub.set_schedule(scheduled(true));
    hub.set_state(DaemonState::Live);
    hub.broadcast_started(SenderControl::new());
    let mut live_broadcast = broadcast(Instant::now(), SenderPhase::Publishing, None);
    live_broadcast.pipeline.audio_sync = polypush::encode::AudioSyncStats {
        drift_milli_ppm: Some(301_250),
        av_offset_us: Some(-2_000),
        silence_inserted: 0,
        frames_skipped: 1,
    };
    hub.update_broadcast(live_broadcast);
    hub.set_viewers(Some(12));
    hub.reload_applied();
    hub.reload_failed("bad value".into());
    hub.set_lessons(common::status::lessons());
    let r = reqwest::get(srv.url("/metrics")).await.unwrap();
    assert_eq!(
        r.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let live = r.text().await.unwrap();
    promtool_check(&promtool, &live);

    // Every metric the daemon documents is there while live.
    for name in [
        "polypush_state",
        "polypush_connected",
        "polypush_credentials_rejected",
        "polypush_reconnects_total",
        "polypush_sent_bytes_total",
        "polypush_acknowledged_bytes_total",
        "polypush_audio_clock_drift_ppm",
        "polypush_av_offset_seconds",
        "polypush_audio_timeline_corrections",
        "polypush_frames_encoded_total",
        "polypush_frames_dropped_total",
        "polypush_device_losses_total",
        "polypush_capture_errors_total",
        "polypush_broadcasts_total",
        "polypush_config_reloads_total",
        "polypush_encoder_fps",
        "polypush_video_target_bitrate_bytes_per_second",
        "polypush_video_configured_bitrate_bytes_per_second",
        "polypush_delivered_bitrate_bytes_per_second",
        "polypush_queue_delay_seconds",
        "polypush_viewers",
        "polypush_schedule_in_window",
        "polypush_schedule_next_start_timestamp_seconds",
        "polypush_schedule_next_end_timestamp_seconds",
        "polypush_build_info",
        "polypush_media_alarm",
        "polypush_media_alarms_raised_total",
        "polypush_audio_peak_dbfs",
        "polypush_audio_rms_dbfs",
        "polypush_video_luma_mean",
        "polypush_video_frame_change",
        "polypush_video_capture_fps",
        "polypush_last_lesson_on_air_ratio",
    ] {
        assert!(
            live.contains(&format!("# TYPE {name} ")),
            "{name} missing:\n{live}"
        );
    }
    for line in [
        "polypush_last_lesson_on_air_ratio 0.8",
        "polypush_viewers 12",
        "polypush_connected 1",
        "polypush_frames_encoded_total{track=\"video\"} 1500",
        "polypush_device_losses_total{track=\"video\"} 1",
        "polypush_config_reloads_total{result=\"failed\"} 1",
        "polypush_video_target_bitrate_bytes_per_second 225000.0",
        "polypush_media_alarm{alarm=\"clipping\"} 1",
        "polypush_media_alarm{alarm=\"silence\"} 0",
        "polypush_media_alarms_raised_total{alarm=\"clipping\"} 1",
        "polypush_audio_peak_dbfs{channel=\"1\"} -18.1",
    ] {
        assert!(live.lines().any(|l| l == line), "missing {line:?}:\n{live}");
    }

    // A scraper that asks for OpenMetrics (Prometheus does) gets it.
    let r = reqwest::Client::new()
        .get(srv.url("/metrics"))
        .header(
            "Accept",
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
        )
        .send()
        .await
        .unwrap();
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/openmetrics-text"));
    let om = r.text().await.unwrap();
    assert!(om.ends_with("# EOF\n"), "{om}");
    assert!(om.contains("# TYPE polypush_sent_bytes counter\n"), "{om}");
    srv.stop().await;
}

fn sim_client(sim: &Sim) -> PolyvClient {
    let cfg = PolyvSettings {
        channel_id: CHANNEL.into(),
        password: Some(Secret::new(PASSWORD)),
        timeout_s: 5,
        endpoints: Endpoints::all(&sim.base),
        ..PolyvSettings::default()
    };
    PolyvClient::from_config(&cfg).unwrap()
}

fn list_users_at_ms(sim: &Sim) -> Vec<i64> {
    sim.requests()
        .iter()
        .filter(|r| r["path"] == "/front/listUsers")
        .map(|r| r["at_ms"].as_i64().unwrap())
        .collect()
}

/// Waits until the hub shows `want` viewers (it wakes on every hub change; no polling).
async fn wait_for_viewers(hub: &StatusHub, want: u64, within: Duration) {
    tokio::time::timeout(within, hub.wait_for(|s| s.viewers == Some(want)))
        .await
        .unwrap_or_else(|_| panic!("viewers still {:?}, want {want}", hub.snapshot().viewers));
}

/// The poller against the simulator: nothing while idle, the simulator's count once live, the
/// next count at a later poll, unknown again when idle. (The 10 s floor and the schedule are
/// counted exactly on the paused clock in `status::viewers`' unit test.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewer_poller_fills_viewers_from_the_simulator_while_live() {
    let sim = Sim::start();
    sim.set_channel(CHANNEL, r#"{"viewers": 7}"#);
    let hub = StatusHub::new();
    hub.set_state(DaemonState::Idle);
    let poller = spawn_viewer_poller(sim_client(&sim), hub.clone(), Duration::from_secs(1));

    hub.set_state(DaemonState::Live);
    let live_at_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    hub.broadcast_started(SenderControl::new());
    wait_for_viewers(&hub, 7, Duration::from_secs(5)).await;
    let at = list_users_at_ms(&sim);
    assert_eq!(at.len(), 1, "{at:?}");
    assert!(
        at[0] >= live_at_ms - 5,
        "no poll while idle: {at:?} vs {live_at_ms}"
    );

    sim.set_channel(CHANNEL, r#"{"viewers": 9}"#);
    wait_for_viewers(&hub, 9, Duration::from_secs(20)).await;
    assert_eq!(list_users_at_ms(&sim).len(), 2);

    // Idle again: the count is unknown and polling stops.
    hub.set_state(DaemonState::Idle);
    tokio::time::timeout(
        Duration::from_secs(5),
        hub.wait_for(|s| s.viewers.is_none()),
    )
    .await
    .expect("the count is dropped when idle");
    poller.abort();
}
