//! `polypush selftest`: a preflight that never goes live.
//!
//! One [`Check`] per thing a broadcast needs, in this order:
//!
//! | check | what it does | fails with exit code |
//! |---|---|---|
//! | `config` | loads and validates the config file (and `--url`, if given) | 2 |
//! | `video` | opens the configured video source through the capture code and counts the frames it delivers in about a second (the first within 5 s) | 5 |
//! | `audio` | the same for the audio source (`none`: not needed) | 5 |
//! | `encoder` | opens the configured H.264 encoder with the configured size, rate and bitrate, encodes 10 frames of a test pattern (ms per frame), opens the AAC encoder | 5 |
//! | `login` | Polyv `teacher_login`, one attempt within `[polyv] timeout_s`: the push address, stream key masked (not needed with `--url` or `[target] url`) | 3 rejected, 4 unreachable, 2 no password |
//! | `ingest` | TCP connect, RTMP handshake and `connect` to the application, until `NetConnection.Connect.Success`, within 5 s; then hangs up without `createStream` or `publish` ([`crate::rtmp::driver::probe`]) | 4 unreachable, 3 refused, 2 bad address |
//! | `clock` | this box's clock against the `Date` header of Polyv's login endpoint; fails outside Polyv's 3-minute signing window (not needed without Polyv) | 3, or 4 unreachable |
//! | `record` | with `[record] enabled`: creates the directory if missing, writes, fsyncs and deletes a probe file, and wants `min_free_mb` plus one segment's worth free | 2 |
//!
//! A check that needs a failed one (everything needs `config`, `ingest` needs `login`) is
//! reported skipped (`–`, `ok: false`, "skipped: needs …") and has no exit code of its own; a
//! check that does not apply (no audio track, no Polyv login with a fixed URL, recording off)
//! is skipped with `ok: true`. The exit code is 0 only if every check is ok; otherwise it is
//! the code of the *first* failed check in the order above.
//!
//! Every check is time-bounded and runs blocking work (FFmpeg, the file system) on a thread
//! of its own, so a device that hangs in the kernel costs its check, not the whole run.
//! Nothing prints a secret: push addresses are shown through [`RtmpUrl`]'s masking.

use std::fs::{self, DirBuilder, OpenOptions};
use std::io::{self, Write};
use std::ops::DerefMut;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ffmpeg_next as ffmpeg;
use serde_json::{json, Value};

use crate::capture::{
    frame_queue, CaptureClock, CaptureCounters, CaptureError, CaptureOutputs, CaptureThread,
    Captured, FrameSender, Received, SourceInfo, SourceSpec, StopSignal,
};
use crate::config::Config;
use crate::encode::{
    AudioEncoder, AudioSettings, AudioSource, EncodeError, VideoEncoder, VideoSettings, VideoSource,
};
use crate::exit::ExitCode;
use crate::platform::client::RetryPolicy;
use crate::platform::{PlatformError, PolyvClient};
use crate::rtmp::{ConnectOptions, Phase, RtmpError, RtmpUrl};

/// Polyv accepts request timestamps this far from its own clock, seconds.
pub const SIGNING_WINDOW_S: f64 = 180.0;
/// A source must deliver its first frame within this (opening included).
const FIRST_FRAME_WITHIN: Duration = Duration::from_secs(5);
/// Frames are counted for this long after the first one.
const COUNT_FOR: Duration = Duration::from_secs(1);
/// Frames of the test pattern encoded.
const ENCODE_FRAMES: u32 = 10;
/// The encoder check's bound (a hardware encoder may be slow to open).
const ENCODER_LIMIT: Duration = Duration::from_secs(15);
/// TCP connect, and handshake plus `connect`, are each bounded by this (or the configured
/// timeouts, when shorter).
const RTMP_LIMIT: Duration = Duration::from_secs(5);
/// The recording directory check's bound (a hung network file system).
const RECORD_LIMIT: Duration = Duration::from_secs(10);
/// Bytes written (and fsynced) to the probe file in the recording directory.
const PROBE_BYTES: usize = 64 * 1024;

/// The checks, in order.
const NAMES: [&str; 8] = [
    "config", "video", "audio", "encoder", "login", "ingest", "clock", "record",
];

/// The outcome of one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// `config`, `video`, `audio`, `encoder`, `login`, `ingest`, `clock` or `record`.
    pub name: &'static str,
    /// Passed, or not needed.
    pub ok: bool,
    /// Not run: not needed (`ok`), or a check it needs failed (not `ok`).
    pub skipped: bool,
    /// What was found, with numbers. Never a secret.
    pub detail: String,
    /// What to do, for a failure.
    pub fix: Option<String>,
    /// The exit code this failure asks for; [`ExitCode::Ok`] when ok or skipped.
    pub exit_code: ExitCode,
}

