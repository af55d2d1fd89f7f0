//! Device loss: the reopen schedule, the per-track state the rest of the daemon sees, and the
//! fault-injection seam the tests use to pull a camera out without hardware.
//!
//! A live device (V4L2 camera, ALSA microphone) that fails mid-broadcast (a read error such as
//! the `EIO`/`ENODEV` an unplugged USB camera gives, end of stream, or nothing delivered for
//! [`LIVE_STALL`]) is not an error of the pipeline: the capture thread closes it, marks the track
//! [`TrackState::Reconnecting`] and tries to reopen it after [`reopen_delay`] (0.5 s doubling
//! to a 5 s cap, without limit). Meanwhile the encode thread keeps the track alive (a darkened
//! still picture at the configured frame rate, or silence; see [`crate::encode::pipeline`]).
//! The track is [`TrackState::Live`] again once a reopened device has delivered a frame.
//!
//! Test sources and files are not devices: their errors stay fatal, as before (a broken file
//! does not mend itself, so reopening it forever would hide the fault). A device missing at
//! start-up is an error at start-up: only a device that has worked is waited for.
//!
//! The seam: `SourceSpec::Faulty` (hidden from the docs; for tests) wraps any source and makes
//! it behave like an unplugged device: after `fail_after` on the pipeline clock the next read
//! returns `EIO` instead of a packet, and reopen attempts fail with `ENODEV` for `down_for`,
//! after which the wrapped source opens normally. Only the read and the open are faked
//! (`Fault`); the loss, the wait for frames in flight, the backoff, the reopen and the fill
//! are the code that handles a real camera. It fails once: one loss per broadcast.

use std::time::{Duration, Instant};

use ffmpeg_next as ffmpeg;

/// The first reopen attempt comes this long after the loss.
pub(super) const REOPEN_FIRST_DELAY: Duration = Duration::from_millis(500);
/// The delay between attempts doubles up to this.
pub(super) const REOPEN_MAX_DELAY: Duration = Duration::from_secs(5);
/// A live device that has delivered frames and then delivers nothing for this long is lost.
pub(super) const LIVE_STALL: Duration = Duration::from_secs(2);

/// How long to wait before reopen attempt `attempt` (0 = the first, counted from the loss;
/// later ones from the previous failed attempt): 0.5, 1, 2, 4, 5, 5, … seconds.
pub fn reopen_delay(attempt: u32) -> Duration {
    let factor = 1u32 << attempt.min(16);
    REOPEN_FIRST_DELAY
        .saturating_mul(factor)
        .min(REOPEN_MAX_DELAY)
}

/// Whether a track's source is delivering.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TrackState {
    /// Frames come from the source (or the track has no live device).
    #[default]
    Live,
    /// The device was lost at `since` and is being reopened; the encoder fills the track (a
    /// still picture, or silence) meanwhile.
    Reconnecting { since: Instant },
}

impl TrackState {
    pub fn is_reconnecting(&self) -> bool {
        matches!(self, TrackState::Reconnecting { .. })
    }
}

/// The faked part of `SourceSpec::Faulty`: one loss, then a device that stays away for a
/// while. Pure: times are arguments.
#[derive(Debug, Clone)]
pub(crate) struct Fault {
    fail_after_us: i64,
    down_for: Duration,
    phase: FaultPhase,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FaultPhase {
    /// Waiting for `fail_after`.
    Armed,
    /// Unplugged: opens fail until `until`.
    Down { until: Instant },
    /// Plugged back in; behaves like the wrapped source from now on.
    Spent,
}

impl Fault {
    pub(crate) fn new(fail_after: Duration, down_for: Duration) -> Self {
        Self {
            fail_after_us: i64::try_from(fail_after.as_micros()).unwrap_or(i64::MAX),
            down_for,
            phase: FaultPhase::Armed,
        }
    }

    /// Before a read at pipeline time `clock_us`: the error that replaces the read, if any.
    pub(crate) fn on_read(&mut self, clock_us: i64, now: Instant) -> Option<ffmpeg::Error> {
        if self.phase == FaultPhase::Armed && clock_us >= self.fail_after_us {
            self.phase = FaultPhase::Down {
                until: now + self.down_for,
            };
            return Some(ffmpeg::Error::Other { errno: libc::EIO });
        }
        None
    }

    /// Before a reopen: the error that replaces the open, if the device is still away.
    pub(crate) fn on_open(&mut self, now: Instant) -> Option<ffmpeg::Error> {
        match self.phase {
            FaultPhase::Down { until } if now < until => Some(ffmpeg::Error::Other {
                errno: libc::ENODEV,
            }),
            FaultPhase::Down { .. } => {
                self.phase = FaultPhase::Spent;
                None
            }
            FaultPhase::Armed | FaultPhase::Spent => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reopen_delay_doubles_from_half_a_second_to_five() {
        let secs: Vec<f64> = (0..8).map(|n| reopen_delay(n).as_secs_f64()).collect();
        assert_eq!(secs, [0.5, 1.0, 2.0, 4.0, 5.0, 5.0, 5.0, 5.0]);
        // No overflow however long the device stays away.
        assert_eq!(reopen_delay(u32::MAX), REOPEN_MAX_DELAY);
    }

    #[test]
    fn fault_fails_one_read_then_opens_after_the_outage() {
        let t0 = Instant::now();
        let mut f = Fault::new(Duration::from_secs(1), Duration::from_secs(2));
        assert_eq!(f.on_open(t0), None, "opens normally before the loss");
        assert_eq!(f.on_read(999_999, t0), None);
        assert_eq!(
            f.on_read(1_000_000, t0),
            Some(ffmpeg::Error::Other { errno: libc::EIO })
        );
        // One loss only.
        assert_eq!(f.on_read(1_000_001, t0), None);
        let enodev = Some(ffmpeg::Error::Other {
            errno: libc::ENODEV,
        });
        assert_eq!(f.on_open(t0 + Duration::from_millis(500)), enodev);
        assert_eq!(f.on_open(t0 + Duration::from_millis(1999)), enodev);
        assert_eq!(f.on_open(t0 + Duration::from_secs(2)), None);
        assert_eq!(f.on_read(9_000_000, t0), None);
    }

    #[test]
    fn track_state_defaults_to_live() {
        assert_eq!(TrackState::default(), TrackState::Live);
        assert!(TrackState::Reconnecting {
            since: Instant::now()
        }
        .is_reconnecting());
    }
}
