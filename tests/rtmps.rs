//! Pushing to a fixed address without any `[polyv]` in the config, over RTMP and RTMPS, end to
//! end: `polypush run --test-pattern` publishes to a real nginx-rtmp on loopback, through
//! nginx's own TLS terminator (the `stream` module) for `rtmps://`, whose certificate comes
//! from a CA made for the test. The recordings are checked with ffprobe and ffmpeg; a CA the
//! box does not trust must stop the push with a message that says how to trust it.
//!
//! Every `polypush` here is bounded: `--duration`, and past a deadline it is killed by its PID
//! ([`wait_bounded`]). Its output goes to files in the test's temporary directory.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::nginx::{decode_errors, ffprobe_json, Nginx};
use common::{flv_tags, poll_until, wait_bounded};

/// How long each run pushes.
const SECONDS: f64 = 6.0;

/// `[video]`/`[audio]`/`[status]` only: a small picture (two cores run the tests in parallel)
/// and a status server on a free port. No `[polyv]`.
const SMALL: &str = "[video]\nwidth = 640\nheight = 360\nfps = 25\nbitrate_kbps = 800\n\
                     preset = \"ultrafast\"\n[status]\nlisten = \"127.0.0.1:0\"\n";

/// The outcome of one bounded `polypush` run.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    /// The one `polypush: error:` line; there must be exactly one, and no panic.
    fn error_line(&self) -> &str {
        assert!(!self.stderr.contains("panicked"), "{}", self.stderr);
        let lines: Vec<&str> = self
            .stderr
            .lines()
            .filter(|l| l.starts_with("polypush: error:"))
            .collect();
        assert_eq!(lines.len(), 1, "expected one error line:\n{}", self.stderr);
        lines[0]
    }
}

/// Where a run should trust certificates from.
enum Roots<'a> {
    /// `SSL_CERT_FILE` names this PEM file (and nothing else is consulted).
    File(&'a Path),
    /// Neither `SSL_CERT_FILE` nor `SSL_CERT_DIR`: the system store, which lacks the test CA.
    System,
}

/// A `polypush` that runs; its output goes to files. Killed by its PID when dropped
/// unfinished (a test that fails before [`Running::finish`]).
struct Running {
    child: Option<std::process::Child>,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Running {
    /// What it has written to stderr so far.
    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Waits for it to exit: at most the duration plus 60 s, then it is killed by its PID.
    fn finish(mut self) -> Run {
        let bound = Duration::from_secs_f64(SECONDS) + Duration::from_secs(60);
        let child = self.child.take().expect("finished once");
        let status = wait_bounded(child, bound);
        let out = Run {
            code: status.and_then(|s| s.code()),
            stdout: std::fs::read_to_string(&self.stdout).unwrap_or_default(),
            stderr: std::fs::read_to_string(&self.stderr).unwrap_or_default(),
        };
        assert!(
            status.is_some(),
            "polypush did not exit within {bound:?}; killed. stderr:\n{}",
            out.stderr
        );
        out
    }
}

/// Starts `polypush --config CONFIG --json run ARGS… --test-pattern --duration SECONDS` with
/// `roots`.
fn spawn(dir: &Path, config: &Path, args: &[&str], roots: Roots<'_>) -> Running {
    let stdout = dir.join("stdout.log");
    let stderr = dir.join("stderr.log");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_polypush"));
    cmd.arg("--config")
        .arg(config)
        .args(["--json", "run"])
        .args(args)
        .args(["--test-pattern", "--duration", &SECONDS.to_string()])
        .env("RUST_LOG", "debug")
        .env_remove("CREDENTIALS_DIRECTORY")
        .env_remove("SSL_CERT_FILE")
        .env_remove("SSL_CERT_DIR")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout).unwrap())
        .stderr(std::fs::File::create(&stderr).unwrap());
    if let Roots::File(ca) = roots {
        cmd.env("SSL_CERT_FILE", ca);
    }
    let child = cmd.spawn().expect("run polypush");
    Running {
        child: Some(child),
        stdout,
        stderr,
    }
}

/// [`spawn`], then [`Running::finish`].
fn run(dir: &Path, config: &Path, args: &[&str], roots: Roots<'_>) -> Run {
    spawn(dir, config, args, roots).finish()
}

