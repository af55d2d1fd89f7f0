//! `[adapt]`: every knob of the bitrate controller, with its default and its valid range.
//!
//! The defaults are what the scenario tests (`tests/adapt_scenarios/`) were tuned and checked
//! with; a deployment should not need to touch them beyond `min_kbps` and the step-downs.

use crate::setting::InvalidSetting;
use serde::{Deserialize, Serialize};

/// `[adapt]`: how the video bitrate follows the uplink.
///
/// The configured rate (`video.bitrate_kbps`, capped by Polyv's `maxRate`) is the ceiling;
/// nothing here raises the bitrate above it.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdaptConfig {
    /// Follow the uplink at all (true/false). Off: the encoder keeps the configured rate and
    /// only the ring's drops protect the delay.
    pub enabled: bool,
    /// The floor, kbit/s of video (50..=20000). The controller never asks for less (unless a
    /// frame-rate or resolution step-down is in force, see `step_down`), so below
    /// `min_kbps` + audio the ring's GOP drops take over.
    pub min_kbps: u32,
    /// Queue delay that means congestion, ms (100..=5000): ring delay plus what the kernel and
    /// our own send queue hold, as time at the measured delivery rate. OBS uses 200 ms of its
    /// own queue only; ours also sees the kernel's send buffer, which holds the first few
    /// hundred ms of any backlog, so 300 ms here reacts about as early.
    pub cut_delay_ms: u64,
    /// Queue delay under which the queue counts as clear, ms (20..=`cut_delay_ms` - 50).
    /// Raises need a clear queue; between the two thresholds nothing changes (hysteresis).
    pub clear_delay_ms: u64,
    /// Queue delay at which the ring starts dropping video GOP-aware, ms (1000..=30000, and at
    /// least 3 × `cut_delay_ms`). Not used by the controller; the broadcast passes it to the
    /// ring (in place of `target.max_queue_delay_ms` while adaptation is enabled) so that
    /// dropping stays the last resort, well behind the cuts. It bounds the whole wait: what
    /// the kernel holds beyond the path's floor comes off the ring's share (down to a quarter,
    /// see `Ring::set_outside_delay`).
    pub hard_delay_ms: u64,
    /// Sliding window of the delivery-rate and peak-rate measurements, ms (500..=10000).
    /// Shorter follows a changing link faster; longer smooths TCP's bursty acknowledgements.
    /// Keep it at least a GOP (keyframe interval) long, so the peak sees a keyframe burst.
    pub rate_window_ms: u64,
    /// Span of the link-rate measurement, ms (100..=`rate_window_ms`): the delivery rate over
    /// the last this-long while media waited, which is the link's capacity. Short enough to
    /// see a link that just fell, long enough to average a few acknowledgements.
    pub link_span_ms: u64,
    /// Window of the base-delay filter, seconds (10..=3600): the smallest kernel delay seen in
    /// it is taken as bytes in flight (the path's round trip), not queue, and subtracted.
    /// Longer is safer against a queue that never drains; shorter follows a route change.
    pub base_window_s: u64,
    /// No delivery progress for this long while bytes wait means a stalled link, ms
    /// (100..=10000): the controller holds instead of cutting on a rate of zero.
    pub stall_ms: u64,
    /// A cut aims at this share of what the measured link carries beside audio,
    /// `(link − audio) × safety`, percent (50..=95). The rest drains the queue and absorbs
    /// the estimate's error; OBS aims at 100 % of its estimate, which never drains it.
    pub safety_pct: u32,
    /// A cut also drains the standing queue above `clear_delay_ms` within this time, ms
    /// (500..=60000): a deeper cut when more is queued.
    pub drain_ms: u64,
    /// Shortest time between two cuts, ms (100..=10000). A second cut also needs the delay to
    /// have grown since the first, so a queue that is draining is left to drain.
    pub cut_interval_ms: u64,
    /// The queue must be clear this long before a raise, and fast raises are this far apart,
    /// ms (250..=30000).
    pub raise_interval_ms: u64,
    /// The smallest multiplicative raise, percent per `raise_interval_ms` (1..=100). Taken
    /// only when the link's peak delivery rate reaches it; a raise then goes as far as that
    /// peak less `safety_pct`, at most a doubling. belacoder adds ~3 % per 0.5 s, OBS 10 % of
    /// the configured rate per 4 s: both slow on the way back from a deep cut.
    pub fast_raise_pct: u32,
    /// Band around the remembered congestion rate (the "ceiling"), percent of it (1..=50).
    /// Below `ceiling − band` raises close half the gap at once; above it they are additive
    /// probes up to `ceiling − band/2`, where the target stays unless bursts show more than
    /// `ceiling + band`. Once bursts have misled (a shaper), a ceiling test goes from the
    /// band to `ceiling + 2 × band` instead (see `ceiling_test_ms`). Congestion within the
    /// band of the old ceiling confirms it.
    pub near_pct: u32,
    /// One additive probe, percent of the ceiling (or of the configured rate without one)
    /// (1..=50).
    pub probe_pct: u32,
    /// Time between additive probes, ms (250..=60000). The first probe after a cut waits this
    /// doubled for each time congestion came back near the same ceiling, up to
    /// `probe_interval_max_ms`, so a link that stays the same is probed less and less.
    pub probe_interval_ms: u64,
    /// Upper bound of the doubled probe interval, ms (`probe_interval_ms`..=300000).
    pub probe_interval_max_ms: u64,
    /// How long a ceiling test lasts, ms (1000..=60000). On a path where bursts misled, the
    /// target goes to `ceiling + 2 × near_pct` after the (doubled) probe interval and must
    /// keep the queue clear this long, exercised, before the ceiling counts as passed and
    /// raises are multiplicative again. It has to outlast a shaper's token bucket: a
    /// burst allowance of B bytes hides an excess of E bit/s for 8·B/E seconds (32 KB at
    /// 20 % of 1 Mbit/s: 1.3 s), after which the queue shows and the test fails.
    pub ceiling_test_ms: u64,
    /// Forget the ceiling after this long without congestion, seconds (5..=3600): the one
    /// periodic re-probe of a link that never shows room in bursts. Forgetting it also
    /// trusts burst evidence again.
    pub ceiling_forget_s: u64,
    /// At the floor with congestion going on for `step_down_after_s`, suggest halving the
    /// frame rate, then the resolution (true/false). Off by default: the encoder must support
    /// it, and the ring's drops are an acceptable last resort for short spells.
    pub step_down: bool,
    /// How long congestion must last at the floor (with the queue not draining) before a step
    /// down, and be absent before a step up, seconds (2..=600).
    pub step_down_after_s: u64,
    /// Undo a step down once the target is this far above `min_kbps`, percent (110..=1000).
    pub step_up_above_pct: u32,
    /// Raises beyond additive probes need the link to have delivered at least this share of
    /// target + audio over the window, percent (0..=100): the target is actually exercised.
    /// A still scene that encodes small makes small bursts, which prove nothing.
    pub headroom_fill_pct: u32,
}

