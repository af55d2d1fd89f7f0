//! What one broadcast runs with: each stage's own settings value, built from the loaded
//! [`Config`] and the command line by [`BroadcastSettings::from_config`]. The loaded config is
//! never changed; a reload builds new values from the new file, and what a broadcast learns
//! while it runs (Polyv's bitrate limit for the channel) is applied to these values, not to
//! the config.

use std::path::PathBuf;
use std::time::Duration;

use crate::adapt::AdaptConfig;
use crate::capture::SourceSpec;
use crate::config::Config;
use crate::encode::{AudioSource, PipelineConfig, TestPattern, VideoSource};
use crate::platform::PolyvSettings;
use crate::record::RecordConfig;
use crate::ring::RingConfig;
use crate::rtmp::{BackoffConfig, ConnectOptions, RtmpUrl, SenderOptions, MAX_STALL_TIMEOUT};

use super::RunError;
use crate::setting::InvalidSetting;

/// How one `run` is invoked, beyond the config file.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Push here instead of logging in to Polyv (overrides `[target] url`).
    pub url: Option<String>,
    /// Capture the built-in test pattern and tone instead of the configured devices.
    pub test_pattern: bool,
    /// Show the live status line (on a TTY).
    pub status_line: bool,
    /// Append one JSON line of live numbers per second here (tests, benchmarks, field logs).
    pub stats_file: Option<PathBuf>,
}

/// Where the stream goes.
#[derive(Debug, Clone)]
pub enum Destination {
    /// A fixed push address (`--url` or `[target] url`): no Polyv at all.
    Url(RtmpUrl),
    /// Polyv's address for the channel, from `teacher_login`.
    Polyv(PolyvSettings),
}

/// Every stage's settings for one broadcast.
#[derive(Debug, Clone)]
pub struct BroadcastSettings {
    pub destination: Destination,
    /// Capture sources and encoders.
    pub media: PipelineConfig,
    pub ring: RingConfig,
    pub sender: SenderOptions,
    /// The safety recording; `None` when off.
    pub record: Option<RecordConfig>,
    /// Bitrate adaptation (`enabled` inside).
    pub adapt: AdaptConfig,
    /// `[target] timestamp_offset_ms`, added to every timestamp.
    pub timestamp_offset_ms: u64,
    pub options: RunOptions,
}

impl BroadcastSettings {
    /// The settings `cfg` and `opts` describe. Fails only on what cannot work at all: a push
    /// address that does not parse, or Polyv without a channel password.
    pub fn from_config(cfg: &Config, opts: &RunOptions) -> Result<Self, RunError> {
        let url = opts
            .url
            .clone()
            .or_else(|| (!cfg.target.url.is_empty()).then(|| cfg.target.url.clone()));
        let destination = match url {
            Some(url) => Destination::Url(RtmpUrl::parse(&url)?),
            None if !cfg.polyv.is_configured() => {
                return Err(InvalidSetting::new(
                    "target.url",
                    "no push address: set url under [target] (or pass --url), or configure \
                     [polyv] with channel_id and password_file to push to Polyv",
                )
                .into())
            }
            None => {
                cfg.polyv.password()?;
                Destination::Polyv(cfg.polyv.clone())
            }
        };
        let r = &cfg.record;
        Ok(Self {
            destination,
            media: media_settings(cfg, opts.test_pattern),
            ring: RingConfig {
                max_bytes: cfg.target.max_queue_bytes,
                // Dropping is the last resort, well behind the controller's cuts.
                max_delay_ms: cfg.adapt.hard_delay_ms,
            },
            sender: sender_options(cfg),
            record: r.enabled.then(|| RecordConfig {
                dir: r.dir.clone(),
                segment_s: r.segment_s,
                max_total_bytes: r.max_total_mb << 20,
                min_free_bytes: r.min_free_mb << 20,
                ..RecordConfig::default()
            }),
            adapt: cfg.adapt.clone(),
            timestamp_offset_ms: cfg.target.timestamp_offset_ms,
            options: opts.clone(),
        })
    }

    /// The audio bitrate on the link, kbit/s (0 without an audio track): it shares the
    /// uplink with video and is never adapted.
    pub fn audio_kbps(&self) -> u32 {
        self.media.audio_encoder.bitrate_kbps * u32::from(self.media.audio_source.is_some())
    }
}

/// The capture sources and encoders `cfg` describes (`test_pattern`: the built-in test
/// pattern and tone in place of the devices, as `--test-pattern` asks).
pub fn media_settings(cfg: &Config, test_pattern: bool) -> PipelineConfig {
    let v = &cfg.video;
    let a = &cfg.audio;
    let file = v.file.clone().unwrap_or_default();
    let video_source = if test_pattern {
        VideoSource::Test
    } else {
        v.source
    };
    let audio_source = match a.source {
        AudioSource::None => AudioSource::None,
        _ if test_pattern => AudioSource::Test,
        s => s,
    };
    let video_source = Some(match video_source {
        VideoSource::V4l2 => SourceSpec::V4l2 {
            device: v.device.clone(),
            input_format: (!v.input_format.is_empty()).then(|| v.input_format.clone()),
            width: v.width,
            height: v.height,
            fps: v.fps,
        },
        VideoSource::Test => SourceSpec::TestPatternVideo {
            width: v.width,
            height: v.height,
            fps: v.fps,
            sync: v.test_pattern == TestPattern::Sync,
        },
        VideoSource::File => SourceSpec::File {
            path: file.clone(),
            looped: true,
        },
    });
    let audio_source = match audio_source {
        AudioSource::Alsa => Some(SourceSpec::Alsa {
            device: a.device.clone(),
            sample_rate: a.sample_rate,
            channels: a.channels,
        }),
        AudioSource::Test => Some(SourceSpec::TestPatternAudio {
            sample_rate: a.sample_rate,
            channels: a.channels,
            frequency_hz: 440,
            sync: a.test_pattern == TestPattern::Sync,
            clock_ppm: a.test_clock_ppm,
        }),
        AudioSource::File => Some(SourceSpec::File {
            path: file,
            looped: true,
        }),
        AudioSource::None => None,
    };
    PipelineConfig {
        video_source,
        audio_source,
        video_encoder: v.clone(),
        audio_encoder: a.clone(),
        health: cfg.health.clone(),
    }
}

/// The sender's options from `[target]`.
pub fn sender_options(cfg: &Config) -> SenderOptions {
    let t = &cfg.target;
    SenderOptions {
        connect: ConnectOptions {
            connect_timeout: Duration::from_secs(t.connect_timeout_s),
            setup_timeout: Duration::from_secs(t.handshake_timeout_s),
            congestion: (!t.congestion.is_empty()).then(|| t.congestion.clone()),
            ..ConnectOptions::default()
        },
        backoff: BackoffConfig {
            cap: Duration::from_secs(t.reconnect_max_delay_s),
            ..BackoffConfig::default()
        },
        stall_timeout: Duration::from_secs(t.stall_timeout_s).min(MAX_STALL_TIMEOUT),
        credentials_retry: Duration::from_secs(t.credentials_retry_s),
        ..SenderOptions::default()
    }
}
