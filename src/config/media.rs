//! `[target]`, `[video]` and `[audio]`: where to push and what to capture and encode.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// `[target]`: the RTMP destination and the send queue.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TargetConfig {
    /// Push here instead of asking Polyv (teacher_login) for the address:
    /// `rtmp://host[:port]/app[/instance]/stream[?query]`. Empty: log in to Polyv.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub url: String,
    /// TCP connect timeout, seconds (1..=60).
    pub connect_timeout_s: u64,
    /// RTMP handshake + connect + publish timeout, seconds (1..=120).
    pub handshake_timeout_s: u64,
    /// Bytes the send queue may hold before video is dropped (64 KiB..=256 MiB).
    pub max_queue_bytes: usize,
    /// Longest wait between reconnect attempts, seconds (1..=600). Attempts never stop.
    pub reconnect_max_delay_s: u64,
    /// A connection that accepts no bytes for this long while media is queued is dropped and
    /// reconnected, seconds (2..=10).
    pub stall_timeout_s: u64,
    /// When Polyv rejects the channel credentials, log in again this often, seconds (30..=3600).
    pub credentials_retry_s: u64,
    /// Added to every timestamp sent, milliseconds (0..=4294967295). 0 for a normal broadcast;
    /// for testing the extended-timestamp range (start near 16777215) and the 2^32 wrap.
    pub timestamp_offset_ms: u64,
}

impl Default for TargetConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            connect_timeout_s: 5,
            handshake_timeout_s: 10,
            max_queue_bytes: 8 << 20,
            reconnect_max_delay_s: 30,
            stall_timeout_s: 10,
            credentials_retry_s: 300,
            timestamp_offset_ms: 0,
        }
    }
}

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

/// `[video]`: camera and H.264 encoder.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct VideoConfig {
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
    /// Frame size (even numbers, 160x120..=3840x2160).
    pub width: u32,
    pub height: u32,
    /// Frames per second (1..=60). Polyv's own push client uses 25.
    pub fps: u32,
    /// `libx264` (software) or `h264_v4l2m2m` (the Raspberry Pi's hardware encoder).
    pub encoder: String,
    /// Target bitrate, kbit/s (100..=20000). Capped at the `maxRate` Polyv returns at login.
    pub bitrate_kbps: u32,
    /// libx264 preset: ultrafast … veryslow. veryfast suits a Pi 5 or a small x86 box at 720p.
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
}

