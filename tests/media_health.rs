//! Media health end to end: real `polypush run`s on sources that misbehave on purpose, with
//! the alarms read from the daemon's own `/status` while it runs.
//!
//! Each misbehaving source is one file made here with the ffmpeg CLI: 8 s of the fault
//! (silence, a black picture, one picture repeated, a tone 30 dB too loud) and then a normal
//! test pattern with a tone, so the source "recovers" by itself at 8 s, without any seam in
//! polypush. The configs use short hold times (3 s) to keep the suite fast. Each alarm must
//! be raised within its hold time plus 2 s of the broadcast's start (the daemon reports its
//! uptime and how long the alarm has been active, so the raise time is the daemon's own
//! number), no earlier than its hold, and cleared once the fault ends; no other alarm may be
//! raised. The normal test pattern with the default `[health]` raises nothing in 60 s.
//! (The exact timing of every state machine is tested with injected time in
//! `src/health/core/tests.rs`.)

mod common;

use common::daemon::Daemon;
use common::nginx::Nginx;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The fault lasts this long at the start of each file (s).
const FAULT_S: f64 = 8.0;
/// Hold times in the tests' configs (s).
const HOLD_S: f64 = 3.0;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `GET /status` as JSON; `None` while the server does not listen yet.
fn status(addr: &str) -> Option<serde_json::Value> {
    std::net::TcpStream::connect(addr).ok()?;
    let (code, body) = common::http(addr, "GET", "/status", "", "");
    (code == 200).then(|| serde_json::from_str(&body).unwrap())
}

/// A 24 s clip: `video` and `audio` lavfi graphs (320x180, 25 fps, 48 kHz stereo), lossless
/// (FFV1 and PCM) so a repeated picture decodes to the same bytes.
fn make_clip(dir: &Path, video: &str, audio: &str) -> PathBuf {
    let path = dir.join("clip.mkv");
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-f", "lavfi", "-i"])
        .arg(format!("testsrc2=size=320x180:rate=25{video}"))
        .args(["-f", "lavfi", "-i"])
        .arg(format!(
            "sine=frequency=440:sample_rate=48000,aformat=channel_layouts=stereo{audio}"
        ))
        .args(["-t", "24", "-c:v", "ffv1", "-c:a", "pcm_s16le"])
        .arg(&path)
        .output()
        .expect("ffmpeg runs");
    assert!(
        out.status.success(),
        "ffmpeg: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    path
}

fn config(dir: &Path, status: &str, media: &str, health: &str) -> PathBuf {
    let path = dir.join("run.toml");
    std::fs::write(
        &path,
        format!(
            "[video]\nwidth = 320\nheight = 180\nfps = 25\nbitrate_kbps = 300\npreset = \"ultrafast\"\n{media}\n\
             [status]\nlisten = \"{status}\"\n[health]\n{health}\n"
        ),
    )
    .unwrap();
    path
}

/// What the poll saw of one alarm, on the daemon's broadcast clock (uptime, s).
#[derive(Debug, Default)]
struct Seen {
    /// Uptime minus `for_s` when first seen active: when the daemon raised it.
    raised_at: Option<f64>,
    /// Uptime when first seen inactive again.
    cleared_at: Option<f64>,
}

/// Within its hold and up to 2 s after it.
const HELD: (f64, f64) = (HOLD_S - 0.5, HOLD_S + 2.0);

/// Runs a clip with short holds, polls `/status` until `alarm` has been raised and cleared
/// (or `within`), then checks the other alarms stayed off and the log.
fn run_fault(
    alarm: &str,
    video: &str,
    audio: &str,
    raise_within_s: (f64, f64),
    clear_within_s: f64,
) {
    let nginx = Nginx::start();
    let dir = tempfile::tempdir().unwrap();
    let clip = make_clip(dir.path(), video, audio);
    let addr = format!("127.0.0.1:{}", free_port());
    let media = format!(
        "source = \"file\"\nfile = \"{}\"\n[audio]\nsource = \"file\"\n",
        clip.display()
    );
    let cfg = config(
        dir.path(),
        &addr,
        &media,
        "silence_s = 3\nblack_s = 3\nfrozen_s = 3\nclipping_hold_s = 2\nlow_fps_s = 3\n",
    );
    let url = nginx.url("health");
    let d = Daemon::start(&cfg, &["--url", &url, "--duration", "22"]);
    let mut seen = Seen::default();
    let mut last = serde_json::Value::Null;
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(21) && seen.cleared_at.is_none() {
        std::thread::sleep(Duration::from_millis(200));
        let Some(v) = status(&addr) else { continue };
        let (Some(uptime), Some(a)) = (
            v["broadcast"]["uptime_s"].as_f64(),
            v["media"]["alarms"][alarm].as_object(),
        ) else {
            continue;
        };
        if a["active"] == true && seen.raised_at.is_none() {
            seen.raised_at = Some(uptime - a["for_s"].as_f64().unwrap());
        }
        if a["active"] == false && seen.raised_at.is_some() && seen.cleared_at.is_none() {
            seen.cleared_at = Some(uptime);
        }
        last = v;
    }
    let (_, _, log) = d.finish(Duration::from_secs(30));
    let raised = seen.raised_at.unwrap_or_else(|| {
        panic!(
            "{alarm} never raised; last /status media: {}\n{log}",
            last["media"]
        )
    });
    assert!(
        (raise_within_s.0..=raise_within_s.1).contains(&raised),
        "{alarm} raised {raised:.1} s into the broadcast, not within {raise_within_s:?}\n{log}"
    );
    let cleared = seen.cleared_at.unwrap_or_else(|| {
        panic!(
            "{alarm} never cleared; last /status media: {}\n{log}",
            last["media"]
        )
    });
    assert!(
        (FAULT_S - 0.5..=FAULT_S + clear_within_s).contains(&cleared),
        "{alarm} cleared {cleared:.1} s into the broadcast; the fault ends at {FAULT_S} s\n{log}"
    );
    // Nothing else was raised: the other parts of the clip are healthy.
    for (name, a) in last["media"]["alarms"].as_object().unwrap() {
        let want = u64::from(name == alarm);
        assert_eq!(a["raised"], want, "{name}: {}\n{log}", last["media"]);
    }
    // Logged once per change: WARN raised, INFO cleared, with the measured value.
    let raised_lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(&format!("media alarm {alarm} raised")))
        .collect();
    assert_eq!(raised_lines.len(), 1, "{log}");
    assert!(raised_lines[0].contains("WARN") && raised_lines[0].contains("threshold"));
    let cleared_lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(&format!("media alarm {alarm} cleared")))
        .collect();
    assert_eq!(cleared_lines.len(), 1, "{log}");
    assert!(cleared_lines[0].contains("INFO"), "{log}");
}

