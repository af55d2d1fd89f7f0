//! The capture thread: open the source, then read packets, decode, timestamp, pace and hand
//! frames to the encode threads until stopped (test patterns skip the packets: their frames
//! come straight from a filter graph, see [`super::graph`]). A live device that fails is closed
//! and reopened here ([`super::reconnect`] has the schedule and the state the encoders see).

use std::ops::DerefMut;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use ffmpeg::packet::Mut as _;
use ffmpeg::{media, Rational, Rescale};
use ffmpeg_next as ffmpeg;

use super::clock::{ClockMode, TimestampMapper};
use super::devices::{list_devices, list_microphones};
use super::graph::SinkGraph;
use super::input::{self, InputRequest, OpenedInput, StopSignal};
use super::queue::{CaptureCounters, Captured, FrameSender, Offer};
use super::reconnect::{reopen_delay, Fault, TrackState, LIVE_STALL};
use super::{CaptureClock, CaptureError, CaptureOutputs, SourceInfo, SourceSpec, Track};

/// A device that delivers nothing for this long after being opened is reported as stalled.
const STALL_TIMEOUT: Duration = Duration::from_secs(5);
/// Poll interval while a non-blocking device has no data (`EAGAIN`).
const EAGAIN_RETRY: Duration = Duration::from_millis(2);
/// Longest single sleep while pacing or waiting to reopen, so a stop request is seen promptly.
const PACE_SLICE: Duration = Duration::from_millis(20);
/// Closing a live device waits this long for the encoder to give back the frames it holds
/// (they may point into the device's buffers).
const RETURN_TIMEOUT: Duration = Duration::from_secs(2);
/// While a lost device stays away, a reminder is logged this often.
const STILL_AWAY_REMINDER: Duration = Duration::from_secs(60);

const MICROS: Rational = Rational(1, 1_000_000);

/// How a track's frames are timed.
struct Timing {
    track: Track,
    time_base: Rational,
    /// Used when a video frame carries no duration.
    default_duration_us: i64,
    /// Source end time (timestamp + duration) of the last frame, including the loop offset.
    last_end_us: Option<i64>,
    /// Pipeline time at which the next frame is expected (the last one's time + duration).
    next_due_us: Option<i64>,
}

impl Timing {
    fn new(track: Track, time_base: Rational, frame_rate: Rational) -> Self {
        let default_duration_us = if frame_rate.numerator() > 0 && frame_rate.denominator() > 0 {
            1_000_000 * i64::from(frame_rate.denominator()) / i64::from(frame_rate.numerator())
        } else {
            40_000
        };
        Self {
            track,
            time_base,
            default_duration_us,
            last_end_us: None,
            next_due_us: None,
        }
    }
}

/// A demuxed stream and its decoder.
struct StreamState {
    index: usize,
    timing: Timing,
    decoder: ffmpeg::decoder::Opened,
}

/// Where an open source's frames come from.
enum Feed {
    /// A device or file: packets from the demuxer, decoded. The decoders are declared first so
    /// they are closed before the input whose packets they may reference.
    Demuxer {
        streams: Vec<StreamState>,
        input: OpenedInput,
    },
    /// A test pattern: frames straight from the filter graph's sink.
    Graph { graph: SinkGraph, timing: Timing },
}

/// An open input: what exists while the device is there.
pub(super) struct Source {
    feed: Feed,
    /// Frames handed on since this input was opened.
    delivered: u64,
    /// When the input last returned a packet (or was opened).
    last_data: Instant,
}

/// A lost live device: when it went and when to try it again.
struct Outage {
    since: Instant,
    /// Reopen attempts made so far.
    attempts: u32,
    next_attempt: Instant,
    last_reminder: Instant,
}

/// The capture side of a track's device.
enum Device {
    /// Open and delivering.
    Live(Source),
    /// Lost; waiting for the next reopen attempt.
    Down(Outage),
    /// Reopened; back once it delivers a frame, lost again (a failed attempt) if it fails first.
    Reopened(Source, Outage),
}