/// A config file with `text` (no `[polyv]`).
fn config(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("polypush.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// The run succeeded, and published a stream nginx recorded at `rec` that decodes cleanly,
/// carries H.264 `width`x`height` and AAC-LC, and lasts as long as the run.
fn check_published(r: &Run, rec: &Path, nginx: &Nginx, width: u64, height: u64) {
    let duration = check_recording(r, rec, nginx, width, height);
    assert!(
        (duration - SECONDS).abs() <= SECONDS * 0.1,
        "the recording lasts {duration} s, the run {SECONDS} s"
    );
    // The media timestamps agree with the container's duration: frames at 25 fps.
    let frames = flv_tags(rec)
        .iter()
        .filter(|t| t.kind == 9 && t.is_media())
        .count() as f64;
    assert!(
        (frames - SECONDS * 25.0).abs() <= SECONDS * 25.0 * 0.1,
        "{frames} video frames in {SECONDS} s at 25 fps"
    );
}

/// The run succeeded, and published a stream nginx recorded at `rec` that decodes cleanly and
/// carries H.264 `width`x`height` and AAC-LC; how long the recording lasts, in seconds.
fn check_recording(r: &Run, rec: &Path, nginx: &Nginx, width: u64, height: u64) -> f64 {
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
    let summary: serde_json::Value = serde_json::from_str(&r.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", r.stdout));
    assert!(
        summary["bytes_sent"].as_u64().unwrap_or(0) > 100_000,
        "{summary}"
    );
    assert!(
        rec.exists(),
        "no recording at {}; nginx log:\n{}",
        rec.display(),
        nginx.error_log()
    );

    let probe = ffprobe_json(rec);
    let streams = probe["streams"].as_array().expect("streams");
    let stream = |kind: &str| {
        streams
            .iter()
            .find(|s| s["codec_type"] == kind)
            .unwrap_or_else(|| panic!("no {kind} stream in {probe:#}"))
    };
    let video = stream("video");
    assert_eq!(video["codec_name"], "h264", "{video}");
    assert_eq!(video["width"], width, "{video}");
    assert_eq!(video["height"], height, "{video}");
    let audio = stream("audio");
    assert_eq!(audio["codec_name"], "aac", "{audio}");
    assert_eq!(audio["profile"], "LC", "{audio}");

    let duration: f64 = probe["format"]["duration"]
        .as_str()
        .and_then(|d| d.parse().ok())
        .unwrap_or_else(|| panic!("no duration in {probe:#}"));
    let errors = decode_errors(rec);
    assert!(
        errors.trim().is_empty(),
        "ffmpeg -v error printed: {errors}"
    );
    duration
}

#[test]
fn rtmp_with_an_empty_config_publishes() {
    let nginx = Nginx::start();
    let dir = tempfile::tempdir().unwrap();
    // Nothing at all: the built-in defaults (720p25), the address from the command line.
    let cfg = config(dir.path(), "");
    let url = format!("rtmp://127.0.0.1:{}/live/plain", nginx.port());
    let r = run(dir.path(), &cfg, &["--url", &url], Roots::System);
    check_published(&r, &nginx.recording("plain"), &nginx, 1280, 720);
}

#[test]
fn rtmps_to_localhost_with_the_ca_in_ssl_cert_file_publishes() {
    let nginx = Nginx::start_tls();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), SMALL);
    let url = nginx.rtmps_url("localhost", "byname");
    let r = run(
        dir.path(),
        &cfg,
        &["--url", &url],
        Roots::File(&nginx.tls_ca()),
    );
    check_published(&r, &nginx.recording("byname"), &nginx, 640, 360);
    // Through the TLS terminator (nginx's stream module logs each client it proxies).
    let log = nginx.error_log();
    let via_tls = format!("connected to 127.0.0.1:{}", nginx.tls_port());
    assert!(log.contains(&via_tls), "no client of the TLS port:\n{log}");
    assert_eq!(nginx.publish_count("byname"), 1, "{log}");
}

#[test]
fn rtmps_to_an_ip_address_is_checked_against_the_ip_san() {
    let nginx = Nginx::start_tls();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), SMALL);
    let url = nginx.rtmps_url("127.0.0.1", "byip");
    let r = run(
        dir.path(),
        &cfg,
        &["--url", &url],
        Roots::File(&nginx.tls_ca()),
    );
    check_published(&r, &nginx.recording("byip"), &nginx, 640, 360);
}

