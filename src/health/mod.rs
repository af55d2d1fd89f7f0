//! Media health: is the broadcast worth watching? Audio levels and five alarms (`silence`,
//! `clipping`, `black`, `frozen`, `low_fps`) computed beside capture on small samples, and the
//! `[health]` settings ([`HealthSettings`]).
//!
//! Pure: every function takes the time as an argument (seconds on any monotonic origin), so
//! the timing is tested exactly. The threads and taps that feed it live in the pipeline
//! (`encode::pipeline::health`):
//! - audio: the AAC encoder meters what swresample wrote into its FIFO ([`BlockMeter`]), so
//!   only captured sound is measured, never the silence the pipeline pads with; one
//!   [`AudioBlock`] per 100 ms goes to the `polypush-media-health` thread;
//! - video: once a second, before the frame-rate decimator, the captured picture is area-scaled
//!   to a 160x90 `GRAY8` plane ([`LUMA_WIDTH`] x [`LUMA_HEIGHT`]) in an owned buffer and handed
//!   over with `try_send` (the encoder never waits, and no capture buffer is kept);
//! - frame rate: deltas of the captured-frame counter, read by the health thread every second.
//!
//! What is measured ([`HealthCore`]):
//! - a PPM-like meter per channel: each 100 ms block's sample peak with instant attack, held
//!   1 s, then falling 11.76 dB/s (IEC 60268-10 type I: 20 dB in 1.7 s); the block's RMS; both
//!   in dBFS, floored at −90;
//! - `silence`: every channel's RMS below `silence_dbfs` for `silence_s`; cleared at once when
//!   a channel is 5 dB above the threshold;
//! - `clipping`: a block is clipped when a channel has 3 samples in a row at full scale
//!   (|x| ≥ 0.999); raised when more than `clipping_share_pct` % of the blocks of the last
//!   `clipping_window_s` are clipped; cleared after `clipping_hold_s` without a clipped block;
//! - `black`: mean luma (0..255, full range) below `black_luma` for `black_s`; cleared when a
//!   sample is 5 levels above;
//! - `frozen`: the mean absolute difference of two 1 s samples at or below `frozen_change` for
//!   `frozen_s`; cleared when it is above twice that (and above 0.02). A black picture is
//!   reported as black, not frozen;
//! - `low_fps`: frames captured per second below `low_fps_pct` % of the configured rate for
//!   `low_fps_s`; cleared at 10 points above.
//!
//! Each alarm is raised and cleared once per change ([`Change`], logged WARN raised, INFO
//! cleared by the caller) and counted. While a track's device is reconnecting (the pipeline
//! fills with stills or silence then), its alarms are cleared and paused, and its state reads
//! `reconnecting`. Media alarms are warnings: they do not make `/healthz` unhealthy (the
//! broadcast is up; a silent microphone is for a person to fix, not for systemd to restart).
//!
//! A hold time of 0 turns that alarm off; `enabled = false` turns the whole analysis off (no
//! taps, no thread).

mod core;
mod meter;
mod settings;

pub use self::core::{Alarm, AlarmStatus, Change, HealthCore, MediaReport, TrackHealth};
pub use meter::{
    dbfs, AudioBlock, BlockMeter, ChannelBlock, ChannelLevel, Ppm, CLIP_LEVEL, FLOOR_DBFS,
    MAX_CHANNELS,
};
pub use settings::HealthSettings;

/// Width of the luma plane the video checks look at.
pub const LUMA_WIDTH: u32 = 160;
/// Height of the luma plane the video checks look at.
pub const LUMA_HEIGHT: u32 = 90;
