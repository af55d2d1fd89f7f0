//! The bounded hand-off of decoded frames from a capture thread to an encode thread.
//!
//! A `sync_channel` carries frames forward; a second one of the same bound carries the emptied
//! `AVFrame` shells back, so in steady state no frame structure is allocated (the picture and
//! sample buffers themselves come from the decoder's buffer pool and return to it on unref).
//!
//! Drop policy: the capture side never blocks. When the queue is full (the encoder is slower
//! than the source) the *newest* frame is dropped and counted. Dropping the oldest would need the
//! receiver's end; dropping the newest keeps the encoder's input contiguous up to the overload
//! and the queued frames are at most `bound` frames old, which bounds latency the same way.

use std::ops::DerefMut;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::Arc;

use ffmpeg_next as ffmpeg;

/// A decoded frame and its time on the pipeline clock.
#[derive(Debug)]
pub struct Captured<F> {
    pub frame: F,
    /// Microseconds since the pipeline started ([`super::CaptureClock`]).
    pub pts_us: i64,
}

/// A decoded picture, any pixel format and size (the encoder converts).
pub type VideoFrame = Captured<ffmpeg::frame::Video>;
/// Decoded samples, any sample format, layout and rate (the encoder resamples).
pub type AudioFrame = Captured<ffmpeg::frame::Audio>;

/// Counters of one track's capture side, shared with the pipeline's stats.
#[derive(Debug, Default)]
pub struct CaptureCounters {
    /// Frames decoded and handed on (or dropped).
    pub captured: AtomicU64,
    /// Frames dropped because the encoder's queue was full, or stamped before the pipeline began.
    pub dropped: AtomicU64,
    /// Timestamp re-anchors (see [`super::clock`]).
    pub resyncs: AtomicU64,
}

/// What happened to a frame offered to the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    Queued,
    /// The queue was full; the frame was dropped and counted.
    Dropped,
    /// The encoder side is gone; the capture thread should stop.
    Disconnected,
}

/// The capture thread's end.
pub struct FrameSender<F> {
    tx: SyncSender<Captured<F>>,
    spare_rx: Receiver<F>,
    /// A shell kept from a dropped frame, reused before asking the encoder for one.
    kept: Option<F>,
    counters: Arc<CaptureCounters>,
}

/// The encode thread's end.
pub struct FrameReceiver<F> {
    rx: Receiver<Captured<F>>,
    spare_tx: SyncSender<F>,
}

/// A bounded frame queue of `bound` frames with its own counters.
pub fn frame_queue<F>(
    bound: usize,
    counters: Arc<CaptureCounters>,
) -> (FrameSender<F>, FrameReceiver<F>)
where
    F: DerefMut<Target = ffmpeg::Frame>,
{
    let (tx, rx) = mpsc::sync_channel(bound);
    let (spare_tx, spare_rx) = mpsc::sync_channel(bound + 2);
    (
        FrameSender {
            tx,
            spare_rx,
            kept: None,
            counters,
        },
        FrameReceiver { rx, spare_tx },
    )
}

impl<F> FrameSender<F>
where
    F: DerefMut<Target = ffmpeg::Frame>,
{
    /// An empty frame to decode into: a recycled shell when one is available.
    pub fn empty_frame(&mut self, new: impl FnOnce() -> F) -> F {
        if let Some(f) = self.kept.take() {
            return f;
        }
        self.spare_rx.try_recv().unwrap_or_else(|_| new())
    }

    /// Offers a frame without blocking; see the module doc for the drop policy.
    pub fn offer(&mut self, frame: Captured<F>) -> Offer {
        self.counters.captured.fetch_add(1, Ordering::Relaxed);
        match self.tx.try_send(frame) {
            Ok(()) => Offer::Queued,
            Err(TrySendError::Full(mut f)) => {
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                unref(&mut f.frame);
                self.kept = Some(f.frame);
                Offer::Dropped
            }
            Err(TrySendError::Disconnected(_)) => Offer::Disconnected,
        }
    }

    /// Gives back a frame that was decoded but will not be offered.
    pub fn discard(&mut self, mut frame: F) {
        self.counters.dropped.fetch_add(1, Ordering::Relaxed);
        unref(&mut frame);
        self.kept = Some(frame);
    }

    /// Keeps an unused shell (nothing was decoded into it) for the next frame.
    pub fn discard_shell(&mut self, frame: F) {
        self.kept = Some(frame);
    }

    pub fn counters(&self) -> &CaptureCounters {
        &self.counters
    }
}

impl<F> FrameReceiver<F>
where
    F: DerefMut<Target = ffmpeg::Frame>,
{
    /// The next frame; `None` once the capture side is gone and the queue is drained.
    pub fn recv(&self) -> Option<Captured<F>> {
        self.rx.recv().ok()
    }

    /// Returns a frame's shell to the capture side once the encoder is done with it.
    pub fn recycle(&self, mut frame: F) {
        unref(&mut frame);
        let _ = self.spare_tx.try_send(frame);
    }
}

fn unref<F: DerefMut<Target = ffmpeg::Frame>>(frame: &mut F) {
    // SAFETY: the frame is owned here; unref releases its buffers and resets the fields,
    // leaving a valid empty AVFrame.
    unsafe { ffmpeg::ffi::av_frame_unref(frame.as_mut_ptr()) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_queue_drops_the_newest_and_recycles_shells() {
        let counters = Arc::new(CaptureCounters::default());
        let (mut tx, rx) = frame_queue::<ffmpeg::frame::Video>(2, counters.clone());
        for i in 0..3 {
            let frame = tx.empty_frame(ffmpeg::frame::Video::empty);
            let offer = tx.offer(Captured { frame, pts_us: i });
            assert_eq!(offer, if i < 2 { Offer::Queued } else { Offer::Dropped });
        }
        assert_eq!(counters.captured.load(Ordering::Relaxed), 3);
        assert_eq!(counters.dropped.load(Ordering::Relaxed), 1);
        let first = rx.recv().unwrap();
        assert_eq!(first.pts_us, 0);
        rx.recycle(first.frame);
        // The kept shell of the dropped frame comes first, then the recycled one.
        let _a = tx.empty_frame(|| panic!("kept shell expected"));
        let _b = tx.empty_frame(|| panic!("recycled shell expected"));
        drop(rx);
        let frame = tx.empty_frame(ffmpeg::frame::Video::empty);
        assert_eq!(tx.offer(Captured { frame, pts_us: 9 }), Offer::Disconnected);
    }
}
