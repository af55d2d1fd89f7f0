//! Pictures for `GET /snapshot.jpg`: taken from the running video pipeline only when asked,
//! and encoded as JPEG (libavcodec's `mjpeg`) by the caller, off the encode thread.
//!
//! The status server asks through [`PipelineControl::request_picture`](super::PipelineControl::request_picture)
//! and gets a [`tokio::sync::oneshot`] receiver. The video encode thread looks at one atomic
//! flag per frame; when a request waits, it scales the next captured frame (before the
//! frame-rate decimator, so any divided rate still answers at once), or the darkened still
//! while the camera is away, with its own swscale context into an owned YUV420P full-range
//! frame ([`snapshot_size`]: the asked width, height keeping the aspect, both even) and sends
//! it back. Nothing blocks the encoder (the request list is a short mutex taken only when the
//! flag is up), and no capture buffer is kept or sent to another thread: the picture is a
//! copy. A 1280x720 frame scales to 640x360 in about 2 ms here, once per request.
//!
//! [`encode_jpeg`] makes the JPEG: `mjpeg` at a fixed quantiser ([`JPEG_QSCALE`], about 30 kB
//! at 640x360), one thread, a fresh encoder each time (opening it costs well under a
//! millisecond). The full range matters: a JPEG's YUV is full range (JFIF), so a
//! limited-range picture stored as is would look washed out.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use ffmpeg::format::Pixel;
use ffmpeg_next as ffmpeg;
use tokio::sync::oneshot;

use super::video::Scaler;

/// The narrowest snapshot `[status] snapshot_width` allows.
pub const MIN_SNAPSHOT_WIDTH: u32 = 160;
/// The widest snapshot `[status] snapshot_width` allows.
pub const MAX_SNAPSHOT_WIDTH: u32 = 1920;
/// The default `[status] snapshot_width`.
pub const DEFAULT_SNAPSHOT_WIDTH: u32 = 640;
/// The JPEG quantiser (2 best … 31 worst): 5 gives about 30 kB at 640x360.
pub const JPEG_QSCALE: i32 = 5;

/// What a snapshot shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PictureKind {
    /// A frame as captured.
    Live,
    /// The darkened still the pipeline sends while the camera is reconnecting.
    Still,
}

impl PictureKind {
    /// `live` or `still` (the `X-Polypush-Picture` header).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Live => "live",
            Self::Still => "still",
        }
    }
}

/// A picture taken for a snapshot: an owned YUV420P full-range frame of the size asked.
pub struct Picture {
    pub frame: ffmpeg::frame::Video,
    pub kind: PictureKind,
    /// When the encode thread took it (wall clock).
    pub taken_at: SystemTime,
    /// How long scaling it took on the encode thread.
    pub scale_time: Duration,
}

impl std::fmt::Debug for Picture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Picture")
            .field("width", &self.frame.width())
            .field("height", &self.frame.height())
            .field("kind", &self.kind)
            .field("taken_at", &self.taken_at)
            .finish()
    }
}

/// Why the pipeline gives no picture.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PictureError {
    #[error("this broadcast has no video track")]
    NoVideo,
    #[error("the video encoder has stopped")]
    Stopped,
    #[error("cannot scale the picture from {from}: {reason}")]
    Scale { from: String, reason: String },
}

/// The answer to one request.
pub type PictureReply = Result<Picture, PictureError>;

/// The size of a snapshot `width` wide of a `src_w`x`src_h` picture: never wider than the
/// picture itself, the height keeping the aspect ratio, both even and at least 2.
pub fn snapshot_size(src_w: u32, src_h: u32, width: u32) -> (u32, u32) {
    let src_w = src_w.max(1);
    let w = (width.min(src_w) & !1).max(2);
    // Rounded to the nearest even number.
    let h = (u64::from(src_h) * u64::from(w) + u64::from(src_w)) / (2 * u64::from(src_w)) * 2;
    (w, (h as u32).max(2))
}

/// The requests waiting for the next picture (in the pipeline's shared state).
#[derive(Default)]
pub(super) struct PictureRequests {
    /// Up while `waiting` holds a request: the encode thread's only per-frame cost.
    pending: AtomicBool,
    waiting: Mutex<Waiting>,
}

#[derive(Default)]
struct Waiting {
    /// The encode thread has ended: answer at once.
    closed: bool,
    /// Each request's width and where its picture goes.
    requests: Vec<(u32, oneshot::Sender<PictureReply>)>,
}

