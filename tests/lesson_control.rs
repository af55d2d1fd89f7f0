//! Lesson control end to end: the real daemon pushing to nginx-rtmp inside a schedule window
//! that ends a few seconds after start; `polypush extend 1` (the CLI, through the status
//! server with the bearer token) keeps it publishing past the original end; a restart of the
//! daemon reads the override back from the state directory and shows it in `/status` and
//! `polypush schedule`; `polypush stop-now` stops it; with the daemon gone the CLI says the
//! service is not running. The loop's timing is `tests/service.rs` (paused clock).

mod common;

use common::daemon::Daemon;
use common::nginx::Nginx;
use common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

const TOKEN: &str = "lesson-control-test-token";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A fixed-offset zone where it is about midday at `t` (so a window a minute either side of
/// now never crosses midnight), its date there, and a formatter of `HH:MM:SS` there.
fn midday_zone(t: SystemTime) -> (String, String, impl Fn(SystemTime) -> String) {
    let ts = jiff::Timestamp::try_from(t).unwrap();
    let utc_hour = i64::from(ts.to_zoned(jiff::tz::TimeZone::UTC).hour());
    let offset = (12 - utc_hour).clamp(-12, 14);
    let name = match offset {
        0 => "Etc/GMT".to_string(),
        o if o > 0 => format!("Etc/GMT-{o}"),
        o => format!("Etc/GMT+{}", -o),
    };
    let tz = jiff::tz::TimeZone::get(&name).unwrap();
    let date = ts.to_zoned(tz.clone()).strftime("%Y-%m-%d").to_string();
    let clock = move |t: SystemTime| {
        jiff::Timestamp::try_from(t)
            .unwrap()
            .to_zoned(tz.clone())
            .strftime("%H:%M:%S")
            .to_string()
    };
    (name, date, clock)
}

/// `GET /status` with the bearer token.
fn status(addr: &str) -> serde_json::Value {
    let mut s = TcpStream::connect(addr).expect("connect to the status server");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET /status HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let (_, body) = resp.split_once("\r\n\r\n").unwrap();
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {resp}"))
}

fn cli(cfg: &Path, state: &str, args: &[&str]) -> Run {
    polypush_env(cfg, args, &[("STATE_DIRECTORY", state)])
}

#[test]
fn extend_keeps_a_window_on_air_and_survives_a_restart() {
    let t0 = Instant::now();
    let nginx = Nginx::start();
    let dir = tempfile::tempdir().unwrap();
    let state_dir = dir.path().join("state");
    let state = state_dir.to_str().unwrap();
    let token_file = dir.path().join("status-token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    // A window that opened a minute ago and ends 8 s from now (whole seconds).
    let now = SystemTime::now();
    let secs = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let end = SystemTime::UNIX_EPOCH + Duration::from_secs(secs + 8);
    let (zone, date, clock) = midday_zone(end);
    let cfg = dir.path().join("polypush.toml");
    std::fs::write(
        &cfg,
        format!(
            "[polyv]\nchannel_id = \"{CHANNEL}\"\npassword = \"{PASSWORD}\"\n\
             [video]\nsource = \"test\"\nwidth = 320\nheight = 180\nfps = 25\nbitrate_kbps = 400\n\
             preset = \"ultrafast\"\n[audio]\nsource = \"test\"\n\
             [status]\nlisten = \"{addr}\"\ntoken_file = {token_file:?}\n\
             [[schedule]]\ndate = \"{date}\"\nstart = \"{}\"\nend = \"{}\"\ntimezone = \"{zone}\"\ntitle = \"Lesson\"\n",
            clock(end - Duration::from_secs(68)),
            clock(end),
        ),
    )
    .unwrap();
    let url = nginx.url("lesson");
    let env = [("STATE_DIRECTORY", state)];
    let d = Daemon::start_env(&cfg, &["--url", &url], &env);
    assert!(
        d.wait_for_log("publishing", Duration::from_secs(20)),
        "{}",
        d.log()
    );

    // Extend by a minute through the CLI; start-now is refused (already on), with exit 3.
    let r = cli(&cfg, state, &["--json", "extend", "1"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let v = r.json();
    assert_eq!(
        (v["on"].as_bool(), v["reason"].as_str()),
        (Some(true), Some("extended")),
        "{v}"
    );
    assert_eq!(v["override"]["by"], "cli");
    let r = cli(&cfg, state, &["start-now"]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(r.stderr.contains("already broadcasting"), "{}", r.stderr);

    // Past the original end: still live and publishing, the window not closed.
    let past_end = end + Duration::from_secs(3);
    while SystemTime::now() < past_end {
        std::thread::sleep(Duration::from_millis(200));
    }
    let s = status(&addr);
    assert_eq!(s["state"], "live", "{s}");
    assert_eq!(s["broadcast"]["sender_state"], "publishing", "{s}");
    assert_eq!(s["schedule"]["override"]["kind"], "extend", "{s}");
    assert!(!d.log().contains("window closed"), "{}", d.log());

    // Restart: the new process reads the override back and keeps broadcasting.
    d.signal(libc::SIGTERM);
    let (ok, _, log) = d.finish(Duration::from_secs(20));
    assert!(ok, "{log}");
    assert!(state_dir.join("control.json").exists());
    let d = Daemon::start_env(&cfg, &["--url", &url], &env);
    assert!(
        d.wait_for_log("publishing", Duration::from_secs(20)),
        "{}",
        d.log()
    );
    assert!(d.log().contains("override restored"), "{}", d.log());
    let s = status(&addr);
    assert_eq!(s["schedule"]["override"]["kind"], "extend", "{s}");
    assert_eq!(s["schedule"]["override"]["by"], "cli", "{s}");
    assert_eq!(s["schedule"]["reason"], "extended", "{s}");
    assert_eq!(s["schedule"]["in_window"], true, "{s}");
    let r = cli(&cfg, state, &["schedule"]);
    assert!(
        r.stdout.contains("lesson control: extend (set "),
        "{}",
        r.stdout
    );

    // Stop now: the broadcast stops; the daemon idles.
    let r = cli(&cfg, state, &["stop-now"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        d.wait_for_log("stop now: stopping the broadcast", Duration::from_secs(10)),
        "{}",
        d.log()
    );
    d.signal(libc::SIGTERM);
    let (ok, _, log) = d.finish(Duration::from_secs(20));
    assert!(ok, "{log}");
    assert!(!log.contains(TOKEN), "the token is in the log");

    // No service: the CLI says so (exit 4).
    let r = cli(&cfg, state, &["extend", "5"]);
    assert_eq!(r.code, 4, "{}", r.stderr);
    assert!(
        r.stderr.contains("the service is not running"),
        "{}",
        r.stderr
    );
    eprintln!("lesson control end to end took {:?}", t0.elapsed());
}
