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
//! darkened, at the configured frame rate on the last frame's grid ([`StillSchedule`]; the GOP
//! goes on), audio continues its sample timeline with silence in 1024-sample frames. The other
//! track is not touched. Real frames take over as soon as the device delivers again, whatever
//! size or format it comes back with (the encoder scales; it is not reopened). The encode
//! threads therefore never block on their queue for longer than [`IDLE_POLL`].
//!
//! Adaptation: [`PipelineControl::set_video_target`] leaves a [`Target`] for the video encode
//! thread, which applies it before its next frame, captured or still (see [`super::target`]
//! for when, [`VideoEncoder::reopen`] for how). While the frame rate is divided the thread
//! leaves out captured frames on the frame grid before the encoder
//! ([`TrackStats::frames_decimated`]) and stills follow the divided rate;
//! [`PipelineControl::video_target`] reads what the encoder runs at, and
//! [`TrackStats::encoder_reopens`] counts the reopens.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::target::{Decimator, Step, Target, TargetCell, TargetGate};
use super::{AudioEncoder, AudioSettings, EncodeError, Reopened, VideoEncoder, VideoSettings};
use crate::capture::{
    frame_queue, init_ffmpeg, CaptureClock, CaptureCounters, CaptureError, CaptureOutputs,
    CaptureThread, Received, SourceSpec, StopSignal, Track, TrackState,
};
use crate::media::{AudioParams, EncodedPacket, StreamParams};

/// Frames queued between video capture and encoder (100 ms at 30 fps). Sources are paced or
/// live, so the queue only absorbs an encoder's hiccup (a keyframe, a busy moment): an encoder
/// slower than the source drops frames whatever the bound. Each queued 720p frame is 1.4 MB
/// (and, from a camera, one of the driver's buffers), so a longer queue only costs memory.
const VIDEO_QUEUE: usize = 3;
/// Audio frames queued (a few hundred ms whatever the device's period size).
const AUDIO_QUEUE: usize = 32;
/// An encode thread without input looks this often whether its device was lost.
pub const IDLE_POLL: Duration = Duration::from_millis(50);
/// While filling, the audio encode thread tops up the silence this often (about a frame).
const SILENCE_TICK: Duration = Duration::from_millis(20);
/// Silence is filled up to this far behind the clock: a microphone's frames are stamped with
/// the time of their first sample, a period or so before they are read, so a returning
/// microphone lands just after the silence rather than before it.
const SILENCE_LAG_US: i64 = 10_000;
/// A still schedule further behind the clock than this skips ahead instead of catching up.
pub const MAX_STILL_CATCHUP_US: i64 = 3_000_000;

/// What to capture and how to encode it. A track whose source is `None` is absent.
#[derive(Debug, Clone, PartialEq)]
pub struct PipelineConfig {
    pub video_source: Option<SourceSpec>,
    pub audio_source: Option<SourceSpec>,
    pub video_encoder: VideoSettings,
    pub audio_encoder: AudioSettings,
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

/// The pipeline's counters, as a snapshot (`Copy`, cheap; read it at scrape time).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PipelineStats {
    pub video: TrackStats,
    pub audio: TrackStats,
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
    /// [`super::target`] and [`VideoEncoder::reopen`]. Values out of range are clamped.
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
    let shared = Arc::new(Shared::default());
    let mut captures: Vec<CaptureThread> = Vec::new();
    let mut encoders: Vec<(String, JoinHandle<Result<(), EncodeError>>)> = Vec::new();

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
                    let result = run_video(encoder, rx, live, &shared, &mut sink);
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
                    let result = run_audio(encoder, rx, &shared, &mut sink);
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

