//! `[health]`: thresholds and hold times of the media-health alarms.

use serde::{Deserialize, Serialize};

use crate::setting::InvalidSetting;

/// `[health]`: the media-health analysis and its alarms (see [`crate::health`]). A hold time
/// of 0 turns that alarm off.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthSettings {
    /// Analyse at all (off: no taps, no thread, no alarms).
    pub enabled: bool,
    /// Every channel's RMS below this (dBFS) …
    pub silence_dbfs: f64,
    /// … for this long raises `silence`; cleared 5 dB above the threshold, at once.
    pub silence_s: u32,
    /// More than this share (%) of the 100 ms blocks with full-scale samples …
    pub clipping_share_pct: f64,
    /// … over this sliding window raises `clipping`.
    pub clipping_window_s: u32,
    /// `clipping` is cleared after this long without a clipped block.
    pub clipping_hold_s: u32,
    /// Mean luma (0..255, full range) below this …
    pub black_luma: u32,
    /// … for this long raises `black`.
    pub black_s: u32,
    /// Mean absolute difference between 1 s samples (8-bit levels) at or below this …
    pub frozen_change: f64,
    /// … for this long raises `frozen`.
    pub frozen_s: u32,
    /// Captured frames per second below this % of the configured rate …
    pub low_fps_pct: u32,
    /// … for this long raises `low_fps`.
    pub low_fps_s: u32,
}

impl Default for HealthSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            silence_dbfs: -50.0,
            silence_s: 60,
            clipping_share_pct: 1.0,
            clipping_window_s: 10,
            clipping_hold_s: 5,
            black_luma: 20,
            black_s: 10,
            frozen_change: 0.02,
            frozen_s: 20,
            low_fps_pct: 60,
            low_fps_s: 10,
        }
    }
}

fn range_f(key: &str, v: f64, lo: f64, hi: f64, unit: &str) -> Result<(), InvalidSetting> {
    if v.is_finite() && (lo..=hi).contains(&v) {
        Ok(())
    } else {
        Err(InvalidSetting::new(
            key,
            format!("{v} is out of range: use {lo} to {hi}{unit}"),
        ))
    }
}

fn range_u(key: &str, v: u32, lo: u32, hi: u32, unit: &str) -> Result<(), InvalidSetting> {
    if (lo..=hi).contains(&v) {
        Ok(())
    } else {
        Err(InvalidSetting::new(
            key,
            format!("{v} is out of range: use {lo} to {hi}{unit}"),
        ))
    }
}

impl HealthSettings {
    /// Every value in its range; the message names the key and the range.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        const OFF: &str = " s (0 turns the alarm off)";
        range_f(
            "health.silence_dbfs",
            self.silence_dbfs,
            -90.0,
            -10.0,
            " dBFS",
        )?;
        range_u("health.silence_s", self.silence_s, 0, 3600, OFF)?;
        range_f(
            "health.clipping_share_pct",
            self.clipping_share_pct,
            0.1,
            100.0,
            " %",
        )?;
        range_u(
            "health.clipping_window_s",
            self.clipping_window_s,
            0,
            600,
            OFF,
        )?;
        range_u("health.clipping_hold_s", self.clipping_hold_s, 1, 600, " s")?;
        range_u(
            "health.black_luma",
            self.black_luma,
            1,
            128,
            " (luma levels, 0..255)",
        )?;
        range_u("health.black_s", self.black_s, 0, 3600, OFF)?;
        range_f(
            "health.frozen_change",
            self.frozen_change,
            0.0,
            10.0,
            " (mean luma levels)",
        )?;
        range_u("health.frozen_s", self.frozen_s, 0, 3600, OFF)?;
        range_u("health.low_fps_pct", self.low_fps_pct, 1, 95, " %")?;
        range_u("health.low_fps_s", self.low_fps_s, 0, 3600, OFF)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_errors_name_the_key_and_range() {
        HealthSettings::default().validate().unwrap();
        let bad = HealthSettings {
            silence_dbfs: 3.0,
            ..HealthSettings::default()
        };
        let e = bad.validate().unwrap_err();
        assert_eq!(e.key, "health.silence_dbfs");
        assert!(e.message.contains("-90 to -10"), "{}", e.message);
        let bad = HealthSettings {
            low_fps_pct: 0,
            ..HealthSettings::default()
        };
        assert_eq!(bad.validate().unwrap_err().key, "health.low_fps_pct");
        let bad = HealthSettings {
            frozen_change: f64::NAN,
            ..HealthSettings::default()
        };
        assert_eq!(bad.validate().unwrap_err().key, "health.frozen_change");
    }
}
