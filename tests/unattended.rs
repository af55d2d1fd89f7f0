//! A box with nobody at it, end to end: the real `polypush run` (the service), the Polyv
//! simulator and a real nginx-rtmp. A camera that is not there at start keeps the service up
//! and unhealthy, with the reason, and without a login to Polyv, and the broadcast starts as
//! soon as the source appears (a media file that appears later stands in for the camera).
//! The retry cadence itself is pinned on tokio's paused clock (`broadcast` unit tests); these
//! prove the real process does it.

mod common;

use common::daemon::Daemon;
use common::nginx::{decode_errors, Nginx};
use common::*;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// A loopback port that was free a moment ago.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `GET path` on the status server: (status, body); (0, "") while it does not listen yet.
fn get(status: &str, path: &str) -> (u16, String) {
    if std::net::TcpStream::connect(status).is_err() {
        return (0, String::new());
    }
    http(status, "GET", path, "", "")
}

fn status_json(status: &str) -> serde_json::Value {
    let (code, body) = get(status, "/status");
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

fn logins(sim: &Sim) -> usize {
    sim.requests()
        .iter()
        .filter(|r| {
            r["path"]
                .as_str()
                .is_some_and(|p| p.ends_with("teacher_login.json"))
        })
        .count()
}

/// A short clip with picture and sound, written elsewhere and renamed into `path`, so it
/// appears at once and whole, as a camera does when plugged in.
fn make_clip(path: &Path) {
    let tmp = path.with_extension("tmp.mp4");
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-f", "lavfi", "-i"])
        .arg("testsrc=size=320x240:rate=25")
        .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
        .args([
            "-t",
            "4",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-g",
            "25",
        ])
        .args(["-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest"])
        .arg(&tmp)
        .output()
        .expect("run ffmpeg");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::rename(&tmp, path).unwrap();
}

#[test]
fn a_missing_camera_keeps_the_service_up_unhealthy_and_logged_out_until_it_appears() {
    let nginx = Nginx::start();
    let base = format!("rtmp://127.0.0.1:{}/live/", nginx.port());
    let sim = Sim::start_with(&["--rtmp-base", &base]);
    let dir = tempfile::tempdir().unwrap();
    let camera = dir.path().join("camera.mp4");
    let status = format!("127.0.0.1:{}", free_port());
    let cfg = dir.path().join("polypush.toml");
    let b = &sim.base;
    std::fs::write(
        &cfg,
        format!(
            "[polyv]\nchannel_id = \"{CHANNEL}\"\npassword = \"{PASSWORD}\"\n\
             [polyv.endpoints]\nlogin = \"{b}\"\nchannel = \"{b}\"\nchat = \"{b}\"\napi = \"{b}\"\n\
             [video]\nsource = \"file\"\nfile = {camera:?}\nwidth = 320\nheight = 240\nfps = 25\n\
             bitrate_kbps = 500\npreset = \"ultrafast\"\n[audio]\nsource = \"file\"\n\
             [status]\nlisten = \"{status}\"\n"
        ),
    )
    .unwrap();
    let d = Daemon::start(&cfg, &[]);
    assert!(
        d.wait_for_log("capture and encoding cannot start", Duration::from_secs(20)),
        "{}",
        d.log()
    );

    // A minute without the camera: up, unhealthy with the reason, never logged in.
    let start = Instant::now();
    let mut polls = 0;
    while start.elapsed() < Duration::from_secs(60) {
        let (code, body) = get(&status, "/healthz");
        assert_eq!(code, 503, "{body}");
        assert!(
            body.contains("capture is down") && body.contains("camera.mp4"),
            "{body}"
        );
        let v = status_json(&status);
        assert_eq!(v["state"], "live", "{v}");
        assert_eq!(v["capture"]["state"], "down", "{v}");
        assert!(
            v["capture"]["reason"]
                .as_str()
                .is_some_and(|r| r.contains("camera.mp4")),
            "{v}"
        );
        let retry = v["capture"]["retry_in_s"].as_f64().unwrap();
        assert!(
            retry <= 3.0,
            "the camera is looked for at least every 3 s: {v}"
        );
        assert_eq!(logins(&sim), 0, "logged in to Polyv without a camera");
        polls += 1;
        std::thread::sleep(Duration::from_secs(5));
    }
    assert!(polls >= 10);
    let v = status_json(&status);
    let attempts = v["capture"]["attempts"].as_u64().unwrap();
    assert!(
        attempts >= 60 / 3,
        "looked for the camera {attempts} times in 60 s"
    );

    // The camera appears: capture starts, then the login, then the publish.
    make_clip(&camera);
    let appeared = Instant::now();
    let published = poll_until(Duration::from_secs(30), || {
        status_json(&status)["broadcast"]["publishing"] == true
    });
    let latency = appeared.elapsed();
    assert!(published, "{}", d.log());
    eprintln!("published {latency:?} after the camera appeared");
    assert_eq!(get(&status, "/healthz").0, 200);
    assert_eq!(logins(&sim), 1, "one login, once capture ran");
    let v = status_json(&status);
    assert_eq!(v["capture"]["state"], "running", "{v}");

    // A few seconds of broadcast, then a clean stop.
    std::thread::sleep(Duration::from_secs(3));
    d.signal(libc::SIGTERM);
    let (ok, _, log) = d.finish(Duration::from_secs(20));
    assert!(ok, "{log}");
    let stream = sim.channel(CHANNEL)["stream"].as_str().unwrap().to_string();
    let rec = nginx.recording(&stream);
    assert_eq!(decode_errors(&rec), "", "the recording decodes");
}

/// One box: nginx-rtmp (optionally asking the simulator about every publish), the simulator
/// handing out its addresses, and a config for `polypush run` with a small test pattern.
struct Rig {
    nginx: Nginx,
    sim: Sim,
    dir: tempfile::TempDir,
    status: String,
}

impl Rig {
    fn new(sim_args: &[&str]) -> Rig {
        let nginx = Nginx::start();
        let base = format!("rtmp://127.0.0.1:{}/live/", nginx.port());
        let mut args = vec!["--rtmp-base", base.as_str()];
        args.extend_from_slice(sim_args);
        let sim = Sim::start_with(&args);
        Rig {
            nginx,
            sim,
            dir: tempfile::tempdir().unwrap(),
            status: format!("127.0.0.1:{}", free_port()),
        }
    }

    /// nginx asking the simulator about every publish (`on_publish`): nginx first, its hook
    /// pointing at a port picked for the simulator, then the simulator on that port with its
    /// push addresses pointing at nginx.
    fn with_on_publish(sim_args: &[&str]) -> Rig {
        let sim_listen = format!("127.0.0.1:{}", free_port());
        let nginx = Nginx::start_with_on_publish(
            Default::default(),
            &format!("http://{sim_listen}/_sim/on_publish"),
        );
        let base = format!("rtmp://127.0.0.1:{}/live/", nginx.port());
        let mut args = vec![
            "--rtmp-base",
            base.as_str(),
            "--listen",
            sim_listen.as_str(),
        ];
        args.extend_from_slice(sim_args);
        let sim = Sim::start_with(&args);
        Rig {
            nginx,
            sim,
            dir: tempfile::tempdir().unwrap(),
            status: format!("127.0.0.1:{}", free_port()),
        }
    }

    /// A config with `password` for the channel; `login_path_prefix` is added to the login
    /// endpoint (`/live`: the path of api.polyv.net, which the rate limit counts).
    fn config(&self, password: &str, login_path_prefix: &str) -> std::path::PathBuf {
        let cfg = self.dir.path().join("polypush.toml");
        let b = &self.sim.base;
        std::fs::write(
            &cfg,
            format!(
                "[polyv]\nchannel_id = \"{CHANNEL}\"\npassword = \"{password}\"\ntimeout_s = 5\n\
                 [polyv.endpoints]\nlogin = \"{b}{login_path_prefix}\"\nlogin_fallback = \"\"\n\
                 channel = \"{b}\"\nchat = \"{b}\"\napi = \"{b}\"\n\
                 [video]\nsource = \"test\"\nwidth = 320\nheight = 240\nfps = 25\n\
                 bitrate_kbps = 300\npreset = \"ultrafast\"\n[audio]\nsource = \"test\"\n\
                 [status]\nlisten = \"{}\"\n",
                self.status
            ),
        )
        .unwrap();
        cfg
    }

    /// When the simulator answered each teacher_login (its clock, ms).
    fn login_times(&self) -> Vec<i64> {
        self.sim
            .requests()
            .iter()
            .filter(|r| {
                r["path"]
                    .as_str()
                    .is_some_and(|p| p.ends_with("teacher_login.json"))
            })
            .map(|r| r["at_ms"].as_i64().unwrap())
            .collect()
    }

    fn publishing(&self) -> bool {
        let (code, body) = get(&self.status, "/status");
        code == 200
            && serde_json::from_str::<serde_json::Value>(&body)
                .is_ok_and(|v| v["broadcast"]["publishing"] == true)
    }

    fn wait_publishing(&self, d: &Daemon, within: Duration) {
        assert!(
            poll_until(within, || self.publishing()),
            "not publishing after {within:?}:\n{}",
            d.log()
        );
    }

    /// Waits until `/status` shows the refusal `reason` of `class`, and `/metrics` the same.
    fn wait_refusal(&self, d: &Daemon, class: &str, reason: &str) -> serde_json::Value {
        let mut seen = serde_json::Value::Null;
        let found = poll_until(Duration::from_secs(30), || {
            let (code, body) = get(&self.status, "/status");
            if code != 200 {
                return false;
            }
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            let r = &v["broadcast"]["platform_refusal"];
            if r["reason"] == reason && r["class"] == class {
                seen = r.clone();
                true
            } else {
                false
            }
        });
        assert!(
            found,
            "no {class}/{reason} refusal in /status:\n{}",
            d.log()
        );
        let series =
            format!("polypush_platform_refusal{{class=\"{class}\",reason=\"{reason}\"}} 1");
        assert!(
            poll_until(Duration::from_secs(30), || get(&self.status, "/metrics")
                .1
                .contains(&series)),
            "{series} not in /metrics"
        );
        seen
    }
}

/// The gaps between logins (ms): the first retry within 5 s, never more than 60 s apart, and
/// none shorter than the backoff allows (at least half its ceiling: 0.25 s doubling to 15 s).
fn assert_backoff(times: &[i64]) {
    let gaps: Vec<i64> = times.windows(2).map(|w| w[1] - w[0]).collect();
    if let Some(first) = gaps.first() {
        assert!(*first <= 5_000, "first retry after {first} ms: {gaps:?}");
    }
    for (i, g) in gaps.iter().enumerate() {
        let floor = (250i64 << i.min(6)).min(15_000);
        assert!(
            *g >= floor - 20,
            "retry {i} after {g} ms, under {floor} ms: {gaps:?}"
        );
        assert!(*g <= 61_000, "retry {i} after {g} ms: {gaps:?}");
    }
}

fn stop(d: Daemon) -> String {
    d.signal(libc::SIGTERM);
    let (ok, _, log) = d.finish(Duration::from_secs(20));
    assert!(ok, "the service did not stop cleanly:\n{log}");
    log
}

/// Each login refusal that may clear by itself, as the simulator gives it (HTTP 200, string
/// `code`, `status: "fail"`) for the first 4 logins: the service stays up, shows the class,
/// reason and Polyv's message in /status, /metrics and the journal, retries with backoff (a
/// fresh login each time) and publishes once the refusal clears.
#[test]
fn login_refusals_that_clear_are_waited_out_and_the_broadcast_starts() {
    let rig = Rig::new(&[]);
    let cfg = rig.config(PASSWORD, "");
    for (message, reason) in [
        ("channel already login", "already_logged_in"),
        ("channel in live", "channel_live"),
        ("channel forbid login", "login_forbidden"),
        ("conflict with user login", "already_logged_in"),
        ("a refusal nobody has seen before", "refused"),
    ] {
        rig.sim.reset_requests();
        rig.sim.faults(&format!(
            r#"{{"login_refusal":{{"message":"{message}","count":4}}}}"#
        ));
        let d = Daemon::start(&cfg, &[]);
        let r = rig.wait_refusal(&d, "try_later", reason);
        assert!(
            r["message"].as_str().is_some_and(|m| m.contains(message)),
            "{r}"
        );
        rig.wait_publishing(&d, Duration::from_secs(60));
        let times = rig.login_times();
        assert_eq!(times.len(), 5, "4 refused logins, then one that worked");
        assert_backoff(&times);
        assert!(status_json(&rig.status)["broadcast"]["platform_refusal"].is_null());
        let log = stop(d);
        let warns: Vec<&str> = log
            .lines()
            .filter(|l| l.contains(&format!("reason=\"{reason}\"")) && l.contains(" WARN "))
            .collect();
        assert_eq!(warns.len(), 1, "one WARN per change:\n{log}");
        assert!(
            warns[0].contains("try_later") && warns[0].contains(message),
            "{}",
            warns[0]
        );
    }
}

/// Polyv's rate limit (1500 requests per 10 s per IP, then blocked for 5 minutes; here 3 and
/// 8 s): a box whose address is blocked waits it out with backoff — a handful of logins, not
/// a burst that extends the block — and publishes when the block ends. Then a server error
/// (HTTP 500 after the client's own retries) and replies that are not Polyv's (a captive
/// portal): "unavailable", waited out the same way.
#[test]
fn a_rate_limit_server_errors_and_garbage_are_waited_out_too() {
    let rig = Rig::new(&[]);
    // Logins on api.polyv.net's path, which the limit counts.
    let cfg = rig.config(PASSWORD, "/live");
    rig.sim
        .faults(r#"{"rate_limit":{"per_10s":3,"block_s":8}}"#);
    for _ in 0..4 {
        rig.sim
            .http("GET", "/live/v3/channel/stream/get-push-url", "", "");
    }
    assert!(
        !rig.sim.requests().is_empty()
            && rig
                .sim
                .http("GET", "/_sim/faults", "", "")
                .1
                .contains("until_ms"),
        "this address is blocked"
    );
    rig.sim.reset_requests();
    let d = Daemon::start(&cfg, &[]);
    let r = rig.wait_refusal(&d, "try_later", "rate_limited");
    assert!(
        r["message"]
            .as_str()
            .is_some_and(|m| m.contains("qps exceeds number of calls")),
        "{r}"
    );
    rig.wait_publishing(&d, Duration::from_secs(60));
    let times = rig.login_times();
    assert_backoff(&times);
    let blocked_for = times.last().unwrap() - times.first().unwrap();
    assert!(
        times.len() <= 7,
        "{} logins in {blocked_for} ms of block",
        times.len()
    );
    stop(d);

    for (fault, clear, reason) in [
        (
            r#"{"error500_always":true}"#,
            r#"{"error500_always":false}"#,
            "server_error",
        ),
        (r#"{"garbage":true}"#, r#"{"garbage":false}"#, "unreadable"),
    ] {
        rig.sim.reset_requests();
        rig.sim.faults(fault);
        let d = Daemon::start(&cfg, &[]);
        rig.wait_refusal(&d, "unavailable", reason);
        // Two tries of the broadcast's own (each up to 3 HTTP requests inside the client).
        assert!(
            poll_until(Duration::from_secs(30), || rig.login_times().len() >= 4),
            "{}",
            d.log()
        );
        rig.sim.faults(clear);
        rig.wait_publishing(&d, Duration::from_secs(60));
        stop(d);
    }
}

/// A refusal only an operator can fix — the channel password, this box's clock — is retried
/// slowly (every `credentials_retry_s`, at least 30 s) with one ERROR, `/healthz` says so at
/// once, and the service stays up; once fixed, SIGUSR1 (or the next slow retry) publishes.
#[test]
fn refusals_an_operator_must_fix_are_retried_slowly_and_publish_once_fixed() {
    let rig = Rig::new(&[]);
    // The password in the file is not the channel's (yet).
    let cfg = rig.config("not-the-password", "");
    let d = Daemon::start(&cfg, &[]);
    let r = rig.wait_refusal(&d, "operator_must_act", "password");
    assert!(
        r["message"]
            .as_str()
            .is_some_and(|m| m.contains("channel id or password error")),
        "{r}"
    );
    let (code, body) = get(&rig.status, "/healthz");
    assert_eq!(code, 503, "{body}");
    assert!(body.starts_with("credentials rejected"), "{body}");
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(
        rig.login_times().len(),
        1,
        "no retry before credentials_retry_s"
    );
    // The admin sets the channel's password to what the box has, and pokes it.
    rig.sim
        .set_channel(CHANNEL, r#"{"password":"not-the-password"}"#);
    d.signal(libc::SIGUSR1);
    rig.wait_publishing(&d, Duration::from_secs(30));
    assert_eq!(rig.login_times().len(), 2);
    let log = stop(d);
    let errors = log
        .lines()
        .filter(|l| l.contains(" ERROR ") && l.contains("reason=\"password\""))
        .count();
    assert_eq!(errors, 1, "one ERROR per change:\n{log}");

    // This box's clock is 10 minutes off (Polyv accepts 3): the simulator's clock moves.
    rig.sim
        .set_channel(CHANNEL, &format!(r#"{{"password":"{PASSWORD}"}}"#));
    let cfg = rig.config(PASSWORD, "");
    rig.sim.reset_requests();
    rig.sim.faults(r#"{"clock_offset_ms":600000}"#);
    let d = Daemon::start(&cfg, &[]);
    rig.wait_refusal(&d, "operator_must_act", "clock");
    let (code, body) = get(&rig.status, "/healthz");
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("(clock)"), "{body}");
    rig.sim.faults(r#"{"clock_offset_ms":0}"#);
    d.signal(libc::SIGUSR1);
    rig.wait_publishing(&d, Duration::from_secs(30));
    assert_eq!(rig.login_times().len(), 2);
    stop(d);
}

/// A push address whose `auth_key` expires (20 s here, checked by nginx's `on_publish` at
/// the simulator): an ingest outage at 30 s, and the reconnect logs in again for a fresh key
/// and publishes; nothing publishes with the stale one.
#[test]
fn an_expired_auth_key_is_replaced_by_a_new_login_after_an_outage() {
    let mut rig = Rig::with_on_publish(&["--auth-key-ttl-s", "20"]);
    let cfg = rig.config(PASSWORD, "");
    let d = Daemon::start(&cfg, &[]);
    rig.wait_publishing(&d, Duration::from_secs(30));
    let started = Instant::now();
    assert_eq!(rig.login_times().len(), 1);
    let checks = |sim: &Sim| -> Vec<serde_json::Value> {
        let (_, b) = sim.http("GET", "/_sim/publish-checks", "", "");
        serde_json::from_str(&b).unwrap()
    };
    assert_eq!(checks(&rig.sim).len(), 1);
    assert_eq!(checks(&rig.sim)[0]["accepted"], true);

    std::thread::sleep(Duration::from_secs(30).saturating_sub(started.elapsed()));
    rig.nginx.stop();
    assert!(poll_until(Duration::from_secs(15), || !rig.publishing()));
    std::thread::sleep(Duration::from_secs(2));
    rig.nginx.start_again();
    rig.wait_publishing(&d, Duration::from_secs(30));
    assert_eq!(rig.login_times().len(), 2, "the reconnect logged in again");
    let all = checks(&rig.sim);
    assert!(
        all.iter().all(|c| c["accepted"] == true),
        "a stale key reached the ingest: {all:?}"
    );
    assert!(all.len() >= 2, "{all:?}");
    stop(d);
    let stream = rig.sim.channel(CHANNEL)["stream"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(decode_errors(&rig.nginx.recording(&stream)), "");
}
