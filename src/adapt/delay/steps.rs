//! The frame-rate and resolution step-downs at the bitrate floor: when congestion at the floor
//! lasts, halve the frame rate, then the resolution; undo one step at a time once the target is
//! well above the floor again. Pure bookkeeping on the times and delays it is given; the
//! controller logs the changes.

use super::pct;
use crate::adapt::AdaptConfig;
use std::time::Duration;

/// What one [`Steps::update`] changed: the level after a step down, the level after a step up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) struct StepChange {
    pub(super) down: Option<u8>,
    pub(super) up: Option<u8>,
}

impl StepChange {
    pub(super) fn changed(&self) -> bool {
        self.down.is_some() || self.up.is_some()
    }
}

/// Frame-rate and resolution step-downs at the floor, and their timers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) struct Steps {
    /// 0: none, 1: frame rate halved, 2: and resolution halved.
    level: u8,
    /// Congested at the floor since, and the queue delay then: a step down also needs the
    /// queue not to be draining.
    floor_congested_since: Option<(Duration, u64)>,
    /// Clear and well above the floor since.
    recovered_since: Option<Duration>,
}

impl Steps {
    /// 0: none, 1: frame rate halved, 2: and resolution halved.
    pub(super) fn level(&self) -> u8 {
        self.level
    }

    /// Level 1: frame rate halved.
    pub(super) fn fps_divisor(&self) -> u8 {
        if self.level >= 1 {
            2
        } else {
            1
        }
    }

    /// Level 2: resolution halved as well.
    pub(super) fn scale_divisor(&self) -> u8 {
        if self.level >= 2 {
            2
        } else {
            1
        }
    }

    /// One tick with the target at `video_kbps` and the floor (before this tick's change) at
    /// `floor`: down after congestion at the floor, up once well above it without congestion.
    pub(super) fn update(
        &mut self,
        cfg: &AdaptConfig,
        now: Duration,
        delay: u64,
        video_kbps: u32,
        floor: u32,
    ) -> StepChange {
        let after = Duration::from_secs(cfg.step_down_after_s);
        let congested_at_floor = video_kbps <= floor && delay >= cfg.cut_delay_ms;
        let mut change = StepChange::default();
        if congested_at_floor && self.level < 2 {
            let (since, delay_then) = *self.floor_congested_since.get_or_insert((now, delay));
            if now.saturating_sub(since) >= after {
                self.floor_congested_since = Some((now, delay));
            }
            // Still congested after a whole period, and the queue did not shrink: the floor is
            // more than the link carries. (A queue that drains will be gone without a step.)
            if now.saturating_sub(since) >= after && delay >= delay_then {
                self.level += 1;
                change.down = Some(self.level);
            }
        } else {
            self.floor_congested_since = None;
        }
        let recovered = self.level > 0
            && video_kbps >= pct(cfg.min_kbps, cfg.step_up_above_pct)
            && delay < cfg.cut_delay_ms;
        if recovered {
            let since = *self.recovered_since.get_or_insert(now);
            if now.saturating_sub(since) >= after {
                self.level -= 1;
                self.recovered_since = Some(now);
                change.up = Some(self.level);
            }
        } else {
            self.recovered_since = None;
        }
        change
    }
}