impl Check {
    fn pass(name: &'static str, detail: impl Into<String>) -> Self {
        Self {
            name,
            ok: true,
            skipped: false,
            detail: detail.into(),
            fix: None,
            exit_code: ExitCode::Ok,
        }
    }

    /// Does not apply to this configuration.
    fn not_needed(name: &'static str, detail: impl Into<String>) -> Self {
        Self {
            skipped: true,
            ..Self::pass(name, detail)
        }
    }

    fn fail(
        name: &'static str,
        exit_code: ExitCode,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Self {
            name,
            ok: false,
            skipped: false,
            detail: detail.into(),
            fix: Some(fix.into()),
            exit_code,
        }
    }

    /// Not run because `needs` failed.
    fn needs(name: &'static str, needs: &str) -> Self {
        Self {
            name,
            ok: false,
            skipped: true,
            detail: format!("skipped: needs {needs}"),
            fix: None,
            exit_code: ExitCode::Ok,
        }
    }

    fn glyph(&self) -> &'static str {
        match (self.ok, self.skipped) {
            (_, true) => "–",
            (true, false) => "✓",
            (false, false) => "✗",
        }
    }
}

/// Every check's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub config_path: PathBuf,
    pub checks: Vec<Check>,
}

impl Report {
    /// True when every check passed or did not apply.
    pub fn ok(&self) -> bool {
        self.checks.iter().all(|c| c.ok)
    }

    /// [`ExitCode::Ok`] when [`ok`](Self::ok); otherwise the exit code of the first failed
    /// check.
    pub fn exit_code(&self) -> ExitCode {
        self.checks
            .iter()
            .find(|c| !c.ok && !c.skipped)
            .map_or(ExitCode::Ok, |c| c.exit_code)
    }

    pub fn check(&self, name: &str) -> Option<&Check> {
        self.checks.iter().find(|c| c.name == name)
    }

    /// `{"ok", "exit_code", "config", "checks": [{name, ok, skipped, detail, fix}]}`.
    pub fn to_json(&self) -> Value {
        let checks: Vec<Value> = self
            .checks
            .iter()
            .map(|c| {
                json!({
                    "name": c.name,
                    "ok": c.ok,
                    "skipped": c.skipped,
                    "detail": c.detail,
                    "fix": c.fix,
                })
            })
            .collect();
        json!({
            "ok": self.ok(),
            "exit_code": self.exit_code().code(),
            "config": self.config_path,
            "checks": checks,
        })
    }

    /// The table: one line per check, `→ fix:` under each failure, a summary line.
    pub fn render(&self) -> String {
        let width = self.checks.iter().map(|c| c.name.len()).max().unwrap_or(0);
        let mut s = format!(
            "polypush selftest of {} (nothing is published)\n",
            self.config_path.display()
        );
        for c in &self.checks {
            s.push_str(&format!(
                "  {} {:<width$}  {}\n",
                c.glyph(),
                c.name,
                c.detail
            ));
            if let Some(fix) = &c.fix {
                s.push_str(&format!("    {:<width$}  → fix: {fix}\n", ""));
            }
        }
        let failed: Vec<&str> = self
            .checks
            .iter()
            .filter(|c| !c.ok && !c.skipped)
            .map(|c| c.name)
            .collect();
        let skipped = self.checks.iter().filter(|c| c.skipped).count();
        if failed.is_empty() {
            let passed = self.checks.len() - skipped;
            s.push_str(&format!(
                "all checks passed ({passed} passed, {skipped} not needed)\n"
            ));
        } else {
            s.push_str(&format!(
                "selftest FAILED: {} ({} failed, {skipped} skipped); exit code {}\n",
                failed.join(", "),
                failed.len(),
                self.exit_code()
            ));
        }
        s
    }
}

/// How `polypush selftest` was invoked.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The configuration file.
    pub config: PathBuf,
    /// Check this ingest instead of logging in to Polyv (overrides `[target] url`).
    pub url: Option<String>,
}

