//! The pipeline clock and the mapping of each source's timestamps onto it.
//!
//! Every captured frame carries `pts_us` on one clock: microseconds of `CLOCK_MONOTONIC` since
//! the pipeline started ([`CaptureClock`]). Two kinds of sources are mapped differently:
//!
//! - **Wallclock** sources (V4L2 with `timestamps=mono2abs`, ALSA): libavdevice stamps each
//!   packet with the kernel's capture time converted to the realtime clock (`av_gettime`). We
//!   convert back with the realtime−monotonic offset measured *at each frame*, so the result is
//!   the kernel's capture instant on the monotonic clock. Camera and microphone are then on one
//!   clock by construction: nothing is anchored, nothing accumulates, and an NTP step of the
//!   realtime clock is absorbed (the offset is re-measured every frame). A timestamp that still
//!   lands implausibly far from "now" (a driver bug) is replaced by "now" and counted as a resync.
//! - **Paced** sources (lavfi test pattern, files): their timestamps are synthetic (frame and
//!   sample counts from 0). The offset is fixed at the first frame of the *input* and shared by
//!   all of its streams (so a file's own A/V offset is kept), and the capture thread sleeps until
//!   each frame's mapped time: the source is paced by the monotonic clock, so it cannot drift
//!   from it. If the thread falls more than [`PACED_BEHIND_MAX_US`] behind (CPU starvation,
//!   suspend) or a timestamp jumps more than [`PACED_AHEAD_MAX_US`] ahead (a broken file), the
//!   input is re-anchored to "now" and a resync is counted; both tracks of the input move together.
//!
//! Per track the mapped time is made strictly increasing, because the encoders require it.
//!
//! A lost device reopened ([`super::reconnect`]) is a new input: wallclock timestamps need
//! nothing, a paced input is re-anchored at its first frame ([`TimestampMapper::restart_input`]),
//! on the old input's frame grid so the track resumes in step with what the encoder filled in.

use super::Track;

/// A paced source more than this far behind real time is re-anchored (it cannot catch up).
pub(super) const PACED_BEHIND_MAX_US: i64 = 1_000_000;
/// A paced source's timestamp more than this far ahead of real time is a discontinuity.
pub(super) const PACED_AHEAD_MAX_US: i64 = 2_000_000;
/// A wallclock-stamped frame from the future by more than this is implausible.
pub(super) const LIVE_AHEAD_MAX_US: i64 = 100_000;
/// A wallclock-stamped frame older than this is implausible (devices buffer far less).
pub(super) const LIVE_BEHIND_MAX_US: i64 = 2_000_000;

/// The pipeline clock: `CLOCK_MONOTONIC` microseconds since the pipeline started.
///
/// `Copy` so each thread holds its own; all copies agree because they share the start instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CaptureClock {
    start_mono_us: i64,
}

impl CaptureClock {
    /// A clock whose zero is now.
    pub fn start_now() -> Self {
        Self {
            start_mono_us: monotonic_us(),
        }
    }

    /// Microseconds since the pipeline started.
    pub fn now_us(&self) -> i64 {
        monotonic_us() - self.start_mono_us
    }

    /// Converts a realtime-clock timestamp (what libavdevice stamps devices with) to this clock.
    pub fn from_wallclock_us(&self, wall_us: i64) -> i64 {
        wall_us - wall_minus_mono_us() - self.start_mono_us
    }
}

fn clock_us(id: libc::clockid_t) -> i64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer; both clock ids exist on every Linux.
    unsafe { libc::clock_gettime(id, &mut ts) };
    ts.tv_sec * 1_000_000 + ts.tv_nsec / 1_000
}

/// `CLOCK_MONOTONIC` in microseconds (what `Instant` and `av_gettime_relative` use).
pub(crate) fn monotonic_us() -> i64 {
    clock_us(libc::CLOCK_MONOTONIC)
}

/// `CLOCK_REALTIME − CLOCK_MONOTONIC` now, in microseconds.
fn wall_minus_mono_us() -> i64 {
    let mono = monotonic_us();
    let wall = clock_us(libc::CLOCK_REALTIME);
    wall - mono
}

/// How a source's timestamps relate to real time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ClockMode {
    /// Timestamps are capture instants on the realtime clock (V4L2, ALSA).
    Wallclock,
    /// Timestamps are synthetic; the capture thread paces them against the pipeline clock.
    Paced,
}

/// The result of mapping one frame's timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Mapped {
    /// Pipeline time of the frame.
    pub pts_us: i64,
    /// The mapping was re-anchored at this frame (log it, count it).
    pub resynced: bool,
}

