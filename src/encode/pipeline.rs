//! The capture → encode pipeline: one capture thread and one encode thread per track, joined by
//! bounded frame queues, with every encoded packet handed to the caller's sink.
//!
//! Threads: `polypush-capture-video`, `polypush-capture-audio` (or one `polypush-capture-file`
//! when the same file feeds both tracks), `polypush-encode-video`, `polypush-encode-audio`.
//! The sink runs on the encode threads, so it must be quick (push into the ring and return).
//!
//! Start-up is two-phase: every thread opens its device or encoder and reports back; only when
//! all succeeded is `on_ready` called with the [`StreamParams`] (so the caller can queue the
//! sequence headers first), the pipeline clock started, and the capture threads released
//! together. If anything fails to open, everything already opened is closed and the first error
//! is returned; no packet reaches the sink.
//!
//! Shutdown: the caller's stop flag (or [`PipelineHandle::stop_and_join`]) stops the capture
//! threads; each encode thread then drains its queue, flushes the encoder into the sink and
//! exits. A thread that fails, or a source that ends, halts the whole pipeline: the broadcast
//! sees [`PipelineHandle::is_finished`] and collects the error from `stop_and_join`.
//!
//! Device loss is not a failure: a live camera or microphone that goes away mid-broadcast is
//! reopened by its capture thread ([`crate::capture::reconnect`]) and the pipeline goes on. Its
//! track reads [`TrackState::Reconnecting`] ([`PipelineControl::track_state`], [`TrackStats`])
//! and its encode thread keeps it alive on the pipeline clock: video repeats the last picture,
//! darkened, at the configured frame rate on the last frame's grid (`video::StillSchedule`;
//! the GOP goes on), audio continues its sample timeline with silence in 1024-sample frames
//! (`audio::run_audio`). The other track is not touched. Real frames take over as soon as the
//! device delivers again, whatever size or format it comes back with (the encoder scales; it
//! is not reopened). The encode threads therefore never block on their queue for longer than
//! [`IDLE_POLL`].
//!
//! Adaptation: [`PipelineControl::set_video_target`] leaves a [`Target`] for the video encode
//! thread, which applies it before its next frame, captured or still (see `super::target`
//! for when, [`VideoEncoder::reopen`] for how). While the frame rate is divided the thread
//! leaves out captured frames on the frame grid before the encoder
//! ([`TrackStats::frames_decimated`]) and stills follow the divided rate;
//! [`PipelineControl::video_target`] reads what the encoder runs at, and
//! [`TrackStats::encoder_reopens`] counts the reopens.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

use super::snapshot::{PictureError, PictureReply, PictureRequests};
use super::target::{Target, TargetCell};
use super::{AudioEncoder, AudioSettings, EncodeError, VideoEncoder, VideoSettings};
use crate::capture::{
    frame_queue, init_ffmpeg, CaptureClock, CaptureCounters, CaptureError, CaptureOutputs,
    CaptureThread, SourceSpec, StopSignal, Track, TrackState,
};
use crate::health::{HealthSettings, MediaReport};
use crate::media::{AudioParams, EncodedPacket, StreamParams};

mod audio;
mod health;
mod video;

use audio::run_audio;
use video::run_video;

/// Frames queued between video capture and encoder (100 ms at 30 fps). Sources are paced or
/// live, so the queue only absorbs an encoder's hiccup (a keyframe, a busy moment): an encoder
/// slower than the source drops frames whatever the bound. Each queued 720p frame is 1.4 MB
/// (and, from a camera, one of the driver's buffers), so a longer queue only costs memory.
const VIDEO_QUEUE: usize = 3;
/// Audio frames queued (a few hundred ms whatever the device's period size).
const AUDIO_QUEUE: usize = 32;
/// An encode thread without input looks this often whether its device was lost.
pub(super) const IDLE_POLL: Duration = Duration::from_millis(50);

/// What to capture and how to encode it. A track whose source is `None` is absent.
#[derive(Debug, Clone, PartialEq)]
pub struct PipelineConfig {
    pub video_source: Option<SourceSpec>,
    pub audio_source: Option<SourceSpec>,
    pub video_encoder: VideoSettings,
    pub audio_encoder: AudioSettings,
    /// `[health]`: the media-health analysis beside the encoders (see `health`).
    pub health: HealthSettings,
}