/// Runs every check. Never panics on what it finds; every check is time-bounded.
pub async fn run(opts: &Options) -> Report {
    let mut checks = Vec::with_capacity(NAMES.len());
    let cfg = match Config::load(&opts.config) {
        Ok(cfg) => cfg,
        Err(e) => {
            checks.push(Check::fail(
                "config",
                ExitCode::Config,
                e.to_string(),
                "edit the file as the message says (packaging/polypush.toml documents every key), then run `polypush check`",
            ));
            checks.extend(NAMES[1..].iter().map(|n| Check::needs(n, "config")));
            return Report {
                config_path: opts.config.clone(),
                checks,
            };
        }
    };

    // A fixed push address (as `run --url` or `[target] url`) means no Polyv login.
    let (fixed_from, fixed) = match (&opts.url, cfg.target.url.is_empty()) {
        (Some(u), _) => ("--url", Some(u.clone())),
        (None, false) => ("[target] url", Some(cfg.target.url.clone())),
        (None, true) => ("", None),
    };
    let fixed = fixed.map(|u| RtmpUrl::parse(&u));
    checks.push(match &fixed {
        None => Check::pass("config", format!("{} valid", opts.config.display())),
        Some(Ok(url)) => Check::pass(
            "config",
            format!(
                "{} valid; pushing to {url} ({fixed_from}), no Polyv login",
                opts.config.display()
            ),
        ),
        Some(Err(e)) => Check::fail(
            "config",
            ExitCode::Config,
            format!("{fixed_from}: {e}"),
            format!("give {fixed_from} as rtmp://host[:port]/app/stream-key"),
        ),
    });

    let (video, audio) = tokio::join!(check_video(&cfg), check_audio(&cfg));
    checks.push(video);
    checks.push(audio);
    checks.push(check_encoder(&cfg).await);

    match fixed {
        Some(fixed) => {
            checks.push(Check::not_needed(
                "login",
                format!("not needed: pushing to the fixed address of {fixed_from}"),
            ));
            checks.push(match fixed {
                Ok(url) => check_ingest(&cfg, &url, false).await,
                Err(_) => Check::needs("ingest", "a valid push address"),
            });
            checks.push(Check::not_needed(
                "clock",
                format!(
                    "not needed: no Polyv calls when pushing to the fixed address of {fixed_from}"
                ),
            ));
        }
        None => {
            let login = check_login(&cfg).await;
            checks.push(login.check);
            checks.push(match &login.url {
                Some(url) => check_ingest(&cfg, url, true).await,
                None => Check::needs("ingest", "login (the push address)"),
            });
            checks.push(if login.reachable {
                check_clock(&cfg).await
            } else {
                Check::needs("clock", "Polyv reachable")
            });
        }
    }
    checks.push(check_record(&cfg).await);
    Report {
        config_path: opts.config.clone(),
        checks,
    }
}

/// How a blocking job on its own thread ended.
enum Blocking<T> {
    Done(T),
    TimedOut,
    Failed(String),
}

/// Runs `f` on a thread of its own and waits at most `limit`. A job that overruns is left to
/// finish on its own (it holds nothing the caller needs; the process does not wait for it).
async fn blocking<T: Send + 'static>(
    limit: Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> Blocking<T> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let spawned = std::thread::Builder::new()
        .name("polypush-selftest".into())
        .spawn(move || {
            let _ = tx.send(f());
        });
    if let Err(e) = spawned {
        return Blocking::Failed(format!("cannot start a thread: {e}"));
    }
    match tokio::time::timeout(limit, rx).await {
        Ok(Ok(v)) => Blocking::Done(v),
        Ok(Err(_)) => {
            Blocking::Failed("the check panicked; this is a bug, please report it".into())
        }
        Err(_) => Blocking::TimedOut,
    }
}

// ---------------------------------------------------------------------------------------------
// Devices

/// Frames a source delivered while counted.
struct Counted {
    info: SourceInfo,
    frames: u64,
    /// Audio: samples.
    samples: u64,
    /// From the first frame to the end of counting.
    window: Duration,
    /// From the first frame to the last one counted.
    interval: Duration,
}

