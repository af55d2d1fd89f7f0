//! Resilience end to end through the real `polypush run`: the safety recording keeps every
//! frame through an uplink outage, timestamps past 0xFFFFFF ms decode cleanly, and rejected
//! channel credentials are retried slowly with one ERROR, not in a busy loop.

mod common;

use common::nginx::{decode_errors, ffprobe_json, Nginx};
use common::rtmp_listener::{packet_dts_ms, RtmpListener};
use common::*;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn segments(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "flv"))
        .collect();
    v.sort();
    v
}

/// Upstream down for 30 s in the middle of a 60 s run: the local recording holds every frame
/// the encoder produced.
#[test]
fn safety_recording_keeps_every_frame_through_an_outage() {
    let mut nginx = Nginx::start();
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("rec");
    let cfg = write_run_config(
        dir.path(),
        None,
        // After a 30 s outage the backoff may wait up to its cap; keep the cap well inside the
        // 15 s left after the ingest returns so the reconnect is seen in this run.
        &format!("[record]\nenabled = true\ndir = {rec:?}\nsegment_s = 20\n[target]\nreconnect_max_delay_s = 5\n"),
    );
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("width = 640", "width = 320")
        .replace("height = 360", "height = 240");
    std::fs::write(&cfg, text).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_polypush"))
        .arg("--config")
        .arg(&cfg)
        .args([
            "--json",
            "--log-level",
            "info",
            "run",
            "--url",
            &nginx.url("outage"),
            "--duration",
            "60",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let at = |s: u64| {
        let t = Duration::from_secs(s);
        if let Some(rest) = t.checked_sub(start.elapsed()) {
            std::thread::sleep(rest);
        }
    };
    at(15);
    nginx.stop();
    at(45);
    nginx.start_again();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let encoded = summary["video_frames_encoded"].as_u64().unwrap();
    assert!(encoded >= 1450, "{summary}");

    let segs = segments(&rec);
    assert!(segs.len() >= 3, "expected 20 s segments, got {segs:?}");
    let mut frames = 0u64;
    for seg in &segs {
        let errors = decode_errors(seg);
        assert!(errors.is_empty(), "{}: {errors}", seg.display());
        let tags = flv_tags(seg);
        let first_video = tags.iter().find(|t| t.kind == 9 && t.is_media()).unwrap();
        assert!(
            first_video.is_video_keyframe(),
            "{} starts without a keyframe",
            seg.display()
        );
        frames += tags.iter().filter(|t| t.kind == 9 && t.is_media()).count() as u64;
        // Sound too: every segment has about as much audio as video time (AAC: 1024 samples
        // at 48 kHz, 46.9 frames/s; video 25 frames/s).
        let video = tags.iter().filter(|t| t.kind == 9 && t.is_media()).count();
        let audio = tags.iter().filter(|t| t.kind == 8 && t.is_media()).count();
        assert!(
            audio * 25 >= video * 45,
            "{}: {audio} audio frames for {video} video frames",
            seg.display()
        );
    }
    assert_eq!(
        frames, encoded,
        "the safety recording lost frames: {frames} of {encoded}"
    );
    // And the ingest got the broadcast back after the outage.
    assert!(summary["reconnects"].as_u64().unwrap() >= 1, "{summary}");
    let probe = ffprobe_json(&nginx.recording("outage"));
    assert!(probe["streams"].as_array().unwrap().len() == 2, "{probe}");
}

/// A broadcast whose timestamps start 3 s before 0xFFFFFF ms (4 h 40 min) crosses into the
/// extended-timestamp range and the recording still decodes cleanly.
#[test]
fn extended_timestamps_decode_cleanly() {
    let nginx = Nginx::start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_run_config(
        dir.path(),
        None,
        &format!("[target]\ntimestamp_offset_ms = {}\n", 0xFF_FFFF - 3000),
    );
    let r = polypush(
        &cfg,
        &["run", "--url", &nginx.url("ext"), "--duration", "7"],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let path = nginx.recording("ext");
    let errors = decode_errors(&path);
    assert!(errors.is_empty(), "{errors}");
    let tags = flv_tags(&path);
    let media: Vec<&FlvTag> = tags.iter().filter(|t| t.is_media()).collect();
    // nginx-rtmp rebases what it records to the session's first timestamp, so the file shows
    // 0..7 s; what crossed the wire (0xFFFFFF - 3000 up to 0xFFFFFF + 4000, in extended
    // timestamps) is checked against rml_rtmp's server session in src/rtmp/ unit tests.
    let span = media.last().unwrap().ts_ms - media.first().unwrap().ts_ms;
    assert!(
        (6500..=7500).contains(&span),
        "the ingest got {span} ms of media"
    );
    for kind in [8u8, 9] {
        let ts: Vec<u32> = media
            .iter()
            .filter(|t| t.kind == kind)
            .map(|t| t.ts_ms)
            .collect();
        assert!(
            ts.windows(2).all(|w| w[0] <= w[1]),
            "track {kind} goes backwards"
        );
    }
}

/// Pushes `run_s` seconds to FFmpeg's own RTMP listener (`ffmpeg -listen 1`) with
/// `[target] timestamp_offset_ms` `before_ms` short of `boundary`, and checks what FFmpeg
/// received, with the wire timestamps kept (`-copyts`): it decodes without an error, and each
/// track runs without a jump back or a gap; `absolute`: from the offset across the boundary.
fn push_across_at_ffmpeg_listener(boundary: u64, before_ms: u64, run_s: u64, absolute: bool) {
    let dir = tempfile::tempdir().unwrap();
    let mut listener = RtmpListener::start(dir.path());
    let offset = boundary - before_ms;
    let cfg = write_run_config(
        dir.path(),
        None,
        &format!("[target]\ntimestamp_offset_ms = {offset}\n"),
    );
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("width = 640", "width = 320")
        .replace("height = 360", "height = 240");
    std::fs::write(&cfg, text).unwrap();
    let r = polypush(
        &cfg,
        &[
            "run",
            "--url",
            &listener.url(),
            "--duration",
            &run_s.to_string(),
        ],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    // polypush hung up: FFmpeg finishes the file and exits by itself.
    let status = listener.finish(Duration::from_secs(15));
    assert!(
        status.is_some_and(|s| s.success()),
        "ffmpeg -listen: {status:?}: {}",
        listener.log_text()
    );
    // The one line FFmpeg prints is the hang-up itself ("rtmp://…: Input/output error").
    let log = listener.log_text();
    let other: Vec<&str> = log
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.ends_with("/live/x: Input/output error"))
        .collect();
    assert!(other.is_empty(), "ffmpeg -listen reported errors: {log}");
    let rec = listener.recording();
    let errors = decode_errors(rec);
    assert!(errors.is_empty(), "{errors}");
    let packets = packet_dts_ms(rec);
    let end = offset + run_s * 1000;
    for track in [0u32, 1] {
        let dts: Vec<i64> = packets
            .iter()
            .filter(|(i, _)| *i == track)
            .map(|&(_, t)| t)
            .collect();
        assert!(dts.len() > 100, "track {track}: {} packets", dts.len());
        let (first, last) = (dts[0], *dts.last().unwrap());
        if absolute {
            // The first frames are stamped at the offset (the pipeline starts at 0).
            assert!(
                (offset as i64..offset as i64 + 2000).contains(&first),
                "track {track} starts at {first} ms, the offset is {offset} ms"
            );
            assert!(
                last > boundary as i64 && last > end as i64 - 3000 && last <= end as i64 + 500,
                "track {track} ends at {last} ms; the run ended at {end} ms, past {boundary} ms"
            );
        } else {
            // Unwrapped and rebased by FFmpeg: one continuous run as long as the push.
            let span = last - first;
            assert!(
                (run_s as i64 * 1000 - 3000..=run_s as i64 * 1000 + 500).contains(&span),
                "track {track} spans {span} ms of a {run_s} s push ({first}..{last} ms)"
            );
        }
        for w in dts.windows(2) {
            assert!(
                w[1] >= w[0] && w[1] - w[0] < 1000,
                "track {track}: {} ms then {} ms (boundary {boundary} ms)",
                w[0],
                w[1]
            );
        }
    }
}

/// A lesson past 4 h 39 m 37 s: RTMP timestamps cross 0xFFFFFF ms (24 bits) into extended
/// timestamps 10 s into a 25 s push, and FFmpeg's RTMP listener gets every frame continuous.
#[test]
fn extended_timestamps_cross_at_ffmpegs_rtmp_listener() {
    push_across_at_ffmpeg_listener(0xFF_FFFF, 10_000, 25, true);
}

/// The 32-bit wrap (49 days 17 h): timestamps on the wire go from 0xFFFFFFFF ms back to 0,
/// which an RTMP receiver unwraps. FFmpeg's FLV demuxer treats its timestamps as 32-bit and
/// unwraps them (lavf's pts wrap correction), then rebases the file to start near 0; so the
/// check is one continuous run, no jump back to 0, as long as the push.
#[test]
fn timestamps_wrap_2_32_at_ffmpegs_rtmp_listener() {
    push_across_at_ffmpeg_listener(1 << 32, 5_000, 12, false);
}

/// Polyv rejects the channel password: no busy loop, one ERROR, a clear exit when the run ends.
#[test]
fn rejected_credentials_are_retried_slowly_with_one_error() {
    let nginx = Nginx::start();
    let base = format!("rtmp://127.0.0.1:{}/live/", nginx.port());
    let sim = Sim::start_with(&["--rtmp-base", &base]);
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_run_config(
        dir.path(),
        Some(&sim.base),
        "[target]\ncredentials_retry_s = 30\n",
    );
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace(PASSWORD, "wrong-pw");
    std::fs::write(&cfg, text).unwrap();
    let r = polypush(
        &cfg,
        &[
            "--log-level",
            "info",
            "run",
            "--test-pattern",
            "--duration",
            "6",
        ],
    );
    assert_eq!(r.code, 3, "{}", r.stderr);
    let errors = r.stderr.lines().filter(|l| l.contains("ERROR")).count();
    assert_eq!(errors, 1, "one ERROR per change of state:\n{}", r.stderr);
    assert!(
        r.stderr.contains("channel id or password error"),
        "{}",
        r.stderr
    );
    let logins = sim
        .requests()
        .iter()
        .filter(|q| q["path"] == "/api/v2/teacher_login.json")
        .count();
    assert!(logins <= 2, "{logins} logins in 6 s: a busy loop");
    assert!(!r.stderr.contains("wrong-pw"));
}

/// SIGUSR1 ("reconnect now") makes a publishing daemon reconnect at once.
#[test]
fn sigusr1_reconnects_at_once() {
    let nginx = Nginx::start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_run_config(dir.path(), None, "");
    let mut child = Command::new(env!("CARGO_BIN_EXE_polypush"))
        .arg("--config")
        .arg(&cfg)
        .args(["run", "--url", &nginx.url("usr1"), "--duration", "12"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let wait_for = |n: usize, within: Duration| {
        assert!(
            nginx.wait_for_publishes("usr1", n, within),
            "no publish #{n} within {within:?}"
        );
        Instant::now()
    };
    wait_for(1, Duration::from_secs(10));
    let sent = Instant::now();
    // SAFETY: kill(2) on our own child's PID with a valid signal number.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGUSR1) }, 0);
    let again = wait_for(2, Duration::from_secs(5));
    // At once (pinned on the paused clock in tests/sender.rs; the figure here is for the log).
    eprintln!(
        "republished {} ms after SIGUSR1",
        (again - sent).as_millis()
    );
    assert!(child.wait().unwrap().success());
}
