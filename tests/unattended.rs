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

/// `GET path` on the status server: (status, body).
fn get(status: &str, path: &str) -> (u16, String) {
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