/// Opens `spec` on a capture thread, waits for its first frame (at most
/// [`FIRST_FRAME_WITHIN`] from the start) and counts frames for [`COUNT_FOR`] from there.
fn count_frames<F>(
    spec: SourceSpec,
    stop: Arc<AtomicBool>,
    outputs: impl FnOnce(FrameSender<F>) -> CaptureOutputs,
    samples_of: fn(&F) -> u64,
) -> Result<Counted, CaptureError>
where
    F: DerefMut<Target = ffmpeg::Frame>,
{
    let start = Instant::now();
    let what = spec.describe();
    let (tx, rx) = frame_queue::<F>(8, Arc::new(CaptureCounters::default()));
    let signal = StopSignal::new(stop.clone());
    let mut thread = CaptureThread::spawn("polypush-selftest-capture", spec, outputs(tx), signal)?;
    let info = match thread.wait_opened() {
        Ok(info) => info,
        Err(e) => {
            let _ = thread.join();
            return Err(e);
        }
    };
    thread.start(CaptureClock::start_now());
    let (mut frames, mut samples) = (0u64, 0u64);
    let mut first: Option<Instant> = None;
    let mut last = start;
    let ended = loop {
        let deadline = match first {
            Some(t) => t + COUNT_FOR,
            None => start + FIRST_FRAME_WITHIN,
        };
        let now = Instant::now();
        if now >= deadline {
            break first.is_none();
        }
        match rx.recv_timeout((deadline - now).min(Duration::from_millis(100))) {
            Received::Frame(f) => {
                let now = Instant::now();
                let t0 = *first.get_or_insert(now);
                if now >= t0 + COUNT_FOR {
                    rx.recycle(f.frame);
                    break false;
                }
                frames += 1;
                samples += samples_of(&f.frame);
                last = now;
                rx.recycle(f.frame);
            }
            Received::Timeout => {}
            Received::Closed => break true,
        }
    };
    let window = first.map_or(Duration::ZERO, |t| t.elapsed().min(COUNT_FOR));
    // Frame rate from the intervals between the first and the last frame counted.
    let interval = first.map_or(Duration::ZERO, |t| last.saturating_duration_since(t));
    // Release the queue before stopping: the capture thread waits for its frames.
    drop(rx);
    stop.store(true, Ordering::Relaxed);
    let joined = thread.join();
    if frames == 0 {
        joined?;
        if ended {
            return Err(match first {
                None if start.elapsed() >= FIRST_FRAME_WITHIN => CaptureError::Stalled {
                    what,
                    seconds: FIRST_FRAME_WITHIN.as_secs(),
                },
                _ => CaptureError::Ended { what },
            });
        }
    } else if let Err(e) = joined {
        tracing::debug!(error = %e, "capture ended with an error after the frames were counted");
    }
    Ok(Counted {
        info,
        frames,
        samples,
        window,
        interval,
    })
}

/// Counts frames of `spec` on a thread, bounded; the check's outcome.
async fn count_check<F>(
    name: &'static str,
    spec: SourceSpec,
    outputs: fn(FrameSender<F>) -> CaptureOutputs,
    samples_of: fn(&F) -> u64,
    describe: impl FnOnce(&Counted) -> String,
) -> Result<Counted, Check>
where
    F: DerefMut<Target = ffmpeg::Frame> + Send + 'static,
{
    let what = spec.describe();
    let stop = Arc::new(AtomicBool::new(false));
    let job = {
        let stop = stop.clone();
        move || count_frames(spec, stop, outputs, samples_of)
    };
    let limit = FIRST_FRAME_WITHIN + COUNT_FOR + Duration::from_secs(3);
    let outcome = blocking(limit, job).await;
    stop.store(true, Ordering::Relaxed);
    match outcome {
        Blocking::Done(Ok(c)) if c.frames > 0 => Ok(c),
        Blocking::Done(Ok(c)) => Err(Check::fail(
            name,
            ExitCode::Media,
            format!("{}: opened, but delivered no frames", describe(&c)),
            capture_fix(name, None),
        )),
        Blocking::Done(Err(e)) => Err(Check::fail(
            name,
            ExitCode::Media,
            e.to_string(),
            capture_fix(name, Some(&e)),
        )),
        Blocking::TimedOut => Err(Check::fail(
            name,
            ExitCode::Media,
            format!(
                "{what} neither opened nor delivered a frame within {} s",
                limit.as_secs()
            ),
            capture_fix(name, None),
        )),
        Blocking::Failed(m) => Err(Check::fail(
            name,
            ExitCode::Media,
            format!("{what}: {m}"),
            capture_fix(name, None),
        )),
    }
}

