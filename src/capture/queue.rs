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
//!
//! Frames in flight: a V4L2 camera's raw frames reference the driver's mmap buffers
//! (libavdevice hands them out without copying), and closing the input unmaps them. The sender
//! therefore counts the frames it handed on that have not come back yet
//! ([`FrameSender::wait_returned`]), so a capture thread can wait for the encoder to let go of
//! them before it closes a device (on stop, and when a device is lost and reopened).
//!
//! The encoder may keep the last frame it received instead of recycling it at once (the
//! picture a still is made of when a camera is lost; see [`crate::encode::pipeline`]). Such a
//! frame stays counted in flight, and while the capture side waits for its frames
//! ([`FrameReceiver::return_requested`] is then true) the encoder must give it back.

use std::ops::DerefMut;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use ffmpeg_next as ffmpeg;

use super::reconnect::TrackState;

/// How often [`FrameSender::wait_returned`] looks at the count.
const RETURN_POLL: Duration = Duration::from_millis(2);

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
    /// Timestamp re-anchors (see `super::clock`).
    pub resyncs: AtomicU64,
    /// Times the live device was lost (a read error, end of stream or stall mid-broadcast).
    pub device_losses: AtomicU64,
    /// Attempts to reopen a lost device, successful or not.
    pub reopen_attempts: AtomicU64,
    /// Written by the capture thread, read by the encoder (to fill) and by stats.
    state: Mutex<TrackState>,
}

