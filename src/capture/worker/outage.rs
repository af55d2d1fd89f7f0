//! A live device lost mid-broadcast and waited out. The read loop only switches between the
//! states here; what a loss means to the operator and the encoders (the counters, the track
//! state, the warnings and their wording), when to try again, and how to let go of a device
//! whose buffers the encoder may still hold, is this module's business.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::open::{open_source, plan};
use super::{Feed, Source, Worker, PACE_SLICE};
use crate::capture::reconnect::{reopen_delay, TrackState};
use crate::capture::{CaptureError, SourceSpec};

/// Closing a live device waits this long for the encoder to give back the frames it holds
/// (they may point into the device's buffers).
const RETURN_TIMEOUT: Duration = Duration::from_secs(2);
/// While a lost device stays away, a reminder is logged this often.
const STILL_AWAY_REMINDER: Duration = Duration::from_secs(60);

/// A lost live device: when it went and when to try it again.
pub(super) struct Outage {
    since: Instant,
    /// Reopen attempts made so far.
    attempts: u32,
    next_attempt: Instant,
    last_reminder: Instant,
}

/// The capture side of a track's device.
pub(super) enum Device {
    /// Open and delivering.
    Live(Source),
    /// Lost; waiting for the next reopen attempt.
    Down(Outage),
    /// Reopened; back once it delivers a frame, lost again (a failed attempt) if it fails first.
    Reopened(Source, Outage),
}

impl Worker {
    /// `camera` or `microphone`, for the operator.
    fn noun(&self) -> &'static str {
        if self.outputs.video.is_some() {
            "camera"
        } else {
            "microphone"
        }
    }

    /// A live device just failed: mark its tracks as reconnecting and schedule the first
    /// reopen attempt.
    pub(super) fn lose(&self, error: &CaptureError) -> Outage {
        let now = Instant::now();
        for c in self.counters() {
            c.device_losses.fetch_add(1, Ordering::Relaxed);
            c.set_state(TrackState::Reconnecting { since: now });
        }
        let filler = if self.outputs.video.is_some() {
            "the last picture, darkened"
        } else {
            "silence"
        };
        tracing::warn!(
            source = %self.what,
            error = %error,
            "{} lost; reopening it, the broadcast goes on with {filler} meanwhile",
            self.noun()
        );
        Outage {
            since: now,
            attempts: 0,
            next_attempt: now + reopen_delay(0),
            last_reminder: now,
        }
    }

    /// A reopen attempt failed (or the reopened device failed before delivering a frame).
    pub(super) fn retry_later(&self, mut outage: Outage, error: &CaptureError) -> Outage {
        let now = Instant::now();
        outage.next_attempt = now + reopen_delay(outage.attempts);
        tracing::debug!(
            source = %self.what,
            attempt = outage.attempts,
            error = %error,
            "reopen failed"
        );
        if now.duration_since(outage.last_reminder) >= STILL_AWAY_REMINDER {
            outage.last_reminder = now;
            tracing::warn!(
                source = %self.what,
                attempts = outage.attempts,
                error = %error,
                "{} still away after {} s; check that it is plugged in (`polypush devices`)",
                self.noun(),
                now.duration_since(outage.since).as_secs()
            );
        }
        outage
    }

    /// The reopened device delivered: the track is live again.
    pub(super) fn back(&self, outage: &Outage) {
        for c in self.counters() {
            c.set_state(TrackState::Live);
        }
        tracing::info!(
            source = %self.what,
            attempts = outage.attempts,
            "{} back after {:.1} s",
            self.noun(),
            outage.since.elapsed().as_secs_f64()
        );
    }

    /// Sleeps until the next attempt is due, then tries; `None` if stopped meanwhile.
    pub(super) fn reopen_when_due(&mut self, mut outage: Outage) -> Option<Device> {
        loop {
            if self.signal.is_set() {
                return None;
            }
            let now = Instant::now();
            if now >= outage.next_attempt {
                break;
            }
            std::thread::sleep((outage.next_attempt - now).min(PACE_SLICE));
        }
        outage.attempts += 1;
        for c in self.counters() {
            c.reopen_attempts.fetch_add(1, Ordering::Relaxed);
        }
        let opened = match self.fault.as_mut().and_then(|f| f.on_open(Instant::now())) {
            Some(source) => Err(CaptureError::Open {
                what: self.what.clone(),
                source,
            }),
            None => plan(&self.spec, false).and_then(|plan| {
                let wants = (self.outputs.video.is_some(), self.outputs.audio.is_some());
                open_source(&self.spec, &plan, wants, &self.signal)
            }),
        };
        match opened {
            Ok((src, info)) => {
                tracing::debug!(
                    source = %self.what,
                    video = ?info.video,
                    audio = ?info.audio,
                    "reopened; waiting for the first frame"
                );
                self.mapper.restart_input();
                Some(Device::Reopened(src, outage))
            }
            Err(e) => Some(Device::Down(self.retry_later(outage, &e))),
        }
    }

    /// Closes an input. A live device's frames may still be queued or in the encoder, pointing
    /// into the device's buffers (V4L2 hands out its mmap buffers without copying), so wait
    /// for the encoder to give them back first; should it not (it is stuck), the input is
    /// leaked rather than unmapped under it.
    pub(super) fn close(&mut self, src: Source) {
        // Samples gathered from this input would be stale after a reopen.
        self.audio_batch.clear();
        if !self.live() {
            return;
        }
        let returned = [
            self.outputs
                .video
                .as_ref()
                .map(|s| s.wait_returned(RETURN_TIMEOUT)),
            self.outputs
                .audio
                .as_ref()
                .map(|s| s.wait_returned(RETURN_TIMEOUT)),
        ]
        .into_iter()
        .all(|r| r.unwrap_or(true));
        if !returned && matches!(self.spec, SourceSpec::V4l2 { .. }) {
            tracing::warn!(
                source = %self.what,
                "the encoder did not give back the camera's frames within {} s; leaving the device open rather than unmapping buffers in use",
                RETURN_TIMEOUT.as_secs()
            );
            if let Feed::Demuxer { streams, input } = src.feed {
                drop(streams);
                std::mem::forget(input);
            }
        }
    }
}