impl Default for AdaptConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            min_kbps: 300,
            cut_delay_ms: 300,
            clear_delay_ms: 150,
            hard_delay_ms: 1000,
            rate_window_ms: 2000,
            link_span_ms: 300,
            base_window_s: 120,
            stall_ms: 300,
            safety_pct: 85,
            drain_ms: 3000,
            cut_interval_ms: 500,
            raise_interval_ms: 1000,
            fast_raise_pct: 20,
            near_pct: 10,
            probe_pct: 5,
            probe_interval_ms: 2000,
            probe_interval_max_ms: 16000,
            ceiling_test_ms: 4000,
            ceiling_forget_s: 60,
            step_down: false,
            step_down_after_s: 10,
            step_up_above_pct: 200,
            headroom_fill_pct: 70,
        }
    }
}

fn range<T: PartialOrd + std::fmt::Display + Copy>(
    key: &'static str,
    value: T,
    lo: T,
    hi: T,
    unit: &str,
) -> Result<(), InvalidSetting> {
    if value < lo || value > hi {
        return Err(InvalidSetting::new(
            key,
            format!("{value} is out of range: use {lo} to {hi}{unit}"),
        ));
    }
    Ok(())
}

impl AdaptConfig {
    /// Checks every range and the relations between keys. The error names the key.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        range("adapt.min_kbps", self.min_kbps, 50, 20_000, " kbit/s")?;
        range("adapt.cut_delay_ms", self.cut_delay_ms, 100, 5000, " ms")?;
        range(
            "adapt.clear_delay_ms",
            self.clear_delay_ms,
            20,
            self.cut_delay_ms - 50,
            " ms (below adapt.cut_delay_ms by at least 50 ms)",
        )?;
        range(
            "adapt.hard_delay_ms",
            self.hard_delay_ms,
            (3 * self.cut_delay_ms).max(1000),
            30_000,
            " ms (at least 3 × adapt.cut_delay_ms, so the ring drops only after the cuts)",
        )?;
        range(
            "adapt.rate_window_ms",
            self.rate_window_ms,
            500,
            10_000,
            " ms",
        )?;
        range(
            "adapt.link_span_ms",
            self.link_span_ms,
            100,
            self.rate_window_ms,
            " ms (at most adapt.rate_window_ms)",
        )?;
        range("adapt.base_window_s", self.base_window_s, 10, 3600, " s")?;
        range("adapt.stall_ms", self.stall_ms, 100, 10_000, " ms")?;
        range("adapt.safety_pct", self.safety_pct, 50, 95, " %")?;
        range("adapt.drain_ms", self.drain_ms, 500, 60_000, " ms")?;
        range(
            "adapt.cut_interval_ms",
            self.cut_interval_ms,
            100,
            10_000,
            " ms",
        )?;
        range(
            "adapt.raise_interval_ms",
            self.raise_interval_ms,
            250,
            30_000,
            " ms",
        )?;
        range("adapt.fast_raise_pct", self.fast_raise_pct, 1, 100, " %")?;
        range("adapt.near_pct", self.near_pct, 1, 50, " %")?;
        range("adapt.probe_pct", self.probe_pct, 1, 50, " %")?;
        range(
            "adapt.probe_interval_ms",
            self.probe_interval_ms,
            250,
            60_000,
            " ms",
        )?;
        range(
            "adapt.probe_interval_max_ms",
            self.probe_interval_max_ms,
            self.probe_interval_ms,
            300_000,
            " ms (at least adapt.probe_interval_ms)",
        )?;
        range(
            "adapt.ceiling_test_ms",
            self.ceiling_test_ms,
            1000,
            60_000,
            " ms",
        )?;
        range(
            "adapt.ceiling_forget_s",
            self.ceiling_forget_s,
            5,
            3600,
            " s",
        )?;
        range(
            "adapt.step_down_after_s",
            self.step_down_after_s,
            2,
            600,
            " s",
        )?;
        range(
            "adapt.step_up_above_pct",
            self.step_up_above_pct,
            110,
            1000,
            " %",
        )?;
        range(
            "adapt.headroom_fill_pct",
            self.headroom_fill_pct,
            0,
            100,
            " %",
        )?;
        Ok(())
    }

    /// Checks `min_kbps` against the configured video rate, which lives in `[video]`.
    pub fn validate_with_video(&self, video_kbps: u32) -> Result<(), InvalidSetting> {
        self.validate()?;
        if self.enabled && self.min_kbps > video_kbps {
            return Err(InvalidSetting::new(
                "adapt.min_kbps",
                format!(
                    "{} is above video.bitrate_kbps ({video_kbps}): the floor must be at or below the configured rate",
                    self.min_kbps
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
    fn defaults_are_valid() {
        AdaptConfig::default().validate().unwrap();
        AdaptConfig::default().validate_with_video(2500).unwrap();
    }

    #[test]
    fn errors_name_the_key() {
        let bad = |f: fn(&mut AdaptConfig)| {
            let mut c = AdaptConfig::default();
            f(&mut c);
            c.validate().unwrap_err()
        };
        assert_eq!(bad(|c| c.cut_delay_ms = 50).key, "adapt.cut_delay_ms");
        assert_eq!(bad(|c| c.clear_delay_ms = 280).key, "adapt.clear_delay_ms");
        assert_eq!(bad(|c| c.hard_delay_ms = 800).key, "adapt.hard_delay_ms");
        assert_eq!(bad(|c| c.safety_pct = 100).key, "adapt.safety_pct");
        assert_eq!(bad(|c| c.link_span_ms = 5000).key, "adapt.link_span_ms");
        assert_eq!(
            bad(|c| c.probe_interval_max_ms = 1000).key,
            "adapt.probe_interval_max_ms"
        );
        assert_eq!(bad(|c| c.min_kbps = 10).key, "adapt.min_kbps");
        assert_eq!(bad(|c| c.fast_raise_pct = 0).key, "adapt.fast_raise_pct");
        let e = bad(|c| c.hard_delay_ms = 500);
        assert!(
            e.to_string()
                .starts_with("adapt.hard_delay_ms: 500 is out of range"),
            "{e}"
        );
    }

    #[test]
    fn floor_above_video_rate_is_an_error() {
        let c = AdaptConfig {
            min_kbps: 3000,
            ..AdaptConfig::default()
        };
        let e = c.validate_with_video(2500).unwrap_err();
        assert_eq!(e.key, "adapt.min_kbps");
        assert!(e.message.contains("video.bitrate_kbps (2500)"), "{e}");
    }

    #[test]
    fn toml_uses_defaults_and_rejects_unknown_keys() {
        let c: AdaptConfig = toml::from_str("cut_delay_ms = 400\n").unwrap();
        assert_eq!(c.cut_delay_ms, 400);
        assert_eq!(c.min_kbps, AdaptConfig::default().min_kbps);
        let e = toml::from_str::<AdaptConfig>("cut_delay = 400\n").unwrap_err();
        assert!(e.to_string().contains("unknown field `cut_delay`"), "{e}");
    }
}