/// How to open a source: the libavformat request without the borrowed parts.
struct Plan {
    url: String,
    format: Option<&'static str>,
    options: Vec<(&'static str, String)>,
    mode: ClockMode,
    /// Non-blocking device: `EAGAIN` is polled and end of stream is an error.
    is_device: bool,
    looped: bool,
    /// `url` is a filter graph read at its sink (test patterns; see [`super::graph`]).
    filter_graph: bool,
}

pub(super) struct Worker {
    what: String,
    /// The source without the test seam's wrapper; reopened from this.
    spec: SourceSpec,
    outputs: CaptureOutputs,
    mapper: TimestampMapper,
    signal: StopSignal,
    /// Files: loop on EOF instead of ending.
    looped: bool,
    /// Devices: EOF is an error, EAGAIN is polled.
    is_device: bool,
    /// A live device: a failure mid-broadcast is a loss to wait out, not an error.
    live: bool,
    /// The test seam (`SourceSpec::Faulty`).
    fault: Option<Fault>,
    // Looping state (source microseconds).
    loop_offset_us: i64,
    file_start_us: Option<i64>,
    max_end_us: i64,
    frames_this_pass: u64,
    last_resync_log: Option<Instant>,
    last_drop_log: Option<Instant>,
}

/// Whether the read loop goes on after delivering frames.
enum Flow {
    Continue,
    Stop,
}

impl Worker {
    /// Opens the source for the requested outputs. Runs on the capture thread.
    pub(super) fn open(
        spec: &SourceSpec,
        outputs: CaptureOutputs,
        signal: StopSignal,
    ) -> Result<(Self, Source, SourceInfo), CaptureError> {
        let fault = match spec {
            SourceSpec::Faulty {
                fail_after,
                down_for,
                ..
            } => Some(Fault::new(*fail_after, *down_for)),
            _ => None,
        };
        let live = spec.is_live_device();
        let spec = spec.base().clone();
        let what = spec.describe();
        let plan = plan(&spec, true)?;
        let wants = (outputs.video.is_some(), outputs.audio.is_some());
        let (source, info) = open_source(&spec, &plan, wants, &signal)?;
        Ok((
            Self {
                what,
                spec,
                outputs,
                mapper: TimestampMapper::new(plan.mode),
                signal,
                looped: plan.looped,
                is_device: plan.is_device,
                live,
                fault,
                loop_offset_us: 0,
                file_start_us: None,
                max_end_us: 0,
                frames_this_pass: 0,
                last_resync_log: None,
                last_drop_log: None,
            },
            source,
            info,
        ))
    }

    /// The read loop. Returns `Ok` on stop, on the encoders going away, or at the end of a
    /// file that is not looped. A live device that fails is reopened until it comes back.
    pub(super) fn run(mut self, source: Source, clock: CaptureClock) -> Result<(), CaptureError> {
        let mut packet = ffmpeg::Packet::empty();
        let mut device = Device::Live(source);
        loop {
            if self.signal.is_set() {
                if let Device::Live(src) | Device::Reopened(src, _) = device {
                    self.close(src);
                }
                return Ok(());
            }
            device = match device {
                Device::Live(mut src) => match self.step(&mut src, &mut packet, &clock) {
                    Ok(Flow::Continue) => Device::Live(src),
                    Ok(Flow::Stop) => {
                        self.close(src);
                        return Ok(());
                    }
                    Err(e) => {
                        let delivered = src.delivered;
                        self.close(src);
                        // A device that never delivered is a start-up problem: report it.
                        if !self.live || delivered == 0 {
                            return Err(e);
                        }
                        Device::Down(self.lose(&e))
                    }
                },
                Device::Reopened(mut src, outage) => {
                    match self.step(&mut src, &mut packet, &clock) {
                        Ok(Flow::Continue) if src.delivered > 0 => {
                            self.back(&outage);
                            Device::Live(src)
                        }
                        Ok(Flow::Continue) => Device::Reopened(src, outage),
                        Ok(Flow::Stop) => {
                            self.close(src);
                            return Ok(());
                        }
                        Err(e) => {
                            self.close(src);
                            Device::Down(self.retry_later(outage, &e))
                        }
                    }
                }
                Device::Down(outage) => match self.reopen_when_due(outage) {
                    Some(device) => device,
                    None => return Ok(()),
                },
            };
        }
    }