/// Maps one input's timestamps to the pipeline clock. Pure: `now` is an argument.
#[derive(Debug, Clone)]
pub(super) struct TimestampMapper {
    mode: ClockMode,
    /// Paced: pipeline time − source time, fixed at the input's first frame.
    offset_us: Option<i64>,
    last_us: [Option<i64>; 2],
    /// Paced: the input was replaced; anchor its first frame on the previous frame grid.
    resuming: bool,
    /// Paced: source time 0 is pipeline time 0 (the sync test pattern), unless the first frame
    /// comes too late for that.
    pinned: bool,
}

impl TimestampMapper {
    pub(super) fn new(mode: ClockMode) -> Self {
        Self {
            mode,
            offset_us: None,
            last_us: [None, None],
            resuming: false,
            pinned: false,
        }
    }

    /// Anchors a paced input's source time 0 at pipeline time 0, so the sync test pattern's
    /// flash and beep (two inputs) both fall on whole seconds of the pipeline clock.
    pub(super) fn pin_to_clock(&mut self) {
        self.pinned = true;
    }

    /// The input was closed and opened again (a device reopened after a loss). A paced input's
    /// timestamps start over, so its first frame is anchored anew: at the first instant not
    /// before "now" that lies a whole number of frame durations after the last frame mapped,
    /// which keeps the track's frame grid (and the capture thread sleeps until then).
    pub(super) fn restart_input(&mut self) {
        if self.mode == ClockMode::Paced {
            self.offset_us = None;
            self.resuming = true;
        }
    }

    pub(super) fn mode(&self) -> ClockMode {
        self.mode
    }

    /// Maps `source_us` for a frame of `track` lasting `duration_us`, read at pipeline time
    /// `now_us`.
    ///
    /// For [`ClockMode::Wallclock`], `source_us` must already be converted to the pipeline
    /// clock ([`CaptureClock::from_wallclock_us`]); this only checks plausibility.
    pub(super) fn map(
        &mut self,
        track: Track,
        source_us: i64,
        duration_us: i64,
        now_us: i64,
    ) -> Mapped {
        let (mut pts_us, resynced) = match self.mode {
            ClockMode::Wallclock => {
                if source_us > now_us + LIVE_AHEAD_MAX_US || source_us < now_us - LIVE_BEHIND_MAX_US
                {
                    (now_us, true)
                } else {
                    (source_us, false)
                }
            }
            ClockMode::Paced => match self.offset_us {
                None => {
                    let resuming = std::mem::take(&mut self.resuming);
                    let start = match self.last_us[track.index()] {
                        Some(last) if resuming && duration_us > 0 => {
                            next_on_grid(last, duration_us, now_us)
                        }
                        _ if self.pinned
                            && !resuming
                            && now_us - source_us < PACED_BEHIND_MAX_US =>
                        {
                            source_us
                        }
                        _ => now_us,
                    };
                    self.offset_us = Some(start - source_us);
                    (start, false)
                }
                Some(offset) => {
                    let mapped = source_us + offset;
                    if mapped < now_us - PACED_BEHIND_MAX_US || mapped > now_us + PACED_AHEAD_MAX_US
                    {
                        self.offset_us = Some(now_us - source_us);
                        (now_us, true)
                    } else {
                        (mapped, false)
                    }
                }
            },
        };
        let slot = &mut self.last_us[track.index()];
        if let Some(last) = *slot {
            if pts_us <= last {
                pts_us = last + 1;
            }
        }
        *slot = Some(pts_us);
        Mapped { pts_us, resynced }
    }
}