/// One track's counters, as a snapshot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TrackStats {
    /// Live, or reconnecting a lost device since when (for the status line and health).
    pub state: TrackState,
    pub frames_captured: u64,
    /// Captured frames dropped because the encoder fell behind (or stamped before start, or,
    /// from a returning camera, older than the still already sent for their time).
    pub frames_dropped: u64,
    /// Source timestamps re-anchored to the pipeline clock.
    pub resyncs: u64,
    /// Times the live device went away mid-broadcast.
    pub device_losses: u64,
    /// Attempts to reopen a lost device, successful or not.
    pub reopen_attempts: u64,
    /// Frames encoded while the device was away: repeated stills (video) or 1024-sample
    /// frames of silence (audio).
    pub frames_filled: u64,
    /// Frames handed to the encoder: captured ones and filled ones.
    pub frames_encoded: u64,
    pub packets: u64,
    pub bytes: u64,
    pub keyframes: u64,
    /// Audio: silence inserted or frames skipped to follow the capture clock.
    pub timeline_corrections: u64,
    /// Video: captured frames left out on purpose while the frame rate is divided.
    pub frames_decimated: u64,
    /// Video: times the encoder was closed and opened again for a new target.
    pub encoder_reopens: u64,
}

/// How the audio timeline follows the capture clock (see `encode::drift`), as a snapshot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AudioSyncStats {
    /// The microphone's measured rate error, thousandths of a ppm (positive: it runs fast);
    /// `None` until measured.
    pub drift_milli_ppm: Option<i64>,
    /// How late audio is stamped against its capture time, µs (positive: audio behind video);
    /// `None` before the first frame.
    pub av_offset_us: Option<i64>,
    /// Gross corrections: silence inserted into the timeline, captured frames skipped.
    pub silence_inserted: u64,
    pub frames_skipped: u64,
}

impl AudioSyncStats {
    pub fn drift_ppm(&self) -> Option<f64> {
        self.drift_milli_ppm.map(|m| m as f64 / 1000.0)
    }

    pub fn av_offset_s(&self) -> Option<f64> {
        self.av_offset_us.map(|us| us as f64 / 1e6)
    }
}

/// The pipeline's counters, as a snapshot (`Copy`, cheap; read it at scrape time).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PipelineStats {
    pub video: TrackStats,
    pub audio: TrackStats,
    /// The audio timeline against the capture clock.
    pub audio_sync: AudioSyncStats,
    /// Threads that ended with an error.
    pub errors: u64,
}

