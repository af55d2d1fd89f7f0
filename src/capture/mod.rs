//! Capture: libavdevice inputs (V4L2 camera, ALSA microphone, looped media file) decoded on
//! their own OS threads, and test patterns read straight from a libavfilter graph (`graph`),
//! handed to the encoders as raw frames stamped on one pipeline clock.
//!
//! This module owns everything between a device and a decoded frame: opening inputs with an
//! explicit input format and checked options (`input`), device discovery for
//! `polypush devices` and for errors that name what exists (`devices`), the pipeline clock and
//! the timestamp mapping that keeps audio and video in sync over hours (`clock`), and the
//! bounded frame queues with their drop policy (`queue`).
//!
//! Pacing: lavfi sources and files produce frames as fast as they are read. Rather than
//! appending lavfi's `realtime` filter (which keeps its own clock, cannot be interrupted and
//! does not apply to files) the capture thread sleeps until each frame's time on the pipeline
//! clock, so test patterns and files share one pacing path and one clock. See `clock` for the
//! timestamp scheme.
//!
//! Threading: [`CaptureThread::spawn`] starts a thread (`polypush-capture-video`, `-audio`, or
//! `-file` when one file feeds both tracks) that opens the input and reports the result
//! ([`CaptureThread::wait_opened`]), then waits for [`CaptureThread::start`] before reading, so
//! every input of a pipeline starts at the same instant and nothing is captured while another
//! input or an encoder is still opening. The thread exits on the stop signal (a blocking read is
//! interrupted through libavformat's interrupt callback; devices are opened non-blocking), when
//! the encode side hangs up, or on error, which [`CaptureThread::join`] returns.
//!
//! Device loss (`reconnect`): a live device (V4L2, ALSA) that fails mid-broadcast (a USB
//! camera pulled out) does not end the thread. The thread waits for the encoder to give back
//! the frames it still holds (they may point into the device's buffers), closes the device,
//! marks the track [`TrackState::Reconnecting`], and reopens it with backoff (0.5 s doubling to
//! 5 s, forever) while the encoder fills the track; the counters count losses and attempts. A
//! reopened device may come back with another size or pixel format: the encoder scales. Test
//! sources and files are not devices, and a device missing at start-up is still an error at
//! start-up. `SourceSpec::Faulty` (hidden) is the test seam that fakes an unplugged device.
//!
//! ALSA (`alsa_log`): libasound's own error messages go through `tracing` (WARN, with
//! libasound's file, line and function as fields), never raw onto stderr
//! (`tests/alsa_capture.rs` checks it through the real binary). FFmpeg's alsa input reads one
//! period per packet and asks for the device's smallest period: tens of frames for a USB
//! microphone, one frame for some plugins (48000 packets a second). The capture thread
//! gathers decoded audio frames under 10 ms into 20 ms frames before stamping and offering
//! them (`worker::batch`), so the encoder's queue sees about 50 frames a second whatever the
//! period; larger frames pass through untouched. `tests/alsa_capture.rs` captures a tone
//! through alsa-lib's `file` plugin (a FIFO as its `infile`, a `null` slave), which has
//! exactly that one-frame period.

mod alsa_log;
mod clock;
mod devices;
mod graph;
mod input;
mod queue;
mod reconnect;
mod worker;

use std::fmt;
use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::Once;
use std::thread::JoinHandle;
use std::time::Duration;

use ffmpeg_next as ffmpeg;

pub use clock::CaptureClock;
pub use devices::{list_devices, Camera, CameraFormat, Devices, FrameSize, Microphone};
pub use input::StopSignal;
pub use queue::{
    frame_queue, AudioFrame, CaptureCounters, Captured, FrameReceiver, FrameSender, Received,
    VideoFrame,
};
pub use reconnect::{reopen_delay, TrackState};

/// Initializes FFmpeg once per process: libavdevice registration, a log level that keeps
/// libx264's per-open banner and per-close statistics out of the journal (warnings stay),
/// and libasound's error messages routed through `tracing` (`alsa_log`) before any ALSA
/// device is opened.
pub fn init_ffmpeg() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = ffmpeg::init();
        ffmpeg::device::register_all();
        ffmpeg::log::set_level(ffmpeg::log::Level::Warning);
        if !alsa_log::install() {
            tracing::debug!(
                "libasound is not loaded (FFmpeg without ALSA): no ALSA messages to route"
            );
        }
    });
}

