//! Applying the adaptation controller's [`Target`] to the video encoder: when a requested
//! target reaches the encoder ([`TargetGate`]), which captured frames a lowered frame rate
//! leaves out ([`Decimator`]), and the lock-free cell a target crosses threads in
//! ([`TargetCell`]). Pure: time is an argument.
//!
//! - A bitrate change on an encoder that can change its rate while running (libx264, see
//!   [`VideoSettings::changes_rate_in_place`]) is applied at the next frame, always.
//! - Everything else reopens the encoder ([`super::VideoEncoder::reopen`]): a bitrate change
//!   on any other encoder (`h264_v4l2m2m`), and any change of the frame-rate or size divisor.
//!   Reopens are rate limited to one per [`VideoSettings::min_reopen_interval`],
//!   counted from the encoder's first open; a target requested sooner waits, and the latest
//!   request wins when the interval has passed (nothing is lost, nothing stale is applied).
//!   Meanwhile an encoder that can change its rate in place follows the requested bitrate.
//!
//! [`VideoSettings::changes_rate_in_place`]: super::VideoSettings::changes_rate_in_place
//! [`VideoSettings::min_reopen_interval`]: super::VideoSettings::min_reopen_interval

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub use crate::adapt::Target;

/// The largest frame-rate or size divisor applied; larger ones are clamped to it (the
/// controller asks for 1 or 2).
pub(super) const MAX_DIVISOR: u8 = 4;
/// The bitrate range an encoder accepts, kbit/s (as `[video] bitrate_kbps`).
pub(super) const MIN_KBPS: u32 = 50;
pub(super) const MAX_KBPS: u32 = 100_000;

/// `target` within what the encoder accepts: bitrate in [`MIN_KBPS`]..=[`MAX_KBPS`],
/// divisors in 1..=[`MAX_DIVISOR`] (0 means 1).
pub(super) fn normalized(target: Target) -> Target {
    Target {
        video_kbps: target.video_kbps.clamp(MIN_KBPS, MAX_KBPS),
        fps_divisor: target.fps_divisor.clamp(1, MAX_DIVISOR),
        scale_divisor: target.scale_divisor.clamp(1, MAX_DIVISOR),
    }
}

/// What the encode loop does with the encoder before the next frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Step {
    /// Nothing to change.
    Keep,
    /// Change the bitrate of the running encoder to this many kbit/s.
    InPlace(u32),
    /// Close the encoder and open it again for this target.
    Reopen(Target),
}

/// Decides when a requested [`Target`] reaches the encoder (see the module docs).
#[derive(Debug, Clone)]
pub(super) struct TargetGate {
    /// What the encoder runs at (or will, once the step returned last is done).
    applied: Target,
    /// The latest request not applied yet.
    pending: Option<Target>,
    last_reopen: Instant,
    min_interval: Duration,
    in_place: bool,
}

impl TargetGate {
    /// `applied` is what the encoder was opened with at `opened_at` (which counts as a reopen
    /// for the rate limit: a hardware encoder is not closed again right after its first open).
    pub(super) fn new(
        applied: Target,
        in_place: bool,
        min_interval: Duration,
        opened_at: Instant,
    ) -> Self {
        Self {
            applied: normalized(applied),
            pending: None,
            last_reopen: opened_at,
            min_interval,
            in_place,
        }
    }

    /// A new target from the controller; it replaces any request still waiting.
    pub(super) fn request(&mut self, target: Target) {
        self.pending = Some(normalized(target));
    }

    /// What the encoder runs at.
    #[cfg(test)]
    pub(super) fn applied(&self) -> Target {
        self.applied
    }

    /// A request waiting for the rate limit.
    #[cfg(test)]
    pub(super) fn pending(&self) -> Option<Target> {
        self.pending
    }

    /// The step to take before the frame at `now`. The gate assumes it is taken.
    pub(super) fn poll(&mut self, now: Instant) -> Step {
        let Some(want) = self.pending else {
            return Step::Keep;
        };
        if want == self.applied {
            self.pending = None;
            return Step::Keep;
        }
        let shape_changes = want.fps_divisor != self.applied.fps_divisor
            || want.scale_divisor != self.applied.scale_divisor;
        if self.in_place && !shape_changes {
            self.applied.video_kbps = want.video_kbps;
            self.pending = None;
            return Step::InPlace(want.video_kbps);
        }
        if now.saturating_duration_since(self.last_reopen) >= self.min_interval {
            self.applied = want;
            self.pending = None;
            self.last_reopen = now;
            return Step::Reopen(want);
        }
        // Deferred. An encoder that can follow the bitrate in place does so meanwhile.
        if self.in_place && want.video_kbps != self.applied.video_kbps {
            self.applied.video_kbps = want.video_kbps;
            return Step::InPlace(want.video_kbps);
        }
        Step::Keep
    }