    /// Reads one packet and delivers the frames it decodes to (a test pattern: one frame).
    fn step(
        &mut self,
        src: &mut Source,
        packet: &mut ffmpeg::Packet,
        clock: &CaptureClock,
    ) -> Result<Flow, CaptureError> {
        let injected = self
            .fault
            .as_mut()
            .and_then(|f| f.on_read(clock.now_us(), Instant::now()));
        let input = match (&mut src.feed, injected) {
            (_, Some(source)) => {
                return Err(CaptureError::Read {
                    what: self.what.clone(),
                    source,
                })
            }
            (Feed::Graph { .. }, None) => return self.pull_graph(src, clock),
            (Feed::Demuxer { input, .. }, None) => input,
        };
        match packet.read(&mut input.ctx) {
            Ok(()) => {
                src.last_data = Instant::now();
                let index = packet.stream();
                let flow = match streams(src).iter().position(|s| s.index == index) {
                    Some(si) => self.decode_packet(src, si, Some(packet), clock),
                    None => Ok(Flow::Continue),
                };
                // SAFETY: the packet is ours; unref releases its buffer (which may be a
                // device buffer) before the next read, whatever the decoder said.
                unsafe { ffmpeg::ffi::av_packet_unref(packet.as_mut_ptr()) };
                flow
            }
            Err(ffmpeg::Error::Other { errno }) if errno == libc::EAGAIN => {
                let limit = if self.live && src.delivered > 0 {
                    LIVE_STALL
                } else {
                    STALL_TIMEOUT
                };
                if src.last_data.elapsed() > limit {
                    return Err(CaptureError::Stalled {
                        what: self.what.clone(),
                        seconds: limit.as_secs(),
                    });
                }
                std::thread::sleep(EAGAIN_RETRY);
                Ok(Flow::Continue)
            }
            Err(ffmpeg::Error::Exit) => Ok(Flow::Stop),
            Err(ffmpeg::Error::InvalidData) => {
                tracing::debug!(source = %self.what, "skipping a corrupt packet");
                Ok(Flow::Continue)
            }
            Err(ffmpeg::Error::Eof) => {
                for si in 0..streams(src).len() {
                    if let Flow::Stop = self.decode_packet(src, si, None, clock)? {
                        return Ok(Flow::Stop);
                    }
                }
                if self.is_device {
                    return Err(CaptureError::Ended {
                        what: self.what.clone(),
                    });
                }
                if !self.looped {
                    tracing::info!(source = %self.what, "end of input");
                    return Ok(Flow::Stop);
                }
                self.rewind(src)?;
                Ok(Flow::Continue)
            }
            Err(source) => Err(CaptureError::Read {
                what: self.what.clone(),
                source,
            }),
        }
    }

    /// The counters of the tracks this thread feeds.
    fn counters(&self) -> impl Iterator<Item = &CaptureCounters> {
        let video = self.outputs.video.as_ref().map(|s| s.counters());
        let audio = self.outputs.audio.as_ref().map(|s| s.counters());
        video.into_iter().chain(audio)
    }

    /// `camera` or `microphone`, for the operator.
    fn noun(&self) -> &'static str {
        if self.outputs.video.is_some() {
            "camera"
        } else {
            "microphone"
        }
    }

    /// A live device just failed: mark its tracks as reconnecting and schedule the first
    /// reopen attempt.
    fn lose(&self, error: &CaptureError) -> Outage {
        let now = Instant::now();
        for c in self.counters() {
            c.device_losses.fetch_add(1, Ordering::Relaxed);
            c.set_state(TrackState::Reconnecting { since: now });
        }
        let filler = if self.outputs.video.is_some() {
            "the last picture, darkened"
        } else {
            "silence"
        };
        tracing::warn!(
            source = %self.what,
            error = %error,
            "{} lost; reopening it, the broadcast goes on with {filler} meanwhile",
            self.noun()
        );
        Outage {
            since: now,
            attempts: 0,
            next_attempt: now + reopen_delay(0),
            last_reminder: now,
        }
    }

    /// A reopen attempt failed (or the reopened device failed before delivering a frame).
    fn retry_later(&self, mut outage: Outage, error: &CaptureError) -> Outage {
        let now = Instant::now();
        outage.next_attempt = now + reopen_delay(outage.attempts);
        tracing::debug!(
            source = %self.what,
            attempt = outage.attempts,
            error = %error,
            "reopen failed"
        );
        if now.duration_since(outage.last_reminder) >= STILL_AWAY_REMINDER {
            outage.last_reminder = now;
            tracing::warn!(
                source = %self.what,
                attempts = outage.attempts,
                error = %error,
                "{} still away after {} s; check that it is plugged in (`polypush devices`)",
                self.noun(),
                now.duration_since(outage.since).as_secs()
            );
        }
        outage
    }

    /// The reopened device delivered: the track is live again.
    fn back(&self, outage: &Outage) {
        for c in self.counters() {
            c.set_state(TrackState::Live);
        }
        tracing::info!(
            source = %self.what,
            attempts = outage.attempts,
            "{} back after {:.1} s",
            self.noun(),
            outage.since.elapsed().as_secs_f64()
        );
    }