/// The sync pattern's flash and beep last this long (seconds) from every whole second.
pub const SYNC_FLASH_S: f64 = 0.1;
/// The sync pattern's beep, Hz.
pub const SYNC_TONE_HZ: u32 = 1000;

/// Which of the two tracks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Track {
    Video,
    Audio,
}

impl Track {
    pub(crate) fn index(self) -> usize {
        match self {
            Track::Video => 0,
            Track::Audio => 1,
        }
    }
}

impl fmt::Display for Track {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Track::Video => "video",
            Track::Audio => "audio",
        })
    }
}

/// Where a track comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceSpec {
    /// A V4L2 camera. `input_format` is the camera's pixel format in FFmpeg's naming (`mjpeg`,
    /// `yuyv422`; see `polypush devices`); `None` lets the driver choose.
    V4l2 {
        device: PathBuf,
        input_format: Option<String>,
        width: u32,
        height: u32,
        fps: u32,
    },
    /// An ALSA capture device such as `hw:1,0` or `default`.
    Alsa {
        device: String,
        sample_rate: u32,
        channels: u16,
    },
    /// lavfi `testsrc2`, paced in real time; with `sync`, black with a full white frame for
    /// 100 ms at every whole second of the pipeline clock (see [`SYNC_FLASH_S`]).
    TestPatternVideo {
        width: u32,
        height: u32,
        fps: u32,
        sync: bool,
    },
    /// lavfi `sine`, paced in real time; with `sync`, silence with a 1 kHz beep for 100 ms at
    /// every whole second of the pipeline clock, with the video's flash. `clock_ppm`: the
    /// source's sample clock runs this far fast (+) or slow (−): it delivers
    /// `sample_rate × (1 + ppm·10⁻⁶)` samples per second of the pipeline clock while claiming
    /// `sample_rate`, and its frames are stamped with the pipeline time they were "captured"
    /// at, as a drifting USB microphone's are. The beep is placed in real time, so it lands
    /// on whole seconds only if the encoder follows the drift.
    TestPatternAudio {
        sample_rate: u32,
        channels: u16,
        frequency_hz: u32,
        sync: bool,
        clock_ppm: i32,
    },
    /// A media file, paced in real time; with `looped` it restarts at the end with timestamps
    /// continuing. The same file as both video and audio source is read by one thread.
    File { path: PathBuf, looped: bool },
    /// Test seam: `inner`, treated as a live device that is unplugged `fail_after` into the
    /// broadcast (the next read fails with `EIO`) and stays away for `down_for` (reopen attempts
    /// fail with `ENODEV`), then opens normally. See `reconnect`.
    #[doc(hidden)]
    Faulty {
        inner: Box<SourceSpec>,
        fail_after: Duration,
        down_for: Duration,
    },
}

impl SourceSpec {
    /// Whether this source can provide `track`.
    pub fn provides(&self, track: Track) -> bool {
        match self {
            SourceSpec::V4l2 { .. } | SourceSpec::TestPatternVideo { .. } => track == Track::Video,
            SourceSpec::Alsa { .. } | SourceSpec::TestPatternAudio { .. } => track == Track::Audio,
            SourceSpec::File { .. } => true,
            SourceSpec::Faulty { inner, .. } => inner.provides(track),
        }
    }

    /// A device that can disappear and come back (a USB camera or sound card): its loss
    /// mid-broadcast is waited out (see `reconnect`) rather than ending the pipeline.
    pub fn is_live_device(&self) -> bool {
        matches!(
            self,
            SourceSpec::V4l2 { .. } | SourceSpec::Alsa { .. } | SourceSpec::Faulty { .. }
        )
    }

    /// The source itself, without the test seam's wrapper.
    fn base(&self) -> &SourceSpec {
        match self {
            SourceSpec::Faulty { inner, .. } => inner.base(),
            other => other,
        }
    }

    /// For logs and errors: `camera /dev/video0`, `microphone hw:1,0`, …
    pub fn describe(&self) -> String {
        match self {
            SourceSpec::V4l2 { device, .. } => format!("camera {}", device.display()),
            SourceSpec::Alsa { device, .. } => format!("microphone {device}"),
            SourceSpec::TestPatternVideo { .. } => "video test pattern".into(),
            SourceSpec::TestPatternAudio { .. } => "audio test tone".into(),
            SourceSpec::File { path, .. } => format!("file {}", path.display()),
            SourceSpec::Faulty { inner, .. } => inner.describe(),
        }
    }