    /// A reopen was refused and the encoder runs `running` again; the refused target is not
    /// retried until the controller asks for another.
    pub(super) fn refused(&mut self, running: Target) {
        self.applied = normalized(running);
    }
}

/// Keeps one captured frame in `divisor`, by time: a frame is kept when it comes at least
/// `divisor` nominal frame intervals, less half an interval, after the last one kept. Jitter
/// and frames already dropped upstream therefore do not change the output rate, and the kept
/// frames keep their capture timestamps.
#[derive(Debug, Clone)]
pub(super) struct Decimator {
    interval_us: i64,
    last_kept_us: Option<i64>,
}

impl Decimator {
    /// For a source at `fps` (the configured frame rate).
    pub(super) fn new(fps: u32) -> Self {
        Self {
            interval_us: 1_000_000 / i64::from(fps.max(1)),
            last_kept_us: None,
        }
    }

    /// Whether the frame captured at `pts_us` is encoded at frame-rate divisor `divisor`.
    pub(super) fn keep(&mut self, pts_us: i64, divisor: u8) -> bool {
        if divisor > 1 {
            let min_gap = i64::from(divisor) * self.interval_us - self.interval_us / 2;
            if self
                .last_kept_us
                .is_some_and(|last| pts_us.saturating_sub(last) < min_gap)
            {
                return false;
            }
        }
        self.last_kept_us = Some(pts_us);
        true
    }
}

/// A [`Target`] shared between threads without a lock: empty, or one target.
#[derive(Debug, Default)]
pub(super) struct TargetCell(AtomicU64);

const PRESENT: u64 = 1 << 63;

impl TargetCell {
    pub(super) fn store(&self, target: Target) {
        self.0.store(pack(target), Ordering::Relaxed);
    }

    /// Takes the target out, leaving the cell empty.
    pub(super) fn take(&self) -> Option<Target> {
        unpack(self.0.swap(0, Ordering::Relaxed))
    }

    pub(super) fn load(&self) -> Option<Target> {
        unpack(self.0.load(Ordering::Relaxed))
    }
}

fn pack(t: Target) -> u64 {
    PRESENT
        | (u64::from(t.video_kbps) << 16)
        | (u64::from(t.fps_divisor) << 8)
        | u64::from(t.scale_divisor)
}

