//! The video encode thread: its loop ([`run_video`]) over captured frames and, while the camera
//! is reconnecting, the darkened still picture on the last frame's grid ([`StillSchedule`]);
//! and its side of [`PipelineControl`](super::PipelineControl) ([`VideoControl`]: keyframe
//! requests, the adaptation target, frame-rate division).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::health::LumaTap;
use super::{Shared, IDLE_POLL};
use crate::capture::{Received, Track};
use crate::encode::snapshot::{PictureKind, PictureTap};
use crate::encode::target::{Decimator, Step, TargetGate};
use crate::encode::{EncodeError, Reopened, VideoEncoder};
use crate::media::EncodedPacket;

/// A still schedule further behind the clock than this skips ahead instead of catching up.
const MAX_STILL_CATCHUP_US: i64 = 3_000_000;

/// The video encode loop: captured frames as they come; while the camera is reconnecting, the
/// still picture on the last frame's grid.
///
/// With `keep_last` (a camera, which can be lost) the last picture is kept for the still: a
/// converted one is in the encoder already; one encoded as is is kept here by reference (not
/// recycled, so still counted in flight) rather than copied every frame, and copied once into
/// the encoder when it must be given back (the capture side is closing the device: lost or
/// stopping) or when the stills begin.
pub(super) fn run_video<S>(
    mut encoder: VideoEncoder,
    rx: crate::capture::FrameReceiver<ffmpeg_next::frame::Video>,
    keep_last: bool,
    mut tap: Option<LumaTap>,
    shared: &Shared,
    sink: &mut S,
) -> Result<(), EncodeError>
where
    S: FnMut(Track, &EncodedPacket<'_>),
{
    // The last frame encoded as is, kept for the still (`keep_last`).
    let mut kept: Option<ffmpeg_next::frame::Video> = None;
    let result = video_loop(
        &mut encoder,
        &rx,
        keep_last,
        &mut kept,
        tap.as_mut(),
        shared,
        sink,
    );
    // No more pictures: whoever waits for one hears so at once.
    shared.pictures.close();
    // Whatever happened, a kept frame goes back (it may be a device buffer).
    if let Some(frame) = kept.take() {
        rx.recycle(frame);
    }
    result
}

/// The loop of [`run_video`], flush included.
fn video_loop<S>(
    encoder: &mut VideoEncoder,
    rx: &crate::capture::FrameReceiver<ffmpeg_next::frame::Video>,
    keep_last: bool,
    kept: &mut Option<ffmpeg_next::frame::Video>,
    mut tap: Option<&mut LumaTap>,
    shared: &Shared,
    sink: &mut S,
) -> Result<(), EncodeError>
where
    S: FnMut(Track, &EncodedPacket<'_>),
{
    let mut on_packet = |packet: &EncodedPacket<'_>| {
        shared.count_packet(Track::Video, packet);
        sink(Track::Video, packet);
    };
    let mut control = VideoControl::new(encoder);
    let mut last_pts_us: Option<i64> = None;
    let mut stills: Option<StillSchedule> = None;
    // The time of the last still while no real frame has followed it yet.
    let mut last_still_us: Option<i64> = None;
    // Pictures for /snapshot.jpg, only when asked.
    let mut snapshots = PictureTap::default();
    // Copies the kept frame into the encoder and gives it back.
    let give_back = |kept: &mut Option<ffmpeg_next::frame::Video>,
                     encoder: &mut VideoEncoder|
     -> Result<(), EncodeError> {
        match kept.take() {
            Some(frame) => {
                let result = encoder.remember_picture(&frame);
                rx.recycle(frame);
                result
            }
            None => Ok(()),
        }
    };
    loop {
        if rx.return_requested() {
            give_back(kept, encoder)?;
        }
        let timeout = match (&stills, shared.clock.get()) {
            (Some(s), Some(clock)) => s
                .wait(clock.now_us())
                .clamp(Duration::from_millis(1), IDLE_POLL),
            _ => IDLE_POLL,
        };
        match rx.recv_timeout(timeout) {
            Received::Frame(mut frame) => {
                if last_still_us.is_some_and(|still| frame.pts_us <= still) {
                    // Captured before a still already sent for its time (a returning camera's
                    // buffered frames): too late to show.
                    rx.recycle(frame.frame);
                    shared.video_capture.dropped.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                last_still_us = None;
                if stills.take().is_some() {
                    tracing::debug!("video: captured frames again, stills end");
                }
                // Before the decimator: a snapshot is answered at any frame rate.
                snapshots.offer(&shared.pictures, &frame.frame, PictureKind::Live);
                // Media health sees every captured frame, before the frame rate is divided.
                if let Some(tap) = tap.as_deref_mut() {
                    tap.offer(&frame.frame, frame.pts_us);
                }
                if !control
                    .decimator
                    .keep(frame.pts_us, encoder.target().fps_divisor)
                {
                    // The frame rate is divided: left out, its timestamp with it.
                    rx.recycle(frame.frame);
                    shared
                        .video_encode
                        .decimated
                        .fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let result = control
                    .before_frame(encoder, shared, &mut on_packet)
                    .and_then(|force| encoder.encode(&mut frame, force, &mut on_packet));
                last_pts_us = Some(frame.pts_us);
                let stale = if keep_last && result.is_ok() && encoder.encoded_as_is() {
                    kept.replace(frame.frame)
                } else {
                    rx.recycle(frame.frame);
                    kept.take()
                };
                if let Some(stale) = stale {
                    rx.recycle(stale);
                }
                result?;
                shared.count_frame(Track::Video, false);
                continue;
            }
            Received::Timeout => {}
            Received::Closed => break,
        }
        let Some(clock) = shared.clock.get() else {
            continue;
        };
        if stills.is_none() && shared.video_capture.state().is_reconnecting() {
            give_back(kept, encoder)?;
            encoder.prepare_still()?;
            let (num, den) = encoder.frame_rate();
            stills = Some(StillSchedule::with_rate(
                last_pts_us.unwrap_or_else(|| clock.now_us()),
                num,
                den,
            ));
        }
        if let Some(schedule) = stills.as_mut() {
            while let Some(pts_us) = schedule.due(clock.now_us()) {
                let force = control.before_frame(encoder, shared, &mut on_packet)?;
                encoder.encode_still(pts_us, force, &mut on_packet)?;
                if let Some(still) = encoder.still_picture() {
                    snapshots.offer(&shared.pictures, still, PictureKind::Still);
                }
                last_pts_us = Some(pts_us);
                last_still_us = Some(pts_us);
                shared.count_frame(Track::Video, true);
                let (num, den) = encoder.frame_rate();
                if schedule.rate() != (num, den) {
                    // Reopened at another frame rate: the grid goes on from this still.
                    *schedule = StillSchedule::with_rate(pts_us, num, den);
                }
            }
        }
    }
    encoder.flush(&mut on_packet)
}

/// The video encode thread's side of [`PipelineControl`](super::PipelineControl): keyframe
/// requests, the target ([`TargetGate`]: in place, or a rate-limited reopen) and frame-rate
/// division.
struct VideoControl {
    gate: TargetGate,
    decimator: Decimator,
    warned: bool,
}

impl VideoControl {
    fn new(encoder: &VideoEncoder) -> Self {
        let settings = encoder.settings();
        Self {
            gate: TargetGate::new(
                encoder.target(),
                settings.changes_rate_in_place(),
                settings.min_reopen_interval,
                Instant::now(),
            ),
            decimator: Decimator::new(settings.fps),
            warned: false,
        }
    }

    /// Before each frame: applies a target that is due (a reopen flushes the old encoder's
    /// last packets into `on_packet`). Returns whether the frame must be an IDR.
    fn before_frame(
        &mut self,
        encoder: &mut VideoEncoder,
        shared: &Shared,
        on_packet: &mut dyn FnMut(&EncodedPacket<'_>),
    ) -> Result<bool, EncodeError> {
        if let Some(target) = shared.target_requested.take() {
            self.gate.request(target);
        }
        match self.gate.poll(Instant::now()) {
            Step::Keep => {}
            Step::InPlace(kbps) => {
                if let Err(e) = encoder.set_bitrate(kbps) {
                    // Not reached: the gate asks only encoders that can.
                    if !std::mem::replace(&mut self.warned, true) {
                        tracing::warn!(error = %e, "bitrate change ignored");
                    }
                    self.gate.refused(encoder.target());
                }
                shared.target_applied.store(encoder.target());
            }
            Step::Reopen(target) => {
                let running = encoder.target();
                shared.video_encode.reopens.fetch_add(1, Ordering::Relaxed);
                if let Reopened::Refused(e) = encoder.reopen(target, on_packet)? {
                    tracing::warn!(
                        error = %e,
                        kbps = target.video_kbps,
                        fps_divisor = target.fps_divisor,
                        scale_divisor = target.scale_divisor,
                        "the video encoder refused the new target and goes on as it was"
                    );
                    self.gate.refused(running);
                }
                shared.target_applied.store(encoder.target());
            }
        }
        Ok(shared.take_keyframe_request())
    }
}

/// When to encode the still picture while a camera is away. Pure: `now_us` is an argument.
///
/// Stills continue the last frame's grid (`last + k / fps`), so the video timeline goes on
/// without a gap or a phase jump and a reopened paced source lands on the same grid (see
/// [`crate::capture::clock`]). Each still is encoded half a frame after its time, so that a
/// real frame for the same slot wins. Further behind than [`MAX_STILL_CATCHUP_US`] (the loss
/// was noticed late: a device that stalled), the grid skips ahead rather than bursting.
#[derive(Debug, Clone)]
pub(super) struct StillSchedule {
    base_us: i64,
    /// Frame rate `num / den` frames per second.
    num: i64,
    den: i64,
    /// Index of the next still on the grid (the last frame is 0).
    next: i64,
}

impl StillSchedule {
    #[cfg(test)]
    pub(super) fn new(last_pts_us: i64, fps: u32) -> Self {
        Self::with_rate(last_pts_us, fps, 1)
    }

    /// At `num / den` frames per second (a divided frame rate).
    pub(super) fn with_rate(last_pts_us: i64, num: u32, den: u32) -> Self {
        Self {
            base_us: last_pts_us,
            num: i64::from(num.max(1)),
            den: i64::from(den.max(1)),
            next: 1,
        }
    }

    /// The frame rate as `(num, den)`.
    pub(super) fn rate(&self) -> (u32, u32) {
        (self.num as u32, self.den as u32)
    }

    fn slot(&self, k: i64) -> i64 {
        self.base_us + k * 1_000_000 * self.den / self.num
    }

    fn half_frame_us(&self) -> i64 {
        500_000 * self.den / self.num
    }

    /// The time of the next still if it is due at `now_us` (call until `None`).
    pub(super) fn due(&mut self, now_us: i64) -> Option<i64> {
        let slot = self.slot(self.next);
        if now_us < slot + self.half_frame_us() {
            return None;
        }
        if now_us - slot > MAX_STILL_CATCHUP_US {
            // The latest grid point not after now.
            self.next =
                ((now_us - self.base_us) * self.num / (1_000_000 * self.den)).max(self.next);
        }
        let slot = self.slot(self.next);
        self.next += 1;
        Some(slot)
    }

    /// How long until the next still is due.
    pub(super) fn wait(&self, now_us: i64) -> Duration {
        let until = self.slot(self.next) + self.half_frame_us() - now_us;
        Duration::from_micros(u64::try_from(until).unwrap_or(0))
    }
}

#[cfg(test)]
mod tests;