/// The first `last + k × step` (k ≥ 1) not before `now_us`.
fn next_on_grid(last_us: i64, step_us: i64, now_us: i64) -> i64 {
    let k = ((now_us - last_us) + step_us - 1)
        .div_euclid(step_us)
        .max(1);
    last_us + k * step_us
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paced_anchors_at_first_frame_of_the_input_and_shares_the_offset() {
        let mut m = TimestampMapper::new(ClockMode::Paced);
        // Audio starts at source 0 when the pipeline clock reads 5 ms.
        assert_eq!(m.map(Track::Audio, 0, 40_000, 5_000).pts_us, 5_000);
        // Video of the same input starts 33 ms later in the file: the offset is kept.
        assert_eq!(m.map(Track::Video, 33_000, 40_000, 5_100).pts_us, 38_000);
        assert_eq!(m.map(Track::Video, 73_000, 40_000, 40_000).pts_us, 78_000);
    }

    #[test]
    fn paced_reanchors_when_far_behind_or_jumping_ahead() {
        let mut m = TimestampMapper::new(ClockMode::Paced);
        m.map(Track::Video, 0, 40_000, 0);
        // The thread stalled for 3 s: re-anchor to now.
        let r = m.map(Track::Video, 40_000, 40_000, 3_000_000);
        assert_eq!(
            r,
            Mapped {
                pts_us: 3_000_000,
                resynced: true
            }
        );
        // Following frames continue from the new anchor.
        assert_eq!(
            m.map(Track::Video, 80_000, 40_000, 3_010_000).pts_us,
            3_040_000
        );
        // A 10 s jump ahead in the file is a discontinuity.
        let r = m.map(Track::Video, 10_080_000, 40_000, 3_050_000);
        assert!(r.resynced);
        assert_eq!(r.pts_us, 3_050_000);
    }

    #[test]
    fn wallclock_keeps_plausible_capture_times_and_replaces_bogus_ones() {
        let mut m = TimestampMapper::new(ClockMode::Wallclock);
        // Captured 30 ms before it was read: kept as is.
        assert_eq!(
            m.map(Track::Video, 970_000, 40_000, 1_000_000).pts_us,
            970_000
        );
        // From the future: replaced by now.
        let r = m.map(Track::Video, 2_000_000, 40_000, 1_040_000);
        assert_eq!(
            r,
            Mapped {
                pts_us: 1_040_000,
                resynced: true
            }
        );
        // Ten seconds old: replaced by now.
        assert!(m.map(Track::Audio, -9_000_000, 40_000, 1_050_000).resynced);
    }

    #[test]
    fn mapped_times_are_strictly_increasing_per_track() {
        let mut m = TimestampMapper::new(ClockMode::Wallclock);
        assert_eq!(m.map(Track::Video, 100, 40_000, 200).pts_us, 100);
        assert_eq!(m.map(Track::Video, 100, 40_000, 200).pts_us, 101);
        assert_eq!(m.map(Track::Video, 50, 40_000, 200).pts_us, 102);
        // The other track is independent.
        assert_eq!(m.map(Track::Audio, 50, 40_000, 200).pts_us, 50);
    }

    #[test]
    fn a_restarted_paced_input_resumes_on_the_frame_grid() {
        let mut m = TimestampMapper::new(ClockMode::Paced);
        assert_eq!(m.map(Track::Video, 0, 40_000, 1_000_000).pts_us, 1_000_000);
        assert_eq!(
            m.map(Track::Video, 40_000, 40_000, 1_040_000).pts_us,
            1_040_000
        );
        // The device was away; reopened at 4.013 s its timestamps start from 0 again.
        m.restart_input();
        let r = m.map(Track::Video, 0, 40_000, 4_013_000);
        assert_eq!(r.pts_us, 4_040_000, "next grid point after now");
        assert!(!r.resynced);
        assert_eq!(
            m.map(Track::Video, 40_000, 40_000, 4_050_000).pts_us,
            4_080_000
        );
        // A restart without a previous frame anchors at now, as at start.
        let mut m = TimestampMapper::new(ClockMode::Paced);
        m.restart_input();
        assert_eq!(m.map(Track::Audio, 0, 21_333, 7_000).pts_us, 7_000);
        // Wallclock inputs are not affected.
        let mut m = TimestampMapper::new(ClockMode::Wallclock);
        m.map(Track::Video, 1_000, 40_000, 2_000);
        m.restart_input();
        assert_eq!(m.map(Track::Video, 5_000, 40_000, 6_000).pts_us, 5_000);
    }

    #[test]
    fn a_pinned_input_keeps_source_time_as_pipeline_time() {
        let mut m = TimestampMapper::new(ClockMode::Paced);
        m.pin_to_clock();
        assert_eq!(m.map(Track::Audio, 0, 21_333, 4_000).pts_us, 0);
        assert_eq!(m.map(Track::Audio, 21_333, 21_333, 4_100).pts_us, 21_333);
        // Too late to pin (the thread started long after the clock): anchored at now.
        let mut m = TimestampMapper::new(ClockMode::Paced);
        m.pin_to_clock();
        assert_eq!(m.map(Track::Video, 0, 40_000, 3_000_000).pts_us, 3_000_000);
    }

    #[test]
    fn grid_points() {
        assert_eq!(next_on_grid(1_000, 40, 1_000), 1_040, "at least one step");
        assert_eq!(next_on_grid(1_000, 40, 1_040), 1_040);
        assert_eq!(next_on_grid(1_000, 40, 1_041), 1_080);
        assert_eq!(next_on_grid(1_000, 40, 500), 1_040, "now before last");
    }

    #[test]
    fn clock_converts_wallclock_to_pipeline_time() {
        let clock = CaptureClock::start_now();
        let wall_now = clock_us(libc::CLOCK_REALTIME);
        let mapped = clock.from_wallclock_us(wall_now);
        let now = clock.now_us();
        assert!((mapped - now).abs() < 5_000, "mapped {mapped} now {now}");
    }
}
