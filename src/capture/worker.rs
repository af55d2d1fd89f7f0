//! The capture thread: open the source, then read packets, decode, timestamp, pace and hand
//! frames to the encode threads until stopped.

use std::ops::DerefMut;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use ffmpeg::packet::Mut as _;
use ffmpeg::{media, Rational, Rescale};
use ffmpeg_next as ffmpeg;

use super::clock::{ClockMode, TimestampMapper};
use super::devices::{list_devices, list_microphones};
use super::input::{self, InputRequest, OpenedInput, StopSignal};
use super::queue::{Captured, FrameSender, Offer};
use super::{CaptureClock, CaptureError, CaptureOutputs, SourceInfo, SourceSpec, Track};

/// A device that delivers nothing for this long is reported as stalled.
const STALL_TIMEOUT: Duration = Duration::from_secs(5);
/// Poll interval while a non-blocking device has no data (`EAGAIN`).
const EAGAIN_RETRY: Duration = Duration::from_millis(2);
/// Longest single sleep while pacing, so a stop request is seen promptly.
const PACE_SLICE: Duration = Duration::from_millis(20);

const MICROS: Rational = Rational(1, 1_000_000);

struct StreamState {
    index: usize,
    track: Track,
    time_base: Rational,
    decoder: ffmpeg::decoder::Opened,
    /// Used when a video frame carries no duration.
    default_duration_us: i64,
    /// Source end time (timestamp + duration) of the last frame, including the loop offset.
    last_end_us: Option<i64>,
}

