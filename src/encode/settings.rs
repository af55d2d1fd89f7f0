//! `[video]` and `[audio]`: what to capture and how to encode it, as written in the file. The
//! encode layer owns these tables because the pipeline ([`super::pipeline`]) is where a source
//! and its encoder meet: the capture keys become a [`SourceSpec`](crate::capture::SourceSpec)
//! (see `broadcast::settings`), the rest go to the encoders as they are. `config` composes
//! them into the file's serde tree and reports [`InvalidSetting`] at the key's line and column.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::video::MIN_REOPEN_INTERVAL;
use crate::setting::InvalidSetting;

/// Where video comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum VideoSource {
    /// A V4L2 camera (`device`, `input_format`, size, fps).
    V4l2,
    /// The built-in test pattern (lavfi testsrc2), paced in real time.
    Test,
    /// A media file (`file`), looped.
    File,
}

/// Which picture or sound a test source makes (`test_pattern` in `[video]` and `[audio]`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TestPattern {
    /// lavfi `testsrc2` (video) or a steady 440 Hz tone (audio).
    #[default]
    Standard,
    /// For measuring A/V sync: a full white frame and a 1 kHz tone, both 100 ms long,
    /// starting together at every whole second of the pipeline clock; black and silent
    /// otherwise (`bench/av_sync.sh` measures the offset of a recording).
    Sync,
}

/// `[video]`: camera and H.264 encoder.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct VideoSettings {
    /// `v4l2`, `test` or `file`.
    pub source: VideoSource,
    /// The V4L2 device (`polypush devices` lists them).
    pub device: PathBuf,
    /// The camera's pixel format, such as `mjpeg` or `yuyv422`; empty: the driver's default.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub input_format: String,
    /// The media file for `source = "file"`; it is played in a loop.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
    /// For `source = "test"`: `standard` (testsrc2) or `sync` (a white flash every second).
    pub test_pattern: TestPattern,
    /// Frame size (even numbers, 160x120..=3840x2160); frames of another size are scaled.
    pub width: u32,
    pub height: u32,
    /// Frames per second (1..=60): sets the GOP length and x264's rate control (timestamps
    /// come from the capture clock, not from this). Polyv's own push client uses 25.
    pub fps: u32,
    /// `libx264` (software) or `h264_v4l2m2m` (the Raspberry Pi's hardware encoder).
    pub encoder: String,
    /// Target bitrate, kbit/s (100..=20000). Capped at the `maxRate` Polyv returns at login.
    pub bitrate_kbps: u32,
    /// libx264 preset: ultrafast … veryslow (ignored by hardware encoders). veryfast suits a
    /// Pi 5 or a small x86 box at 720p.
    pub preset: String,
    /// H.264 profile: baseline, main or high.
    pub profile: String,
    /// Seconds between keyframes (0.5..=10). Polyv recommends 2.
    pub keyframe_interval_s: f64,
    /// VBV buffer in seconds of the target bitrate (0.1..=5): smaller is steadier on a weak
    /// uplink, larger looks better.
    pub vbv_seconds: f64,
    /// Encoder threads; 0 lets the encoder decide.
    pub threads: u32,
    /// Not in the file. Change the bitrate by closing and reopening the encoder even where it
    /// can be changed while running (libx264): the path hardware encoders take, for tests and
    /// as a fallback should an encoder's in-place change misbehave.
    #[serde(skip)]
    pub reopen_on_rate_change: bool,
    /// Not in the file. At most one reopen (see
    /// [`VideoEncoder::reopen`](super::VideoEncoder::reopen)) per this interval, counted from
    /// the first open; a target requested sooner waits and the latest one wins.
    #[serde(skip, default = "min_reopen_interval")]
    pub min_reopen_interval: Duration,
}

fn min_reopen_interval() -> Duration {
    MIN_REOPEN_INTERVAL
}

impl Default for VideoSettings {
    fn default() -> Self {
        Self {
            source: VideoSource::V4l2,
            device: PathBuf::from("/dev/video0"),
            input_format: String::new(),
            file: None,
            test_pattern: TestPattern::Standard,
            width: 1280,
            height: 720,
            fps: 25,
            encoder: "libx264".into(),
            bitrate_kbps: 2500,
            preset: "veryfast".into(),
            profile: "high".into(),
            keyframe_interval_s: 2.0,
            vbv_seconds: 1.0,
            threads: 0,
            reopen_on_rate_change: false,
            min_reopen_interval: MIN_REOPEN_INTERVAL,
        }
    }
}

/// libx264's presets, fastest first.
pub(super) const X264_PRESETS: [&str; 10] = [
    "ultrafast",
    "superfast",
    "veryfast",
    "faster",
    "fast",
    "medium",
    "slow",
    "slower",
    "veryslow",
    "placebo",
];
/// The H.264 profiles polypush asks for.
pub(super) const PROFILES: [&str; 3] = ["baseline", "main", "high"];