impl Default for VideoConfig {
    fn default() -> Self {
        Self {
            source: VideoSource::V4l2,
            device: PathBuf::from("/dev/video0"),
            input_format: String::new(),
            file: None,
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
        }
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
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AudioConfig {
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
}

impl Default for AudioConfig {
    fn default() -> Self {
        Self {
            source: AudioSource::Alsa,
            device: "default".into(),
            sample_rate: 48000,
            channels: 2,
            bitrate_kbps: 128,
        }
    }
}

impl super::Config {
    /// Switches capture to the built-in test pattern and tone (`polypush run --test-pattern`).
    pub fn use_test_pattern(&mut self) {
        self.video.source = VideoSource::Test;
        if self.audio.source != AudioSource::None {
            self.audio.source = AudioSource::Test;
        }
    }

    pub(super) fn validate_media(&self, src: &super::Source<'_>) -> Result<(), super::ConfigError> {
        let t = &self.target;
        if !t.url.is_empty() && !(t.url.starts_with("rtmp://")) {
            return Err(src.invalid(
                "target.url",
                format!("{:?} is not an rtmp:// URL: use rtmp://host[:port]/app/stream, or leave it empty to log in to Polyv", t.url),
            ));
        }
        range(src, "target.connect_timeout_s", t.connect_timeout_s, 1, 60)?;
        range(
            src,
            "target.handshake_timeout_s",
            t.handshake_timeout_s,
            1,
            120,
        )?;
        range(
            src,
            "target.max_queue_bytes",
            t.max_queue_bytes as u64,
            64 << 10,
            256 << 20,
        )?;

        range(
            src,
            "target.reconnect_max_delay_s",
            t.reconnect_max_delay_s,
            1,
            600,
        )?;
        range(src, "target.stall_timeout_s", t.stall_timeout_s, 2, 10)?;
        range(
            src,
            "target.credentials_retry_s",
            t.credentials_retry_s,
            30,
            3600,
        )?;
        range(
            src,
            "target.timestamp_offset_ms",
            t.timestamp_offset_ms,
            0,
            u64::from(u32::MAX),
        )?;
        let r = &self.record;
        if r.enabled {
            if !r.dir.is_absolute() {
                return Err(src.invalid(
                    "record.dir",
                    format!("{} is not an absolute path: use a directory such as /var/lib/polypush/recordings", r.dir.display()),
                ));
            }
            range(src, "record.segment_s", r.segment_s, 10, 24 * 3600)?;
            range(src, "record.max_total_mb", r.max_total_mb, 64, 16 << 20)?;
            range(src, "record.min_free_mb", r.min_free_mb, 0, 1 << 20)?;
        }

        let v = &self.video;
        range(src, "video.width", v.width as u64, 160, 3840)?;
        range(src, "video.height", v.height as u64, 120, 2160)?;
        if v.width % 2 != 0 || v.height % 2 != 0 {
            return Err(src.invalid(
                "video.width",
                format!(
                    "{}x{} has an odd side: H.264 with 4:2:0 needs even sizes, such as 1280x720",
                    v.width, v.height
                ),
            ));
        }
        range(src, "video.fps", v.fps as u64, 1, 60)?;
        range(
            src,
            "video.bitrate_kbps",
            v.bitrate_kbps as u64,
            100,
            20_000,
        )?;
        range(src, "video.threads", v.threads as u64, 0, 16)?;
        if !(0.5..=10.0).contains(&v.keyframe_interval_s) {
            return Err(src.invalid(
                "video.keyframe_interval_s",
                format!(
                    "{} is out of range: use 0.5 to 10 seconds (Polyv recommends 2)",
                    v.keyframe_interval_s
                ),
            ));
        }
        if !(0.1..=5.0).contains(&v.vbv_seconds) {
            return Err(src.invalid(
                "video.vbv_seconds",
                format!(
                    "{} is out of range: use 0.1 to 5 seconds (1 is a good default)",
                    v.vbv_seconds
                ),
            ));
        }
        const PRESETS: [&str; 10] = [
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
        if !PRESETS.contains(&v.preset.as_str()) {
            return Err(src.invalid(
                "video.preset",
                format!(
                    "{:?} is not a libx264 preset: use one of {}",
                    v.preset,
                    PRESETS.join(", ")
                ),
            ));
        }
        if !["baseline", "main", "high"].contains(&v.profile.as_str()) {
            return Err(src.invalid(
                "video.profile",
                format!(
                    "{:?} is not supported: use baseline, main or high",
                    v.profile
                ),
            ));
        }
        if v.encoder.trim().is_empty() {
            return Err(src.invalid(
                "video.encoder",
                "is empty: use libx264, or h264_v4l2m2m on a Raspberry Pi",
            ));
        }
        if v.source == VideoSource::File && v.file.is_none() {
            return Err(src.invalid(
                "video.source",
                "is \"file\" but [video] file is not set: set file = \"/path/to/lesson.mp4\"",
            ));
        }

        let a = &self.audio;
        if a.source == AudioSource::File && v.source != VideoSource::File {
            return Err(src.invalid("audio.source", "\"file\" takes the audio of [video] file, so [video] source must be \"file\" too; use alsa, test or none"));
        }
        if ![44_100, 48_000].contains(&a.sample_rate) {
            return Err(src.invalid(
                "audio.sample_rate",
                format!("{} Hz is not supported: use 48000 or 44100", a.sample_rate),
            ));
        }
        range(src, "audio.channels", a.channels as u64, 1, 2)?;
        range(src, "audio.bitrate_kbps", a.bitrate_kbps as u64, 32, 320)?;
        Ok(())
    }
}

fn range(
    src: &super::Source<'_>,
    key: &str,
    v: u64,
    lo: u64,
    hi: u64,
) -> Result<(), super::ConfigError> {
    if (lo..=hi).contains(&v) {
        Ok(())
    } else {
        Err(src.invalid(key, format!("{v} is out of range: use {lo} to {hi}")))
    }
}

/// `[record]`: the safety recording, written from the same encoded packets as the broadcast,
/// also while the uplink is down.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RecordConfig {
    /// Keep a local recording of everything encoded.
    pub enabled: bool,
    /// Where segments go (absolute; systemd's StateDirectory is /var/lib/polypush).
    pub dir: PathBuf,
    /// Segment length, seconds (10..=86400); segments are cut at keyframes.
    pub segment_s: u64,
    /// Disk quota for all segments, MiB (64..); the oldest segments are deleted first.
    pub max_total_mb: u64,
    /// Keep at least this much free on the filesystem, MiB; the oldest segments go first.
    pub min_free_mb: u64,
}

impl Default for RecordConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            dir: PathBuf::from("/var/lib/polypush/recordings"),
            segment_s: 600,
            max_total_mb: 4096,
            min_free_mb: 512,
        }
    }
}