/// A pipeline problem: the first error of whichever part failed.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("nothing to stream: configure a [video] or [audio] source")]
    NoTracks,
    #[error(transparent)]
    Capture(#[from] CaptureError),
    #[error(transparent)]
    Encode(#[from] EncodeError),
    #[error("cannot start thread {name}: {source}")]
    Spawn {
        name: String,
        #[source]
        source: std::io::Error,
    },
    #[error("thread {0} panicked; this is a bug, please report it with the log")]
    Panicked(String),
}

#[derive(Debug, Default)]
struct EncodeCounters {
    frames: AtomicU64,
    filled: AtomicU64,
    packets: AtomicU64,
    bytes: AtomicU64,
    keyframes: AtomicU64,
    corrections: AtomicU64,
    decimated: AtomicU64,
    reopens: AtomicU64,
}

/// [`AudioSyncStats`] shared by the audio encode thread (`i64::MIN`: not measured).
#[derive(Debug)]
struct AudioSyncCell {
    drift_milli_ppm: AtomicI64,
    av_offset_us: AtomicI64,
    silence_inserted: AtomicU64,
    frames_skipped: AtomicU64,
}

impl Default for AudioSyncCell {
    fn default() -> Self {
        Self {
            drift_milli_ppm: AtomicI64::new(i64::MIN),
            av_offset_us: AtomicI64::new(i64::MIN),
            silence_inserted: AtomicU64::new(0),
            frames_skipped: AtomicU64::new(0),
        }
    }
}

impl AudioSyncCell {
    fn store(&self, s: &crate::encode::AudioSync) {
        let opt = |v: Option<f64>, scale: f64| v.map_or(i64::MIN, |v| (v * scale).round() as i64);
        self.drift_milli_ppm
            .store(opt(s.drift_ppm, 1000.0), Ordering::Relaxed);
        self.av_offset_us
            .store(opt(s.av_offset_s, 1e6), Ordering::Relaxed);
        self.silence_inserted
            .store(s.silence_inserted, Ordering::Relaxed);
        self.frames_skipped
            .store(s.frames_skipped, Ordering::Relaxed);
    }

    fn snapshot(&self) -> AudioSyncStats {
        let opt = |v: i64| (v != i64::MIN).then_some(v);
        AudioSyncStats {
            drift_milli_ppm: opt(self.drift_milli_ppm.load(Ordering::Relaxed)),
            av_offset_us: opt(self.av_offset_us.load(Ordering::Relaxed)),
            silence_inserted: self.silence_inserted.load(Ordering::Relaxed),
            frames_skipped: self.frames_skipped.load(Ordering::Relaxed),
        }
    }
}

#[derive(Debug, Default)]
struct Shared {
    video_capture: Arc<CaptureCounters>,
    audio_capture: Arc<CaptureCounters>,
    video_encode: EncodeCounters,
    audio_encode: EncodeCounters,
    errors: AtomicU64,
    /// The pipeline clock, set when capture starts (the encoders fill on it).
    clock: OnceLock<CaptureClock>,
    keyframe_requested: AtomicBool,
    /// A video target not yet taken by the encode thread.
    target_requested: TargetCell,
    /// The video target the encoder runs at (set by the encode thread).
    target_applied: TargetCell,
    /// The pipeline has a video track (pictures can be asked for).
    has_video: bool,
    /// Pictures asked for `/snapshot.jpg`, answered by the video encode thread.
    pictures: PictureRequests,
    /// The audio encoder's drift measurement, offset and gross corrections.
    audio_sync: AudioSyncCell,
    /// Media health as last published by the health thread (written 10 times a second;
    /// never touched by the encode threads).
    media: std::sync::Mutex<Option<MediaReport>>,
}

impl Shared {
    fn encode_counters(&self, track: Track) -> &EncodeCounters {
        match track {
            Track::Video => &self.video_encode,
            Track::Audio => &self.audio_encode,
        }
    }

    fn capture_counters(&self, track: Track) -> &CaptureCounters {
        match track {
            Track::Video => &self.video_capture,
            Track::Audio => &self.audio_capture,
        }
    }

    /// Counts a frame encoded; `filled` when the device was away.
    fn count_frame(&self, track: Track, filled: bool) {
        let c = self.encode_counters(track);
        c.frames.fetch_add(1, Ordering::Relaxed);
        if filled {
            c.filled.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Takes a pending keyframe request.
    fn take_keyframe_request(&self) -> bool {
        self.keyframe_requested.swap(false, Ordering::Relaxed)
    }

    fn count_packet(&self, track: Track, packet: &EncodedPacket) {
        let c = self.encode_counters(track);
        c.packets.fetch_add(1, Ordering::Relaxed);
        c.bytes
            .fetch_add(packet.data.len() as u64, Ordering::Relaxed);
        if track == Track::Video && packet.keyframe {
            c.keyframes.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn snapshot(&self) -> PipelineStats {
        let track = |cap: &CaptureCounters, enc: &EncodeCounters| TrackStats {
            state: cap.state(),
            frames_captured: cap.captured.load(Ordering::Relaxed),
            frames_dropped: cap.dropped.load(Ordering::Relaxed),
            resyncs: cap.resyncs.load(Ordering::Relaxed),
            device_losses: cap.device_losses.load(Ordering::Relaxed),
            reopen_attempts: cap.reopen_attempts.load(Ordering::Relaxed),
            frames_filled: enc.filled.load(Ordering::Relaxed),
            frames_encoded: enc.frames.load(Ordering::Relaxed),
            packets: enc.packets.load(Ordering::Relaxed),
            bytes: enc.bytes.load(Ordering::Relaxed),
            keyframes: enc.keyframes.load(Ordering::Relaxed),
            timeline_corrections: enc.corrections.load(Ordering::Relaxed),
            frames_decimated: enc.decimated.load(Ordering::Relaxed),
            encoder_reopens: enc.reopens.load(Ordering::Relaxed),
        };
        PipelineStats {
            video: track(&self.video_capture, &self.video_encode),
            audio: track(&self.audio_capture, &self.audio_encode),
            audio_sync: self.audio_sync.snapshot(),
            errors: self.errors.load(Ordering::Relaxed),
        }
    }
}

/// A cheap, cloneable remote for a running pipeline (for the RTMP driver and the bitrate
/// controller, which do not own the handle).
#[derive(Debug, Clone)]
pub struct PipelineControl {
    shared: Arc<Shared>,
}

impl PipelineControl {
    /// The next video frame is encoded as an IDR (e.g. after an RTMP reconnect).
    pub fn request_keyframe(&self) {
        self.shared
            .keyframe_requested
            .store(true, Ordering::Relaxed);
    }

    /// Asks the video encoder for `target`: bitrate, frame-rate divisor, size divisor. A
    /// bitrate change alone is applied in place from the next frame where the encoder can
    /// (libx264); anything else reopens the encoder at the next frame, at most once per
    /// [`VideoSettings::min_reopen_interval`] (the latest target wins). See
    /// `super::target` and [`VideoEncoder::reopen`]. Values out of range are clamped.
    pub fn set_video_target(&self, target: Target) {
        self.shared.target_requested.store(target);
    }

    /// [`set_video_target`](Self::set_video_target) with only the bitrate given: the divisors
    /// are those of a request the encode thread has not taken yet, else those the encoder
    /// runs at (so a divisor change waiting for the reopen rate limit is replaced; callers
    /// that use divisors call `set_video_target`).
    pub fn set_video_bitrate(&self, kbps: u32) {
        let current = self
            .shared
            .target_requested
            .load()
            .unwrap_or_else(|| self.video_target());
        self.set_video_target(Target {
            video_kbps: kbps,
            ..current
        });
    }

    /// The video target the encoder runs at (a requested one may still wait for the reopen
    /// rate limit).
    pub fn video_target(&self) -> Target {
        self.shared.target_applied.load().unwrap_or(Target::kbps(0))
    }

    pub fn stats(&self) -> PipelineStats {
        self.shared.snapshot()
    }

    /// Asks the video encode thread for its next picture, scaled `width` wide (see
    /// [`super::snapshot`]): the next captured frame, or the still while the camera is away.
    /// Answered at once when there is no video track or its thread has ended.
    pub fn request_picture(&self, width: u32) -> tokio::sync::oneshot::Receiver<PictureReply> {
        if !self.shared.has_video {
            let (tx, rx) = tokio::sync::oneshot::channel();
            let _ = tx.send(Err(PictureError::NoVideo));
            return rx;
        }
        self.shared.pictures.request(width)
    }

    /// Media health: levels, alarms, picture numbers (`None` before the health thread's first
    /// report, a fraction of a second after start). With `[health] enabled = false`, a report
    /// that says so.
    pub fn media(&self) -> Option<MediaReport> {
        self.shared
            .media
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Whether `track`'s device is delivering or being reconnected (and since when), for a
    /// "reconnecting camera" status. A track the pipeline does not have reads `Live`.
    pub fn track_state(&self, track: Track) -> TrackState {
        self.shared.capture_counters(track).state()
    }
}

/// A running pipeline. Dropping it stops and joins it.
pub struct PipelineHandle {
    params: StreamParams,
    control: PipelineControl,
    signal: StopSignal,
    captures: Vec<CaptureThread>,
    /// The encode threads, then the media-health thread (which ends by itself once the
    /// encode threads are gone, so it is joined last).
    encoders: Vec<(String, JoinHandle<Result<(), EncodeError>>)>,
}

impl PipelineHandle {
    pub fn params(&self) -> &StreamParams {
        &self.params
    }

    pub fn control(&self) -> PipelineControl {
        self.control.clone()
    }

    pub fn stats(&self) -> PipelineStats {
        self.control.stats()
    }

    /// See [`PipelineControl::track_state`].
    pub fn track_state(&self, track: Track) -> TrackState {
        self.control.track_state(track)
    }

    pub fn request_keyframe(&self) {
        self.control.request_keyframe();
    }

    pub fn set_video_bitrate(&self, kbps: u32) {
        self.control.set_video_bitrate(kbps);
    }

    /// See [`PipelineControl::set_video_target`].
    pub fn set_video_target(&self, target: Target) {
        self.control.set_video_target(target);
    }

    /// True once any thread has ended: the pipeline is stopping (stop requested, a source
    /// ended, or something failed). Call [`stop_and_join`](Self::stop_and_join) for the reason.
    pub fn is_finished(&self) -> bool {
        self.captures.iter().any(CaptureThread::is_finished)
            || self.encoders.iter().any(|(_, h)| h.is_finished())
    }

    /// Stops every thread, waits for them (encoders flush into the sink), and returns the
    /// final counters, or the first error any thread ended with.
    /// [`stop_and_join`](Self::stop_and_join) without giving up the handle (to replace it
    /// in place); the handle is inert afterwards.
    pub fn stop_in_place(&mut self) -> Result<PipelineStats, PipelineError> {
        self.shutdown()?;
        Ok(self.stats())
    }

    pub fn stop_and_join(mut self) -> Result<PipelineStats, PipelineError> {
        self.shutdown()?;
        Ok(self.stats())
    }

    fn shutdown(&mut self) -> Result<(), PipelineError> {
        self.signal.halt();
        join_all(
            std::mem::take(&mut self.captures),
            std::mem::take(&mut self.encoders),
        )
    }
}

impl Drop for PipelineHandle {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            tracing::debug!(error = %e, "pipeline ended with an error while being dropped");
        }
    }
}

fn join_all(
    captures: Vec<CaptureThread>,
    encoders: Vec<(String, JoinHandle<Result<(), EncodeError>>)>,
) -> Result<(), PipelineError> {
    let mut first: Option<PipelineError> = None;
    for c in captures {
        if let Err(e) = c.join() {
            first.get_or_insert(e.into());
        }
    }
    for (name, h) in encoders {
        match h.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                first.get_or_insert(e.into());
            }
            Err(_) => {
                first.get_or_insert(PipelineError::Panicked(name));
            }
        }
    }
    first.map_or(Ok(()), Err)
}

/// Opens the sources and encoders of `config` on their threads, calls `on_ready` once with the
/// stream parameters, then starts capturing. `sink` is cloned onto each encode thread and called
/// there for every packet, in order per track. `stop` set by the caller stops the pipeline.
pub fn spawn_pipeline<R, S>(
    config: PipelineConfig,
    stop: Arc<AtomicBool>,
    on_ready: R,
    sink: S,
) -> Result<PipelineHandle, PipelineError>
where
    R: FnOnce(&StreamParams),
    S: FnMut(Track, &EncodedPacket<'_>) + Send + Clone + 'static,
{
    init_ffmpeg();
    if config.video_source.is_none() && config.audio_source.is_none() {
        return Err(PipelineError::NoTracks);
    }
    let signal = StopSignal::new(stop);
    let shared = Arc::new(Shared {
        has_video: config.video_source.is_some(),
        ..Shared::default()
    });
    let mut captures: Vec<CaptureThread> = Vec::new();
    let mut encoders: Vec<(String, JoinHandle<Result<(), EncodeError>>)> = Vec::new();
    let has_video = config.video_source.is_some();
    let has_audio = config.audio_source.is_some();
    let fps = config.video_encoder.fps;
    let (health_tx, health) = if config.health.enabled {
        let (tx, handle) = health::spawn(
            config.health.clone(),
            shared.clone(),
            has_audio,
            has_video,
            fps,
        )
        .map_err(|source| PipelineError::Spawn {
            name: "polypush-media-health".into(),
            source,
        })?;
        (Some(tx), Some(handle))
    } else {
        *shared
            .media
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) =
            Some(MediaReport::disabled(has_audio, has_video, fps));
        (None, None)
    };

    let result = (|| {
        let mut video_out = None;
        let mut audio_out = None;
        let mut video_ready = None;
        let mut audio_ready = None;

        if config.video_source.is_some() {
            let (tx, rx) = frame_queue(VIDEO_QUEUE, shared.video_capture.clone());
            video_out = Some(tx);
            let (ready_tx, ready_rx) = mpsc::sync_channel(1);
            video_ready = Some(ready_rx);
            let settings = config.video_encoder.clone();
            let live = config
                .video_source
                .as_ref()
                .is_some_and(SourceSpec::is_live_device);
            let (shared, signal, mut sink) = (shared.clone(), signal.clone(), sink.clone());
            let tap = health_tx.clone().map(health::LumaTap::new);
            let name = "polypush-encode-video".to_string();
            let handle = std::thread::Builder::new()
                .name(name.clone())
                .spawn(move || {
                    let encoder = match VideoEncoder::open(&settings) {
                        Ok(e) => e,
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return Ok(());
                        }
                    };
                    shared.target_applied.store(encoder.target());
                    let _ = ready_tx.send(Ok(encoder.params()));
                    // A camera can be lost: keep its last picture for the still.
                    let result = run_video(encoder, rx, live, tap, &shared, &mut sink);
                    finish_thread(&shared, &signal, Track::Video, result)
                })
                .map_err(|source| PipelineError::Spawn {
                    name: name.clone(),
                    source,
                })?;
            encoders.push((name, handle));
        }

        if config.audio_source.is_some() {
            let (tx, rx) = frame_queue(AUDIO_QUEUE, shared.audio_capture.clone());
            audio_out = Some(tx);
            let (ready_tx, ready_rx) = mpsc::sync_channel(1);
            audio_ready = Some(ready_rx);
            let settings = config.audio_encoder.clone();
            let (shared, signal, mut sink) = (shared.clone(), signal.clone(), sink.clone());
            let levels = health_tx.clone();
            let name = "polypush-encode-audio".to_string();
            let handle = std::thread::Builder::new()
                .name(name.clone())
                .spawn(move || {
                    let encoder = match AudioEncoder::open(&settings) {
                        Ok(e) => e,
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return Ok(());
                        }
                    };
                    let _ = ready_tx.send(Ok(AudioParams {
                        sample_rate: settings.sample_rate,
                        channels: settings.channels,
                        bitrate_kbps: settings.bitrate_kbps,
                        asc: encoder.extradata().clone(),
                    }));
                    let result = run_audio(encoder, rx, levels, &shared, &mut sink);
                    finish_thread(&shared, &signal, Track::Audio, result)
                })
                .map_err(|source| PipelineError::Spawn {
                    name: name.clone(),
                    source,
                })?;
            encoders.push((name, handle));
        }

        let shared_file = matches!(
            (&config.video_source, &config.audio_source),
            (Some(v @ SourceSpec::File { .. }), Some(a)) if v == a
        );
        if shared_file {
            let outputs = CaptureOutputs {
                video: video_out.take(),
                audio: audio_out.take(),
            };
            let spec = config.video_source.clone().expect("checked above");
            captures.push(CaptureThread::spawn(
                "polypush-capture-file",
                spec,
                outputs,
                signal.clone(),
            )?);
        } else {
            if let Some(spec) = config.video_source.clone() {
                let outputs = CaptureOutputs {
                    video: video_out.take(),
                    audio: None,
                };
                captures.push(CaptureThread::spawn(
                    "polypush-capture-video",
                    spec,
                    outputs,
                    signal.clone(),
                )?);
            }
            if let Some(spec) = config.audio_source.clone() {
                let outputs = CaptureOutputs {
                    video: None,
                    audio: audio_out.take(),
                };
                captures.push(CaptureThread::spawn(
                    "polypush-capture-audio",
                    spec,
                    outputs,
                    signal.clone(),
                )?);
            }
        }

        let mut first_error: Option<PipelineError> = None;
        for c in &mut captures {
            if let Err(e) = c.wait_opened() {
                first_error.get_or_insert(e.into());
            }
        }
        let video = video_ready.map(|rx| rx.recv()).transpose();
        let audio = audio_ready.map(|rx| rx.recv()).transpose();
        let (video, audio) = match (video, audio) {
            (Ok(v), Ok(a)) => (v, a),
            _ => {
                return Err(
                    first_error.unwrap_or(PipelineError::Panicked("an encode thread".into()))
                )
            }
        };
        let video = video.transpose().map_err(PipelineError::from);
        let audio = audio.transpose().map_err(PipelineError::from);
        match (first_error, video, audio) {
            (Some(e), _, _) | (None, Err(e), _) | (None, _, Err(e)) => Err(e),
            (None, Ok(video), Ok(audio)) => Ok(StreamParams { video, audio }),
        }
    })();

    // The encode threads hold the only senders now: the health thread ends with them.
    drop(health_tx);
    match result {
        Ok(params) => {
            if let Some(h) = health {
                encoders.push(("polypush-media-health".into(), h));
            }
            on_ready(&params);
            let clock = CaptureClock::start_now();
            let _ = shared.clock.set(clock);
            for c in &mut captures {
                c.start(clock);
            }
            tracing::info!(
                video = params.video.is_some(),
                audio = params.audio.is_some(),
                "pipeline started"
            );
            Ok(PipelineHandle {
                params,
                control: PipelineControl { shared },
                signal,
                captures,
                encoders,
            })
        }
        Err(e) => {
            signal.halt();
            let _ = join_all(captures, encoders);
            Err(e)
        }
    }
}

/// Records how an encode thread ended and halts the rest of the pipeline.
fn finish_thread(
    shared: &Shared,
    signal: &StopSignal,
    track: Track,
    result: Result<(), EncodeError>,
) -> Result<(), EncodeError> {
    if let Err(e) = &result {
        shared.errors.fetch_add(1, Ordering::Relaxed);
        tracing::error!(%track, error = %e, "encoder failed; stopping the pipeline");
    }
    signal.halt();
    result
}