    /// Sleeps until the next attempt is due, then tries; `None` if stopped meanwhile.
    fn reopen_when_due(&mut self, mut outage: Outage) -> Option<Device> {
        loop {
            if self.signal.is_set() {
                return None;
            }
            let now = Instant::now();
            if now >= outage.next_attempt {
                break;
            }
            std::thread::sleep((outage.next_attempt - now).min(PACE_SLICE));
        }
        outage.attempts += 1;
        for c in self.counters() {
            c.reopen_attempts.fetch_add(1, Ordering::Relaxed);
        }
        let opened = match self.fault.as_mut().and_then(|f| f.on_open(Instant::now())) {
            Some(source) => Err(CaptureError::Open {
                what: self.what.clone(),
                source,
            }),
            None => plan(&self.spec, false).and_then(|plan| {
                let wants = (self.outputs.video.is_some(), self.outputs.audio.is_some());
                open_source(&self.spec, &plan, wants, &self.signal)
            }),
        };
        match opened {
            Ok((src, info)) => {
                tracing::debug!(
                    source = %self.what,
                    video = ?info.video,
                    audio = ?info.audio,
                    "reopened; waiting for the first frame"
                );
                self.mapper.restart_input();
                Some(Device::Reopened(src, outage))
            }
            Err(e) => Some(Device::Down(self.retry_later(outage, &e))),
        }
    }

    /// Closes an input. A live device's frames may still be queued or in the encoder, pointing
    /// into the device's buffers (V4L2 hands out its mmap buffers without copying), so wait
    /// for the encoder to give them back first; should it not (it is stuck), the input is
    /// leaked rather than unmapped under it.
    fn close(&self, src: Source) {
        if !self.live {
            return;
        }
        let returned = [
            self.outputs
                .video
                .as_ref()
                .map(|s| s.wait_returned(RETURN_TIMEOUT)),
            self.outputs
                .audio
                .as_ref()
                .map(|s| s.wait_returned(RETURN_TIMEOUT)),
        ]
        .into_iter()
        .all(|r| r.unwrap_or(true));
        if !returned && matches!(self.spec, SourceSpec::V4l2 { .. }) {
            tracing::warn!(
                source = %self.what,
                "the encoder did not give back the camera's frames within {} s; leaving the device open rather than unmapping buffers in use",
                RETURN_TIMEOUT.as_secs()
            );
            if let Feed::Demuxer { streams, input } = src.feed {
                drop(streams);
                std::mem::forget(input);
            }
        }
    }

    /// Seeks a looped file back to its start; timestamps continue after the longest track.
    fn rewind(&mut self, src: &mut Source) -> Result<(), CaptureError> {
        if self.frames_this_pass == 0 {
            return Err(CaptureError::Ended {
                what: self.what.clone(),
            });
        }
        self.frames_this_pass = 0;
        let Feed::Demuxer { streams, input } = &mut src.feed else {
            return Err(CaptureError::Ended {
                what: self.what.clone(),
            });
        };
        for s in streams.iter_mut() {
            s.decoder.flush();
        }
        self.loop_offset_us = self.max_end_us - self.file_start_us.unwrap_or(0);
        input.ctx.seek(0, ..).map_err(|source| CaptureError::Read {
            what: format!("{} (seeking back to the start to loop)", self.what),
            source,
        })?;
        tracing::debug!(source = %self.what, offset_us = self.loop_offset_us, "looping");
        Ok(())
    }

    /// Sends a packet (or end of stream) to stream `si`'s decoder and delivers every frame.
    fn decode_packet(
        &mut self,
        src: &mut Source,
        si: usize,
        packet: Option<&ffmpeg::Packet>,
        clock: &CaptureClock,
    ) -> Result<Flow, CaptureError> {
        let stream = &mut streams(src)[si];
        let sent = match packet {
            Some(p) => stream.decoder.send_packet(p),
            None => stream.decoder.send_eof(),
        };
        match sent {
            Ok(()) => {}
            Err(ffmpeg::Error::InvalidData) => return Ok(Flow::Continue),
            Err(ffmpeg::Error::Eof) => return Ok(Flow::Continue),
            Err(source) => {
                return Err(CaptureError::Decode {
                    what: self.what.clone(),
                    source,
                })
            }
        }
        match streams(src)[si].timing.track {
            Track::Video => {
                let mut sender = self
                    .outputs
                    .video
                    .take()
                    .expect("video stream implies a video output");
                let flow = self.drain(src, si, &mut sender, ffmpeg::frame::Video::empty, clock);
                self.outputs.video = Some(sender);
                flow
            }
            Track::Audio => {
                let mut sender = self
                    .outputs
                    .audio
                    .take()
                    .expect("audio stream implies an audio output");
                let flow = self.drain(src, si, &mut sender, ffmpeg::frame::Audio::empty, clock);
                self.outputs.audio = Some(sender);
                flow
            }
        }
    }