/// What to do about a capture problem. Always names `polypush devices`.
fn capture_fix(name: &str, e: Option<&CaptureError>) -> String {
    let (section, settings) = if name == "audio" {
        ("[audio]", "device (and sample_rate, channels)")
    } else {
        ("[video]", "device (and input_format, width, height, fps)")
    };
    let list = format!(
        "run `polypush devices` to see what is present, then set {section} {settings} to match one of them"
    );
    match e {
        Some(CaptureError::DeviceBusy { device }) => format!(
            "stop the other program capturing from {device} (`fuser -v {device}` names it); `polypush devices` lists the alternatives"
        ),
        Some(CaptureError::PermissionDenied { group, .. }) => format!(
            "add the user polypush runs as to the '{group}' group (usermod -aG {group} polypush); `polypush devices` lists the devices"
        ),
        Some(CaptureError::FileOpen { .. }) => format!(
            "point {section} file at a readable media file (or use a device: `polypush devices` lists them)"
        ),
        Some(CaptureError::FormatUnavailable { .. }) => {
            "install libavdevice with that input (Debian: libavdevice59); `polypush devices` lists the devices".to_string()
        }
        _ => list,
    }
}

fn video_outputs(tx: FrameSender<ffmpeg::frame::Video>) -> CaptureOutputs {
    CaptureOutputs {
        video: Some(tx),
        audio: None,
    }
}

fn audio_outputs(tx: FrameSender<ffmpeg::frame::Audio>) -> CaptureOutputs {
    CaptureOutputs {
        video: None,
        audio: Some(tx),
    }
}

async fn check_video(cfg: &Config) -> Check {
    let Some(spec) = crate::broadcast::media_settings(cfg, false).video_source else {
        return Check::not_needed("video", "no video source configured");
    };
    let what = spec.describe();
    let fps = cfg.video.fps;
    let counted = count_check(
        "video",
        spec,
        video_outputs,
        |_| 0,
        |c: &Counted| what_with_size(&what, c),
    )
    .await;
    let c = match counted {
        Ok(c) => c,
        Err(check) => return check,
    };
    let secs = c.window.as_secs_f64().max(0.001);
    let measured = if c.frames >= 2 && !c.interval.is_zero() {
        (c.frames - 1) as f64 / c.interval.as_secs_f64()
    } else {
        c.frames as f64 / secs
    };
    let mut detail = format!(
        "{}: {} frames in {secs:.1} s ({measured:.1} fps)",
        what_with_size(&what, &c),
        c.frames
    );
    if cfg.video.source == VideoSource::V4l2 && measured < f64::from(fps) * 0.8 {
        detail.push_str(&format!(
            "; below the configured {fps} fps (dim light, USB bandwidth or an input_format the camera cannot deliver that fast)"
        ));
    }
    Check::pass("video", detail)
}

fn what_with_size(what: &str, c: &Counted) -> String {
    match c.info.video {
        Some((w, h)) => format!("{what} {w}x{h}"),
        None => what.to_string(),
    }
}

async fn check_audio(cfg: &Config) -> Check {
    if cfg.audio.source == AudioSource::None {
        return Check::not_needed("audio", "no audio track ([audio] source = \"none\")");
    }
    let Some(spec) = crate::broadcast::media_settings(cfg, false).audio_source else {
        return Check::not_needed("audio", "no audio source configured");
    };
    let what = spec.describe();
    let counted = count_check(
        "audio",
        spec,
        audio_outputs,
        |f: &ffmpeg::frame::Audio| f.samples() as u64,
        |_| what.clone(),
    )
    .await;
    let c = match counted {
        Ok(c) => c,
        Err(check) => return check,
    };
    let secs = c.window.as_secs_f64().max(0.001);
    let format = match c.info.audio {
        Some((rate, channels)) => format!(
            " {rate} Hz {}",
            if channels == 1 {
                "mono".to_string()
            } else if channels == 2 {
                "stereo".to_string()
            } else {
                format!("{channels} channels")
            }
        ),
        None => String::new(),
    };
    Check::pass(
        "audio",
        format!(
            "{what}{format}: {} frames, {} samples in {secs:.1} s ({:.0} samples/s)",
            c.frames,
            c.samples,
            c.samples as f64 / secs
        ),
    )
}

// ---------------------------------------------------------------------------------------------
// Encoder

struct Encoded {
    open: Duration,
    encode: Duration,
    packets: u64,
    bytes: u64,
    first_is_keyframe: bool,
    audio_opened: bool,
}

/// A moving gradient in YUV 4:2:0: a test pattern without real-time pacing.
fn pattern(i: u32, width: u32, height: u32) -> ffmpeg::frame::Video {
    let mut frame = ffmpeg::frame::Video::new(ffmpeg::format::Pixel::YUV420P, width, height);
    for plane in 0..3 {
        let stride = frame.stride(plane);
        for (row, line) in frame.data_mut(plane).chunks_mut(stride).enumerate() {
            for (col, px) in line.iter_mut().enumerate() {
                *px = (col + row + i as usize * 4) as u8;
            }
        }
    }
    frame
}