impl VideoSettings {
    /// Checks what a box should be configured with; the error names the `video.` key.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        InvalidSetting::check_range("video.width", self.width.into(), 160, 3840)?;
        InvalidSetting::check_range("video.height", self.height.into(), 120, 2160)?;
        if self.width % 2 != 0 || self.height % 2 != 0 {
            return Err(InvalidSetting::new(
                "video.width",
                format!(
                    "{}x{} has an odd side: H.264 with 4:2:0 needs even sizes, such as 1280x720",
                    self.width, self.height
                ),
            ));
        }
        InvalidSetting::check_range("video.fps", self.fps.into(), 1, 60)?;
        InvalidSetting::check_range("video.bitrate_kbps", self.bitrate_kbps.into(), 100, 20_000)?;
        InvalidSetting::check_range("video.threads", self.threads.into(), 0, 16)?;
        if !(0.5..=10.0).contains(&self.keyframe_interval_s) {
            return Err(InvalidSetting::new(
                "video.keyframe_interval_s",
                format!(
                    "{} is out of range: use 0.5 to 10 seconds (Polyv recommends 2)",
                    self.keyframe_interval_s
                ),
            ));
        }
        if !(0.1..=5.0).contains(&self.vbv_seconds) {
            return Err(InvalidSetting::new(
                "video.vbv_seconds",
                format!(
                    "{} is out of range: use 0.1 to 5 seconds (1 is a good default)",
                    self.vbv_seconds
                ),
            ));
        }
        if !X264_PRESETS.contains(&self.preset.as_str()) {
            return Err(InvalidSetting::new(
                "video.preset",
                format!(
                    "{:?} is not a libx264 preset: use one of {}",
                    self.preset,
                    X264_PRESETS.join(", ")
                ),
            ));
        }
        if !PROFILES.contains(&self.profile.as_str()) {
            return Err(InvalidSetting::new(
                "video.profile",
                format!(
                    "{:?} is not supported: use baseline, main or high",
                    self.profile
                ),
            ));
        }
        if self.encoder.trim().is_empty() {
            return Err(InvalidSetting::new(
                "video.encoder",
                "is empty: use libx264, or h264_v4l2m2m on a Raspberry Pi",
            ));
        }
        if self.source == VideoSource::File && self.file.is_none() {
            return Err(InvalidSetting::new(
                "video.source",
                "is \"file\" but [video] file is not set: set file = \"/path/to/lesson.mp4\"",
            ));
        }
        Ok(())
    }
}

/// Where audio comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AudioSource {
    /// An ALSA capture device (`device`).
    Alsa,
    /// The built-in test tone (lavfi sine).
    Test,
    /// The audio track of `[video] file`.
    File,
    /// No audio track.
    None,
}

/// `[audio]`: microphone and AAC encoder.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AudioSettings {
    /// `alsa`, `test`, `file` or `none`.
    pub source: AudioSource,
    /// ALSA device, such as `hw:1,0` or `default` (`polypush devices` lists them).
    pub device: String,
    /// Sample rate, Hz: 44100 or 48000.
    pub sample_rate: u32,
    /// 1 (mono) or 2 (stereo).
    pub channels: u16,
    /// AAC-LC bitrate, kbit/s (32..=320).
    pub bitrate_kbps: u32,
    /// For `source = "test"`: `standard` (a steady 440 Hz tone) or `sync` (a 100 ms 1 kHz beep
    /// every second, with the video's flash).
    pub test_pattern: TestPattern,
    /// For `source = "test"`: the test tone's sample clock runs this many ppm fast (+) or slow
    /// (−) against the pipeline clock (−5000..=5000), as a drifting USB microphone's does.
    pub test_clock_ppm: i32,
}

/// The range of `[audio] test_clock_ppm`.
pub const TEST_CLOCK_PPM_MAX: i32 = 5000;

impl Default for AudioSettings {
    fn default() -> Self {
        Self {
            source: AudioSource::Alsa,
            device: "default".into(),
            sample_rate: 48000,
            channels: 2,
            bitrate_kbps: 128,
            test_pattern: TestPattern::Standard,
            test_clock_ppm: 0,
        }
    }
}

impl AudioSettings {
    /// Checks what a box should be configured with; the error names the `audio.` key.
    /// `video` is the `[video]` table, whose file a `file` source takes its audio from.
    pub fn validate(&self, video: &VideoSettings) -> Result<(), InvalidSetting> {
        if self.source == AudioSource::File && video.source != VideoSource::File {
            return Err(InvalidSetting::new("audio.source", "\"file\" takes the audio of [video] file, so [video] source must be \"file\" too; use alsa, test or none"));
        }
        if ![44_100, 48_000].contains(&self.sample_rate) {
            return Err(InvalidSetting::new(
                "audio.sample_rate",
                format!(
                    "{} Hz is not supported: use 48000 or 44100",
                    self.sample_rate
                ),
            ));
        }
        InvalidSetting::check_range("audio.channels", self.channels.into(), 1, 2)?;
        InvalidSetting::check_range("audio.bitrate_kbps", self.bitrate_kbps.into(), 32, 320)?;
        if self.test_clock_ppm.abs() > TEST_CLOCK_PPM_MAX {
            return Err(InvalidSetting::new(
                "audio.test_clock_ppm",
                format!(
                    "{} is out of range: use -{TEST_CLOCK_PPM_MAX} to {TEST_CLOCK_PPM_MAX} ppm (a USB microphone is typically within 300)",
                    self.test_clock_ppm
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_clock_ppm_is_bounded_and_named() {
        let video = VideoSettings::default();
        let mut a = AudioSettings {
            test_clock_ppm: -5000,
            ..AudioSettings::default()
        };
        assert!(a.validate(&video).is_ok());
        a.test_clock_ppm = 5001;
        let e = a.validate(&video).unwrap_err().to_string();
        assert!(
            e.contains("audio.test_clock_ppm") && e.contains("5000"),
            "{e}"
        );
    }

    #[test]
    fn test_patterns_parse() {
        let a: AudioSettings =
            toml::from_str("source = \"test\"\ntest_pattern = \"sync\"\ntest_clock_ppm = 300")
                .unwrap();
        assert_eq!(a.test_pattern, TestPattern::Sync);
        assert_eq!(a.test_clock_ppm, 300);
        assert!(toml::from_str::<VideoSettings>("test_pattern = \"flash\"").is_err());
    }
}