    fn drain<F>(
        &mut self,
        src: &mut Source,
        si: usize,
        sender: &mut FrameSender<F>,
        new: fn() -> F,
        clock: &CaptureClock,
    ) -> Result<Flow, CaptureError>
    where
        F: DerefMut<Target = ffmpeg::Frame>,
    {
        loop {
            let mut frame = sender.empty_frame(new);
            match streams(src)[si].decoder.receive_frame(&mut frame) {
                Ok(()) => {}
                Err(ffmpeg::Error::Other { errno }) if errno == libc::EAGAIN => {
                    sender.discard_shell(frame);
                    return Ok(Flow::Continue);
                }
                Err(ffmpeg::Error::Eof) => {
                    sender.discard_shell(frame);
                    return Ok(Flow::Continue);
                }
                Err(source) => {
                    // A failed receive leaves the frame blank: keep the shell.
                    sender.discard_shell(frame);
                    return Err(CaptureError::Decode {
                        what: self.what.clone(),
                        source,
                    });
                }
            }
            if let Flow::Stop = self.deliver(src, si, sender, frame, clock) {
                return Ok(Flow::Stop);
            }
        }
    }

    /// A test pattern: takes the next frame from the graph and delivers it.
    fn pull_graph(&mut self, src: &mut Source, clock: &CaptureClock) -> Result<Flow, CaptureError> {
        let Feed::Graph { timing, .. } = &src.feed else {
            unreachable!("called for graph sources only");
        };
        match timing.track {
            Track::Video => {
                let mut sender = self
                    .outputs
                    .video
                    .take()
                    .expect("a video graph implies a video output");
                let flow = self.pull(src, &mut sender, ffmpeg::frame::Video::empty, clock);
                self.outputs.video = Some(sender);
                flow
            }
            Track::Audio => {
                let mut sender = self
                    .outputs
                    .audio
                    .take()
                    .expect("an audio graph implies an audio output");
                let flow = self.pull(src, &mut sender, ffmpeg::frame::Audio::empty, clock);
                self.outputs.audio = Some(sender);
                flow
            }
        }
    }

    fn pull<F>(
        &mut self,
        src: &mut Source,
        sender: &mut FrameSender<F>,
        new: fn() -> F,
        clock: &CaptureClock,
    ) -> Result<Flow, CaptureError>
    where
        F: DerefMut<Target = ffmpeg::Frame>,
    {
        let Feed::Graph { graph, timing } = &mut src.feed else {
            unreachable!("called for graph sources only");
        };
        // Paced: wait for the next frame's time before drawing it, not after, so no drawn
        // picture sits here while the encoder holds the previous one (one buffer fewer).
        if let Some(due) = timing.next_due_us {
            if self.mapper.mode() == ClockMode::Paced && !self.sleep_until(due, clock) {
                return Ok(Flow::Stop);
            }
        }
        let mut frame = sender.empty_frame(new);
        match graph.receive(&mut frame) {
            Ok(()) => {
                src.last_data = Instant::now();
                Ok(self.deliver(src, 0, sender, frame, clock))
            }
            Err(ffmpeg::Error::Eof) => {
                sender.discard_shell(frame);
                tracing::info!(source = %self.what, "end of input");
                Ok(Flow::Stop)
            }
            Err(ffmpeg::Error::Other { errno }) if errno == libc::EAGAIN => {
                // Sources always have a frame; should one not, ask again shortly.
                sender.discard_shell(frame);
                std::thread::sleep(EAGAIN_RETRY);
                Ok(Flow::Continue)
            }
            Err(source) => {
                sender.discard_shell(frame);
                Err(CaptureError::Read {
                    what: self.what.clone(),
                    source,
                })
            }
        }
    }