#[test]
fn silence_is_raised_and_cleared_when_the_sound_comes_back() {
    run_fault(
        "silence",
        "",
        &format!(",volume=volume=0:enable='lt(t,{FAULT_S})'"),
        HELD,
        1.5,
    );
}

#[test]
fn a_clipped_tone_raises_clipping_until_it_is_clean_for_the_hold() {
    // The test tone is −18 dBFS: 30 dB louder saturates most samples.
    run_fault(
        "clipping",
        "",
        &format!(",volume=volume=30dB:precision=fixed:enable='lt(t,{FAULT_S})'"),
        // Raised by the second clipped block (more than 1 % of a 10 s window): its "hold"
        // is the window's share, so within 2 s of the start.
        (0.0, 2.0),
        // clipping_hold_s = 2 after the last clipped block.
        3.5,
    );
}

#[test]
fn a_black_picture_raises_black_and_not_frozen() {
    run_fault(
        "black",
        &format!(",drawbox=x=0:y=0:w=iw:h=ih:color=black:t=fill:enable='lt(t,{FAULT_S})'"),
        "",
        HELD,
        2.5,
    );
}

#[test]
fn one_picture_repeated_raises_frozen_until_the_picture_moves() {
    // Frames 0..199 (8 s) are all frame 0.
    run_fault(
        "frozen",
        &format!(
            ",split[a][b];[a][b]freezeframes=first=0:last={}:replace=0",
            (FAULT_S * 25.0) as u32 - 1
        ),
        "",
        HELD,
        2.5,
    );
}

#[test]
fn the_test_pattern_raises_no_alarm_in_60_s_with_the_defaults() {
    let nginx = Nginx::start();
    let dir = tempfile::tempdir().unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let cfg = config(
        dir.path(),
        &addr,
        "source = \"test\"\n[audio]\nsource = \"test\"\n",
        "",
    );
    let url = nginx.url("calm");
    let d = Daemon::start(&cfg, &["--url", &url, "--duration", "64"]);
    let mut levels = Vec::new();
    let mut last = serde_json::Value::Null;
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(63) {
        std::thread::sleep(Duration::from_millis(500));
        let Some(v) = status(&addr) else { continue };
        if v["broadcast"]["uptime_s"].as_f64().unwrap_or(0.0) >= 61.0 {
            last = v;
            break;
        }
        if let Some(p) = v["media"]["audio"]["channels"][0]["peak_dbfs"].as_f64() {
            levels.push(p);
        }
        if v["media"].is_object() {
            assert_eq!(
                v["media"]["active"],
                serde_json::json!([]),
                "{}",
                v["media"]
            );
        }
    }
    d.signal(libc::SIGTERM);
    let (_, _, log) = d.finish(Duration::from_secs(30));
    let m = &last["media"];
    assert!(m.is_object(), "no media report after 60 s: {last}\n{log}");
    for (name, a) in m["alarms"].as_object().unwrap() {
        assert_eq!(
            a["raised"], 0,
            "{name} raised on the test pattern: {m}\n{log}"
        );
    }
    assert!(!log.contains("media alarm"), "{log}");
    // Measured all along: the tone's level, the moving picture, the full frame rate.
    assert!(levels.len() > 50, "{levels:?}");
    assert!(
        levels.iter().all(|p| (-30.0..-10.0).contains(p)),
        "{levels:?}"
    );
    assert!(m["video"]["frame_change"].as_f64().unwrap() > 1.0, "{m}");
    assert!(m["video"]["capture_fps"].as_f64().unwrap() > 20.0, "{m}");
    assert_eq!(m["video"]["state"], "live");
}
