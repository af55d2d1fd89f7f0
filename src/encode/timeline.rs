//! The sample-counted AAC timeline and how a captured frame joins it ([`follow`]): the part of
//! the audio encoder that decides, per frame, between resampling ([`super::drift`]) and an
//! immediate correction (silence inserted, a frame skipped). Pure: times are arguments. See
//! [`super::audio`] for the whole story.

use super::drift::DriftControl;

/// The counted timeline is corrected at once (silence, a skipped frame) when it is this far
/// from the capture clock; less is absorbed by resampling ([`super::drift`]) unless it is a
/// step ([`DriftControl::is_step`]).
pub(crate) const RESYNC_THRESHOLD_US: i64 = super::drift::GROSS_US;

/// What to do with an input frame to keep the counted timeline on the capture clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Adjust {
    Keep,
    /// Insert this many samples of silence before the frame.
    Pad(usize),
    /// Drop the frame: the timeline is ahead of the capture clock.
    Skip,
}

/// How a frame captured at `pts_us` joins the timeline: a gross jump (more than
/// [`RESYNC_THRESHOLD_US`] at once) or a confirmed step (samples lost: see
/// [`DriftControl::is_step`]) is corrected at once, silence for a gap, a skipped frame for an
/// excess; anything else is left to resampling. Pure.
pub(crate) fn follow(
    timeline: &mut AudioTimeline,
    drift: &mut DriftControl,
    pts_us: i64,
) -> Adjust {
    match timeline.check(pts_us) {
        Adjust::Keep => {
            let diff = timeline.diff_us(pts_us).unwrap_or(0);
            if !drift.is_step(diff) {
                Adjust::Keep
            } else if diff > 0 {
                Adjust::Pad((diff * timeline.rate / 1_000_000) as usize)
            } else {
                Adjust::Skip
            }
        }
        gross => {
            drift.reset();
            gross
        }
    }
}

/// The sample-counted audio timeline. Pure: times are arguments.
#[derive(Debug, Clone)]
pub(crate) struct AudioTimeline {
    rate: i64,
    anchor_us: Option<i64>,
    /// Samples (at the encoder rate) put into the FIFO so far, silence included.
    samples: i64,
}

impl AudioTimeline {
    pub(crate) fn new(rate: u32) -> Self {
        Self {
            rate: i64::from(rate),
            anchor_us: None,
            samples: 0,
        }
    }

    /// Pipeline time of the next sample the timeline will take (`None` before the first).
    pub(crate) fn time_of_next_sample_us(&self) -> Option<i64> {
        self.anchor_us
            .map(|anchor| anchor + self.samples * 1_000_000 / self.rate)
    }

    /// `pts_us` − where the timeline would put a frame captured then (positive: the timeline
    /// is behind the capture clock); `None` before the first frame.
    pub(crate) fn diff_us(&self, pts_us: i64) -> Option<i64> {
        self.time_of_next_sample_us().map(|t| pts_us - t)
    }

    /// Checks an input frame captured at `pts_us` against the samples counted so far.
    pub(crate) fn check(&mut self, pts_us: i64) -> Adjust {
        let Some(diff) = self.diff_us(pts_us) else {
            self.anchor_us = Some(pts_us);
            return Adjust::Keep;
        };
        if diff > RESYNC_THRESHOLD_US {
            Adjust::Pad((diff * self.rate / 1_000_000) as usize)
        } else if diff < -RESYNC_THRESHOLD_US {
            Adjust::Skip
        } else {
            Adjust::Keep
        }
    }

    pub(crate) fn advance(&mut self, samples: usize) {
        self.samples += samples as i64;
    }

    /// Samples missing between the end of the timeline and `until_us`; 0 if it reaches that
    /// far. A timeline without an anchor (no input yet) is anchored at `until_us`.
    pub(crate) fn missing_until(&mut self, until_us: i64) -> usize {
        let Some(anchor) = self.anchor_us else {
            self.anchor_us = Some(until_us);
            return 0;
        };
        let end_us = anchor + self.samples * 1_000_000 / self.rate;
        usize::try_from((until_us - end_us) * self.rate / 1_000_000).unwrap_or(0)
    }

    /// Pipeline milliseconds of encoder sample position `sample_pts` (already shifted by the
    /// priming delay).
    pub(crate) fn ms_at(&self, sample_pts: i64) -> i64 {
        (self.anchor_us.unwrap_or(0) + sample_pts * 1_000_000 / self.rate).div_euclid(1000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeline_pads_gaps_and_skips_excess() {
        let mut t = AudioTimeline::new(48_000);
        assert_eq!(t.check(1_000_000), Adjust::Keep);
        t.advance(1024);
        // Next frame on time (21.333 ms later).
        assert_eq!(t.check(1_021_333), Adjust::Keep);
        t.advance(1024);
        // 100 ms off is left to resampling.
        assert_eq!(t.check(1_042_667 + 100_000), Adjust::Keep);
        assert!((99_999..=100_001).contains(&t.diff_us(1_042_667 + 100_000).unwrap()));
        // 300 ms of samples went missing (a device reopened): pad what is missing.
        match t.check(1_042_667 + 300_000) {
            Adjust::Pad(n) => assert!((14399..=14401).contains(&n), "{n}"),
            other => panic!("{other:?}"),
        }
        // The card delivered far more than real time allows: skip.
        let mut t = AudioTimeline::new(48_000);
        t.check(0);
        t.advance(48_000);
        assert_eq!(t.check(700_000), Adjust::Skip);
        assert_eq!(t.check(900_000), Adjust::Keep);
    }

    /// The real resampler and encoder, fed a source 5000 ppm fast for a minute: uncorrected
    /// that is 300 ms; compensated it stays within a few ms, with no frame skipped.
    #[test]
    fn timeline_counts_what_is_missing_up_to_a_time() {
        let mut t = AudioTimeline::new(48_000);
        // No input yet: anchored at the time asked for.
        assert_eq!(t.missing_until(2_000_000), 0);
        assert_eq!(t.missing_until(2_100_000), 4_800);
        t.advance(4_800);
        assert_eq!(t.missing_until(2_100_000), 0);
        assert_eq!(t.missing_until(2_000_000), 0, "ahead of the time asked for");
    }

    #[test]
    fn timeline_maps_samples_to_pipeline_ms() {
        let mut t = AudioTimeline::new(48_000);
        t.check(5_500);
        assert_eq!(t.ms_at(0), 5);
        assert_eq!(t.ms_at(1024), 26);
        assert_eq!(t.ms_at(48_000), 1005);
    }
}