    /// Stamps a frame of stream `si` (a graph has one), waits for its time (paced sources) and
    /// offers it to the encoder.
    fn deliver<F>(
        &mut self,
        src: &mut Source,
        si: usize,
        sender: &mut FrameSender<F>,
        frame: F,
        clock: &CaptureClock,
    ) -> Flow
    where
        F: DerefMut<Target = ffmpeg::Frame>,
    {
        let timing = match &mut src.feed {
            Feed::Graph { timing, .. } => timing,
            Feed::Demuxer { streams, .. } => &mut streams[si].timing,
        };
        let track = timing.track;
        let Some(pts_us) = self.timestamp(timing, sender.counters(), &frame, clock) else {
            sender.discard(frame);
            return Flow::Continue;
        };
        if self.mapper.mode() == ClockMode::Paced && !self.sleep_until(pts_us, clock) {
            sender.discard_shell(frame);
            return Flow::Stop;
        }
        match sender.offer(Captured { frame, pts_us }) {
            Offer::Queued => src.delivered += 1,
            Offer::Dropped => {
                src.delivered += 1;
                if rate_limited(&mut self.last_drop_log) {
                    let dropped = sender.counters().dropped.load(Ordering::Relaxed);
                    tracing::warn!(
                        source = %self.what,
                        %track,
                        dropped_total = dropped,
                        "encoder is not keeping up: dropping captured frames"
                    );
                }
            }
            Offer::Disconnected => return Flow::Stop,
        }
        Flow::Continue
    }

    /// The frame's pipeline time, or `None` for a frame to drop (stamped before the pipeline
    /// started: a device's buffered frames).
    fn timestamp(
        &mut self,
        s: &mut Timing,
        counters: &CaptureCounters,
        frame: &ffmpeg::Frame,
        clock: &CaptureClock,
    ) -> Option<i64> {
        // SAFETY: reading plain fields of a decoded frame.
        let (nb_samples, sample_rate, pkt_duration) = unsafe {
            let f = &*frame.as_ptr();
            (
                i64::from(f.nb_samples),
                i64::from(f.sample_rate),
                f.pkt_duration,
            )
        };
        let duration_us = match s.track {
            Track::Audio if sample_rate > 0 => nb_samples * 1_000_000 / sample_rate,
            Track::Audio => 0,
            Track::Video if pkt_duration > 0 => pkt_duration.rescale(s.time_base, MICROS),
            Track::Video => s.default_duration_us,
        };
        let source_us = match frame.timestamp() {
            Some(ts) => {
                let file_us = ts.rescale(s.time_base, MICROS);
                if !matches!(self.file_start_us, Some(start) if start <= file_us)
                    && self.loop_offset_us == 0
                {
                    self.file_start_us = Some(file_us);
                }
                file_us + self.loop_offset_us
            }
            // No timestamp at all: continue from the previous frame.
            None => s.last_end_us.unwrap_or(0),
        };
        s.last_end_us = Some(source_us + duration_us);
        self.max_end_us = self.max_end_us.max(source_us + duration_us);
        self.frames_this_pass += 1;
        let track = s.track;

        let source_on_clock = match self.mapper.mode() {
            ClockMode::Wallclock => clock.from_wallclock_us(source_us),
            ClockMode::Paced => source_us,
        };
        let now_us = clock.now_us();
        if self.mapper.mode() == ClockMode::Wallclock && source_on_clock < 0 {
            return None;
        }
        let mapped = self.mapper.map(track, source_on_clock, duration_us, now_us);
        if mapped.resynced {
            counters.resyncs.fetch_add(1, Ordering::Relaxed);
            if rate_limited(&mut self.last_resync_log) {
                tracing::warn!(
                    source = %self.what,
                    %track,
                    lag_ms = (now_us - source_on_clock) / 1000,
                    "source timestamps re-anchored to the pipeline clock"
                );
            }
        }
        s.next_due_us = Some(mapped.pts_us + duration_us);
        Some(mapped.pts_us)
    }

    /// Sleeps until pipeline time `target_us`; `false` if stopped meanwhile.
    fn sleep_until(&self, target_us: i64, clock: &CaptureClock) -> bool {
        loop {
            if self.signal.is_set() {
                return false;
            }
            let remaining = target_us - clock.now_us();
            if remaining <= 0 {
                return true;
            }
            std::thread::sleep(Duration::from_micros(remaining as u64).min(PACE_SLICE));
        }
    }
}

