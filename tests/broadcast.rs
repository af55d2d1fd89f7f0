//! The broadcast end to end: `polypush run --test-pattern` through capture, encoding, our FLV
//! packetizer, the ring and our RTMP publisher to a real nginx-rtmp on loopback; the recording
//! is checked with ffprobe and ffmpeg. And each way a broadcast can fail to start.

mod common;

use common::nginx::{decode_errors, ffprobe_json, Nginx};
use common::*;
use std::path::Path;

const SECONDS: f64 = 10.0;

/// Everything the issue asks of a recording of a `SECONDS` test-pattern run.
fn check_recording(path: &Path) {
    let probe = ffprobe_json(path);
    let streams = probe["streams"].as_array().expect("streams");
    let video = streams
        .iter()
        .find(|s| s["codec_type"] == "video")
        .expect("a video stream");
    let audio = streams
        .iter()
        .find(|s| s["codec_type"] == "audio")
        .expect("an audio stream");
    assert_eq!(video["codec_name"], "h264");
    assert_eq!(video["width"], 640);
    assert_eq!(video["height"], 360);
    assert_eq!(video["r_frame_rate"], "25/1", "{video}");
    assert_eq!(audio["codec_name"], "aac");
    assert_eq!(audio["profile"], "LC");
    assert_eq!(audio["sample_rate"], "48000");
    let duration: f64 = probe["format"]["duration"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (duration - SECONDS).abs() <= SECONDS * 0.05,
        "recording lasts {duration} s, expected {SECONDS} s ± 5 %"
    );

    let errors = decode_errors(path);
    assert!(errors.is_empty(), "ffmpeg -v error printed: {errors}");

    let tags = flv_tags(path);
    let media: Vec<&FlvTag> = tags.iter().filter(|t| t.is_media()).collect();
    let first_video = media.iter().find(|t| t.kind == 9).expect("video tags");
    assert!(
        first_video.is_video_keyframe(),
        "the first video tag is not a keyframe"
    );
    let first_audio = media.iter().find(|t| t.kind == 8).expect("audio tags");
    let skew = (i64::from(first_video.ts_ms) - i64::from(first_audio.ts_ms)).abs();
    assert!(skew <= 100, "audio and video start {skew} ms apart");
    for kind in [8u8, 9] {
        let ts: Vec<u32> = media
            .iter()
            .filter(|t| t.kind == kind)
            .map(|t| t.ts_ms)
            .collect();
        assert!(
            ts.windows(2).all(|w| w[0] <= w[1]),
            "track {kind} timestamps go backwards"
        );
    }
    // The frame count matches the duration: nothing was lost between encoder and ingest.
    let frames = media.iter().filter(|t| t.kind == 9).count() as f64;
    assert!(
        (frames - SECONDS * 25.0).abs() <= SECONDS * 25.0 * 0.05,
        "{frames} video frames in {SECONDS} s at 25 fps"
    );
}