    fn device_name(&self) -> String {
        match self.base() {
            SourceSpec::V4l2 { device, .. } => device.display().to_string(),
            SourceSpec::Alsa { device, .. } => device.clone(),
            SourceSpec::File { path, .. } => path.display().to_string(),
            _ => self.describe(),
        }
    }

    /// The sync test pattern (flash or beep on whole seconds of the pipeline clock).
    fn is_sync_pattern(&self) -> bool {
        matches!(
            self.base(),
            SourceSpec::TestPatternVideo { sync: true, .. }
                | SourceSpec::TestPatternAudio { sync: true, .. }
        )
    }

    /// A test tone's sample-clock error, ppm (0 for everything else).
    fn clock_ppm(&self) -> i32 {
        match *self.base() {
            SourceSpec::TestPatternAudio { clock_ppm, .. } => clock_ppm,
            _ => 0,
        }
    }

    /// The lavfi graph of a test source.
    pub fn lavfi_graph(&self) -> Option<String> {
        match *self.base() {
            SourceSpec::TestPatternVideo {
                width,
                height,
                fps,
                sync: false,
            } => Some(format!("testsrc2=size={width}x{height}:rate={fps}")),
            // White for the first 100 ms of every second (the epsilon keeps a frame stamped at
            // exactly 1.0 s from landing at 0.99999… by rounding).
            SourceSpec::TestPatternVideo {
                width,
                height,
                fps,
                sync: true,
            } => Some(format!(
                "color=c=black:size={width}x{height}:rate={fps},format=yuv420p,\
                 drawbox=x=0:y=0:w=iw:h=ih:color=white:t=fill:enable='lt(mod(t+1e-6,1),{SYNC_FLASH_S})'"
            )),
            SourceSpec::TestPatternAudio {
                sample_rate,
                channels,
                frequency_hz,
                sync: false,
                ..
            } => {
                let layout = if channels == 1 { "mono" } else { "stereo" };
                Some(format!(
                    "sine=frequency={frequency_hz}:sample_rate={sample_rate},aformat=channel_layouts={layout}"
                ))
            }
            // The beep is placed on real time T = t / (1 + ppm): what a microphone whose clock
            // runs `ppm` fast records of a beep at every whole second.
            SourceSpec::TestPatternAudio {
                sample_rate,
                channels,
                clock_ppm,
                sync: true,
                ..
            } => {
                let layout = if channels == 1 { "mono" } else { "stereo" };
                let k = 1e6 / (1e6 + f64::from(clock_ppm));
                Some(format!(
                    "aevalsrc=exprs='if(lt(mod(t*{k:.12}+1e-7,1),{SYNC_FLASH_S}),0.5*sin(2*PI*{SYNC_TONE_HZ}*t*{k:.12}),0)':sample_rate={sample_rate}:channel_layout={layout}:nb_samples=1024,\
                     aformat=sample_fmts=fltp"
                ))
            }
            _ => None,
        }
    }

    /// Checks the numbers before anything is opened.
    pub fn validate(&self) -> Result<(), CaptureError> {
        let invalid = |message: String| Err(CaptureError::InvalidSpec { message });
        match *self {
            SourceSpec::V4l2 {
                width, height, fps, ..
            }
            | SourceSpec::TestPatternVideo {
                width, height, fps, ..
            } => {
                if width == 0 || height == 0 || width > 8192 || height > 8192 {
                    return invalid(format!(
                        "{}: video size {width}x{height} is out of range; set [video] width and height",
                        self.describe()
                    ));
                }
                if fps == 0 || fps > 240 {
                    return invalid(format!(
                        "{}: {fps} fps is out of range (1..=240); set [video] fps",
                        self.describe()
                    ));
                }
            }
            SourceSpec::Alsa {
                sample_rate,
                channels,
                ..
            }
            | SourceSpec::TestPatternAudio {
                sample_rate,
                channels,
                ..
            } => {
                if !(8_000..=192_000).contains(&sample_rate) {
                    return invalid(format!(
                        "{}: sample rate {sample_rate} Hz is out of range; set [audio] sample_rate (48000 is usual)",
                        self.describe()
                    ));
                }
                if !(1..=2).contains(&channels) {
                    return invalid(format!(
                        "{}: {channels} channels: only 1 (mono) or 2 (stereo) are supported; set [audio] channels",
                        self.describe()
                    ));
                }
            }
            SourceSpec::File { .. } => {}
            SourceSpec::Faulty { ref inner, .. } => return inner.validate(),
        }
        Ok(())
    }
}