fn encode_frames(
    video: VideoSettings,
    audio: Option<AudioSettings>,
) -> Result<Encoded, EncodeError> {
    crate::capture::init_ffmpeg();
    let started = Instant::now();
    let mut encoder = VideoEncoder::open(&video)?;
    let open = started.elapsed();
    let (mut packets, mut bytes, mut first_is_keyframe) = (0u64, 0u64, None);
    let mut on_packet = |p: &crate::media::EncodedPacket<'_>| {
        packets += 1;
        bytes += p.data.len() as u64;
        first_is_keyframe.get_or_insert(p.keyframe);
    };
    let mut encode = Duration::ZERO;
    let interval_us = 1_000_000 / i64::from(video.fps.max(1));
    for i in 0..ENCODE_FRAMES {
        let mut frame = Captured {
            frame: pattern(i, video.width, video.height),
            pts_us: i64::from(i) * interval_us,
        };
        let t = Instant::now();
        encoder.encode(&mut frame, i == 0, &mut on_packet)?;
        encode += t.elapsed();
    }
    let t = Instant::now();
    encoder.flush(&mut on_packet)?;
    encode += t.elapsed();
    let audio_opened = match audio {
        Some(a) => {
            AudioEncoder::open(&a)?;
            true
        }
        None => false,
    };
    Ok(Encoded {
        open,
        encode,
        packets,
        bytes,
        first_is_keyframe: first_is_keyframe.unwrap_or(false),
        audio_opened,
    })
}

async fn check_encoder(cfg: &Config) -> Check {
    let pc = crate::broadcast::media_settings(cfg, false);
    let v = pc.video_encoder.clone();
    let a = (cfg.audio.source != AudioSource::None).then(|| pc.audio_encoder.clone());
    let what = format!(
        "{} {}x{} {} fps {} kbit/s",
        v.encoder, v.width, v.height, v.fps, v.bitrate_kbps
    );
    let fix_media = "set [video] encoder to one this FFmpeg has (libx264, or h264_v4l2m2m on a Raspberry Pi) and check [video] width, height, fps and bitrate_kbps";
    let outcome = blocking(ENCODER_LIMIT, {
        let (v, a) = (v.clone(), a.clone());
        move || encode_frames(v, a)
    })
    .await;
    let e = match outcome {
        Blocking::Done(Ok(e)) => e,
        Blocking::Done(Err(err)) => {
            let fix = match &err {
                EncodeError::EncoderNotFound { available, .. } if !available.is_empty() => {
                    format!("set [video] encoder to one of: {}", available.join(", "))
                }
                EncodeError::EncoderNotFound { .. } => {
                    "install an FFmpeg with libx264 (Debian: libavcodec59) or use h264_v4l2m2m on a Raspberry Pi".to_string()
                }
                _ => fix_media.to_string(),
            };
            return Check::fail("encoder", ExitCode::Media, format!("{what}: {err}"), fix);
        }
        Blocking::TimedOut => {
            return Check::fail(
                "encoder",
                ExitCode::Media,
                format!(
                    "{what}: did not open and encode {ENCODE_FRAMES} frames within {} s",
                    ENCODER_LIMIT.as_secs()
                ),
                "a hardware encoder may be wedged: reboot, or set [video] encoder = \"libx264\"",
            )
        }
        Blocking::Failed(m) => {
            return Check::fail(
                "encoder",
                ExitCode::Media,
                format!("{what}: {m}"),
                fix_media,
            )
        }
    };
    if e.packets == 0 || !e.first_is_keyframe {
        return Check::fail(
            "encoder",
            ExitCode::Media,
            format!(
                "{what}: {ENCODE_FRAMES} frames gave {} packet(s){}",
                e.packets,
                if e.packets > 0 {
                    ", the first not a keyframe"
                } else {
                    ""
                }
            ),
            fix_media,
        );
    }
    let per_frame = e.encode.as_secs_f64() * 1000.0 / f64::from(ENCODE_FRAMES);
    let budget = 1000.0 / f64::from(v.fps.max(1));
    let mut detail = format!(
        "{what}: opened in {} ms; {ENCODE_FRAMES} frames in {} ms ({per_frame:.1} ms/frame, {budget:.0} ms budget), {} packets, {} bytes",
        e.open.as_millis(),
        e.encode.as_millis(),
        e.packets,
        e.bytes
    );
    if per_frame > budget {
        detail.push_str(
            "; slower than real time on a cold start: watch for dropped frames (a faster preset or a smaller size helps)",
        );
    }
    if e.audio_opened {
        detail.push_str(&format!("; aac {} kbit/s opened", cfg.audio.bitrate_kbps));
    }
    Check::pass("encoder", detail)
}

