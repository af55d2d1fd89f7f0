//! `GET /snapshot.jpg`: the running pipeline's latest picture as JPEG, made only when asked
//! and at most once a second.
//!
//! A request asks the pipeline for its next picture
//! ([`PipelineControl::request_picture`](crate::encode::PipelineControl::request_picture):
//! scaled to `[status] snapshot_width` on the video encode thread), waits for it at most
//! [`WAIT_FOR_PICTURE`], and encodes it on tokio's blocking pool
//! ([`crate::encode::snapshot::encode_jpeg`]). The JPEG is kept: requests within
//! [`CACHE_FOR`] of its picture get it again, and requests that arrive while one is being made
//! wait for that one (one mutex around the whole fetch), as do their failures. No broadcast,
//! capture down, no video track or no picture in time: [`Unavailable`], a 503 with the reason.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::encode::snapshot::{encode_jpeg, PictureError, PictureKind, PictureReply};

/// A JPEG is served again to requests this soon after its picture was taken.
pub(super) const CACHE_FOR: Duration = Duration::from_secs(1);
/// How long a request waits for the pipeline's next picture.
pub(super) const WAIT_FOR_PICTURE: Duration = Duration::from_secs(2);

/// A snapshot made.
#[derive(Debug)]
pub(super) struct Jpeg {
    pub(super) bytes: bytes::Bytes,
    pub(super) kind: PictureKind,
    /// When the encode thread took the picture (wall clock, for the header).
    pub(super) taken_at: SystemTime,
    /// When the picture reached the server (for the cache).
    pub(super) received: Instant,
}

impl Jpeg {
    /// Still good for a request at `now`.
    pub(super) fn fresh(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.received) < CACHE_FOR
    }

    /// Milliseconds since the Unix epoch when the picture was taken.
    pub(super) fn taken_at_ms(&self) -> u128 {
        self.taken_at
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis())
    }
}

/// Why there is no snapshot. The message is the 503's body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(super) enum Unavailable {
    #[error("no picture: no broadcast running")]
    NoBroadcast,
    #[error("no picture: capture is down: {0}")]
    CaptureDown(String),
    #[error("no picture: {0}")]
    Pipeline(PictureError),
    #[error("no picture yet: the camera gave no frame within {} s", WAIT_FOR_PICTURE.as_secs())]
    NoPictureYet,
    #[error("no picture: the JPEG encoder failed: {0}")]
    Encode(String),
}

/// The cache and the one fetch at a time.
#[derive(Debug)]
pub(super) struct Snapshots {
    width: u32,
    state: tokio::sync::Mutex<Cached>,
    /// Fetches finished (read before waiting for the lock: a fetch that ends meanwhile is the
    /// one the request waited for).
    fetches: AtomicU64,
    encoded: AtomicU64,
}

#[derive(Debug, Default)]
struct Cached {
    jpeg: Option<Arc<Jpeg>>,
    /// The last fetch's failure and its number: shared with the requests that waited for it.
    failure: Option<(u64, Unavailable)>,
}

impl Snapshots {
    pub(super) fn new(width: u32) -> Self {
        Self {
            width,
            state: tokio::sync::Mutex::new(Cached::default()),
            fetches: AtomicU64::new(0),
            encoded: AtomicU64::new(0),
        }
    }

    /// JPEGs encoded so far.
    #[cfg(test)]
    fn encoded(&self) -> u64 {
        self.encoded.load(Ordering::Relaxed)
    }

    /// A snapshot: the cached one while fresh, else a new one from `ask` (called with the
    /// width; `Err` when there is no pipeline to ask).
    pub(super) async fn get(
        &self,
        ask: impl FnOnce(u32) -> Result<oneshot::Receiver<PictureReply>, Unavailable>,
    ) -> Result<Arc<Jpeg>, Unavailable> {
        let seen = self.fetches.load(Ordering::Acquire);
        let mut state = self.state.lock().await;
        let now = Instant::now();
        if let Some(jpeg) = state.jpeg.as_ref().filter(|j| j.fresh(now)) {
            return Ok(jpeg.clone());
        }
        if let Some((n, why)) = &state.failure {
            if *n > seen {
                // The fetch this request waited for failed: so does this one.
                return Err(why.clone());
            }
        }
        let result = self.fetch(ask).await;
        let n = self.fetches.fetch_add(1, Ordering::AcqRel) + 1;
        match &result {
            Ok(jpeg) => {
                state.jpeg = Some(jpeg.clone());
                state.failure = None;
            }
            Err(why) => state.failure = Some((n, why.clone())),
        }
        result
    }