/// What an input turned out to be once open.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceInfo {
    pub description: String,
    /// Width and height of the decoded video stream, if the input feeds video.
    pub video: Option<(u32, u32)>,
    /// Sample rate and channels of the decoded audio stream, if the input feeds audio.
    pub audio: Option<(u32, u16)>,
}

/// The queues a capture thread feeds: one per track it provides.
#[derive(Default)]
pub struct CaptureOutputs {
    pub video: Option<FrameSender<ffmpeg::frame::Video>>,
    pub audio: Option<FrameSender<ffmpeg::frame::Audio>>,
}

/// A capture problem. Every message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("{device} does not exist: {found} — set [video] device")]
    DeviceMissing { device: String, found: String },
    #[error("{device} does not offer input format '{requested}': it offers {available}; set [video] input_format to one of them")]
    UnsupportedFormat {
        device: String,
        requested: String,
        available: String,
    },
    #[error("{device} does not offer {width}x{height}: {available}; set [video] width and height to one of these sizes")]
    UnsupportedSize {
        device: String,
        width: u32,
        height: u32,
        available: String,
    },
    #[error("{device} is busy: another program is capturing from it (find it with `fuser -v {device}`); stop that program or choose another device")]
    DeviceBusy { device: String },
    #[error("permission denied opening {device}: add the user polypush runs as to the '{group}' group (usermod -aG {group} polypush)")]
    PermissionDenied { device: String, group: &'static str },
    #[error("cannot open ALSA capture device '{device}' ({source}): {found}; set [audio] device (see `polypush devices`)")]
    AlsaOpen {
        device: String,
        source: ffmpeg::Error,
        found: String,
    },
    #[error("cannot open {path}: {source}; check [video] file / [audio] file points to a readable media file")]
    FileOpen { path: String, source: ffmpeg::Error },
    #[error("this FFmpeg has no '{format}' input: install libavdevice with {format} support (Debian: libavdevice59)")]
    FormatUnavailable { format: &'static str },
    #[error("cannot open {what}: {source}; FFmpeg's reason is in the log line before this one, and `polypush devices` shows what is present")]
    Open { what: String, source: ffmpeg::Error },
    #[error("{what} did not accept the option '{key}' (FFmpeg would silently ignore it): this FFmpeg build is older than polypush expects; report it with `ffmpeg -version`")]
    UnknownOption { what: String, key: String },
    #[error("{what} has no {track} stream: choose a source that has one, or disable {track}")]
    NoStream { what: String, track: Track },
    #[error("{what} cannot be decoded: {source}; the codec is missing from this FFmpeg build (for a camera, try another [video] input_format)")]
    Decoder { what: String, source: ffmpeg::Error },
    #[error("decoding {what} failed: {source}; the pipeline stops and is restarted")]
    Decode { what: String, source: ffmpeg::Error },
    #[error("reading from {what} failed: {source}; check that the device is still connected (`polypush devices`)")]
    Read { what: String, source: ffmpeg::Error },
    #[error("{what} delivered nothing for {seconds} s: is it unplugged, or held by another program? (`polypush devices`, `fuser -v`)")]
    Stalled { what: String, seconds: u64 },
    #[error("{what} stopped delivering data (end of stream); check the device, or loop the file")]
    Ended { what: String },
    #[error("{what} cannot provide {track}: use a {track} source")]
    WrongTrack { what: String, track: Track },
    #[error("{message}")]
    InvalidSpec { message: String },
    #[error("cannot start the capture thread: {0}")]
    Spawn(#[source] std::io::Error),
    #[error("the capture thread for {0} panicked; this is a bug, please report it with the log")]
    Panicked(String),
}

/// A capture thread: spawned and opening, then started, then joined.
pub struct CaptureThread {
    name: String,
    opened: Option<Receiver<Result<SourceInfo, CaptureError>>>,
    go: Option<SyncSender<CaptureClock>>,
    handle: Option<JoinHandle<Result<(), CaptureError>>>,
}

impl CaptureThread {
    /// Spawns the thread named `thread_name`, which opens `spec` for `outputs` and then waits
    /// for [`start`](Self::start). Dropping or joining without starting makes it exit.
    pub fn spawn(
        thread_name: &str,
        spec: SourceSpec,
        outputs: CaptureOutputs,
        signal: StopSignal,
    ) -> Result<Self, CaptureError> {
        spec.validate()?;
        for (track, wanted) in [
            (Track::Video, outputs.video.is_some()),
            (Track::Audio, outputs.audio.is_some()),
        ] {
            if wanted && !spec.provides(track) {
                return Err(CaptureError::WrongTrack {
                    what: spec.describe(),
                    track,
                });
            }
        }
        let (opened_tx, opened_rx) = mpsc::sync_channel(1);
        let (go_tx, go_rx) = mpsc::sync_channel::<CaptureClock>(1);
        let handle = std::thread::Builder::new()
            .name(thread_name.to_string())
            .spawn(move || {
                let (worker, source) = match worker::Worker::open(&spec, outputs, signal) {
                    Ok((worker, source, info)) => {
                        tracing::info!(source = %info.description, video = ?info.video, audio = ?info.audio, "capture opened");
                        let _ = opened_tx.send(Ok(info));
                        (worker, source)
                    }
                    Err(e) => {
                        let _ = opened_tx.send(Err(e));
                        return Ok(());
                    }
                };
                match go_rx.recv() {
                    Ok(clock) => worker.run(source, clock),
                    Err(_) => Ok(()),
                }
            })
            .map_err(CaptureError::Spawn)?;
        Ok(Self {
            name: thread_name.to_string(),
            opened: Some(opened_rx),
            go: Some(go_tx),
            handle: Some(handle),
        })
    }

    /// Waits until the input is open (or failed to open).
    pub fn wait_opened(&mut self) -> Result<SourceInfo, CaptureError> {
        let rx = self
            .opened
            .take()
            .expect("wait_opened is called once per capture thread");
        match rx.recv() {
            Ok(result) => result,
            Err(_) => Err(CaptureError::Panicked(self.name.clone())),
        }
    }

    /// Lets the thread start reading, with `clock` as the pipeline clock.
    pub fn start(&mut self, clock: CaptureClock) {
        if let Some(go) = self.go.take() {
            let _ = go.send(clock);
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn is_finished(&self) -> bool {
        match &self.handle {
            Some(h) => h.is_finished(),
            None => true,
        }
    }

    /// Waits for the thread (which must have been told to stop, or have hung up) and returns
    /// how it ended.
    pub fn join(mut self) -> Result<(), CaptureError> {
        self.go.take();
        match self.handle.take() {
            Some(h) => h
                .join()
                .unwrap_or_else(|_| Err(CaptureError::Panicked(self.name.clone()))),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_pattern_graphs() {
        let v = SourceSpec::TestPatternVideo {
            width: 320,
            height: 240,
            fps: 25,
            sync: false,
        };
        assert_eq!(v.lavfi_graph().unwrap(), "testsrc2=size=320x240:rate=25");
        let a = SourceSpec::TestPatternAudio {
            sample_rate: 48000,
            channels: 2,
            frequency_hz: 440,
            sync: false,
            clock_ppm: 0,
        };
        assert_eq!(
            a.lavfi_graph().unwrap(),
            "sine=frequency=440:sample_rate=48000,aformat=channel_layouts=stereo"
        );
    }

    #[test]
    fn a_source_that_cannot_provide_the_track_is_refused() {
        let spec = SourceSpec::TestPatternAudio {
            sample_rate: 48000,
            channels: 2,
            frequency_hz: 440,
            sync: false,
            clock_ppm: 0,
        };
        let counters = std::sync::Arc::new(CaptureCounters::default());
        let (tx, _rx) = frame_queue(2, counters);
        let outputs = CaptureOutputs {
            video: Some(tx),
            audio: None,
        };
        let err = CaptureThread::spawn("t", spec, outputs, StopSignal::default())
            .err()
            .unwrap();
        assert!(matches!(err, CaptureError::WrongTrack { .. }), "{err}");
    }

    #[test]
    fn invalid_numbers_are_refused_with_the_key_to_fix() {
        let spec = SourceSpec::Alsa {
            device: "default".into(),
            sample_rate: 48000,
            channels: 6,
        };
        let msg = spec.validate().unwrap_err().to_string();
        assert!(msg.contains("[audio] channels"), "{msg}");
    }
}
