//! Media health beside the encoders: the `polypush-media-health` thread that runs
//! [`HealthCore`] and publishes its [`MediaReport`], and the video tap ([`LumaTap`]) that
//! samples a captured picture once a second.
//!
//! The encode threads never wait on it: the audio thread hands over a small [`AudioBlock`]
//! every 100 ms and the video thread an owned 160x90 luma plane every second, both with
//! `try_send` (a full channel drops the sample). No capture buffer is kept or sent: the tap
//! scales the captured frame into its own buffer before the frame is recycled.

use std::sync::mpsc::{self, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use ffmpeg::format::Pixel;
use ffmpeg_next as ffmpeg;

use super::Shared;
use crate::health::{AudioBlock, HealthCore, HealthSettings, LUMA_HEIGHT, LUMA_WIDTH};

/// Samples handed to the health thread.
pub(super) enum HealthMsg {
    Audio(AudioBlock),
    /// A `GRAY8` plane of [`LUMA_WIDTH`] x [`LUMA_HEIGHT`], full range.
    Picture(Vec<u8>),
}

/// Room for a second of audio blocks and a picture: more means the thread is stuck, and
/// samples are dropped rather than waited for.
const CHANNEL: usize = 16;
/// The report is republished this often, and the thread wakes at least this often.
const PUBLISH: Duration = Duration::from_millis(100);
/// The frame counter and the devices' states are read this often.
const TICK: Duration = Duration::from_secs(1);
/// One luma sample per this much capture time.
const PICTURE_EVERY_US: i64 = 1_000_000;

/// The health thread's handle (it returns like an encode thread, to be joined with them).
pub(super) type HealthThread = std::thread::JoinHandle<Result<(), crate::encode::EncodeError>>;

/// Starts the health thread; it ends when every sender is gone (the encode threads ended).
pub(super) fn spawn(
    settings: HealthSettings,
    shared: Arc<Shared>,
    has_audio: bool,
    has_video: bool,
    configured_fps: u32,
) -> std::io::Result<(SyncSender<HealthMsg>, HealthThread)> {
    let (tx, rx) = mpsc::sync_channel::<HealthMsg>(CHANNEL);
    let handle = std::thread::Builder::new()
        .name("polypush-media-health".into())
        .spawn(move || {
            let origin = Instant::now();
            let secs = |t: Instant| t.duration_since(origin).as_secs_f64();
            let mut core = HealthCore::new(settings, has_audio, has_video, configured_fps);
            let mut audio_at: Option<Instant> = None;
            let mut next_tick = origin;
            let mut next_publish = origin;
            loop {
                match rx.recv_timeout(PUBLISH) {
                    Ok(HealthMsg::Audio(b)) => {
                        let now = Instant::now();
                        core.on_audio_block(secs(now), &b);
                        audio_at = Some(now);
                    }
                    Ok(HealthMsg::Picture(luma)) => core.on_picture(secs(Instant::now()), &luma),
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => break,
                }
                let now = Instant::now();
                core.set_reconnecting(
                    shared.audio_capture.state().is_reconnecting(),
                    shared.video_capture.state().is_reconnecting(),
                );
                if now >= next_tick {
                    next_tick = now + TICK;
                    if has_video {
                        let captured = shared
                            .video_capture
                            .captured
                            .load(std::sync::atomic::Ordering::Relaxed);
                        core.on_frame_count(secs(now), captured);
                    }
                }
                for c in core.take_changes() {
                    if c.raised {
                        tracing::warn!(
                            alarm = c.alarm.as_str(),
                            value = c.value,
                            threshold = c.threshold,
                            "media alarm {c}"
                        );
                    } else {
                        tracing::info!(
                            alarm = c.alarm.as_str(),
                            value = c.value,
                            threshold = c.threshold,
                            "media alarm {c}"
                        );
                    }
                }
                if now >= next_publish {
                    next_publish = now + PUBLISH;
                    let mut report = core.report(secs(now));
                    report.audio_at = audio_at;
                    *shared.media.lock().unwrap_or_else(PoisonError::into_inner) = Some(report);
                }
            }
            Ok(())
        })?;
    Ok((tx, handle))
}

/// Hands `msg` over without waiting; a full or closed channel drops it.
pub(super) fn offer(tx: &SyncSender<HealthMsg>, msg: HealthMsg) {
    match tx.try_send(msg) {
        Ok(()) | Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {}
    }
}

/// The video tap: once a second of capture time, an area-averaged 160x90 `GRAY8` copy of the
/// captured picture, in an owned buffer (the frame itself may be a camera's driver buffer and
/// goes back to capture right after).
pub(super) struct LumaTap {
    tx: SyncSender<HealthMsg>,
    next_us: Option<i64>,
    scaler: Option<(SwsGray, (Pixel, u32, u32))>,
    warned: bool,
}

impl LumaTap {
    pub(super) fn new(tx: SyncSender<HealthMsg>) -> Self {
        Self {
            tx,
            next_us: None,
            scaler: None,
            warned: false,
        }
    }

    /// Looks at a captured frame stamped `pts_us`: samples it when a second has passed.
    pub(super) fn offer(&mut self, frame: &ffmpeg::frame::Video, pts_us: i64) {
        if self.next_us.is_some_and(|next| pts_us < next) {
            return;
        }
        self.next_us = Some(pts_us + PICTURE_EVERY_US);
        let key = (frame.format(), frame.width(), frame.height());
        if key.1 == 0 || key.2 == 0 || key.0 == Pixel::None {
            return;
        }
        if self.scaler.as_ref().map(|(_, k)| *k) != Some(key) {
            self.scaler = SwsGray::new(key).map(|s| (s, key));
            if self.scaler.is_none() && !std::mem::replace(&mut self.warned, true) {
                tracing::warn!(format = ?key.0, width = key.1, height = key.2, "media health: cannot scale this picture format; black and frozen are not checked");
            }
        }
        let Some((scaler, _)) = self.scaler.as_mut() else {
            return;
        };
        let mut luma = vec![0u8; (LUMA_WIDTH * LUMA_HEIGHT) as usize];
        if scaler.run(frame, &mut luma) {
            offer(&self.tx, HealthMsg::Picture(luma));
        }
    }
}

/// A swscale context from one input definition to `GRAY8` 160x90 with area averaging (which
/// averages sensor noise away instead of sampling it).
struct SwsGray {
    ctx: *mut ffmpeg::ffi::SwsContext,
    height: u32,
}

// SAFETY: an SwsContext is plain heap state; `&mut self` keeps its use single-threaded.
unsafe impl Send for SwsGray {}

impl SwsGray {
    fn new((format, width, height): (Pixel, u32, u32)) -> Option<Self> {
        // The deprecated full-range "J" formats as their plain twins plus a full-range flag
        // (as the encoder's scaler does), without swscale's warning.
        let (src, full) = match format {
            Pixel::YUVJ420P => (Pixel::YUV420P, true),
            Pixel::YUVJ422P => (Pixel::YUV422P, true),
            Pixel::YUVJ444P => (Pixel::YUV444P, true),
            Pixel::YUVJ440P => (Pixel::YUV440P, true),
            other => (other, false),
        };
        // SAFETY: sws_getContext returns an owned context or null.
        unsafe {
            let ctx = ffmpeg::ffi::sws_getContext(
                width as i32,
                height as i32,
                src.into(),
                LUMA_WIDTH as i32,
                LUMA_HEIGHT as i32,
                Pixel::GRAY8.into(),
                ffmpeg::ffi::SWS_AREA,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                std::ptr::null(),
            );
            if ctx.is_null() {
                return None;
            }
            let coefficients = ffmpeg::ffi::sws_getCoefficients(ffmpeg::ffi::SWS_CS_DEFAULT);
            // Output full range (0..255), whatever the input's range.
            ffmpeg::ffi::sws_setColorspaceDetails(
                ctx,
                coefficients,
                i32::from(full),
                coefficients,
                1,
                0,
                1 << 16,
                1 << 16,
            );
            Some(Self { ctx, height })
        }
    }

    fn run(&mut self, frame: &ffmpeg::frame::Video, out: &mut [u8]) -> bool {
        debug_assert_eq!(out.len(), (LUMA_WIDTH * LUMA_HEIGHT) as usize);
        let dst: [*mut u8; 4] = [
            out.as_mut_ptr(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        ];
        let stride: [i32; 4] = [LUMA_WIDTH as i32, 0, 0, 0];
        // SAFETY: the frame matches the definition the context was made for (the caller keys
        // the context on format and size); `out` holds 160x90 bytes with a 160-byte stride.
        let ret = unsafe {
            let s = &*frame.as_ptr();
            ffmpeg::ffi::sws_scale(
                self.ctx,
                s.data.as_ptr() as *const *const u8,
                s.linesize.as_ptr(),
                0,
                self.height as i32,
                dst.as_ptr(),
                stride.as_ptr(),
            )
        };
        ret > 0
    }
}

impl Drop for SwsGray {
    fn drop(&mut self) {
        // SAFETY: owned, freed once.
        unsafe { ffmpeg::ffi::sws_freeContext(self.ctx) };
    }
}