    match result {
        Ok(params) => {
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

/// The video encode loop: captured frames as they come; while the camera is reconnecting, the
/// still picture on the last frame's grid.
///
/// With `keep_last` (a camera, which can be lost) the last picture is kept for the still: a
/// converted one is in the encoder already; one encoded as is is kept here by reference (not
/// recycled, so still counted in flight) rather than copied every frame, and copied once into
/// the encoder when it must be given back (the capture side is closing the device: lost or
/// stopping) or when the stills begin.
fn run_video<S>(
    mut encoder: VideoEncoder,
    rx: crate::capture::FrameReceiver<ffmpeg_next::frame::Video>,
    keep_last: bool,
    shared: &Shared,
    sink: &mut S,
) -> Result<(), EncodeError>
where
    S: FnMut(Track, &EncodedPacket<'_>),
{
    // The last frame encoded as is, kept for the still (`keep_last`).
    let mut kept: Option<ffmpeg_next::frame::Video> = None;
    let result = video_loop(&mut encoder, &rx, keep_last, &mut kept, shared, sink);
    // Whatever happened, a kept frame goes back (it may be a device buffer).
    if let Some(frame) = kept.take() {
        rx.recycle(frame);
    }
    result
}

/// The loop of [`run_video`], flush included.
fn video_loop<S>(
    encoder: &mut VideoEncoder,
    rx: &crate::capture::FrameReceiver<ffmpeg_next::frame::Video>,
    keep_last: bool,
    kept: &mut Option<ffmpeg_next::frame::Video>,
    shared: &Shared,
    sink: &mut S,
) -> Result<(), EncodeError>
where
    S: FnMut(Track, &EncodedPacket<'_>),
{
    let mut on_packet = |packet: &EncodedPacket<'_>| {
        shared.count_packet(Track::Video, packet);
        sink(Track::Video, packet);
    };
    let mut control = VideoControl::new(encoder);
    let mut last_pts_us: Option<i64> = None;
    let mut stills: Option<StillSchedule> = None;
    // The time of the last still while no real frame has followed it yet.
    let mut last_still_us: Option<i64> = None;
    // Copies the kept frame into the encoder and gives it back.
    let give_back = |kept: &mut Option<ffmpeg_next::frame::Video>,
                     encoder: &mut VideoEncoder|
     -> Result<(), EncodeError> {
        match kept.take() {
            Some(frame) => {
                let result = encoder.remember_picture(&frame);
                rx.recycle(frame);
                result
            }
            None => Ok(()),
        }
    };
    loop {
        if rx.return_requested() {
            give_back(kept, encoder)?;
        }
        let timeout = match (&stills, shared.clock.get()) {
            (Some(s), Some(clock)) => s
                .wait(clock.now_us())
                .clamp(Duration::from_millis(1), IDLE_POLL),
            _ => IDLE_POLL,
        };
        match rx.recv_timeout(timeout) {
            Received::Frame(mut frame) => {
                if last_still_us.is_some_and(|still| frame.pts_us <= still) {
                    // Captured before a still already sent for its time (a returning camera's
                    // buffered frames): too late to show.
                    rx.recycle(frame.frame);
                    shared.video_capture.dropped.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                last_still_us = None;
                if stills.take().is_some() {
                    tracing::debug!("video: captured frames again, stills end");
                }
                if !control
                    .decimator
                    .keep(frame.pts_us, encoder.target().fps_divisor)
                {
                    // The frame rate is divided: left out, its timestamp with it.
                    rx.recycle(frame.frame);
                    shared
                        .video_encode
                        .decimated
                        .fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let result = control
                    .before_frame(encoder, shared, &mut on_packet)
                    .and_then(|force| encoder.encode(&mut frame, force, &mut on_packet));
                last_pts_us = Some(frame.pts_us);
                let stale = if keep_last && result.is_ok() && encoder.encoded_as_is() {
                    kept.replace(frame.frame)
                } else {
                    rx.recycle(frame.frame);
                    kept.take()
                };
                if let Some(stale) = stale {
                    rx.recycle(stale);
                }
                result?;
                shared.count_frame(Track::Video, false);
                continue;
            }
            Received::Timeout => {}
            Received::Closed => break,
        }
        let Some(clock) = shared.clock.get() else {
            continue;
        };
        if stills.is_none() && shared.video_capture.state().is_reconnecting() {
            give_back(kept, encoder)?;
            encoder.prepare_still()?;
            let (num, den) = encoder.frame_rate();
            stills = Some(StillSchedule::with_rate(
                last_pts_us.unwrap_or_else(|| clock.now_us()),
                num,
                den,
            ));
        }
        if let Some(schedule) = stills.as_mut() {
            while let Some(pts_us) = schedule.due(clock.now_us()) {
                let force = control.before_frame(encoder, shared, &mut on_packet)?;
                encoder.encode_still(pts_us, force, &mut on_packet)?;
                last_pts_us = Some(pts_us);
                last_still_us = Some(pts_us);
                shared.count_frame(Track::Video, true);
                let (num, den) = encoder.frame_rate();
                if schedule.rate() != (num, den) {
                    // Reopened at another frame rate: the grid goes on from this still.
                    *schedule = StillSchedule::with_rate(pts_us, num, den);
                }
            }
        }
    }
    encoder.flush(&mut on_packet)
}

/// The video encode thread's side of [`PipelineControl`]: keyframe requests, the target
/// ([`TargetGate`]: in place, or a rate-limited reopen) and frame-rate division.
struct VideoControl {
    gate: TargetGate,
    decimator: Decimator,
    warned: bool,
}

impl VideoControl {
    fn new(encoder: &VideoEncoder) -> Self {
        let settings = encoder.settings();
        Self {
            gate: TargetGate::new(
                encoder.target(),
                settings.changes_rate_in_place(),
                settings.min_reopen_interval,
                Instant::now(),
            ),
            decimator: Decimator::new(settings.fps),
            warned: false,
        }
    }

    /// Before each frame: applies a target that is due (a reopen flushes the old encoder's
    /// last packets into `on_packet`). Returns whether the frame must be an IDR.
    fn before_frame(
        &mut self,
        encoder: &mut VideoEncoder,
        shared: &Shared,
        on_packet: &mut dyn FnMut(&EncodedPacket<'_>),
    ) -> Result<bool, EncodeError> {
        if let Some(target) = shared.target_requested.take() {
            self.gate.request(target);
        }
        match self.gate.poll(Instant::now()) {
            Step::Keep => {}
            Step::InPlace(kbps) => {
                if let Err(e) = encoder.set_bitrate(kbps) {
                    // Not reached: the gate asks only encoders that can.
                    if !std::mem::replace(&mut self.warned, true) {
                        tracing::warn!(error = %e, "bitrate change ignored");
                    }
                    self.gate.refused(encoder.target());
                }
                shared.target_applied.store(encoder.target());
            }
            Step::Reopen(target) => {
                let running = encoder.target();
                shared.video_encode.reopens.fetch_add(1, Ordering::Relaxed);
                if let Reopened::Refused(e) = encoder.reopen(target, on_packet)? {
                    tracing::warn!(
                        error = %e,
                        kbps = target.video_kbps,
                        fps_divisor = target.fps_divisor,
                        scale_divisor = target.scale_divisor,
                        "the video encoder refused the new target and goes on as it was"
                    );
                    self.gate.refused(running);
                }
                shared.target_applied.store(encoder.target());
            }
        }
        Ok(shared.take_keyframe_request())
    }
}

/// The audio encode loop: captured frames as they come; while the microphone is reconnecting,
/// silence up to the clock.
fn run_audio<S>(
    mut encoder: AudioEncoder,
    rx: crate::capture::FrameReceiver<ffmpeg_next::frame::Audio>,
    shared: &Shared,
    sink: &mut S,
) -> Result<(), EncodeError>
where
    S: FnMut(Track, &EncodedPacket<'_>),
{
    let mut on_packet = |packet: &EncodedPacket<'_>| {
        shared.count_packet(Track::Audio, packet);
        sink(Track::Audio, packet);
    };
    let mut filling = false;
    loop {
        let timeout = if filling { SILENCE_TICK } else { IDLE_POLL };
        match rx.recv_timeout(timeout) {
            Received::Frame(frame) => {
                if std::mem::take(&mut filling) {
                    tracing::debug!("audio: captured frames again, silence ends");
                }
                let result = encoder.encode(&frame, &mut on_packet);
                rx.recycle(frame.frame);
                result?;
                shared.count_frame(Track::Audio, false);
                shared
                    .audio_encode
                    .corrections
                    .store(encoder.corrections(), Ordering::Relaxed);
                continue;
            }
            Received::Timeout => {}
            Received::Closed => break,
        }
        let Some(clock) = shared.clock.get() else {
            continue;
        };
        if !filling && shared.audio_capture.state().is_reconnecting() {
            filling = true;
        }
        if filling {
            let frames = encoder.fill_silence(clock.now_us() - SILENCE_LAG_US, &mut on_packet)?;
            for _ in 0..frames {
                shared.count_frame(Track::Audio, true);
            }
        }
    }
    encoder.flush(&mut on_packet)
}

/// When to encode the still picture while a camera is away. Pure: `now_us` is an argument.
///
/// Stills continue the last frame's grid (`last + k / fps`), so the video timeline goes on
/// without a gap or a phase jump and a reopened paced source lands on the same grid (see
/// [`crate::capture::clock`]). Each still is encoded half a frame after its time, so that a
/// real frame for the same slot wins. Further behind than [`MAX_STILL_CATCHUP_US`] (the loss
/// was noticed late: a device that stalled), the grid skips ahead rather than bursting.
#[derive(Debug, Clone)]
pub struct StillSchedule {
    base_us: i64,
    /// Frame rate `num / den` frames per second.
    num: i64,
    den: i64,
    /// Index of the next still on the grid (the last frame is 0).
    next: i64,
}

impl StillSchedule {
    pub fn new(last_pts_us: i64, fps: u32) -> Self {
        Self::with_rate(last_pts_us, fps, 1)
    }

    /// At `num / den` frames per second (a divided frame rate).
    pub fn with_rate(last_pts_us: i64, num: u32, den: u32) -> Self {
        Self {
            base_us: last_pts_us,
            num: i64::from(num.max(1)),
            den: i64::from(den.max(1)),
            next: 1,
        }
    }

    /// The frame rate as `(num, den)`.
    pub fn rate(&self) -> (u32, u32) {
        (self.num as u32, self.den as u32)
    }

    fn slot(&self, k: i64) -> i64 {
        self.base_us + k * 1_000_000 * self.den / self.num
    }

    fn half_frame_us(&self) -> i64 {
        500_000 * self.den / self.num
    }

    /// The time of the next still if it is due at `now_us` (call until `None`).
    pub fn due(&mut self, now_us: i64) -> Option<i64> {
        let slot = self.slot(self.next);
        if now_us < slot + self.half_frame_us() {
            return None;
        }
        if now_us - slot > MAX_STILL_CATCHUP_US {
            // The latest grid point not after now.
            self.next =
                ((now_us - self.base_us) * self.num / (1_000_000 * self.den)).max(self.next);
        }
        let slot = self.slot(self.next);
        self.next += 1;
        Some(slot)
    }

    /// How long until the next still is due.
    pub fn wait(&self, now_us: i64) -> Duration {
        let until = self.slot(self.next) + self.half_frame_us() - now_us;
        Duration::from_micros(u64::try_from(until).unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stills_continue_the_frame_grid_half_a_frame_late() {
        let mut s = StillSchedule::new(1_000_000, 25);
        // The next slot is 1.04 s, encoded from 1.06 s on.
        assert_eq!(s.due(1_050_000), None);
        assert_eq!(s.wait(1_050_000), Duration::from_millis(10));
        assert_eq!(s.due(1_060_000), Some(1_040_000));
        assert_eq!(s.due(1_060_000), None);
        // Woken late: every overdue slot, in order.
        let mut slots = Vec::new();
        while let Some(t) = s.due(1_200_000) {
            slots.push(t);
        }
        assert_eq!(slots, [1_080_000, 1_120_000, 1_160_000]);
        // 1.2 s is next, at 1.22 s.
        assert_eq!(s.wait(1_200_000), Duration::from_millis(20));
        assert_eq!(s.wait(1_300_000), Duration::ZERO);
    }

    #[test]
    fn stills_at_30_fps_do_not_drift() {
        let mut s = StillSchedule::new(0, 30);
        let mut last = 0;
        for k in 1..=3000i64 {
            let t = s.due(k * 1_000_000 / 30 + 20_000).unwrap();
            assert_eq!(t, k * 1_000_000 / 30);
            assert!((33_333..=33_334).contains(&(t - last)));
            last = t;
        }
        assert_eq!(last, 100_000_000, "100 s later, exactly");
    }

    #[test]
    fn stills_skip_ahead_when_far_behind() {
        let mut s = StillSchedule::new(0, 25);
        // Noticed 10 s late: no burst of 250 frames, the grid resumes near now.
        let t = s.due(10_000_000).unwrap();
        assert_eq!(t, 10_000_000);
        assert_eq!(s.due(10_000_000), None);
        assert_eq!(s.due(10_060_000), Some(10_040_000));
        // A moderate delay is caught up (no gap).
        let mut s = StillSchedule::new(0, 25);
        let n = std::iter::from_fn(|| s.due(2_000_000)).count();
        assert_eq!(n, 49);
    }
}