/// How to open `spec` (not the test seam's wrapper). `first` checks a camera against what it
/// offers, for a start-up error that names the alternatives; a reopen skips that and lets the
/// driver negotiate (a replugged camera may be another model; the encoder scales).
fn plan(spec: &SourceSpec, first: bool) -> Result<Plan, CaptureError> {
    Ok(match spec {
        SourceSpec::V4l2 {
            device,
            input_format,
            width,
            height,
            fps,
        } => {
            if first {
                precheck_camera(device, input_format.as_deref(), *width, *height)?;
            }
            let mut options = vec![
                ("video_size", format!("{width}x{height}")),
                ("framerate", fps.to_string()),
                ("timestamps", "mono2abs".to_string()),
            ];
            if let Some(f) = input_format {
                options.push(("input_format", f.clone()));
            }
            Plan {
                url: device.to_string_lossy().into_owned(),
                format: Some("v4l2"),
                options,
                mode: ClockMode::Wallclock,
                is_device: true,
                looped: false,
                filter_graph: false,
            }
        }
        SourceSpec::Alsa {
            device,
            sample_rate,
            channels,
        } => Plan {
            url: device.clone(),
            format: Some("alsa"),
            options: vec![
                ("sample_rate", sample_rate.to_string()),
                ("channels", channels.to_string()),
            ],
            mode: ClockMode::Wallclock,
            is_device: true,
            looped: false,
            filter_graph: false,
        },
        SourceSpec::TestPatternVideo { .. } | SourceSpec::TestPatternAudio { .. } => Plan {
            url: spec.lavfi_graph().expect("test patterns have a graph"),
            format: Some("lavfi"),
            options: Vec::new(),
            mode: ClockMode::Paced,
            is_device: false,
            looped: false,
            filter_graph: true,
        },
        SourceSpec::File { path, looped } => Plan {
            url: path.to_string_lossy().into_owned(),
            format: None,
            options: Vec::new(),
            mode: ClockMode::Paced,
            is_device: false,
            looped: *looped,
            filter_graph: false,
        },
        SourceSpec::Faulty { inner, .. } => return plan(inner, first),
    })
}

/// Opens the input of `plan` and a decoder for each wanted track (`(video, audio)`).
fn open_source(
    spec: &SourceSpec,
    plan: &Plan,
    wants: (bool, bool),
    signal: &StopSignal,
) -> Result<(Source, SourceInfo), CaptureError> {
    let what = spec.describe();
    if plan.filter_graph {
        match wants {
            (true, false) => return open_graph(&plan.url, Track::Video, what),
            (false, true) => return open_graph(&plan.url, Track::Audio, what),
            _ => {}
        }
    }
    let req = InputRequest {
        format: plan.format,
        url: &plan.url,
        options: plan.options.clone(),
        nonblocking: plan.is_device,
        probe_streams: plan.format.is_none(),
        what: &what,
    };
    let input = input::open(&req, signal).map_err(|e| refine_open_error(spec, e))?;

    let mut streams = Vec::new();
    let mut info = SourceInfo {
        description: what.clone(),
        video: None,
        audio: None,
    };
    for (track, kind, wanted) in [
        (Track::Video, media::Type::Video, wants.0),
        (Track::Audio, media::Type::Audio, wants.1),
    ] {
        if !wanted {
            continue;
        }
        let stream = input
            .ctx
            .streams()
            .best(kind)
            .ok_or_else(|| CaptureError::NoStream {
                what: what.clone(),
                track,
            })?;
        let ctx = ffmpeg::codec::context::Context::from_parameters(stream.parameters()).map_err(
            |source| CaptureError::Decoder {
                what: what.clone(),
                source,
            },
        )?;
        let mut decoder = ctx.decoder();
        decoder.set_packet_time_base(stream.time_base());
        let decoder = match track {
            Track::Video => decoder.video().map(|d| {
                info.video = Some((d.width(), d.height()));
                d.0
            }),
            Track::Audio => decoder.audio().map(|d| {
                info.audio = Some((d.rate(), d.channels()));
                d.0
            }),
        }
        .map_err(|source| CaptureError::Decoder {
            what: what.clone(),
            source,
        })?;
        streams.push(StreamState {
            index: stream.index(),
            timing: Timing::new(track, stream.time_base(), stream.avg_frame_rate()),
            decoder,
        });
    }
    Ok((
        Source {
            feed: Feed::Demuxer { streams, input },
            delivered: 0,
            last_data: Instant::now(),
        },
        info,
    ))
}

/// Opens a test pattern's filter graph for its one track.
fn open_graph(
    graph: &str,
    track: Track,
    what: String,
) -> Result<(Source, SourceInfo), CaptureError> {
    let graph = SinkGraph::open(graph, track, &what)?;
    let mut info = SourceInfo {
        description: what,
        video: None,
        audio: None,
    };
    let frame_rate = match track {
        Track::Video => {
            info.video = Some(graph.video_size());
            graph.frame_rate()
        }
        Track::Audio => {
            info.audio = Some(graph.audio_format());
            Rational(0, 1)
        }
    };
    let timing = Timing::new(track, graph.time_base(), frame_rate);
    Ok((
        Source {
            feed: Feed::Graph { graph, timing },
            delivered: 0,
            last_data: Instant::now(),
        },
        info,
    ))
}