#[test]
fn rtmps_with_an_untrusted_ca_does_not_publish_and_says_how_to_trust_it() {
    let nginx = Nginx::start_tls();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), SMALL);
    let url = nginx.rtmps_url("localhost", "untrusted");
    let r = run(dir.path(), &cfg, &["--url", &url], Roots::System);

    // The exit code of a run that never published is someone else's to class; that it is
    // not a success is ours.
    assert_ne!(r.code, Some(0), "{}", r.stderr);
    let line = r.error_line();
    let addr = format!("127.0.0.1:{}", nginx.tls_port());
    assert!(line.contains(&addr), "the ingest is not named: {line}");
    assert!(line.contains("TLS"), "{line}");
    assert!(line.contains("certificate"), "{line}");
    assert!(
        line.contains("SSL_CERT_FILE") && line.contains("update-ca-certificates"),
        "the way to trust the CA is not given: {line}"
    );
    assert!(
        !line.contains("untrusted"),
        "the stream key was printed: {line}"
    );
    // nginx never saw a publish; nothing was recorded.
    assert_eq!(nginx.publish_count("untrusted"), 0, "{}", nginx.error_log());
    assert!(!nginx.recording("untrusted").exists());
}

#[test]
fn rtmps_url_from_the_config_file_works_like_the_flag() {
    let nginx = Nginx::start_tls();
    let dir = tempfile::tempdir().unwrap();
    let url = nginx.rtmps_url("localhost", "fromfile");
    let cfg = config(dir.path(), &format!("[target]\nurl = \"{url}\"\n{SMALL}"));
    let r = run(dir.path(), &cfg, &[], Roots::File(&nginx.tls_ca()));
    check_published(&r, &nginx.recording("fromfile"), &nginx, 640, 360);
}

#[test]
fn a_ca_installed_while_the_service_retries_is_used_at_the_next_attempt() {
    let nginx = Nginx::start_tls();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), SMALL);
    // A trust store without the test CA (the system's, as a file the test can change).
    let system = Path::new("/etc/ssl/certs/ca-certificates.crt");
    assert!(
        system.exists(),
        "{} is missing: install ca-certificates (scripts/install-deps.sh)",
        system.display()
    );
    let store = dir.path().join("store.pem");
    std::fs::copy(system, &store).unwrap();
    let url = nginx.rtmps_url("localhost", "later");
    let running = spawn(dir.path(), &cfg, &["--url", &url], Roots::File(&store));
    // Leaves at least 2 s of the run for the attempt after the change.
    let refused = poll_until(Duration::from_secs_f64(SECONDS - 2.0), || {
        running.stderr().contains("UnknownIssuer")
    });
    // Installed while it runs: the next attempt must read the store again.
    let mut pem = std::fs::read(&store).unwrap();
    pem.extend(std::fs::read(nginx.tls_ca()).unwrap());
    std::fs::write(&store, pem).unwrap();
    let r = running.finish();
    assert!(
        refused,
        "no UnknownIssuer before the CA was added:\n{}",
        r.stderr
    );

    let duration = check_recording(&r, &nginx.recording("later"), &nginx, 640, 360);
    assert!(duration > 0.5, "the recording lasts {duration} s");
    assert_eq!(nginx.publish_count("later"), 1, "{}", nginx.error_log());
}

#[test]
fn rtmps_to_a_plain_rtmp_port_says_the_port_is_not_tls() {
    let nginx = Nginx::start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), SMALL);
    let url = format!("rtmps://localhost:{}/live/plainport", nginx.port());
    let r = run(dir.path(), &cfg, &["--url", &url], Roots::System);
    assert_ne!(r.code, Some(0), "{}", r.stderr);
    let line = r.error_line();
    assert!(line.contains("TLS"), "{line}");
    assert!(line.contains("RTMPS port"), "{line}");
    assert_eq!(nginx.publish_count("plainport"), 0, "{}", nginx.error_log());
}
