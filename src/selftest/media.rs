//! The device and encoder checks (`video`, `audio`, `encoder`): each source opened through the
//! capture code and its frames counted, the configured encoders opened and fed a test pattern.

use std::ops::DerefMut;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ffmpeg_next as ffmpeg;

use super::{blocking, Blocking, Check};
use crate::capture::{
    frame_queue, CaptureClock, CaptureCounters, CaptureError, CaptureOutputs, CaptureThread,
    Captured, FrameSender, Received, SourceInfo, SourceSpec, StopSignal,
};
use crate::config::Config;
use crate::encode::{
    AudioEncoder, AudioSettings, AudioSource, EncodeError, VideoEncoder, VideoSettings, VideoSource,
};
use crate::exit::ExitCode;

/// A source must deliver its first frame within this (opening included).
const FIRST_FRAME_WITHIN: Duration = Duration::from_secs(5);
/// Frames are counted for this long after the first one.
const COUNT_FOR: Duration = Duration::from_secs(1);
/// Frames of the test pattern encoded.
pub(super) const ENCODE_FRAMES: u32 = 10;
/// The encoder check's bound (a hardware encoder may be slow to open).
const ENCODER_LIMIT: Duration = Duration::from_secs(15);

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

pub(super) async fn check_video(cfg: &Config) -> Check {
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

pub(super) async fn check_audio(cfg: &Config) -> Check {
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

pub(super) struct Encoded {
    open: Duration,
    encode: Duration,
    pub(super) packets: u64,
    bytes: u64,
    pub(super) first_is_keyframe: bool,
    pub(super) audio_opened: bool,
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

pub(super) fn encode_frames(
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

pub(super) async fn check_encoder(cfg: &Config) -> Check {
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