pub(super) struct Worker {
    what: String,
    input: OpenedInput,
    streams: Vec<StreamState>,
    outputs: CaptureOutputs,
    mapper: TimestampMapper,
    signal: StopSignal,
    /// Files: loop on EOF instead of ending.
    looped: bool,
    /// Devices: EOF is an error, EAGAIN is polled.
    is_device: bool,
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
    ) -> Result<(Self, SourceInfo), CaptureError> {
        let what = spec.describe();
        let (request_url, format, options, mode, is_device, looped) = match spec {
            SourceSpec::V4l2 {
                device,
                input_format,
                width,
                height,
                fps,
            } => {
                precheck_camera(device, input_format.as_deref(), *width, *height)?;
                let mut options = vec![
                    ("video_size", format!("{width}x{height}")),
                    ("framerate", fps.to_string()),
                    ("timestamps", "mono2abs".to_string()),
                ];
                if let Some(f) = input_format {
                    options.push(("input_format", f.clone()));
                }
                let url = device.to_string_lossy().into_owned();
                (
                    url,
                    Some("v4l2"),
                    options,
                    ClockMode::Wallclock,
                    true,
                    false,
                )
            }
            SourceSpec::Alsa {
                device,
                sample_rate,
                channels,
            } => {
                let options = vec![
                    ("sample_rate", sample_rate.to_string()),
                    ("channels", channels.to_string()),
                ];
                (
                    device.clone(),
                    Some("alsa"),
                    options,
                    ClockMode::Wallclock,
                    true,
                    false,
                )
            }
            SourceSpec::TestPatternVideo { .. } | SourceSpec::TestPatternAudio { .. } => (
                spec.lavfi_graph().expect("test patterns have a graph"),
                Some("lavfi"),
                Vec::new(),
                ClockMode::Paced,
                false,
                false,
            ),
            SourceSpec::File { path, looped } => (
                path.to_string_lossy().into_owned(),
                None,
                Vec::new(),
                ClockMode::Paced,
                false,
                *looped,
            ),
        };
        let req = InputRequest {
            format,
            url: &request_url,
            options,
            nonblocking: is_device,
            probe_streams: format.is_none(),
            what: &what,
        };
        let input = input::open(&req, &signal).map_err(|e| refine_open_error(spec, e))?;

        let mut streams = Vec::new();
        let mut info = SourceInfo {
            description: what.clone(),
            video: None,
            audio: None,
        };
        for (track, kind, wanted) in [
            (Track::Video, media::Type::Video, outputs.video.is_some()),
            (Track::Audio, media::Type::Audio, outputs.audio.is_some()),
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
            let ctx = ffmpeg::codec::context::Context::from_parameters(stream.parameters())
                .map_err(|source| CaptureError::Decoder {
                    what: what.clone(),
                    source,
                })?;
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
            let rate = stream.avg_frame_rate();
            let default_duration_us = if rate.numerator() > 0 && rate.denominator() > 0 {
                1_000_000 * i64::from(rate.denominator()) / i64::from(rate.numerator())
            } else {
                40_000
            };
            streams.push(StreamState {
                index: stream.index(),
                track,
                time_base: stream.time_base(),
                decoder,
                default_duration_us,
                last_end_us: None,
            });
        }
        Ok((
            Self {
                what,
                input,
                streams,
                outputs,
                mapper: TimestampMapper::new(mode),
                signal,
                looped,
                is_device,
                loop_offset_us: 0,
                file_start_us: None,
                max_end_us: 0,
                frames_this_pass: 0,
                last_resync_log: None,
                last_drop_log: None,
            },
            info,
        ))
    }

    /// The read loop. Returns `Ok` on stop, on the encoders going away, or at the end of a
    /// file that is not looped.
    pub(super) fn run(mut self, clock: CaptureClock) -> Result<(), CaptureError> {
        let mut packet = ffmpeg::Packet::empty();
        let mut last_data = Instant::now();
        loop {
            if self.signal.is_set() {
                return Ok(());
            }
            match packet.read(&mut self.input.ctx) {
                Ok(()) => {
                    last_data = Instant::now();
                    let index = packet.stream();
                    let flow = match self.streams.iter().position(|s| s.index == index) {
                        Some(si) => self.decode_packet(si, Some(&packet), &clock)?,
                        None => Flow::Continue,
                    };
                    // SAFETY: the packet is ours; unref releases its buffer before the next read.
                    unsafe { ffmpeg::ffi::av_packet_unref(packet.as_mut_ptr()) };
                    if let Flow::Stop = flow {
                        return Ok(());
                    }
                }
                Err(ffmpeg::Error::Other { errno }) if errno == libc::EAGAIN => {
                    if last_data.elapsed() > STALL_TIMEOUT {
                        return Err(CaptureError::Stalled {
                            what: self.what.clone(),
                            seconds: STALL_TIMEOUT.as_secs(),
                        });
                    }
                    std::thread::sleep(EAGAIN_RETRY);
                }
                Err(ffmpeg::Error::Exit) => return Ok(()),
                Err(ffmpeg::Error::InvalidData) => {
                    tracing::debug!(source = %self.what, "skipping a corrupt packet");
                }
                Err(ffmpeg::Error::Eof) => {
                    for si in 0..self.streams.len() {
                        if let Flow::Stop = self.decode_packet(si, None, &clock)? {
                            return Ok(());
                        }
                    }
                    if self.is_device {
                        return Err(CaptureError::Ended {
                            what: self.what.clone(),
                        });
                    }
                    if !self.looped {
                        tracing::info!(source = %self.what, "end of input");
                        return Ok(());
                    }
                    self.rewind()?;
                }
                Err(source) => {
                    return Err(CaptureError::Read {
                        what: self.what.clone(),
                        source,
                    })
                }
            }
        }
    }

    /// Seeks a looped file back to its start; timestamps continue after the longest track.
    fn rewind(&mut self) -> Result<(), CaptureError> {
        if self.frames_this_pass == 0 {
            return Err(CaptureError::Ended {
                what: self.what.clone(),
            });
        }
        self.frames_this_pass = 0;
        for s in &mut self.streams {
            s.decoder.flush();
        }
        self.loop_offset_us = self.max_end_us - self.file_start_us.unwrap_or(0);
        self.input
            .ctx
            .seek(0, ..)
            .map_err(|source| CaptureError::Read {
                what: format!("{} (seeking back to the start to loop)", self.what),
                source,
            })?;
        tracing::debug!(source = %self.what, offset_us = self.loop_offset_us, "looping");
        Ok(())
    }

    /// Sends a packet (or end of stream) to stream `si`'s decoder and delivers every frame.
    fn decode_packet(
        &mut self,
        si: usize,
        packet: Option<&ffmpeg::Packet>,
        clock: &CaptureClock,
    ) -> Result<Flow, CaptureError> {
        let sent = match packet {
            Some(p) => self.streams[si].decoder.send_packet(p),
            None => self.streams[si].decoder.send_eof(),
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
        match self.streams[si].track {
            Track::Video => {
                let mut sender = self
                    .outputs
                    .video
                    .take()
                    .expect("video stream implies a video output");
                let flow = self.drain(si, &mut sender, ffmpeg::frame::Video::empty, clock);
                self.outputs.video = Some(sender);
                flow
            }
            Track::Audio => {
                let mut sender = self
                    .outputs
                    .audio
                    .take()
                    .expect("audio stream implies an audio output");
                let flow = self.drain(si, &mut sender, ffmpeg::frame::Audio::empty, clock);
                self.outputs.audio = Some(sender);
                flow
            }
        }
    }

    fn drain<F>(
        &mut self,
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
            match self.streams[si].decoder.receive_frame(&mut frame) {
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
                    return Err(CaptureError::Decode {
                        what: self.what.clone(),
                        source,
                    })
                }
            }
            let Some(pts_us) = self.timestamp(si, &frame, clock) else {
                sender.discard(frame);
                continue;
            };
            if self.mapper.mode() == ClockMode::Paced && !self.sleep_until(pts_us, clock) {
                sender.discard_shell(frame);
                return Ok(Flow::Stop);
            }
            match sender.offer(Captured { frame, pts_us }) {
                Offer::Queued => {}
                Offer::Dropped => {
                    if rate_limited(&mut self.last_drop_log) {
                        let dropped = sender.counters().dropped.load(Ordering::Relaxed);
                        tracing::warn!(
                            source = %self.what,
                            track = %self.streams[si].track,
                            dropped_total = dropped,
                            "encoder is not keeping up: dropping captured frames"
                        );
                    }
                }
                Offer::Disconnected => return Ok(Flow::Stop),
            }
        }
    }

    /// The frame's pipeline time, or `None` for a frame to drop (stamped before the pipeline
    /// started: a device's buffered frames).
    fn timestamp(&mut self, si: usize, frame: &ffmpeg::Frame, clock: &CaptureClock) -> Option<i64> {
        let s = &mut self.streams[si];
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
        let mapped = self.mapper.map(track, source_on_clock, now_us);
        if mapped.resynced {
            let counters = match track {
                Track::Video => self.outputs.video.as_ref().map(|s| s.counters()),
                Track::Audio => self.outputs.audio.as_ref().map(|s| s.counters()),
            };
            if let Some(c) = counters {
                c.resyncs.fetch_add(1, Ordering::Relaxed);
            }
            if rate_limited(&mut self.last_resync_log) {
                tracing::warn!(
                    source = %self.what,
                    %track,
                    lag_ms = (now_us - source_on_clock) / 1000,
                    "source timestamps re-anchored to the pipeline clock"
                );
            }
        }
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