impl CaptureCounters {
    /// Whether the track's device is delivering or being reopened.
    pub fn state(&self) -> TrackState {
        *self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn set_state(&self, state: TrackState) {
        *self.state.lock().unwrap_or_else(PoisonError::into_inner) = state;
    }
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

/// What [`FrameReceiver::recv_timeout`] got.
#[derive(Debug)]
pub enum Received<F> {
    Frame(Captured<F>),
    /// Nothing within the timeout.
    Timeout,
    /// The capture side is gone and the queue is drained.
    Closed,
}

/// The capture thread's end.
pub struct FrameSender<F> {
    tx: SyncSender<Captured<F>>,
    spare_rx: Receiver<F>,
    /// A shell kept from a dropped frame, reused before asking the encoder for one.
    kept: Option<F>,
    counters: Arc<CaptureCounters>,
    /// Frames queued or held by the encoder, not yet recycled.
    in_flight: Arc<AtomicUsize>,
    /// Set while [`FrameSender::wait_returned`] waits.
    return_requested: Arc<AtomicBool>,
}

/// The encode thread's end. Dropping it releases the frames still queued.
pub struct FrameReceiver<F>
where
    F: DerefMut<Target = ffmpeg::Frame>,
{
    rx: Receiver<Captured<F>>,
    spare_tx: SyncSender<F>,
    in_flight: Arc<AtomicUsize>,
    return_requested: Arc<AtomicBool>,
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
    let in_flight = Arc::new(AtomicUsize::new(0));
    let return_requested = Arc::new(AtomicBool::new(false));
    (
        FrameSender {
            tx,
            spare_rx,
            kept: None,
            counters,
            in_flight: in_flight.clone(),
            return_requested: return_requested.clone(),
        },
        FrameReceiver {
            rx,
            spare_tx,
            in_flight,
            return_requested,
        },
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
        // Counted before sending: the encoder may recycle it before `try_send` returns.
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        match self.tx.try_send(frame) {
            Ok(()) => Offer::Queued,
            Err(TrySendError::Full(mut f)) => {
                release_one(&self.in_flight);
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                unref(&mut f.frame);
                self.kept = Some(f.frame);
                Offer::Dropped
            }
            Err(TrySendError::Disconnected(_)) => {
                release_one(&self.in_flight);
                Offer::Disconnected
            }
        }
    }

    /// Frames handed on and not yet given back by the encoder.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Waits (sleeping, at most `timeout`) until the encoder has given back every frame handed
    /// to it, including one it keeps (it is asked to: [`FrameReceiver::return_requested`]);
    /// `false` on timeout. Call before closing an input whose frames may reference its buffers.
    pub fn wait_returned(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        self.return_requested.store(true, Ordering::Release);
        let returned = loop {
            if self.in_flight() == 0 {
                break true;
            }
            let now = Instant::now();
            if now >= deadline {
                break false;
            }
            std::thread::sleep(RETURN_POLL.min(deadline - now));
        };
        self.return_requested.store(false, Ordering::Release);
        returned
    }

    /// Gives back a frame that was decoded but will not be offered.
    pub fn discard(&mut self, mut frame: F) {
        self.counters.dropped.fetch_add(1, Ordering::Relaxed);
        unref(&mut frame);
        self.kept = Some(frame);
    }

    /// Keeps a shell for the next frame without counting a drop: one nothing was decoded
    /// into, or a frame given up on because the thread is stopping. Released first, so a kept
    /// shell never holds on to an input's buffers.
    pub fn discard_shell(&mut self, mut frame: F) {
        unref(&mut frame);
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

    /// The next frame, waiting at most `timeout` (the encoder keeps a lost track alive).
    pub fn recv_timeout(&self, timeout: Duration) -> Received<F> {
        match self.rx.recv_timeout(timeout) {
            Ok(frame) => Received::Frame(frame),
            Err(RecvTimeoutError::Timeout) => Received::Timeout,
            Err(RecvTimeoutError::Disconnected) => Received::Closed,
        }
    }

    /// True while the capture side waits for its frames (it is about to close its input): a
    /// frame the encoder keeps must be recycled now.
    pub fn return_requested(&self) -> bool {
        self.return_requested.load(Ordering::Acquire)
    }

    /// Returns a frame's shell to the capture side once the encoder is done with it (its
    /// buffers are released here). Every received frame must come back through this.
    pub fn recycle(&self, mut frame: F) {
        unref(&mut frame);
        release_one(&self.in_flight);
        let _ = self.spare_tx.try_send(frame);
    }
}

impl<F> Drop for FrameReceiver<F>
where
    F: DerefMut<Target = ffmpeg::Frame>,
{
    /// Releases the frames still queued now, while their input is certainly still open.
    fn drop(&mut self) {
        while let Ok(mut item) = self.rx.try_recv() {
            unref(&mut item.frame);
            release_one(&self.in_flight);
        }
    }
}

/// One frame fewer in flight; never below zero (a shell recycled that was not counted).
fn release_one(in_flight: &AtomicUsize) {
    let _ = in_flight.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
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

    #[test]
    fn frames_in_flight_are_counted_until_recycled_or_released() {
        let counters = Arc::new(CaptureCounters::default());
        let (mut tx, rx) = frame_queue::<ffmpeg::frame::Video>(4, counters);
        for i in 0..3 {
            let frame = tx.empty_frame(ffmpeg::frame::Video::empty);
            assert_eq!(tx.offer(Captured { frame, pts_us: i }), Offer::Queued);
        }
        assert_eq!(tx.in_flight(), 3);
        assert!(!tx.wait_returned(Duration::from_millis(5)));
        let Received::Frame(first) = rx.recv_timeout(Duration::from_millis(5)) else {
            panic!("a frame is queued")
        };
        // Received but not yet recycled: still in flight.
        assert_eq!(tx.in_flight(), 3);
        rx.recycle(first.frame);
        assert_eq!(tx.in_flight(), 2);
        // Dropping the receiver releases what is still queued.
        drop(rx);
        assert!(tx.wait_returned(Duration::ZERO));
    }

    #[test]
    fn a_kept_frame_is_asked_back_while_the_capture_side_waits() {
        let counters = Arc::new(CaptureCounters::default());
        let (mut tx, rx) = frame_queue::<ffmpeg::frame::Video>(2, counters);
        let frame = tx.empty_frame(ffmpeg::frame::Video::empty);
        assert_eq!(tx.offer(Captured { frame, pts_us: 0 }), Offer::Queued);
        let kept = rx.recv().unwrap().frame;
        assert!(!rx.return_requested());
        let waiter = std::thread::spawn(move || tx.wait_returned(Duration::from_secs(10)));
        while !rx.return_requested() {
            std::thread::sleep(Duration::from_millis(1));
        }
        rx.recycle(kept);
        assert!(waiter.join().unwrap());
        assert!(!rx.return_requested(), "cleared once the wait is over");
    }

    #[test]
    fn recv_timeout_tells_timeout_from_closed() {
        let counters = Arc::new(CaptureCounters::default());
        let (tx, rx) = frame_queue::<ffmpeg::frame::Audio>(2, counters);
        assert!(matches!(
            rx.recv_timeout(Duration::from_millis(1)),
            Received::Timeout
        ));
        drop(tx);
        assert!(matches!(
            rx.recv_timeout(Duration::from_millis(1)),
            Received::Closed
        ));
    }
}