#[test]
fn test_pattern_to_nginx_records_cleanly() {
    let nginx = Nginx::start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_run_config(dir.path(), None, "");
    let url = nginx.url("direct");
    let r = polypush(
        &cfg,
        &[
            "--json",
            "run",
            "--test-pattern",
            "--url",
            &url,
            "--duration",
            &SECONDS.to_string(),
        ],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let summary = r.json();
    assert_eq!(summary["dropped_packets"], 0, "{summary}");
    assert!(
        summary["bytes_sent"].as_u64().unwrap() > 500_000,
        "{summary}"
    );
    check_recording(&nginx.recording("direct"));
}

#[test]
fn push_address_from_simulated_teacher_login() {
    let nginx = Nginx::start();
    let base = format!("rtmp://127.0.0.1:{}/live/", nginx.port());
    let sim = Sim::start_with(&["--rtmp-base", &base]);
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_run_config(dir.path(), Some(&sim.base), "");
    let r = polypush(
        &cfg,
        &["run", "--test-pattern", "--duration", &SECONDS.to_string()],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let stream = sim.channel(CHANNEL)["stream"].as_str().unwrap().to_string();
    check_recording(&nginx.recording(&stream));
    // Polyv was told the stream is up, with the video size.
    let paths: Vec<String> = sim
        .requests()
        .iter()
        .map(|r| r["path"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        paths.first().map(String::as_str),
        Some("/api/v2/teacher_login.json"),
        "{paths:?}"
    );
    assert!(
        paths
            .iter()
            .any(|p| p == "/live/client/notify_stream2.json"),
        "{paths:?}"
    );
    let ch = sim.channel(CHANNEL);
    assert_eq!(ch["videoWidth"], 640, "{ch}");
    assert_eq!(ch["videoHeight"], 360, "{ch}");
    // The stream key never reaches the logs.
    assert!(!r.stderr.contains(&stream), "the stream key was logged");
}

fn failing_run(extra: &str, url: &str) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_run_config(dir.path(), None, extra);
    polypush(&cfg, &["run", "--url", url, "--duration", "5"])
}

fn last_error(r: &Run) -> String {
    let lines: Vec<&str> = r
        .stderr
        .lines()
        .filter(|l| l.starts_with("polypush: error:"))
        .collect();
    assert_eq!(lines.len(), 1, "expected one error line:\n{}", r.stderr);
    assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
    lines[0].to_string()
}

/// Runs with `media` as the [video]/[audio] config; expects exit 5 and returns the error line.
fn media_error(dir: &Path, media: &str) -> String {
    let cfg = dir.join("media.toml");
    std::fs::write(&cfg, format!("[polyv]\nchannel_id = \"1\"\n{media}")).unwrap();
    let r = polypush(
        &cfg,
        &[
            "run",
            "--url",
            "rtmp://127.0.0.1:9/live/x",
            "--duration",
            "5",
        ],
    );
    assert_eq!(r.code, 5, "{}", r.stderr);
    last_error(&r)
}

#[test]
fn missing_camera_is_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let line = media_error(
        dir.path(),
        "[video]\nsource = \"v4l2\"\ndevice = \"/dev/video99\"\n[audio]\nsource = \"none\"\n",
    );
    assert!(
        line.contains("/dev/video99") && line.contains("[video] device"),
        "{line}"
    );
}

#[test]
fn unsupported_input_is_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("lesson.mp4");
    std::fs::write(&junk, "this is not a media file").unwrap();
    let line = media_error(
        dir.path(),
        &format!("[video]\nsource = \"file\"\nfile = {junk:?}\n[audio]\nsource = \"file\"\n"),
    );
    assert!(line.contains("lesson.mp4"), "{line}");
}

#[test]
fn unavailable_encoder_names_what_is_available() {
    let dir = tempfile::tempdir().unwrap();
    let line = media_error(
        dir.path(),
        "[video]\nsource = \"test\"\nwidth = 320\nheight = 240\nencoder = \"h264_nvenc_nope\"\n[audio]\nsource = \"none\"\n",
    );
    assert!(
        line.contains("h264_nvenc_nope") && line.contains("libx264"),
        "{line}"
    );
}

#[test]
fn unreachable_ingest_is_a_network_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let r = failing_run("", &format!("rtmp://127.0.0.1:{port}/live/x"));
    assert_eq!(r.code, 4, "{}", r.stderr);
    let line = last_error(&r);
    assert!(
        line.contains(&format!("127.0.0.1:{port}")) && line.contains("refused"),
        "{line}"
    );
}

#[test]
fn rejected_publish_is_exit_3() {
    let nginx = Nginx::start();
    let r = failing_run("", &nginx.url_denied("nokey"));
    assert_eq!(r.code, 3, "{}", r.stderr);
    let line = last_error(&r);
    assert!(
        line.contains("refused the stream key") && line.contains("log in again"),
        "{line}"
    );
    assert!(
        !line.contains("nokey"),
        "the stream key was printed: {line}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_name_in_use_is_bad_name_exit_3() {
    let nginx = Nginx::start();
    let url = nginx.url("busy42");
    let first = polypush::rtmp::connect(
        &polypush::rtmp::RtmpUrl::parse(&url).unwrap(),
        &polypush::rtmp::ConnectOptions::default(),
    )
    .await
    .expect("first publisher");
    let r = tokio::task::spawn_blocking(move || failing_run("", &url))
        .await
        .unwrap();
    assert_eq!(r.code, 3, "{}", r.stderr);
    let line = last_error(&r);
    assert!(line.contains("NetStream.Publish.BadName"), "{line}");
    first.close().await.unwrap();
}

#[test]
fn bad_url_is_a_usage_error() {
    let r = failing_run("", "http://example.invalid/live/x");
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(last_error(&r).contains("rtmp://"), "{}", r.stderr);
}