    async fn fetch(
        &self,
        ask: impl FnOnce(u32) -> Result<oneshot::Receiver<PictureReply>, Unavailable>,
    ) -> Result<Arc<Jpeg>, Unavailable> {
        let rx = ask(self.width)?;
        let picture = match tokio::time::timeout(WAIT_FOR_PICTURE, rx).await {
            Ok(Ok(Ok(picture))) => picture,
            Ok(Ok(Err(e))) => return Err(Unavailable::Pipeline(e)),
            // The pipeline went away with the request.
            Ok(Err(_)) => return Err(Unavailable::Pipeline(PictureError::Stopped)),
            Err(_) => return Err(Unavailable::NoPictureYet),
        };
        let received = Instant::now();
        let (kind, taken_at, scale_time) = (picture.kind, picture.taken_at, picture.scale_time);
        let mut frame = picture.frame;
        let (width, height) = (frame.width(), frame.height());
        let encoded = tokio::task::spawn_blocking(move || {
            let started = std::time::Instant::now();
            encode_jpeg(&mut frame).map(|b| (b, started.elapsed()))
        })
        .await
        .map_err(|e| Unavailable::Encode(e.to_string()))?;
        let (bytes, encode_time) = encoded.map_err(|e| Unavailable::Encode(e.to_string()))?;
        self.encoded.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(
            width,
            height,
            bytes = bytes.len(),
            scale_ms = scale_time.as_secs_f64() * 1000.0,
            encode_ms = encode_time.as_secs_f64() * 1000.0,
            kind = kind.as_str(),
            "snapshot encoded"
        );
        Ok(Arc::new(Jpeg {
            bytes: bytes.into(),
            kind,
            taken_at,
            received,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode::snapshot::Picture;
    use ffmpeg_next as ffmpeg;
    use std::sync::atomic::AtomicUsize;

    fn picture(width: u32) -> PictureReply {
        crate::capture::init_ffmpeg();
        let height = width * 9 / 16 / 2 * 2;
        let mut frame = ffmpeg::frame::Video::new(ffmpeg::format::Pixel::YUV420P, width, height);
        frame.set_color_range(ffmpeg::color::Range::JPEG);
        for plane in 0..3 {
            frame.data_mut(plane).fill(100);
        }
        Ok(Picture {
            frame,
            kind: PictureKind::Live,
            taken_at: SystemTime::now(),
            scale_time: Duration::ZERO,
        })
    }

    /// A pipeline that answers every request at once and counts them.
    fn answering(
        asked: &AtomicUsize,
    ) -> impl FnOnce(u32) -> Result<oneshot::Receiver<PictureReply>, Unavailable> + '_ {
        move |width| {
            asked.fetch_add(1, Ordering::SeqCst);
            let (tx, rx) = oneshot::channel();
            let _ = tx.send(picture(width));
            Ok(rx)
        }
    }

    #[test]
    fn a_jpeg_is_fresh_for_one_second_after_its_picture() {
        let t0 = Instant::now();
        let jpeg = Jpeg {
            bytes: bytes::Bytes::new(),
            kind: PictureKind::Live,
            taken_at: SystemTime::UNIX_EPOCH + Duration::from_millis(1500),
            received: t0,
        };
        assert!(jpeg.fresh(t0));
        assert!(jpeg.fresh(t0 + Duration::from_millis(999)));
        assert!(!jpeg.fresh(t0 + Duration::from_secs(1)));
        assert!(!jpeg.fresh(t0 + Duration::from_secs(5)));
        assert_eq!(jpeg.taken_at_ms(), 1500);
    }

    #[tokio::test(start_paused = true)]
    async fn requests_within_a_second_share_the_cached_jpeg_and_later_ones_get_a_new_one() {
        let snaps = Snapshots::new(320);
        let asked = AtomicUsize::new(0);
        let a = snaps.get(answering(&asked)).await.unwrap();
        assert_eq!(&a.bytes[..2], &[0xFF, 0xD8]);
        tokio::time::advance(Duration::from_millis(900)).await;
        let b = snaps.get(answering(&asked)).await.unwrap();
        assert!(Arc::ptr_eq(&a, &b), "cached within a second");
        assert_eq!((asked.load(Ordering::SeqCst), snaps.encoded()), (1, 1));
        tokio::time::advance(Duration::from_millis(100)).await;
        let c = snaps.get(answering(&asked)).await.unwrap();
        assert!(!Arc::ptr_eq(&a, &c), "a second later: a new picture");
        assert_eq!((asked.load(Ordering::SeqCst), snaps.encoded()), (2, 2));
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_requests_share_one_fetch_and_its_failure() {
        let snaps = Arc::new(Snapshots::new(320));
        let asked = Arc::new(AtomicUsize::new(0));
        // The pipeline answers only after 300 ms: the other requests arrive meanwhile.
        let (tx, rx) = oneshot::channel();
        let first = {
            let (snaps, asked) = (snaps.clone(), asked.clone());
            tokio::spawn(async move {
                snaps
                    .get(|_| {
                        asked.fetch_add(1, Ordering::SeqCst);
                        Ok(rx)
                    })
                    .await
            })
        };
        tokio::task::yield_now().await;
        let others: Vec<_> = (0..3)
            .map(|_| {
                let (snaps, asked) = (snaps.clone(), asked.clone());
                tokio::spawn(async move { snaps.get(answering(&asked)).await })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(300)).await;
        tx.send(picture(320)).unwrap();
        let first = first.await.unwrap().unwrap();
        for o in others {
            assert!(Arc::ptr_eq(&first, &o.await.unwrap().unwrap()));
        }
        assert_eq!((asked.load(Ordering::SeqCst), snaps.encoded()), (1, 1));

        // A pipeline that never answers: 503 after 2 s, shared with whoever waited.
        tokio::time::advance(CACHE_FOR).await;
        let (_keep, silent) = oneshot::channel::<PictureReply>();
        let stuck = {
            let snaps = snaps.clone();
            tokio::spawn(async move { snaps.get(|_| Ok(silent)).await })
        };
        tokio::task::yield_now().await;
        let waiting = {
            let (snaps, asked) = (snaps.clone(), asked.clone());
            tokio::spawn(async move { snaps.get(answering(&asked)).await })
        };
        assert_eq!(stuck.await.unwrap().unwrap_err(), Unavailable::NoPictureYet);
        assert_eq!(
            waiting.await.unwrap().unwrap_err(),
            Unavailable::NoPictureYet
        );
        assert_eq!(
            asked.load(Ordering::SeqCst),
            1,
            "the waiter did not ask again"
        );
        // A request after the failure asks again.
        assert!(snaps.get(answering(&asked)).await.is_ok());
        assert_eq!(asked.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn the_reasons_read_well() {
        let snaps = Snapshots::new(640);
        let e = snaps
            .get(|_| Err(Unavailable::NoBroadcast))
            .await
            .unwrap_err();
        assert_eq!(e.to_string(), "no picture: no broadcast running");
        let e = Unavailable::CaptureDown("cannot open /dev/video0".into());
        assert_eq!(
            e.to_string(),
            "no picture: capture is down: cannot open /dev/video0"
        );
        let e = snaps
            .get(|_| {
                let (tx, rx) = oneshot::channel();
                let _ = tx.send(Err(PictureError::NoVideo));
                Ok(rx)
            })
            .await
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "no picture: this broadcast has no video track"
        );
        assert_eq!(
            Unavailable::NoPictureYet.to_string(),
            "no picture yet: the camera gave no frame within 2 s"
        );
    }
}