fn unpack(v: u64) -> Option<Target> {
    (v & PRESENT != 0).then_some(Target {
        video_kbps: ((v >> 16) & 0xffff_ffff) as u32,
        fps_divisor: ((v >> 8) & 0xff) as u8,
        scale_divisor: (v & 0xff) as u8,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(video_kbps: u32, fps_divisor: u8, scale_divisor: u8) -> Target {
        Target {
            video_kbps,
            fps_divisor,
            scale_divisor,
        }
    }

    const FIVE_S: Duration = Duration::from_secs(5);

    #[test]
    fn in_place_bitrate_changes_are_never_rate_limited() {
        let t0 = Instant::now();
        let mut g = TargetGate::new(t(2000, 1, 1), true, FIVE_S, t0);
        g.request(t(1000, 1, 1));
        assert_eq!(g.poll(t0), Step::InPlace(1000));
        assert_eq!(g.poll(t0), Step::Keep);
        g.request(t(800, 1, 1));
        assert_eq!(g.poll(t0 + Duration::from_millis(100)), Step::InPlace(800));
        assert_eq!(g.applied(), t(800, 1, 1));
        // Asking for what runs is nothing.
        g.request(t(800, 1, 1));
        assert_eq!(g.poll(t0), Step::Keep);
        assert_eq!(g.pending(), None);
    }

    #[test]
    fn reopens_wait_for_the_interval_and_the_latest_request_wins() {
        let t0 = Instant::now();
        let s = |ms| t0 + Duration::from_millis(ms);
        let mut g = TargetGate::new(t(2000, 1, 1), false, FIVE_S, t0);
        // Too soon after the first open.
        g.request(t(1500, 1, 1));
        assert_eq!(g.poll(s(1000)), Step::Keep);
        assert_eq!(g.pending(), Some(t(1500, 1, 1)));
        assert_eq!(g.poll(s(5000)), Step::Reopen(t(1500, 1, 1)));
        // Two more within the interval: deferred, then only the latest.
        g.request(t(1000, 1, 1));
        assert_eq!(g.poll(s(6000)), Step::Keep);
        g.request(t(700, 1, 1));
        assert_eq!(g.poll(s(9000)), Step::Keep);
        assert_eq!(g.applied(), t(1500, 1, 1));
        assert_eq!(g.poll(s(10_000)), Step::Reopen(t(700, 1, 1)));
        assert_eq!(g.poll(s(20_000)), Step::Keep);
        // A request that returns to what runs before the interval cancels the wait.
        g.request(t(500, 1, 1));
        g.request(t(700, 1, 1));
        assert_eq!(g.poll(s(11_000)), Step::Keep);
        assert_eq!(g.pending(), None);
    }

    #[test]
    fn divisor_changes_reopen_even_libx264_which_follows_the_bitrate_meanwhile() {
        let t0 = Instant::now();
        let s = |ms| t0 + Duration::from_millis(ms);
        let mut g = TargetGate::new(t(600, 1, 1), true, FIVE_S, t0);
        assert_eq!(g.poll(s(6000)), Step::Keep);
        g.request(t(300, 2, 1));
        assert_eq!(g.poll(s(6000)), Step::Reopen(t(300, 2, 1)));
        g.request(t(150, 2, 2));
        // Within the interval: the bitrate now, the size later.
        assert_eq!(g.poll(s(7000)), Step::InPlace(150));
        assert_eq!(g.poll(s(8000)), Step::Keep);
        assert_eq!(g.applied(), t(150, 2, 1));
        assert_eq!(g.poll(s(11_000)), Step::Reopen(t(150, 2, 2)));
        assert_eq!(g.applied(), t(150, 2, 2));
    }

    #[test]
    fn a_refused_reopen_is_not_retried_until_asked_again() {
        let t0 = Instant::now();
        let mut g = TargetGate::new(t(2000, 1, 1), false, Duration::ZERO, t0);
        g.request(t(1000, 1, 2));
        assert_eq!(g.poll(t0), Step::Reopen(t(1000, 1, 2)));
        g.refused(t(2000, 1, 1));
        assert_eq!(g.applied(), t(2000, 1, 1));
        assert_eq!(g.poll(t0), Step::Keep);
        g.request(t(1000, 1, 2));
        assert_eq!(g.poll(t0), Step::Reopen(t(1000, 1, 2)));
    }

    #[test]
    fn bad_targets_are_clamped() {
        assert_eq!(normalized(t(0, 0, 0)), t(MIN_KBPS, 1, 1));
        assert_eq!(normalized(t(u32::MAX, 9, 200)), t(MAX_KBPS, 4, 4));
        let t0 = Instant::now();
        let mut g = TargetGate::new(t(2000, 1, 1), true, FIVE_S, t0);
        g.request(t(2000, 0, 1));
        assert_eq!(g.poll(t0), Step::Keep, "divisor 0 is 1");
    }

    #[test]
    fn decimation_halves_the_rate_on_the_frame_grid() {
        let mut d = Decimator::new(25);
        let kept: Vec<i64> = (0..10)
            .map(|i| i * 40_000)
            .filter(|&pts| d.keep(pts, 2))
            .collect();
        assert_eq!(kept, [0, 80_000, 160_000, 240_000, 320_000]);
        // Jitter of ±10 ms and a frame lost upstream do not change the rate.
        let mut d = Decimator::new(25);
        let pts = [
            0, 49_000, 71_000, 121_000, 200_000, 238_000, 281_000, 322_000,
        ];
        let kept: Vec<i64> = pts.into_iter().filter(|&p| d.keep(p, 2)).collect();
        assert_eq!(kept, [0, 71_000, 200_000, 281_000]);
        // Divisor 1 keeps everything.
        assert!((0..10).all(|i| d.keep(400_000 + i * 40_000, 1)));
    }

    #[test]
    fn the_cell_round_trips_every_target() {
        let cell = TargetCell::default();
        assert_eq!(cell.take(), None);
        for target in [t(50, 1, 1), t(100_000, 2, 2), t(u32::MAX, 255, 0)] {
            cell.store(target);
            assert_eq!(cell.load(), Some(target));
            assert_eq!(cell.take(), Some(target));
            assert_eq!(cell.take(), None);
        }
    }
}