// ---------------------------------------------------------------------------------------------
// Polyv

struct Login {
    check: Check,
    url: Option<RtmpUrl>,
    /// Polyv answered (whatever it said): the clock check can ask it the time.
    reachable: bool,
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
        PlatformError::Validation { .. } => "correct what Polyv names in [polyv]".into(),
        PlatformError::RateLimited { .. } => "wait at least 5 minutes: Polyv blocks this address for about 5 minutes".into(),
        PlatformError::Server { .. } => "try again later; if it persists, check Polyv's status".into(),
        PlatformError::Transport { .. } => "check the network, DNS and polyv.endpoints.login (try `curl -sI` on it from this box)".into(),
        PlatformError::Undecodable { .. } => "a proxy or captive portal may be in the way: check the network and polyv.endpoints.login".into(),
    }
}

async fn check_login(cfg: &Config) -> Login {
    let unreachable = |check| Login {
        check,
        url: None,
        reachable: false,
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
    let limit = Duration::from_secs(cfg.polyv.timeout_s) + Duration::from_secs(1);
    let reply = match tokio::time::timeout(limit, client.teacher_login()).await {
        Ok(Ok(reply)) => reply,
        Ok(Err(e)) => {
            let reachable = e.exit_code() == ExitCode::Refused;
            return Login {
                check: Check::fail("login", e.exit_code(), platform_detail(&e), platform_fix(&e)),
                url: None,
                reachable,
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
    Login {
        check: Check::pass("login", detail),
        url: Some(url),
        reachable: true,
    }
}

/// This box's clock against the `Date` header of Polyv's login endpoint.
async fn check_clock(cfg: &Config) -> Check {
    let base = cfg.polyv.endpoints.login.clone();
    let fail_net = |detail: String| {
        Check::fail(
            "clock",
            ExitCode::Unavailable,
            detail,
            "check the network, DNS and polyv.endpoints.login",
        )
    };
    let http = match reqwest::Client::builder()
        .timeout(Duration::from_secs(cfg.polyv.timeout_s))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("polypush/", env!("CARGO_PKG_VERSION"), " selftest"))
        .build()
    {
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

async fn check_ingest(cfg: &Config, url: &RtmpUrl, from_polyv: bool) -> Check {
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

// ---------------------------------------------------------------------------------------------
// Recording directory

/// Creates the probe file, writes and fsyncs it, deletes it.
fn probe_write(dir: &Path) -> io::Result<()> {
    let probe = dir.join(format!(".polypush-selftest-{}", std::process::id()));
    let result = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o640)
        .open(&probe)
        .and_then(|mut f| {
            f.write_all(&[0u8; PROBE_BYTES])?;
            f.sync_all()
        });
    let removed = fs::remove_file(&probe);
    result?;
    removed
}

const MIB: u64 = 1 << 20;

fn record_check(cfg: &Config) -> Check {
    let r = &cfg.record;
    let dir = r.dir.clone();
    let writable_fix = format!(
        "make {} writable by the user polypush runs as (chown polypush {0}; under systemd StateDirectory=polypush covers /var/lib/polypush), check its file system is not mounted read-only, or set record.dir",
        dir.display()
    );
    let mut created = false;
    match fs::metadata(&dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Check::fail(
                "record",
                ExitCode::Config,
                format!("{} exists but is not a directory", dir.display()),
                "set record.dir to a directory",
            )
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if let Err(e) = DirBuilder::new().recursive(true).mode(0o750).create(&dir) {
                return Check::fail(
                    "record",
                    ExitCode::Config,
                    format!("cannot create {}: {e}", dir.display()),
                    writable_fix,
                );
            }
            created = true;
        }
        Err(e) => {
            return Check::fail(
                "record",
                ExitCode::Config,
                format!("cannot look at {}: {e}", dir.display()),
                writable_fix,
            )
        }
    }
    if let Err(e) = probe_write(&dir) {
        return Check::fail(
            "record",
            ExitCode::Config,
            format!("{} is not writable: {e}", dir.display()),
            writable_fix,
        );
    }
    let free = match crate::record::free_bytes(&dir) {
        Ok(f) => f,
        Err(e) => {
            return Check::fail(
                "record",
                ExitCode::Config,
                format!("cannot tell the free space of {}: {e}", dir.display()),
                writable_fix,
            )
        }
    };
    let audio_kbps = if cfg.audio.source == AudioSource::None {
        0
    } else {
        u64::from(cfg.audio.bitrate_kbps)
    };
    let kbps = u64::from(cfg.video.bitrate_kbps) + audio_kbps;
    let segment = (kbps * 1000 / 8).saturating_mul(r.segment_s);
    let reserve = r.min_free_mb.saturating_mul(MIB);
    let need = reserve.saturating_add(segment);
    let numbers = format!(
        "{} MiB free; needs {} MiB reserve (record.min_free_mb) + {} MiB for one {} s segment at {kbps} kbit/s",
        free / MIB,
        r.min_free_mb,
        segment.div_ceil(MIB),
        r.segment_s
    );
    if free < need {
        return Check::fail(
            "record",
            ExitCode::Config,
            format!("{}: {numbers}", dir.display()),
            "free space on that file system, put record.dir on a larger disk, or lower record.min_free_mb or record.segment_s",
        );
    }
    Check::pass(
        "record",
        format!(
            "{} {}writable (probe written, fsynced, deleted); {numbers}",
            dir.display(),
            if created { "created and " } else { "" }
        ),
    )
}

async fn check_record(cfg: &Config) -> Check {
    if !cfg.record.enabled {
        return Check::not_needed("record", "not enabled ([record] enabled = false)");
    }
    let dir = cfg.record.dir.clone();
    let cfg = cfg.clone();
    match blocking(RECORD_LIMIT, move || record_check(&cfg)).await {
        Blocking::Done(c) => c,
        Blocking::TimedOut => Check::fail(
            "record",
            ExitCode::Config,
            format!(
                "{}: writing a probe file took longer than {} s",
                dir.display(),
                RECORD_LIMIT.as_secs()
            ),
            "the disk (or network file system) behind record.dir hangs: check it, or set record.dir to a local disk",
        ),
        Blocking::Failed(m) => Check::fail(
            "record",
            ExitCode::Config,
            format!("{}: {m}", dir.display()),
            "set record.dir to a writable directory",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(checks: Vec<Check>) -> Report {
        Report {
            config_path: PathBuf::from("/etc/polypush/polypush.toml"),
            checks,
        }
    }

    #[test]
    fn the_first_failure_decides_the_exit_code() {
        let r = report(vec![
            Check::pass("config", "valid"),
            Check::fail("video", ExitCode::Media, "missing", "polypush devices"),
            Check::not_needed("audio", "none"),
            Check::fail("login", ExitCode::Refused, "password", "fix it"),
            Check::needs("ingest", "login"),
        ]);
        assert!(!r.ok());
        assert_eq!(r.exit_code(), ExitCode::Media);
        let text = r.render();
        assert!(text.contains("✓ config"), "{text}");
        assert!(text.contains("✗ video"), "{text}");
        assert!(text.contains("– audio"), "{text}");
        assert!(text.contains("– ingest  skipped: needs login"), "{text}");
        assert!(text.contains("→ fix: polypush devices"), "{text}");
        assert!(text.contains("exit code 5"), "{text}");
        let j = r.to_json();
        assert_eq!(j["ok"], false);
        assert_eq!(j["checks"][4]["skipped"], true);
        assert_eq!(j["checks"][4]["ok"], false);
        assert_eq!(j["checks"][0]["fix"], Value::Null);
    }

    #[test]
    fn not_needed_checks_pass() {
        let r = report(vec![
            Check::pass("config", "valid"),
            Check::not_needed("record", "off"),
        ]);
        assert!(r.ok());
        assert_eq!(r.exit_code(), ExitCode::Ok);
        assert!(r
            .render()
            .contains("all checks passed (1 passed, 1 not needed)"));
    }

    #[test]
    fn probe_file_is_written_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        probe_write(dir.path()).unwrap();
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
        assert!(crate::record::free_bytes(dir.path()).unwrap() > 0);
    }

    #[test]
    fn the_pattern_encodes() {
        let e = encode_frames(
            VideoSettings {
                width: 320,
                height: 240,
                fps: 25,
                bitrate_kbps: 500,
                threads: 1,
                ..VideoSettings::default()
            },
            Some(AudioSettings::default()),
        )
        .unwrap();
        assert!(e.packets >= u64::from(ENCODE_FRAMES), "{}", e.packets);
        assert!(e.first_is_keyframe && e.audio_opened);
    }
}