/// The demuxed streams of a source (none for a filter graph).
fn streams(src: &mut Source) -> &mut [StreamState] {
    match &mut src.feed {
        Feed::Demuxer { streams, .. } => streams,
        Feed::Graph { .. } => &mut [],
    }
}

/// True at most once a second per `last`.
fn rate_limited(last: &mut Option<Instant>) -> bool {
    let now = Instant::now();
    match *last {
        Some(t) if now.duration_since(t) < Duration::from_secs(1) => false,
        _ => {
            *last = Some(now);
            true
        }
    }
}

/// Checks a camera before handing it to libavdevice, whose own errors do not say what exists.
fn precheck_camera(
    device: &Path,
    input_format: Option<&str>,
    width: u32,
    height: u32,
) -> Result<(), CaptureError> {
    let devices = list_devices();
    if !device.exists() {
        return Err(CaptureError::DeviceMissing {
            device: device.display().to_string(),
            found: devices.cameras_summary(),
        });
    }
    let Some(camera) = devices.camera(device) else {
        // Exists but could not be queried (permissions, not a capture node): let the open
        // report it precisely.
        return Ok(());
    };
    if camera.formats.is_empty() {
        return Ok(());
    }
    let format = match input_format {
        Some(wanted) => match camera
            .formats
            .iter()
            .find(|f| f.name() == wanted || f.fourcc == wanted)
        {
            Some(f) => Some(f),
            None => {
                return Err(CaptureError::UnsupportedFormat {
                    device: device.display().to_string(),
                    requested: wanted.to_string(),
                    available: camera.format_names().join(", "),
                })
            }
        },
        None => None,
    };
    let offers = match format {
        Some(f) => f.offers_size(width, height),
        None => {
            let answers: Vec<Option<bool>> = camera
                .formats
                .iter()
                .map(|f| f.offers_size(width, height))
                .collect();
            if answers.contains(&Some(true)) || answers.contains(&None) {
                Some(true)
            } else {
                Some(false)
            }
        }
    };
    if offers == Some(false) {
        return Err(CaptureError::UnsupportedSize {
            device: device.display().to_string(),
            width,
            height,
            available: camera.summary(),
        });
    }
    Ok(())
}

/// Turns libavformat's bare errno into a message that says what to do.
fn refine_open_error(spec: &SourceSpec, err: CaptureError) -> CaptureError {
    let CaptureError::Open { what, source } = err else {
        return err;
    };
    let errno = match source {
        ffmpeg::Error::Other { errno } => Some(errno),
        _ => None,
    };
    match (spec, errno) {
        (_, Some(libc::EBUSY)) => CaptureError::DeviceBusy {
            device: spec.device_name(),
        },
        (SourceSpec::V4l2 { .. }, Some(libc::EACCES | libc::EPERM)) => {
            CaptureError::PermissionDenied {
                device: spec.device_name(),
                group: "video",
            }
        }
        (SourceSpec::Alsa { .. }, Some(libc::EACCES | libc::EPERM)) => {
            CaptureError::PermissionDenied {
                device: spec.device_name(),
                group: "audio",
            }
        }
        (SourceSpec::V4l2 { device, .. }, Some(libc::ENOENT | libc::ENODEV | libc::ENXIO)) => {
            CaptureError::DeviceMissing {
                device: device.display().to_string(),
                found: list_devices().cameras_summary(),
            }
        }
        (
            SourceSpec::V4l2 {
                device,
                input_format: Some(f),
                ..
            },
            Some(libc::EINVAL),
        ) => {
            let available = list_devices()
                .camera(device)
                .map(|c| c.format_names().join(", "))
                .unwrap_or_else(|| "unknown (the camera could not be queried)".into());
            CaptureError::UnsupportedFormat {
                device: device.display().to_string(),
                requested: f.clone(),
                available,
            }
        }
        (SourceSpec::Alsa { device, .. }, _) => CaptureError::AlsaOpen {
            device: device.clone(),
            source,
            found: super::devices::Devices {
                cameras: Vec::new(),
                microphones: list_microphones(),
            }
            .microphones_summary(),
        },
        (SourceSpec::File { path, .. }, _) => CaptureError::FileOpen {
            path: path.display().to_string(),
            source,
        },
        _ => CaptureError::Open { what, source },
    }
}