impl std::fmt::Debug for PictureRequests {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PictureRequests")
            .field("pending", &self.pending.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl PictureRequests {
    fn lock(&self) -> std::sync::MutexGuard<'_, Waiting> {
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Asks for the next picture, `width` wide.
    pub(super) fn request(&self, width: u32) -> oneshot::Receiver<PictureReply> {
        let (tx, rx) = oneshot::channel();
        let mut w = self.lock();
        if w.closed {
            let _ = tx.send(Err(PictureError::Stopped));
        } else {
            w.requests.push((width, tx));
            self.pending.store(true, Ordering::Release);
        }
        rx
    }

    /// Takes the waiting requests, if any (one atomic load when none).
    fn take(&self) -> Vec<(u32, oneshot::Sender<PictureReply>)> {
        if !self.pending.load(Ordering::Acquire) {
            return Vec::new();
        }
        let mut w = self.lock();
        self.pending.store(false, Ordering::Relaxed);
        std::mem::take(&mut w.requests)
    }

    /// The encode thread ends: waiting and later requests are answered "stopped".
    pub(super) fn close(&self) {
        let mut w = self.lock();
        w.closed = true;
        self.pending.store(false, Ordering::Relaxed);
        for (_, tx) in w.requests.drain(..) {
            let _ = tx.send(Err(PictureError::Stopped));
        }
    }
}

/// The encode thread's side: answers waiting requests from the picture it has in hand, with
/// a swscale context of its own (made at the first request, kept while the input stays the
/// same).
#[derive(Default)]
pub(super) struct PictureTap {
    scaler: Option<Scaler>,
}

impl PictureTap {
    /// When pictures are asked for, scales `frame` for each and answers. `frame` is only read
    /// (it may be a capture buffer; nothing keeps it).
    pub(super) fn offer(
        &mut self,
        requests: &PictureRequests,
        frame: &ffmpeg::frame::Video,
        kind: PictureKind,
    ) {
        let waiting = requests.take();
        if waiting.is_empty() {
            return;
        }
        let taken_at = SystemTime::now();
        for (width, tx) in waiting {
            if tx.is_closed() {
                continue; // the asker gave up
            }
            let started = Instant::now();
            let reply = self.scale(frame, width).map(|frame| Picture {
                frame,
                kind,
                taken_at,
                scale_time: started.elapsed(),
            });
            let _ = tx.send(reply);
        }
    }

    fn scale(
        &mut self,
        src: &ffmpeg::frame::Video,
        width: u32,
    ) -> Result<ffmpeg::frame::Video, PictureError> {
        let full_range = src.color_range() == ffmpeg::color::Range::JPEG;
        let from = (src.format(), src.width(), src.height(), full_range);
        let (w, h) = snapshot_size(src.width(), src.height(), width);
        let to = (Pixel::YUV420P, w, h);
        let error = |e: ffmpeg::Error| PictureError::Scale {
            from: format!("{:?} {}x{}", from.0, from.1, from.2),
            reason: e.to_string(),
        };
        if self.scaler.as_ref().map(|s| (s.from, s.to)) != Some((from, to)) {
            self.scaler = None;
            self.scaler = Some(Scaler::with_output_range(from, to, true).map_err(error)?);
        }
        let mut out = ffmpeg::frame::Video::new(Pixel::YUV420P, w, h);
        out.set_color_range(ffmpeg::color::Range::JPEG);
        match self.scaler.as_mut() {
            Some(scaler) => scaler.run(src, &mut out).map_err(error)?,
            None => return Err(error(ffmpeg::Error::Bug)),
        }
        Ok(out)
    }
}

/// Encodes a picture (YUV420P, full range, even sides) as a baseline JPEG with libavcodec's
/// `mjpeg` at [`JPEG_QSCALE`], on one thread. Call it off the async runtime.
pub fn encode_jpeg(picture: &mut ffmpeg::frame::Video) -> Result<Vec<u8>, ffmpeg::Error> {
    crate::capture::init_ffmpeg();
    let codec =
        ffmpeg::encoder::find(ffmpeg::codec::Id::MJPEG).ok_or(ffmpeg::Error::EncoderNotFound)?;
    let mut enc = ffmpeg::codec::context::Context::new_with_codec(codec)
        .encoder()
        .video()?;
    enc.set_width(picture.width());
    enc.set_height(picture.height());
    enc.set_format(Pixel::YUV420P);
    // Full range YUV420P is what mjpeg takes without "unofficial" compliance (JFIF).
    enc.set_color_range(ffmpeg::color::Range::JPEG);
    enc.set_time_base((1, 1));
    enc.set_flags(ffmpeg::codec::Flags::QSCALE);
    let lambda = JPEG_QSCALE * ffmpeg::ffi::FF_QP2LAMBDA;
    enc.set_global_quality(lambda);
    enc.set_qmin(JPEG_QSCALE);
    enc.set_qmax(JPEG_QSCALE);
    // SAFETY: a plain field of a not-yet-open context that ffmpeg-next has no setter for.
    unsafe { (*enc.as_mut_ptr()).thread_count = 1 };
    let mut enc = enc.open_as(codec)?;
    picture.set_pts(Some(0));
    // SAFETY: a plain field of a frame we own; with QSCALE the encoder takes the frame's
    // quality as its quantiser.
    unsafe { (*picture.as_mut_ptr()).quality = lambda };
    enc.send_frame(picture)?;
    enc.send_eof()?;
    let mut packet = ffmpeg::Packet::empty();
    let mut out = Vec::new();
    while enc.receive_packet(&mut packet).is_ok() {
        if let Some(data) = packet.data() {
            out.extend_from_slice(data);
        }
    }
    if out.is_empty() {
        return Err(ffmpeg::Error::Bug);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_size_keeps_the_aspect_with_even_sides_and_never_upscales() {
        assert_eq!(snapshot_size(1280, 720, 640), (640, 360));
        assert_eq!(snapshot_size(1920, 1080, 640), (640, 360));
        assert_eq!(snapshot_size(640, 480, 640), (640, 480));
        assert_eq!(snapshot_size(640, 480, 160), (160, 120));
        // Never wider than the picture.
        assert_eq!(snapshot_size(320, 240, 640), (320, 240));
        // Odd results round to the nearest even number.
        assert_eq!(snapshot_size(1280, 720, 300), (300, 168)); // 168.75
        assert_eq!(snapshot_size(1366, 768, 640), (640, 360)); // 359.8
        assert_eq!(snapshot_size(1280, 1024, 1000), (1000, 800));
        assert_eq!(snapshot_size(1280, 720, 161), (160, 90));
        // An odd source width and a degenerate size stay even and non-zero.
        assert_eq!(snapshot_size(641, 481, 1920), (640, 480));
        assert_eq!(snapshot_size(4000, 2, 160), (160, 2));
        assert_eq!(snapshot_size(0, 0, 640), (2, 2));
    }

    /// A limited-range YUV420P picture of one colour.
    fn flat(w: u32, h: u32, yuv: [u8; 3]) -> ffmpeg::frame::Video {
        crate::capture::init_ffmpeg();
        let mut f = ffmpeg::frame::Video::new(Pixel::YUV420P, w, h);
        f.set_color_range(ffmpeg::color::Range::MPEG);
        for (plane, v) in yuv.iter().enumerate() {
            f.data_mut(plane).fill(*v);
        }
        f
    }

    #[test]
    fn a_request_is_answered_at_the_next_frame_in_full_range_and_then_not_again() {
        let requests = PictureRequests::default();
        let mut tap = PictureTap::default();
        let frame = flat(1280, 720, [16, 128, 128]);
        // Nothing asked: nothing done.
        tap.offer(&requests, &frame, PictureKind::Live);
        assert!(tap.scaler.is_none());

        let mut a = requests.request(640);
        let mut b = requests.request(320);
        tap.offer(&requests, &frame, PictureKind::Live);
        let a = a.try_recv().unwrap().unwrap();
        assert_eq!((a.frame.width(), a.frame.height()), (640, 360));
        assert_eq!(a.frame.format(), Pixel::YUV420P);
        assert_eq!(a.frame.color_range(), ffmpeg::color::Range::JPEG);
        assert_eq!(a.kind, PictureKind::Live);
        // Limited-range black (16) is full-range black (0).
        assert!(
            a.frame.data(0)[..640].iter().all(|&y| y <= 1),
            "{:?}",
            &a.frame.data(0)[..8]
        );
        let b = b.try_recv().unwrap().unwrap();
        assert_eq!((b.frame.width(), b.frame.height()), (320, 180));

        // Answered once: the next frame is not scaled for anybody.
        let still = flat(1280, 720, [235, 128, 128]);
        let mut c = requests.request(640);
        tap.offer(&requests, &still, PictureKind::Still);
        let c = c.try_recv().unwrap().unwrap();
        assert_eq!(c.kind, PictureKind::Still);
        assert!(c.frame.data(0)[..640].iter().all(|&y| y >= 254));
        assert!(requests.take().is_empty());

        // The thread ends: waiting and later requests hear "stopped" at once.
        let mut d = requests.request(640);
        requests.close();
        assert_eq!(d.try_recv().unwrap().unwrap_err(), PictureError::Stopped);
        let mut e = requests.request(640);
        assert_eq!(e.try_recv().unwrap().unwrap_err(), PictureError::Stopped);
    }

    #[test]
    fn the_jpeg_is_full_range_and_of_the_picture_size() {
        let requests = PictureRequests::default();
        let mut tap = PictureTap::default();
        let mut rx = requests.request(640);
        tap.offer(
            &requests,
            &flat(1280, 720, [120, 90, 160]),
            PictureKind::Live,
        );
        let mut picture = rx.try_recv().unwrap().unwrap();
        let jpeg = encode_jpeg(&mut picture.frame).unwrap();
        assert_eq!(&jpeg[..2], &[0xFF, 0xD8], "SOI");
        assert_eq!(&jpeg[jpeg.len() - 2..], &[0xFF, 0xD9], "EOI");
        // The SOF0 marker carries the size: height then width, big-endian.
        let sof = jpeg
            .windows(2)
            .position(|w| w == [0xFF, 0xC0])
            .expect("a baseline JPEG");
        let h = u16::from_be_bytes([jpeg[sof + 5], jpeg[sof + 6]]);
        let w = u16::from_be_bytes([jpeg[sof + 7], jpeg[sof + 8]]);
        assert_eq!((w, h), (640, 360));
        assert!(
            jpeg.len() < 20_000,
            "a flat picture is small: {}",
            jpeg.len()
        );
    }
}
